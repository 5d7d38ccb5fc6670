"""An index for a stream's name in its conversation: the check a stream start makes (no other
sender has a stream of that name here) read every message of the conversation that has a
client_msg_id, so every stream start, and every assistant reply, cost more as the
conversation grew (docs/streaming.md, "Storage and durability")."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('messaging', '0005_open_streams_hot_updates'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='message',
            index=models.Index(condition=models.Q(('stream_state__isnull', False)), fields=['conversation', 'client_msg_id'], name='message_stream_name'),
        ),
    ]
