"""Who is asking: the signed-in user of a page, or the bearer of a token."""
from functools import wraps

from flask import g, redirect, request, session, url_for

from models import GRANTS, AccessToken, Session, canonical_scope
from oauth import idle_token_days, issuer
from oauth.limits import limiter

RETURN_TO_MAX_LENGTH = 2048
NOT_LOOKED_UP = object()


def current_session():
    """The browser's live session (a row: signing out anywhere ends it), else None. Found once a request."""
    found = g.get("signed_in", NOT_LOOKED_UP)
    if found is NOT_LOOKED_UP:
        found = g.signed_in = Session.find(session.get("session"))
    return found


def current_user():
    found = current_session()
    return found.user if found else None


def sign_in(user):
    """Start a session for user, with a new cookie, ending the browser's previous one (a session fixed before
    sign-in is not carried over)."""
    sign_out()
    session.clear()
    session.permanent = True
    session["session"] = Session.start(user)
    g.pop("signed_in", None)


def sign_out():
    """End the browser's session, here and in the database."""
    if current_session():
        current_session().end()
    session.pop("session", None)
    g.signed_in = None


def password_refusal():
    """None if an action that outlives the session may go on: the user gave their password within the last
    10 minutes, or gives it now in the form's current_password field; else why not, in a sentence."""
    given = request.form.get("current_password", "")
    if current_session().is_recent() or current_session().confirm(given):
        return None
    return "That password is not right." if given else "Give your password: you signed in more than 10 minutes ago."


def password_guesses(view):
    """Where password_refusal decides, a wrong password answers 401: ten guesses a minute from an address, and
    five a minute for an account, as at sign-in (a stolen cookie must not guess faster than a stranger)."""
    per_address = limiter.shared_limit("10/minute", scope="password again", deduct_when=wrong_password)
    per_user = limiter.shared_limit("5/minute", scope="password again per user", deduct_when=wrong_password,
                                    key_func=signed_in_user_id)
    return per_address(per_user(view))


def wrong_password(response):
    return response.status_code == 401


def signed_in_user_id():
    return str(current_user().id) if current_user() else "-"


def require_sign_in():
    """Send a browser to sign in, remembering where it was going (never a ?next= parameter) unless that
    would overflow the session cookie (browsers drop cookies past 4 KB)."""
    return_to = request.path + "?" + request.query_string.decode("utf-8", "replace")
    if len(return_to) <= RETURN_TO_MAX_LENGTH:
        session["return_to"] = return_to
    return redirect(url_for("sessions.new"))


def login_required(view):
    @wraps(view)
    def wrapper(*args, **kwargs):
        return view(*args, **kwargs) if current_user() else require_sign_in()
    return wrapper


def require_token(scope):
    """Let a request through only with a valid bearer token for this server's API that grants scope
    ("read" or "write"; write includes read), answering RFC 6750 §3 challenges that name the RFC 9728
    metadata and the scope needed. The token is g.access_token."""
    needed = canonical_scope(scope)
    enough = {grant for grant in GRANTS if canonical_scope(f"{grant} {scope}") == grant}  # the grants that include it

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            environ = request.environ
            scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
            if token_outside_header(environ):
                return challenge(400, "invalid_request", "Send the access token in the Authorization header only")
            if scheme.lower() != "bearer":
                return challenge(401, scope=needed)
            bearer = AccessToken.authenticate(token, idle_token_days(), environ.get("REMOTE_ADDR"))
            if bearer is None or bearer.resource is not None and bearer.resource != issuer():
                return challenge(401, "invalid_token", "The access token is invalid, revoked, or for another resource")
            if bearer.scope not in enough:
                return challenge(403, "insufficient_scope", f"The access token does not grant {scope}", scope=needed)
            g.access_token = bearer
            return view(*args, **kwargs)
        return wrapper
    return decorator


def token_outside_header(environ):
    """RFC 6750 §2.2 and §2.3 ways of sending a token, which Keyfob refuses (they end up in logs)."""
    in_query = environ.get("QUERY_STRING") and "access_token" in request.args
    return in_query or (environ.get("CONTENT_TYPE") and request.mimetype == "application/x-www-form-urlencoded"
                        and "access_token" in request.form)


def challenge(status, error=None, description=None, scope=None):
    """An RFC 6750 §3 answer; with no credentials at all it carries no error code (§3.1)."""
    attributes = {"resource_metadata": issuer() + "/.well-known/oauth-protected-resource",
                  "error": error, "error_description": description, "scope": scope}
    header = "Bearer " + ", ".join(f'{name}="{value}"' for name, value in attributes.items() if value)
    body = {"error": error, "error_description": description} if error else {}
    return body, status, {"WWW-Authenticate": header}
