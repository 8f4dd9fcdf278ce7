"""What every endpoint shares: which are machine endpoints, the one error type, parameter reading, the
issuer and caching."""
from urllib.parse import urlencode

from flask import current_app, g, request

from models import Client

# The machine endpoints, by blueprint and path: clients and resource servers call them with a token or client
# credentials, never a cookie. They open no session, need no CSRF token, answer errors as JSON and allow any
# origin (CORS). Sessions open before a request is routed, so a request is told apart by its path.
MACHINE_ENDPOINTS = {"api": ("/api/",), "clients": ("/oauth/clients", "/register"),
                     "introspections": ("/oauth/introspection",), "metadata": ("/.well-known/",),
                     "revocations": ("/oauth/revocation",), "tokens": ("/oauth/token", "/token")}
MACHINE_PATHS = tuple(path for paths in MACHINE_ENDPOINTS.values() for path in paths)
MAX_PARAMETER_LENGTH = 2048


def is_machine_request():
    return request.path.startswith(MACHINE_PATHS)


def forbid_caching(response):
    """For responses that carry a code, a token or a secret (RFC 6749 §5.1): Cache-Control: no-store and
    Pragma: no-cache, which the response adds as it is sent."""
    response.caching_forbidden = True
    return response


class OAuthError(Exception):
    """An error an OAuth endpoint answers with, named by the RFC literal (RFC 6749 §5.2, §4.1.2.1)."""

    def __init__(self, error, description=None, status=400, headers=None):
        super().__init__(error, description)
        self.error, self.description, self.status, self.headers = error, description, status, headers or {}

    def as_params(self):
        return {"error": self.error, "error_description": self.description} if self.description else {"error": self.error}

    def as_response(self):
        return self.as_params(), self.status, self.headers


def issuer():
    """The one issuer string (no trailing slash) used in metadata, every iss and the built-in API's audience check
    (RFC 8414 §2, RFC 9207, RFC 8707): KEYFOB_ISSUER, never the request's Host, which the client chooses."""
    return current_app.config["ISSUER"]


def json_object():
    """The request's JSON object, or None for anything else (malformed, nested past the parser, not an object)."""
    try:
        body = request.get_json(silent=True) if request.mimetype == "application/json" else None
    except RecursionError:
        return None
    return body if isinstance(body, dict) else None


def resources():
    """The resources tokens are issued for (RFC 8707), with the names people see: the built-in API, which is the
    issuer, and the resource servers."""
    return {issuer(): "your Keyfob account", **resource_servers()}


def resource_servers():
    """The resource servers tokens may be bound to: those the operator registered (`keyfob client add
    --resource-server`) and those configured (KEYFOB_RESOURCES, whose names win). Read once per request."""
    if "resource_servers" not in g:
        g.resource_servers = {**Client.resource_servers(), **current_app.config.get("RESOURCES", {})}
    return g.resource_servers


def redirect_trust():
    """Where the operator lets clients send people back beyond http loopback (KEYFOB_TRUSTED_REDIRECT_*)."""
    return current_app.config["REDIRECT_TRUST"]


def idle_token_days():
    """KEYFOB_IDLE_TOKEN_DAYS: 0, or the days after which an unused token is refused and swept."""
    return current_app.config.get("IDLE_TOKEN_DAYS", 0)


def find_resource(resource):
    """The known resource a resource parameter names (a trailing slash aside), else None."""
    return next((known for known in resources() if resource in (known, known + "/")), None)


def request_params():
    """Query parameters on GET, the form or a JSON object on POST; a repeated name becomes a list. Read once
    per request."""
    params = g.get("params")
    if params is None:
        params = g.params = read_params(request._get_current_object())
    return params


def read_params(request):
    post, mimetype = request.method == "POST", request.mimetype
    if post and mimetype == "application/json":
        body = json_object()
        if body is None:
            raise OAuthError("invalid_request", "The body must be a JSON object")
        return body
    if post and mimetype == "application/x-www-form-urlencoded":
        return as_params(request.form_fields())
    if post and mimetype != "":
        raise OAuthError("invalid_request", "Send parameters as application/x-www-form-urlencoded")
    return as_params((request.args if request.method == "GET" else request.form).items(multi=True))


def as_params(fields):
    """Name-value pairs as parameters: one value as it is, a repeated name's values as a list."""
    params = {}
    for name, value in fields:
        if name not in params:
            params[name] = value
        elif isinstance(params[name], list):
            params[name].append(value)
        else:
            params[name] = [params[name], value]
    return params


def is_parameter(value, longest=MAX_PARAMETER_LENGTH):
    """A single, non-empty value of printable ASCII within the length cap (RFC 6749 Appendix A)."""
    return isinstance(value, str) and 0 < len(value) <= longest and value.isascii() and value.isprintable()


def optional_param(params, name):
    value = params.get(name)
    if value is None:
        return None
    if not is_parameter(value):
        raise OAuthError("invalid_request", f"Malformed parameter: {name}")
    return value


def require_params(params, *names, longest=None):
    """The named parameters, each a single string, or invalid_request naming every one that is not; longest
    gives a name a length cap of its own."""
    caps = longest or {}
    bad = [name for name in names if not is_parameter(params.get(name), caps.get(name, MAX_PARAMETER_LENGTH))]
    if bad:
        raise OAuthError("invalid_request", f"Missing or malformed parameter: {', '.join(bad)}")
    return [params[name] for name in names]


def with_query(uri, params):
    """The URI with params appended to the query it already has (RFC 6749 §3.1.2)."""
    return uri + ("&" if "?" in uri else "?") + urlencode(params)
