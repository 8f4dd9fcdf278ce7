"""Token introspection for resource servers (RFC 7662)."""
from flask import Blueprint

from models import AccessToken
from oauth import OAuthError, forbid_caching, idle_token_days, request_params
from oauth.client_authentication import client_authentication_failed, client_credentials, proven_client, uses_basic
from oauth.limits import limiter

bp = Blueprint("introspections", __name__)
bp.after_request(forbid_caching)


def refused_caller(response):
    """Only the caller's failed authentication counts against its address. The tokens it asks about come from
    strangers, who must not use up a resource server's allowance with made-up tokens or empty ones: a resource server
    that introspects every request it serves is never limited."""
    return response.status_code == 401 or response.status_code == 400 \
        and (response.get_json(silent=True) or {}).get("error") == "invalid_client"


@bp.post("/oauth/introspection")
@limiter.limit("10/minute", deduct_when=refused_caller)
def create():
    """Tell a resource server what a token for it grants; any other token, or one that grants nothing, is just
    inactive (§2.2)."""
    params = request_params()
    client_id, secret = client_credentials(params)
    token = params.get("token")
    client, row = AccessToken.introspected_by(client_id, token)
    resource_server = authenticate_resource_server(client, secret)
    if not isinstance(token, str) or not token:
        raise OAuthError("invalid_request", "Missing or malformed parameter: token")
    bearer = AccessToken.presented(row, idle_token_days(), audience=resource_server.serves)
    if bearer is None:
        return {"active": False}
    claims = {"active": True, "scope": bearer.scope, "client_id": bearer.client_id, "username": bearer.username,
              "sub": str(bearer.user_id), "aud": bearer.resource, "iat": bearer.created_at,
              "exp": bearer.expires_at, "token_type": "Bearer"}
    return {name: value for name, value in claims.items() if value is not None}


def authenticate_resource_server(client, secret):
    """The resource server asking, registered as one by the operator (RFC 7662 §2.1: the caller must be authorized,
    or anyone could probe tokens). An unknown client, a wrong secret, a public client and a client that serves no
    resource get one answer, so the endpoint tells nobody which client IDs exist or what kind they are."""
    client = proven_client(client, secret)
    if client.resource_server is None:
        raise client_authentication_failed(uses_basic())
    return client
