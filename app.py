"""Keyfob: create_app() and the `keyfob` command."""
import contextlib
import logging
import os
import re
import secrets
import sys
import tempfile
import threading
import time
from datetime import timedelta
from urllib.parse import urlsplit

import click
from flask import Flask, g, render_template, request
from flask.sessions import SecureCookieSessionInterface
from flask_cors import CORS
from flask_wtf.csrf import CSRFError
from peewee import JOIN, DataError, InterfaceError, OperationalError, SqliteDatabase, fn
from werkzeug.exceptions import HTTPException

import migrations
import models
from models import AccessToken, AuditEvent, Client, KeyMismatch, SecretKeyCheck, User, db, printable_name
from oauth import OAuthError, csrf, limiter

MACHINE_PATHS = ("/oauth/token", "/oauth/revocation", "/oauth/introspection", "/oauth/clients", "/api/", "/.well-known/")
HTTP_ERRORS = {401: "invalid_client", 404: "not_found", 413: "invalid_request", 429: "slow_down",
               503: "temporarily_unavailable"}
PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; frame-ancestors 'none';"
            " base-uri 'none'")
SWEEP_EVERY, SWEEP_RETRY_AFTER = 24 * 60 * 60, 60 * 60
SWITCH_INTERVAL = 0.0005  # seconds a waitress thread may wait for the GIL while another computes (Python: 0.005)
STRING_SETTINGS = ("SECRET_KEY", "SECRET_KEY_FALLBACKS", "ISSUER", "DATABASE_URL", "RATELIMIT_STORAGE_URI",
                   "RESOURCES")


def create_app(config=None):
    app = Flask(__name__, instance_path=os.path.abspath(os.environ.get("KEYFOB_INSTANCE_PATH", "instance")))
    os.makedirs(app.instance_path, mode=0o700, exist_ok=True)
    app.config.from_mapping(
        DATABASE_URL=f"sqlite:///{os.path.join(app.instance_path, 'keyfob.db')}",
        RATELIMIT_STORAGE_URI="memory://", RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
        RATELIMIT_STORAGE_OPTIONS={"socket_timeout": 1, "socket_connect_timeout": 1},  # a hung Redis: fall back
        MAX_CONTENT_LENGTH=64 * 1024, WTF_CSRF_TIME_LIMIT=None,
        SESSION_COOKIE_NAME="keyfob_session", SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12), SESSION_REFRESH_EACH_REQUEST=False)
    app.config.from_prefixed_env("KEYFOB")
    app.config.update({name: os.environ[f"KEYFOB_{name}"] for name in STRING_SETTINGS if f"KEYFOB_{name}" in os.environ})
    app.config.update(config or {})
    app.config["ISSUER"] = (app.config.get("ISSUER") or "").rstrip("/") or None
    app.config["RESOURCES"] = parse_resources(app.config.get("RESOURCES") or "")
    app.config["IDLE_TOKEN_DAYS"] = idle_token_days(app.config.get("IDLE_TOKEN_DAYS"))
    app.config["SESSION_COOKIE_SECURE"] = (app.config["ISSUER"] or "").startswith("https://")
    configure_secret_keys(app)
    app.session_interface = CookieSessions()

    db.initialize(models.connect(app.config["DATABASE_URL"]))
    if app.config.get("PREPARE_DATABASE", True):
        prepare_database(app)

    app.before_request(connections.open)

    limiter.init_app(app)
    csrf.init_app(app)
    allow_cross_origin(app)
    from oauth import (access_tokens, activity, api, apps, authorizations, clients, connected_apps, home,
                       introspections, metadata, revocations, sessions, tokens)
    for module in (access_tokens, activity, api, apps, authorizations, clients, connected_apps, home, introspections,
                   metadata, revocations, sessions, tokens):
        app.register_blueprint(module.bp)
    for module in (api, clients, introspections, metadata, revocations, tokens):
        csrf.exempt(module.bp)
    app.add_template_filter(when)
    app.url_map.merge_slashes = False
    register_error_handlers(app)
    app.after_request(secure_headers)
    log_audit_events()
    return app


