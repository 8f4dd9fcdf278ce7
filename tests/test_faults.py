"""Faults, made for real: servers killed with SIGKILL mid-load, PostgreSQL stopped, SQLite locked by another
writer, the limiter's Redis killed. Nothing is mocked. What must hold once the fault clears: every token a
client was answered with still works, no half-written row is left, and no answer is a 500.

Rate limits count per client address, so the clients here bind each connection that could be limited to a
loopback source address of its own (127.77.x.y)."""
import contextlib
import itertools
import os
import pwd
import shutil
import signal
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import psycopg
import pytest
import redis

from actions import PASSWORD
from live import (KEYFOB, Browser, add_user, free_port, hidden_inputs, keyfob_env, keyfob_serving, redeem, register,
                  serving, stop, wait_until_answering)

POSTGRESQL_BIN = Path("/usr/lib/postgresql/15/bin")
ISSUER = "http://keyfob.test"  # not loopback, so approving keeps the session and each client signs in once
REDIRECT_URI = "http://127.0.0.1:47232/callback"
REDIS = "redis://127.0.0.1:6379/13"
addresses_used = itertools.count()


def new_address():
    """A loopback source address no request of this run has used yet."""
    number = next(addresses_used)
    return f"127.77.{number // 250}.{number % 250 + 1}"


def browser_at(base, cookies=None):
    """A browser at one address of its own (pages are not rate limited, sign-in is)."""
    return Browser(base, new_address(), timeout=15, cookies=cookies)


def token_request(base, client_id, code, verifier):
    """Redeem the code from a fresh address: (status, JSON body, headers), or ("refused", …) when nothing reached
    the server, or ("unanswered", …) when the request went out and no answer came."""
    try:
        answer = redeem(base, client_id, code, verifier, REDIRECT_URI, new_address(), timeout=20)
    except httpx2.ConnectError:
        return "refused", None, None
    except httpx2.TransportError:
        return "unanswered", None, None
    return answer.status_code, answer.json(), answer.headers


def children(pid):
    """The live children of a process, read from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
            if int(parent) == pid and state != "Z":
                found.append(int(stat.parent.name))
    return sorted(found)


def respawned_workers(master, killed, timeout=10):
    """The master's workers once it has replaced the one killed (or what it has after timeout seconds)."""
    deadline = time.monotonic() + timeout
    while (killed in children(master) or len(children(master)) < 3) and time.monotonic() < deadline:
        time.sleep(0.05)
    return children(master)


class Load:
    """Client threads, each with a browser signed in as alice, running whole flows (consent, approve, token)
    until stopped; each token request's outcome is tallied, and every token answered with a 200 kept."""

    def __init__(self, base, cookies, client_id, threads=4):
        self.base, self.cookies, self.client_id = base, cookies, client_id
        self.outcomes, self.tokens, self.lock = Counter(), [], threading.Lock()
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self.run) for _ in range(threads)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exception):
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def run(self):
        with browser_at(self.base, self.cookies) as browser:
            while not self.stopped.is_set():
                try:
                    grant = browser.authorize(self.client_id, REDIRECT_URI)
                except (httpx2.TransportError, AssertionError):  # a page the fault cut short
                    time.sleep(0.05)
                    continue
                outcome, body, _ = token_request(self.base, self.client_id, *grant)
                with self.lock:
                    self.outcomes[outcome] += 1
                    if outcome == 200:
                        self.tokens.append(body["access_token"])

    def tally(self):
        with self.lock:
            return Counter(self.outcomes), list(self.tokens)

    def until_tokens(self, count, timeout=20):
        deadline = time.monotonic() + timeout
        while len(self.tally()[1]) < count and time.monotonic() < deadline:
            time.sleep(0.05)


def kill_mid_load(load, kill, settle=0.5):
    """Kill while the load runs, let the requests in flight fail, stop the load: the tally at the kill and
    the tally once the load is stopped."""
    at_kill = load.tally()
    kill()
    time.sleep(settle)
    load.__exit__()
    return at_kill, load.tally()


def answers_to_me(base, tokens):
    with httpx2.Client(base_url=base, timeout=15) as api, ThreadPoolExecutor(4) as pool:
        return Counter(pool.map(lambda token: api.get("/api/me", headers={"Authorization": f"Bearer {token}"})
                                .status_code, tokens))


