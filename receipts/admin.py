"""Operator admin for receipt history: read-only (cursors move only through the services)."""


from messaging.admin import ReadOnlyAdmin, TenantFilter


class CursorMoveAdmin(ReadOnlyAdmin):
    list_display = ("member", "kind", "seq", "at", "tenant")
    list_filter = (TenantFilter, "kind")
    search_fields = ("=member__user_id", "=member__conversation__id")
    list_select_related = ("member",)
    readonly_fields = ("tenant", "member", "kind", "seq", "at")
    fields = readonly_fields
    ordering = ("-at",)
    show_full_result_count = False
