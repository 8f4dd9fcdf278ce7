"""Sign-in and sign-out."""
import pytest
from werkzeug.security import generate_password_hash

from actions import PASSWORD, Actions
from models import AuditEvent, User


def test_sign_in_goes_home_when_nothing_was_waiting(client, actions, user):
    response = actions.sign_in()
    assert response.status_code == 302 and response.location == "/"
    assert "Signed in as" in client.get("/").get_data(as_text=True)


def test_home_asks_a_signed_out_browser_to_sign_in(client):
    assert client.get("/").location == "/session/new"


def test_sign_in_does_not_reveal_whether_a_user_exists(client, actions, user):
    wrong_password = actions.sign_in("alice", "wrong")
    unknown_user = actions.sign_in("nobody", "wrong")
    assert wrong_password.status_code == unknown_user.status_code == 401
    message = "That username and password do not match."
    assert message in wrong_password.get_data(as_text=True) and message in unknown_user.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_sign_in_without_a_csrf_token_signs_nobody_in(client, user):
    response = client.post("/session", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 400 and client.get("/").status_code == 302


def test_sign_in_only_returns_to_local_paths(client, actions, user):
    with client.session_transaction() as session:
        session["return_to"] = "//evil.example/"
    assert actions.sign_in().location == "/"


def test_sign_out_ends_the_session(client, actions, signed_in):
    token = actions.csrf_token(client.get("/"))
    assert client.post("/session/destroy", data={"csrf_token": token}).location == "/session/new"
    assert client.get("/").status_code == 302


def test_sign_in_works_over_https_where_the_referer_is_checked(config, tmp_path, monkeypatch, user):
    from app import create_app
    monkeypatch.setenv("KEYFOB_INSTANCE_PATH", str(tmp_path / "i"))
    browser = create_app({**config, "ISSUER": "https://auth.example.test"}).test_client()
    form = browser.get("/session/new", base_url="https://auth.example.test")
    assert form.headers["Referrer-Policy"] == "same-origin"  # so browsers send the Referer the check needs
    response = browser.post("/session", base_url="https://auth.example.test",
                            headers={"Referer": "https://auth.example.test/session/new"},
                            data={"username": "alice", "password": PASSWORD, "csrf_token": Actions.csrf_token(form)})
    assert response.status_code == 302
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("keyfob_session=") and "Secure" in cookie and "HttpOnly" in cookie and "Expires" in cookie


def test_sign_in_page_cannot_be_framed(client):
    response = client.get("/session/new")
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert "Access-Control-Allow-Origin" not in client.get("/session/new", headers={"Origin": "http://x.test"}).headers


class TestRateLimit:
    @pytest.fixture
    def config(self, config):
        return {**config, "RATELIMIT_ENABLED": True}

    def test_sign_in_is_limited_per_username_across_addresses(self, client, actions, user):
        token = actions.csrf_token(client.get("/session/new"))
        answers = [client.post("/session", data={"username": "Alice", "password": "guess", "csrf_token": token},
                               environ_base={"REMOTE_ADDR": f"10.0.0.{n}"}) for n in range(6)]
        assert [answer.status_code for answer in answers] == [401] * 5 + [429]
        assert "Too many failed sign-ins for this name or from this address. Try again in" in answers[5].text
        assert 'value="Alice"' in answers[5].text and 0 < int(answers[5].headers["Retry-After"]) <= 61

    def test_sign_in_is_limited_per_address(self, client, actions, user):
        token = actions.csrf_token(client.get("/session/new"))
        answers = [client.post("/session", data={"username": f"user{n}", "password": "guess", "csrf_token": token})
                   for n in range(11)]
        assert [answer.status_code for answer in answers] == [401] * 10 + [429]


def test_a_session_ends_twelve_hours_after_signing_in_however_often_it_was_written(client, signed_in):
    assert client.get("/").status_code == 200
    with client.session_transaction() as session:
        session["signed_in_at"] -= 12 * 60 * 60
    assert client.get("/").status_code == 302


class TestOnlyFailuresCount:
    @pytest.fixture
    def config(self, config):
        return {**config, "RATELIMIT_ENABLED": True}

    def test_signing_in_20_times_a_minute_is_never_limited(self, client, actions, user):
        """Served on a loopback address, each approval ends the sign-in: connecting apps means signing in often."""
        assert [actions.sign_in().status_code for _ in range(20)] == [302] * 20

    def test_failures_still_lock_guessing_out_and_the_page_keeps_the_name(self, client, actions, user):
        assert [actions.sign_in(password="guess").status_code for _ in range(5)] == [401] * 5
        refused = actions.sign_in()
        assert refused.status_code == 429 and 'value="alice"' in refused.text
        assert "Try again in" in refused.text and 'href="/session/new"' not in refused.text  # the form is the way on


def test_signing_in_and_out_are_recorded_for_the_activity_page(client, actions, user):
    actions.sign_in()
    client.post("/session/destroy", data={"csrf_token": actions.csrf_token(client.get("/"))})
    actions.sign_in()
    page = client.get("/my/activity").text
    assert page.count("You signed in") == 2 and page.count("You signed out") == 1


def test_signing_in_with_a_digest_of_an_earlier_version_stores_argon2id_and_records_only_the_sign_in(client, actions):
    earlier = User.create(username="alice", password_digest=generate_password_hash(PASSWORD, "scrypt"))
    assert actions.sign_in(password="wrong password").status_code == 401
    assert User.get_by_id(earlier.id).password_digest == earlier.password_digest
    assert actions.sign_in().status_code == 302 and client.get("/").status_code == 200  # the session has the new one
    assert User.get_by_id(earlier.id).password_digest.startswith("$argon2id$")
    assert [event.event for event in AuditEvent.select().order_by(AuditEvent.id)] == ["sign_in.failed", "signed_in"]
