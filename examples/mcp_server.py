"""Notes: an MCP server built with the official MCP Python SDK, whose tokens come from Keyfob.

    pip install -e '.[examples]'                                             # the MCP Python SDK
    keyfob serve                                                             # Keyfob on :8000
    keyfob client add Notes --resource-server http://127.0.0.1:8001/mcp       # prints client_id and client_secret
    python examples/mcp_server.py --port 8001 --keyfob http://127.0.0.1:8000 --client-id ID --client-secret SECRET

Each option can come from the environment instead: MCP_SERVER_PORT, MCP_SERVER_KEYFOB, MCP_SERVER_CLIENT_ID,
MCP_SERVER_CLIENT_SECRET (better for the secret, which `ps` would show). The server's resource URL is
http://127.0.0.1:PORT/mcp, and its protected resource metadata (RFC 9728) names Keyfob as the authorization server.

Every bearer token is checked with Keyfob's token introspection (RFC 7662), as the resource server above (Keyfob
lets only resource servers introspect, and answers `active` only for tokens bound to their URL). The token must be
active, bound to this server's resource URL (`aud`, RFC 8707) and carry `read`; `add_note` needs
`write` too. An active answer is kept for CACHE_SECONDS = 5 seconds, counted from before the question was sent, so
a token revoked at Keyfob stops working here at most 5 seconds later. Notes live in memory, per user.

Some clients (Claude, when it cannot read the metadata) look for /authorize, /token and /register on the MCP
server's own host: /authorize sends the browser on to Keyfob, and /token and /register are passed through to it.
Keyfob sees this server's address for those, so its per-address rate limits count them all together.
"""
import argparse
import hashlib
import json
import logging
import os
import time

import httpx2
import uvicorn
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.routes import build_resource_metadata_url
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE
from starlette.applications import Starlette
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

CACHE_SECONDS = 5
WRITE_TOOLS = {"add_note"}
logger = logging.getLogger("notes")
notes = {}  # username → list of notes


class KeyfobIntrospection:
    """The SDK's TokenVerifier: asks Keyfob about each token, and keeps active answers CACHE_SECONDS."""

    def __init__(self, keyfob, client_id, client_secret, resource):
        self.endpoint, self.issuer, self.resource = f"{keyfob}/oauth/introspection", keyfob, resource
        self.credentials = {"client_id": client_id, "client_secret": client_secret}
        self.answers = {}  # SHA-256 of the token → (monotonic deadline, AccessToken)

    async def verify_token(self, token):
        key, now = hashlib.sha256(token.encode()).hexdigest(), time.monotonic()
        deadline, access_token = self.answers.get(key, (0, None))
        if now < deadline:
            return access_token
        access_token = await self.introspect(token)
        if access_token:
            self.answers = {cached: answer for cached, answer in self.answers.items() if answer[0] > now}
            self.answers[key] = (now + CACHE_SECONDS, access_token)
        return access_token

    async def introspect(self, token):
        try:
            async with httpx2.AsyncClient(timeout=5) as http:
                response = await http.post(self.endpoint, data={"token": token, **self.credentials})
        except httpx2.HTTPError as error:
            logger.warning("Keyfob's introspection did not answer: %s", error)
            return None
        if response.status_code != 200:
            logger.error("Keyfob refused to introspect (check the client ID and secret, and that the client was added"
                         " with --resource-server): %s", response.text)
            return None
        answer = response.json()
        # A token bound to another resource (Keyfob's own API, another server) is not for this one (RFC 8707 §2).
        if answer.get("active") is not True or answer.get("aud") != self.resource:
            return None
        return AccessToken(token=token, client_id=answer["client_id"], scopes=answer["scope"].split(),
                           resource=answer["aud"], subject=answer["sub"],
                           claims={"iss": self.issuer, "username": answer["username"]})


class WriteToolsNeedWrite:
    """Refuse a write tool called with a read-only token: 403 insufficient_scope, naming every scope it needs.

    The MCP step-up challenge is an HTTP status (RFC 6750 §3.1), which a tool cannot send, so this looks at the
    JSON-RPC request before the SDK runs it. Requests without a valid token go on to the SDK, which answers 401."""

    def __init__(self, app, verifier, metadata):
        self.app, self.verifier = app, verifier
        self.challenge = f'Bearer error="insufficient_scope", scope="read write", resource_metadata="{metadata}"'

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and await self.read_only(scope):
            received = await read_body(receive)
            if calls_write_tool(received):
                response = JSONResponse({"error": "insufficient_scope", "error_description": "This tool needs write"},
                                        status_code=403, headers={"WWW-Authenticate": self.challenge})
                return await response(scope, receive, send)
            receive = replay(received, receive)
        await self.app(scope, receive, send)

    async def read_only(self, scope):
        headers = (value for name, value in scope["headers"] if name == b"authorization")
        authorization = next(headers, b"").decode("latin-1")  # the first one, which the SDK authenticates
        if authorization[:7].lower() != "bearer ":
            return False
        access_token = await self.verifier.verify_token(authorization[7:])
        return access_token is not None and "write" not in access_token.scopes


