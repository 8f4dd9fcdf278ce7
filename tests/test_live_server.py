"""Keyfob as its users run it: `keyfob serve` in a subprocess, spoken to over real HTTP by the MCP
Python SDK, a scripted browser, and racing threads. Nothing of ours is mocked; only s256 is imported.

One server serves the whole module with its rate limits on: the tests stay under 20 token requests,
10 registrations and 5 sign-ins a minute from 127.0.0.1, so add to them with care."""
import secrets
import threading
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urlsplit

import anyio
import httpx2
import pytest
from mcp.client.auth import OAuthClientProvider
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

from live import TIMEOUT, keyfob_serving
from models import s256

PASSWORD = "pw"
REDIRECT_URI = "http://127.0.0.1:47231/callback"  # nothing listens: the code is read from the Location


@pytest.fixture(scope="module")
def server(tmp_path_factory, served_database):
    """The base URL (and issuer) of a real `keyfob serve` with one user, alice."""
    with keyfob_serving(tmp_path_factory.mktemp("instance"), users=[("alice", PASSWORD)],
                        settings=served_database) as base:
        yield base


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
def browser(server):
    """A browser with cookies, signed in as alice."""
    with httpx2.Client(base_url=server, timeout=TIMEOUT) as browser:
        assert sign_in(browser).status_code == 302
        yield browser


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


def query(location):
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


def sign_in(browser):
    form = hidden_inputs(browser.get("/session/new").text)
    return browser.post("/session", data={**form, "username": "alice", "password": PASSWORD})


def approve(browser, authorization_url):
    """Open an authorization URL, signing in when sent to, and press Approve; the redirect's query."""
    page = browser.get(authorization_url)
    if page.status_code == 302:
        assert page.headers["location"] == "/session/new"
        signed_in = sign_in(browser)
        assert signed_in.status_code == 302 and signed_in.headers["location"].startswith("/oauth/authorization/new?")
        page = browser.get(signed_in.headers["location"])
    assert page.status_code == 200, page.text
    answer = browser.post("/oauth/authorization", data={**hidden_inputs(page.text), "decision": "approve"})
    assert answer.status_code == 302 and answer.headers["location"].startswith(REDIRECT_URI + "?")
    return query(answer.headers["location"])


def register(server):
    response = httpx2.post(f"{server}/oauth/clients", json={"client_name": "Live test", "redirect_uris": [REDIRECT_URI]})
    assert response.status_code == 201, response.text
    return response.json()["client_id"]


def redeem(server, client_id, code, verifier):
    return httpx2.post(f"{server}/oauth/token", timeout=TIMEOUT, data={
        "grant_type": "authorization_code", "client_id": client_id, "code": code,
        "code_verifier": verifier, "redirect_uri": REDIRECT_URI})


def authorization_code(server, browser, client_id):
    verifier = secrets.token_urlsafe(48)
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI, "state": "s",
              "code_challenge": s256(verifier), "code_challenge_method": "S256", "scope": "read"}
    code = approve(browser, f"/oauth/authorization/new?{urlencode(params)}")["code"]
    return code, verifier


def me(server, token):
    return httpx2.get(f"{server}/api/me", headers={"Authorization": f"Bearer {token}"})


class MemoryStorage:
    """The SDK's TokenStorage, kept in memory."""

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


