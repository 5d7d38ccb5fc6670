"""Per-tenant daily token counters for the budget check, which summed every run of the
tenant's day before each model call (docs/assistants.md, "Limits"). Today's counters start
from the runs already recorded today."""

from django.db import migrations, models
from django.db.models import Sum
from django.utils import timezone


def fill_today(apps, schema_editor):
    Run, TokenDay = apps.get_model("assistants", "Run"), apps.get_model("assistants", "TokenDay")
    now = timezone.now()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    totals = Run.objects.filter(created_at__gte=midnight, total_tokens__gt=0).values("tenant").annotate(t=Sum("total_tokens"))
    TokenDay.objects.bulk_create(TokenDay(tenant=row["tenant"], day=now.date(), tokens=row["t"]) for row in totals)


class Migration(migrations.Migration):
    dependencies = [("assistants", "0001_initial")]

    operations = [
        migrations.CreateModel(
            name="TokenDay",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("tenant", models.CharField(max_length=200)),
                ("day", models.DateField()),
                ("tokens", models.BigIntegerField(default=0)),
            ],
            options={"constraints": [models.UniqueConstraint(fields=("tenant", "day"), name="uniq_token_day")]},
        ),
        migrations.RunPython(fill_today, migrations.RunPython.noop),
    ]