def code_rows(query):
    """(tokens issued for a code, those without their redeemed code, redeemed codes without their token)."""
    return tuple(query(sql)[0][0] for sql in (
        "SELECT COUNT(*) FROM access_tokens WHERE code_jti IS NOT NULL",
        "SELECT COUNT(*) FROM access_tokens t LEFT JOIN redeemed_codes r ON r.jti = t.code_jti"
        " WHERE t.code_jti IS NOT NULL AND r.jti IS NULL",
        "SELECT COUNT(*) FROM redeemed_codes r LEFT JOIN access_tokens t ON t.code_jti = r.jti WHERE t.id IS NULL"))


def sqlite_rows(path):
    def query(sql):
        with contextlib.closing(sqlite3.connect(path)) as connection:
            return connection.execute(sql).fetchall()
    return code_rows(query)


def postgresql_rows(url):
    def query(sql):
        with psycopg.connect(url) as connection:
            return connection.execute(sql).fetchall()
    return code_rows(query)


def assert_whole(rows, outcomes, tokens):
    """No partial row, and no more tokens stored than were answered or could have been in flight."""
    issued, without_code, without_token = rows
    assert (without_code, without_token) == (0, 0)
    assert len(tokens) <= issued <= len(tokens) + outcomes["unanswered"], (issued, outcomes)


def test_killing_keyfob_serve_mid_load_loses_no_token_it_answered_and_leaves_no_partial_row(tmp_path):
    settings = {"KEYFOB_ISSUER": ISSUER}
    add_user(tmp_path, settings=settings)
    with serving(tmp_path, settings) as (base, process), browser_at(base) as browser:
        assert browser.sign_in().status_code == 302
        client_id = register(base, REDIRECT_URI, new_address()).json()["client_id"]
        with Load(base, browser.cookies, client_id) as load:
            load.until_tokens(25)
            at_kill, (outcomes, tokens) = kill_mid_load(load, lambda: os.kill(process.pid, signal.SIGKILL))
        assert process.wait(timeout=10) == -signal.SIGKILL
    assert set(outcomes) <= {200, "refused", "unanswered"}, outcomes
    with serving(tmp_path, settings) as (base, _):
        assert answers_to_me(base, tokens) == {200: len(tokens)}
    assert_whole(sqlite_rows(tmp_path / "keyfob.db"), outcomes, tokens)
    print(f"\nkeyfob serve killed: {len(at_kill[1])} tokens answered before the kill, {len(tokens)} in all; "
          f"outcomes {dict(outcomes)}; rows {sqlite_rows(tmp_path / 'keyfob.db')}")


def test_killing_a_gunicorn_worker_or_the_whole_server_mid_load_loses_no_token_it_answered(
        tmp_path, new_postgresql_database, limiter_storage):
    database = new_postgresql_database()
    settings = {"KEYFOB_DATABASE_URL": database, "KEYFOB_RATELIMIT_STORAGE_URI": limiter_storage,
                "KEYFOB_SECRET_KEY": "shared-" + "s" * 40, "KEYFOB_ISSUER": ISSUER}
    add_user(tmp_path, settings=settings)
    with serving(tmp_path, settings, workers=3) as (base, master), browser_at(base) as browser:
        assert browser.sign_in().status_code == 302
        client_id = register(base, REDIRECT_URI, new_address()).json()["client_id"]
        with Load(base, browser.cookies, client_id) as load:
            load.until_tokens(15)
            workers = children(master.pid)
            assert len(workers) == 3
            os.kill(workers[0], signal.SIGKILL)
            before, _ = load.tally()
            load.until_tokens(len(load.tally()[1]) + 15)
            respawned = respawned_workers(master.pid, workers[0])
            assert len(respawned) == 3 and workers[0] not in respawned, (workers, respawned)
            after_worker, _ = load.tally()
            at_kill, (outcomes, tokens) = kill_mid_load(load, lambda: os.killpg(master.pid, signal.SIGKILL))
        assert master.wait(timeout=10) == -signal.SIGKILL
    assert set(outcomes) <= {200, "refused", "unanswered"}, outcomes
    assert after_worker["unanswered"] - before["unanswered"] <= 1  # a sync worker serves one request at a time
    with serving(tmp_path, settings, workers=3) as (base, _):
        assert answers_to_me(base, tokens) == {200: len(tokens)}
    assert_whole(postgresql_rows(database), outcomes, tokens)
    print(f"\ngunicorn: worker killed after {sum(before.values())} token requests, {after_worker['unanswered']} "
          f"unanswered; whole server killed with {len(at_kill[1])} tokens answered, {len(tokens)} in all; "
          f"outcomes {dict(outcomes)}; rows {postgresql_rows(database)}")


