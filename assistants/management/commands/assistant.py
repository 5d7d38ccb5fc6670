"""`manage.py assistant create|list|delete|rotate-keys`: the admin API for operators."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from aiim_project.core.errors import AiimError

from ... import crypto, selectors, services
from ...models import Assistant


class Command(BaseCommand):
    help = "Create, list or delete a tenant's assistants (API keys are never printed)."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create")
        create.add_argument("assistant_id")
        create.add_argument("--tenant", default="default")
        create.add_argument("--name", required=True)
        create.add_argument("--base-url", required=True, help="the endpoint's /v1 root, e.g. http://127.0.0.1:8090/v1")
        create.add_argument("--model", required=True)
        create.add_argument("--api-key", default=None, help="or the environment variable named by --api-key-env")
        create.add_argument("--api-key-env", default=None, help="read the key from this environment variable")
        create.add_argument("--system-prompt", default=None)
        create.add_argument("--params", default=None, help="JSON object passed to the model")
        create.add_argument("--reply-in", default=None, choices=["direct", "always"])
        create.add_argument("--history-limit", type=int, default=None)
        create.add_argument("--max-concurrent-runs", type=int, default=None)
        listing = sub.add_parser("list")
        listing.add_argument("--tenant", default=None)
        delete = sub.add_parser("delete")
        delete.add_argument("assistant_id")
        delete.add_argument("--tenant", default="default")
        sub.add_parser("rotate-keys", help="re-encrypt every stored key with the first ASSISTANT_ENCRYPTION_KEY")

    def handle(self, *args, action: str, **o):
        try:
            getattr(self, "_" + action.replace("-", "_"))(**o)
        except AiimError as exc:
            raise CommandError(exc.detail) from None

    def _create(self, *, assistant_id, tenant, name, base_url, model, api_key, api_key_env, system_prompt, params, reply_in, history_limit, max_concurrent_runs, **_):
        import os

        if api_key_env:
            api_key = os.environ.get(api_key_env, "")
        given = {
            "name": name,
            "base_url": base_url,
            "model": model,
            "api_key": api_key,
            "system_prompt": system_prompt,
            "params": json.loads(params) if params else None,
            "reply_in": reply_in,
            "history_limit": history_limit,
            "max_concurrent_runs": max_concurrent_runs,
        }
        data = services.AssistantInput(**{k: v for k, v in given.items() if v is not None})
        assistant = services.assistant_create(tenant=tenant, is_admin=True, assistant_id=assistant_id, data=data)
        self.stdout.write(f"created assistant {assistant.assistant_id} ({assistant.tenant}) -> {assistant.base_url} model {assistant.model}")

    def _list(self, *, tenant, **_):
        rows = selectors.assistant_list(tenant=tenant) if tenant else Assistant.objects.order_by("tenant", "assistant_id")
        for a in rows:
            key = "key set" if a.api_key_encrypted else "no key"
            self.stdout.write(f"{a.tenant}\t{a.assistant_id}\t{a.name}\t{a.model}\t{a.base_url}\t{a.reply_in}\t{key}")

    def _delete(self, *, assistant_id, tenant, **_):
        services.assistant_delete(tenant=tenant, is_admin=True, assistant_id=assistant_id)
        self.stdout.write(f"deleted assistant {assistant_id} ({tenant})")

    def _rotate_keys(self, **_):
        count = 0
        for a in Assistant.objects.exclude(api_key_encrypted=""):
            Assistant.objects.filter(pk=a.pk).update(api_key_encrypted=crypto.rotate(a.api_key_encrypted))
            count += 1
        self.stdout.write(f"re-encrypted {count} key(s)")
