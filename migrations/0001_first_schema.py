"""The first schema (Keyfob 0.1): users, clients, access tokens and the ledger of redeemed codes."""
from peewee import BooleanField, CharField, ForeignKeyField, IntegerField, Model, TextField


def up(migrator, db):
    class User(Model):
        username = CharField(max_length=150, unique=True)
        password_digest = CharField(max_length=255)
        created_at = IntegerField()

        class Meta:
            table_name = "users"

    class Client(Model):
        client_id = CharField(max_length=64, unique=True)
        name = CharField(max_length=255)
        redirect_uris = TextField()
        scope = CharField(max_length=32, default="read")
        dynamically_registered = BooleanField(default=False)
        created_at = IntegerField()

        class Meta:
            table_name = "clients"

    class AccessToken(Model):
        digest = CharField(max_length=64, unique=True)
        display_prefix = CharField(max_length=16)
        user = ForeignKeyField(User, on_delete="CASCADE")
        oauth_client = ForeignKeyField(Client, null=True, on_delete="CASCADE", column_name="oauth_client_id")
        scope = CharField(max_length=32, default="read")
        resource = CharField(max_length=2048, null=True)
        code_jti = CharField(max_length=64, null=True, unique=True)
        description = CharField(max_length=255, null=True)
        created_at = IntegerField()
        last_used_at = IntegerField(null=True)

        class Meta:
            table_name = "access_tokens"

    class RedeemedCode(Model):
        jti = CharField(max_length=64, primary_key=True)
        redeemed_at = IntegerField(index=True)

        class Meta:
            table_name = "redeemed_codes"

    db.bind([User, Client, AccessToken, RedeemedCode])
    db.create_tables([User, Client, AccessToken, RedeemedCode])
