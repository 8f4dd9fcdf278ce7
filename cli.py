"""The `keyfob` command: each subcommand a thin shell over create_app() and a model method."""
import contextlib
import errno
import json
import logging
import os
import re
import secrets
import sys
import time
from urllib.parse import urlsplit

import click
from peewee import JOIN, OperationalError, fn

import migrations
from app import create_app, prepare_database, write_instance_file
from models import AccessToken, AuditEvent, Client, Refused, SecretKeyCheck, User, db, printable_name, sweep, when
from oauth import housekeeping

SWITCH_INTERVAL = 0.0005  # seconds a waitress thread may wait for the GIL while another computes (Python: 0.005)
REGISTERED_BY = {Client.SELF_REGISTERED: "self-registered", Client.DOCUMENT: "self-registered",
                 Client.OPERATOR: "operator"}
JSON = click.option("--json", "as_json", is_flag=True, help="Print one JSON array (its fields: see the README).")
YES = click.option("--yes", "-y", is_flag=True, help="Go ahead without asking (needed when not at a terminal).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="keyfob")
def cli():
    """Keyfob, a small OAuth 2.1 authorization server."""


@cli.command(epilog="""\b
Environment (optional; the README's Configuration has every setting):
  KEYFOB_ISSUER         public base URL (default: http://HOST:PORT)
  KEYFOB_DATABASE_URL   sqlite:///PATH or postgresql://USER@HOST/NAME
  KEYFOB_SECRET_KEY     signs sessions and codes (default: generated once)
  KEYFOB_INSTANCE_PATH  holds the key and SQLite file (default: ./instance)""")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every one).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="Port to listen on.")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 64),
              help="Requests served at once.")
def serve(host, port, threads):
    """Serve Keyfob with waitress (one process, several threads)."""
    import waitress
    authority = f"[{host}]" if ":" in host else host
    os.environ.setdefault("KEYFOB_ISSUER", f"http://{authority}:{port}")
    app = started_app({"LOG_AUDIT_EVENTS": True, "SERVES_REQUESTS": True})
    try:
        server = waitress.create_server(app, host=host, port=port, threads=threads, ident="keyfob")
    except OSError as error:
        hint = (" (another program uses the port: choose another with --port)" if error.errno == errno.EADDRINUSE
                else " (this computer has no such address: choose another with --host)")
        raise click.ClickException(f"Keyfob cannot listen on {authority}:{port}: {error.strerror}{hint}") from None
    with db.connection_context():
        users = User.select().count()
    click.echo(f"Keyfob is serving {app.config['ISSUER']} (database: {masked_url(app.config['DATABASE_URL'])})")
    if not users:
        click.echo("No users yet: add one with `keyfob user add NAME` to sign in.")
    app.logger.setLevel(logging.INFO)
    housekeeping.run(app)  # at start, if due; then hourly looks as requests come
    sys.setswitchinterval(SWITCH_INTERVAL)
    server.run()


@cli.group()
def user():
    """Manage the people who can sign in."""


@user.command("add", short_help="Add a user, with a password typed twice.")
@click.argument("name")
def add_user(name):
    """Add a user; asks for the password twice (or reads two lines from standard input)."""
    with command_database():
        if User.named(name):
            raise click.ClickException(f"A user named {name!r} already exists")
    password = new_password()
    with command_database():
        User.register(name, password)
    click.echo(f"Added user {name}")


@user.command("password", short_help="Set a user's password, typed twice.")
@click.argument("name")
def set_password(name):
    """Set a user's password as the operator; asks for it twice (or reads two lines from standard input).
    The sessions signed in with the old one end."""
    with command_database():
        found = find_user(name)
        found.change_password(new_password(f"New password for {name}"), by="operator")
    click.echo(f"Set a new password for {name}; their sessions have ended.")


@user.command("list")
@JSON
def list_users(as_json):
    """List the users and how many tokens each holds."""
    with command_database():
        counts = token_counts(AccessToken.user)
        users = [{"username": user.username, "created_at": user.created_at, "tokens": counts.get(user.id, 0)}
                 for user in User.select().order_by(User.username)]
    show(users, ("NAME", "ADDED", "TOKENS"), lambda user: (user["username"], when(user["created_at"]), user["tokens"]),
         "No users yet: add one with `keyfob user add NAME`.", as_json)


