"""From which address each token was issued and last used, for the connected apps page: nullable strings,
added in place."""
from migrations import add_columns


def up(migrator, db):
    add_columns(db, "access_tokens", {"created_from": "VARCHAR(64)", "last_used_from": "VARCHAR(64)"})
