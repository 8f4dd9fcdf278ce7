"""Confidential apps and who registered them: a client's auth method, secret digest and owner.
Plain ADD COLUMN, which SQLite and PostgreSQL both run in place: peewee's SQLite migrator would rebuild
the table to add NOT NULL, and dropping the old table would cascade to every access token.
Databases from before migrations may have some of these columns already, so each is added only if missing."""
COLUMNS = {
    "token_endpoint_auth_method": "VARCHAR(32) NOT NULL DEFAULT 'none'",
    "secret_digest": "VARCHAR(64)",
    "owner_id": "INTEGER REFERENCES users (id) ON DELETE CASCADE",
}


def up(migrator, db):
    existing = {column.name for column in db.get_columns("clients")}
    for name, definition in COLUMNS.items():
        if name not in existing:
            db.execute_sql(f"ALTER TABLE clients ADD COLUMN {name} {definition}")
    db.execute_sql("CREATE INDEX IF NOT EXISTS clients_owner_id ON clients (owner_id)")