@user.command("remove", short_help="Remove a user, their tokens and the apps they registered.")
@click.argument("name")
@YES
def remove_user(name, yes):
    """Remove a user, every token they hold, and the apps they registered with every token issued to those."""
    with command_database():
        found = find_user(name)
        tokens, apps = counted(found.access_tokens.count(), "token"), found.apps.count()
        confirm(f"Remove user {name}, their {tokens} and the {counted(apps, 'app')} they registered (with every"
                " token issued to those)?" if apps else f"Remove user {name} and their {tokens}?", yes)
        removed_apps = found.remove(by="operator")
    click.echo(f"Removed user {name} and their tokens" + (
        f", and the apps they registered with all their tokens: {', '.join(removed_apps)}" if removed_apps else ""))


@cli.group()
def client():
    """Manage the OAuth clients (apps) registered here."""


@client.command("list", short_help="List the clients, who registered them, and their tokens.")
@JSON
def list_clients(as_json):
    """List the clients, who registered them, the resource a resource server serves, and how many tokens each
    holds."""
    with command_database():
        counts = token_counts(AccessToken.oauth_client)
        apps = [{"client_id": app.client_id, "name": app.name, "kind": app.kind,
                 "owner": app.owner.username if app.owner_id else None, "redirect_uris": app.redirect_uris,
                 "resource_server": app.resource_server, "created_at": app.created_at, "tokens": counts.get(app.id, 0)}
                for app in Client.select().order_by(Client.created_at)]
    show(apps, ("CLIENT ID", "NAME", "REGISTERED", "REDIRECT URIS", "RESOURCE SERVER FOR", "ADDED", "TOKENS"),
         lambda app: (app["client_id"], app["name"][:40], REGISTERED_BY.get(app["kind"]) or f"by {app['owner']}",
                      " ".join(app["redirect_uris"]), app["resource_server"] or "", when(app["created_at"]),
                      app["tokens"]), "No clients yet.", as_json)


@client.command("add", short_help="Register a client as the operator.")
@click.argument("name")
@click.option("--confidential", is_flag=True, help="Give it a client secret (a server that signs people in).")
@click.option("--resource-server", metavar="URL",
              help="A resource server at URL (confidential): tokens may be bound to URL, and it introspects those.")
@click.option("--redirect-uri", "redirect_uris", multiple=True, help="https, or http loopback; repeatable.")
def add_client(name, confidential, resource_server, redirect_uris):
    """Register a client as the operator. A resource server that introspects tokens is given --resource-server and
    its URL, which tokens may then be bound to (its NAME is the one the consent page shows, unless KEYFOB_RESOURCES
    names it); an app that signs people in needs its redirect URIs."""
    confidential = confidential or resource_server is not None
    with command_database() as started:
        Client.validate_app(name, list(redirect_uris), started.config["REDIRECT_TRUST"],
                            signs_people_in=not confidential, resource_server=resource_server)
        app = Client.registered_by_operator(name, list(redirect_uris), confidential, resource_server)
    click.echo(f"client_id: {app.client_id}")
    if confidential:
        click.echo(f"client_secret: {app.secret}")
        click.echo("Keep the secret now: it is stored only as a digest and cannot be shown again.", err=True)


@client.command("remove")
@click.argument("client_id")
@YES
def remove_client(client_id, yes):
    """Remove a client and every token issued to it."""
    with command_database():
        found = find_or_fail(Client.find_by("client_id", client_id), "client with client ID", client_id)
        confirm(f"Remove client {client_id} ({printable_name(found.name)}) and its"
                f" {counted(found.access_tokens.count(), 'token')}?", yes)
        found.remove(by="operator")
    click.echo(f"Removed client {client_id} ({found.name}) and its tokens")


@client.command("sweep", short_help="Remove unused self-registered clients (and idle tokens).")
def sweep_clients():
    """Remove the self-registered clients that never obtained a token (after a day, never while a consent
    is in flight) and, if KEYFOB_IDLE_TOKEN_DAYS is set, the tokens idle that long: what `keyfob serve` does daily."""
    with command_database() as app:
        clients, idle_tokens = sweep(app.config["IDLE_TOKEN_DAYS"])
    for client_id, name in clients:
        click.echo(f"Removed client {client_id} ({printable_name(name)})")
    click.echo(f"Removed {len(clients)} self-registered client(s) that never obtained a token.")
    if app.config["IDLE_TOKEN_DAYS"]:
        click.echo(f"Removed {idle_tokens} token(s) unused for {app.config['IDLE_TOKEN_DAYS']} days.")


@cli.group(short_help="See and revoke access tokens.")
def token():
    """See and revoke access tokens (only their display prefixes are stored)."""


