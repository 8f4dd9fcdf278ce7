"""Several processes on one PostgreSQL database and one Redis, as several hosts behind a load balancer would
run: each is `gunicorn 'app:create_app()'` on a port of its own, sharing KEYFOB_SECRET_KEY and the issuer."""
import contextlib
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from live import GUNICORN, Browser, add_user, free_port, keyfob_env, me, redeem, register, revoke, serving

ISSUER = "http://keyfob.test"  # what a load balancer would serve: not loopback, so approving keeps the session
REDIS = "redis://127.0.0.1:6379/14"


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
    with Browser(workers[0]) as browser:
        assert browser.sign_in().status_code == 302
        yield browser


@pytest.fixture(scope="module")
def app_client(workers):
    registered = register(workers[2])
    assert registered.status_code == 201, registered.text
    return registered.json()["client_id"]


def test_a_code_minted_by_one_worker_is_redeemed_by_another_and_works_at_all(workers, browser, app_client):
    code, verifier = browser.authorize(app_client, scope="read write", consent_at=workers[0], approve_at=workers[1])
    token = redeem(workers[2], app_client, code, verifier)
    assert token.status_code == 200, token.text
    assert [me(base, token.json()["access_token"]).status_code for base in workers] == [200, 200, 200]


def test_concurrent_redemptions_across_workers_yield_one_token_which_the_replay_revokes(workers, browser, app_client):
    code, verifier = browser.authorize(app_client, scope="read write", consent_at=workers[1], approve_at=workers[2])
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda base: redeem(base, app_client, code, verifier), workers * 2))
    winners = [answer.json()["access_token"] for answer in answers if answer.status_code == 200]
    assert len(winners) == 1, [answer.text for answer in answers]
    assert {answer.json()["error"] for answer in answers if answer.status_code != 200} == {"invalid_grant"}
    assert [me(base, winners[0]).status_code for base in workers] == [401, 401, 401]


def test_a_revocation_at_one_worker_is_refused_on_the_next_request_at_every_worker(workers, browser, app_client):
    code, verifier = browser.authorize(app_client, scope="read write", consent_at=workers[2], approve_at=workers[0])
    token = redeem(workers[1], app_client, code, verifier).json()["access_token"]
    assert [me(base, token).status_code for base in workers] == [200, 200, 200]
    assert revoke(workers[0], token, app_client).status_code == 200
    assert [me(base, token).status_code for base in workers] == [401, 401, 401]


def test_rate_limits_are_shared_by_every_worker(workers):
    """Registration allows 10 a minute per address, counted in Redis whichever worker answers."""
    statuses = [register(base).status_code for _ in range(4) for base in workers]
    assert statuses.count(201) <= 10 and statuses.count(429) >= 2
    assert statuses[-1] == 429


def test_gunicorn_with_four_workers_serves_the_whole_flow(tmp_path, settings, browser, app_client):
    with serving(tmp_path, settings, workers=4) as (base, _):
        code, verifier = browser.authorize(app_client, scope="read write", consent_at=base, approve_at=base)
        token = redeem(base, app_client, code, verifier)
        assert token.status_code == 200, token.text
        with ThreadPoolExecutor(4) as pool:
            assert set(pool.map(lambda _: me(base, token.json()["access_token"]).status_code, range(40))) == {200}


def test_gunicorn_without_an_issuer_refuses_to_start_and_says_why_in_its_log(tmp_path):
    """`keyfob serve` sets the issuer; gunicorn has none unless KEYFOB_ISSUER says it (on SQLite: no PostgreSQL)."""
    log = tmp_path / "refused.log"
    with open(log, "w") as output:
        refused = subprocess.run([GUNICORN, "-w", "1", "-b", f"127.0.0.1:{free_port()}", "app:create_app()"],
                                 env=keyfob_env(tmp_path / "instance"), stdout=output, stderr=subprocess.STDOUT,
                                 timeout=60)
    assert refused.returncode != 0
    assert "KEYFOB_ISSUER is not set: set it to the public base URL" in log.read_text()


def test_a_worker_with_another_key_refuses_to_start(tmp_path, settings, workers):
    log = tmp_path / "refused.log"
    with open(log, "w") as output:
        refused = subprocess.run([GUNICORN, "-w", "2", "-b", f"127.0.0.1:{free_port()}", "app:create_app()"],
                                 env=keyfob_env(tmp_path, {**settings, "KEYFOB_SECRET_KEY": "another-" + "a" * 40}),
                                 stdout=output, stderr=subprocess.STDOUT, timeout=60)
    assert refused.returncode != 0
    assert "in use with a different secret key" in log.read_text()
