"""Keyfob's application: create_app() and what it sets up, in the order it sets it up."""
import contextlib
import importlib
import inspect
import io
import json
import logging
import os
import secrets
import tempfile
import threading
import time
from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

from flask import Flask, Request, Response, after_this_request, g, has_request_context, render_template, request
from flask.json.provider import DefaultJSONProvider
from markupsafe import Markup
from flask.sessions import NullSession, SecureCookieSessionInterface
from flask_cors import CORS
from itsdangerous import SignatureExpired
from peewee import DataError, InterfaceError, OperationalError, SqliteDatabase
from werkzeug.exceptions import ClientDisconnected, HTTPException, RequestEntityTooLarge
from werkzeug.routing import MapAdapter
from werkzeug.wsgi import get_host

import migrations
from models import (AuditEvent, RedirectTrust, SecretKeyCheck, absent_user_digest, db, is_resource_url, scope_words,
                    when)
from oauth import MACHINE_ENDPOINTS, MACHINE_PATHS, OAuthError, is_machine_request
from oauth import (access_tokens, activity, api, apps, authorizations, clients, connected_apps, forms, home,
                   housekeeping, introspections, metadata, passwords, revocations, sessions, tokens)
from oauth.limits import limiter

BLUEPRINTS = (access_tokens, activity, api, apps, authorizations, clients, connected_apps, home, introspections,
              metadata, passwords, revocations, sessions, tokens)
TRUST_SETTINGS = ("TRUSTED_REDIRECT_SCHEMES", "TRUSTED_REDIRECT_HOSTS")
STRING_SETTINGS = ("SECRET_KEY", "SECRET_KEY_FALLBACKS", "ISSUER", "DATABASE_URL", "RATELIMIT_STORAGE_URI",
                   "RESOURCES", *TRUST_SETTINGS)
CHECKPOINT_PAGES = 10_000  # a request that commits past this copies the log into the file; a thread does it sooner
CHECKPOINT_SECONDS = 1
HTTP_ERRORS = {401: "invalid_client", 404: "not_found", 413: "invalid_request", 429: "slow_down",
               503: "temporarily_unavailable"}
SECURE_HEADERS = [("X-Frame-Options", "DENY"), ("X-Content-Type-Options", "nosniff"),
                  ("Referrer-Policy", "same-origin")]
NO_STORE_HEADERS = [("Cache-Control", "no-store"), ("Pragma", "no-cache")]
CACHING_HEADERS = {name.lower() for name, _ in NO_STORE_HEADERS}
JSON_HEADERS = [*SECURE_HEADERS, ("Content-Security-Policy", "frame-ancestors 'none'")]
PAGE_HEADERS = [*SECURE_HEADERS, ("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self';"
                                  " img-src 'self'; frame-ancestors 'none'; base-uri 'none'")]


def create_app(config=None):
    """The app, from the environment's KEYFOB_ settings and then `config` (tests pass a dict, as flaskr's do)."""
    app = Keyfob(__name__, instance_path=os.path.abspath(os.environ.get("KEYFOB_INSTANCE_PATH", "instance")))
    os.makedirs(app.instance_path, mode=0o700, exist_ok=True)
    load_settings(app, config)
    configure_secret_keys(app)
    open_database(app)
    serve_pages_and_endpoints(app)
    if app.config.get("SERVES_REQUESTS", True):  # the other `keyfob` commands sign no one in
        absent_user_digest()  # now, or the first sign-in with an unknown name would be slower than a wrong password
    return app


