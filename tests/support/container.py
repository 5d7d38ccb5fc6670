"""The image's commands (Dockerfile CMD and HEALTHCHECK) run as local processes, to test
the container's behaviour without a Docker engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from . import ROOT
from .database import database_url
from .ports import free_port

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def dockerfile_json(instruction: str) -> list[str]:
    """The exec-form argument list of the Dockerfile's last `instruction` line (HEALTHCHECK:
    its CMD)."""
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
