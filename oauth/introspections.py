"""Token introspection for resource servers (RFC 7662)."""
from flask import Blueprint

from models import AccessToken
from oauth import OAuthError, forbid_caching, idle_token_days, issuer, limiter, request_params
from oauth.client_authentication import authenticate_client

bp = Blueprint("introspections", __name__)
bp.after_request(forbid_caching)


@bp.post("/oauth/introspection")
@limiter.limit("600/minute")
def create():
    """Tell a resource server what a token grants; any token that grants nothing is just inactive (§2.2)."""
    params = request_params()
    client = authenticate_client(params)
    if not client.is_confidential:  # RFC 7662 §2.1: the caller must be authorized, or tokens could be probed
        raise OAuthError("invalid_client", "Only confidential clients (resource servers) may introspect tokens")
    token = params.get("token")
    if not isinstance(token, str) or not token:
        raise OAuthError("invalid_request", "Missing or malformed parameter: token")
    bearer = AccessToken.authenticate(token, idle_token_days())
    if bearer is None:
        return {"active": False}
    claims = {"active": True, "scope": bearer.scope, "client_id": bearer.client_id, "username": bearer.username,
              "sub": str(bearer.user_id), "aud": bearer.resource or issuer(), "iat": bearer.created_at,
              "exp": bearer.expires_at, "token_type": "Bearer"}
    return {name: value for name, value in claims.items() if value is not None}
