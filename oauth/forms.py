"""Cross-site request forgery: every page's form carries the browser session's form token, which only Keyfob's own
pages show, and a page request that changes something must bring it back."""
import hmac
import secrets
from urllib.parse import urlsplit

from flask import request, session
from werkzeug.exceptions import BadRequest

CHANGING_METHODS = ("POST", "PUT", "PATCH", "DELETE")


class FormExpired(BadRequest):
    description = "The form has expired"


def form_token():
    """The session's form token (Jinja's csrf_token()), made by the first page that shows a form. Signing in starts
    a new session, so a token seen before sign-in is never the one after it."""
    token = session.get("csrf_token")
    if not isinstance(token, str) or not token:
        token = session["csrf_token"] = secrets.token_urlsafe(32)
    return token


def check_form():
    """A page request that changes something brings the session's form token back, in the form's csrf_token or an
    X-CSRFToken header, compared in constant time; over https it also comes from a page of this origin (its
    Referer, which pages send because of their Referrer-Policy), as a token alone cannot tell."""
    if request.method not in CHANGING_METHODS:
        return
    expected = session.get("csrf_token")
    given = request.form.get("csrf_token") or request.headers.get("X-CSRFToken") or request.headers.get("X-CSRF-Token")
    if not (isinstance(expected, str) and expected and given
            and hmac.compare_digest(given.encode(errors="surrogatepass"), expected.encode(errors="surrogatepass"))):
        raise FormExpired()
    if request.is_secure and not from_this_origin(request.referrer):
        raise FormExpired()


def from_this_origin(referrer):
    """Whether a Referer names a page of this https origin: scheme, host and port (RFC 6454)."""
    try:
        page, here = urlsplit(referrer or ""), urlsplit(f"https://{request.host}/")
        return page.scheme == "https" and (page.hostname, page.port or 443) == (here.hostname, here.port or 443)
    except ValueError:  # a port that is not a number
        return False
