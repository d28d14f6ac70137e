"""API tokens move here from the dashboards app: the same table (dashboards_apitoken), now the API's model.

State only: the table exists already (dashboards 0001-0002) and keeps its name, so no row moves and a database
migrated before the move keeps its tokens."""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ("dashboards", "0002_api_token_scope_revoked"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="ApiToken",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("name", models.CharField(blank=True, max_length=100)),
                        ("token_hash", models.CharField(editable=False, max_length=64, unique=True)),
                        (
                            "scope",
                            models.CharField(
                                choices=[("read", "read-only"), ("write", "read-write")], default="read", max_length=8
                            ),
                        ),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                        ("revoked_at", models.DateTimeField(blank=True, null=True)),
                        (
                            "user",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="api_tokens",
                                to=settings.AUTH_USER_MODEL,
                            ),
                        ),
                    ],
                    options={"db_table": "dashboards_apitoken"},
                ),
            ],
            database_operations=[],
        ),
    ]
