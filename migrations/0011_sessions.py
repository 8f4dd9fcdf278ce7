"""Sessions that can be ended: until now a session was a signed cookie alone, valid until it expired whatever
happened. Each signed-in browser now has a row, and its cookie names the row by a token whose digest is stored."""
from peewee import BigIntegerField, CharField, ForeignKeyField, Model


def up(migrator, db):
    class User(Model):
        class Meta:
            table_name = "users"

    class Session(Model):
        user = ForeignKeyField(User, on_delete="CASCADE")
        token_digest = CharField(max_length=64, unique=True)
        user_check = CharField(max_length=16)
        signed_in_at = BigIntegerField(index=True)
        confirmed_at = BigIntegerField()

        class Meta:
            table_name = "sessions"

    db.bind([User, Session])
    db.create_tables([Session], safe=True)
