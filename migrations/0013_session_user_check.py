"""A session's user check, for databases whose sessions table 0011 made before it had one (0011 now makes it):
each such session named no check, so it ends, and its browser signs in again."""
from migrations import add_columns


def up(migrator, db):
    add_columns(db, "sessions", {"user_check": "VARCHAR(16) NOT NULL DEFAULT ''"})
