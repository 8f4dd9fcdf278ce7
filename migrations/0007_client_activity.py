"""When a client was last sent to the consent screen and when it first obtained a token: housekeeping sweeps
self-registered clients that never obtained one, but not while a consent for them is in flight.
Plain ADD COLUMN of nullable BIGINTs (seconds since 1970), which SQLite and PostgreSQL both run in place."""
COLUMNS = ("last_authorized_at", "first_token_at")


def up(migrator, db):
    existing = {column.name for column in db.get_columns("clients")}
    for name in COLUMNS:
        if name not in existing:
            db.execute_sql(f"ALTER TABLE clients ADD COLUMN {name} BIGINT")
    # Clients that already hold tokens obtained one: the sweep must never take them for unused.
    db.execute_sql("UPDATE clients SET first_token_at = (SELECT MIN(created_at) FROM access_tokens"
                   " WHERE oauth_client_id = clients.id) WHERE first_token_at IS NULL")