def log_audit_events():
    """The audit trail's lines (JSON, one per event) go to standard error, unless the deployment's logging
    configuration already takes them."""
    if not AuditEvent.LOG.hasHandlers():
        AuditEvent.LOG.addHandler(logging.StreamHandler())
    if AuditEvent.LOG.level == logging.NOTSET:
        AuditEvent.LOG.setLevel(logging.INFO)


def allow_cross_origin(app):
    """CORS on the machine endpoints. Its answer depends on the Origin header (always_send=False: without one,
    no CORS headers), so flask-cors runs only on requests that carry one; matching every path against its
    resources would cost each bearer check about 10 µs for nothing."""
    CORS(app, resources={f"^{path}.*" if path.endswith("/") else f"^{path}$": {} for path in MACHINE_PATHS},
         allow_headers=["Authorization", "Content-Type", "MCP-Protocol-Version"],
         expose_headers=["WWW-Authenticate"], supports_credentials=False, send_wildcard=True, always_send=False)
    add_headers = app.after_request_funcs[None].pop()  # the hook CORS() just registered, last in the list
    app.after_request(lambda response: add_headers(response) if "HTTP_ORIGIN" in request.environ else response)


class CookieSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the signing serializer built once per key set rather than per
    request, and none opened on the machine endpoints, which a token or client credentials authenticate."""

    def open_session(self, app, request):
        if request.path.startswith(MACHINE_PATHS):
            return self.make_null_session(app)
        return super().open_session(app, request)

    def get_signing_serializer(self, app):
        keys = (app.secret_key, *(app.config["SECRET_KEY_FALLBACKS"] or ()))
        cached_keys, serializer = getattr(self, "cached", (None, None))
        if cached_keys != keys:
            serializer = super().get_signing_serializer(app)
            self.cached = keys, serializer
        return serializer


class Connections:
    """Each thread keeps its database connection between requests. One opened before the latest outage
    may look idle and well while the server behind it is gone (PostgreSQL restarted): it is replaced
    before it fails a request."""

    def __init__(self):
        self.outages, self.local = 0, threading.local()

    def open(self):
        opened_after = getattr(self.local, "outages", None)  # None: opened outside a request, e.g. at start
        if not db.is_closed() and (not db.is_connection_usable() or opened_after not in (None, self.outages)):
            with contextlib.suppress(Exception):
                db.close()
        if db.connect(reuse_if_open=True):
            self.local.outages = self.outages

    def lost(self):
        self.outages += 1
        with contextlib.suppress(Exception):
            db.close()


connections = Connections()


def parse_resources(setting):
    """KEYFOB_RESOURCES: comma-separated URL=Name entries, the resource servers tokens may be bound to."""
    resources = {}
    for entry in filter(None, (part.strip() for part in setting.split(","))):
        url, _, name = entry.partition("=")
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment or "=" not in entry:
            raise ValueError(f"KEYFOB_RESOURCES: {entry!r} is not URL=Name with an absolute http(s) URL")
        resources[url.strip()] = name.strip() or url.strip()
    return resources


def idle_token_days(setting):
    """KEYFOB_IDLE_TOKEN_DAYS: tokens unused for this many days are swept; unset or 0, never."""
    days = str(setting or 0)
    if not days.isdigit():
        raise ValueError(f"KEYFOB_IDLE_TOKEN_DAYS: {setting!r} is not a whole number of days (0 or unset: never)")
    return int(days)


def prepare_database(app):
    """Bring the schema up to date and check this process's key against the other processes', one
    process at a time."""
    with db.connection_context(), migrations.exclusive(db.obj):
        migrations.upgrade(db.obj)
        SecretKeyCheck.confirm(app.secret_key, app.config["SECRET_KEY_FALLBACKS"])


def configure_secret_keys(app):
    """The secret key and the retired keys still accepted (KEYFOB_SECRET_KEY_FALLBACKS, comma-separated,
    or the instance file `keyfob keys rotate` keeps): sessions, CSRF tokens and codes signed with a
    fallback stay valid, and everything new is signed with the current key."""
    fallbacks = app.config.get("SECRET_KEY_FALLBACKS")
    if isinstance(fallbacks, str):
        fallbacks = [key.strip() for key in fallbacks.split(",") if key.strip()]
    if app.config.get("SECRET_KEY"):
        app.secret_key = app.config["SECRET_KEY"]
    else:
        app.secret_key = instance_secret(app.instance_path)
        fallbacks = fallbacks or instance_fallbacks(app.instance_path)
    app.config["SECRET_KEY_FALLBACKS"] = list(fallbacks or ())
    if fallbacks:
        app.config["WTF_CSRF_SECRET_KEY"] = [*reversed(fallbacks), app.secret_key]  # itsdangerous signs with the last


def instance_fallbacks(instance_path):
    path = os.path.join(instance_path, "secret_key_fallbacks")
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return [line.strip() for line in file if line.strip()]


def instance_secret(instance_path):
    """The instance's secret key, generated on first run and kept readable by its owner only.
    Written to a temporary file and linked into place, so processes starting together agree on it."""
    path = os.path.join(instance_path, "secret_key")
    if not os.path.exists(path):
        descriptor, temporary = tempfile.mkstemp(dir=instance_path)  # mode 0600
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(64))
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    with open(path) as file:
        key = file.read().strip()
    if not key:
        raise RuntimeError(f"{path} is empty: delete it to generate a new key, or set KEYFOB_SECRET_KEY")
    return key


def is_machine_request():
    return request.path.startswith(MACHINE_PATHS)


def register_error_handlers(app):
    @app.errorhandler(OAuthError)
    def oauth_error(error):
        return error.as_response()

    @app.errorhandler(CSRFError)
    def csrf_error(error):
        return render_template("errors/show.html", title="This form has expired",
                               message="Go back, reload the page and try again."), 400

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    def database_unavailable(error):
        """The database is down, restarting, or locked past SQLite's 10 s wait: say so, and reconnect next time."""
        app.logger.warning("Database unavailable on %s %s: %s", request.method, request.path, type(error).__name__)
        connections.lost()
        g.user = None  # the page around the message must not ask the database who is signed in
        headers = {"Retry-After": "5"}
        if is_machine_request():
            return OAuthError("temporarily_unavailable", "The service is briefly unavailable; try again", 503,
                              headers).as_response()
        return render_template("errors/show.html", title="Keyfob is briefly unavailable",
                               message="Its database is not answering. Try again in a few seconds."), 503, headers

    @app.errorhandler(DataError)
    def unstorable_value(error):
        """A value the database refuses (too long for its column, say) is the request's fault."""
        if is_machine_request():
            return OAuthError("invalid_request", "A value is too long or malformed").as_response()
        return render_template("errors/show.html", title="That could not be saved",
                               message="A value was too long or malformed."), 400

    @app.errorhandler(HTTPException)
    def http_error(error):
        headers = {"Retry-After": "60"} if error.code == 429 else {}
        if is_machine_request():
            code = HTTP_ERRORS.get(error.code, "invalid_request" if error.code < 500 else "server_error")
            return OAuthError(code, error.description, error.code, headers).as_response()
        return render_template("errors/show.html", title=error.name, message=error.description), error.code, headers

    @app.errorhandler(Exception)
    def unexpected_error(error):
        app.logger.exception("Unhandled error on %s %s", request.method, request.path)
        if is_machine_request():
            return OAuthError("server_error", "Something went wrong", 500).as_response()
        return render_template("errors/show.html", title="Something went wrong",
                               message="Please try again in a moment."), 500


