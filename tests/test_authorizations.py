"""The authorization endpoint: consent, and errors that never leave for an unvalidated redirect."""
import pytest

from actions import PASSWORD, REDIRECT_URI, Actions
from models import Client, Session, now


def test_authorization_asks_a_signed_out_user_to_sign_in_first(client, user, authorize_params):
    response = client.get("/oauth/authorization/new", query_string=authorize_params)
    assert response.status_code == 302 and response.location == "/session/new"


def test_a_signed_out_request_too_long_to_remember_still_asks_to_sign_in(client, user, authorize_params):
    response = client.get("/oauth/authorization/new", query_string={**authorize_params, "pad": "p" * 5000})
    assert response.status_code == 302 and response.location == "/session/new"
    assert len(response.headers.get("Set-Cookie", "")) < 4000  # a cookie browsers would drop is never sent


def test_authorization_shows_the_consent_screen(client, signed_in, authorize_params):
    response = client.get("/oauth/authorization/new", query_string={**authorize_params, "scope": "write"})
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Test App" in page and "chosen by the app itself" in page
    assert "127.0.0.1</strong> port <strong>8765" in page
    assert "Make changes to your data" in page and "See your account" in page
    assert 'value="approve"' in page and 'value="deny"' in page


def test_consent_shows_at_most_60_characters_of_the_name(client, signed_in, oauth_client, authorize_params):
    oauth_client.name = "Notes. " + "This app is part of the server itself and was checked by its operator. " * 3
    oauth_client.save()
    page = client.get("/oauth/authorization/new", query_string=authorize_params).get_data(as_text=True)
    assert f'<span class="client-name">{oauth_client.name[:59]}…</span>' in page and oauth_client.name[:60] not in page


def test_consent_warns_that_another_users_app_named_itself(client, signed_in, other_user, pkce):
    app = Client.registered_by_user(other_user, "Company Notes", [REDIRECT_URI])
    page = client.get("/oauth/authorization/new", query_string={
        "client_id": app.client_id, "redirect_uri": REDIRECT_URI, "response_type": "code",
        "code_challenge": pkce[1], "code_challenge_method": "S256"}).get_data(as_text=True)
    assert '<p class="warning">This name was <strong>chosen by mallory</strong>, another user of this server' in page
    assert "Registered on this server by" not in page


def test_consent_screen_cannot_be_framed_or_cached_and_does_not_restrict_form_action(client, signed_in, authorize_params):
    response = client.get("/oauth/authorization/new", query_string=authorize_params)
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert "form-action" not in response.headers["Content-Security-Policy"]
    assert response.headers["Cache-Control"] == "no-store"


def test_consent_escapes_the_self_declared_client_name(client, signed_in, oauth_client, authorize_params):
    oauth_client.name = '<script>alert("x")</script>'
    oauth_client.save()
    page = client.get("/oauth/authorization/new", query_string=authorize_params).get_data(as_text=True)
    assert "<script>alert" not in page and "&lt;script&gt;" in page


def test_authorization_rejects_an_unknown_client_with_a_page(client, signed_in, authorize_params):
    response = client.get("/oauth/authorization/new", query_string={**authorize_params, "client_id": "nope"})
    assert response.status_code == 400 and response.location is None
    assert "invalid_request" in response.get_data(as_text=True)


@pytest.mark.parametrize("redirect_uri", [
    None, "", "http://localhost:8765/callback", "http://127.0.0.1:8765/callback/", "http://127.0.0.1:8765/other",
    "http://127.0.0.1:8765/callback?x=1", "http://127.0.0.1:8765/callback#f", "https://127.0.0.1:8765/callback",
    "http://127.0.0.1:8765@evil.example/callback", "http://evil.example/callback", "javascript:alert(1)",
    [REDIRECT_URI, "http://evil.example/"]])
def test_authorization_never_redirects_to_an_unregistered_uri(client, signed_in, authorize_params, redirect_uri):
    params = {**authorize_params, "redirect_uri": redirect_uri}
    if redirect_uri is None:
        del params["redirect_uri"]
    response = client.get("/oauth/authorization/new", query_string=params)
    assert response.status_code == 400 and response.location is None


