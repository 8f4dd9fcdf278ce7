"""Housekeeping: self-registered clients that never obtained a token go after a day, never while a consent
for them is in flight, never an operator's or a user's app; idle tokens go only when KEYFOB_IDLE_TOKEN_DAYS says."""
import os
import subprocess
import time
from pathlib import Path

import httpx2
import pytest

from actions import REDIRECT_URI
from app import create_app
from live import KEYFOB, TIMEOUT, keyfob_env, keyfob_serving, serving
from models import AccessToken, Client, Housekeeping, User, db, now, sweep, writing

DAY, HOUR = 24 * 60 * 60, 60 * 60


def self_registered(age_hours, **fields):
    return Client.create(name="MCP Client", redirect_uris=[REDIRECT_URI], dynamically_registered=True,
                         created_at=now() - age_hours * HOUR, **fields)


def exists(client):
    return Client.find_by("client_id", client.client_id) is not None


def test_sweep_removes_a_self_registered_client_that_never_obtained_a_token_after_a_day(app):
    old, young = self_registered(25), self_registered(23)
    assert Client.sweep() == [(old.client_id, "MCP Client")]
    assert not exists(old) and exists(young)
    assert Client.sweep(at=now() + 2 * HOUR) == [(young.client_id, "MCP Client")]


def test_sweep_removes_a_client_identified_by_its_metadata_document_url(app):
    document = Client.create(client_id="https://app.example.com/oauth/client.json", name="Doc",
                             redirect_uris=["https://app.example.com/cb"], created_at=now() - 25 * HOUR)
    assert Client.sweep() == [(document.client_id, "Doc")]


def test_sweep_keeps_a_client_holding_a_token_or_that_ever_obtained_one(app, user):
    holding, revoked = self_registered(31), self_registered(31)
    AccessToken.issue(user, holding)
    AccessToken.revoke(AccessToken.issue(user, revoked).token, revoked)
    unrecorded = self_registered(31)
    AccessToken.create(digest="d" * 64, display_prefix="kf_at_xxxxxx", user=user, oauth_client=unrecorded)
    assert Client.sweep(at=now() + 365 * DAY) == []
    assert Client.get_by_id(revoked.id).first_token_at is not None


def test_sweep_keeps_a_client_whose_token_was_issued_and_revoked_through_the_endpoints(client, app, exchange,
                                                                                      oauth_client):
    Client.update(created_at=now() - 31 * DAY).where(Client.id == oauth_client.id).execute()
    token = client.post("/oauth/token", data=exchange).json["access_token"]
    client.post("/oauth/revocation", data={"token": token, "client_id": oauth_client.client_id})
    assert AccessToken.select().count() == 0
    assert Client.sweep(at=now() + 365 * DAY) == [] and exists(oauth_client)


def test_sweep_waits_an_hour_after_the_consent_screen_was_shown(client, signed_in, oauth_client, authorize_params):
    Client.update(created_at=now() - 31 * DAY).where(Client.id == oauth_client.id).execute()
    assert client.get("/oauth/authorization/new", query_string=authorize_params).status_code == 200
    assert Client.sweep(at=now() + 60) == []
    assert Client.sweep(at=now() + HOUR + 60) == [(oauth_client.client_id, "Test App")]


def test_sweep_waits_an_hour_after_a_code_was_issued(client, actions, signed_in, oauth_client, authorize_params):
    page = client.get("/oauth/authorization/new", query_string=authorize_params)
    Client.update(created_at=now() - 31 * DAY, last_authorized_at=None).where(Client.id == oauth_client.id).execute()
    approved = client.post("/oauth/authorization", data={**authorize_params, "decision": "approve",
                                                         "csrf_token": actions.csrf_token(page)})
    assert "code" in actions.query(approved)
    assert Client.sweep() == []
    assert Client.sweep(at=now() + HOUR + 60) == [(oauth_client.client_id, "Test App")]


def test_sweep_never_removes_apps_of_the_operator_or_of_a_user(app, user):
    operator = Client.registered_by_operator("Notes server", [], confidential=True)
    users_app = Client.registered_by_user(user, "Reports", ["https://reports.example.com/cb"])
    Client.update(created_at=now() - 365 * DAY).execute()
    assert Client.sweep() == [] and exists(operator) and exists(users_app)


def test_idle_tokens_are_kept_unless_a_number_of_days_is_set(app, user, oauth_client):
    assert app.config["IDLE_TOKEN_DAYS"] == 0
    AccessToken.issue(user, oauth_client)
    AccessToken.update(created_at=now() - 3650 * DAY).execute()
    assert sweep(app.config["IDLE_TOKEN_DAYS"]) == ([], 0)
    assert AccessToken.sweep_idle(0) == 0 and AccessToken.select().count() == 1


def test_idle_token_sweep_removes_personal_and_oauth_tokens_unused_that_long(app, user, oauth_client):
    def token(client=None, created_days_ago=0, used_days_ago=None):
        issued = AccessToken.issue(user, client)
        used = None if used_days_ago is None else now() - used_days_ago * DAY
        AccessToken.update(created_at=now() - created_days_ago * DAY, last_used_at=used).where(
            AccessToken.id == issued.id).execute()
        return issued.id
    idle = {token(oauth_client, 100, 91), token(None, 100, 91), token(None, 91), token(oauth_client, 91)}
    kept = {token(oauth_client, 100, 10), token(None, 100, 89), token(None, 10), token(oauth_client, 89)}
    assert AccessToken.sweep_idle(90) == len(idle)
    assert {row.id for row in AccessToken.select()} == kept


