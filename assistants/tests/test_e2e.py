"""End to end with real Daphne processes, each running its inline runner, and the loopback
fake model: two runners never run one run; a SIGKILLed runner's run ends `interrupted`; a
`manage.py run_assistants` worker starts and stops runs on its wake, not its poll."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter

import pytest
import redis
from django.conf import settings

from aiim_project.core.auth import mint_token
from assistants import wake
from assistants.fake_model import Script
from assistants.models import Run, RunState
from messaging.models import Message
from tests.support import ROOT
from tests.support.daphne import daphne_env
from tests.support.http import fetch as http

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

RUNNER_ENV = {"ASSISTANT_RUNNER": "inline", "ASSISTANT_POLL_INTERVAL": "0.05", "ASSISTANT_LEASE_SECONDS": "1.5"}


def auth(user: str, role: str | None = None) -> dict:
    return {"Authorization": f"Bearer {mint_token(user_id=user, role=role)}"}


def start(daphne, n: int):
    servers = daphne(n, **RUNNER_ENV)
    for s in servers:  # the first call starts each process's runner
        assert http("GET", s.url + "/health/live")[0] == 200
    return servers


def create_assistant(server, fake, **extra) -> None:
    body = {"assistant_id": "bot", "name": "Bot", "base_url": fake.base_url, "model": "fake-1", **extra}
    status, _, reply = http("POST", server.url + "/api/aiim/assistants", body, auth("root", "admin"))
    assert status == 201, reply


def conversation(server, user: str) -> str:
    status, _, body = http("POST", server.url + "/api/aiim/conversations", {"type": "direct", "member_ids": ["bot"]}, auth(user))
    assert status == 201, body
    return body["conversation_id"]


def post(server, user: str, conversation_id: str, text: str) -> None:
    status, _, body = http("POST", server.url + "/api/aiim/messages", {"conversation_id": conversation_id, "content": text}, auth(user))
    assert status == 201, body


def wait_for(predicate, timeout: float = 30.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_two_runners_never_run_the_same_run(daphne, fake):
    fake.default = Script(delay=0.01)
    a, b = start(daphne, 2)
    create_assistant(a, fake, max_concurrent_runs=20)
    users = [f"u{k}" for k in range(12)]
    convs = {u: conversation(a, u) for u in users}
    for k, user in enumerate(users):
        post((a, b)[k % 2], user, convs[user], f"hello from {user}")
    wait_for(lambda: Run.objects.filter(state=RunState.COMPLETED).count() == len(users), what="every run completed")
    asked = Counter(r.body["messages"][-1]["content"] for r in fake.requests)
    assert asked == Counter({f"hello from {u}": 1 for u in users})  # each run called the model once
    replies = Message.objects.filter(type="ai")
    assert replies.count() == len(users)
    for message in replies:
        assert message.stream_state == "completed" and message.content.startswith("You said: hello from ")
    assert len({r.lease_owner for r in Run.objects.all()}) >= 1


def test_sigkill_of_the_running_process_interrupts_the_run(daphne, fake):
    fake.queue(Script(text=" ".join(f"w{k}" for k in range(400)), delay=0.05))
    (victim,) = start(daphne, 1)
    create_assistant(victim, fake)
    conv = conversation(victim, "alice")
    post(victim, "alice", conv, "long please")
    wait_for(lambda: Message.objects.filter(type="ai", stream_chunk_count__gte=2).exists(), what="the reply streaming")
    victim.kill()
    run = Run.objects.get()
    assert run.state == RunState.RUNNING
    (survivor,) = start(daphne, 1)
    run = wait_for(lambda: Run.objects.filter(pk=run.pk, state=RunState.INTERRUPTED).first(), what="the run interrupted")
    assert run.error_code == "interrupted"
    message = Message.objects.get(pk=run.reply_message_id)
    assert message.stream_state == "aborted" and message.content.startswith("w0 w1")
    # the next run of that assistant works
    post(survivor, "alice", conv, "again")
    wait_for(lambda: Run.objects.filter(state=RunState.COMPLETED).exists(), what="the next run completed")
    assert Message.objects.filter(type="ai", stream_state="completed").get().content == "You said: again"
    # the interrupted reply was never written again
    assert Message.objects.get(pk=message.pk).content == message.content


@pytest.mark.skipif(not settings.REDIS_URL, reason="a worker process is woken over Redis")
def test_a_worker_process_runs_and_stops_runs_on_its_wake(daphne, fake):
    client = redis.Redis.from_url(settings.REDIS_URL)

    def subscribers() -> int:
        return dict(client.pubsub_numsub(wake.channel())).get(wake.channel().encode(), 0)

    before = subscribers()
    # A 30 s poll: only a wake from the web process can start or stop the run in time.
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "run_assistants"], cwd=ROOT, env=daphne_env(ASSISTANT_POLL_INTERVAL="30"), stdout=subprocess.DEVNULL
    )
    try:
        wait_for(lambda: subscribers() > before, what="the worker subscribed")
        (web,) = daphne(1)  # ASSISTANT_RUNNER=worker: no runner of its own
        create_assistant(web, fake)
        conv = conversation(web, "alice")
        time.sleep(0.5)  # the worker's first poll is over

        post(web, "alice", conv, "hello")
        wait_for(lambda: Run.objects.filter(state=RunState.COMPLETED).exists(), timeout=10, what="the run completed")
        assert Message.objects.get(type="ai").content == "You said: hello"

        fake.queue(Script(text=" ".join(f"w{k}" for k in range(400)), delay=0.05))
        post(web, "alice", conv, "long please")
        run = wait_for(lambda: Run.objects.filter(state=RunState.RUNNING, reply_message_id__isnull=False).first(), timeout=10, what="the reply streaming")
        stopped_at = time.time()
        assert http("POST", f"{web.url}/api/aiim/runs/{run.id}/stop", None, auth("alice"))[0] == 200
        wait_for(lambda: fake.disconnects, timeout=5, what="the model request closed")
        assert fake.disconnects[-1] - stopped_at < 1.0
    finally:
        worker.terminate()
        worker.wait(10)
