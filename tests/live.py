"""Keyfob served for real (`keyfob serve` or gunicorn in a subprocess, started as a user starts them), and spoken
to over real HTTP: by a Browser that fills in its forms, by an MCP client's calls to its endpoints and the MCP
SDK's client, and by the HTTPS server that publishes Client ID Metadata Documents for Keyfob to fetch."""
import contextlib
import datetime
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlencode

import anyio
import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

from actions import PASSWORD, REDIRECT_URI, Actions
from models import s256

KEYFOB = Path(sys.executable).parent / "keyfob"
GUNICORN = Path(sys.executable).parent / "gunicorn"
MCP_SERVER_EXAMPLE = Path(__file__).parent.parent / "examples" / "mcp_server.py"
DOCUMENT_CALLBACK = "http://127.0.0.1/callback"  # a client document's, listed without a port as Claude Code's is
TIMEOUT = 10


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_answering(process, url, log, name="keyfob serve"):
    """Poll url until it answers 200 (at most TIMEOUT seconds), failing with the process's log if it dies."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{name} exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx2.get(url, timeout=1).status_code == 200:
                return
        except httpx2.TransportError:
            time.sleep(0.1)
    pytest.fail(f"{name} did not answer within {TIMEOUT} s:\n{log.read_text()}")


def stop(process):
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def keyfob_env(instance, settings=None):
    """The environment a `keyfob` command runs in: none of the caller's KEYFOB_ settings, only these."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("KEYFOB_")}
    return {**env, "KEYFOB_INSTANCE_PATH": str(instance), **(settings or {})}


