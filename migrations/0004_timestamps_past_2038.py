"""Timestamps are seconds since 1970: PostgreSQL's INTEGER runs out in January 2038, so they become BIGINT.
SQLite's INTEGER already holds 64 bits."""
from peewee import SqliteDatabase

TIMESTAMPS = {"users": ["created_at"], "clients": ["created_at"], "access_tokens": ["created_at", "last_used_at"],
              "redeemed_codes": ["redeemed_at"], "secret_key_checks": ["created_at"]}


def up(migrator, db):
    if isinstance(db, SqliteDatabase):
        return
    for table, columns in TIMESTAMPS.items():
        db.execute_sql(f"ALTER TABLE {table} " + ", ".join(f"ALTER COLUMN {column} TYPE BIGINT" for column in columns))
