"""Keyfob: create_app() and the `keyfob` command."""
import os
import secrets
import sys
import tempfile
from datetime import timedelta
from urllib.parse import urlsplit

import click
from flask import Flask, render_template, request
from flask_cors import CORS
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

import models
from models import User, db
from oauth import OAuthError, limiter

MACHINE_PATHS = ("/oauth/token", "/oauth/revocation", "/oauth/clients", "/api/", "/.well-known/")
HTTP_ERRORS = {401: "invalid_client", 404: "not_found", 413: "invalid_request", 429: "slow_down",
               503: "temporarily_unavailable"}
PAGE_CSP = "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'"
STRING_SETTINGS = ("SECRET_KEY", "ISSUER", "DATABASE_URL", "RATELIMIT_STORAGE_URI")
csrf = CSRFProtect()


def create_app(config=None):
    app = Flask(__name__, instance_path=os.path.abspath(os.environ.get("KEYFOB_INSTANCE_PATH", "instance")))
    os.makedirs(app.instance_path, mode=0o700, exist_ok=True)
    app.config.from_mapping(
        DATABASE_URL=f"sqlite:///{os.path.join(app.instance_path, 'keyfob.db')}",
        RATELIMIT_STORAGE_URI="memory://",
        MAX_CONTENT_LENGTH=64 * 1024, WTF_CSRF_TIME_LIMIT=None,
        SESSION_COOKIE_NAME="keyfob_session", SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12), SESSION_REFRESH_EACH_REQUEST=False)
    app.config.from_prefixed_env("KEYFOB")
    app.config.update({name: os.environ[f"KEYFOB_{name}"] for name in STRING_SETTINGS if f"KEYFOB_{name}" in os.environ})
    app.config.update(config or {})
    app.config["ISSUER"] = (app.config.get("ISSUER") or "").rstrip("/") or None
    app.config["SESSION_COOKIE_SECURE"] = (app.config["ISSUER"] or "").startswith("https://")
    app.secret_key = app.config.get("SECRET_KEY") or instance_secret(app.instance_path)

    db.initialize(models.connect(app.config["DATABASE_URL"]))
    with db.connection_context():
        models.create_tables()

    @app.before_request
    def connect_db():
        db.connect(reuse_if_open=True)

    limiter.init_app(app)
    csrf.init_app(app)
    CORS(app, resources={f"^{path}.*" if path.endswith("/") else f"^{path}$": {} for path in MACHINE_PATHS},
         allow_headers=["Authorization", "Content-Type", "MCP-Protocol-Version"],
         expose_headers=["WWW-Authenticate"], supports_credentials=False, send_wildcard=True, always_send=False)
    from oauth import api, authorizations, clients, home, metadata, revocations, sessions, tokens
    for module in (api, authorizations, clients, home, metadata, revocations, sessions, tokens):
        app.register_blueprint(module.bp)
    for module in (api, clients, metadata, revocations, tokens):
        csrf.exempt(module.bp)
    app.url_map.merge_slashes = False
    register_error_handlers(app)
    app.after_request(secure_headers)
    return app


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
    app = create_app()
    with db.connection_context():
        users = User.select().count()
    database = urlsplit(app.config["DATABASE_URL"])
    if database.password:
        database = database._replace(netloc=database.netloc.replace(f":{database.password}@", ":***@"))
    click.echo(f"Keyfob is serving {app.config['ISSUER']} (database: {database.geturl()})")
    if not users:
        click.echo("No users yet: add one with `keyfob user add NAME` to sign in.")
    waitress.serve(app, host=host, port=port, threads=threads, ident="keyfob", _quiet=True)


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
    create_app()
    with db.connection_context():
        try:
            User.register(name, password)
        except ValueError as error:
            raise click.ClickException(str(error)) from None
    click.echo(f"Added user {name}")