class FormRequest(Request):
    """Flask's request, reading a urlencoded body (every OAuth POST, every page's form) in one step: Werkzeug's
    general form parser spends about 25 µs of such a request on streams and parser objects before it calls the
    same parse_qsl. The same rules hold: MAX_CONTENT_LENGTH (413), a body shorter than its Content-Length (400),
    and a body that is not UTF-8 is an empty form."""

    @property
    def mimetype(self):
        """Werkzeug's: the Content-Type before its first parameter, lowercase; without parsing the parameters."""
        return self.environ.get("CONTENT_TYPE", "").partition(";")[0].strip(" \t").lower()

    def _load_form_data(self):
        if "form" in self.__dict__ or self.mimetype != "application/x-www-form-urlencoded":
            return super()._load_form_data()
        self.__dict__.update(form=self.parameter_storage_class(self.form_fields()),
                             files=self.parameter_storage_class())

    def form_fields(self):
        """A urlencoded body's (name, value) pairs, read once: request.form is made of them, and the OAuth
        endpoints read them without it (in the body's order, or by name if request.form was set first)."""
        fields = self.__dict__.get("_form_fields")
        if fields is None:
            if "form" in self.__dict__:
                fields = list(self.form.items(multi=True))
            else:
                try:
                    fields = parse_qsl(self.body().decode(), keep_blank_values=True, errors="werkzeug.url_quote")
                except ValueError:
                    fields = []
            self.__dict__["_form_fields"] = fields
        return fields

    def body(self):
        """The body its Content-Length announces, read from the server's stream as it is (waitress and gunicorn
        buffer it); a chunked body, or one something read already, as Werkzeug's parser reads it."""
        environ, length = self.environ, self.environ.get("CONTENT_LENGTH", "")
        if not (length.isascii() and length.isdigit()) or "HTTP_TRANSFER_ENCODING" in environ \
                or "stream" in self.__dict__ or hasattr(self, "_cached_data"):
            return self._get_stream_for_parsing().read()
        if self.max_content_length is not None and int(length) > self.max_content_length:
            raise RequestEntityTooLarge()
        chunks, missing = [], int(length)
        while missing and (chunk := environ["wsgi.input"].read(missing)):
            chunks.append(chunk)
            missing -= len(chunk)
        self.__dict__["stream"] = io.BytesIO()  # read to its end, as Werkzeug's would be
        if missing:
            raise ClientDisconnected()
        return b"".join(chunks)


class SecureResponse(Response):
    """Every response denies framing (clickjacking on consent) and sniffing; pages get a strict CSP with no
    form-action, which Chrome would apply to the consent form's redirect to the client's loopback port. The headers
    join the list as it is sent: set one by one by an after_request hook, they cost every request about 4 µs. So do
    the no-store headers of a response whose caching is forbidden (oauth.forbid_caching)."""
    caching_forbidden = False

    def get_wsgi_response(self, environ):
        body, status, headers = super().get_wsgi_response(environ)
        headers += JSON_HEADERS if self.mimetype == "application/json" else PAGE_HEADERS
        if self.caching_forbidden:
            headers = [header for header in headers if header[0].lower() not in CACHING_HEADERS] + NO_STORE_HEADERS
        return body, status, headers


class JSONAnswers(DefaultJSONProvider):
    """Flask's JSON, compact and with sorted keys as Flask writes it out of debug mode, by one encoder made once:
    Flask's builds an encoder for every response, a sixth of a plain JSON route's time."""
    encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=DefaultJSONProvider.default)

    def response(self, *args, **kwargs):
        if len(args) != 1 or kwargs or self._app.debug or self.compact is False or not self.ensure_ascii \
                or not self.sort_keys or self.default is not DefaultJSONProvider.default:
            return super().response(*args, **kwargs)
        return self._app.response_class(self.encoder.encode(args[0]) + "\n", content_type=self.mimetype)