def add_user(instance, name="alice", password=PASSWORD, settings=None):
    """`keyfob user add`, the password typed twice."""
    added = subprocess.run([KEYFOB, "user", "add", name], input=f"{password}\n{password}\n",
                           env=keyfob_env(instance, settings), capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr


@contextlib.contextmanager
def serving(instance, settings=None, workers=None, log=None):
    """`keyfob serve`, or `gunicorn -w workers 'app:create_app()'` when workers are given, on a free port in a
    process group of its own, writing to log (by default named for the program and the port): its base URL and
    process. On the way out it is stopped, and whatever is left of its group (workers a killed master left
    behind) killed."""
    port = free_port()
    name, command = ("keyfob serve", [KEYFOB, "serve", "--port", str(port)]) if workers is None else (
        "gunicorn", [GUNICORN, "-w", str(workers), "-b", f"127.0.0.1:{port}", "app:create_app()"])
    log = log or instance / f"{name.split()[0]}-{port}.log"
    with open(log, "w") as output:
        process = subprocess.Popen(command, env=keyfob_env(instance, settings), stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(process, f"{base}/.well-known/oauth-authorization-server", log, name)
        yield base, process
    finally:
        stop(process)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def keyfob_serving(instance, users=(("alice", PASSWORD),), settings=None):
    """Add the users with `keyfob user add`, run `keyfob serve` on a free port, yield its base URL.
    `settings` are more environment variables for every `keyfob` command, e.g. KEYFOB_DATABASE_URL."""
    for name, password in users:
        add_user(instance, name, password, settings)
    with serving(instance, settings, log=instance / "serve.log") as (base, _):
        yield base


@contextlib.contextmanager
def example_serving(command, instance, mcp_url, folder, settings=None, cwd=None):
    """An example MCP server (command, run in cwd) introspecting at the Keyfob of instance as the resource server
    `keyfob client add Notes --resource-server mcp_url` made, until it answers at mcp_url's protected resource
    metadata."""
    added = subprocess.run([KEYFOB, "client", "add", "Notes", "--resource-server", mcp_url],
                           env=keyfob_env(instance, settings), capture_output=True, text=True, timeout=30)
    assert added.returncode == 0, added.stderr
    credentials = dict(re.findall(r"^(client_id|client_secret): (\S+)$", added.stdout, re.MULTILINE))
    env = {**keyfob_env(instance), "MCP_SERVER_CLIENT_ID": credentials["client_id"],
           "MCP_SERVER_CLIENT_SECRET": credentials["client_secret"]}
    log = folder / "notes.log"
    with open(log, "w") as output:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        metadata = mcp_url.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")
        wait_until_answering(process, metadata, log, name=" ".join(map(str, command[:2])))
        yield
    finally:
        stop(process)


class HiddenInputs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.values = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "input" and attrs.get("type") == "hidden":
            self.values[attrs["name"]] = attrs.get("value") or ""


def hidden_inputs(html):
    parser = HiddenInputs()
    parser.feed(html)
    return parser.values


class Browser(httpx2.Client):
    """A person's browser at a live Keyfob: it keeps cookies, posts forms with the hidden inputs the page gave it,
    and connects from local_address when given one (rate limits count per address)."""

    def __init__(self, base="", local_address=None, timeout=TIMEOUT, **options):
        super().__init__(base_url=base, timeout=timeout, transport=httpx2.HTTPTransport(local_address=local_address),
                         **options)

    def sign_in(self, username="alice", password=PASSWORD):
        form = hidden_inputs(self.get("/session/new").text)
        return self.post("/session", data={**form, "username": username, "password": password})

    def approve(self, url, approve_at="", username="alice"):
        """Open an authorization URL, signing in as username when sent to, and press Approve (at approve_at, when
        another server is to take the form): the query the app is sent back with."""
        page = self.get(url)
        if page.status_code == 302:
            assert page.headers["location"] == "/session/new"
            signed_in = self.sign_in(username)
            assert signed_in.status_code == 302
            assert signed_in.headers["location"].startswith(("/oauth/authorization/new?", "/authorize?"))
            page = self.get(signed_in.headers["location"])
        assert page.status_code == 200, page.text
        form = hidden_inputs(page.text)
        answer = self.post(f"{approve_at}/oauth/authorization", data={**form, "decision": "approve"})
        assert answer.status_code == 302, answer.text
        assert answer.headers["location"].startswith(form["redirect_uri"] + "?")
        return Actions.query(answer)

    def authorize(self, client_id, redirect_uri=REDIRECT_URI, scope="read", consent_at="", approve_at="",
                  username="alice", **params):
        """Ask for a code for client_id, with PKCE, and approve it as username: (code, verifier)."""
        verifier = secrets.token_urlsafe(48)
        params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "state": "s",
                  "code_challenge": s256(verifier), "code_challenge_method": "S256", "scope": scope, **params}
        answer = self.approve(f"{consent_at}/oauth/authorization/new?{urlencode(params)}", approve_at, username)
        return answer["code"], verifier


def mcp_client(local_address=None, timeout=TIMEOUT):
    """An MCP client's connection to Keyfob's endpoints: a fresh one for each call, without cookies, from
    local_address when given."""
    return httpx2.Client(timeout=timeout, transport=httpx2.HTTPTransport(local_address=local_address))


def register(base, redirect_uri=REDIRECT_URI, local_address=None, timeout=TIMEOUT, client_name="Live test"):
    """Register a public client (RFC 7591) as an MCP client does: the answer."""
    with mcp_client(local_address, timeout) as app:
        return app.post(f"{base}/oauth/clients", json={"client_name": client_name, "redirect_uris": [redirect_uri]})


def redeem(base, client_id, code, verifier, redirect_uri=REDIRECT_URI, local_address=None, timeout=TIMEOUT,
           **params):
    """Exchange a code for a token as an MCP client does: the answer."""
    with mcp_client(local_address, timeout) as app:
        return app.post(f"{base}/oauth/token", data={"grant_type": "authorization_code", "client_id": client_id,
                                                      "code": code, "code_verifier": verifier,
                                                      "redirect_uri": redirect_uri, **params})


def me(base, token):
    return httpx2.get(f"{base}/api/me", headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)


def revoke(base, token, client_id):
    return httpx2.post(f"{base}/oauth/revocation", data={"token": token, "client_id": client_id}, timeout=TIMEOUT)


def assert_passes_keyfob_on(keyfob, mcp_url):
    """An example MCP server sends /authorize on to Keyfob and passes /token and /register through to it, for clients
    (Claude, without metadata) that look for them on the MCP server's own host."""
    base = mcp_url.removesuffix("/mcp")
    query = "client_id=x&redirect_uri=http://127.0.0.1/cb?a=1&state=y"  # an unencoded ? in a value, as clients send
    sent_on = httpx2.get(f"{base}/authorize?{query}", timeout=TIMEOUT)
    assert sent_on.status_code == 302 and sent_on.headers["Location"] == f"{keyfob}/oauth/authorization/new?{query}"
    registered = httpx2.post(f"{base}/register", json={"redirect_uris": ["http://127.0.0.1/cb"]}, timeout=TIMEOUT)
    assert registered.status_code == 201 and registered.json()["redirect_uris"] == ["http://127.0.0.1/cb"]
    refused = httpx2.post(f"{base}/token", data={"grant_type": "authorization_code"}, timeout=TIMEOUT)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_request"
    assert refused.headers["Cache-Control"] == "no-store"


class MemoryStorage:
    """The MCP Python SDK's TokenStorage, kept in memory."""

    def __init__(self):
        self.tokens = self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


class SdkClient:
    """The MCP Python SDK's OAuth client for a resource, approving each authorization in a fresh Browser at keyfob
    as alice, and recording every response it gets as (monotonic time, method, URL, status, WWW-Authenticate)."""

    def __init__(self, keyfob, resource, client_name, grant_types=("authorization_code", "refresh_token"),
                 **options):
        self.keyfob, self.storage, self.answers, self.sent = keyfob, MemoryStorage(), [], []
        metadata = OAuthClientMetadata(client_name=client_name, redirect_uris=[REDIRECT_URI], response_types=["code"],
                                       grant_types=list(grant_types))
        self.provider = OAuthClientProvider(resource, metadata, self.storage, self.redirect, self.callback, **options)

    def http(self):
        """An httpx2 client that authorizes through the SDK and records what it is answered."""
        return httpx2.AsyncClient(auth=self.provider, timeout=TIMEOUT, event_hooks={"response": [self.record]})

    async def redirect(self, authorization_url):
        with Browser(self.keyfob) as browser:
            self.answers.append(await anyio.to_thread.run_sync(browser.approve, authorization_url))

    async def callback(self):
        answer = self.answers[-1]
        return AuthorizationCodeResult(code=answer["code"], state=answer["state"], iss=answer["iss"])

    async def record(self, response):
        request = response.request
        self.sent.append((time.monotonic(), request.method, str(request.url).split("?")[0], response.status_code,
                          response.headers.get("WWW-Authenticate")))

    def statuses(self, since=0, base=""):
        """(method, URL without its query or base, status) of each response recorded since a monotonic time."""
        return [(method, url.removeprefix(base), status) for at, method, url, status, _ in self.sent if at >= since]


def certificate(subject, issuer_name, key, signer, ca=False, names=()):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(name) for name in names]), False)
    return builder.sign(signer, hashes.SHA256())


class Documents(BaseHTTPRequestHandler):
    """Answers each path with what the test put in `routes`: (status, headers, body, seconds to wait first,
    seconds to wait between the body's bytes)."""
    routes, hits = {}, {}

    def do_GET(self):
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        status, headers, body, delay, trickle = self.routes.get(self.path, (404, {}, b"", 0, 0))
        time.sleep(delay)
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        try:
            for start in range(0, len(body), 1 if trickle else len(body) or 1):
                self.wfile.write(body[start:start + (1 if trickle else len(body))])
                self.wfile.flush()
                time.sleep(trickle)
        except OSError:
            pass

    def log_message(self, *args):
        pass
