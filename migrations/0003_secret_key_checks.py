"""A check (an HMAC, never the key) of each secret key in use, so processes that disagree refuse to start."""
from peewee import CharField, IntegerField, Model


def up(migrator, db):
    class SecretKeyCheck(Model):
        digest = CharField(max_length=64, primary_key=True)
        created_at = IntegerField()

        class Meta:
            table_name = "secret_key_checks"

    db.bind([SecretKeyCheck])
    db.create_tables([SecretKeyCheck])