class Keyfob(Flask):
    """Flask, with Keyfob's requests, responses and JSON, telling a plain function from an async one by its code
    flags: Flask asks inspect for every hook and view of every request, and Keyfob has no async ones."""
    request_class, response_class, json_provider_class = FormRequest, SecureResponse, JSONAnswers

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.links = {}

    def url_for(self, endpoint, **values):
        """Flask's url_for; a link without values to an endpoint named in full (the layout's eight, on every page)
        is built once, for requests without a script root (a mounted app's links depend on its request)."""
        if values or endpoint.startswith(".") or not has_request_context() or request.script_root:
            return super().url_for(endpoint, **values)
        if endpoint not in self.links:
            self.links[endpoint] = super().url_for(endpoint)
        return self.links[endpoint]

    def create_url_adapter(self, request):
        """Flask's URL adapter for a request, made in one step: Flask's and Werkzeug's read and check the Host twice
        and encode it to IDNA, a sixth of a plain route's time. Used where the answer is the same: no SERVER_NAME,
        TRUSTED_HOSTS, host or subdomain matching (Keyfob sets none), no WebSocket upgrade, and a Host of ASCII
        labels that IDNA leaves as they are (1 to 63 characters, the last may be empty)."""
        config = self.config
        if request is None or config["SERVER_NAME"] or config["TRUSTED_HOSTS"] is not None \
                or self.url_map.host_matching or self.subdomain_matching:
            return super().create_url_adapter(request)
        environ = request.environ
        request.host = get_host(environ)
        host = request.host.lower()
        if not host.isascii() or len(host) > 63 or host.startswith(".") or ".." in host or "HTTP_UPGRADE" in environ:
            return super().create_url_adapter(request)
        script_name, path_info, query = (None if value is None else value.encode("latin1").decode(errors="replace")
                                         for value in map(environ.get, ("SCRIPT_NAME", "PATH_INFO", "QUERY_STRING")))
        return MapAdapter(self.url_map, host, "/" if script_name is None else script_name,
                          self.url_map.default_subdomain or "", environ["wsgi.url_scheme"],
                          "/" if path_info is None else path_info, environ["REQUEST_METHOD"], query)

    def ensure_sync(self, func):
        code = getattr(func, "__code__", None)
        if code is not None and not code.co_flags & inspect.CO_COROUTINE:
            return func
        return super().ensure_sync(func)


# ---- Settings --------------------------------------------------------------------------------------------------
def load_settings(app, config):
    app.config.from_mapping(
        DATABASE_URL=f"sqlite:///{os.path.join(app.instance_path, 'keyfob.db')}",
        RATELIMIT_STORAGE_URI="memory://", RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
        RATELIMIT_STORAGE_OPTIONS={"socket_timeout": 1, "socket_connect_timeout": 1},  # a hung Redis: fall back
        MAX_CONTENT_LENGTH=64 * 1024,
        SESSION_COOKIE_NAME="keyfob_session", SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12), SESSION_REFRESH_EACH_REQUEST=False)
    app.config.from_prefixed_env("KEYFOB")
    app.config.update({name: os.environ[f"KEYFOB_{name}"] for name in STRING_SETTINGS if f"KEYFOB_{name}" in os.environ})
    app.config.update(config or {})
    app.config["ISSUER"] = issuer_setting(app.config)
    app.config["RESOURCES"] = parse_resources(app.config.get("RESOURCES") or "")
    app.config["IDLE_TOKEN_DAYS"] = idle_token_days(app.config.get("IDLE_TOKEN_DAYS"))
    app.config["MAX_PENDING_CLIENTS"] = max_pending_clients(app.config.get("MAX_PENDING_CLIENTS", 10_000))
    app.config["REDIRECT_TRUST"] = RedirectTrust.parse(*map(app.config.get, TRUST_SETTINGS))
    app.config["SESSION_COOKIE_SECURE"] = (app.config["ISSUER"] or "").startswith("https://")
    if app.config["SESSION_COOKIE_SECURE"]:  # browsers then take the cookie only over https, for this host alone
        app.config["SESSION_COOKIE_NAME"] = "__Host-keyfob_session"


def issuer_setting(config):
    """KEYFOB_ISSUER, without a trailing slash: the URL Keyfob names itself by (RFC 8414 §2) and the built-in API's
    resource. Never taken from a request, whose Host the client chooses: an app that serves requests needs it,
    except under TESTING (the test client's host); the `keyfob` commands other than serve serve none."""
    issuer = (config.get("ISSUER") or "").rstrip("/") or ("http://localhost" if config.get("TESTING") else "")
    if not issuer and config.get("SERVES_REQUESTS", True):
        raise ValueError("KEYFOB_ISSUER is not set: set it to the public base URL people and apps reach Keyfob at"
                         " (such as https://auth.example.com), as Keyfob never takes its name from a request")
    if issuer and not (is_resource_url(issuer) and "?" not in issuer):
        raise ValueError(f"KEYFOB_ISSUER: {issuer!r} is not an absolute http(s) URL without a query or fragment")
    return issuer or None


