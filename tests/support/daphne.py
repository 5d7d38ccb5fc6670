"""A real Daphne process serving the project (the `daphne` fixture in conftest.py starts
them on free ports against the test database)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import ROOT


def daphne_env(**extra: str) -> dict[str, str]:
    """The environment of a test server: this test's database, development mode, no rate
    limit, no assistant runner."""
    from .database import database_url

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        DJANGO_SETTINGS_MODULE="aiim_project.settings",
        DATABASE_URL=database_url(),
        DEBUG="true",
        RATE_LIMIT_PER_SEC="0",
        LOG_LEVEL="WARNING",
        # No assistant runner polling the database unless a test asks for one (inline).
        ASSISTANT_RUNNER="worker",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


class DaphneProcess:
    def __init__(self, port: int, env: dict[str, str], log: Path, host: str = "127.0.0.1"):
        self.port = port
        self.host = host
        self.env = env
        self.log_path = log
        self._log = open(log, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", host, "-p", str(port), "aiim_project.asgi:application"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/api/aiim/ws"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daphne exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"daphne did not listen on {self.port}:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (a crash)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def restart(self) -> None:
        """Stop, then serve again on the same port (clients reconnect to the same URL)."""
        self.stop()
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.proc.args, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        self.wait_ready()
