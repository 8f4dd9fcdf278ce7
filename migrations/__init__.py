"""Keyfob's schema, versioned: numbered scripts in this folder, applied in order by peewee's migration runner.
Every process runs `upgrade` on start, one at a time, so a new release never meets an old schema."""
import contextlib
import fcntl
import os

from peewee import SqliteDatabase
from playhouse.migrations import Runner

FOLDER = os.path.dirname(os.path.abspath(__file__))
LOCK_KEY = 0x6B6579666F62  # PostgreSQL advisory lock id: "keyfob" in ASCII


def runner(database):
    return Runner(database, FOLDER, table_name="schema_migrations")


def upgrade(database):
    """Apply the pending migrations; their names. A database made before migrations existed (Keyfob 0.1
    created its tables directly) is adopted: its tables are the first schema, and later scripts check
    for columns it may already have."""
    versions = runner(database)
    if not versions.History.table_exists() and database.table_exists("users"):
        versions.fake("0001_first_schema")
    return versions.up()


def add_columns(db, table, columns):
    """ALTER TABLE … ADD COLUMN for each of columns ({name: definition}) the table does not have yet: a database
    from before migrations may have some already. Plain ADD COLUMN, which SQLite and PostgreSQL both run in place:
    peewee's SQLite migrator would rebuild the table, and dropping the old one would cascade to every token."""
    existing = {column.name for column in db.get_columns(table)}
    for name, definition in columns.items():
        if name not in existing:
            db.execute_sql(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")


def version(database):
    """The schema version (the number of the last migration applied, 0 for none) and how many are pending."""
    status = runner(database).status()
    applied = [migration.idx for migration in status if migration.applied]
    return max(applied, default=0), sum(1 for migration in status if not migration.applied)


@contextlib.contextmanager
def exclusive(database):
    """Hold the schema against other processes starting at the same time: an advisory lock on
    PostgreSQL, a lock file beside a SQLite database."""
    if isinstance(database, SqliteDatabase):
        if database.database in ("", ":memory:"):
            yield
            return
        with open(database.database + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield
        return
    database.execute_sql("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
    try:
        yield
    finally:
        database.execute_sql("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
