"""Personal access tokens: create, shown once, listed by prefix, revoked."""
import pytest

from models import AccessToken


def create(actions, **form):
    token = actions.csrf_token(actions.client.get("/my/access_tokens"))
    return actions.client.post("/my/access_tokens", data={"csrf_token": token, **form})


def test_a_new_token_is_shown_once_and_works(client, actions, signed_in):
    response = create(actions, description="Backup script", scope="read write")
    page = response.get_data(as_text=True)
    token = page.split('id="new-token">')[1].split("<")[0]
    assert response.status_code == 201 and response.headers["Cache-Control"] == "no-store"
    assert token.startswith("kf_pat_") and "cannot show it again" in page
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).json == {
        "user": "alice", "scope": "read write", "client_id": None}
    listing = client.get("/my/access_tokens").get_data(as_text=True)
    assert "Backup script" in listing and token[:13] in listing and token not in listing


@pytest.mark.parametrize("form, message", [
    ({"description": "", "scope": "read"}, "Describe what the token is for"),
    ({"description": "x" * 256, "scope": "read"}, "Describe what the token is for"),
    ({"description": "ok", "scope": "admin"}, "Choose read, or read and write"),
    ({"description": "ok"}, "Choose read, or read and write")])
def test_a_token_needs_a_description_and_a_scope(signed_in, actions, form, message):
    response = create(actions, **form)
    assert response.status_code == 422 and message in response.get_data(as_text=True)
    assert AccessToken.select().count() == 0


def test_revoking_a_token_refuses_it_from_then_on(client, actions, signed_in):
    issued = AccessToken.issue(signed_in, description="CLI")
    token = actions.csrf_token(client.get("/my/access_tokens"))
    response = client.post(f"/my/access_tokens/{issued.id}/revoke", data={"csrf_token": token})
    assert response.location == "/my/access_tokens"
    assert client.get("/api/me", headers={"Authorization": f"Bearer {issued.token}"}).status_code == 401


def test_oauth_tokens_are_not_personal_tokens(client, actions, signed_in, access_token):
    assert "You have no personal access tokens" in client.get("/my/access_tokens").get_data(as_text=True)
    token = actions.csrf_token(client.get("/my/access_tokens"))
    assert client.post(f"/my/access_tokens/{access_token.id}/revoke", data={"csrf_token": token}).status_code == 404
    assert AccessToken.authenticate(access_token.token)


def test_another_users_token_cannot_be_seen_or_revoked(client, actions, user, other_user):
    mallorys = AccessToken.issue(other_user, description="Mallory's secret tool")
    actions.sign_in()
    page = client.get("/my/access_tokens")
    assert "Mallory" not in page.get_data(as_text=True)
    response = client.post(f"/my/access_tokens/{mallorys.id}/revoke", data={"csrf_token": actions.csrf_token(page)})
    assert response.status_code == 404 and AccessToken.authenticate(mallorys.token)


def test_token_forms_refuse_a_missing_csrf_token(client, signed_in):
    issued = AccessToken.issue(signed_in, description="CLI")
    assert client.post("/my/access_tokens", data={"description": "x", "scope": "read"}).status_code == 400
    assert client.post(f"/my/access_tokens/{issued.id}/revoke").status_code == 400
    assert AccessToken.select().count() == 1 and AccessToken.authenticate(issued.token)


def test_an_impossible_token_id_is_a_404(client, actions, signed_in):
    token = actions.csrf_token(client.get("/my/access_tokens"))
    assert client.post("/my/access_tokens/99999999999999999999999/revoke", data={"csrf_token": token}).status_code == 404


def test_a_description_loses_control_and_bidi_characters(signed_in, actions):
    create(actions, description="Back\u202eup\x00", scope="read")
    assert AccessToken.get().description == "Backup"


def test_revoking_a_personal_token_asks_first(client, actions, signed_in):
    token = AccessToken.create_personal(signed_in, "read", "Backup script")
    index = client.get("/my/access_tokens").text
    assert f'href="/my/access_tokens/{token.id}/revoke"' in index
    assert f'action="/my/access_tokens/{token.id}/revoke"' not in index  # no one-click revoke
    confirm = client.get(f"/my/access_tokens/{token.id}/revoke")
    assert "Revoke “Backup script”?" in confirm.text and f"{token.display_prefix}… stops working" in confirm.text
    assert client.get(f"/my/access_tokens/{token.id + 1}/revoke").status_code == 404
    client.post(f"/my/access_tokens/{token.id}/revoke", data={"csrf_token": actions.csrf_token(confirm)})
    assert AccessToken.personal(signed_in) == []
