"""Receipt history: one `CursorMove` row per cursor advance, never one per message
(docs/receipts.md, "Receipt times: one row per cursor move").
"""

from __future__ import annotations

from django.db import models

from messaging.models import Member


class CursorKind(models.TextChoices):
    DELIVERED = "delivered"
    READ = "read"


class CursorMove(models.Model):
    tenant = models.CharField(max_length=200)
    # Moves go with the membership: a member who leaves and rejoins starts a fresh history.
    member = models.ForeignKey(Member, on_delete=models.CASCADE, related_name="cursor_moves")
    kind = models.CharField(max_length=16, choices=CursorKind.choices)
    seq = models.BigIntegerField()
    at = models.DateTimeField()

    class Meta:
        constraints = [
            # A cursor only moves forward, so each (member, kind) reaches a seq at most once;
            # the index also answers "first move with seq >= S" with one seek per member.
            models.UniqueConstraint(fields=["member", "kind", "seq"], name="uniq_cursor_move"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.seq} by member {self.member_id}"
