"""The whole story, as an MCP client and its user live it."""
from models import s256


def test_register_consent_exchange_call_revoke(client, actions, user):
    registration = actions.register("Claude Desktop", "http://127.0.0.1:33418/callback")
    assert registration.status_code == 201
    client_id = registration.json["client_id"]

    verifier = "v" * 64
    params = {"client_id": client_id, "redirect_uri": "http://127.0.0.1:50123/callback", "response_type": "code",
              "code_challenge": s256(verifier), "code_challenge_method": "S256", "state": "s1", "scope": "read write",
              "resource": "http://localhost"}
    start = client.get("/oauth/authorization/new", query_string=params)
    assert start.status_code == 302 and start.location == "/session/new"
    signed_in = actions.sign_in()
    assert signed_in.location.startswith("/oauth/authorization/new?")

    consent = client.get(signed_in.location)
    assert "Claude Desktop" in consent.get_data(as_text=True)
    approved = client.post("/oauth/authorization", data={**params, "decision": "approve",
                                                        "csrf_token": actions.csrf_token(consent)})
    assert approved.location.startswith("http://127.0.0.1:50123/callback?")
    answer = actions.query(approved)
    assert answer["state"] == "s1" and answer["iss"] == "http://localhost"

    token = client.post("/oauth/token", data={
        "grant_type": "authorization_code", "client_id": client_id, "code": answer["code"],
        "code_verifier": verifier, "redirect_uri": params["redirect_uri"], "resource": "http://localhost"})
    assert token.status_code == 200
    bearer = {"Authorization": f"Bearer {token.json['access_token']}"}
    me = client.get("/api/me", headers=bearer)
    assert me.json == {"user": "alice", "scope": "read write", "client_id": client_id}

    assert client.post("/oauth/revocation", data={"token": token.json["access_token"], "client_id": client_id}).status_code == 200
    refused = client.get("/api/me", headers=bearer)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
