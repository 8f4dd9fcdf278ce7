"""When a client was last sent to the consent screen and when it first obtained a token: housekeeping sweeps
self-registered clients that never obtained one, but not while a consent for them is in flight.
Nullable BIGINTs (seconds since 1970), added in place."""
from migrations import add_columns


def up(migrator, db):
    add_columns(db, "clients", {"last_authorized_at": "BIGINT", "first_token_at": "BIGINT"})
    # Clients that already hold tokens obtained one: the sweep must never take them for unused.
    db.execute_sql("UPDATE clients SET first_token_at = (SELECT MIN(created_at) FROM access_tokens"
                   " WHERE oauth_client_id = clients.id) WHERE first_token_at IS NULL")