def secure_headers(response):
    """Deny framing everywhere (clickjacking on consent); pages get a strict CSP with no form-action,
    which Chrome would apply to the consent form's redirect to the client's loopback port."""
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Content-Security-Policy"] = (
        "frame-ancestors 'none'" if response.mimetype == "application/json" else PAGE_CSP)
    return response


@click.group()
def cli():
    """Keyfob, a small OAuth 2.1 authorization server."""


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 64))
def serve(host, port, threads):
    """Serve Keyfob with waitress (one process, several threads)."""
    import waitress
    authority = f"[{host}]" if ":" in host else host
    os.environ.setdefault("KEYFOB_ISSUER", f"http://{authority}:{port}")
    app = started_app()
    with db.connection_context():
        users = User.select().count()
    click.echo(f"Keyfob is serving {app.config['ISSUER']} (database: {masked_url(app.config['DATABASE_URL'])})")
    if not users:
        click.echo("No users yet: add one with `keyfob user add NAME` to sign in.")
    app.logger.setLevel(logging.INFO)
    sweep_daily(app)
    checkpoint_often(app)
    sys.setswitchinterval(SWITCH_INTERVAL)
    waitress.serve(app, host=host, port=port, threads=threads, ident="keyfob", _quiet=True)


def sweep(idle_token_days, at=None):
    """Housekeeping: remove the self-registered clients that never obtained a token (after 30 days, never
    while a consent is in flight) and the tokens idle for idle_token_days (0: none); the clients' (client_id,
    name) and the number of tokens. Each is one DELETE that checks its own conditions, so processes sweeping
    one database at once do no harm."""
    return Client.sweep(at), AccessToken.sweep_idle(idle_token_days, at)


