"""Conversations, their members and their messages. Every row carries its tenant. Integrity lives
in the database: unique (conversation, seq), unique (conversation, sender, client_msg_id), one
direct conversation per pair and tenant, one membership per user.
"""

from __future__ import annotations

import uuid

from django.db import models


def new_id() -> str:
    return uuid.uuid4().hex


class ConversationType(models.TextChoices):
    DIRECT = "direct"
    GROUP = "group"


class Role(models.TextChoices):
    OWNER = "owner"
    MEMBER = "member"
    ASSISTANT = "assistant"


class MessageType(models.TextChoices):
    TEXT = "text"
    IMAGE = "image"
    FILE = "file"
    AUDIO = "audio"
    VIDEO = "video"
    SYSTEM = "system"
    AI = "ai"


class StreamState(models.TextChoices):
    STREAMING = "streaming"
    COMPLETED = "completed"
    ABORTED = "aborted"
    # An assistant's reply that a member stopped, or whose model call failed.
    STOPPED = "stopped"
    FAILED = "failed"


class Conversation(models.Model):
    id = models.CharField(primary_key=True, max_length=64, default=new_id, editable=False)
    tenant = models.CharField(max_length=200)
    type = models.CharField(max_length=16, choices=ConversationType.choices)
    name = models.CharField(max_length=200, blank=True, default="")
    metadata = models.JSONField(default=dict, blank=True)
    # sha256 of the sorted member pair, set only for direct conversations: the unique
    # constraint below makes "create direct" race-free.
    direct_key = models.CharField(max_length=64, null=True, blank=True, editable=False)
    # Highest committed seq. Updated under the row lock in the same transaction as the
    # message insert, so it is also the floor for the Redis counter.
    last_seq = models.BigIntegerField(default=0, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now_add=True, db_index=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "direct_key"], name="uniq_direct_pair_per_tenant"),
        ]
        indexes = [models.Index(fields=["tenant", "-updated_at", "-id"], name="conv_tenant_activity")]

    def __str__(self) -> str:
        return f"{self.type} {self.id} ({self.tenant})"


class Member(models.Model):
    tenant = models.CharField(max_length=200)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="members")
    user_id = models.CharField(max_length=200)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)
    joined_at = models.DateTimeField(auto_now_add=True)
    # conversation.last_seq when this member joined: earlier messages are history to them.
    joined_seq = models.BigIntegerField(default=0)
    # Cursors only move forward; read implies delivered.
    delivered_seq = models.BigIntegerField(default=0)
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_seq = models.BigIntegerField(default=0)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "user_id"], name="uniq_member"),
        ]
        indexes = [models.Index(fields=["tenant", "user_id"], name="member_tenant_user")]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.conversation_id}"


class Message(models.Model):
    id = models.CharField(primary_key=True, max_length=64, default=new_id, editable=False)
    tenant = models.CharField(max_length=200)
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    seq = models.BigIntegerField(editable=False)
    sender_id = models.CharField(max_length=200)
    type = models.CharField(max_length=16, choices=MessageType.choices, default=MessageType.TEXT)
    content = models.JSONField(null=True, blank=True)
    reply_to = models.CharField(max_length=64, null=True, blank=True)
    client_msg_id = models.CharField(max_length=200, null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    edited_at = models.DateTimeField(null=True, blank=True)
    # A streamed reply is one message; these are null for an ordinary message.
    stream_state = models.CharField(max_length=16, choices=StreamState.choices, null=True, blank=True)
    stream_chunk_count = models.IntegerField(default=0)
    stream_updated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["conversation", "seq"], name="uniq_conversation_seq"),
            models.UniqueConstraint(
                fields=["conversation", "sender_id", "client_msg_id"],
                condition=models.Q(client_msg_id__isnull=False),
                name="uniq_client_msg_id",
            ),
        ]
        indexes = [
            models.Index(fields=["tenant", "created_at"], name="message_tenant_created"),
            # Unread counts (messages after a read cursor not sent by the reader) are an
            # index-only range scan on this: no message row is read.
            models.Index(fields=["conversation", "seq", "sender_id"], name="message_unread"),
            # Keyed on a column no chunk changes, so a chunk's update stays heap-only (HOT)
            # on PostgreSQL: keyed on stream_updated_at, every chunk rewrote every index of
            # the table (docs/streaming.md, "Storage and durability").
            models.Index(
                fields=["created_at"],
                condition=models.Q(stream_state="streaming"),
                name="message_open_streams",
            ),
            # A stream's start checks that no other sender has a stream of its name here:
            # without this, that check read every message the conversation ever had with a
            # client_msg_id (uniq_client_msg_id puts sender_id before it).
            models.Index(
                fields=["conversation", "client_msg_id"],
                condition=models.Q(stream_state__isnull=False),
                name="message_stream_name",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} in {self.conversation_id}"
