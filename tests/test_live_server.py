"""Keyfob as its users run it: `keyfob serve` in a subprocess, spoken to over real HTTP by the MCP
Python SDK, a scripted browser, and racing threads. Nothing of ours is mocked.

One server serves the whole module with its rate limits on: the tests stay under 20 token requests,
10 registrations and 5 sign-ins a minute from 127.0.0.1, so add to them with care."""
import threading

import anyio
import httpx2
import pytest

from live import TIMEOUT, Browser, SdkClient, keyfob_serving, me, redeem, register, revoke


@pytest.fixture(scope="module")
def server(tmp_path_factory, served_database):
    """The base URL (and issuer) of a real `keyfob serve` with one user, alice."""
    with keyfob_serving(tmp_path_factory.mktemp("instance"), settings=served_database) as base:
        yield base


@pytest.fixture(scope="module")
def browser(server):
    """A browser with cookies, signed in as alice."""
    with Browser(server) as browser:
        assert browser.sign_in().status_code == 302
        yield browser


@pytest.mark.anyio
async def test_mcp_python_sdk_client_completes_the_whole_flow(server):
    sdk = SdkClient(server, f"{server}/api/me", "SDK test")
    async with sdk.http() as http:
        with anyio.fail_after(30):
            response = await http.get(f"{server}/api/me")

    client_id = sdk.storage.client_info.client_id
    assert response.status_code == 200
    # The 401 named the scope /api/me needs, so the SDK asked for exactly that (MCP: the challenge wins).
    assert response.json() == {"user": "alice", "scope": "read", "client_id": client_id}
    assert sdk.statuses(base=server) == [
        ("GET", "/api/me", 401), ("GET", "/.well-known/oauth-protected-resource", 200),
        ("GET", "/.well-known/oauth-authorization-server", 200), ("POST", "/oauth/clients", 201),
        ("POST", "/oauth/token", 200), ("GET", "/api/me", 200)]
    assert [answer["iss"] for answer in sdk.answers] == [server]
    assert str(sdk.provider.context.oauth_metadata.issuer) == server
    assert sdk.storage.client_info.issuer == server


@pytest.mark.parametrize("racers", [2, 8])
def test_concurrent_redemptions_of_one_code_yield_one_token_which_the_replay_revokes(server, browser, racers):
    client_id = register(server).json()["client_id"]
    code, verifier = browser.authorize(client_id)
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
    client_id = register(server).json()["client_id"]
    code, verifier = browser.authorize(client_id)
    first, replay, third = (redeem(server, client_id, code, verifier) for _ in range(3))
    assert (first.status_code, replay.status_code) == (200, 400)
    assert third.status_code == 400, third.text
    assert third.json()["error"] == "invalid_grant"


def test_revoked_token_is_refused_on_the_next_request(server, browser):
    client_id = register(server).json()["client_id"]
    token = redeem(server, client_id, *browser.authorize(client_id)).json()["access_token"]
    assert me(server, token).json()["user"] == "alice"

    assert revoke(server, token, client_id).status_code == 200
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
