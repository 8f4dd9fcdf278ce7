"""Several processes on one PostgreSQL database and one Redis, as several hosts behind a load balancer would
run: each is `gunicorn 'app:create_app()'` on a port of its own, sharing KEYFOB_SECRET_KEY and the issuer."""
import contextlib
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from actions import PASSWORD
from live import GUNICORN, add_user, free_port, keyfob_env, serving
from models import s256

ISSUER = "http://keyfob.test"  # what a load balancer would serve: not loopback, so approving keeps the session
REDIRECT_URI = "http://127.0.0.1:47231/callback"
REDIS = "redis://127.0.0.1:6379/14"


def csrf_token(page):
    return re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1]


def query(response):
    return {name: values[0] for name, values in parse_qs(urlsplit(response.headers["Location"]).query).items()}


@pytest.fixture(scope="module")
def settings(new_postgresql_database, limiter_storage):
    return {"KEYFOB_DATABASE_URL": new_postgresql_database(), "KEYFOB_RATELIMIT_STORAGE_URI": limiter_storage,
            "KEYFOB_SECRET_KEY": "shared-" + "s" * 40, "KEYFOB_ISSUER": ISSUER}


@pytest.fixture(scope="module")
def workers(tmp_path_factory, settings):
    """Three processes on the shared database, limiter storage and key; their base URLs."""
    instance = tmp_path_factory.mktemp("instance")
    add_user(instance, settings=settings)
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(serving(instance, settings, workers=1))[0] for _ in range(3)]


@pytest.fixture(scope="module")
def browser(workers):
    """alice signed in at the first worker; her session cookie goes to every worker, as behind one host name."""
    with httpx2.Client(timeout=10) as browser:
        form = csrf_token(browser.get(f"{workers[0]}/session/new"))
        signed_in = browser.post(f"{workers[0]}/session", data={"username": "alice", "password": PASSWORD,
                                                                 "csrf_token": form})
        assert signed_in.status_code == 302
        yield browser


@pytest.fixture(scope="module")
def app_client(workers):
    registered = httpx2.post(f"{workers[2]}/oauth/clients", json={"client_name": "Workers",
                                                                   "redirect_uris": [REDIRECT_URI]})
    assert registered.status_code == 201, registered.text
    return registered.json()["client_id"]


def authorize(browser, consent_at, approve_at, client_id):
    """Open consent at one worker and approve at another: the code and the verifier that redeems it."""
    verifier = os.urandom(32).hex()
    params = {"client_id": client_id, "redirect_uri": REDIRECT_URI, "response_type": "code", "state": "s",
              "code_challenge": s256(verifier), "code_challenge_method": "S256", "scope": "read write"}
    page = browser.get(f"{consent_at}/oauth/authorization/new", params=params)
    assert page.status_code == 200, page.text
    approved = browser.post(f"{approve_at}/oauth/authorization",
                            data={**params, "decision": "approve", "csrf_token": csrf_token(page)})
    assert approved.status_code == 302, approved.text
    return query(approved)["code"], verifier


def redeem(base, client_id, code, verifier):
    return httpx2.post(f"{base}/oauth/token", data={"grant_type": "authorization_code", "client_id": client_id,
                                                    "code": code, "code_verifier": verifier,
                                                    "redirect_uri": REDIRECT_URI}, timeout=10)


def me(base, token):
    return httpx2.get(f"{base}/api/me", headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code


def test_a_code_minted_by_one_worker_is_redeemed_by_another_and_works_at_all(workers, browser, app_client):
    code, verifier = authorize(browser, workers[0], workers[1], app_client)
    token = redeem(workers[2], app_client, code, verifier)
    assert token.status_code == 200, token.text
    assert [me(base, token.json()["access_token"]) for base in workers] == [200, 200, 200]


def test_concurrent_redemptions_across_workers_yield_one_token_which_the_replay_revokes(workers, browser, app_client):
    code, verifier = authorize(browser, workers[1], workers[2], app_client)
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda base: redeem(base, app_client, code, verifier), workers * 2))
    winners = [answer.json()["access_token"] for answer in answers if answer.status_code == 200]
    assert len(winners) == 1, [answer.text for answer in answers]
    assert {answer.json()["error"] for answer in answers if answer.status_code != 200} == {"invalid_grant"}
    assert [me(base, winners[0]) for base in workers] == [401, 401, 401]


def test_a_revocation_at_one_worker_is_refused_on_the_next_request_at_every_worker(workers, browser, app_client):
    code, verifier = authorize(browser, workers[2], workers[0], app_client)
    token = redeem(workers[1], app_client, code, verifier).json()["access_token"]
    assert [me(base, token) for base in workers] == [200, 200, 200]
    revoked = httpx2.post(f"{workers[0]}/oauth/revocation", data={"token": token, "client_id": app_client})
    assert revoked.status_code == 200
    assert [me(base, token) for base in workers] == [401, 401, 401]


def test_rate_limits_are_shared_by_every_worker(workers):
    """Registration allows 10 a minute per address, counted in Redis whichever worker answers."""
    statuses = [httpx2.post(f"{base}/oauth/clients", json={"redirect_uris": [REDIRECT_URI]}).status_code
                for _ in range(4) for base in workers]
    assert statuses.count(201) <= 10 and statuses.count(429) >= 2
    assert statuses[-1] == 429


def test_gunicorn_with_four_workers_serves_the_whole_flow(tmp_path, settings, browser, app_client):
    with serving(tmp_path, settings, workers=4) as (base, _):
        code, verifier = authorize(browser, base, base, app_client)
        token = redeem(base, app_client, code, verifier)
        assert token.status_code == 200, token.text
        with ThreadPoolExecutor(4) as pool:
            assert set(pool.map(lambda _: me(base, token.json()["access_token"]), range(40))) == {200}


def test_a_worker_with_another_key_refuses_to_start(tmp_path, settings, workers):
    log = tmp_path / "refused.log"
    with open(log, "w") as output:
        refused = subprocess.run([GUNICORN, "-w", "2", "-b", f"127.0.0.1:{free_port()}", "app:create_app()"],
                                 env=keyfob_env(tmp_path, {**settings, "KEYFOB_SECRET_KEY": "another-" + "a" * 40}),
                                 stdout=output, stderr=subprocess.STDOUT, timeout=60)
    assert refused.returncode != 0
    assert "in use with a different secret key" in log.read_text()
