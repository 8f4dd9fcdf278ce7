"""The audit trail: every event in the table and on the log, with who, which client and from which address, and
never a secret; /my/activity shows a user their own events; `keyfob audit` prints them for the operator."""
import json
import logging
import os
import subprocess
from pathlib import Path

import pytest
from peewee import DatabaseError

from actions import PASSWORD, REDIRECT_URI
from app import create_app
from live import KEYFOB
from models import AccessToken, AuditEvent, Client, User, db, s256

ADDRESS = "203.0.113.9"
WRONG_PASSWORD = "not the password, 5521"


@pytest.fixture
def audit_log(caplog):
    caplog.set_level(logging.INFO, logger="keyfob.audit")
    return caplog


@pytest.fixture
def from_address(client):
    client.environ_base["REMOTE_ADDR"] = ADDRESS
    return client


def events():
    """Every event, oldest first, as (event, username, client name, address, detail)."""
    return [(event.event, event.username, event.client_name, event.address, event.details)
            for event in reversed(AuditEvent.recent(1000))]


def logged(caplog):
    return [json.loads(record.getMessage()) for record in caplog.records
            if record.name == "keyfob.audit" and record.levelno == logging.INFO]


def test_a_whole_flow_is_recorded_with_who_which_client_and_where_and_never_a_secret(from_address, actions, user,
                                                                                      audit_log, stored_bytes):
    client = from_address
    secrets = [PASSWORD, WRONG_PASSWORD]
    client_id = actions.register("Flow").json["client_id"]
    form = actions.csrf_token(client.get("/session/new"))
    assert client.post("/session", data={"username": "alice", "password": WRONG_PASSWORD, "csrf_token": form}
                       ).status_code == 401
    assert client.post("/session", data={"username": "alice", "password": PASSWORD, "csrf_token": form}
                       ).status_code == 302
    verifier = "audit-verifier-" + "v" * 48
    params = {"client_id": client_id, "redirect_uri": REDIRECT_URI, "response_type": "code", "state": "s",
              "code_challenge": s256(verifier), "code_challenge_method": "S256", "scope": "read write"}
    consent = actions.csrf_token(client.get("/oauth/authorization/new", query_string=params))
    client.post("/oauth/authorization", data={**params, "decision": "deny", "csrf_token": consent})
    actions.sign_in()  # on a loopback issuer each redirect to the app ends the sign-in
    consent = actions.csrf_token(client.get("/oauth/authorization/new", query_string=params))
    approved = client.post("/oauth/authorization", data={**params, "decision": "approve", "csrf_token": consent})
    code = actions.query(approved)["code"]
    exchange = {"grant_type": "authorization_code", "client_id": client_id, "code": code, "code_verifier": verifier,
                "redirect_uri": REDIRECT_URI}
    token = client.post("/oauth/token", data=exchange).json["access_token"]
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.post("/oauth/token", data=exchange).json["error"] == "invalid_grant"
    secrets += [form, consent, verifier, code, token]

    prefix = token[:12]
    assert events() == [
        ("client.registered", None, "Flow", ADDRESS, {"redirect_uris": 1, "destinations": "127.0.0.1:8765", "kind": "self"}),
        ("sign_in.failed", "alice", None, ADDRESS, {}),
        ("signed_in", "alice", None, ADDRESS, {}),
        ("consent.denied", "alice", "Flow", ADDRESS, {"scope": "read write"}),
        ("signed_in", "alice", None, ADDRESS, {}),
        ("consent.granted", "alice", "Flow", ADDRESS, {"scope": "read write", "resource": "http://localhost"}),
        ("token.issued", "alice", "Flow", ADDRESS, {"token": prefix, "scope": "read write", "resource": "http://localhost"}),
        ("code.replayed", "alice", "Flow", ADDRESS, {"revoked": 1})]
    assert {event.client_id for event in AuditEvent.select() if event.client_name} == {client_id}
    assert [line["event"] for line in logged(audit_log)] == [event[0] for event in events()]
    issued = next(line for line in logged(audit_log) if line["event"] == "token.issued")
    assert issued | {"at": 0} == {"at": 0, "event": "token.issued", "user_id": user.id,
                                                "username": "alice", "client_id": client_id, "client_name": "Flow",
                                                "address": ADDRESS, "token": prefix, "scope": "read write",
                                                "resource": "http://localhost"}
    text = audit_log.text + "".join(repr(vars(record)) for record in audit_log.records)
    assert [secret for secret in secrets if secret in text] == []
    stored = stored_bytes()
    assert [secret for secret in secrets if secret.encode() in stored] == []


