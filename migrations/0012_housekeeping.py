"""Housekeeping without cron: one row per daily task with the time it last ran, which every process of a
deployment moves on with an atomic update before running the task, so the task runs once a day in all."""
from peewee import BigIntegerField, CharField, Model


def up(migrator, db):
    class Housekeeping(Model):
        task = CharField(max_length=32, primary_key=True)
        last_run_at = BigIntegerField(default=0)

        class Meta:
            table_name = "housekeeping"

    db.bind([Housekeeping])
    db.create_tables([Housekeeping], safe=True)
