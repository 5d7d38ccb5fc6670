"""WebSocket frame handlers of this app, merged into the gateway's table at start-up."""

FRAMES: dict = {}
