"""Capped multi-process mode of bench/run.py (`--capped FRACTION`): every Daphne process in its
own cgroup (v1 cpu controller) with a CPU quota, and a private nginx in front, configured like
docs/deploy/nginx.conf, so the load generator talks to one port and each process gets a fixed
CPU share however many cores the machine has. Needs root, cgroup v1 at /sys/fs/cgroup/cpu and
nginx (Debian: `apt-get install -y nginx`; the system service is never touched).

Cleanup: run.py stops the processes in a `finally`, then `Capped.close()` (nginx, the cgroups);
a group left over by a killed run is removed by the next run with the same base port (or refused
while it still holds processes).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

CGROUP_CPU = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 100_000  # the kernel's default CFS period


class CpuGroup:
    """A cgroup whose processes together get `quota` of one core (0.2 = 20 ms per 100 ms)."""

    def __init__(self, name: str, quota: float, period_us: int = PERIOD_US) -> None:
        self.path = CGROUP_CPU / name
        self.quota = quota
        self.period_us = period_us
        if self.path.exists():
            self.remove()  # left over by a killed run
        self.path.mkdir()
        (self.path / "cpu.cfs_period_us").write_text(str(period_us))
        (self.path / "cpu.cfs_quota_us").write_text(str(int(quota * period_us)))

    def enter(self) -> None:
        """Move the calling process in (a Popen preexec_fn: the child joins before it execs)."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def stat(self) -> dict[str, float]:
        """Periods, throttled periods and throttled seconds so far (cpu.stat)."""
        raw = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        return {"nr_periods": int(raw["nr_periods"]), "nr_throttled": int(raw["nr_throttled"]), "throttled_s": int(raw["throttled_time"]) / 1e9}

    def remove(self) -> None:
        if not self.path.exists():
            return
        pids = (self.path / "cgroup.procs").read_text().split()
        if pids:
            raise RuntimeError(f"{self.path} still holds processes {pids}: is another run on this base port still going?")
        self.path.rmdir()


_CONF = """\
# Private nginx of bench/run.py --capped; the proxy settings are docs/deploy/nginx.conf's.
daemon off;  # a child of run.py, stopped by it
user root;
worker_processes 1;
worker_rlimit_nofile 16384;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; }}
http {{
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    access_log off;  # one line per HTTP request is not what is measured

    # Round-robin (docs/deploy uses least_conn): the k-th connection goes to server k mod N,
    # so the loadgen's members, opened in order, spread evenly and deterministically.
    upstream aiim {{
        zone aiim 64k;
{servers}
        keepalive 32;
    }}

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ""      "";
    }}

    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 1m;

        location = /api/aiim/ws {{
            proxy_pass http://aiim;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Request-ID $request_id;
            proxy_read_timeout 120s;
            proxy_send_timeout 120s;
            proxy_buffering off;
        }}

        location = /metrics {{
            return 404;
        }}

        location / {{
            proxy_pass http://aiim;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Request-ID $request_id;
            proxy_read_timeout 30s;
        }}
    }}
}}
"""


class Nginx:
    """A private nginx on `port` (config, pid, logs and temp files in /tmp/aiim_bench_nginx_<port>),
    round-robin over `upstreams`, pinned with taskset to `cpus` if given."""

    def __init__(self, port: int, upstreams: list[int], cpus: str = "") -> None:
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(exe).exists():
            raise RuntimeError("nginx is not installed (Debian: apt-get install -y nginx)")
        self.port = port
        with socket.socket() as probe:  # else the wait below would see the other listener
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                raise RuntimeError(f"port {port} is taken: choose another --nginx-port")
        self.dir = Path(f"/tmp/aiim_bench_nginx_{port}")
        self.dir.mkdir(exist_ok=True)
        servers = "\n".join(f"        server 127.0.0.1:{p};" for p in upstreams)
        conf = self.dir / "nginx.conf"
        conf.write_text(_CONF.format(dir=self.dir, port=port, servers=servers))
        prefix = ["taskset", "-c", cpus] if cpus else []
        self.proc = subprocess.Popen(
            [*prefix, exe, "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=open(self.dir / "stderr.log", "wb"),
        )
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.proc.returncode}: {(self.dir / 'stderr.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not listen on {port}") from None
                time.sleep(0.1)

    def cpu_s(self) -> float:
        """CPU seconds of the master and its workers so far."""
        pids = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        if children.exists():
            pids += [int(p) for p in children.read_text().split()]
        ticks = 0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except FileNotFoundError:
                continue
            ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # fast shutdown: the workers go with the master
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Capped:
    """The server processes (pid, port) each in a cgroup capped at `quota` of a core, and nginx
    in front of them on `nginx_port`: what run.py --capped starts, records and removes."""

    def __init__(self, quota: float, nginx_port: int, nginx_cpus: str = "") -> None:
        self.quota, self.port, self.nginx_cpus = quota, nginx_port, nginx_cpus
        self.groups: list[CpuGroup] = []
        self.nginx: Nginx | None = None

    def start(self, servers: list[tuple[int, int]]) -> None:
        """Cap each (pid, port) and start nginx; what was started is undone by close()."""
        for pid, port in servers:
            # Capped once listening (a start-up at 10% of a core takes long); writing the pid
            # to cgroup.procs moves every thread of the process.
            self.groups.append(CpuGroup(f"aiim_bench_{port}", self.quota))
            (self.groups[-1].path / "cgroup.procs").write_text(str(pid))
        self.nginx = Nginx(self.port, [port for _, port in servers], self.nginx_cpus)
        self.mark()

    def header(self) -> dict:
        return {"cpu_quota": self.quota, "period_us": self.groups[0].period_us, "nginx_port": self.port,
                "nginx_cpus": self.nginx_cpus or "any", "balance": "round-robin"}

    def mark(self) -> None:
        self._stat0 = [g.stat() for g in self.groups], self.nginx.cpu_s()

    def stats(self) -> dict:
        """Since mark(): per cgroup the CFS periods, throttled periods and seconds (a group
        throttled in most periods used its whole quota), and nginx's CPU seconds."""
        groups0, nginx0 = self._stat0
        return {
            "cgroups": [{k: round(v - s0[k], 3) for k, v in g.stat().items()} for g, s0 in zip(self.groups, groups0)],
            "nginx_cpu_s": round(self.nginx.cpu_s() - nginx0, 2),
        }

    def close(self) -> None:
        """Stop nginx, remove the cgroups (after the servers have exited)."""
        if self.nginx is not None:
            self.nginx.stop()
        for group in self.groups:
            group.remove()
