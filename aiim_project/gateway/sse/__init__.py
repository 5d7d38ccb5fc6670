"""HTTP streams for front ends (docs/protocol.md section 7, docs/frontends.md): a stream message
as an AI SDK UI message stream, and a conversation's events over Server-Sent Events. Both follow
the hub like a WebSocket subscription, with the same ordered delivery."""
