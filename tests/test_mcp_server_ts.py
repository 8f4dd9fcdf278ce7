"""examples/mcp_server_ts/ as its users run it: `npm ci`, then `node server.mjs` as the resource server made by
`keyfob client add NAME --resource-server URL`, in front of a real `keyfob serve` that issues tokens for it. The MCP TypeScript SDK client
(tests/ts/client_flow.mjs) and the MCP Python SDK client sign in through Keyfob's real forms and call its tools.
Its bearer check is the TypeScript SDK's own requireBearerAuth, which refuses a token without an expiry."""
import json
import shutil
import socket
import subprocess
from pathlib import Path

import anyio
import httpx2
import pytest
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client

from actions import PASSWORD
from live import MCP_SERVER_EXAMPLE, TIMEOUT, SdkClient, assert_passes_keyfob_on, example_serving, keyfob_env

EXAMPLE = MCP_SERVER_EXAMPLE.parent / "mcp_server_ts"
TS = Path(__file__).parent / "ts"

pytestmark = pytest.mark.skipif(not (shutil.which("node") and shutil.which("npm")),
                                reason="the TypeScript example needs Node.js: node and npm are not on PATH")


@pytest.fixture(scope="module")
def notes(keyfob, keyfob_instance, notes_url, tmp_path_factory, served_database):
    """examples/mcp_server_ts/server.mjs, installed with `npm ci`, introspecting at Keyfob as the resource server."""
    installed = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=EXAMPLE, capture_output=True, text=True,
                               timeout=300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    command = ["node", "server.mjs", "--port", str(httpx2.URL(notes_url).port), "--keyfob", keyfob]
    with example_serving(command, keyfob_instance, notes_url, tmp_path_factory.mktemp("notes"), served_database,
                         cwd=EXAMPLE):
        yield notes_url


@pytest.fixture(scope="module")
def typescript_flow(node_modules, keyfob, notes, keyfob_instance):
    """What tests/ts/client_flow.mjs printed after signing in as alice, calling whoami and stepping up."""
    ran = subprocess.run(["node", "client_flow.mjs", notes, "--username", "alice"], cwd=TS, timeout=90,
                         capture_output=True, text=True, env={**keyfob_env(keyfob_instance), "KEYFOB_PASSWORD": PASSWORD})
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout)


def test_typescript_sdk_client_reads_and_steps_up_to_write_on_the_typescript_server(typescript_flow, notes):
    metadata = notes.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")
    assert typescript_flow["whoami"]["scope"] == "read" and typescript_flow["whoami"]["username"] == "alice"
    assert typescript_flow["add_note_refusals"] == [{"status": 403, "www_authenticate": (
        f'Bearer error="insufficient_scope", scope="read write", resource_metadata="{metadata}"')}]
    assert typescript_flow["add_note"] == {"notes": 1}
    assert typescript_flow["authorizations"][0]["resource"] == notes


@pytest.mark.anyio
async def test_python_sdk_client_calls_the_typescript_server(keyfob, notes):
    sdk = SdkClient(keyfob, notes, "Python SDK against the TypeScript server")
    async with sdk.http() as http:
        async with streamable_http_client(notes, http_client=http) as (read, write), \
                ClientSession(read, write) as session:
            with anyio.fail_after(60):
                await session.initialize()
                me = (await session.call_tool("whoami", {})).structured_content
                assert me["username"] == "alice" and me["scope"] == "read"
                assert (await session.call_tool("add_note", {"text": "Buy milk"})).structured_content["notes"] >= 1
                assert sdk.storage.tokens.scope == "read write"


def test_tokens_for_another_resource_or_none_are_refused_with_the_sdks_challenge(keyfob, notes):
    refused = httpx2.post(notes, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, timeout=TIMEOUT,
                          headers={"Authorization": "Bearer kf_at_not-a-token", "Accept": "application/json"})
    assert refused.status_code == 401 and 'error="invalid_token"' in refused.headers["WWW-Authenticate"]


def test_the_typescript_server_passes_keyfobs_endpoints_on_for_clients_that_ignore_the_metadata(keyfob, notes):
    assert_passes_keyfob_on(keyfob, notes)


def test_the_typescript_server_says_how_to_start_it_and_when_it_cannot(keyfob):
    usage = subprocess.run(["node", "server.mjs", "--help"], cwd=EXAMPLE, capture_output=True, text=True, timeout=30)
    assert usage.returncode == 0 and "usage: node server.mjs" in usage.stdout
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run(["node", "server.mjs", "--port", str(port), "--keyfob", keyfob, "--client-id", "x",
                               "--client-secret", "y"], cwd=EXAMPLE, capture_output=True, text=True, timeout=30)
    assert busy.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in busy.stderr
    assert "is serving" not in busy.stdout
