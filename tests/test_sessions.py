"""Sign-in and sign-out."""
import pytest
from werkzeug.security import generate_password_hash

from actions import PASSWORD, Actions
from models import AuditEvent, Session, User


def copied(app, client):
    """Another browser holding a copy of client's session cookie: what a program that caught it would have."""
    other = app.test_client()
    other.set_cookie("keyfob_session", client.get_cookie("keyfob_session").value)
    return other


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
    assert cookie.startswith("__Host-keyfob_session=") and "Secure" in cookie and "HttpOnly" in cookie
    assert "Expires" in cookie and "Path=/" in cookie and "Domain" not in cookie  # what __Host- demands


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
    Session.update(signed_in_at=Session.signed_in_at - 12 * 60 * 60).execute()
    assert client.get("/").status_code == 302
    assert Session.sweep() == 1 and Session.select().count() == 0


def test_signing_out_ends_the_session_for_a_copied_cookie_too(app, client, actions, signed_in):
    caught = copied(app, client)
    assert caught.get("/").status_code == 200
    client.post("/session/destroy", data={"csrf_token": actions.csrf_token(client.get("/"))})
    assert caught.get("/").location == "/session/new" and Session.select().count() == 0


def test_the_cookie_holds_a_token_and_the_database_only_its_digest(client, signed_in):
    with client.session_transaction() as session:
        token = session["session"]
    assert len(token) == 43 and not Session.select().where(Session.token_digest.contains(token)).exists()


def test_signing_in_again_replaces_the_session(app, client, actions, user):
    """A cookie caught before a sign-in (or planted: session fixation) names no session after it."""
    actions.sign_in()
    caught = copied(app, client)
    actions.sign_in()
    assert caught.get("/").location == "/session/new" and client.get("/").status_code == 200
    assert Session.select().count() == 1


def test_signing_out_everywhere_ends_every_session_after_a_confirmation(app, client, actions, signed_in):
    laptop = app.test_client()
    Actions(laptop).sign_in()
    page = client.get("/my/activity").text
    assert 'href="/my/sessions/end"' in page
    confirm = client.get("/my/sessions/end")
    assert "Sign out everywhere?" in confirm.text and 'action="/my/sessions/end"' in confirm.text
    answer = client.post("/my/sessions/end", data={"csrf_token": actions.csrf_token(confirm)})
    assert answer.location == "/session/new"
    assert client.get("/").status_code == laptop.get("/").status_code == 302
    actions.sign_in()
    assert "You signed out everywhere" in client.get("/my/activity").text


def test_signing_out_everywhere_needs_a_csrf_token(client, actions, signed_in):
    assert client.post("/my/sessions/end").status_code == 400 and client.get("/").status_code == 200


def test_a_sign_in_that_raced_a_password_change_ends_with_it(app, user):
    """The sign-in checked the old password, then the change ended every session, then the sign-in made its row."""
    checked_the_old_password = User.get_by_id(user.id)
    User.get_by_id(user.id).change_password("a new password")
    token = Session.start(checked_the_old_password)
    assert Session.find(token) is None


def test_removing_a_user_ends_their_sessions(app, client, signed_in):
    User.named("alice").remove()
    assert Session.select().count() == 0 and client.get("/").location == "/session/new"


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


class TestRecentSignIn:
    """What outlives a session (a personal token, a confidential app, a new client secret) asks for the password
    again when it was last given more than 10 minutes ago."""

    def age(self):
        Session.update(confirmed_at=Session.confirmed_at - 11 * 60).execute()

    def test_a_recent_sign_in_needs_no_password(self, client, actions, signed_in):
        assert 'name="current_password"' not in client.get("/my/access_tokens").text

    def test_an_old_sign_in_asks_for_it_and_keeps_what_was_typed(self, client, actions, signed_in):
        self.age()
        page = client.get("/my/access_tokens")
        assert 'name="current_password"' in page.text
        form = {"description": "backup", "scope": "read write", "csrf_token": actions.csrf_token(page)}
        missing = client.post("/my/access_tokens", data=form)
        wrong = client.post("/my/access_tokens", data={**form, "current_password": "nope"})
        assert (missing.status_code, wrong.status_code) == (401, 401)
        assert "Give your password" in missing.text and "That password is not right." in wrong.text
        assert 'value="backup"' in wrong.text and 'value="read write" checked' in wrong.text
        assert "kf_pat_" not in missing.text + wrong.text
        made = client.post("/my/access_tokens", data={**form, "current_password": PASSWORD})
        assert made.status_code == 201 and "kf_pat_" in made.text
        assert 'name="current_password"' not in client.get("/my/access_tokens").text  # recent again


class TestPasswordGuessesAgain:
    @pytest.fixture
    def config(self, config):
        return {**config, "RATELIMIT_ENABLED": True}

    def test_ten_wrong_passwords_a_minute_from_an_address_then_a_pause(self, app, client, actions, user,
                                                                       password_digest):
        """Three accounts' stolen cookies used from one address: 4 + 4 + 2 guesses, then the address waits."""
        User.create(username="mallory", password_digest=password_digest)
        User.create(username="carol", password_digest=password_digest)
        answers = []
        for name, guesses in (("alice", 4), ("mallory", 4), ("carol", 3)):
            browser = Actions(app.test_client())
            browser.sign_in(name)
            Session.update(confirmed_at=Session.confirmed_at - 11 * 60).execute()
            form = {"description": "x", "scope": "read", "current_password": "guess",
                    "csrf_token": browser.csrf_token(browser.client.get("/my/access_tokens"))}
            answers += [browser.client.post("/my/access_tokens", data=form).status_code for _ in range(guesses)]
        assert answers == [401] * 10 + [429]

    def test_five_wrong_passwords_a_minute_for_an_account_from_any_address_and_each_is_on_its_activity(
            self, client, actions, signed_in):
        Session.update(confirmed_at=Session.confirmed_at - 11 * 60).execute()
        form = {"description": "x", "scope": "read", "csrf_token": actions.csrf_token(client.get("/my/access_tokens")),
                "current_password": "guess"}
        answers = [client.post("/my/access_tokens", data=form, environ_base={"REMOTE_ADDR": f"198.51.100.{n}"})
                   .status_code for n in range(6)]
        assert answers == [401] * 5 + [429]
        assert AuditEvent.select().where(AuditEvent.event == "password.confirm_failed").count() == 5
        assert "A wrong password was given to confirm an action" in client.get("/my/activity").text