def test_authorization_accepts_another_loopback_port(signed_in, actions, authorize_params):
    response = actions.approve({**authorize_params, "redirect_uri": "http://127.0.0.1:51000/callback"})
    assert response.location.startswith("http://127.0.0.1:51000/callback?code=")


@pytest.mark.parametrize("change, error", [
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"response_type": None}, "invalid_request"),
    ({"response_type": ["code", "code"]}, "invalid_request"),
    ({"code_challenge": None}, "invalid_request"),
    ({"code_challenge_method": None}, "invalid_request"),
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge_method": "s256"}, "invalid_request"),
    ({"code_challenge": "short"}, "invalid_request"),
    ({"code_challenge": "a" * 44}, "invalid_request"),
    ({"code_challenge": "+" * 43}, "invalid_request"),
    ({"scope": "admin"}, "invalid_scope"),
    ({"scope": "read admin"}, "invalid_scope"),
    ({"resource": "http://evil.example"}, "invalid_target"),
    ({"resource": "http://localhost/api"}, "invalid_target"),
    ({"scope": ["read", "write"]}, "invalid_request")])
def test_authorization_redirects_errors_with_state_and_iss(client, actions, signed_in, authorize_params, change, error):
    params = {**authorize_params, **change}
    params = {name: value for name, value in params.items() if value is not None}
    response = client.get("/oauth/authorization/new", query_string=params)
    assert response.status_code == 302 and response.location.startswith(REDIRECT_URI + "?")
    assert actions.query(response)["error"] == error
    assert actions.query(response)["state"] == "xyz-state" and actions.query(response)["iss"] == "http://localhost"


def test_authorization_errors_reach_the_client_before_sign_in(client, actions, user, authorize_params):
    response = client.get("/oauth/authorization/new", query_string={**authorize_params, "code_challenge_method": "plain"})
    assert actions.query(response)["error"] == "invalid_request"


def test_authorization_does_not_echo_a_state_over_the_cap(client, actions, signed_in, authorize_params):
    response = client.get("/oauth/authorization/new", query_string={**authorize_params, "state": "s" * 3000})
    assert actions.query(response)["error"] == "invalid_request" and "state" not in actions.query(response)


def test_approval_redirects_with_code_state_and_iss(signed_in, actions, authorize_params):
    response = actions.approve(authorize_params)
    answer = actions.query(response)
    assert response.status_code == 302 and response.location.startswith(REDIRECT_URI + "?")
    assert set(answer) == {"code", "state", "iss"}
    assert answer["state"] == "xyz-state" and answer["iss"] == "http://localhost"


def test_approval_without_state_sends_none_back(signed_in, actions, authorize_params):
    del authorize_params["state"]
    assert set(actions.query(actions.approve(authorize_params))) == {"code", "iss"}


def test_approval_keeps_the_registered_query(signed_in, oauth_client, actions, authorize_params):
    oauth_client.redirect_uris = ["http://127.0.0.1:8765/callback?app=cli"]
    oauth_client.save()
    response = actions.approve({**authorize_params, "redirect_uri": "http://127.0.0.1:8765/callback?app=cli"})
    assert response.location.startswith("http://127.0.0.1:8765/callback?app=cli&code=")


def test_deny_redirects_with_access_denied(signed_in, actions, authorize_params):
    answer = actions.query(actions.approve(authorize_params, decision="deny"))
    assert answer["error"] == "access_denied" and answer["state"] == "xyz-state" and "code" not in answer


def test_approval_without_a_csrf_token_changes_nothing(client, signed_in, authorize_params):
    for token in (None, "forged"):
        data = {**authorize_params, "decision": "approve"} | ({"csrf_token": token} if token else {})
        response = client.post("/oauth/authorization", data=data)
        assert response.status_code == 400 and response.location is None


