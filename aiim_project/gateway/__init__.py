"""The real-time gateway: JWT middleware, the WebSocket consumer and its frame table."""