@token.command("list", short_help="List the tokens by display prefix.")
@click.option("--user", "username", help="Only this user's tokens.")
@JSON
def list_tokens(username, as_json):
    """List tokens: prefix, user, client (or personal), scope, created, last used."""
    with command_database():
        rows = (AccessToken.select(AccessToken, User, Client).join(User).switch(AccessToken)
                .join(Client, JOIN.LEFT_OUTER).order_by(AccessToken.created_at))
        if username is not None:
            rows = rows.where(User.username == find_user(username).username)
        tokens = [{"display_prefix": row.display_prefix, "username": row.user.username,
                   "client_id": row.oauth_client.client_id if row.oauth_client else None,
                   "client_name": row.oauth_client.name if row.oauth_client else None, "scope": row.scope,
                   "created_at": row.created_at, "last_used_at": row.last_used_at} for row in rows]
    show(tokens, ("PREFIX", "USER", "CLIENT", "SCOPE", "CREATED", "LAST USED"), lambda token: (
        token["display_prefix"], token["username"], (token["client_name"] or "personal")[:30], token["scope"],
        when(token["created_at"]), when(token["last_used_at"])), "No tokens.", as_json)


@token.command("revoke", short_help="Revoke a token, by its display prefix or whole.")
@click.argument("prefix")
@YES
def revoke_token(prefix, yes):
    """Revoke the token whose display prefix starts with PREFIX (as `token list` shows it), or give the whole
    token."""
    with command_database():
        tokens = AccessToken.matching(prefix)
        if len(tokens) != 1:
            raise click.ClickException(f"No token matches {prefix!r}" if not tokens else
                                       f"{len(tokens)} tokens start with {prefix!r}: give a longer prefix or the"
                                       " whole token")
        found = tokens[0]
        issued_to = printable_name(found.oauth_client.name) if found.oauth_client else "personal token"
        confirm(f"Revoke {found.user.username}'s token {found.display_prefix}… ({issued_to})?", yes)
        found.remove(by="operator")
    click.echo(f"Revoked {found.display_prefix}…")


@cli.command(short_help="Print the latest events of the audit trail.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--user", "username", help="Only the events recorded under this username (a removed user's too).")
@JSON
def audit(limit, username, as_json):
    """Print the latest events of the audit trail, oldest first: who, which client, when, from where."""
    with command_database():
        events = [{"at": event.at, "event": event.event, "username": event.username, "client_id": event.client_id,
                   "client_name": event.client_name, "address": event.address, "detail": event.details}
                  for event in reversed(AuditEvent.recent(limit, username=username))]
    show(events, ("AT (UTC)", "EVENT", "USER", "CLIENT", "CLIENT ID", "ADDRESS", "DETAIL"), lambda event: (
        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(event["at"])), event["event"], event["username"] or "-",
        (event["client_name"] or "-")[:30], event["client_id"] or "-", event["address"] or "-",
        " ".join(f"{name}={value}" for name, value in event["detail"].items())[:120]), "No events recorded.", as_json)


@cli.group("db", short_help="The database schema: its version, and upgrading it.")
def database():
    """The database schema: its version, and upgrading it (also done by every process on start)."""


@database.command("upgrade")
def upgrade_database():
    """Apply the pending schema migrations, and name them."""
    with command_database({"PREPARE_DATABASE": False}) as app:
        applied = prepare_database(app)
        schema, _ = migrations.version(db.obj)
    click.echo(f"Schema version {schema}, up to date ({masked_url(app.config['DATABASE_URL'])}); "
               + (f"applied {', '.join(applied)}." if applied else "no migration was pending."))


@database.command("version", short_help="Print the schema version and the migrations pending.")
def database_version():
    """Print the schema version and how many migrations are pending, without applying any."""
    with command_database({"PREPARE_DATABASE": False}):
        schema, pending = migrations.version(db.obj)
    click.echo(f"Schema version {schema}; {pending} migration(s) pending: run `keyfob db upgrade`." if pending
               else f"Schema version {schema}, up to date.")


@cli.group(short_help="The instance's secret key: rotate, retire, reset.")
def keys():
    """The instance's secret key (kept in the instance folder unless KEYFOB_SECRET_KEY is set)."""


@keys.command("rotate", short_help="Make a new secret key, keeping the current one as a fallback.")
@YES
def rotate_keys(yes):
    """Make a new secret key; the current one stays accepted as a fallback until `keyfob keys retire`."""
    if os.environ.get("KEYFOB_SECRET_KEY"):
        raise click.ClickException("KEYFOB_SECRET_KEY is set: put a new key there and the old one in "
                                   "KEYFOB_SECRET_KEY_FALLBACKS, then restart every process")
    app = started_app()
    confirm("Make a new secret key, keeping only the current one as a fallback (sessions and codes signed with"
            " older fallback keys stop working)?", yes)
    write_instance_file(app.instance_path, "secret_key_fallbacks", app.secret_key + "\n")
    write_instance_file(app.instance_path, "secret_key", secrets.token_urlsafe(64))
    click.echo("Made a new secret key; the old one is kept as a fallback. Restart keyfob to sign with the new key;"
               " sessions and codes signed with the old one stay valid until `keyfob keys retire`.")


