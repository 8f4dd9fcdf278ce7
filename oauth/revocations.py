"""The revocation endpoint (RFC 7009)."""
from flask import Blueprint

from models import OAUTH_TOKEN, AccessToken
from oauth import OAuthError, request_params, require_params
from oauth.client_authentication import authenticate_client, presents_client
from oauth.limits import limiter, refused

bp = Blueprint("revocations", __name__)


@bp.post("/oauth/revocation")
@limiter.limit("20/minute", deduct_when=refused)
def create():
    """Revoke a token: a personal one by whoever holds it, an OAuth one only by the client it was issued to;
    client credentials, beside any token, must authenticate."""
    params = request_params()
    (token,) = require_params(params, "token")
    client = authenticate_client(params) if presents_client(params) else None
    # A public client identifies itself by client_id (RFC 7009 §2.1); without it an OAuth token would stay
    # alive while its client believes it revoked. The token's prefix decides, never its state: no oracle.
    if client is None and token.startswith(OAUTH_TOKEN):
        raise OAuthError("invalid_request", "Name the client (client_id) to revoke an OAuth token")
    AccessToken.revoke(token, client)
    return "", 200  # unknown and foreign tokens too, so revocation is no oracle (RFC 7009 §2.2)
