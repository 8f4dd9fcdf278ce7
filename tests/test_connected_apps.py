"""Connected apps: what a user sees of the apps holding their tokens, and disconnecting one."""
from models import AccessToken, Client


def bearer(token):
    return {"Authorization": f"Bearer {token.token}"}


def test_connected_apps_lists_each_app_once_with_its_widest_scope(client, signed_in, oauth_client, other_oauth_client):
    AccessToken.issue(signed_in, oauth_client, scope="read")
    AccessToken.issue(signed_in, oauth_client, scope="read write")
    AccessToken.issue(signed_in)  # personal tokens are not apps
    page = client.get("/my/connected_apps").get_data(as_text=True)
    assert page.count("Test App") == 1 and "Other App" not in page and "Read and write" in page
    assert "self-declared" in page and 'sends you back to <span class="uri">127.0.0.1:8765' in page and "never" in page


def test_connected_apps_shows_when_an_app_was_last_used(client, signed_in, access_token):
    AccessToken.authenticate(access_token.token, at=1_795_000_000)
    assert "2026-11-18" in client.get("/my/connected_apps").get_data(as_text=True)


def test_connected_apps_says_when_there_are_none(client, signed_in):
    assert "No apps are connected" in client.get("/my/connected_apps").get_data(as_text=True)


def test_disconnect_asks_first_then_revokes_every_token_of_that_app(client, actions, signed_in, oauth_client,
                                                                    other_oauth_client):
    tokens = [AccessToken.issue(signed_in, oauth_client) for _ in range(3)]
    other = AccessToken.issue(signed_in, other_oauth_client)
    confirm = client.get(f"/my/connected_apps/{oauth_client.client_id}/disconnect")
    assert "Disconnect Test App?" in confirm.text and "its 3 connections" in confirm.text
    response = client.post(f"/my/connected_apps/{oauth_client.client_id}/disconnect",
                           data={"csrf_token": actions.csrf_token(confirm)})
    assert response.location == "/my/connected_apps"
    assert "Test App is disconnected" in client.get(response.location).get_data(as_text=True)
    assert all(client.get("/api/me", headers=bearer(token)).status_code == 401 for token in tokens)
    assert client.get("/api/me", headers=bearer(other)).status_code == 200


def test_disconnect_without_a_csrf_token_changes_nothing(client, signed_in, access_token, oauth_client):
    for data in ({}, {"csrf_token": "forged"}):
        response = client.post(f"/my/connected_apps/{oauth_client.client_id}/disconnect", data=data)
        assert response.status_code == 400
    assert AccessToken.authenticate(access_token.token)


def test_another_users_connection_is_a_404(app, client, actions, user, other_user, oauth_client):
    mallorys = AccessToken.issue(other_user, oauth_client)
    actions.sign_in()
    assert client.get(f"/my/connected_apps/{oauth_client.client_id}").status_code == 404
    token = actions.csrf_token(client.get("/my/connected_apps"))
    response = client.post(f"/my/connected_apps/{oauth_client.client_id}/disconnect", data={"csrf_token": token})
    assert response.status_code == 404 and AccessToken.authenticate(mallorys.token)
    assert client.get("/my/connected_apps/unknown-client").status_code == 404


def test_connected_apps_needs_sign_in(client):
    assert client.get("/my/connected_apps").location == "/session/new"


def test_the_page_lists_an_app_whose_stored_redirect_uri_no_longer_parses(client, signed_in, user, app):
    """A row registered before the rules refused unparsable authorities must not break the page (nor hide the
    other apps' Disconnect buttons)."""
    odd = Client.create(name="Odd", redirect_uris=["x.y://[::1/"], dynamically_registered=True)
    AccessToken.issue(user, odd)
    page = client.get("/my/connected_apps")
    assert page.status_code == 200 and "Odd" in page.text


def test_apps_of_the_same_name_are_told_apart_and_say_where_they_send_you(client, app, signed_in):
    first = Client.registered_itself("Harness", ["http://127.0.0.1:41001/cb"], "read")
    second = Client.registered_itself("Harness", ["cursor://anysphere.cursor-mcp/oauth/callback"], "read")
    for registered in (first, second):
        AccessToken.issue(signed_in, registered)
    page = client.get("/my/connected_apps").text
    assert f"<code>{first.client_id[:6]}</code>" in page and f"<code>{second.client_id[:6]}</code>" in page
    assert "127.0.0.1:41001" in page and "the app for cursor: links" in page


def test_an_apps_page_lists_each_connection_and_one_can_be_disconnected(client, actions, signed_in, oauth_client):
    older = AccessToken.issue(signed_in, oauth_client, scope="read")
    newer = AccessToken.issue(signed_in, oauth_client, scope="read write")
    client.get("/api/me", headers=bearer(newer), environ_base={"REMOTE_ADDR": "198.51.100.7"})
    page = client.get(f"/my/connected_apps/{oauth_client.client_id}").text
    assert page.index(newer.display_prefix) < page.index(older.display_prefix) and "from 198.51.100.7" in page
    confirm = client.get(f"/my/connected_apps/{oauth_client.client_id}/tokens/{older.id}/disconnect")
    assert "Disconnect this connection of Test App?" in confirm.text and "Its other connection keeps working." in confirm.text
    done = client.post(f"/my/connected_apps/{oauth_client.client_id}/tokens/{older.id}/disconnect",
                       data={"csrf_token": actions.csrf_token(confirm)})
    assert done.location == f"/my/connected_apps/{oauth_client.client_id}"
    assert client.get("/api/me", headers=bearer(older)).status_code == 401
    assert client.get("/api/me", headers=bearer(newer)).status_code == 200


def test_someone_elses_connection_is_a_404(client, actions, signed_in, other_user, oauth_client):
    theirs = AccessToken.issue(other_user, oauth_client)
    mine = AccessToken.issue(signed_in, oauth_client)
    for path in (f"/my/connected_apps/{oauth_client.client_id}/tokens/{theirs.id}/disconnect",
                 f"/my/connected_apps/{oauth_client.client_id}/tokens/{2 ** 70}/disconnect"):
        assert client.get(path).status_code == 404
        assert client.post(path, data={"csrf_token": actions.csrf_token(client.get("/"))}).status_code == 404
    assert client.get("/api/me", headers=bearer(theirs)).status_code == 200 and mine
