"""Adds "abort stream" to the messages admin. Streaming extends messaging's admin (not the
other way round: messaging imports neither streaming nor receipts); `aiim_project.wiring`
registers it."""

from django.contrib import admin, messages

from aiim_project.core.errors import AiimError
from messaging.admin import MessageAdmin
from messaging.models import StreamState

from . import services


class StreamMessageAdmin(MessageAdmin):
    actions = [*MessageAdmin.actions, "abort_streams"]

    def has_abort_permission(self, request) -> bool:
        return request.user.has_perm("messaging.change_message")

    @admin.action(description="Abort selected streams (keeps their text; fires message.updated)", permissions=["abort"])
    def abort_streams(self, request, queryset):
        aborted = 0
        for message in queryset.filter(stream_state=StreamState.STREAMING):
            try:
                # As the stream's own sender: the same rule and the same event as a client's
                # stream_abort.
                services.stream_abort(
                    tenant=message.tenant,
                    sender=message.sender_id,
                    conversation_id=message.conversation_id,
                    client_msg_id=message.client_msg_id,
                )
            except AiimError as exc:
                self.message_user(request, f"{message}: {exc.detail}", messages.WARNING)
                continue
            aborted += 1
        self.message_user(request, f"Aborted {aborted} stream(s).", messages.SUCCESS)