def checkpoint_often(app, every=1):
    """Copy SQLite's write-ahead log into the database file every second, in a thread of its own: left to
    the commits, every few hundred flows one request would wait on the copy and its fsync."""
    if not isinstance(db.obj, SqliteDatabase):
        return

    def run():
        while True:
            time.sleep(every)
            try:
                with db.connection_context():
                    db.execute_sql("PRAGMA wal_checkpoint(PASSIVE)")
            except Exception:
                app.logger.exception("Checkpointing the SQLite log failed")
    threading.Thread(target=run, name="keyfob-checkpoint", daemon=True).start()


def sweep_daily(app):
    """Sweep now and every 24 hours in a daemon thread with its own database connection; a failed sweep is
    logged and tried again in an hour, and never stops the server."""
    def run():
        while True:
            try:
                with db.connection_context():
                    clients, idle_tokens = sweep(app.config["IDLE_TOKEN_DAYS"])
                if clients or idle_tokens:
                    app.logger.info("Housekeeping removed %d self-registered client(s) that never obtained a token"
                                    "%s; %d idle token(s)", len(clients), "".join(
                                        f" {client_id} ({printable_name(name)})" for client_id, name in clients),
                                    idle_tokens)
                wait = SWEEP_EVERY
            except Exception:
                app.logger.exception("Housekeeping failed; trying again in an hour")
                wait = SWEEP_RETRY_AFTER
            time.sleep(wait)
    threading.Thread(target=run, name="keyfob-housekeeping", daemon=True).start()


@cli.group()
def user():
    """Manage the people who can sign in."""


@user.command("add")
@click.argument("name")
def add_user(name):
    """Add a user; asks for the password twice (or reads two lines from standard input)."""
    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        lines = sys.stdin.read().splitlines() + ["", ""]
        if lines[0] != lines[1]:
            raise click.ClickException("The two passwords do not match")
        password = lines[0]
    with command_database():
        try:
            User.register(name, password)
        except ValueError as error:
            raise click.ClickException(str(error)) from None
    click.echo(f"Added user {name}")


@user.command("list")
def list_users():
    """List the users and how many tokens each holds."""
    with command_database():
        counts = token_counts(AccessToken.user)
        rows = [(user.username, when(user.created_at), counts.get(user.id, 0))
                for user in User.select().order_by(User.username)]
    show(rows, ("NAME", "ADDED", "TOKENS"), empty="No users yet: add one with `keyfob user add NAME`.")


@user.command("remove")
@click.argument("name")
def remove_user(name):
    """Remove a user and every token they hold."""
    with command_database():
        apps = find_or_fail(User, "username", name, "user named").remove(by="operator")
    click.echo(f"Removed user {name} and their tokens"
               + (f", and the apps they registered with all their tokens: {', '.join(apps)}" if apps else ""))


@cli.group()
def client():
    """Manage the OAuth clients (apps) registered here."""


cli.add_command(client, "clients")  # `keyfob clients sweep` reads better; both names work


@client.command("list")
def list_clients():
    """List the clients, who registered them, and how many tokens each holds."""
    with command_database():
        counts = token_counts(AccessToken.oauth_client)
        rows = [(app.client_id, app.name[:40], "self-registered" if app.dynamically_registered else
                 f"by {app.owner.username}" if app.owner else "operator",
                 " ".join(app.redirect_uris), when(app.created_at), counts.get(app.id, 0))
                for app in Client.select().order_by(Client.created_at)]
    show(rows, ("CLIENT ID", "NAME", "REGISTERED", "REDIRECT URIS", "ADDED", "TOKENS"), empty="No clients yet.")


