"""The MCP TypeScript SDK client (`@modelcontextprotocol/sdk`, pinned in tests/ts) against examples/mcp_server.py
and `keyfob serve`, started exactly as for tests/test_mcp_server.py (conftest's `notes` and `keyfob`).
tests/ts/client_flow.mjs signs in through Keyfob's real forms and prints what it got and everything it sent; this
module asserts on that."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from actions import PASSWORD
from live import keyfob_env

TS = Path(__file__).parent / "ts"

pytestmark = pytest.mark.skipif(not (shutil.which("node") and shutil.which("npm")),
                                reason="the MCP TypeScript SDK client needs Node.js: node and npm are not on PATH")


@pytest.fixture(scope="module")
def flow(node_modules, keyfob, notes, keyfob_instance):
    """What client_flow.mjs printed after signing in as alice, calling whoami, and stepping up for add_note."""
    ran = subprocess.run(["node", "client_flow.mjs", notes, "--username", "alice"], cwd=TS, timeout=90,
                         env={**keyfob_env(keyfob_instance), "KEYFOB_PASSWORD": PASSWORD}, capture_output=True,
                         text=True)
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout)


def test_typescript_sdk_client_signs_in_and_calls_whoami_with_a_token_for_the_mcp_server(flow, keyfob, notes):
    metadata = notes.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")
    me = dict(flow["whoami"])
    assert me.pop("sub").isdigit()
    assert me == {"username": "alice", "client_id": flow["client_id"], "scope": "read"}
    first_token = next(entry for entry in flow["sent"] if entry["url"] == f"{keyfob}/oauth/token")
    assert flow["authorizations"][0]["resource"] == first_token["body"]["resource"] == notes
    assert flow["authorizations"][0]["scope"] == "read"
    assert [(entry["method"], entry["url"], entry["status"]) for entry in flow["sent"][:4]] == [
        ("POST", notes, 401), ("GET", metadata, 200),
        ("GET", f"{keyfob}/.well-known/oauth-authorization-server", 200), ("POST", f"{keyfob}/oauth/clients", 201)]


def test_typescript_sdk_client_steps_up_to_write_after_insufficient_scope(flow, keyfob, notes):
    metadata = notes.replace("/mcp", "/.well-known/oauth-protected-resource/mcp")
    assert flow["add_note_refusals"] == [{"status": 403, "www_authenticate": (
        f'Bearer error="insufficient_scope", scope="read write", resource_metadata="{metadata}"')}]
    assert flow["authorizations"][1]["scope"] == "read write"
    assert flow["authorizations"][1]["resource"] == notes
    assert flow["add_note"] == {"notes": 1}
    assert flow["token_scopes"] == ["read", "read write"]
    assert not flow["same_token_after_step_up"]
    assert flow["whoami_after_step_up"] == {**flow["whoami"], "scope": "read write"}
    registrations = [entry for entry in flow["sent"] if entry["url"] == f"{keyfob}/oauth/clients"]
    assert len(registrations) == 1