def parse_resources(setting):
    """KEYFOB_RESOURCES: comma-separated URL=Name entries, the resource servers tokens may be bound to."""
    resources = {}
    for entry in filter(None, (part.strip() for part in setting.split(","))):
        url, _, name = entry.partition("=")
        if not is_resource_url(url.strip()) or "=" not in entry:
            raise ValueError(f"KEYFOB_RESOURCES: {entry!r} is not URL=Name with an absolute http(s) URL")
        resources[url.strip()] = name.strip() or url.strip()
    return resources


def idle_token_days(setting):
    """KEYFOB_IDLE_TOKEN_DAYS: tokens unused for this many days are swept; unset or 0, never."""
    days = str(setting or 0)
    if not days.isdigit():
        raise ValueError(f"KEYFOB_IDLE_TOKEN_DAYS: {setting!r} is not a whole number of days (0 or unset: never)")
    return int(days)


def max_pending_clients(setting):
    """KEYFOB_MAX_PENDING_CLIENTS: self-registered clients that never obtained a token, at most."""
    if isinstance(setting, bool) or not str(setting).isdigit() or int(setting) < 1:
        raise ValueError(f"KEYFOB_MAX_PENDING_CLIENTS: {setting!r} is not a whole number of clients, 1 or more")
    return int(setting)


# ---- The instance folder and keys ------------------------------------------------------------------------------
def configure_secret_keys(app):
    """The secret key and the retired keys still accepted (KEYFOB_SECRET_KEY_FALLBACKS, comma-separated,
    or the instance file `keyfob keys rotate` keeps): sessions (with the form tokens they hold) and codes signed
    with a fallback stay valid, and everything new is signed with the current key."""
    fallbacks = app.config.get("SECRET_KEY_FALLBACKS")
    if isinstance(fallbacks, str):
        fallbacks = [key.strip() for key in fallbacks.split(",") if key.strip()]
    if app.config.get("SECRET_KEY"):
        app.secret_key = app.config["SECRET_KEY"]
    else:
        app.secret_key = instance_secret(app.instance_path)
        fallbacks = fallbacks or instance_fallbacks(app.instance_path)
    app.config["SECRET_KEY_FALLBACKS"] = list(fallbacks or ())


def instance_secret(instance_path):
    """The instance's secret key, generated on first run and kept readable by its owner only. Processes
    starting together agree on it: the first to link its file into place wins."""
    path = os.path.join(instance_path, "secret_key")
    if not os.path.exists(path):
        write_instance_file(instance_path, "secret_key", secrets.token_urlsafe(64), replace=False)
    with open(path) as file:
        key = file.read().strip()
    if not key:
        raise RuntimeError(f"{path} is empty: delete it to generate a new key, or set KEYFOB_SECRET_KEY")
    return key


def instance_fallbacks(instance_path):
    with contextlib.suppress(FileNotFoundError), open(os.path.join(instance_path, "secret_key_fallbacks")) as file:
        return [line.strip() for line in file if line.strip()]
    return []


def write_instance_file(instance_path, name, text, replace=True):
    """Write an instance file atomically, readable by its owner only; unless replace, a file already there stays."""
    descriptor, temporary = tempfile.mkstemp(dir=instance_path)  # mode 0600
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    try:
        (os.replace if replace else os.link)(temporary, os.path.join(instance_path, name))
    except FileExistsError:  # linking: another process wrote it first
        pass
    finally:
        with contextlib.suppress(FileNotFoundError):  # replaced: it is gone already
            os.unlink(temporary)


