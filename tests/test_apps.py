"""OAuth apps registered through the pages: public or confidential, edited, their secret regenerated, deleted."""
import base64

import pytest

from actions import PASSWORD
from models import AccessToken, Client, Session, digest, now

HTTPS_REDIRECT = "https://app.example.com/oauth/callback"


def register_app(actions, **form):
    token = actions.csrf_token(actions.client.get("/my/apps"))
    return actions.client.post("/my/apps", data={"csrf_token": token, "name": "Reports", "kind": "public",
                                         "redirect_uris": HTTPS_REDIRECT, **form})


def secret_on(response):
    return response.get_data(as_text=True).split('id="client-secret">')[1].split("<")[0]


def connect(actions, app, pkce):
    """Approve the app as alice and exchange the code, authenticating with Basic when given a secret."""
    params = {"client_id": app.client_id, "redirect_uri": HTTPS_REDIRECT, "response_type": "code",
              "code_challenge": pkce[1], "code_challenge_method": "S256", "scope": "read write"}
    code = actions.query(actions.approve(params))["code"]
    return {"grant_type": "authorization_code", "code": code, "code_verifier": pkce[0], "redirect_uri": HTTPS_REDIRECT}


def basic(client_id, secret):
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def test_a_public_app_is_registered_and_shown(client, actions, signed_in):
    response = register_app(actions, redirect_uris=f"{HTTPS_REDIRECT}\n\nhttp://127.0.0.1:8080/cb\n")
    app = Client.get(Client.name == "Reports")
    assert response.location == f"/my/apps/{app.client_id}"
    assert app.redirect_uris == [HTTPS_REDIRECT, "http://127.0.0.1:8080/cb"] and not app.is_confidential
    assert app.owner_id == signed_in.id and not app.dynamically_registered
    page = client.get(response.location).get_data(as_text=True)
    assert app.client_id in page and "Public" in page and "Reports is registered" in page


def test_a_confidential_apps_secret_is_shown_once_and_stored_as_a_digest(client, actions, signed_in):
    response = register_app(actions, kind="confidential")
    secret, app = secret_on(response), Client.get(Client.name == "Reports")
    assert response.status_code == 201 and response.headers["Cache-Control"] == "no-store"
    assert secret.startswith("kf_cs_") and app.secret_digest == digest(secret) and app.authenticates(secret)
    assert secret not in client.get(f"/my/apps/{app.client_id}").get_data(as_text=True)


@pytest.mark.parametrize("form, message", [
    ({"name": ""}, "The app&#39;s name must have a visible letter."),
    ({"name": "n" * 256}, "The app&#39;s name must be at most 255 characters long."),
    ({"name": "\u3164\u3164\u3164"}, "The app&#39;s name must have a visible letter."),
    ({"name": "Re\u0301\u0302\u0303ports"}, "must not stack more than 2 combining marks on a character."),
    ({"name": "Reports (verified by Keyfob)"}, "The app&#39;s name must not contain &#34;Keyfob&#34; or &#34;verified&#34;"),
    ({"redirect_uris": ""}, "Give between 1 and 10"), ({"redirect_uris": "http://example.com/cb"}, "is not an https"),
    ({"redirect_uris": "https://app.example.com/cb#x"}, "is not an https"),
    ({"redirect_uris": "javascript:alert(1)"}, "is not an https"), ({"kind": "secret"}, "Choose public or confidential"),
    ({"redirect_uris": "https://example.com:99999/cb"}, "is not an https"),
    ({"redirect_uris": "https://localhost/cb"}, "is not an https"),
    ({"redirect_uris": "https://example.com-/cb"}, "is not an https"),
    ({"name": "\u202e\x1b\x00"}, "The app&#39;s name must have a visible letter.")])
def test_registration_explains_what_is_wrong_and_registers_nothing(signed_in, actions, form, message):
    response = register_app(actions, **form)
    assert response.status_code == 422 and message in response.get_data(as_text=True)
    assert Client.select().count() == 0