def test_sign_in_failures_record_the_user_never_the_password_nor_an_unknown_name(actions, user, audit_log,
                                                                                stored_bytes):
    for username, password in (("alice", WRONG_PASSWORD), (WRONG_PASSWORD, "alice"), ("al\x00ice\u202e", "x\x00y"),
                               ("alice", "")):
        actions.sign_in(username, password)
    failures = AuditEvent.recent(10)[::-1]
    assert [(event.event, event.user_id, event.username) for event in failures] == [
        ("sign_in.failed", user.id, "alice"), ("sign_in.failed", None, None), ("sign_in.failed", None, None),
        ("sign_in.failed", user.id, "alice")]
    assert WRONG_PASSWORD not in audit_log.text and all(event.detail == "{}" for event in failures)
    assert WRONG_PASSWORD.encode() not in stored_bytes()


def test_personal_tokens_apps_and_disconnecting_are_recorded_for_the_user(client, actions, signed_in, oauth_client,
                                                                          audit_log):
    form = actions.csrf_token(client.get("/my/access_tokens"))
    client.post("/my/access_tokens", data={"description": "Backup", "scope": "read", "csrf_token": form})
    personal = AccessToken.personal(signed_in)[0]
    client.post(f"/my/access_tokens/{personal.id}/revoke", data={"csrf_token": form})
    AccessToken.issue(signed_in, oauth_client)
    client.post(f"/my/connected_apps/{oauth_client.client_id}/disconnect", data={"csrf_token": form})
    client.post("/my/apps", data={"csrf_token": form, "name": "Reports", "kind": "confidential",
                                  "redirect_uris": "https://app.example.com/cb"})
    app = Client.get(Client.name == "Reports")
    client.post(f"/my/apps/{app.client_id}", data={"csrf_token": form, "name": "Reports",
                                                   "redirect_uris": "https://app.example.com/cb2"})
    secret = client.post(f"/my/apps/{app.client_id}/secret", data={"csrf_token": form}).get_data(as_text=True)
    secret = secret.split('id="client-secret">')[1].split("<")[0]
    client.post(f"/my/apps/{app.client_id}/delete", data={"csrf_token": form})
    assert [(name, username, client_name, address) for name, username, client_name, address, _ in events()] == [
        ("signed_in", "alice", None, "127.0.0.1"), ("personal_token.created", "alice", None, "127.0.0.1"), ("personal_token.revoked", "alice", None, "127.0.0.1"),
        ("app.disconnected", "alice", "Test App", "127.0.0.1"), ("client.registered", "alice", "Reports", "127.0.0.1"),
        ("client.changed", "alice", "Reports", "127.0.0.1"), ("client.secret_regenerated", "alice", "Reports", "127.0.0.1"),
        ("client.deleted", "alice", "Reports", "127.0.0.1")]
    assert events()[1][4] == {"token": personal.display_prefix, "scope": "read", "description": "Backup"}
    assert secret.startswith("kf_cs_") and secret not in audit_log.text


def test_a_token_revoked_by_its_holder_is_recorded_but_a_bearer_call_writes_nothing(client, access_token, oauth_client):
    bearer = {"Authorization": f"Bearer {access_token.token}"}
    AccessToken.update(scope="read write").execute()
    for _ in range(3):
        assert client.get("/api/me", headers=bearer).status_code == 200
    assert AuditEvent.select().count() == 0  # the bearer path is the hot path: it records nothing
    assert client.delete("/api/token", headers=bearer).status_code == 204
    personal = AccessToken.issue(access_token.user, description="Script")
    client.post("/oauth/revocation", data={"token": personal.token})
    assert [(name, username, client_name, detail) for name, username, client_name, _, detail in events()] == [
        ("token.revoked", "alice", "Test App", {"token": access_token.display_prefix, "by": "holder"}),
        ("personal_token.revoked", "alice", None, {"token": personal.display_prefix, "description": "Script",
                                                   "by": "holder"})]