# ---- The database ----------------------------------------------------------------------------------------------
def open_database(app):
    db.initialize(connect(app.config["DATABASE_URL"]))
    if app.config.get("PREPARE_DATABASE", True):
        prepare_database(app)
    serving = app.config.get("SERVES_REQUESTS", True) and not app.testing  # tests ask for it (CHECKPOINT_SECONDS)
    every = app.config.get("CHECKPOINT_SECONDS", CHECKPOINT_SECONDS if serving else 0)
    if every and isinstance(db.obj, SqliteDatabase):
        checkpoints.start(db.obj, every, app.logger)


def connect(url):
    """A peewee database for a URL: a SQLite file runs in WAL mode and waits out other writers' locks
    for up to 10 s; postgresql:// URLs go through peewee's PostgreSQL driver (psycopg). ValueError names
    what a URL of another kind, or a missing driver, needs."""
    if url.startswith("sqlite:///"):
        return SqliteDatabase(url.removeprefix("sqlite:///"), pragmas={
            "journal_mode": "wal", "synchronous": "normal", "foreign_keys": 1, "busy_timeout": 10_000,
            "wal_autocheckpoint": CHECKPOINT_PAGES})
    scheme = urlsplit(url).scheme
    if scheme not in ("postgres", "postgresql"):
        raise ValueError("KEYFOB_DATABASE_URL must be sqlite:///PATH (three slashes) or postgresql://USER@HOST/NAME"
                         " (with pip install 'keyfob[postgres]'), not "
                         + (f"{scheme}://..." if scheme else "a URL without a scheme"))
    if not any(map(importable, ("psycopg2", "psycopg"))):  # the drivers peewee tries, in its order
        raise ValueError("KEYFOB_DATABASE_URL names a PostgreSQL database, and no PostgreSQL driver is installed:"
                         " pip install 'keyfob[postgres]'")
    from playhouse.db_url import connect as connect_url  # only here: it loads every database's extensions
    return connect_url(url)


def importable(module):
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def prepare_database(app):
    """Bring the schema up to date and check this process's key against the others', one process at a time;
    the names of the migrations applied."""
    with db.connection_context(), migrations.exclusive(db.obj):
        applied = migrations.upgrade(db.obj)
        SecretKeyCheck.confirm(app.secret_key, app.config["SECRET_KEY_FALLBACKS"])
    return applied


class Checkpoints:
    """One thread in each serving process copies SQLite's log into the database file every second: left to the
    commits, the log grows to 40 MB between copies, every read slows, and one request in a few hundred waits on
    the copy and its fsync. A process forked after the thread started (gunicorn --preload) starts its own; a thread
    whose database the process no longer uses (after another create_app) stops."""

    def __init__(self):
        self.database, self.every, self.logger, self.pid = None, None, None, None
        os.register_at_fork(after_in_child=lambda: self.database and self.start(self.database, self.every, self.logger))

    def start(self, database, every, logger):
        if (self.pid, self.database) == (os.getpid(), database):
            return
        self.database, self.every, self.logger, self.pid = database, every, logger, os.getpid()
        threading.Thread(target=self.run, args=(database,), name="keyfob-checkpoint", daemon=True).start()

    def run(self, database):
        while True:
            time.sleep(self.every)
            if database is not db.obj or database is not self.database:
                return
            try:
                with database.connection_context():
                    database.execute_sql("PRAGMA wal_checkpoint(PASSIVE)")
            except Exception:
                self.logger.exception("Checkpointing the SQLite log failed")


checkpoints = Checkpoints()


class Connections:
    """Each thread keeps its database connection between requests. One opened before the latest outage may look
    well while the server behind it is gone (PostgreSQL restarted): it is replaced before it fails a request."""

    def __init__(self):
        self.outages, self.local = 0, threading.local()

    def open(self):
        opened_after = getattr(self.local, "outages", None)  # None: opened outside a request, e.g. at start
        if opened_after in (None, self.outages) and db.obj.is_connection_usable():
            return
        if not db.is_closed():
            with contextlib.suppress(Exception):
                db.close()
        if db.connect(reuse_if_open=True):
            self.local.outages = self.outages

    def lost(self):
        self.outages += 1
        with contextlib.suppress(Exception):
            db.close()


