"""From which address each token was issued and last used, for the connected apps page. Plain ADD COLUMN of
nullable strings, which SQLite and PostgreSQL both run in place."""
COLUMNS = ("created_from", "last_used_from")


def up(migrator, db):
    existing = {column.name for column in db.get_columns("access_tokens")}
    for name in COLUMNS:
        if name not in existing:
            db.execute_sql(f"ALTER TABLE access_tokens ADD COLUMN {name} VARCHAR(64)")