@keys.command("retire", short_help="Stop accepting the fallback keys.")
def retire_keys():
    """Stop accepting the fallback keys: sessions signed with them end at the next restart."""
    path = os.path.join(started_app().instance_path, "secret_key_fallbacks")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    click.echo("Fallback keys retired: restart keyfob for it to take effect.")


@keys.command("reset", short_help="Make this key the database's only one (after a lost key).")
@YES
def reset_keys(yes):
    """Make this key the database's only one, after the key other processes used is lost for good."""
    with command_database({"PREPARE_DATABASE": False}) as app:
        confirm("Make this secret key the database's only one (sessions and codes signed with any other key stop"
                " working)?", yes)
        with migrations.exclusive(db.obj):
            migrations.upgrade(db.obj)
            SecretKeyCheck.reset(app.secret_key)
    click.echo("This secret key is now the database's only key; sessions and codes signed with others stop working.")


def started_app(config=None):
    """create_app(), with a refusal to start said plainly rather than as a traceback. Only serving needs the issuer,
    and the audit trail's lines go to the log only then: a command's changes are in the table, its output its own."""
    with said_plainly(ValueError):  # a setting Keyfob cannot use, or another process's key (KeyMismatch)
        return create_app({"LOG_AUDIT_EVENTS": False, "SERVES_REQUESTS": False, **(config or {})})


@contextlib.contextmanager
def command_database(config=None):
    """The started app, with a database connection for the command; what a model refuses is the command's error."""
    app = started_app(config)
    with said_plainly(Refused), db.connection_context():
        yield app


@contextlib.contextmanager
def said_plainly(refusal):
    """A refusal, or a database that does not answer, as one sentence and exit code 1 rather than a traceback."""
    try:
        yield
    except refusal as error:
        raise click.ClickException(str(error)) from None
    except OperationalError as error:
        raise click.ClickException(f"The database does not answer: {error}") from None


def new_password(prompt="Password"):
    """A password typed twice at a terminal, or the first of two equal lines on standard input (split only at
    line ends: a password may hold any other character)."""
    if sys.stdin.isatty():
        return click.prompt(prompt, hide_input=True, confirmation_prompt=True)
    try:
        lines = sys.stdin.read().removesuffix("\n").split("\n")
        lines[0].encode()
    except UnicodeError:  # undecodable, or (in the C locale) a byte Python escaped as a surrogate
        raise click.ClickException("The password is not UTF-8 text") from None
    if len(lines) == 1 and lines[0]:
        raise click.ClickException("Give the password twice, on two lines")
    lines += ["", ""]
    if lines[0] != lines[1]:
        raise click.ClickException("The two passwords do not match")
    return lines[0]


def masked_url(url):
    """The URL with its password hidden, in the userinfo or in a password= query parameter."""
    password = urlsplit(url).password
    url = url.replace(f":{password}@", ":***@", 1) if password else url
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url)


def confirm(question, yes):
    """Go ahead with --yes, or if the person at the terminal answers yes (default no); with standard input not a
    terminal there is nobody to ask."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.ClickException("Standard input is not a terminal, so nobody can confirm: add --yes to go ahead")
    click.confirm(question, default=False, abort=True)


def counted(number, noun):
    return f"{number} {noun}{'' if number == 1 else 's'}"


def find_user(name):
    return find_or_fail(User.named(name), "user named", name)  # a malformed name (control characters) is nobody's


def find_or_fail(found, description, value):
    if found is None:
        raise click.ClickException(f"No {description} {value!r}")
    return found


def token_counts(owner):
    return dict(AccessToken.select(owner, fn.COUNT(AccessToken.id)).group_by(owner).tuples())


def show(records, header, row, empty, as_json):
    """The records as one JSON array, or as a table under header with a row for each (or, for none, empty)."""
    if as_json:
        click.echo(json.dumps(records, indent=2))  # ASCII: a name's escape sequences stay escaped
        return
    if not records:
        click.echo(empty)
        return
    rows = [[printable_name(str(value)) for value in row(record)] for record in records]  # no terminal escapes
    widths = [max(len(value) for value in column) for column in zip(header, *rows)]
    for line in (header, *rows):
        click.echo("  ".join(str(value).ljust(width) for value, width in zip(line, widths)).rstrip())
