"""Helpers every test imports, one module each by what it holds (real sockets and
processes, no mocks):

- ports: `free_port`
- database: `database_url` (the test database, for a child process)
- redis_server: `RedisServer`, a throwaway redis-server a test may kill and restart
- layer: `LayerListener`, a channel on the real channel layer whose timed-out waits lose nothing
- daphne: `DaphneProcess`, a real Daphne server (the `daphne` fixture in conftest.py starts them)
- http: `http` / `ahttp` (a `Reply`) and `fetch` (a (status, headers, body) tuple)
- communicator: in-process WebSocket clients (`connect`, `ask`, `subscribe`,
  `connect_queued`, `pipeline`)
- websocket: a WebSocket client over a real socket, for a running Daphne (`ws_open`,
  `ws_send`, `ws_recv`, `ws_until`, `ws_request`)
- container: the Dockerfile's commands run as a local process (`Container`, ...)
- browser: headless Chromium with screenshots (fixtures `chromium`, `tab`, `dev_server`,
  `prod_server`); devtools: a DevTools tab (`devtools_page_url`, `Page`)
- node: Node with the pinned npm packages (`node`, `NODE_DIR`); sse: reading SSE streams
- fake_model: the fake OpenAI-compatible model (`fake`); runs: following assistant runs
- tokens: hand-built and foreign-key tokens; metrics: reading /metrics

Helpers only the reliability suite uses stay in tests/reliability/support.py.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
