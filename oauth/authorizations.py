"""The authorization endpoint: validate the request, ask the user, redirect with a code (RFC 6749 §4.1)."""
from urllib.parse import urlsplit

from flask import Blueprint, g, redirect, render_template, request

from models import (CODE_CHALLENGE, LOOPBACK_HOSTS, SCOPES, AuditEvent, AuthorizationCode, Client,
                    app_scheme, canonical_scope, destination, is_document_url, loopback_parts)
from oauth import (OAuthError, find_resource, forbid_caching, is_parameter, issuer, optional_param, redirect_trust,
                   request_params, resource_servers, resources, with_query)
from oauth.authentication import current_user, password_guesses, password_refusal, require_sign_in, sign_out
from oauth.client_documents import client_for
from oauth.limits import limiter

bp = Blueprint("authorizations", __name__)
bp.after_request(forbid_caching)


def names_document():
    """Whether the request's client_id is a metadata document's URL: only a signed-in user's request makes
    Keyfob fetch one, and those are limited per address."""
    try:
        return is_document_url(request_params().get("client_id"))
    except OAuthError:
        return False


@bp.get("/authorize")  # where clients that ignore the metadata look (README: compatibility)
@bp.get("/oauth/authorization/new")
@limiter.limit("60/minute", exempt_when=lambda: not names_document())
def new():
    """Show the consent screen for a valid authorization request."""
    grant = signed_in_request()
    if grant is None:
        return require_sign_in()
    g.client.record_authorization()
    return consent_page(grant)


@bp.post("/oauth/authorization")
@limiter.limit("60/minute", exempt_when=lambda: not names_document())
@password_guesses
def create():
    """Approve or deny the request: redirect to the client with a code or access_denied (RFC 6749 §4.1.2). A token
    outlives the session: approving asks for the password again if it was last given more than 10 minutes ago."""
    grant = signed_in_request()
    if grant is None:
        raise OAuthError("access_denied", "The user is not signed in")
    user = current_user()
    if request.form.get("decision") != "approve":
        AuditEvent.record("consent.denied", user, g.client, scope=grant["scope"])
        raise OAuthError("access_denied", "The user denied the request")
    refusal = password_refusal()
    if refusal:
        return consent_page(grant, refusal), 401
    AuditEvent.record("consent.granted", user, g.client, scope=grant["scope"], resource=grant["resource"])
    code = AuthorizationCode(user_id=user.id, user_check=user.session_check, **grant)
    g.client.record_authorization()
    return redirect_to_client(code=code.seal(), state=g.get("state"))


def consent_page(grant, error=None):
    return render_template("authorizations/new.html", client=g.client, grant=grant, state=g.get("state"),
                           redirect=urlsplit(g.redirect_uri), redirect_app=app_scheme(g.redirect_uri),
                           redirect_is_local=loopback_parts(g.redirect_uri) is not None,
                           signs_out=urlsplit(issuer()).hostname in LOOPBACK_HOSTS,
                           resource_name=resources()[grant["resource"]], error=error,
                           scope_words=[SCOPES[word] for word in grant["scope"].split(" ")])


def signed_in_request():
    """The request's grant if a user is signed in, else None. In this order: a signed-out request naming a
    metadata document is not validated, so no anonymous visitor makes Keyfob fetch one; any other request
    is validated before sign-in, so its errors go back to the client at once (RFC 6749 §4.1.2.1)."""
    if not current_user() and names_document():
        return None
    grant = authorization_request()
    return grant if current_user() else None


def authorization_request():
    """The request's grant, checked in the order that keeps errors off unvalidated redirect URIs."""
    params = request_params()
    g.client = find_client(params)
    g.redirect_uri = require_redirect_uri(params)
    g.state = require_state(params)
    require_response_type(params)
    return {"client_id": g.client.client_id, "redirect_uri": g.redirect_uri, "code_challenge": require_pkce(params),
            "scope": require_scope(params), "resource": require_resource(params)}


def find_client(params):
    client_id = params.get("client_id")
    if is_parameter(client_id) and is_document_url(client_id):
        return client_for(client_id, current_user().id)  # asked only once a user is signed in
    client = Client.find_by("client_id", client_id) if is_parameter(client_id) else None
    if client is None:
        raise OAuthError("invalid_request", "Unknown client" if client_id else "Missing parameter: client_id")
    return client


def require_redirect_uri(params):
    redirect_uri = params.get("redirect_uri")
    if not g.client.allows_redirect(redirect_uri, redirect_trust()):
        raise OAuthError("invalid_request", "The redirect_uri is missing or not registered for this client")
    return redirect_uri


def require_state(params):
    state = params.get("state")
    if state is not None and not is_parameter(state):
        raise OAuthError("invalid_request", "Malformed parameter: state")
    return state


def require_response_type(params):
    response_type = params.get("response_type")
    if not is_parameter(response_type):
        raise OAuthError("invalid_request", "Missing or malformed parameter: response_type")
    if response_type != "code":
        raise OAuthError("unsupported_response_type", "Only the code response type is supported")


def require_pkce(params):
    if params.get("code_challenge_method") != "S256":
        raise OAuthError("invalid_request", "code_challenge_method must be S256")
    challenge = params.get("code_challenge")
    if not isinstance(challenge, str) or not CODE_CHALLENGE.fullmatch(challenge):
        raise OAuthError("invalid_request", "code_challenge must be 43 base64url characters")
    return challenge


def require_scope(params):
    """The scope asked for, within what the client registered (RFC 7591 §2: its ceiling)."""
    scope = canonical_scope(optional_param(params, "scope") or "read")
    if scope is None:
        raise OAuthError("invalid_scope", "Scope must be read, write or both")
    if canonical_scope(f"{scope} {g.client.scope}") != g.client.scope:
        raise OAuthError("invalid_scope", f"This client registered for {g.client.scope} only")
    return scope


def require_resource(params):
    """The resource the token will be for: the one named, else the only resource server, else the built-in API
    (RFC 8707 §2)."""
    resource = optional_param(params, "resource")
    if resource is None:
        servers = list(resource_servers())
        return servers[0] if len(servers) == 1 else issuer()
    if find_resource(resource) is None:
        raise OAuthError("invalid_target", "Unknown resource")
    return find_resource(resource)


def redirect_to_client(**params):
    if request.method == "POST" and urlsplit(issuer()).hostname in LOOPBACK_HOSTS:
        # Cookies do not keep ports apart (RFC 6265 §8.5): served on a loopback host, Keyfob's session cookie
        # reaches the app listening on the redirect's port, so the sign-in that approved or denied ends here.
        sign_out()
    return redirect(client_answer(**params))


def client_answer(**params):
    """The redirect URI with the answer in its query, iss always among it (RFC 9207)."""
    params = {name: value for name, value in params.items() if value is not None} | {"iss": issuer()}
    return with_query(g.redirect_uri, params)


@bp.errorhandler(OAuthError)
def redirect_with_error(error):
    """To the client once its redirect URI is known, if the user decided (the consent form's POST) or the URI is
    one to send anyone to unasked; else a page."""
    trust = redirect_trust()
    if "redirect_uri" in g and (request.method == "POST" or g.client.redirects_without_asking(g.redirect_uri, trust)):
        return redirect_to_client(**error.as_params(), state=g.get("state"))
    back = client_answer(**error.as_params(), state=g.get("state")) if "redirect_uri" in g else None
    return render_template("authorizations/error.html", error=error, client=g.get("client"), back=back,
                           destination=destination(g.redirect_uri) if back else None), error.status
