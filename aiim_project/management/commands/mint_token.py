from django.core.management.base import BaseCommand

from aiim_project.core.auth import mint_token


class Command(BaseCommand):
    help = "Print a signed access token for a user of a tenant (for operators and for trying AIIM)."

    def add_arguments(self, parser):
        parser.add_argument("--user", required=True, help="user id, the token's 'sub'")
        parser.add_argument("--tenant", default="default")
        parser.add_argument("--role", default=None, help='optional role claim; "admin" manages the tenant\'s assistants')
        parser.add_argument("--ttl", type=int, default=3600, help="seconds until expiry; 0 = never")

    def handle(self, *args, user: str, tenant: str, ttl: int, role: str | None = None, **options):
        self.stdout.write(mint_token(user_id=user, tenant=tenant, ttl=ttl or None, role=role))
