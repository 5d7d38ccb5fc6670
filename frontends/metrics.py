from prometheus_client import Gauge

# kind: "events" (conversation events) or "message" (a message's UI message stream).
SSE_STREAMS = Gauge("aiim_sse_streams", "Server-Sent Events streams open in this process", ["kind"])
