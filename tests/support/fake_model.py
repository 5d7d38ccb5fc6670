"""The project's fake OpenAI-compatible model server on loopback (assistants/fake_model.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def fake():
    """A scripted model streaming a token every 5 ms; its `url` is the `/v1` root."""
    from assistants.fake_model import FakeModel, Script

    server = FakeModel(default=Script(delay=0.005)).start()
    yield server
    server.stop()
