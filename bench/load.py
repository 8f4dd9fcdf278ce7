"""Keyfob under load over real HTTP: concurrent clients doing whole OAuth flows, bearer calls and revocations.

    .venv/bin/python bench/load.py --url http://127.0.0.1:8000 --username alice --password pw [--clients 8] [--seconds 30]
    .venv/bin/python bench/load.py --start waitress     # one `keyfob serve`, SQLite in a temporary instance folder
    .venv/bin/python bench/load.py --start gunicorn     # gunicorn -w 4, a fresh PostgreSQL database, Redis limiter
    .venv/bin/python bench/load.py --start gunicorn --workers 2 --clients 4   # the flow-latency target's setting

Each client registers itself (RFC 7591), then loops: a whole flow (consent page → approve → token with PKCE),
--calls bearer calls to /api/me with its tokens, and one revocation in --revoke-every flows. At the end every
token still held must answer 200 on /api/me and every revoked one 401. Exits 1 on any error or lost token.

The rate limits stay on. Every 127.x.y.z address is loopback on Linux, so each rate-limited request leaves from
a source address that has served fewer than MAX_PER_ADDRESS of them: no per-address bucket ever fills.
The server's issuer must not be a loopback URL (there, approving signs the user out): --start uses
http://keyfob.test; start your own server with KEYFOB_ISSUER=http://keyfob.test.
"""
import argparse
import base64
import contextlib
import hashlib
import http.client
import json
import os
import random
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from urllib.parse import parse_qs, urlencode, urlsplit

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
ISSUER = "http://keyfob.test"
REDIRECT_URI = "http://127.0.0.1:9/cb"
CSRF_TOKEN = re.compile(rb'name="csrf_token" value="([^"]+)"')
MAX_PER_ADDRESS = 10  # rate-limited requests per source address; the limits are 10 to 20 a minute
OPERATIONS = ("consent page", "approve", "token", "flow", "api/me", "revocation")


class Unexpected(Exception):
    """A response with a status other than the one the operation expects."""


class Connections:
    """Keep-alive connections to the server: one from 127.0.0.1 for pages and the API, and one for
    rate-limited endpoints that moves to a fresh source address every MAX_PER_ADDRESS requests."""

    def __init__(self, url, addresses):
        parts = urlsplit(url)
        self.host, self.port, self.addresses = parts.hostname, parts.port or 80, addresses
        self.main, self.limited, self.limited_uses = self.connect("127.0.0.1"), None, MAX_PER_ADDRESS

    def connect(self, source):
        return http.client.HTTPConnection(self.host, self.port, timeout=30, source_address=(source, 0))

    def for_limited(self):
        if self.limited_uses >= MAX_PER_ADDRESS:
            if self.limited:
                self.limited.close()
            self.limited, self.limited_uses = self.connect(next(self.addresses)), 0
        self.limited_uses += 1
        return self.limited

    def send(self, connection, method, path, form=None, json_body=None, headers=None):
        """(status, lower-cased headers, body); a dropped connection is status 0 and is reopened."""
        headers = dict(headers or {})
        body = None
        if form is not None:
            body, headers["Content-Type"] = urlencode(form), "application/x-www-form-urlencoded"
        elif json_body is not None:
            body, headers["Content-Type"] = json.dumps(json_body), "application/json"
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            return 0, {}, repr(error).encode()


def addresses(first):
    """127.first.b.c, some 65,000 addresses; `first` differs per client, so no two clients share one."""
    for second in range(256):
        for third in range(1, 255):
            yield f"127.{first}.{second}.{third}"


