"""Node and the project's pinned npm packages (tests/node: the AI SDK, newman)."""

from __future__ import annotations

import os
import shutil

import pytest

from . import ROOT

NODE_DIR = ROOT / "tests" / "node"
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def node():
    """The `node` binary, with the `ai` package installed in tests/node."""
    binary = shutil.which("node")
    if binary is None or not (NODE_DIR / "node_modules" / "ai").is_dir():
        if CI:
            pytest.fail("node or tests/node/node_modules is missing (.ci/run runs npm ci)")
        pytest.skip("node or the ai package is not installed (cd tests/node && npm ci)")
    return binary
