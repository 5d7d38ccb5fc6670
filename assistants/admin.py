"""Assistants and runs in the Django admin. The API key is write-only here too: the form
has a password field that replaces it, and the stored (encrypted) value is never shown."""

from __future__ import annotations

from django import forms
from django.contrib import admin

from . import crypto
from .models import Assistant, Run


class AssistantForm(forms.ModelForm):
    new_api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave empty to keep the current key. The stored key is never displayed.",
    )
    clear_api_key = forms.BooleanField(required=False)

    class Meta:
        model = Assistant
        exclude = ("api_key_encrypted",)

    def save(self, commit: bool = True):
        assistant = super().save(commit=False)
        if self.cleaned_data.get("clear_api_key"):
            assistant.api_key_encrypted = ""
        elif self.cleaned_data.get("new_api_key"):
            assistant.api_key_encrypted = crypto.encrypt(self.cleaned_data["new_api_key"])
        if commit:
            assistant.save()
        return assistant


class AssistantAdmin(admin.ModelAdmin):
    form = AssistantForm
    list_display = ("assistant_id", "tenant", "name", "model", "base_url", "has_api_key", "reply_in", "created_at")
    list_filter = ("tenant", "reply_in")
    search_fields = ("assistant_id", "name", "model")

    @admin.display(boolean=True)
    def has_api_key(self, obj: Assistant) -> bool:
        return bool(obj.api_key_encrypted)


class RunAdmin(admin.ModelAdmin):
    list_display = ("id", "tenant", "assistant_id", "conversation_id", "state", "error_code", "total_tokens", "created_at", "ended_at")
    list_filter = ("state", "error_code", "tenant")
    search_fields = ("id", "assistant_id", "conversation_id")
    readonly_fields = [f.name for f in Run._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False
