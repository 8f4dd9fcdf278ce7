"""The schema is versioned and upgraded in place: a database from the first release keeps every row and
every token keeps working, on SQLite and on PostgreSQL, with `keyfob db upgrade` as an operator runs it."""
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest
from peewee import SqliteDatabase

import migrations
from app import connect, create_app
from live import KEYFOB, keyfob_env
from models import AccessToken, AuditEvent, Client, RedeemedCode, SecretKeyCheck, Session, User, db, digest, now

TOKEN = "kf_at_" + "t" * 43
SECRET_KEY = "k" * 40
LATEST = max(migration.idx for migration in migrations.runner(SqliteDatabase(":memory:")).migrations())


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, tmp_path):
    """The URL of a database with no tables at all."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/keyfob.db"
    return request.getfixturevalue("new_postgresql_database")()


@pytest.fixture
def old_database(empty_database):
    """A database made by the first release, with a user, a client, a token and a spent code in it; its URL."""
    url = empty_database
    database = connect(url)
    with database.connection_context():
        migrations.runner(database).up("0001_first_schema")
        database.execute_sql("DROP TABLE schema_migrations")  # 0.1 created its tables without a version
        database.execute_sql("INSERT INTO users (username, password_digest, created_at) VALUES ('alice', 'x', 1)")
        database.execute_sql("INSERT INTO clients (client_id, name, redirect_uris, scope, dynamically_registered,"
                             " created_at) VALUES ('c1', 'Old App', '[\"http://127.0.0.1/cb\"]', 'read', TRUE, 2)")
        database.execute_sql("INSERT INTO access_tokens (digest, display_prefix, user_id, oauth_client_id, scope,"
                             " code_jti, created_at) VALUES (%s, 'kf_at_tttttt', 1, 1, 'read', 'j1', 3)"
                             .replace("%s", database.param), (digest(TOKEN),))
        database.execute_sql("INSERT INTO redeemed_codes (jti, redeemed_at) VALUES ('j1', 3)")
    database.close()
    return url


def keyfob(url, tmp_path, *args):
    env = keyfob_env(tmp_path / "instance", {"KEYFOB_DATABASE_URL": url, "KEYFOB_SECRET_KEY": SECRET_KEY})
    return subprocess.run([KEYFOB, *args], env=env, capture_output=True, text=True, timeout=60)


def test_db_upgrade_keeps_every_row_of_a_first_release_database_and_its_token_still_works(old_database, tmp_path):
    assert keyfob(old_database, tmp_path, "db", "version").stdout.startswith("Schema version 0;")
    upgraded = keyfob(old_database, tmp_path, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.startswith(f"Schema version {LATEST}, up to date")

    app = create_app({"DATABASE_URL": old_database, "SECRET_KEY": SECRET_KEY, "ISSUER": "http://keyfob.test"})
    try:
        client = Client.find_by("client_id", "c1")
        assert (client.name, client.token_endpoint_auth_method, client.owner_id) == ("Old App", "none", None)
        assert client.scope == "read write"  # registered scope was never enforced: it keeps asking what it could
        assert [user.username for user in User.select()] == ["alice"]
        assert [code.jti for code in RedeemedCode.select()] == ["j1"]
        me = app.test_client().get("/api/me", headers={"Authorization": f"Bearer {TOKEN}"})
        assert me.json == {"user": "alice", "scope": "read", "client_id": "c1"}
    finally:
        db.close()


def test_a_first_release_database_that_already_has_later_columns_is_adopted(old_database, tmp_path):
    database = connect(old_database)
    with database.connection_context():
        database.execute_sql("ALTER TABLE clients ADD COLUMN token_endpoint_auth_method VARCHAR(32) NOT NULL"
                             " DEFAULT 'none'")
    assert keyfob(old_database, tmp_path, "db", "upgrade").returncode == 0
    assert keyfob(old_database, tmp_path, "db", "version").stdout == f"Schema version {LATEST}, up to date.\n"


def test_upgraded_schema_has_every_column_the_models_use(database_url):
    create_app({"DATABASE_URL": database_url, "SECRET_KEY": SECRET_KEY, "ISSUER": "http://keyfob.test"})
    try:
        for model in (User, Client, AccessToken, RedeemedCode, SecretKeyCheck, AuditEvent):
            stored = {column.name for column in db.get_columns(model._meta.table_name)}
            assert stored == set(model._meta.columns), model
    finally:
        db.close()


def test_a_sessions_table_made_without_a_user_check_gets_one_and_its_sessions_end(empty_database):
    """0011 first made the sessions table without user_check: 0013 adds it, and a session that never had a check
    ends (its browser signs in again) instead of every page failing on the missing column."""
    database = connect(empty_database)
    with database.connection_context():
        migrations.upgrade(database)
        database.execute_sql("ALTER TABLE sessions DROP COLUMN user_check")
        database.execute_sql("DELETE FROM schema_migrations WHERE name = '0013_session_user_check'")
        database.execute_sql("INSERT INTO users (username, password_digest, created_at) VALUES ('alice', 'x', 1)")
        database.execute_sql("INSERT INTO sessions (user_id, token_digest, signed_in_at, confirmed_at) VALUES"
                             " (1, %s, %s, %s)".replace("%s", database.param), (digest("s" * 43), now(), now()))
    database.close()
    create_app({"DATABASE_URL": empty_database, "SECRET_KEY": SECRET_KEY, "ISSUER": "http://keyfob.test"})
    try:
        assert "user_check" in {column.name for column in db.get_columns("sessions")}
        assert Session.select().count() == 1 and Session.find("s" * 43) is None
    finally:
        db.close()


def test_processes_starting_together_upgrade_a_new_database_once(empty_database, tmp_path):
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: keyfob(empty_database, tmp_path, "db", "upgrade"), range(4)))
    assert [result.returncode for result in results] == [0] * 4, [result.stderr for result in results]
    assert keyfob(empty_database, tmp_path, "db", "version").stdout == f"Schema version {LATEST}, up to date.\n"
