"""No secret is ever logged or stored in plaintext: a whole flow, its failures included, under DEBUG logging,
then everything the database stores (SQLite's files and write-ahead log, or a dump of PostgreSQL's rows)."""
import logging

from actions import PASSWORD
from models import digest, s256

WRONG_PASSWORD = "not the password, 4417"
CALLBACK = "http://127.0.0.1:50123/callback"


def test_no_secret_reaches_a_log_record_or_the_database_file(app, client, actions, user, caplog, stored_bytes):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger=app.logger.name)
    secrets = [PASSWORD, WRONG_PASSWORD]

    registration = actions.register("Flow", CALLBACK)
    client_id = registration.json["client_id"]

    sign_in_token = actions.csrf_token(client.get("/session/new"))
    secrets.append(sign_in_token)
    wrong = client.post("/session", data={"username": "alice", "password": WRONG_PASSWORD, "csrf_token": sign_in_token})
    assert wrong.status_code == 401
    right = client.post("/session", data={"username": "alice", "password": PASSWORD, "csrf_token": sign_in_token})
    assert right.status_code == 302

    verifier = "secret-verifier-" + "v" * 48
    params = {"client_id": client_id, "redirect_uri": CALLBACK, "response_type": "code", "state": "s",
              "code_challenge": s256(verifier), "code_challenge_method": "S256", "scope": "read write"}
    consent_token = actions.csrf_token(client.get("/oauth/authorization/new", query_string=params))
    approved = client.post("/oauth/authorization", data={**params, "decision": "approve", "csrf_token": consent_token})
    code = actions.query(approved)["code"]
    secrets += [consent_token, verifier, code]

    exchange = {"grant_type": "authorization_code", "client_id": client_id, "code": code,
                "code_verifier": verifier, "redirect_uri": CALLBACK}
    wrong_verifier = "wrong-verifier-" + "w" * 48
    secrets.append(wrong_verifier)
    failed = client.post("/oauth/token", data={**exchange, "code_verifier": wrong_verifier})
    assert failed.json["error"] == "invalid_grant"
    token = client.post("/oauth/token", data=exchange).json["access_token"]
    secrets.append(token)
    bearer = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/me", headers=bearer).json["user"] == "alice"

    stored = stored_bytes()
    assert digest(token).encode() in stored
    assert token.encode() not in stored and PASSWORD.encode() not in stored

    assert client.post("/oauth/token", data=exchange).json["error"] == "invalid_grant"  # a replay
    assert client.post("/oauth/revocation", data={"token": token, "client_id": client_id}).status_code == 200
    assert client.get("/api/me", headers=bearer).status_code == 401

    assert any(record.name == "peewee" for record in caplog.records), "DEBUG logging was not captured"
    logged = caplog.text + "".join(repr(vars(record)) for record in caplog.records)
    assert [secret for secret in secrets if secret in logged] == []
    stored = stored_bytes()
    assert [secret for secret in secrets if secret.encode() in stored] == []
