"""require_token, as a Flask app that embeds Keyfob uses it (examples/embedded.py, which the README shows)."""
import importlib

import pytest

from models import AccessToken

METADATA = 'resource_metadata="http://localhost/.well-known/oauth-protected-resource"'


@pytest.fixture
def embedded(config, tmp_path, monkeypatch):
    monkeypatch.setenv("KEYFOB_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("KEYFOB_ISSUER", config["ISSUER"])
    monkeypatch.setenv("KEYFOB_DATABASE_URL", config["DATABASE_URL"])
    monkeypatch.setenv("KEYFOB_SECRET_KEY", config["SECRET_KEY"])
    monkeypatch.syspath_prepend("examples")
    return importlib.reload(importlib.import_module("embedded")).app.test_client()


def test_the_embedded_app_serves_its_routes_to_tokens_with_the_scope(embedded, user, oauth_client):
    read, write = (AccessToken.issue(user, oauth_client, scope=scope).token for scope in ("read", "read write"))
    assert embedded.get("/reports", headers={"Authorization": f"Bearer {read}"}).json == {"owner": "alice", "reports": []}
    assert embedded.post("/reports", headers={"Authorization": f"Bearer {write}"}).status_code == 201


def test_the_embedded_app_challenges_with_the_metadata_and_the_scope_needed(embedded, user, oauth_client):
    assert embedded.get("/reports").headers["WWW-Authenticate"] == f'Bearer {METADATA}, scope="read"'
    read = AccessToken.issue(user, oauth_client, scope="read").token
    refused = embedded.post("/reports", headers={"Authorization": f"Bearer {read}"})
    assert refused.status_code == 403
    assert refused.headers["WWW-Authenticate"] == (f'Bearer {METADATA}, error="insufficient_scope", '
                                                   'error_description="The access token does not grant write", '
                                                   'scope="read write"')


def test_the_embedded_app_still_serves_keyfob(embedded):
    assert embedded.get("/.well-known/oauth-authorization-server").json["issuer"] == "http://localhost"
