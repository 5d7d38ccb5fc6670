"""Small real-network helpers for the operations tests (no mocks: real sockets, real Redis)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: dict | None = None, headers: dict | None = None, timeout: float = 10):
    """(status, headers, parsed JSON or text) for a request to a running server."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, head, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, head, raw = exc.code, exc.headers, exc.read()
    text = raw.decode()
    try:
        return status, head, json.loads(text)
    except ValueError:
        return status, head, text


class RedisServer:
    """A throwaway redis-server on its own port: the test may stop and restart it freely
    without touching the shared server."""

    def __init__(self, port: int, workdir: Path):
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def dockerfile_json(instruction: str) -> list[str]:
    """The exec-form argument list of the Dockerfile's last `instruction` line (HEALTHCHECK:
    its CMD), to run the image's commands without a Docker engine."""
    lines = [line for line in DOCKERFILE.splitlines() if line.startswith(instruction + " ")]
    assert lines, f"no {instruction} in the Dockerfile"
    args = lines[-1].split(" CMD ", 1)[1] if instruction == "HEALTHCHECK" else lines[-1][len(instruction) + 1 :]
    return json.loads(args)


def container_env(**extra: str) -> dict[str, str]:
    """The environment the image gives its process (production mode), with the venv
    standing in for the image's site-packages."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        DEBUG="false",
        SECRET_KEY="container-test-secret",
        JWT_SECRET="container-test-jwt-secret",
        PYTHONUNBUFFERED="1",
        LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


def database_url() -> str:
    """The test database, for a child process."""
    from django.db import connection

    sd = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{sd['NAME']}"
    return f"postgres://{sd['USER'] or 'postgres'}@{sd['HOST'] or '127.0.0.1'}:{sd['PORT'] or 5432}/{sd['NAME']}"


class Container:
    """The image's CMD as a local process: `with Container(tmp_path, **env) as c: c.url`."""

    def __init__(self, workdir: Path, **env: str):
        self.port = free_port()
        self.env = container_env(PORT=str(self.port), DATABASE_URL=database_url(), **env)
        self.log_path = workdir / f"container-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthcheck(self) -> int:
        return subprocess.run(dockerfile_json("HEALTHCHECK"), cwd=ROOT, env=self.env, capture_output=True).returncode

    def __enter__(self) -> Container:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(dockerfile_json("CMD"), cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while self.healthcheck() != 0:
            assert self.proc.poll() is None, self.log_path.read_text()
            assert time.monotonic() < deadline, "the container's healthcheck never passed"
            time.sleep(0.3)
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self._log.close()
