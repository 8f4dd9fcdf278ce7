"""A client_id may be the https URL of a Client ID Metadata Document: room for up to 2048 characters
(SQLite does not enforce a VARCHAR's length)."""
from peewee import SqliteDatabase


def up(migrator, db):
    if not isinstance(db, SqliteDatabase):
        db.execute_sql("ALTER TABLE clients ALTER COLUMN client_id TYPE VARCHAR(2048)")
