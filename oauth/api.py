"""The built-in protected API: what a bearer token lets a client see and do."""
from flask import Blueprint, g

from models import AccessToken
from oauth.authentication import require_token

bp = Blueprint("api", __name__)


@bp.get("/api/me")
@require_token("read")
def show():
    """Who the token acts for, with which scope, through which client (null for a personal token)."""
    token = g.access_token
    return {"user": token.username, "scope": token.scope, "client_id": token.client_id}


@bp.delete("/api/token")
@require_token("write")
def destroy():
    """Revoke the token this request carries (a client signing itself out)."""
    token = AccessToken.find_by("id", g.access_token.id)
    if token:  # unless a concurrent revocation took it first
        token.remove(by="holder")
    return "", 204