@client.command("add")
@click.argument("name")
@click.option("--confidential", is_flag=True, help="Give it a client secret (a server, or a resource server).")
@click.option("--redirect-uri", "redirect_uris", multiple=True, help="https, or http loopback; repeatable.")
def add_client(name, confidential, redirect_uris):
    """Register a client as the operator: a resource server that introspects tokens needs --confidential
    and no redirect URI; an app that signs people in needs its redirect URIs."""
    errors = Client.app_errors(name, list(redirect_uris), signs_people_in=not confidential)
    if errors:
        raise click.ClickException(" ".join(errors))
    with command_database():
        app = Client.register_app(None, name, list(redirect_uris), confidential=confidential, by="operator")
    click.echo(f"client_id: {app.client_id}")
    if confidential:
        click.echo(f"client_secret: {app.secret}")
        click.echo("Keep the secret now: it is stored only as a digest and cannot be shown again.", err=True)


@client.command("remove")
@click.argument("client_id")
def remove_client(client_id):
    """Remove a client and every token issued to it."""
    with command_database():
        found = find_or_fail(Client, "client_id", client_id, "client with client ID")
        found.remove(by="operator")
    click.echo(f"Removed client {client_id} ({found.name}) and its tokens")


@client.command("sweep")
def sweep_clients():
    """Remove the self-registered clients that never obtained a token (after 30 days, never while a consent
    is in flight) and, if KEYFOB_IDLE_TOKEN_DAYS is set, the tokens idle that long: what `keyfob serve` does daily."""
    app = started_app()
    with db.connection_context():
        clients, idle_tokens = sweep(app.config["IDLE_TOKEN_DAYS"])
    for client_id, name in clients:
        click.echo(f"Removed client {client_id} ({printable_name(name)})")
    click.echo(f"Removed {len(clients)} self-registered client(s) that never obtained a token.")
    if app.config["IDLE_TOKEN_DAYS"]:
        click.echo(f"Removed {idle_tokens} token(s) unused for {app.config['IDLE_TOKEN_DAYS']} days.")


@cli.group()
def token():
    """See and revoke access tokens (only their display prefixes are stored)."""


@token.command("list")
@click.option("--user", "username", help="Only this user's tokens.")
def list_tokens(username):
    """List tokens: prefix, user, client (or personal), scope, created, last used."""
    with command_database():
        tokens = (AccessToken.select(AccessToken, User, Client).join(User).switch(AccessToken)
                  .join(Client, JOIN.LEFT_OUTER).order_by(AccessToken.created_at))
        if username is not None:
            tokens = tokens.where(User.username == find_or_fail(User, "username", username, "user named").username)
        rows = [(row.display_prefix, row.user.username, row.oauth_client.name[:30] if row.oauth_client else "personal",
                 row.scope, when(row.created_at), when(row.last_used_at)) for row in tokens]
    show(rows, ("PREFIX", "USER", "CLIENT", "SCOPE", "CREATED", "LAST USED"), empty="No tokens.")


@token.command("revoke")
@click.argument("prefix")
def revoke_token(prefix):
    """Revoke the token with this display prefix (or give the whole token)."""
    with command_database():
        tokens = AccessToken.matching(prefix)
        if len(tokens) != 1:
            raise click.ClickException(f"No token has the prefix {prefix!r}" if not tokens else
                                       f"{len(tokens)} tokens share the prefix {prefix!r}: give the whole token")
        tokens[0].remove(by="operator")
    click.echo(f"Revoked {tokens[0].display_prefix}…")


@cli.command()
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--user", "username", help="Only the events recorded under this username (a removed user's too).")
def audit(limit, username):
    """Print the latest events of the audit trail, oldest first: who, which client, when, from where."""
    with command_database():
        events = AuditEvent.recent(limit, username=username)
    rows = [(time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(event.at)), event.event, event.username or "-",
             (event.client_name or "-")[:30], event.client_id or "-", event.address or "-",
             " ".join(f"{name}={value}" for name, value in event.details.items())[:120])
            for event in reversed(events)]
    show(rows, ("AT (UTC)", "EVENT", "USER", "CLIENT", "CLIENT ID", "ADDRESS", "DETAIL"), empty="No events recorded.")


