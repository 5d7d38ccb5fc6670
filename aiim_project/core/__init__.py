"""The shared base every app builds on: errors, metrics, events and the channel layer, Redis
clients, the worker hop, the frame interface, presence, rate limiting and the id checks.
Apps import it; it imports no app."""