connections = Connections()


# ---- Pages and endpoints ---------------------------------------------------------------------------------------
def serve_pages_and_endpoints(app):
    app.session_interface = CookieSessions()
    limiter.init_app(app)
    for module in BLUEPRINTS:
        app.register_blueprint(module.bp)
    app.jinja_env.filters.update(when=lambda at: Markup('<span class="when">%s</span>') % when(at),
                                 scope_words=scope_words)
    app.url_map.merge_slashes = False
    register_error_handlers(app)
    app.jinja_env.globals["csrf_token"] = forms.form_token
    hook_where_concerned(app, check_form=forms.check_form, add_cors=cross_origin(app),
                         look=housekeeping.look_hourly(app))
    if app.config.get("LOG_AUDIT_EVENTS", True):  # `keyfob` commands other than serve: the table is their record
        log_audit_events()


def hook_where_concerned(app, check_form, add_cors, look):
    """Each hook runs only on the requests it concerns, as one hook per blueprint in Flask's per-blueprint lists
    (where a blueprint's own hooks go) taking its steps in turn: a database connection and the housekeeping look for
    every blueprint, then the CSRF check for pages, or CORS for the machine endpoints. A request no blueprint serves
    (a missing page, a static file) runs none."""
    common = [connections.open, *([look] if look else [])]
    before = {True: in_turn(*common, add_cors), False: in_turn(*common, check_form)}
    for blueprint in app.blueprints:
        app.before_request_funcs.setdefault(blueprint, []).append(before[blueprint in MACHINE_ENDPOINTS])
    if app.before_request_funcs.get(None) or app.after_request_funcs.get(None):
        raise RuntimeError("A hook runs on every request: see app.hook_where_concerned")


def in_turn(*steps):
    """One before-request hook for several steps, run in turn until one answers (Flask's rule for its own list): a
    bearer check pays for one call rather than three."""
    def before():
        for step in steps:
            answer = step()
            if answer is not None:
                return answer
        return None
    before.steps = steps
    return before


NO_SESSION = NullSession()  # one for every machine request: it refuses to be written


class CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the signing serializer built once per key set rather than per
    request (remembering the cookies it has checked), and none opened on the machine endpoints, which a token or
    client credentials authenticate."""

    def open_session(self, app, request):
        if request.path.startswith(MACHINE_PATHS):
            return NO_SESSION
        if app.config["SESSION_COOKIE_NAME"] + "=" not in request.environ.get("HTTP_COOKIE", ""):
            return self.session_class()  # no cookie to read: an empty session, as Flask's would be
        return super().open_session(app, request)

    def save_session(self, app, session, response):
        if session or session.modified or session.accessed:  # else Flask's would set no cookie and no Vary
            super().save_session(app, session, response)

    def get_signing_serializer(self, app):
        keys = (app.secret_key, *(app.config["SECRET_KEY_FALLBACKS"] or ()))
        cached_keys, serializer = getattr(self, "cached", (None, None))
        if cached_keys != keys:
            serializer = CheckedCookies(super().get_signing_serializer(app))
            self.cached = keys, serializer
        return serializer


class CheckedCookies:
    """The session's serializer, remembering for each cookie whose signature it has checked what it holds and when it
    was signed: a browser sends the same cookie with every request until its session changes, and checking the
    HMAC again took a third of opening a session. The age is checked on every request, as itsdangerous checks it.
    A cookie whose signature fails is not remembered, nor one longer than a signed-in browser's (a sign-in page's
    may hold a 2 KB address to return to), and at most 1,024 are: a few MB at most."""
    REMEMBERED, LONGEST = 1024, 1024

    def __init__(self, serializer):
        self.serializer, self.checked = serializer, {}

    def dumps(self, value):
        return self.serializer.dumps(value)

    def loads(self, cookie, max_age):
        payload, signed_at = self.checked.get(cookie) or self.check(cookie)
        if not 0 <= int(time.time()) - signed_at <= max_age:
            raise SignatureExpired("The session cookie has expired")
        return self.serializer.load_payload(payload)

    def check(self, cookie):
        payload, signed = self.serializer.make_signer().unsign(cookie, return_timestamp=True)
        checked = payload, int(signed.timestamp())
        if len(cookie) <= self.LONGEST:
            if len(self.checked) >= self.REMEMBERED:
                self.checked.clear()
            self.checked[cookie] = checked
        return checked


def cross_origin(app):
    """CORS for the machine endpoints, for requests that carry an Origin: flask-cors answers nothing else
    (always_send=False), and matching every request's path against its resources would cost each bearer
    check about 10 µs for nothing. Returns the step that adds flask-cors' hook to such a request alone."""
    CORS(app, resources={f"^{path}.*" if path.endswith("/") else f"^{path}$": {}
                         for path in MACHINE_PATHS},
         allow_headers=["Authorization", "Content-Type", "MCP-Protocol-Version"],
         expose_headers=["WWW-Authenticate"], supports_credentials=False, send_wildcard=True, always_send=False)
    # flask-cors has no public way to run only for some requests: take back the hook CORS() just added, last
    # in the list (checked against flask-cors 6.0; tests/test_app.py fails if that changes).
    add_headers = app.after_request_funcs[None].pop()
    if add_headers.__module__ != "flask_cors.extension":
        raise RuntimeError(f"flask-cors registered {add_headers!r}, not its hook: see app.cross_origin")

    def cross_origin_asked():
        if "HTTP_ORIGIN" in request.environ:
            after_this_request(add_headers)
    return cross_origin_asked


