"""Waking the runners of other processes over Redis (assistants.wake): a run queued or stopped
in one process starts or ends in another without waiting for that runner's poll."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis
from django.conf import settings

from aiim_project.core.db import in_worker
from assistants import wake
from assistants.models import Run, RunState
from assistants.runner import Runner

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.REDIS_URL, reason="the embedded mode runs one process: its runner is woken in place"),
]


def test_a_wake_is_published_for_the_other_processes():
    listener = redis.Redis.from_url(settings.REDIS_URL).pubsub(ignore_subscribe_messages=True)
    listener.subscribe(wake.channel())
    listener.get_message(timeout=1)  # the subscription's confirmation

    threading.Thread(target=wake.wake).start()  # as a commit hook of a worker thread calls it

    message = listener.get_message(timeout=5)
    listener.close()
    assert message is not None and message["channel"].decode() == wake.channel()


async def test_a_runner_of_another_process_starts_a_run_without_waiting_for_its_poll(make_assistant, make_conversation, fake, settings):
    settings.ASSISTANT_POLL_INTERVAL = 30.0  # only a wake can start the run in time
    runner = Runner()
    task = asyncio.get_running_loop().create_task(runner.run_forever())
    try:

        def queue_a_run() -> Run:
            make_assistant("bot", base_url=fake.base_url)
            conversation = make_conversation("alice", ["bot"], type="direct")
            return Run.objects.create(tenant="default", assistant_id="bot", conversation_id=conversation.id)

        await asyncio.sleep(0.5)  # the runner's first tick found nothing and it sleeps
        run = await in_worker(queue_a_run)()  # stored by "another process": no local wake
        started = time.monotonic()
        await asyncio.to_thread(redis.Redis.from_url(settings.REDIS_URL).publish, wake.channel(), b"")

        while (await in_worker(Run.objects.get)(pk=run.pk)).state != RunState.COMPLETED:
            assert time.monotonic() - started < 10, "the run did not start on the wake"
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.wait({task}, timeout=5)
