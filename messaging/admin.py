"""Operator admin. Read-only views of the data; every change an operator can make goes
through the same services as the API, so events fire and invariants hold (an admin form
that edited a seq or deleted a member row directly would bypass both)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count
from django.urls import reverse
from django.utils.html import format_html
from django.utils.text import Truncator

from aiim_project.core.errors import AiimError

from . import services
from .models import Conversation, Member, Message

TENANT_CHOICES_LIMIT = 100
CONVERSATION_CHOICES_LIMIT = 30


class TenantFilter(admin.SimpleListFilter):
    """Tenants that have rows in this table (a plain `list_filter = ["tenant"]` would do
    the same but without a bound on how many it lists)."""

    title = "tenant"
    parameter_name = "tenant"

    def lookups(self, request, model_admin):
        tenants = model_admin.model.objects.order_by("tenant").values_list("tenant", flat=True).distinct()
        return [(t, t) for t in tenants[:TENANT_CHOICES_LIMIT]]

    def queryset(self, request, queryset):
        return queryset.filter(tenant=self.value()) if self.value() else queryset


class ConversationFilter(admin.SimpleListFilter):
    """Filters by any conversation id (`?conversation=<id>`, linked from the conversation
    list); offers the most recently active ones of the selected tenant."""

    title = "conversation"
    parameter_name = "conversation"

    def lookups(self, request, model_admin):
        recent = Conversation.objects.order_by("-updated_at")
        if request.GET.get("tenant"):
            recent = recent.filter(tenant=request.GET["tenant"])
        choices = [(c.id, f"{c.name or c.type} ({c.id[:8]})") for c in recent[:CONVERSATION_CHOICES_LIMIT]]
        if self.value() and self.value() not in dict(choices):
            choices.append((self.value(), self.value()))
        return choices

    def queryset(self, request, queryset):
        return queryset.filter(conversation_id=self.value()) if self.value() else queryset


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class MemberInline(admin.TabularInline):
    model = Member
    fields = ("user_id", "role", "joined_at", "joined_seq", "delivered_seq", "read_seq", "read_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("joined_at", "id")

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class ConversationAdmin(ReadOnlyAdmin):
    list_display = ("id", "tenant", "type", "name", "member_count", "last_seq", "updated_at", "messages_link")
    list_filter = (TenantFilter, "type")
    search_fields = ("=id", "name", "=members__user_id")
    readonly_fields = ("id", "tenant", "type", "name", "metadata", "last_seq", "created_at", "updated_at", "messages_link")
    fields = readonly_fields
    inlines = [MemberInline]
    ordering = ("-updated_at",)
    show_full_result_count = False

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(member_count=Count("members", distinct=True))

    @admin.display(description="members", ordering="member_count")
    def member_count(self, obj: Conversation) -> int:
        return obj.member_count

    @admin.display(description="messages")
    def messages_link(self, obj: Conversation) -> str:
        url = reverse("admin:messaging_message_changelist")
        return format_html('<a href="{}?tenant={}&conversation={}">messages</a>', url, obj.tenant, obj.id)


class MemberAdmin(ReadOnlyAdmin):
    """Members with their delivered and read cursors."""

    list_display = ("user_id", "conversation_id", "tenant", "role", "joined_seq", "delivered_seq", "read_seq", "read_at")
    list_filter = (TenantFilter, ConversationFilter, "role")
    search_fields = ("=user_id", "=conversation__id")
    readonly_fields = (
        "tenant", "conversation", "user_id", "role", "joined_at", "joined_seq",
        "delivered_seq", "delivered_at", "read_seq", "read_at",
    )
    fields = readonly_fields
    ordering = ("-joined_at",)
    show_full_result_count = False
    actions = ["remove_members"]

    def has_remove_permission(self, request) -> bool:
        return request.user.has_perm("messaging.delete_member")

    @admin.action(description="Remove selected members (fires member.left)", permissions=["remove"])
    def remove_members(self, request, queryset):
        removed = []
        for member in queryset:
            try:
                # As the member leaving themself: the service's own rule for "anyone may
                # remove themself", so the operator needs no membership in the conversation.
                services.member_remove(
                    tenant=member.tenant,
                    actor=member.user_id,
                    conversation_id=member.conversation_id,
                    user_id=member.user_id,
                )
            except AiimError as exc:
                self.message_user(request, f"{member}: {exc.detail}", messages.WARNING)
                continue
            removed.append(member)
        if removed:
            self.log_deletions(request, removed)
        self.message_user(request, f"Removed {len(removed)} member(s).", messages.SUCCESS)


class MessageAdmin(ReadOnlyAdmin):
    """Messages; streams are messages with a stream state (filter "stream state")."""

    list_display = (
        "id", "seq", "conversation_id", "tenant", "sender_id", "type", "preview",
        "stream_state", "stream_chunk_count", "created_at",
    )
    list_filter = (TenantFilter, ConversationFilter, "type", "stream_state")
    search_fields = ("=id", "=conversation__id", "=sender_id", "=client_msg_id", "content")
    readonly_fields = (
        "id", "tenant", "conversation", "seq", "sender_id", "type", "content", "reply_to", "client_msg_id",
        "metadata", "created_at", "edited_at", "stream_state", "stream_chunk_count", "stream_updated_at",
    )
    fields = readonly_fields
    ordering = ("-created_at",)
    show_full_result_count = False

    @admin.display(description="content")
    def preview(self, obj: Message) -> str:
        return Truncator(str(obj.content)).chars(60)
