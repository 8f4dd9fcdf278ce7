"""The audit trail: one row per event, appended and never changed. No foreign keys: a removed user or client
keeps its history, named by the username and client name written with each event."""
from peewee import BigIntegerField, CharField, IntegerField, Model, TextField


def up(migrator, db):
    class AuditEvent(Model):
        at = BigIntegerField()
        event = CharField(max_length=32)
        user_id = IntegerField(null=True)
        username = CharField(max_length=150, null=True)
        client_id = TextField(null=True)
        client_name = TextField(null=True)
        address = CharField(max_length=64, null=True)
        detail = TextField(default="{}")

        class Meta:
            table_name = "audit_events"
            indexes = ((("user_id", "id"), False),)

    db.bind([AuditEvent])
    db.create_tables([AuditEvent])