@pytest.mark.parametrize("setting", ["thirty", "-5", "1.5", "true"])
def test_idle_token_days_must_be_a_whole_number(config, setting, monkeypatch):
    monkeypatch.setenv("KEYFOB_IDLE_TOKEN_DAYS", setting)
    with pytest.raises(ValueError, match="KEYFOB_IDLE_TOKEN_DAYS"):
        create_app(config)


@pytest.fixture
def env(tmp_path, instance_database):
    return keyfob_env(tmp_path / "instance", {"PYTHONUNBUFFERED": "1", **instance_database})


@pytest.fixture
def instance_app(env, monkeypatch):
    """The instance's app opened in this process, on the database the `keyfob` commands use, to seed and age rows."""
    for name in [name for name in os.environ if name.startswith("KEYFOB_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("KEYFOB_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("KEYFOB_ISSUER", "http://127.0.0.1:8000")  # as `keyfob serve` sets it
    yield create_app()
    db.close()


def keyfob(env, *args):
    return subprocess.run([KEYFOB, *args], env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def seeded(instance_app):
    """An unused self-registered client 25 hours old, one 23 hours old, an operator's client, and a token a year idle."""
    alice = User.register("alice", "password1")
    clients = {"old": self_registered(25), "young": self_registered(23),
               "operator": Client.registered_by_operator("Notes server", [], confidential=True)}
    AccessToken.issue(alice, description="CLI")
    AccessToken.update(created_at=now() - 365 * DAY).execute()
    Client.update(created_at=now() - 365 * DAY).where(Client.id == clients["operator"].id).execute()
    return clients


def test_client_sweep_removes_unused_self_registered_clients_and_says_which(env, seeded):
    result = keyfob(env, "client", "sweep")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (f"Removed client {seeded['old'].client_id} (MCP Client)\n"
                             "Removed 1 self-registered client(s) that never obtained a token.\n")
    assert [exists(client) for client in seeded.values()] == [False, True, True]
    assert AccessToken.select().count() == 1
    assert keyfob(env, "client", "sweep").stdout == "Removed 0 self-registered client(s) that never obtained a token.\n"


def test_client_sweep_removes_idle_tokens_when_a_number_of_days_is_set(env, seeded):
    result = keyfob({**env, "KEYFOB_IDLE_TOKEN_DAYS": "30"}, "client", "sweep")
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("Removed 1 token(s) unused for 30 days.\n")
    assert AccessToken.select().count() == 0


def test_serve_sweeps_on_start(env, seeded, instance_database):
    instance = env["KEYFOB_INSTANCE_PATH"]
    with keyfob_serving(Path(instance), users=(), settings=instance_database):
        deadline = time.monotonic() + TIMEOUT
        while exists(seeded["old"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not exists(seeded["old"]) and exists(seeded["young"]) and exists(seeded["operator"])
    log = (Path(instance) / "serve.log").read_text()
    assert (f"Housekeeping removed 1 self-registered client(s) that never obtained a token {seeded['old'].client_id}"
            " (MCP Client); 0 idle token(s)") in log


def test_the_daily_sweep_is_claimed_by_one_process_a_day(app):
    at = now()
    assert [Housekeeping.claim("sweep", at), Housekeeping.claim("sweep", at)] == [True, False]
    assert Housekeeping.claim("sweep", at + DAY - 1) is False and Housekeeping.claim("sweep", at + DAY) is True


def test_a_sweep_that_fails_frees_its_claim_for_the_next_look(app):
    with pytest.raises(ZeroDivisionError), writing():
        assert Housekeeping.claim("sweep")
        1 / 0  # the sweep failing, inside the claim's transaction
    assert Housekeeping.claim("sweep")


def test_gunicorn_workers_sweep_by_themselves_once_a_day(env, seeded, instance_database):
    """No cron and no `keyfob serve`: the first worker to answer a request claims the day's sweep."""
    instance = Path(env["KEYFOB_INSTANCE_PATH"])
    settings = {**instance_database, "KEYFOB_ISSUER": "http://keyfob.test"}
    with serving(instance, settings, workers=2) as (base, _):
        deadline = time.monotonic() + TIMEOUT
        while exists(seeded["old"]) and time.monotonic() < deadline:
            httpx2.get(f"{base}/session/new")
            time.sleep(0.1)
        assert not exists(seeded["old"]) and exists(seeded["young"]) and exists(seeded["operator"])
        swept_at = Housekeeping.get_by_id("sweep").last_run_at
        assert 0 <= now() - swept_at < TIMEOUT + 5
        for _ in range(10):
            httpx2.get(f"{base}/session/new")
        assert Housekeeping.get_by_id("sweep").last_run_at == swept_at


def test_serve_says_nothing_when_there_is_nothing_to_sweep(env, instance_app, instance_database):
    instance = Path(env["KEYFOB_INSTANCE_PATH"])
    with keyfob_serving(instance, users=(), settings=instance_database) as base:
        httpx2.get(f"{base}/session/new")
        deadline = time.monotonic() + TIMEOUT
        while Housekeeping.select().count() == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
    assert Housekeeping.select().count() == 1  # it looked, and swept nothing
    assert "Housekeeping" not in (instance / "serve.log").read_text()
