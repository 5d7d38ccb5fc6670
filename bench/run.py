"""Benchmark driver: start N Daphne processes pinned to core 0, run the load generator
pinned to core 1, write every result line (with the command, commit and date) to
bench/results/<backend>-<N>p-<time>.jsonl.

    .venv/bin/python bench/run.py --backend postgres --procs 1 fanout-light stream
    .venv/bin/python bench/run.py --backend embedded --procs 1 all

Backends: `embedded` (SQLite file in /tmp, in-memory channel layer: one process only, as
the README says) and `postgres` (database aiim_bench on 127.0.0.1, Redis db 7, channel
layer prefix "bench"; --pg-url names another database, e.g. a private PostgreSQL). The
database is dropped and recreated before the servers start. Extra server settings:
--env NAME=VALUE (repeatable), e.g. --env WS_FANOUT_LAG_MS=0.

--capped 0.2: every server process in its own cgroup capped at 20% of a core, behind a
private nginx on --nginx-port (base port + 90), which is all the loadgen talks to
(bench/capped.py); this measures horizontal scaling on a machine with few cores.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from capped import Capped

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
BASE_PORT = 18800
JWT_SECRET = "bench-secret-0123456789-0123456789-0123456789"
PG_URL = "postgres://postgres@127.0.0.1:5432/aiim_bench"
SQLITE_PATH = "/tmp/aiim_bench.sqlite3"
REDIS_URL = "redis://127.0.0.1:6379/7"


def server_env(backend: str, extra: dict[str, str], pg_url: str = PG_URL, sqlite_path: str = SQLITE_PATH) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="aiim_project.settings",
        DEBUG="false",
        SECRET_KEY="bench-django-secret",
        JWT_SECRET=JWT_SECRET,
        RATE_LIMIT_PER_SEC="0",
        LOG_LEVEL="WARNING",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        WS_IDLE_TIMEOUT="600",
    )
    if backend == "postgres":
        env.update(DATABASE_URL=pg_url, REDIS_URL=REDIS_URL, CHANNEL_LAYER_PREFIX="bench")
    else:
        env.update(DATABASE_URL=f"sqlite:///{sqlite_path}")
    env.update(extra)
    return env


def export(commit: str) -> Path:
    """The source tree of `commit`, exported once to /tmp."""
    src = Path("/tmp/aiim_bench_src") / commit
    if not src.exists():
        tmp = src.with_suffix(".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", commit], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive, check=True)
        tmp.rename(src)
    return src


def reset_database(backend: str, env: dict[str, str], src: Path, pg_url: str = PG_URL, sqlite_path: str = SQLITE_PATH) -> None:
    if backend == "postgres":
        url = urlparse(pg_url)
        where = ["-h", url.hostname or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres"]
        name = url.path.lstrip("/")
        subprocess.run(["dropdb", *where, "--if-exists", "--force", name], check=True)
        subprocess.run(["createdb", *where, name], check=True)
        # The servers' Redis database (REDIS_URL, or --env REDIS_URL=... to use another one).
        subprocess.run(["redis-cli", "-u", env["REDIS_URL"], "FLUSHDB"], check=True, stdout=subprocess.DEVNULL)
    else:
        for suffix in ("", "-wal", "-shm"):
            Path(sqlite_path + suffix).unlink(missing_ok=True)
    subprocess.run([PY, "manage.py", "migrate", "-v", "0"], cwd=src, env=env, check=True)


_PG_STATS = (
    "SELECT coalesce(json_agg(t), '[]') FROM (SELECT relname, n_live_tup, n_dead_tup, n_tup_upd, n_tup_hot_upd,"
    " autovacuum_count, vacuum_count, pg_total_relation_size(relid) AS total_bytes FROM pg_stat_user_tables"
    " WHERE relname IN ('messaging_conversation', 'messaging_member', 'messaging_message') ORDER BY relname) t"
)


def pg_table_stats(pg_url: str) -> list[dict]:
    """Dead tuples, HOT updates, vacuums and size of the hot tables after a run (what a soak
    run is about: bloat shows here before it shows in throughput)."""
    url = urlparse(pg_url)
    out = subprocess.run(
        ["psql", "-h", url.hostname or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username or "postgres",
         "-d", url.path.lstrip("/"), "-At", "-c", _PG_STATS],
        capture_output=True, text=True,
    )
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else []


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daphne on {port} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"daphne did not listen on {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["embedded", "postgres"], required=True)
    parser.add_argument("--procs", type=int, default=1)
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the servers")
    parser.add_argument("--label", default="")
    parser.add_argument("--server-cpus", default="0", help="taskset list for the servers")
    parser.add_argument("--loadgen-cpus", default="1", help="taskset list for the load generator")
    parser.add_argument("--ref", default="HEAD", help="commit to serve (exported with git archive, so other people's uncommitted edits are not measured); 'worktree' serves the work tree as it is")
    parser.add_argument("--src", default="", help="serve this directory (a patched export, for an experiment)")
    parser.add_argument("--profile", default="", help="py-spy record the first server into this SVG/speedscope file")
    parser.add_argument("--profile-rate", type=int, default=97, help="py-spy samples per second (a short scenario needs more)")
    parser.add_argument("--pg-url", default=PG_URL, help="PostgreSQL database for --backend postgres (dropped and recreated)")
    parser.add_argument("--base-port", type=int, default=BASE_PORT, help="first server port (two runs at once need different ones)")
    parser.add_argument("--capped", type=float, default=0.0, metavar="FRACTION", help="cap each server at FRACTION of a core (cgroup) and put nginx in front")
    parser.add_argument("--nginx-port", type=int, default=0, help="with --capped: nginx's port (default base port + 90)")
    parser.add_argument("--nginx-cpus", default="", help="with --capped: taskset list for nginx (default: unpinned)")
    args, loadgen_args = parser.parse_known_args()
    extra = dict(item.split("=", 1) for item in args.env)
    sqlite_path = SQLITE_PATH if args.base_port == BASE_PORT else f"/tmp/aiim_bench_{args.base_port}.sqlite3"
    env = server_env(args.backend, extra, args.pg_url, sqlite_path)
    if args.src:  # an experiment: a patched copy of a commit, never recorded as that commit
        src = Path(args.src).resolve()
        commit = "experiment:" + src.name
    elif args.ref == "worktree":
        src = ROOT
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True).stdout.strip())
        commit += "+worktree" + ("-dirty" if dirty else "")
    else:
        commit = subprocess.run(["git", "rev-parse", "--short", args.ref], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        src = export(commit)
    reset_database(args.backend, env, src, args.pg_url, sqlite_path)
    stamp = datetime.datetime.now(datetime.UTC)
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(exist_ok=True)
    mode = f"-cap{args.capped:g}" if args.capped else ""
    out_path = out_dir / f"{args.backend}-{args.procs}p{mode}-{stamp:%Y%m%dT%H%M%S}{'-' + args.label if args.label else ''}.jsonl"
    log_dir = Path("/tmp/aiim_bench_logs")
    log_dir.mkdir(exist_ok=True)

    procs: list[subprocess.Popen] = []
    ports = [args.base_port + i for i in range(args.procs)]
    spy = capped = lg = None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally below cleans up
    try:
        for port in ports:
            log = open(log_dir / f"daphne-{port}.log", "wb")
            procs.append(
                subprocess.Popen(
                    # --verbosity 0 as in the Dockerfile: no access log line per request
                    ["taskset", "-c", args.server_cpus, PY, "-m", "daphne", "--verbosity", "0", "-b", "127.0.0.1", "-p", str(port), "aiim_project.asgi:application"],
                    cwd=src,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for port, proc in zip(ports, procs):
            wait_port(port, proc, timeout=30 + 15 * args.procs)  # N start-ups share the server cores
        if args.capped:
            capped = Capped(args.capped, args.nginx_port or args.base_port + 90, args.nginx_cpus)
            capped.start([(p.pid, port) for p, port in zip(procs, ports)])
        lg_ports = [capped.port] if capped else ports
        if args.profile:
            spy = subprocess.Popen(
                [
                    str(ROOT / ".venv" / "bin" / "py-spy"), "record", "--nonblocking", "-p", str(procs[0].pid), "-o", args.profile, "-r", str(args.profile_rate),
                    # .txt: collapsed stacks (grep-able); .idle.txt also samples waiting threads;
                    # .gil.txt only the thread holding the GIL (where the CPU goes)
                    "-f", "raw" if args.profile.endswith(".txt") else "flamegraph",
                    *(["--idle", "--threads"] if args.profile.endswith(".idle.txt") else []),
                    *(["--gil"] if args.profile.endswith(".gil.txt") else []),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        cmd = [
            "taskset", "-c", args.loadgen_cpus, PY, str(ROOT / "bench" / "loadgen.py"),
            "--ports", ",".join(map(str, lg_ports)), "--metrics-ports", ",".join(map(str, ports)), "--pids", ",".join(str(p.pid) for p in procs), "--label", args.label, *loadgen_args,
        ]
        lg_env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        lg_env.update(JWT_SECRET=JWT_SECRET, DEBUG="false", SECRET_KEY="bench-django-secret")
        header = {
            "command": "bench/run.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "commit": commit,
            "date": stamp.isoformat(timespec="seconds"),
            "backend": args.backend,
            "procs": args.procs,
            "server_env": extra,
            "capped": capped.header() if capped else None,
            "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
        }
        print(json.dumps(header), flush=True)
        with open(out_path, "w") as out:
            out.write(json.dumps(header) + "\n")
            if capped:
                capped.mark()
            lg = subprocess.Popen(cmd, cwd=ROOT, env=lg_env, stdout=subprocess.PIPE, text=True)
            for line in lg.stdout:
                print(line, end="", flush=True)
                out.write(line)
                out.flush()
            lg.wait()
            if capped:  # over the whole loadgen run
                stats = json.dumps({"capped_stats": capped.stats()})
                print(stats, flush=True)
                out.write(stats + "\n")
            if args.backend == "postgres":
                stats = json.dumps({"pg_stats": pg_table_stats(args.pg_url)})
                print(stats, flush=True)
                out.write(stats + "\n")
        if lg.returncode:
            sys.exit(lg.returncode)
    finally:
        if lg is not None and lg.poll() is None:  # interrupted
            lg.terminate()
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if capped is not None:
            capped.close()
    print(f"results: {out_path}", file=sys.stderr)


if __name__ == "__main__":
    main()
