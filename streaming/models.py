"""Per-chunk rows of a stream. The message row (messaging.Message) is the stream's truth:
it always holds the text so far and the exact chunk count. These rows exist so that a
subscriber who missed chunk events can be sent exactly the chunks it lacks (gap fill)."""

from __future__ import annotations

from django.db import models

from messaging.models import Message


class StreamChunk(models.Model):
    # The unique (message, index) index serves lookups by message: no second index to
    # maintain on every chunk insert.
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="stream_chunks", db_index=False)
    index = models.IntegerField()
    text = models.TextField(blank=True, default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["message", "index"], name="uniq_stream_chunk")]

    def __str__(self) -> str:
        return f"chunk {self.index} of {self.message_id}"