def register_error_handlers(app):
    """Errors as a page, or as OAuth JSON on the machine endpoints."""
    def failure(status, error, description, title, message, headers=None):
        if is_machine_request():
            return OAuthError(error, description, status, headers).as_response()
        return render_template("errors/show.html", title=title, message=message, status=status), status, headers or {}

    app.register_error_handler(OAuthError, OAuthError.as_response)
    app.register_error_handler(forms.FormExpired, lambda error: failure(
        400, "invalid_request", "The form has expired", "This form has expired",
        "Go back, reload the page and try again."))

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    def database_unavailable(error):
        """The database is down, restarting, or locked past SQLite's 10 s wait: say so, and reconnect next time."""
        app.logger.warning("Database unavailable on %s: %s", requested(), type(error).__name__)
        connections.lost()
        g.signed_in = None  # the page around the message must not ask the database who is signed in
        return failure(503, "temporarily_unavailable", "The service is briefly unavailable; try again",
                       "Keyfob is briefly unavailable", "Its database is not answering. Try again in a few seconds.",
                       {"Retry-After": "5"})

    @app.errorhandler(DataError)
    def unstorable_value(error):
        """A value the database refuses (too long for its column, say) is the request's fault."""
        return failure(400, "invalid_request", "A value is too long or malformed", "That could not be saved",
                       "A value was too long or malformed.")

    @app.errorhandler(HTTPException)
    def http_error(error):
        code = HTTP_ERRORS.get(error.code, "invalid_request" if error.code < 500 else "server_error")
        return failure(error.code, code, error.description, error.name, error.description,
                       {"Retry-After": "60"} if error.code == 429 else {})

    @app.errorhandler(Exception)
    def unexpected_error(error):
        app.logger.exception("Unhandled error on %s", requested())
        return failure(500, "server_error", "Something went wrong", "Something went wrong",
                       "Please try again in a moment.")


def requested():
    """The request's method and path for a log line, with control characters (a forged line) escaped."""
    return f"{request.method} {request.path}".encode("unicode_escape").decode("ascii")


def log_audit_events():
    """The audit trail's lines (JSON, one per event) go to standard error, unless the deployment's logging
    configuration already takes them."""
    if not AuditEvent.LOG.hasHandlers():
        AuditEvent.LOG.addHandler(logging.StreamHandler())
    if AuditEvent.LOG.level == logging.NOTSET:
        AuditEvent.LOG.setLevel(logging.INFO)
