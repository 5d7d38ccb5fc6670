"""WebSocket frame handlers of this app, merged into the gateway's table at start-up."""

from __future__ import annotations

from typing import Any

from aiim_project.core.checks import check_tenant
from aiim_project.core.db import in_worker
from aiim_project.core.errors import Invalid
from aiim_project.core.frames import Connection, FrameSpec

from . import services


async def stop_run(conn: Connection, frame: dict[str, Any]) -> dict[str, Any]:
    """`{conversation_id, run_id?}`: one run, or every active run of the conversation."""
    check_tenant(conn.tenant, frame.get("tenant_id"))
    run_id = frame.get("run_id")
    if run_id is not None and not isinstance(run_id, str):
        raise Invalid("run_id must be a string.", errors={"run_id": ["Expected a string."]})
    runs = await in_worker(services.conversation_runs_stop)(
        tenant=conn.tenant, user_id=conn.user_id, conversation_id=frame["conversation_id"], run_id=run_id
    )
    return {
        "type": "ack",
        "event": "run.stopped",
        "conversation_id": frame["conversation_id"],
        "run_ids": [run.id for run in runs],
    }


FRAMES: dict[str, FrameSpec] = {
    "stop_run": FrameSpec(handler=stop_run, rate_limited=True, required={"conversation_id": str}),
}