class Cluster:
    """A PostgreSQL cluster of this module's own, which a test may stop and start."""

    def __init__(self, folder, as_postgres):
        self.folder, self.as_postgres, self.port = folder, as_postgres, free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def pg_ctl(self, *arguments):
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run([*self.as_postgres, POSTGRESQL_BIN / "pg_ctl", "-D", f"{self.folder}/data", "-l",
                        f"{self.folder}/log", "-o", options, "-w", "-t", "30", *arguments],
                       check=True, capture_output=True, timeout=60)

    def start(self):
        self.pg_ctl("start")

    def stop(self, mode="fast"):
        self.pg_ctl("-m", mode, "stop")


@pytest.fixture(scope="module")
def private_postgresql():
    """A cluster of our own on a free port: the machine's shared PostgreSQL serves other tests."""
    if not (POSTGRESQL_BIN / "initdb").exists():
        pytest.skip(f"{POSTGRESQL_BIN}/initdb is not installed, so no private PostgreSQL cluster can be made")
    as_postgres = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        if not shutil.which("runuser"):
            pytest.skip("Running as root without runuser, so initdb cannot run as the postgres user")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("Running as root and there is no postgres user for initdb to run as")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    folder = tempfile.mkdtemp(prefix="keyfob-faults-")  # pytest's tmp_path is closed to the postgres user
    cluster = Cluster(folder, as_postgres)
    try:
        if as_postgres:
            os.chown(folder, owner.pw_uid, owner.pw_gid)
        subprocess.run([*as_postgres, POSTGRESQL_BIN / "initdb", "-D", f"{folder}/data", "-U", "postgres",
                        "-A", "trust", "-N", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            cluster.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


def assert_friendly_503(page):
    assert page.status_code == 503
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Retry-After"] == "5"
    assert "Keyfob is briefly unavailable" in page.text
    for leak in ("Traceback", 'File "', "OperationalError", "psycopg", "connection"):
        assert leak not in page.text


def assert_temporarily_unavailable(answer):
    status, body, headers = answer
    assert (status, body["error"]) == (503, "temporarily_unavailable")
    assert headers["Retry-After"] == "5"


def test_postgresql_stopped_answers_503_and_service_returns_with_it(tmp_path, private_postgresql):
    settings = {"KEYFOB_DATABASE_URL": private_postgresql.url, "KEYFOB_ISSUER": ISSUER}
    with keyfob_serving(tmp_path, settings=settings) as base, \
            browser_at(base) as browser, httpx2.Client(base_url=base, timeout=15) as api:
        assert browser.sign_in().status_code == 302
        client_id = register(base, REDIRECT_URI, new_address()).json()["client_id"]
        status, token, _ = token_request(base, client_id, *browser.authorize(client_id, REDIRECT_URI))
        bearer = {"Authorization": f"Bearer {token['access_token']}"}
        pending = browser.authorize(client_id, REDIRECT_URI)

        def me(_=None):
            return api.get("/api/me", headers=bearer).status_code
        with ThreadPoolExecutor(16) as pool:  # every waitress thread opens its connection
            assert set(pool.map(me, range(48))) == {200}

        private_postgresql.stop()
        try:
            assert_temporarily_unavailable(token_request(base, client_id, *pending))
            down = api.get("/api/me", headers=bearer)
            assert (down.status_code, down.json()["error"], down.headers["Retry-After"]) == (
                503, "temporarily_unavailable", "5")
            with browser_at(base) as stranger:
                sign_in_page = stranger.get("/session/new")  # needs no row: a thread still connected renders it
                if sign_in_page.status_code != 200:
                    assert_friendly_503(sign_in_page)
                assert_friendly_503(stranger.post("/session", data={**hidden_inputs(sign_in_page.text),
                                                                    "username": "alice", "password": PASSWORD}))
            signed_in_page = browser.get("/my/connected_apps")  # checked last, so that recovery is checked too
        finally:
            private_postgresql.start()

        back, statuses = time.monotonic(), []
        while time.monotonic() - back < 5 and statuses[-1:] != [200]:
            statuses.append(me())
        assert statuses[-1] == 200, statuses
        recovered_in = time.monotonic() - back
        with ThreadPoolExecutor(16) as pool:
            after = Counter(pool.map(me, range(48)))
        assert set(after) <= {200, 503}
        assert after[503] == 0  # connections opened before the outage are replaced before use
        with ThreadPoolExecutor(16) as pool:
            assert set(pool.map(me, range(48))) == {200}
        assert token_request(base, client_id, *pending)[0] == 200  # the 503 spent nothing: the client's retry succeeds
        assert browser.get("/my/connected_apps").status_code == 200
    print(f"\nPostgreSQL back: first 200 after {recovered_in:.2f} s ({statuses.count(503)} 503s polling), "
          f"then {after[503]} 503s in 48 concurrent requests; signed-in page while down: {signed_in_page.status_code}")
    assert_friendly_503(signed_in_page)


@contextlib.contextmanager
def write_lock(path):
    """Hold SQLite's write lock on the database from another connection, as another process could."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")


def test_sqlite_writers_wait_out_a_held_lock_and_answer_503_past_the_busy_timeout(tmp_path):
    with keyfob_serving(tmp_path, settings={"KEYFOB_ISSUER": ISSUER}) as base, \
            browser_at(base) as browser, httpx2.Client(base_url=base, timeout=20) as api:
        assert browser.sign_in().status_code == 302
        client_id = register(base, REDIRECT_URI, new_address()).json()["client_id"]
        grants = [browser.authorize(client_id, REDIRECT_URI) for _ in range(14)]

        with ThreadPoolExecutor(20) as pool:
            with write_lock(tmp_path / "keyfob.db"):
                redeemed = [pool.submit(token_request, base, client_id, *grant) for grant in grants[:12]]
                registered = [pool.submit(lambda: register(base, REDIRECT_URI, new_address()).status_code)
                              for _ in range(6)]
                time.sleep(2)
                waiting = sum(not future.done() for future in redeemed + registered)
            answers = [future.result() for future in redeemed]
            assert [status for status, _, _ in answers] == [200] * 12
            assert [future.result() for future in registered] == [201] * 6
        assert waiting == 18  # every write waited for the lock, none failed while it was held
        tokens = [body["access_token"] for _, body, _ in answers]

        def me(token):
            return api.get("/api/me", headers={"Authorization": f"Bearer {token}"})
        with ThreadPoolExecutor(4) as pool:
            with write_lock(tmp_path / "keyfob.db"):
                started = time.monotonic()
                redemption = pool.submit(token_request, base, client_id, *grants[12])
                registration = pool.submit(register, base, REDIRECT_URI, new_address(), timeout=15)
                first_use = pool.submit(me, tokens[0])  # a token's first use records it: a write
                for future in (redemption, registration, first_use):
                    future.result(timeout=started + 15 - time.monotonic())
                waited = time.monotonic() - started
            assert_temporarily_unavailable(redemption.result())
            for answer in (registration.result(), first_use.result()):
                assert (answer.status_code, answer.json()["error"], answer.headers["Retry-After"]) == (
                    503, "temporarily_unavailable", "5")
        assert waited >= 9.5

        assert token_request(base, client_id, *grants[12])[0] == 200  # the 503 spent nothing: the retry succeeds
        assert token_request(base, client_id, *grants[13])[0] == 200
        assert register(base, REDIRECT_URI, new_address()).status_code == 201
        assert {me(token).status_code for token in tokens} == {200}
    print(f"\nSQLite: 18 writers waited 2 s and succeeded; past the timeout 503 after {waited:.1f} s")


@pytest.fixture
def private_redis(tmp_path):
    """A Redis of this test's own, without persistence, which the test may kill: (URL, process)."""
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    port = free_port()
    with open(tmp_path / "redis.log", "w") as output:
        process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no", "--dir", str(tmp_path)], stdout=output,
                                   stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(redis.RedisError):
                if redis.Redis.from_url(url, socket_timeout=1).ping():
                    break
            assert time.monotonic() < deadline and process.poll() is None, (tmp_path / "redis.log").read_text()
            time.sleep(0.05)
        yield url, process
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)  # a test may have stopped it
        stop(process)


def test_machine_endpoints_keep_their_limits_in_memory_when_the_limiters_redis_dies(tmp_path, private_redis):
    url, redis_server = private_redis
    settings = {"KEYFOB_RATELIMIT_STORAGE_URI": url, "KEYFOB_ISSUER": ISSUER}
    with keyfob_serving(tmp_path, settings=settings) as base, \
            browser_at(base) as browser, httpx2.Client(base_url=base, timeout=15) as api:
        assert browser.sign_in().status_code == 302
        client_id = register(base, REDIRECT_URI, new_address()).json()["client_id"]
        grants = [browser.authorize(client_id, REDIRECT_URI) for _ in range(2)]
        assert redis.Redis.from_url(url).keys("LIMITS*")  # the limits were counted in Redis

        redis_server.kill()
        redis_server.wait(timeout=10)
        status, token, _ = token_request(base, client_id, *grants[0])
        assert status == 200
        assert token_request(base, client_id, "not-a-code-" * 4, "v" * 43)[0] == 400
        assert api.get("/api/me", headers={"Authorization": f"Bearer {token['access_token']}"}).status_code == 200
        one_address, started = new_address(), time.monotonic()
        registrations = [register(base, REDIRECT_URI, one_address).status_code for _ in range(12)]
        took = time.monotonic() - started
        assert registrations == [201] * 10 + [429] * 2  # 10 a minute, counted in this process's memory
        assert token_request(base, client_id, *grants[1])[0] == 200
    print(f"\nRedis killed: 12 registrations from one address answered {Counter(registrations)} in {took:.2f} s")


def test_machine_endpoints_answer_within_seconds_when_the_limiters_redis_hangs(tmp_path, private_redis):
    """A Redis that accepts connections and never answers (stopped, or cut off by the network): the
    limited endpoints must not wait on it for ever, or they hold every server thread."""
    url, redis_server = private_redis
    settings = {"KEYFOB_RATELIMIT_STORAGE_URI": url, "KEYFOB_ISSUER": ISSUER}
    with keyfob_serving(tmp_path, settings=settings) as base:
        assert register(base, REDIRECT_URI, new_address()).status_code == 201
        redis_server.send_signal(signal.SIGSTOP)
        try:
            answer = register(base, REDIRECT_URI, new_address(), timeout=5)
        except httpx2.TimeoutException:
            pytest.fail("POST /oauth/clients got no answer within 5 s while Redis hung: the limiter's Redis "
                        "client has no socket timeout")
        assert answer.status_code == 201


def test_a_command_and_a_second_server_wait_out_another_processs_write_lock(tmp_path):
    """SQLite applies its busy timeout when a transaction begins IMMEDIATE, not when a read transaction turns into
    a write: every transaction that writes begins IMMEDIATE, so a command or a server starting while another
    process writes waits (up to 10 s) instead of failing at once with "database is locked"."""
    add_user(tmp_path)
    env, port, log = keyfob_env(tmp_path), free_port(), tmp_path / "second.log"
    with write_lock(tmp_path / "keyfob.db"), open(log, "w") as output:
        started = time.monotonic()
        adding = subprocess.Popen([KEYFOB, "user", "add", "bob"], env=env, stdin=subprocess.PIPE, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        adding.stdin.write("password1\npassword1\n")
        adding.stdin.close()
        serving_too = subprocess.Popen([KEYFOB, "serve", "--port", str(port)], env=env, stdout=output,
                                       stderr=subprocess.STDOUT)
        time.sleep(2)
        assert adding.poll() is None and serving_too.poll() is None  # both still waiting on the lock
    try:
        assert adding.wait(timeout=15) == 0, adding.stderr.read()
        wait_until_answering(serving_too, f"http://127.0.0.1:{port}/.well-known/oauth-authorization-server", log)
    finally:
        stop(serving_too)
    assert time.monotonic() - started >= 2