@cli.group("db")
def database():
    """The database schema: its version, and upgrading it (also done by every process on start)."""


@database.command("upgrade")
def upgrade_database():
    """Apply the pending schema migrations."""
    app = started_app()
    with db.connection_context():
        schema, _ = migrations.version(db.obj)
    click.echo(f"Schema version {schema}, up to date ({masked_url(app.config['DATABASE_URL'])}).")


@database.command("version")
def database_version():
    """Print the schema version and how many migrations are pending, without applying any."""
    create_app({"PREPARE_DATABASE": False})
    with db.connection_context():
        schema, pending = migrations.version(db.obj)
    click.echo(f"Schema version {schema}; {pending} migration(s) pending: run `keyfob db upgrade`." if pending
               else f"Schema version {schema}, up to date.")


@cli.group()
def keys():
    """The instance's secret key (kept in the instance folder unless KEYFOB_SECRET_KEY is set)."""


@keys.command("rotate")
def rotate_keys():
    """Make a new secret key; the current one stays accepted as a fallback until `keyfob keys retire`."""
    if os.environ.get("KEYFOB_SECRET_KEY"):
        raise click.ClickException("KEYFOB_SECRET_KEY is set: put a new key there and the old one in "
                                   "KEYFOB_SECRET_KEY_FALLBACKS, then restart every process")
    app = started_app()
    write_instance_file(app.instance_path, "secret_key_fallbacks", app.secret_key + "\n")
    write_instance_file(app.instance_path, "secret_key", secrets.token_urlsafe(64))
    click.echo("Made a new secret key; the old one is kept as a fallback. Restart keyfob to sign with the new key;"
               " sessions and codes signed with the old one stay valid until `keyfob keys retire`.")


@keys.command("retire")
def retire_keys():
    """Stop accepting the fallback keys: sessions signed with them end at the next restart."""
    path = os.path.join(started_app().instance_path, "secret_key_fallbacks")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    click.echo("Fallback keys retired: restart keyfob for it to take effect.")


@keys.command("reset")
def reset_keys():
    """Make this key the database's only one, after the key other processes used is lost for good."""
    app = create_app({"PREPARE_DATABASE": False})
    with db.connection_context(), migrations.exclusive(db.obj):
        migrations.upgrade(db.obj)
        SecretKeyCheck.reset(app.secret_key)
    click.echo("This secret key is now the database's only key; sessions and codes signed with others stop working.")


def started_app():
    """create_app(), with a refusal to start said plainly rather than as a traceback."""
    try:
        return create_app()
    except KeyMismatch as error:
        raise click.ClickException(str(error)) from None
    except OperationalError as error:
        raise click.ClickException(f"The database does not answer: {error}") from None


@contextlib.contextmanager
def command_database():
    started_app()
    with db.connection_context():
        yield


def masked_url(url):
    """The URL with its password hidden, in the userinfo or in a password= query parameter."""
    password = urlsplit(url).password
    url = url.replace(f":{password}@", ":***@", 1) if password else url
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)


def write_instance_file(instance_path, name, text):
    """Replace an instance file atomically, readable by its owner only."""
    descriptor, temporary = tempfile.mkstemp(dir=instance_path)  # mode 0600
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    os.replace(temporary, os.path.join(instance_path, name))


def find_or_fail(model, column, value, description):
    found = model.find_by(column, value)
    if found is None:
        raise click.ClickException(f"No {description} {value!r}")
    return found


def token_counts(owner):
    return dict(AccessToken.select(owner, fn.COUNT(AccessToken.id)).group_by(owner).tuples())


def when(timestamp):
    """A stored time as people read it (UTC), or "never"."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp)) if timestamp else "never"


def show(rows, header, empty):
    if not rows:
        click.echo(empty)
        return
    rows = [[printable_name(str(value)) for value in row] for row in rows]  # no terminal escapes from names
    widths = [max(len(value) for value in column) for column in zip(header, *rows)]
    for row in (header, *rows):
        click.echo("  ".join(str(value).ljust(width) for value, width in zip(row, widths)).rstrip())
