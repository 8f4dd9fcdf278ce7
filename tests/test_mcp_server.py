"""examples/mcp_server.py as its users run it: `keyfob serve`, the example in a subprocess as the resource server
`keyfob client add Notes --resource-server URL` made, and the MCP Python SDK client signing in through Keyfob's real
forms. Nothing is mocked."""
import importlib.util
import time

import anyio
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from live import MCP_SERVER_EXAMPLE, TIMEOUT, Browser, SdkClient, assert_passes_keyfob_on, redeem, register, revoke


def example_module():
    spec = importlib.util.spec_from_file_location("mcp_server_example", MCP_SERVER_EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CACHE_SECONDS = example_module().CACHE_SECONDS


async def call(session, tool, **arguments):
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, result
    return result.structured_content


@pytest.mark.anyio
async def test_sdk_client_signs_in_steps_up_for_write_and_loses_access_on_revocation(keyfob, notes):
    sdk = SdkClient(keyfob, notes, "Notes test")
    metadata = notes.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")
    async with sdk.http() as http:
        async with streamable_http_client(notes, http_client=http) as (read, write), \
                ClientSession(read, write) as session:
            with anyio.fail_after(60):
                await session.initialize()
                me = await call(session, "whoami")
                client_id = sdk.storage.client_info.client_id
                assert me.pop("sub").isdigit()
                assert me == {"username": "alice", "client_id": client_id, "scope": "read"}
                assert sdk.statuses()[:5] == [
                    ("POST", notes, 401), ("GET", metadata, 200),
                    ("GET", f"{keyfob}/.well-known/oauth-authorization-server", 200),
                    ("POST", f"{keyfob}/oauth/clients", 201), ("POST", f"{keyfob}/oauth/token", 200)]
                assert sdk.answers[0]["iss"] == keyfob

                # A read grant: add_note is refused with the scopes it needs, the SDK steps up, and it succeeds.
                before_step_up = time.monotonic()
                assert await call(session, "add_note", text="Buy milk") == {"notes": 1}
                (refusal,) = [entry for entry in sdk.sent if entry[0] >= before_step_up and entry[3] == 403]
                assert refusal[4] == (
                    f'Bearer error="insufficient_scope", scope="read write", resource_metadata="{metadata}"')
                assert ("POST", f"{keyfob}/oauth/token", 200) in sdk.statuses(since=before_step_up)
                assert sdk.storage.tokens.scope == "read write"
                assert (await call(session, "whoami"))["scope"] == "read write"

                # Revoked at Keyfob: refused here within the cache's bound, after which the SDK signs in again.
                token = sdk.storage.tokens.access_token
                assert revoke(keyfob, token, client_id).status_code == 200
                revoked_at = time.monotonic()
                while ("POST", notes, 401) not in sdk.statuses(since=revoked_at):
                    assert time.monotonic() - revoked_at < CACHE_SECONDS + 1, "the revoked token still works"
                    await call(session, "whoami")
                    await anyio.sleep(0.25)
                assert sdk.storage.tokens.access_token != token
                assert len(sdk.answers) == 3
                assert await call(session, "add_note", text="Buy bread") == {"notes": 2}

    refused = raw_call(notes, token, "whoami")
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]


def raw_call(notes, token, tool, **arguments):
    """One tools/call outside any MCP session: the auth layer answers before the session is looked for."""
    return httpx2.post(notes, timeout=TIMEOUT, json={
        "jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": arguments}},
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream"})


def keyfob_token(keyfob, scope, **params):
    """A token from Keyfob's forms for a newly registered public client, with extra authorize parameters."""
    client_id = register(keyfob).json()["client_id"]
    with Browser(keyfob) as browser:
        code, verifier = browser.authorize(client_id, scope=scope, **params)
    response = redeem(keyfob, client_id, code, verifier, **params)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def test_token_bound_to_keyfobs_own_api_is_refused(keyfob, notes):
    token = keyfob_token(keyfob, "read write", resource=keyfob)
    assert httpx2.get(f"{keyfob}/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    refused = raw_call(notes, token, "whoami")
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]


def test_metadata_names_keyfob_and_requests_without_a_token_are_challenged(keyfob, notes):
    metadata = httpx2.get(notes.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")).json()
    assert metadata["resource"] == notes
    assert metadata["authorization_servers"] == [keyfob]
    assert metadata["scopes_supported"] == ["read"]

    challenged = httpx2.post(notes, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert challenged.status_code == 401
    assert 'resource_metadata="' in challenged.headers["WWW-Authenticate"]


def test_the_example_passes_keyfobs_endpoints_on_for_clients_that_ignore_the_metadata(keyfob, notes):
    """Claude, without metadata, looks for /authorize, /token and /register on the MCP server's own host."""
    assert_passes_keyfob_on(keyfob, notes)
