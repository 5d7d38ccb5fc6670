"""The floor of an HTTP request on Daphne here: an ASGI app that reads the body and answers
201 with a small JSON body, under the rest scenario's keep-alive client (10 clients).

    cd bench && taskset -c 0 ../.venv/bin/python -m daphne --verbosity 0 -p 18900 http_floor:application &
    JWT_SECRET=x taskset -c 1 .venv/bin/python bench/http_floor.py 18900

(The client is the loadgen's, which needs a JWT_SECRET to import; the floor app checks none.)

What a REST post costs above this is Django, DRF and the send itself, not Daphne.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

BODY = b'{"message":{"id":"x","seq":1}}'


async def application(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    await send(
        {
            "type": "http.response.start",
            "status": 201,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": BODY})


async def load(port: int, clients: int = 10, seconds: float = 8.0) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from loadgen import Http

    done = 0

    async def client(http: Http) -> None:
        nonlocal done
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await http.request("POST", "/api/aiim/messages", {"conversation_id": "c", "content": {"text": "x"}})
            done += 1

    await asyncio.gather(*(client(Http(port, "unused")) for _ in range(clients)))
    print(f"{done / seconds:.0f} requests/s")


if __name__ == "__main__":
    asyncio.run(load(int(sys.argv[1])))
