"""The token endpoint: exchange an authorization code for a bearer token."""
import hmac

from flask import Blueprint

from models import AccessToken, AuthorizationCode, User
from oauth import OAuthError, find_resource, forbid_caching, optional_param, request_params, require_params
from oauth.client_authentication import authenticate_client
from oauth.limits import limiter, refused

bp = Blueprint("tokens", __name__)
bp.after_request(forbid_caching)


@bp.post("/token")  # where clients that ignore the metadata look (README: compatibility)
@bp.post("/oauth/token")
@limiter.limit("20/minute", deduct_when=refused)
def create():
    """Exchange an authorization code for a bearer token (RFC 6749 §4.1.3, RFC 7636 §4.6)."""
    params = request_params()
    require_grant_type(params)
    client = authenticate_client(params)
    sealed, verifier, redirect_uri = require_params(params, "code", "code_verifier", "redirect_uri",
                                                    longest={"code": AuthorizationCode.MAX_LENGTH})
    code = find_authorization_code(sealed, client)
    require_pkce_verifier(code, verifier)
    if redirect_uri != code.redirect_uri:
        raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
    require_matching_resource(code, params)
    token = AccessToken.redeem(code, user=find_user(code), client=client)
    if token is None:
        raise OAuthError("invalid_grant", "Authorization code already used; its token is revoked")
    return {"access_token": token.token, "token_type": "Bearer", "scope": token.scope}


def require_grant_type(params):
    (grant_type,) = require_params(params, "grant_type")
    if grant_type != "authorization_code":
        raise OAuthError("unsupported_grant_type", "Only the authorization_code grant is supported")


def find_authorization_code(sealed, client):
    code = AuthorizationCode.unseal(sealed)
    if code is None or code.client_id != client.client_id:
        raise OAuthError("invalid_grant", "Invalid or expired authorization code")
    return code


def require_pkce_verifier(code, verifier):
    if not code.verifies(verifier):
        raise OAuthError("invalid_grant", "PKCE verification failed")


def require_matching_resource(code, params):
    resource = optional_param(params, "resource")
    if resource is not None and (code.resource is None or find_resource(resource) != code.resource):
        raise OAuthError("invalid_target", "resource does not match the authorization request")


def find_user(code):
    user = User.find_by("id", code.user_id)
    if user is None or not hmac.compare_digest(user.session_check, code.user_check):  # a removed user's id, reused
        raise OAuthError("invalid_grant", "The user who approved this code no longer exists")
    return user

