"""Keyfob's hot paths against a plain Flask app, each called as a WSGI app (no test client).

    .venv/bin/python bench/bench.py [--rounds 7] [--tokens 1000000]

Prints req/s and p50/p99 for a plain Flask app's one JSON route (a separate app, no extensions), the same route
registered on Keyfob's app (so the cost of Keyfob's per-request hooks shows), the bearer-protected /api/me,
introspection by a resource server, and flows/s for a whole flow (authorization GET → consent POST → token
POST), each as a ratio to the plain route measured beside it (the median over short slices that alternate the
two), then the bearer ratio again with --tokens rows stored; and each speed target beside its figure.
"""
import argparse
import base64
import io
import logging
import os
import re
import secrets
import statistics
import sys
import tempfile
import time
from urllib.parse import parse_qs, urlencode, urlsplit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from flask import Flask  # noqa: E402

from app import create_app  # noqa: E402
from models import AccessToken, Client, User, db, s256  # noqa: E402

REDIRECT_URI = "http://127.0.0.1:9/callback"
NOTES = "http://notes.example/mcp"  # the resource server that introspects


def plain_flask():
    """The yardstick: a Flask app with one JSON route and nothing else."""
    plain = Flask("plain")
    plain.add_url_rule("/bench/bare", "bare", lambda: {"user": "alice", "scope": "read", "client_id": None})
    return plain


class Caller:
    """Calls the WSGI app with a hand-built environ, the way a server would, and adds up the time the app takes
    (from the call to the response's last byte and close), which is what the benchmark compares: the time the
    benchmark itself spends building requests and reading pages (a flow's PKCE values, its regex) is left out."""

    def __init__(self, app):
        self.app, self.cookie, self.address, self.spent = app, "", 0, 0.0

    def __call__(self, method, path, query="", body=b"", headers=(), browser=True):
        self.address = (self.address + 1) % 4096  # many addresses: rate limits are counted, never hit
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1",
                   "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http",
                   "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr, "wsgi.multithread": True,
                   "wsgi.multiprocess": False, "wsgi.run_once": False, "CONTENT_LENGTH": str(len(body)),
                   "REMOTE_ADDR": f"10.{self.address >> 16 & 255}.{self.address >> 8 & 255}.{self.address & 255}",
                   "HTTP_COOKIE": self.cookie if browser else ""}
        if body:
            environ["CONTENT_TYPE"] = "application/x-www-form-urlencoded"
        environ.update(headers)
        status, started = {}, time.perf_counter()
        chunks = self.app(environ, lambda code, response_headers, exc_info=None: status.update(
            code=int(code[:3]), headers=response_headers))
        try:
            payload = b"".join(chunks)
        finally:
            getattr(chunks, "close", lambda: None)()
            self.spent += time.perf_counter() - started
        for name, value in status["headers"]:
            if name == "Set-Cookie" and value.startswith("keyfob_session="):
                self.cookie = value.split(";")[0]
        return status["code"], dict(status["headers"]), payload


def setup(directory):
    # The audit trail's lines are formatted and written as in production, to /dev/null rather than the report.
    logging.getLogger("keyfob.audit").addHandler(logging.StreamHandler(open(os.devnull, "w")))
    # Served on its own host name, as in production (on a loopback host each connection signs in again).
    app = create_app({"SECRET_KEY": "bench-" + "k" * 40, "ISSUER": "http://keyfob.example",
                      "DATABASE_URL": f"sqlite:///{directory}/keyfob.db", "RATELIMIT_ENABLED": True})
    app.add_url_rule("/bench/bare", "bare", lambda: {"user": "alice", "scope": "read", "client_id": None})
    user = User.create(username="alice", password_digest=User.digest_of("pw"))
    oauth_client = Client.create(name="Bench", redirect_uris=[REDIRECT_URI], dynamically_registered=True)
    token = AccessToken.issue(user, oauth_client).token
    notes = Client.registered_by_operator("Notes", [], resource_server=NOTES)
    notes_token = AccessToken.issue(user, oauth_client, resource=NOTES).token
    basic = base64.b64encode(f"{notes.client_id}:{notes.secret}".encode()).decode()
    introspection = (urlencode({"token": notes_token}).encode(), {"HTTP_AUTHORIZATION": f"Basic {basic}"})
    call = Caller(app)
    form = call("GET", "/session/new")[2].decode()
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)[1]
    assert call("POST", "/session", body=urlencode({"username": "alice", "password": "pw", "csrf_token": csrf}).encode())[0] == 302
    return app, call, oauth_client.client_id, token, introspection


def flow(call, client_id):
    verifier, state = secrets.token_urlsafe(48), secrets.token_urlsafe(16)
    params = {"client_id": client_id, "redirect_uri": REDIRECT_URI, "response_type": "code", "state": state,
              "code_challenge": s256(verifier), "code_challenge_method": "S256", "scope": "read"}
    status, _, page = call("GET", "/oauth/authorization/new", query=urlencode(params))
    assert status == 200 and b"Approve" in page, status
    csrf = re.search(rb'name="csrf_token" value="([^"]+)"', page)[1].decode()
    status, headers, _ = call("POST", "/oauth/authorization",
                              body=urlencode({**params, "decision": "approve", "csrf_token": csrf}).encode())
    answer = parse_qs(urlsplit(headers["Location"]).query)
    assert status == 302 and answer["state"] == [state]
    status, _, body = call("POST", "/oauth/token", body=urlencode({
        "grant_type": "authorization_code", "client_id": client_id, "code": answer["code"][0],
        "code_verifier": verifier, "redirect_uri": REDIRECT_URI}).encode())
    assert status == 200 and b"access_token" in body, body