def test_approval_csrf_token_from_another_session_is_refused(app, client, signed_in, other_user, authorize_params):
    other_browser = Actions(app.test_client())
    other_browser.sign_in("mallory")
    page = other_browser.client.get("/oauth/authorization/new", query_string=authorize_params)
    token = other_browser.csrf_token(page)
    response = client.post("/oauth/authorization", data={**authorize_params, "decision": "approve", "csrf_token": token})
    assert response.status_code == 400 and response.location is None


def test_approval_revalidates_every_posted_field(client, actions, signed_in, authorize_params):
    token = actions.csrf_token(client.get("/oauth/authorization/new", query_string=authorize_params))
    tampered = {**authorize_params, "redirect_uri": "http://evil.example/cb", "decision": "approve", "csrf_token": token}
    assert client.post("/oauth/authorization", data=tampered).location is None
    tampered = {**authorize_params, "scope": "admin", "decision": "approve", "csrf_token": token}
    assert actions.query(client.post("/oauth/authorization", data=tampered))["error"] == "invalid_scope"


def test_approval_by_get_is_impossible(client, signed_in, authorize_params):
    response = client.get("/oauth/authorization", query_string={**authorize_params, "decision": "approve"})
    assert response.status_code == 405


@pytest.mark.parametrize("decision", ["approve", "deny"])
def test_deciding_ends_the_sign_in_when_keyfob_is_served_on_a_loopback_host(app, client, actions, signed_in,
                                                                           authorize_params, decision):
    """The app on the redirect's port receives Keyfob's cookie (cookies do not keep ports apart): the cookie it
    caught, or one a local page caught earlier, names a session that has ended."""
    caught = app.test_client()
    caught.set_cookie("keyfob_session", client.get_cookie("keyfob_session").value)
    assert caught.get("/").status_code == 200
    response = actions.approve(authorize_params, decision)
    assert "keyfob_session=" in response.headers["Set-Cookie"]
    assert client.get("/oauth/authorization/new", query_string=authorize_params).location == "/session/new"
    assert caught.get("/").location == "/session/new"


def test_an_error_redirect_keeps_the_sign_in(client, actions, signed_in, authorize_params):
    """Only approving or denying ends it: otherwise any page could sign the user out with a bad request."""
    answer = client.get("/oauth/authorization/new", query_string={**authorize_params, "scope": "admin"})
    assert actions.query(answer)["error"] == "invalid_scope"
    assert client.get("/").status_code == 200


class TestOnAPublicHost:
    @pytest.fixture
    def config(self, config):
        return {**config, "ISSUER": "http://auth.example.test"}

    def test_approval_keeps_the_sign_in(self, client, actions, signed_in, authorize_params):
        assert actions.query(actions.approve(authorize_params))["iss"] == "http://auth.example.test"
        assert client.get("/").status_code == 200

    def test_two_tabs_can_consent_at_once(self, client, actions, signed_in, authorize_params):
        first = client.get("/oauth/authorization/new", query_string=authorize_params)
        second = client.get("/oauth/authorization/new", query_string={**authorize_params, "state": "other"})
        for page, state in ((first, "xyz-state"), (second, "other")):
            data = {**authorize_params, "state": state, "decision": "approve", "csrf_token": actions.csrf_token(page)}
            assert "code" in actions.query(client.post("/oauth/authorization", data=data))


def test_two_tabs_on_a_loopback_host_need_a_second_sign_in(client, actions, signed_in, authorize_params):
    first = client.get("/oauth/authorization/new", query_string=authorize_params)
    second = client.get("/oauth/authorization/new", query_string={**authorize_params, "state": "other"})
    approve = {**authorize_params, "decision": "approve"}
    approved = client.post("/oauth/authorization", data={**approve, "csrf_token": actions.csrf_token(first)})
    assert "code" in actions.query(approved)
    refused = client.post("/oauth/authorization",
                          data={**approve, "state": "other", "csrf_token": actions.csrf_token(second)})
    assert actions.query(refused)["error"] == "access_denied" and "code" not in actions.query(refused)