def test_a_confidential_app_gets_tokens_only_with_its_secret(client, actions, signed_in, pkce):
    secret = secret_on(register_app(actions, kind="confidential"))
    app = Client.get(Client.name == "Reports")
    actions.sign_in()
    exchange = connect(actions, app, pkce)
    assert client.post("/oauth/token", data=exchange, headers=basic(app.client_id, "wrong")).status_code == 401
    token = client.post("/oauth/token", data=exchange, headers=basic(app.client_id, secret)).json
    assert token["scope"] == "read write"
    assert client.get("/api/me", headers={"Authorization": f"Bearer {token['access_token']}"}).json["client_id"] == app.client_id


def test_the_consent_screen_names_who_registered_the_app(client, actions, signed_in, pkce):
    register_app(actions)
    app = Client.get(Client.name == "Reports")
    page = client.get("/oauth/authorization/new", query_string={
        "client_id": app.client_id, "redirect_uri": HTTPS_REDIRECT, "response_type": "code",
        "code_challenge": pkce[1], "code_challenge_method": "S256"}).get_data(as_text=True)
    assert "Registered on this server by <strong>alice</strong>" in page and "chosen by the app itself" not in page
    assert "app.example.com</strong> port <strong>443" in page and "your own computer" not in page


def test_regenerating_the_secret_stops_the_old_one(client, actions, signed_in):
    old = secret_on(register_app(actions, kind="confidential"))
    app = Client.get(Client.name == "Reports")
    page = client.get(f"/my/apps/{app.client_id}")
    new = secret_on(client.post(f"/my/apps/{app.client_id}/secret", data={"csrf_token": actions.csrf_token(page)}))
    app = Client.get_by_id(app.id)
    assert new != old and app.authenticates(new) and not app.authenticates(old)


def test_editing_validates_like_registration(client, actions, signed_in):
    register_app(actions)
    app = Client.get(Client.name == "Reports")
    token = actions.csrf_token(client.get(f"/my/apps/{app.client_id}"))
    bad = client.post(f"/my/apps/{app.client_id}", data={"csrf_token": token, "name": "X", "redirect_uris": "http://evil.example/"})
    assert bad.status_code == 422 and Client.get_by_id(app.id).redirect_uris == [HTTPS_REDIRECT]
    spoof = client.post(f"/my/apps/{app.client_id}", data={"csrf_token": token, "name": "Keyfob Verified",
                                                           "redirect_uris": HTTPS_REDIRECT})
    assert spoof.status_code == 422 and "must not contain" in spoof.text and Client.get_by_id(app.id).name == "Reports"
    good = client.post(f"/my/apps/{app.client_id}", data={"csrf_token": token, "name": "Reports 2",
                                                          "redirect_uris": "https://new.example.com/cb"})
    assert good.location == f"/my/apps/{app.client_id}"
    assert (Client.get_by_id(app.id).name, Client.get_by_id(app.id).redirect_uris) == ("Reports 2", ["https://new.example.com/cb"])


def test_deleting_an_app_asks_first_then_revokes_every_token_issued_to_it(client, actions, signed_in, other_user):
    register_app(actions)
    app = Client.get(Client.name == "Reports")
    tokens = [AccessToken.issue(signed_in, app), AccessToken.issue(other_user, app)]
    confirm = client.get(f"/my/apps/{app.client_id}/delete")
    assert "Delete Reports?" in confirm.get_data(as_text=True)
    response = client.post(f"/my/apps/{app.client_id}/delete", data={"csrf_token": actions.csrf_token(confirm)})
    assert response.location == "/my/apps" and Client.select().count() == 0
    assert all(AccessToken.authenticate(token.token) is None for token in tokens)


