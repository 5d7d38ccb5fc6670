"""An index of each conversation's queued and running runs: finding them (a stop without
run_id, the AI SDK's resume) read every run the conversation ever had through
run_conversation, 8.7 ms at 20,000 (bench/RESULTS.md, session 17)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('assistants', '0002_token_day'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='run',
            index=models.Index(condition=models.Q(('state__in', ['queued', 'running'])), fields=['tenant', 'conversation_id', 'created_at'], name='run_conversation_active'),
        ),
    ]
