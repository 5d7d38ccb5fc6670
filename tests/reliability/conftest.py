"""Fixtures of the reliability suite: private dependencies it is allowed to break.

The machine's PostgreSQL and Redis are shared: the suite never stops them and never
FLUSHALLs. Redis faults use a redis-server of the test's own; PostgreSQL faults go through
a TCP proxy the test cuts.
"""

from __future__ import annotations

import pytest
from django.db import connection

from .support import TcpProxy


@pytest.fixture
def pg_proxy(transactional_db):
    """A cuttable proxy in front of the test database; `proxied_database_url` points
    Daphne at it."""
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL faults need the Postgres pass")
    sd = connection.settings_dict
    proxy = TcpProxy(sd["HOST"] or "127.0.0.1", int(sd["PORT"] or 5432))
    auth = sd["USER"] or "postgres"
    if sd.get("PASSWORD"):
        auth += f":{sd['PASSWORD']}"
    proxy.database_url = f"postgres://{auth}@127.0.0.1:{proxy.port}/{sd['NAME']}"
    yield proxy
    proxy.close()


@pytest.fixture(scope="session")
def rsa_keys():
    """(private PEM, public PEM) generated for this run."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return private, public