def timed(target, count):
    """The app's time for each of count runs of a target (its caller and the operation that uses it)."""
    caller, operation = target
    latencies = []
    for _ in range(count):
        before = caller.spent
        operation()
        latencies.append(caller.spent - before)
    return latencies


def summary(latencies):
    ordered = sorted(latencies)
    return {"rate": len(ordered) / sum(ordered), "p50": ordered[len(ordered) // 2] * 1e3,
            "p99": ordered[int(len(ordered) * 0.99)] * 1e3}


def measure(rounds, plain, targets, seconds=1.0):
    """Each round gives every target `seconds`, in slices that alternate it with the plain route (a slice of each
    takes about as long), so that a host busy for a moment slows both sides of a ratio alike. Returns each target's
    latencies per round and its ratios to the plain route per slice."""
    latencies = {name: [] for name in targets}
    ratios = {name: [] for name in targets}
    names = list(targets)
    for round_number in range(rounds):
        for name in names[round_number % len(names):] + names[:round_number % len(names)]:
            *operation, batch = targets[name]
            plain_batch = max(1, round(batch * statistics.median(timed(operation, 3)) /
                                       statistics.median(timed(plain, 20))))
            round_latencies, deadline = [], time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                plain_slice, slice_ = timed(plain, plain_batch), timed(operation, batch)
                ratios[name].append((sum(plain_slice) / len(plain_slice)) / (sum(slice_) / len(slice_)))
                round_latencies += slice_
            latencies[name].append(round_latencies)
    return latencies, ratios


def report(latencies, ratios, rounds):
    for name, runs in latencies.items():
        runs = [summary(run) for run in runs]
        print(f"  {name:<20} {statistics.median(r['rate'] for r in runs):>9,.0f}/s   p50 "
              f"{statistics.median(r['p50'] for r in runs):6.3f} ms   p99 {statistics.median(r['p99'] for r in runs):6.3f} ms"
              f"   ÷ plain {statistics.median(ratios[name]):5.2f} (quartiles {quartiles(ratios[name])},"
              f" {len(ratios[name])} slices in {rounds} rounds)")
    return {name: statistics.median(values) for name, values in ratios.items()}


def quartiles(values):
    low, _, high = statistics.quantiles(values, n=4)
    return f"{low:.2f}–{high:.2f}"


def target(label, figure, goal, met):
    print(f"  {label:<58} {figure:>8}   target {goal:<8} {'met' if met else 'NOT met'}")


def store_tokens(user_id, count):
    """Bulk-insert personal tokens (random digests) until the table holds count rows."""
    missing = count - AccessToken.select().count()
    stamp = int(time.time())
    with db.atomic():
        for start in range(0, missing, 50_000):
            rows = [(secrets.token_hex(32), "kf_pat_bench", user_id, "read", stamp)
                    for _ in range(min(50_000, missing - start))]
            db.execute_sql("INSERT INTO access_tokens (digest, display_prefix, user_id, scope, created_at) VALUES "
                           + ",".join(["(?, ?, ?, ?, ?)"] * len(rows)), [value for row in rows for value in row])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=1_000_000, help="rows for the large-table bearer run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as directory:  # a checkpoint may outlive db.close()
        os.environ["KEYFOB_INSTANCE_PATH"] = directory
        app, call, client_id, token, (introspected, credentials) = setup(directory)
        plain_call, bearer = Caller(plain_flask()), {"HTTP_AUTHORIZATION": f"Bearer {token}"}
        plain = (plain_call, lambda: plain_call("GET", "/bench/bare", browser=False))
        targets = {
            "plain Flask": (*plain, 50),
            "bare on Keyfob": (call, lambda: call("GET", "/bench/bare", browser=False), 50),
            "bearer /api/me": (call, lambda: call("GET", "/api/me", headers=bearer, browser=False), 50),
            "introspection": (call, lambda: call("POST", "/oauth/introspection", body=introspected,
                                                 headers=credentials, browser=False), 50)}
        for _ in range(200):  # warm-up
            for _, operation, _ in targets.values():
                operation()
        flow(call, client_id)

        store_tokens(1, 1_000)
        print(f"Keyfob, WSGI called directly, SQLite WAL, {AccessToken.select().count():,} tokens stored")
        ratios = report(*measure(args.rounds, plain, {**targets, "flow": (call, lambda: flow(call, client_id), 3)}),
                        args.rounds)

        store_tokens(1, args.tokens)
        print(f"\nThe same bearer check with {AccessToken.select().count():,} tokens stored")
        large = report(*measure(args.rounds, plain, {"bearer /api/me": targets["bearer /api/me"]}), args.rounds)
        kept = large["bearer /api/me"] / ratios["bearer /api/me"]

        print("\nTargets (ratios to the plain Flask route, medians over paired slices)")
        target("Keyfob's bare route ÷ plain Flask (the hooks' cost)", f"{ratios['bare on Keyfob']:.2f}",
               "≥ 0.9", ratios["bare on Keyfob"] >= 0.9)
        target("bearer /api/me ÷ plain Flask", f"{ratios['bearer /api/me']:.2f}", "≥ 0.7",
               ratios["bearer /api/me"] >= 0.7)
        target(f"bearer at {args.tokens:,} tokens ÷ at 1,000", f"{kept:.2f}", "≥ 0.95", kept >= 0.95)
        target("introspection ÷ plain Flask", f"{ratios['introspection']:.2f}", "≥ 0.5", ratios["introspection"] >= 0.5)
        target("one whole flow, in plain-Flask requests", f"{1 / ratios['flow']:.1f}", "≤ 30", 1 / ratios["flow"] <= 30)
        db.close()


if __name__ == "__main__":
    main()
