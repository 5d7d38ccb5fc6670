"""API keys at rest: Fernet (AES-128-CBC + HMAC, from `cryptography`), so a database dump does
not leak the tenants' model keys. The key comes from ASSISTANT_ENCRYPTION_KEY; rotation is
MultiFernet (docs/assistants.md): list the new key first, then run `manage.py assistant rotate-keys`.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

from aiim_project.core.errors import Unavailable


class KeyMissing(Unavailable):
    default_detail = "ASSISTANT_ENCRYPTION_KEY is not set: API keys cannot be stored or read."


def _keys() -> list[bytes]:
    keys = [k.strip().encode() for k in settings.ASSISTANT_ENCRYPTION_KEY.split(",") if k.strip()]
    if not keys:
        raise KeyMissing()
    return keys


def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(k) for k in _keys()])


def encrypt(api_key: str) -> str:
    return _fernet().encrypt(api_key.encode()).decode() if api_key else ""


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise KeyMissing("The stored API key cannot be decrypted with ASSISTANT_ENCRYPTION_KEY.") from None


def rotate(token: str) -> str:
    """Re-encrypt with the first key (MultiFernet.rotate)."""
    return _fernet().rotate(token.encode()).decode() if token else ""
