"""Dynamic client registration for MCP clients (RFC 7591): loopback, native apps' and trusted https redirects."""
from flask import Blueprint, current_app

from models import GRANTS, Client, Refused
from oauth import OAuthError, forbid_caching, json_object, redirect_trust
from oauth.limits import limiter

bp = Blueprint("clients", __name__)
bp.after_request(forbid_caching)

DEFAULT_NAME = "MCP Client"
PENDING_RETRY_AFTER = 10 * 60  # within the hour, the oldest unused client makes way for the next


@bp.post("/register")  # where clients that ignore the metadata look (README: compatibility)
@bp.post("/oauth/clients")
@limiter.limit("10/minute")
def create():
    """Register a public client with the redirect URIs it may use of those it asks for (RFC 7591 §3.1, §3.2.1)."""
    require_room()
    metadata = require_json_object()
    require_public(metadata)
    require_code_flow(metadata)
    client = Client.registered_itself(client_name(metadata), require_redirect_uris(metadata), registered_scope(metadata))
    return client.registration(), 201


def require_room():
    """No more than MAX_PENDING_CLIENTS self-registered clients waiting for their first token (the oldest idle one
    makes way for a new one); only when all of them are younger than an hour does registration wait."""
    if not Client.make_room(current_app.config["MAX_PENDING_CLIENTS"]):
        raise OAuthError("slow_down", "Too many registered clients have never obtained a token; try again later",
                         status=429, headers={"Retry-After": str(PENDING_RETRY_AFTER)})


def require_json_object():
    metadata = json_object()
    if metadata is None:
        raise OAuthError("invalid_client_metadata", "Send the client metadata as a JSON object")
    return metadata


def require_redirect_uris(metadata):
    uris = metadata.get("redirect_uris")
    if uris is None or uris == []:
        raise OAuthError("invalid_client_metadata", "redirect_uris is required")
    if not isinstance(uris, list) or len(uris) > Client.SELF_REDIRECT_URIS:
        raise OAuthError("invalid_redirect_uri", f"redirect_uris must be a list of at most {Client.SELF_REDIRECT_URIS}")
    try:
        return Client.registrable_redirects(uris, redirect_trust())
    except Refused as refusal:
        raise OAuthError("invalid_redirect_uri", "No redirect URI can be registered: " + "; ".join(refusal.reasons))


def client_name(metadata):
    name = metadata.get("client_name", DEFAULT_NAME)
    if not isinstance(name, str) or len(name) > Client.SELF_NAME_LENGTH:
        raise OAuthError("invalid_client_metadata",
                         f"client_name must be a string of at most {Client.SELF_NAME_LENGTH} characters")
    try:
        return Client.checked_name(name or DEFAULT_NAME, Client.SELF_NAME_LENGTH)
    except Refused as refusal:
        raise OAuthError("invalid_client_metadata", f"client_name {refusal}") from None


def registered_scope(metadata):
    """Every scope, whatever the client names (RFC 7591 §3.2.1 lets the answer differ): the MCP SDKs register
    with the scope of the first challenge and ask for more when a tool needs it, and the registered scope is
    the most a client may ask for. The user sees and approves each request's scope."""
    if not isinstance(metadata.get("scope", ""), str):
        raise OAuthError("invalid_client_metadata", "scope must be a space-separated string")
    return GRANTS[-1]


def require_public(metadata):
    # A self-registered client gets no secret: it is a public client, and RFC 7591 §3.2.1 lets the
    # server replace a requested secret method with the one it supports, which MCP SDK defaults expect.
    method = metadata.get("token_endpoint_auth_method", "none")
    if method not in ("none", *Client.SECRET_METHODS):
        raise OAuthError("invalid_client_metadata", "token_endpoint_auth_method must be none")


def require_code_flow(metadata):
    for name, needed in (("grant_types", "authorization_code"), ("response_types", "code")):
        values = metadata.get(name, [needed])
        if not isinstance(values, list) or needed not in values:
            raise OAuthError("invalid_client_metadata", f"{name} must include {needed}")