def test_another_users_app_cannot_be_seen_changed_or_deleted(app, client, actions, user, other_user):
    theirs = Client.registered_by_user(other_user, "Mallory's app", [HTTPS_REDIRECT], confidential=True)
    actions.sign_in()
    token = actions.csrf_token(client.get("/my/apps"))
    assert "Mallory" not in client.get("/my/apps").get_data(as_text=True)
    for method, path in [("get", ""), ("post", ""), ("post", "/secret"), ("get", "/delete"), ("post", "/delete")]:
        response = getattr(client, method)(f"/my/apps/{theirs.client_id}{path}",
                                           data={"csrf_token": token, "name": "pwned", "redirect_uris": HTTPS_REDIRECT})
        assert response.status_code == 404
    assert Client.get_by_id(theirs.id).name == "Mallory's app" and Client.get_by_id(theirs.id).authenticates(theirs.secret)


def test_app_forms_refuse_a_missing_csrf_token(client, signed_in):
    assert client.post("/my/apps", data={"name": "x", "kind": "public", "redirect_uris": HTTPS_REDIRECT}).status_code == 400
    assert Client.select().count() == 0


def test_editing_cleans_the_name_as_registration_does(client, actions, signed_in):
    register_app(actions)
    app = Client.get(Client.name == "Reports")
    token = actions.csrf_token(client.get(f"/my/apps/{app.client_id}"))
    disguised = "\u202eppA dooG\u202c\x1b[2J" + "\u200b" * 5000
    assert client.post(f"/my/apps/{app.client_id}", data={"csrf_token": token, "name": disguised,
                                                          "redirect_uris": HTTPS_REDIRECT}).status_code == 302
    assert Client.get_by_id(app.id).name == "ppA dooG[2J"


def test_a_new_secret_is_asked_for_first_and_the_old_one_named_as_lost(client, actions, signed_in):
    secret_on(register_app(actions, kind="confidential"))
    app = Client.get(Client.name == "Reports")
    show = client.get(f"/my/apps/{app.client_id}").text
    assert f'href="/my/apps/{app.client_id}/secret"' in show and 'action="/my/apps/' + app.client_id + '/secret"' not in show
    confirm = client.get(f"/my/apps/{app.client_id}/secret")
    assert "stops working at once" in confirm.text and "Generate a new secret" in confirm.text


class TestAnOldSignIn:
    """A secret outlives the session: made more than 10 minutes after the password was last given, it needs
    the password again. A public app holds no secret and needs nothing."""

    @pytest.fixture(autouse=True)
    def aged(self, signed_in):
        self.age()

    def age(self, minutes=11):
        Session.update(confirmed_at=now() - minutes * 60).execute()

    def test_a_public_app_needs_no_password(self, actions):
        assert register_app(actions).status_code == 302

    def test_a_confidential_app_needs_the_password_and_keeps_the_form(self, actions):
        refused = register_app(actions, kind="confidential", name="Billing")
        assert refused.status_code == 401 and "a confidential app needs your password again" in refused.text
        assert 'value="Billing"' in refused.text and not Client.select().where(Client.name == "Billing").exists()
        wrong = register_app(actions, kind="confidential", name="Billing", current_password="nope")
        assert wrong.status_code == 401 and "That password is not right." in wrong.text
        assert secret_on(register_app(actions, kind="confidential", name="Billing", current_password=PASSWORD))

    def test_a_new_secret_needs_the_password_on_its_confirmation(self, client, actions):
        self.age(0)
        old = secret_on(register_app(actions, kind="confidential"))
        self.age()
        app = Client.get(Client.name == "Reports")
        confirm = client.get(f"/my/apps/{app.client_id}/secret")
        assert 'name="current_password"' in confirm.text
        refused = client.post(f"/my/apps/{app.client_id}/secret", data={"csrf_token": actions.csrf_token(confirm)})
        assert refused.status_code == 401 and "Give your password" in refused.text
        assert Client.get_by_id(app.id).authenticates(old)
        new = client.post(f"/my/apps/{app.client_id}/secret", data={"csrf_token": actions.csrf_token(confirm),
                                                                   "current_password": PASSWORD})
        assert secret_on(new) != old and not Client.get_by_id(app.id).authenticates(old)
