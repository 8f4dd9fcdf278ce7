"""Every process on a database shares one secret key, or refuses to start; rotating it keeps sessions and
codes valid through their lifetime."""
import stat
import subprocess

import pytest

from actions import REDIRECT_URI, Actions
from app import create_app
from live import KEYFOB, keyfob_env
from models import Client, User, db

OLD, NEW = "old-key-" + "o" * 40, "new-key-" + "n" * 40


@pytest.fixture
def keyfob(tmp_path, instance_database):
    def keyfob(*args, typed="", **settings):
        env = keyfob_env(tmp_path / "instance", {**instance_database, **settings})
        return subprocess.run([KEYFOB, *args], input=typed, env=env, capture_output=True, text=True, timeout=60)
    return keyfob


def test_a_process_with_another_key_refuses_to_start_and_says_how_to_rotate(keyfob):
    assert keyfob("user", "add", "alice", typed="password1\npassword1\n", KEYFOB_SECRET_KEY=OLD).returncode == 0
    refused = keyfob("user", "list", KEYFOB_SECRET_KEY=NEW)
    assert refused.returncode == 1
    assert "in use with a different secret key" in refused.stderr and "KEYFOB_SECRET_KEY_FALLBACKS" in refused.stderr
    assert "Traceback" not in refused.stderr

    rotated = keyfob("user", "list", KEYFOB_SECRET_KEY=NEW, KEYFOB_SECRET_KEY_FALLBACKS=OLD)
    assert rotated.returncode == 0 and "alice" in rotated.stdout
    assert keyfob("user", "list", KEYFOB_SECRET_KEY=NEW).returncode == 0  # the old key retired
    assert keyfob("user", "list", KEYFOB_SECRET_KEY=OLD).returncode == 1


def test_keys_rotate_keeps_the_old_instance_key_as_a_fallback_until_retired(keyfob, tmp_path):
    instance = tmp_path / "instance"
    assert keyfob("user", "add", "alice", typed="password1\npassword1\n").returncode == 0
    first = (instance / "secret_key").read_text()

    rotated = keyfob("keys", "rotate", "--yes")
    assert rotated.returncode == 0, rotated.stderr
    assert (instance / "secret_key").read_text() != first
    assert (instance / "secret_key_fallbacks").read_text().strip() == first
    for name in ("secret_key", "secret_key_fallbacks"):
        assert stat.S_IMODE((instance / name).stat().st_mode) == 0o600
    assert keyfob("user", "list").returncode == 0

    assert keyfob("keys", "retire").returncode == 0
    assert not (instance / "secret_key_fallbacks").exists()
    assert keyfob("user", "list").returncode == 0


def test_keys_rotate_refuses_when_the_key_comes_from_the_environment(keyfob):
    refused = keyfob("keys", "rotate", KEYFOB_SECRET_KEY=OLD)
    assert refused.returncode == 1 and "KEYFOB_SECRET_KEY_FALLBACKS" in refused.stderr


def test_keys_reset_adopts_a_new_key_after_the_old_one_is_lost(keyfob, tmp_path):
    assert keyfob("user", "add", "alice", typed="password1\npassword1\n").returncode == 0
    (tmp_path / "instance" / "secret_key").unlink()
    assert keyfob("user", "list").returncode == 1
    assert keyfob("keys", "reset", "--yes").returncode == 0
    assert "alice" in keyfob("user", "list").stdout


def test_sessions_forms_and_codes_of_the_old_key_work_after_a_rotation(database_url, password_digest):
    config = {"TESTING": True, "DATABASE_URL": database_url, "ISSUER": "http://keyfob.test",
              "RATELIMIT_ENABLED": False}
    before = create_app({**config, "SECRET_KEY": OLD})
    User.create(username="alice", password_digest=password_digest)
    app = Client.create(name="App", redirect_uris=[REDIRECT_URI], dynamically_registered=True)
    browser = before.test_client()
    actions = Actions(browser)
    assert actions.sign_in().status_code == 302
    verifier = "v" * 43
    from models import s256
    params = {"client_id": app.client_id, "redirect_uri": REDIRECT_URI, "response_type": "code", "state": "s",
              "code_challenge": s256(verifier), "code_challenge_method": "S256"}
    form = actions.csrf_token(browser.get("/oauth/authorization/new", query_string=params))
    approved = browser.post("/oauth/authorization", data={**params, "decision": "approve", "csrf_token": form})
    code = actions.query(approved)["code"]
    db.close()

    after = create_app({**config, "SECRET_KEY": NEW, "SECRET_KEY_FALLBACKS": OLD})
    try:
        cookie = browser.get_cookie("keyfob_session")
        rotated = after.test_client()
        rotated.set_cookie("keyfob_session", cookie.value)
        page = rotated.get("/oauth/authorization/new", query_string=params)
        assert page.status_code == 200 and "Approve" in page.get_data(as_text=True)  # still signed in
        approved = rotated.post("/oauth/authorization", data={**params, "decision": "approve", "csrf_token": form})
        assert "code" in actions.query(approved)  # a form the old key signed
        token = rotated.post("/oauth/token", data={"grant_type": "authorization_code", "client_id": app.client_id,
                                                   "code": code, "code_verifier": verifier,
                                                   "redirect_uri": REDIRECT_URI})
        assert token.status_code == 200, token.json  # a code the old key sealed
    finally:
        db.close()