def test_sign_in_returns_to_the_authorization_request_intact(client, actions, user, authorize_params):
    client.get("/oauth/authorization/new", query_string={**authorize_params, "state": "a b&c=d"})
    response = actions.sign_in()
    resumed = client.get(response.location)
    assert resumed.status_code == 200 and 'value="a b&amp;c=d"' in resumed.get_data(as_text=True)


def test_the_authorization_endpoint_also_answers_at_the_root_for_clients_that_ignore_the_metadata(
        client, actions, signed_in, authorize_params):
    """Claude's fallback (tests/clients/claude.json): the same view, not a redirect, which some clients lose."""
    page = client.get("/authorize", query_string=authorize_params)
    assert page.status_code == 200 and "Test App" in page.text
    approved = client.post("/oauth/authorization",
                           data={**authorize_params, "decision": "approve", "csrf_token": actions.csrf_token(page)})
    assert approved.location.startswith(REDIRECT_URI + "?") and "code" in actions.query(approved)


def test_a_native_apps_scheme_is_named_on_the_consent_screen_and_receives_the_code(
        client, actions, signed_in, oauth_client, authorize_params):
    oauth_client.redirect_uris = ["cursor://anysphere.cursor-mcp/oauth/callback"]
    oauth_client.save()
    params = {**authorize_params, "redirect_uri": "cursor://anysphere.cursor-mcp/oauth/callback"}
    page = client.get("/oauth/authorization/new", query_string=params)
    assert "the app on this computer that opens <strong>cursor:</strong> links" in page.text
    assert "Approving opens the app on this computer registered for <strong>cursor:</strong> links" in page.text
    approved = actions.approve(params)
    assert approved.location.startswith("cursor://anysphere.cursor-mcp/oauth/callback?code=")
    assert actions.query(approved)["state"] == "xyz-state"


DEEP_LINK = "cursor://anysphere.cursor-deeplink/mcp/install?name=notes&config=eyJjb21tYW5kIjoiY3VybCBldmlsIn0="


@pytest.mark.parametrize("signed_in_first", [False, True])
@pytest.mark.parametrize("broken", [{"response_type": "token"}, {"code_challenge_method": "plain"},
                                    {"scope": "admin"}])
def test_an_error_before_the_user_decides_is_a_page_unless_the_redirect_is_local(
        client, actions, user, authorize_params, oauth_client, broken, signed_in_first):
    """RFC 9700 §4.11.2: Keyfob must not be a way to open an app link (or a page) of the requester's choosing."""
    if signed_in_first:
        actions.sign_in()
    oauth_client.redirect_uris = [REDIRECT_URI, DEEP_LINK]
    oauth_client.save()
    to_app = client.get("/authorize", query_string={**authorize_params, "redirect_uri": DEEP_LINK, **broken})
    assert to_app.status_code == 400 and to_app.location is None and "This app's request can't be used" in to_app.text
    to_loopback = client.get("/authorize", query_string={**authorize_params, **broken})
    assert to_loopback.status_code == 302 and to_loopback.location.startswith(REDIRECT_URI + "?error=")


def test_an_operators_app_is_sent_its_errors_at_once(client, app, authorize_params):
    operators = Client.registered_by_operator("Reports", ["https://reports.example.com/cb"])
    response = client.get("/oauth/authorization/new", query_string={
        **authorize_params, "client_id": operators.client_id, "redirect_uri": "https://reports.example.com/cb",
        "response_type": "token"})
    assert response.location.startswith("https://reports.example.com/cb?error=unsupported_response_type")


def test_a_denial_goes_back_to_an_app_link_the_user_chose_to_answer(client, actions, signed_in, authorize_params,
                                                                    oauth_client):
    oauth_client.redirect_uris = ["cursor://anysphere.cursor-mcp/oauth/callback"]
    oauth_client.save()
    denied = actions.approve({**authorize_params, "redirect_uri": "cursor://anysphere.cursor-mcp/oauth/callback"},
                             decision="deny")
    assert denied.location.startswith("cursor://anysphere.cursor-mcp/oauth/callback?error=access_denied")