@pytest.mark.anyio
async def test_mcp_python_sdk_client_completes_the_whole_flow(server):
    storage, answers, sent = MemoryStorage(), [], []

    async def redirect_handler(authorization_url):
        with httpx2.Client(base_url=server, timeout=TIMEOUT) as fresh_browser:
            answers.append(await anyio.to_thread.run_sync(approve, fresh_browser, authorization_url))

    async def callback_handler():
        answer = answers[-1]
        return AuthorizationCodeResult(code=answer["code"], state=answer["state"], iss=answer["iss"])

    async def record(response):
        sent.append((response.request.method, response.request.url.path, response.status_code))

    metadata = OAuthClientMetadata(client_name="SDK test", redirect_uris=[REDIRECT_URI], response_types=["code"],
                                   grant_types=["authorization_code", "refresh_token"])
    provider = OAuthClientProvider(f"{server}/api/me", metadata, storage, redirect_handler, callback_handler)
    async with httpx2.AsyncClient(auth=provider, timeout=TIMEOUT, event_hooks={"response": [record]}) as sdk:
        with anyio.fail_after(30):
            response = await sdk.get(f"{server}/api/me")

    client_id = storage.client_info.client_id
    assert response.status_code == 200
    # The 401 named the scope /api/me needs, so the SDK asked for exactly that (MCP: the challenge wins).
    assert response.json() == {"user": "alice", "scope": "read", "client_id": client_id}
    assert sent == [("GET", "/api/me", 401), ("GET", "/.well-known/oauth-protected-resource", 200),
                    ("GET", "/.well-known/oauth-authorization-server", 200), ("POST", "/oauth/clients", 201),
                    ("POST", "/oauth/token", 200), ("GET", "/api/me", 200)]
    assert [answer["iss"] for answer in answers] == [server]
    assert str(provider.context.oauth_metadata.issuer) == server
    assert storage.client_info.issuer == server


@pytest.mark.parametrize("racers", [2, 8])
def test_concurrent_redemptions_of_one_code_yield_one_token_which_the_replay_revokes(server, browser, racers):
    client_id = register(server)
    code, verifier = authorization_code(server, browser, client_id)
    start, responses = threading.Barrier(racers, timeout=TIMEOUT), [None] * racers

    def race(index):
        start.wait()
        responses[index] = redeem(server, client_id, code, verifier)

    threads = [threading.Thread(target=race, args=(index,)) for index in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=TIMEOUT * 2)
    assert not any(thread.is_alive() for thread in threads)

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [400] * (racers - 1), [response.text for response in responses]
    assert all(response.json()["error"] == "invalid_grant" for response in responses if response.status_code == 400)
    (winner,) = [response.json()["access_token"] for response in responses if response.status_code == 200]
    refused = me(server, winner)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]


def test_a_code_redeemed_again_after_its_replay_yields_no_new_token(server, browser):
    client_id = register(server)
    code, verifier = authorization_code(server, browser, client_id)
    first, replay, third = (redeem(server, client_id, code, verifier) for _ in range(3))
    assert (first.status_code, replay.status_code) == (200, 400)
    assert third.status_code == 400, third.text
    assert third.json()["error"] == "invalid_grant"


def test_revoked_token_is_refused_on_the_next_request(server, browser):
    client_id = register(server)
    token = redeem(server, client_id, *authorization_code(server, browser, client_id)).json()["access_token"]
    assert me(server, token).json()["user"] == "alice"

    revoked = httpx2.post(f"{server}/oauth/revocation", data={"token": token, "client_id": client_id})
    assert revoked.status_code == 200
    refused = me(server, token)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/clients", "/oauth/revocation",
                                  "/.well-known/oauth-authorization-server"])
def test_cors_preflight_succeeds_on_machine_endpoints_without_credentials(server, path):
    response = httpx2.options(f"{server}{path}", headers={
        "Origin": "http://example.test", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, mcp-protocol-version"})
    assert response.is_success
    assert response.headers["Access-Control-Allow-Origin"] in ("*", "http://example.test")
    assert "mcp-protocol-version" in response.headers["Access-Control-Allow-Headers"].lower()
    assert response.headers.get("Access-Control-Allow-Credentials") != "true"


@pytest.mark.parametrize("path", ["/oauth/authorization/new", "/session/new"])
def test_cors_is_absent_on_pages(server, path):
    response = httpx2.get(f"{server}{path}", headers={"Origin": "http://example.test"})
    assert "Access-Control-Allow-Origin" not in response.headers
