"""Stored telemetry. The writer fills these tables with raw SQL (ingest/backends.py); the ORM reads them."""

from django.db import models

from devices.models import Device


class Reading(models.Model):
    """A numeric reading; (device, key, ts) is unique, so a resent reading is stored once."""

    pk = models.CompositePrimaryKey("device", "key", "ts")
    # No foreign key constraint: its per-row check was half the database's time per flush. The writer
    # checks each flush's devices once instead, and deleting a device deletes its readings (migration 0004).
    device = models.ForeignKey(Device, on_delete=models.CASCADE, db_index=False, db_constraint=False)
    key = models.CharField(max_length=64)
    ts = models.DateTimeField()
    value = models.FloatField()

    class Meta:
        db_table = "ingest_reading"

    def __str__(self) -> str:
        return f"{self.device_id}/{self.key}@{self.ts.isoformat()}={self.value}"


class LatestValue(models.Model):
    """The newest (by ts) value of each key of each device: a number or a text."""

    pk = models.CompositePrimaryKey("device", "key")
    device = models.ForeignKey(Device, on_delete=models.CASCADE, db_index=False)
    key = models.CharField(max_length=64)
    ts = models.DateTimeField()
    value = models.FloatField(null=True)
    text = models.TextField(null=True)

    class Meta:
        db_table = "ingest_latestvalue"

    def __str__(self) -> str:
        return f"{self.device_id}/{self.key}@{self.ts.isoformat()}"