def test_a_failed_audit_write_alone_is_logged_and_one_in_a_transaction_undoes_its_change(actions, user, audit_log):
    """The row is written in its change's transaction, without a savepoint: no change is left unrecorded."""
    db.execute_sql("ALTER TABLE audit_events RENAME TO audit_events_away")
    try:
        assert actions.sign_in(password="wrong").status_code == 401  # recorded alone
        with pytest.raises(DatabaseError):
            AccessToken.create_personal(user, "read", "In a transaction")
        assert AccessToken.select().count() == 0
    finally:
        db.execute_sql("ALTER TABLE audit_events_away RENAME TO audit_events")
    assert [line["event"] for line in logged(audit_log)] == ["sign_in.failed", "personal_token.created"]
    assert "The audit event sign_in.failed was not stored" in audit_log.text
    assert "The audit event personal_token.created was not stored" in audit_log.text


def test_activity_shows_the_users_own_events_in_words_newest_first(client, signed_in, other_user, oauth_client):
    AuditEvent.record("consent.granted", other_user, oauth_client, scope="read")
    Client.update(name="<b>Sly</b> App").where(Client.id == oauth_client.id).execute()
    AuditEvent.record("consent.granted", signed_in, Client.get_by_id(oauth_client.id), scope="read write")
    AccessToken.create_personal(signed_in, "read", "Nightly")
    page = client.get("/my/activity").get_data(as_text=True)
    assert page.index("You created the personal token “Nightly” to read") < page.index(
        "You approved &lt;b&gt;Sly&lt;/b&gt; App to read and write")
    assert "Test App" not in page and page.count("You approved") == 1
    assert 'href="/my/activity" aria-current="page"' in page


def test_activity_never_shows_a_removed_users_events_to_someone_given_their_id(client, actions, signed_in,
                                                                               password_digest):
    AccessToken.create_personal(signed_in, "read", "Old account")
    signed_in.remove()
    User.create(id=signed_in.id, username="alice", password_digest=password_digest, created_at=signed_in.created_at + 1)
    AuditEvent.update(at=signed_in.created_at).execute()
    actions.sign_in()
    page = client.get("/my/activity").text
    assert "Old account" not in page and "You created" not in page  # its own sign-in, too, is older than it


def test_activity_needs_sign_in(client):
    assert client.get("/my/activity").location == "/session/new"


@pytest.fixture
def env(tmp_path, instance_database):
    clean = {name: value for name, value in os.environ.items() if not name.startswith("KEYFOB_")}
    return clean | {"KEYFOB_INSTANCE_PATH": str(tmp_path / "instance"), **instance_database}


def keyfob(env, *args):
    return subprocess.run([KEYFOB, *args], env=env, cwd=Path(env["KEYFOB_INSTANCE_PATH"]).parent,
                          capture_output=True, text=True, timeout=60)


def test_keyfob_audit_prints_what_the_operator_and_the_users_did(env, tmp_path, monkeypatch):
    for name, value in {**env, "KEYFOB_ISSUER": "http://127.0.0.1:8000"}.items():
        monkeypatch.setenv(name, value)
    create_app()
    try:
        alice, bob = User.register("alice", PASSWORD), User.register("bob", PASSWORD)
        app = Client.registered_itself(name="Evil\x1b]0;pwned\x07App", redirect_uris=[REDIRECT_URI], scope="read")
        token = AccessToken.issue(alice, app)
        personal = AccessToken.create_personal(bob, "read", "CLI")
    finally:
        db.close()
    assert keyfob(env, "token", "revoke", token.display_prefix, "--yes").returncode == 0
    assert keyfob(env, "client", "remove", app.client_id, "--yes").returncode == 0
    removed = keyfob(env, "user", "remove", "bob", "--yes")
    assert removed.returncode == 0

    listing = keyfob(env, "audit")
    assert listing.returncode == 0 and "\x1b" not in listing.stdout and "\x07" not in listing.stdout
    lines = listing.stdout.splitlines()
    assert lines[0].split() == ["AT", "(UTC)", "EVENT", "USER", "CLIENT", "CLIENT", "ID", "ADDRESS", "DETAIL"]
    assert [line.split()[2] for line in lines[1:]] == [
        "client.registered", "personal_token.created", "token.revoked", "client.deleted", "user.removed"]
    assert "by=operator" in lines[3] and "alice" in lines[3] and "Evil]0;pwnedApp" in lines[3]
    assert token.token not in listing.stdout and personal.token not in listing.stdout
    assert [line.split()[2] for line in keyfob(env, "audit", "--user", "bob", "--limit", "1").stdout.splitlines()[1:]] \
        == ["user.removed"]
    assert keyfob(env, "audit", "--user", "nobody").stdout.strip() == "No events recorded."
