"""Assistants (a model endpoint bound to a user id of a tenant) and their runs.

A run is a durable row: the runner that claims it holds a lease (`lease_owner`,
`lease_expires_at`) renewed while it runs; a run whose lease expired is ended `interrupted`
by any runner (see docs/assistants.md).
"""

from __future__ import annotations

from django.db import models

from messaging.models import new_id


class ReplyIn(models.TextChoices):
    DIRECT = "direct"  # every human message in a direct conversation; in groups only when mentioned
    ALWAYS = "always"


class Assistant(models.Model):
    tenant = models.CharField(max_length=200)
    # A user id of the tenant: the assistant is a conversation member under this id.
    assistant_id = models.CharField(max_length=200)
    name = models.CharField(max_length=200)
    base_url = models.CharField(max_length=2000)
    model = models.CharField(max_length=200)
    # Fernet token of the API key (assistants.crypto); "" = no key. Never rendered.
    api_key_encrypted = models.TextField(blank=True, default="")
    system_prompt = models.TextField(blank=True, default="")
    params = models.JSONField(default=dict, blank=True)
    reply_in = models.CharField(max_length=16, choices=ReplyIn.choices, default=ReplyIn.DIRECT)
    history_limit = models.PositiveIntegerField(default=50)
    max_concurrent_runs = models.PositiveIntegerField(default=4)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "assistant_id"], name="uniq_assistant_per_tenant")]

    def __str__(self) -> str:
        return f"{self.assistant_id} ({self.tenant})"


class RunState(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    STOPPED = "stopped"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


ACTIVE_STATES = (RunState.QUEUED, RunState.RUNNING)


class Run(models.Model):
    id = models.CharField(primary_key=True, max_length=64, default=new_id, editable=False)
    tenant = models.CharField(max_length=200)
    assistant_id = models.CharField(max_length=200)
    conversation_id = models.CharField(max_length=64)
    trigger_message_id = models.CharField(max_length=64, null=True, blank=True)
    reply_message_id = models.CharField(max_length=64, null=True, blank=True)
    state = models.CharField(max_length=16, choices=RunState.choices, default=RunState.QUEUED)
    finish_reason = models.CharField(max_length=64, null=True, blank=True)
    prompt_tokens = models.IntegerField(default=0)
    completion_tokens = models.IntegerField(default=0)
    total_tokens = models.IntegerField(default=0)
    usage_estimated = models.BooleanField(default=False)
    error_code = models.CharField(max_length=64, null=True, blank=True)
    error_detail = models.TextField(null=True, blank=True)
    attempts = models.IntegerField(default=0)
    lease_owner = models.CharField(max_length=100, null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    first_token_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["created_at"], condition=models.Q(state="queued"), name="run_queued"),
            models.Index(fields=["lease_expires_at"], condition=models.Q(state="running"), name="run_running_lease"),
            models.Index(fields=["tenant", "conversation_id", "-created_at"], name="run_conversation"),
            # A conversation's queued and running runs (a stop without run_id, the AI SDK's
            # resume): through run_conversation that read every run the conversation ever had.
            models.Index(
                fields=["tenant", "conversation_id", "created_at"],
                condition=models.Q(state__in=ACTIVE_STATES),
                name="run_conversation_active",
            ),
            models.Index(fields=["tenant", "assistant_id", "state"], name="run_assistant_state"),
            models.Index(fields=["tenant", "created_at"], name="run_tenant_created"),
        ]

    def __str__(self) -> str:
        return f"run {self.id} of {self.assistant_id} ({self.state})"

    @property
    def client_msg_id(self) -> str:
        return f"run:{self.id}"


class TokenDay(models.Model):
    """A tenant's tokens used on one UTC day, added to as runs record their usage: the daily
    budget's check reads one row instead of summing the day's runs (docs/assistants.md)."""

    tenant = models.CharField(max_length=200)
    day = models.DateField()
    tokens = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["tenant", "day"], name="uniq_token_day")]

    def __str__(self) -> str:
        return f"{self.tenant} on {self.day}: {self.tokens} tokens"