class LoadClient:
    """One OAuth client (self-registered, public) acting for the signed-in user, as an MCP client would."""

    def __init__(self, url, number, cookie, stats, options):
        self.connections = Connections(url, addresses(number + 1))
        self.number, self.cookie, self.stats, self.options = number, cookie, stats, options
        self.client_id, self.live, self.revoked = None, [], []

    def timed(self, operation, expected, connection, method, path, **request):
        started = time.perf_counter()
        status, headers, body = self.connections.send(connection, method, path, **request)
        self.stats.record(operation, time.perf_counter() - started, status == expected, status, body)
        if status != expected:
            raise Unexpected(operation)
        return headers, body

    def register(self):
        source = self.connections.connect(f"127.255.0.{self.number + 1}")
        status, _, body = self.connections.send(source, "POST", "/oauth/clients", json_body={
            "client_name": "Load client", "redirect_uris": [REDIRECT_URI]})
        source.close()
        if status != 201:
            raise SystemExit(f"Registration answered {status}: {body[:200]!r}")
        self.client_id = json.loads(body)["client_id"]

    def flow(self):
        started = time.perf_counter()
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        grant = {"response_type": "code", "client_id": self.client_id, "redirect_uri": REDIRECT_URI, "scope": "read",
                 "state": secrets.token_urlsafe(12), "code_challenge": challenge, "code_challenge_method": "S256"}
        main = self.connections.main
        headers, page = self.timed("consent page", 200, main, "GET", "/oauth/authorization/new?" + urlencode(grant),
                                   headers={"Cookie": self.cookie})
        self.cookie = headers.get("set-cookie", self.cookie).split(";")[0]  # the first page adds a CSRF secret
        csrf_token = CSRF_TOKEN.search(page)[1].decode()
        headers, _ = self.timed("approve", 302, main, "POST", "/oauth/authorization", headers={"Cookie": self.cookie},
                                form={**grant, "decision": "approve", "csrf_token": csrf_token})
        answer = parse_qs(urlsplit(headers["location"]).query)
        if answer.get("state") != [grant["state"]] or answer.get("iss") is None:
            self.stats.record("approve", 0, False, 302, headers["location"].encode())
            raise Unexpected("approve")
        _, body = self.timed("token", 200, self.connections.for_limited(), "POST", "/oauth/token", form={
            "grant_type": "authorization_code", "client_id": self.client_id, "code": answer["code"][0],
            "code_verifier": verifier, "redirect_uri": REDIRECT_URI})
        self.live.append(json.loads(body)["access_token"])
        self.stats.record("flow", time.perf_counter() - started, True)

    def call_api(self, token, expected=200, operation="api/me"):
        self.timed(operation, expected, self.connections.main, "GET", "/api/me",
                   headers={"Authorization": f"Bearer {token}"})

    def revoke(self):
        token = self.live.pop(random.randrange(len(self.live)))
        self.timed("revocation", 200, self.connections.for_limited(), "POST", "/oauth/revocation",
                   form={"token": token, "client_id": self.client_id})
        self.revoked.append(token)

    def run(self, deadline):
        flows = 0
        while time.monotonic() < deadline:
            with contextlib.suppress(Unexpected):
                self.flow()
                flows += 1
                for _ in range(self.options.calls):
                    self.call_api(random.choice(self.live))
                if flows % self.options.revoke_every == 0:
                    self.revoke()

    def lost_tokens(self):
        """Tokens that answer otherwise than they should: 200 while held, 401 once revoked."""
        lost = 0
        for tokens, expected in ((self.live, 200), (self.revoked, 401)):
            for token in tokens:
                try:
                    self.call_api(token, expected, operation="check")
                except Unexpected:
                    lost += 1
        return lost


class Stats:
    """Latencies and errors per operation, shared by the threads of one process."""

    def __init__(self):
        self.latencies, self.errors, self.samples, self.lock = defaultdict(list), defaultdict(int), [], threading.Lock()

    def record(self, operation, seconds, ok, status=None, body=b""):
        with self.lock:
            if ok:
                self.latencies[operation].append(seconds)
            else:
                self.errors[operation] += 1
                if len(self.samples) < 5:
                    self.samples.append(f"{operation}: {status} {body[:160]!r}")


