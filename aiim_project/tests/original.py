"""Where the original AIIM's own clients are (its Postman collection and ws_test.html): read
in place, never copied into the project.

CI checks the project out beside a copy of `shared/`, so the primary place is
`<project root>/../shared/original`. A work tree elsewhere (a git worktree) points at a copy
with AIIM_ORIGINAL_DIR, or falls back to the machine's shared copy.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
FALLBACK = Path("/work/shared/original")


def original_dir() -> Path:
    candidates = [ROOT.parent / "shared" / "original"]
    if os.environ.get("AIIM_ORIGINAL_DIR"):
        candidates.append(Path(os.environ["AIIM_ORIGINAL_DIR"]))
    candidates.append(FALLBACK)
    for candidate in candidates:
        if (candidate / "ws_test.html").is_file():
            return candidate
    message = f"the original AIIM clients are not at {candidates[0]} (set AIIM_ORIGINAL_DIR)"
    if CI:
        pytest.fail(message)
    pytest.skip(message)
