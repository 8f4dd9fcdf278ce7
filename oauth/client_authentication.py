"""Which client is asking, at the token, revocation and introspection endpoints (RFC 6749 §2.3): public clients
name themselves, confidential ones prove their secret."""
import base64
import re
from urllib.parse import unquote_to_bytes

from flask import request

from models import Client
from oauth import OAuthError, is_parameter, issuer, require_params

BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def authenticate_client(params):
    """The client a token, revocation or introspection request comes from (RFC 6749 §2.3, §3.2.1): a public
    client names itself, a confidential one proves its secret by Basic or in the body, and never by both (§2.3)."""
    client_id, secret = client_credentials(params)
    return proven_client(Client.find_by("client_id", client_id), secret)


def client_credentials(params):
    """(client_id, secret) as the request presents them; the secret is None or "" for a public client."""
    basic = uses_basic()
    require_one_method(params, basic)
    return basic_credentials(params) if basic else body_credentials(params)


def proven_client(client, secret):
    """The client found for the credentials, if the secret proves it; else invalid_client."""
    basic = uses_basic()
    if client is None or not proves_identity(client, secret, basic):
        raise client_authentication_failed(basic)
    return client


def presents_client(params):
    """Whether a request names a client or carries client credentials at all."""
    return uses_basic() or "client_id" in params or params.get("client_secret") not in (None, "")


def uses_basic():
    """Whether the request chose client_secret_basic, well-formed or not; the scheme is case-insensitive."""
    return authorization().partition(" ")[0].lower() == "basic"


def authorization():
    """The Authorization header, or "" (from the environ: request.headers builds a lookup for each question)."""
    return request.environ.get("HTTP_AUTHORIZATION", "")


def require_one_method(params, basic):
    if basic and params.get("client_secret") not in (None, ""):
        raise OAuthError("invalid_request", "Client credentials must use only one authentication method")


def basic_credentials(params):
    """(client_id, secret) from Authorization: Basic. Each half was form-urlencoded before the pair was
    base64-encoded (RFC 6749 §2.3.1, Appendix B), so the split is on the first colon and %3A decodes after it."""
    encoded = authorization().partition(" ")[2].strip()
    try:
        client_id, secret = map(form_decode, base64.b64decode(encoded, validate=True).split(b":", 1))
    except ValueError:  # not base64, no colon, a bad %-escape, or not UTF-8
        raise client_authentication_failed(basic=True) from None
    if not is_parameter(client_id) or params.get("client_id") not in (None, "", client_id):
        raise client_authentication_failed(basic=True)
    return client_id, secret


def form_decode(half):
    if BAD_ESCAPE.search(half):
        raise ValueError("Malformed %-escape")
    return unquote_to_bytes(half.replace(b"+", b" ")).decode()


def body_credentials(params):
    """client_secret_post: client_id and client_secret in the body, as request_params never reads a POST's query."""
    (client_id,) = require_params(params, "client_id")
    return client_id, params.get("client_secret")


def proves_identity(client, secret, basic):
    """A confidential client proves its secret; a public one holds none, so presenting one is a failed attempt."""
    if client.is_confidential:
        return client.authenticates(secret)
    return not basic and secret in (None, "")


def client_authentication_failed(basic):
    """The same answer for an unknown client and a wrong secret. Only a request that tried Basic gets a 401 and
    a Basic challenge (RFC 6749 §5.2): a challenge for a scheme never tried can pop a browser's password dialog."""
    if basic:
        return OAuthError("invalid_client", "Client authentication failed", 401,
                          {"WWW-Authenticate": f'Basic realm="{issuer()}"'})
    return OAuthError("invalid_client", "Client authentication failed")
