"""Forms: a page request that changes something brings back the session's form token (CSRF), from this origin."""
import pytest

from actions import PASSWORD, Actions

EXPIRED = "This form has expired"


def sign_out(client, token, **headers):
    return client.post("/session/destroy", data={"csrf_token": token} if token else {}, headers=headers)


def test_a_form_without_its_token_or_with_another_sessions_is_refused_and_changes_nothing(app, client, actions,
                                                                                         signed_in):
    stranger = app.test_client()
    strangers_token = Actions.csrf_token(stranger.get("/session/new"))
    for token in (None, strangers_token, "x", "é" * 40):
        refused = sign_out(client, token)
        assert refused.status_code == 400 and EXPIRED in refused.text
    assert client.get("/").status_code == 200  # still signed in
    assert sign_out(client, actions.csrf_token(client.get("/"))).status_code == 302
    assert client.get("/").status_code == 302


def test_the_token_is_read_from_the_x_csrftoken_header_when_the_form_has_none(client, actions, signed_in):
    token = actions.csrf_token(client.get("/"))
    assert sign_out(client, None, **{"X-CSRFToken": "forged"}).status_code == 400
    assert sign_out(client, None, **{"X-CSRFToken": token}).status_code == 302


def test_signing_in_makes_a_new_token_and_the_one_before_stops_working(client, actions, user):
    before = actions.csrf_token(client.get("/session/new"))
    assert client.post("/session", data={"username": "alice", "password": PASSWORD, "csrf_token": before}
                       ).status_code == 302
    after = actions.csrf_token(client.get("/"))
    assert after != before and len(after) >= 43
    assert sign_out(client, before).status_code == 400
    assert sign_out(client, after).status_code == 302


def test_a_page_that_only_shows_needs_no_token_and_the_token_stays_the_same(client, actions, signed_in):
    tokens = {actions.csrf_token(client.get(path)) for path in ("/", "/my/access_tokens", "/my/apps")}
    assert len(tokens) == 1


@pytest.mark.parametrize("referer, accepted", [
    (None, False), ("https://evil.example/session/new", False), ("http://auth.example.test/session/new", False),
    ("https://auth.example.test.evil.example/", False), ("https://auth.example.test:8443/", False),
    ("https://auth.example.test:x/", False), ("https://auth.example.test", True),
    ("https://auth.example.test:443/my/apps", True)])
def test_over_https_a_form_comes_from_a_page_of_this_origin(config, tmp_path, monkeypatch, user, referer, accepted):
    from app import create_app
    monkeypatch.setenv("KEYFOB_INSTANCE_PATH", str(tmp_path / "i"))
    browser = create_app({**config, "ISSUER": "https://auth.example.test"}).test_client()
    token = Actions.csrf_token(browser.get("/session/new", base_url="https://auth.example.test"))
    response = browser.post("/session", base_url="https://auth.example.test",
                            headers={"Referer": referer} if referer else {},
                            data={"username": "alice", "password": PASSWORD, "csrf_token": token})
    assert response.status_code == (302 if accepted else 400)