class TestTrustWithdrawn:
    @pytest.fixture
    def config(self, config):
        return {**config, "TRUSTED_REDIRECT_SCHEMES": "vscode"}

    def test_a_self_registered_redirect_no_longer_trusted_is_refused(self, client, signed_in, authorize_params,
                                                                      oauth_client):
        oauth_client.redirect_uris = ["cursor://anysphere.cursor-mcp/oauth/callback"]  # registered while trusted
        oauth_client.save()
        page = client.get("/oauth/authorization/new", query_string={
            **authorize_params, "redirect_uri": "cursor://anysphere.cursor-mcp/oauth/callback"})
        assert page.status_code == 400 and page.location is None and "not registered" in page.text


def test_an_error_page_names_the_app_and_where_it_wanted_you_sent_with_a_link_back(client, app, user, authorize_params):
    users_app = Client.registered_by_user(user, "Reports", ["https://reports.example.com/cb"])
    page = client.get("/oauth/authorization/new", query_string={
        **authorize_params, "client_id": users_app.client_id, "redirect_uri": "https://reports.example.com/cb",
        "scope": "admin"})
    assert page.status_code == 400 and page.location is None
    assert "The app <strong>Reports</strong> asked to be sent back to" in page.text and "reports.example.com" in page.text
    assert 'href="https://reports.example.com/cb?error=invalid_scope&amp;' in page.text and "state=xyz-state" in page.text


class TestTrustedHosts:
    @pytest.fixture
    def config(self, config):
        return {**config, "TRUSTED_REDIRECT_HOSTS": "claude.ai"}

    def test_an_error_goes_at_once_to_an_https_redirect_on_a_trusted_host(self, client, oauth_client,
                                                                          authorize_params):
        oauth_client.redirect_uris = ["https://claude.ai/api/mcp/auth_callback"]
        oauth_client.save()
        response = client.get("/oauth/authorization/new", query_string={
            **authorize_params, "redirect_uri": "https://claude.ai/api/mcp/auth_callback", "scope": "admin"})
        assert response.location.startswith("https://claude.ai/api/mcp/auth_callback?error=invalid_scope")


def test_a_client_asks_for_no_more_than_the_scope_it_registered(client, signed_in, oauth_client, authorize_params):
    oauth_client.scope = "read"
    oauth_client.save()
    refused = client.get("/oauth/authorization/new", query_string={**authorize_params, "scope": "read write"})
    assert Actions.query(refused) | {"state": None, "iss": None} == {
        "error": "invalid_scope", "error_description": "This client registered for read only", "state": None,
        "iss": None}
    assert client.get("/authorize", query_string={**authorize_params, "scope": "read"}).status_code in (200, 302)


class TestAnOldSignIn:
    """A token outlives the session: approving more than 10 minutes after the password was last given asks for
    it again, on the consent page itself, so a stolen cookie alone cannot connect an app."""

    @pytest.fixture(autouse=True)
    def aged(self, signed_in):
        Session.update(confirmed_at=now() - 11 * 60).execute()

    def test_approving_needs_the_password_again(self, client, actions, authorize_params):
        page = client.get("/oauth/authorization/new", query_string=authorize_params)
        assert 'name="current_password"' in page.text and "approving needs your password again" in page.text
        form = {**authorize_params, "csrf_token": actions.csrf_token(page)}
        refused = client.post("/oauth/authorization", data={**form, "decision": "approve", "current_password": "no"})
        assert refused.status_code == 401 and refused.location is None
        assert "That password is not right." in refused.text and 'name="current_password"' in refused.text
        approved = client.post("/oauth/authorization", data={**form, "decision": "approve",
                                                             "current_password": PASSWORD})
        assert "code" in actions.query(approved)

    def test_denying_needs_no_password(self, client, actions, authorize_params):
        assert actions.query(actions.approve(authorize_params, "deny"))["error"] == "access_denied"
