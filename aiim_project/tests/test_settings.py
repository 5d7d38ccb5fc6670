"""Settings come from the environment in one place; production refuses to start without
its secrets. Start-up is checked in a fresh process, as a deployment would run it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ROOT / "aiim_project" / "settings.py"


def start(**env: str) -> subprocess.CompletedProcess:
    """`manage.py check` in a clean environment plus `env`."""
    names = setting_names()
    base = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("PYTEST")}
    base["DJANGO_SETTINGS_MODULE"] = "aiim_project.settings"
    return subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env={**base, **env}, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("missing", ["SECRET_KEY", "JWT_SECRET"])
def test_production_refuses_to_start_without_a_secret(missing):
    secrets = {"SECRET_KEY": "s" * 50, "JWT_SECRET": "j" * 50}
    del secrets[missing]
    result = start(DEBUG="false", **secrets)
    assert result.returncode != 0
    assert f"{missing} is not set" in result.stderr
    assert "env.example" in result.stderr


def test_production_starts_with_its_secrets():
    result = start(DEBUG="false", SECRET_KEY="s" * 50, JWT_SECRET="j" * 50)
    assert result.returncode == 0, result.stderr


def test_development_starts_with_no_configuration():
    result = start()
    assert result.returncode == 0, result.stderr


def test_require_redis_without_redis_url_refuses_to_start():
    result = start(REQUIRE_REDIS="true")
    assert result.returncode != 0 and "REDIS_URL" in result.stderr


def setting_names() -> set[str]:
    names = set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z0-9_]+)"', SETTINGS.read_text()))
    names |= set(re.findall(r'_secret\("([A-Z0-9_]+)"\)', SETTINGS.read_text()))
    assert len(names) > 20, "the pattern no longer finds the settings' variables"
    return names


def test_env_example_documents_every_variable():
    documented = set(re.findall(r"^#?([A-Z0-9_]+)=", (ROOT / "env.example").read_text(), re.M))
    assert sorted(setting_names() - documented) == []


def test_readme_configuration_table_lists_every_variable():
    table = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `")]
    listed = set(re.findall(r"`([A-Z0-9_]+)`", "\n".join(table)))
    assert sorted(setting_names() - listed) == []
