"""Every AIIM metric, declared once (in messaging, so every app and the gateway can import
it). Labels stay low-cardinality: never a user, tenant, conversation or raw path."""

from prometheus_client import Counter, Gauge, Histogram

WS_CONNECTIONS = Gauge("aiim_ws_connections", "Open WebSocket connections", multiprocess_mode="livesum")
WS_FRAMES_IN = Counter("aiim_ws_frames_in_total", "Client frames received, by frame type", ["type"])
WS_FRAMES_OUT = Counter("aiim_ws_frames_out_total", "Frames sent to clients, by kind", ["type"])
WS_SLOW_CONSUMERS = Counter("aiim_ws_slow_consumers_total", "Connections closed (4413) because the client stopped reading")
MESSAGES_CREATED = Counter("aiim_messages_created_total", "Messages stored", ["via"])
STREAM_CHUNKS = Counter("aiim_stream_chunks_total", "Stream chunks accepted")
FANOUT_SECONDS = Histogram(
    "aiim_fanout_seconds",
    "From commit to the message.created frame handed to the sockets of a process's subscribers (once per message and process)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
PUBLISH_LAG_SECONDS = Histogram(
    "aiim_publish_lag_seconds",
    "From a transaction's commit to its events' PUBLISH to the channel layer completing (once per event)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
SEQ_ALLOC_SECONDS = Histogram(
    "aiim_seq_alloc_seconds",
    "Seq allocation latency",
    ["backend"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1),
)
RATE_LIMITED = Counter("aiim_rate_limited_total", "Requests and frames refused by the rate limit", ["via"])
ERRORS = Counter("aiim_errors_total", "Errors returned to clients, by code", ["code", "via"])
WS_FANOUT_HELD = Counter("aiim_ws_fanout_held_total", "Write frames held back because this process's fan-out was behind")
# The original AIIM's two request metrics, under its names, so dashboards built on them keep
# working. `path` is the route template (`/api/aiim/messages/{conversation_id}`), never the raw
# path; a request no route matches is `<unmatched>`.
HTTP_REQUESTS = Counter("http_requests_total", "HTTP requests, by method, route template and status", ["method", "path", "status"])
HTTP_REQUEST_SECONDS = Histogram("http_request_duration_seconds", "HTTP request latency, by method and route template", ["method", "path"])
# kind: "events" (conversation events) or "message" (a message's UI message stream).
SSE_STREAMS = Gauge("aiim_sse_streams", "Server-Sent Events streams open in this process", ["kind"])
SLOW_STREAM_CLIENTS = Counter(
    "aiim_http_stream_slow_consumers_total", "Streaming HTTP responses cut off because the client stopped reading"
)
