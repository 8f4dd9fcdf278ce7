"""Confidential apps and who registered them: a client's auth method, secret digest and owner, added in place
(add_columns: peewee's SQLite migrator would rebuild the table to add NOT NULL)."""
from migrations import add_columns

COLUMNS = {
    "token_endpoint_auth_method": "VARCHAR(32) NOT NULL DEFAULT 'none'",
    "secret_digest": "VARCHAR(64)",
    "owner_id": "INTEGER REFERENCES users (id) ON DELETE CASCADE",
}


def up(migrator, db):
    add_columns(db, "clients", COLUMNS)
    db.execute_sql("CREATE INDEX IF NOT EXISTS clients_owner_id ON clients (owner_id)")