async def read_body(receive):
    """The request's ASGI messages, up to the SDK's body size limit."""
    messages, size = [], 0
    while not messages or (messages[-1].get("more_body") and size <= DEFAULT_MAX_REQUEST_BODY_SIZE):
        messages.append(await receive())
        size += len(messages[-1].get("body", b""))
    return messages


def replay(messages, receive):
    async def replaying():
        return messages.pop(0) if messages else await receive()
    return replaying


def calls_write_tool(messages):
    try:
        request = json.loads(b"".join(message.get("body", b"") for message in messages))
    except (ValueError, RecursionError):
        return False
    calls = request if isinstance(request, list) else [request]  # a batch is a list
    return any(isinstance(call, dict) and call.get("method") == "tools/call" and isinstance(call.get("params"), dict)
               and call["params"].get("name") in WRITE_TOOLS for call in calls)


def whoami() -> dict[str, str]:
    """Who the bearer token speaks for, and what it may do."""
    token = get_access_token()
    return {"username": token.claims["username"], "sub": token.subject, "client_id": token.client_id,
            "scope": " ".join(token.scopes)}


def add_note(text: str) -> dict[str, int]:
    """Add a note to your notes (needs the write scope)."""
    mine = notes.setdefault(get_access_token().claims["username"], [])
    mine.append(text)
    return {"notes": len(mine)}


def keyfob_aliases(keyfob):
    """/authorize, /token and /register, for clients that look for them here rather than where the metadata says."""
    async def authorize(request):
        query = request.url.query
        return RedirectResponse(f"{keyfob}/oauth/authorization/new" + (f"?{query}" if query else ""), 302)

    def passed_to(path):
        async def forward(request):
            body = await read_body(request.receive)
            if sum(len(message.get("body", b"")) for message in body) > 64 * 1024:  # Keyfob's own cap
                return JSONResponse({"error": "invalid_request", "error_description": "Too large"}, status_code=413)
            headers = {name: value for name, value in request.headers.items()
                       if name in ("authorization", "content-type", "accept")}
            async with httpx2.AsyncClient(timeout=10) as http:
                answer = await http.post(f"{keyfob}{path}", content=b"".join(m.get("body", b"") for m in body),
                                         headers=headers)
            kept = {name: value for name, value in answer.headers.items()
                    if name in ("content-type", "cache-control", "pragma", "www-authenticate", "retry-after")}
            return Response(answer.content, answer.status_code, kept)
        return forward
    return [Route("/authorize", authorize), Route("/token", passed_to("/oauth/token"), methods=["POST"]),
            Route("/register", passed_to("/oauth/clients"), methods=["POST"])]


def create_app(keyfob, client_id, client_secret, port):
    """The ASGI app: the SDK's streamable HTTP server at /mcp, its metadata, the scope check for write tools, and
    the paths some clients look for Keyfob's endpoints at."""
    resource = f"http://127.0.0.1:{port}/mcp"
    verifier = KeyfobIntrospection(keyfob, client_id, client_secret, resource)
    # validate_token_resource=False: the verifier has already compared `aud` with `resource`, byte for byte.
    auth = AuthSettings(issuer_url=keyfob, resource_server_url=resource, required_scopes=["read"],
                        validate_token_resource=False)
    server = MCPServer("Notes", token_verifier=verifier, auth=auth)
    server.add_tool(whoami)
    server.add_tool(add_note)
    metadata = build_resource_metadata_url(auth.resource_server_url)
    sdk_app = server.streamable_http_app()
    return Starlette(routes=[*keyfob_aliases(keyfob), Mount("/", app=WriteToolsNeedWrite(sdk_app, verifier, metadata))],
                     lifespan=lambda app: sdk_app.router.lifespan_context(sdk_app))  # runs the SDK's session manager


def main():
    env = os.environ.get
    parser = argparse.ArgumentParser(description="An MCP server protected by Keyfob.")
    parser.add_argument("--port", type=int, default=int(env("MCP_SERVER_PORT", "8001")))
    parser.add_argument("--keyfob", default=env("MCP_SERVER_KEYFOB", "http://127.0.0.1:8000"),
                        help="Keyfob's issuer URL, exactly as its metadata spells it")
    parser.add_argument("--client-id", default=env("MCP_SERVER_CLIENT_ID"),
                        required=not env("MCP_SERVER_CLIENT_ID"))
    parser.add_argument("--client-secret", default=env("MCP_SERVER_CLIENT_SECRET"),
                        required=not env("MCP_SERVER_CLIENT_SECRET"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    print(f"Notes is serving http://127.0.0.1:{args.port}/mcp", flush=True)
    app = create_app(args.keyfob, args.client_id, args.client_secret, args.port)
    uvicorn.run(app, host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