def run_process(url, numbers, cookie, start_at, options):
    """Run one process's share of the load clients in threads; return its figures."""
    stats = Stats()
    clients = [LoadClient(url, number, cookie, stats, options) for number in numbers]
    for client in clients:
        client.register()
    time.sleep(max(0.0, start_at - time.time()))
    deadline = time.monotonic() + options.seconds
    threads = [threading.Thread(target=client.run, args=(deadline,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lost = sum(client.lost_tokens() for client in clients)
    return {"latencies": dict(stats.latencies), "errors": dict(stats.errors), "samples": stats.samples, "lost": lost,
            "live": sum(len(c.live) for c in clients), "revoked": sum(len(c.revoked) for c in clients)}


def sign_in(url, username, password):
    """The session cookie of a signed-in user. One sign-in for all clients: the limit is 5 a minute per username."""
    connections = Connections(url, iter(()))
    status, headers, page = connections.send(connections.main, "GET", "/session/new")
    cookie = headers.get("set-cookie", "").split(";")[0]
    status, headers, _ = connections.send(connections.main, "POST", "/session", headers={"Cookie": cookie}, form={
        "username": username, "password": password, "csrf_token": CSRF_TOKEN.search(page)[1].decode()})
    if status != 302:
        raise SystemExit(f"Sign-in as {username} answered {status}")
    return headers["set-cookie"].split(";")[0]


def require_remote_issuer(url):
    connections = Connections(url, iter(()))
    status, _, body = connections.send(connections.main, "GET", "/.well-known/oauth-authorization-server")
    issuer = json.loads(body)["issuer"] if status == 200 else None
    if urlsplit(issuer or "").hostname in (None, "127.0.0.1", "::1", "localhost"):
        raise SystemExit(f"The server's issuer is {issuer!r}: on a loopback issuer approving signs the user out."
                         f" Start it with KEYFOB_ISSUER={ISSUER}.")
    return issuer


def percentile(ordered, share):
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] * 1e3


def report(results, seconds):
    latencies, errors = defaultdict(list), defaultdict(int)
    for result in results:
        for operation, values in result["latencies"].items():
            latencies[operation] += values
        for operation, count in result["errors"].items():
            errors[operation] += count
    print(f"{'operation':<13} {'count':>8} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8} {'p99/p50':>8} {'errors':>7}")
    for operation in (*OPERATIONS, "check"):
        ordered = sorted(latencies[operation])
        if not ordered and not errors[operation]:
            continue
        p50, p99 = (percentile(ordered, 0.5), percentile(ordered, 0.99)) if ordered else (0, 0)
        rate = "" if operation == "check" else f"{len(ordered) / seconds:8.1f}"
        print(f"{operation:<13} {len(ordered):>8} {rate:>8} {p50:8.2f} {p99:8.2f} {p99 / (p50 or 1):8.2f}"
              f" {errors[operation]:>7}")
    flows = sorted(latencies["flow"])
    if flows:
        ratio = percentile(flows, 0.99) / percentile(flows, 0.5)
        print(f"flow p99 ÷ p50 {ratio:.2f}: target ≤ 2 (at 4 clients on gunicorn -w 2 with PostgreSQL):"
              f" {'met' if ratio <= 2 else 'NOT met'}")
    for sample in [sample for result in results for sample in result["samples"]][:5]:
        print("  error:", sample)
    lost = sum(result["lost"] for result in results)
    live, revoked = sum(r["live"] for r in results), sum(r["revoked"] for r in results)
    total_errors = sum(count for operation, count in errors.items() if operation != "check")
    print(f"tokens: {live} held (each must answer 200), {revoked} revoked (each must answer 401): {lost} lost tokens")
    print(f"errors: {total_errors}; load average {open('/proc/loadavg').read().split()[0]} on {os.cpu_count()} cores")
    return total_errors, lost


def cpu_seconds(pid):
    """CPU time used so far by a process and its children (gunicorn's workers)."""
    with open(f"/proc/{pid}/task/{pid}/children") as file:
        pids = [pid] + [int(child) for child in file.read().split()]
    ticks = 0
    for each in pids:
        with open(f"/proc/{each}/stat") as file:
            ticks += sum(map(int, file.read().rsplit(")", 1)[1].split()[11:13]))  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def watch_server(pid, start_at, seconds, busy):
    """How many cores the server kept busy during the load window."""
    time.sleep(max(0.0, start_at - time.time()))
    before = cpu_seconds(pid)
    time.sleep(seconds)
    busy.append((cpu_seconds(pid) - before) / seconds)


def load(url, username, password, options, server_pid=None):
    issuer = require_remote_issuer(url)
    cookie = sign_in(url, username, password)
    processes = max(1, min(options.processes, options.clients))
    shares = [list(range(options.clients))[p::processes] for p in range(processes)]
    print(f"{options.clients} clients in {processes} processes for {options.seconds} s against {url}"
          f" (issuer {issuer}); each flow + {options.calls} /api/me calls, a revocation every {options.revoke_every} flows")
    start_at = time.time() + 1 + 0.2 * options.clients  # after every client has registered
    busy = []
    if server_pid:
        threading.Thread(target=watch_server, args=(server_pid, start_at, options.seconds, busy), daemon=True).start()
    with ProcessPoolExecutor(processes) as pool:
        results = list(pool.map(run_process, [url] * processes, shares, [cookie] * processes,
                                [start_at] * processes, [options] * processes))
    if busy:
        print(f"server CPU during the load: {busy[0]:.2f} cores of {os.cpu_count()}")
    return report(results, options.seconds)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_answering(process, url, log):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"The server exited with {process.returncode}:\n{open(log).read()}")
        connections = Connections(url, iter(()))
        if connections.send(connections.main, "GET", "/.well-known/oauth-authorization-server")[0] == 200:
            return
        time.sleep(0.2)
    raise SystemExit(f"The server did not answer within 30 s:\n{open(log).read()}")


def psql(command):
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", command], check=True, capture_output=True)


@contextlib.contextmanager
def database(kind, options):
    """Settings for a fresh database: a SQLite file in the instance folder, or a PostgreSQL database
    and a Redis database for the limiter (which must be empty), dropped and cleaned afterwards."""
    if kind == "waitress":
        yield {}
        return
    import redis
    name, limiter = f"keyfob_load_{secrets.token_hex(4)}", redis.Redis(host="127.0.0.1", db=options.redis_db)
    if limiter.dbsize():
        raise SystemExit(f"Redis database {options.redis_db} is not empty: choose another with --redis-db")
    psql(f"CREATE DATABASE {name}")
    try:
        yield {"KEYFOB_DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{name}",
               "KEYFOB_RATELIMIT_STORAGE_URI": f"redis://127.0.0.1:6379/{options.redis_db}"}
    finally:
        for key in limiter.scan_iter("LIMITS*"):
            limiter.delete(key)
        psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@contextlib.contextmanager
def started(kind, options):
    """A server of the kind asked for, with a user `load` (password `pw`), on a free port."""
    instance = tempfile.mkdtemp(prefix="keyfob-load-")
    port, log = free_port(), os.path.join(instance, "server.log")
    try:
        with database(kind, options) as settings:
            env = {name: value for name, value in os.environ.items() if not name.startswith("KEYFOB_")}
            env.update(KEYFOB_INSTANCE_PATH=instance, KEYFOB_ISSUER=ISSUER, KEYFOB_SECRET_KEY=secrets.token_urlsafe(48),
                       **settings)
            env["PYTHONPATH"] = options.source  # the checkout served, ahead of the installed one
            added = subprocess.run([os.path.join(BIN, "keyfob"), "user", "add", "load"], input="password1\npassword1\n", text=True,
                                   env=env, cwd=options.source, capture_output=True)
            if added.returncode:
                raise SystemExit(f"keyfob user add failed:\n{added.stderr}")
            command = ([os.path.join(BIN, "keyfob"), "serve", "--port", str(port)] if kind == "waitress" else
                       [os.path.join(BIN, "gunicorn"), "-w", str(options.workers), "-b", f"127.0.0.1:{port}",
                        "app:create_app()"])
            with open(log, "w") as output:
                server = subprocess.Popen(command, env=env, cwd=options.source, stdout=output, stderr=subprocess.STDOUT)
            try:
                url = f"http://127.0.0.1:{port}"
                wait_until_answering(server, url, log)
                print(f"Started: {' '.join(command)} ({'SQLite' if kind == 'waitress' else 'PostgreSQL, Redis'})")
                yield url, server.pid
            finally:
                server.terminate()
                server.wait(timeout=30)
                if options.keep_log:
                    shutil.copy(log, options.keep_log)
    finally:
        shutil.rmtree(instance, ignore_errors=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running Keyfob, e.g. http://127.0.0.1:8000")
    parser.add_argument("--username", help="an existing user (keyfob user add NAME)")
    parser.add_argument("--password")
    parser.add_argument("--start", choices=("waitress", "gunicorn"),
                        help="start the server: keyfob serve on SQLite, or gunicorn on PostgreSQL and Redis")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (default 4)")
    parser.add_argument("--redis-db", type=int, default=13, help="an empty Redis database for --start gunicorn")
    parser.add_argument("--source", default=REPOSITORY, help="the Keyfob checkout --start serves (default: this one)")
    parser.add_argument("--keep-log", help="copy the started server's log here")
    parser.add_argument("--clients", type=int, default=8, help="concurrent load clients (default 8)")
    parser.add_argument("--processes", type=int, default=2, help="client processes sharing them (default 2)")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--calls", type=int, default=4, help="/api/me calls after each flow (default 4)")
    parser.add_argument("--revoke-every", type=int, default=4, help="revoke a token every this many flows")
    options = parser.parse_args()
    if not 0 < options.clients <= 250:
        parser.error("--clients must be 1 to 250 (each has its own 127.N.0.0/16 source addresses)")
    if options.start:
        with started(options.start, options) as (url, server_pid):
            errors, lost = load(url, "load", "password1", options, server_pid)
    elif options.url and options.username and options.password is not None:
        errors, lost = load(options.url.rstrip("/"), options.username, options.password, options)
    else:
        parser.error("give --url, --username and --password, or --start")
    sys.exit(1 if errors or lost else 0)


if __name__ == "__main__":
    main()
