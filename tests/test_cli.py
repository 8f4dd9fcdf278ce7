"""The `keyfob` command as a user runs it: the installed script in its own process, a fresh instance folder
for every test, and real HTTP against `keyfob serve`."""
import functools
import importlib.metadata
import json
import os
import pty
import re
import select
import socket
import sqlite3
import stat
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest
from peewee import SqliteDatabase

import migrations
from actions import Actions
from app import create_app
from cli import cli, masked_url
from live import KEYFOB, free_port, keyfob_env, serving
from models import AccessToken, AuditEvent, Client, User, db



@pytest.fixture
def instance(tmp_path):
    return tmp_path / "instance"


@pytest.fixture
def env(instance, instance_database):
    """The user's environment without any KEYFOB_ settings of ours, pointed at the test's instance folder
    (and, in the PostgreSQL run, at a PostgreSQL database)."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("KEYFOB_")}
    return clean | {"KEYFOB_INSTANCE_PATH": str(instance), "PYTHONUNBUFFERED": "1", **instance_database}


README_ADMINISTRATION = (Path(__file__).parent.parent / "README.md").read_text().partition("## Administration")[2] \
    .partition("\n## ")[0]


def readme_row(*command):
    """The row of the README's Administration table that explains a command."""
    named = re.compile(rf"`keyfob {' '.join(command)}[` ]")
    return next(line for line in README_ADMINISTRATION.splitlines() if line.startswith("| ") and named.search(line))


def keyfob(env, *args, typed=""):
    return subprocess.run([KEYFOB, *args], input=typed, env=env, cwd=Path(env["KEYFOB_INSTANCE_PATH"]).parent,
                          capture_output=True, text=True, timeout=60)


def at_terminal(env, *args, answers=()):
    """`keyfob` with a terminal (a pseudo-terminal) for its input and output, typing each answer once a prompt
    ending in ": " is shown: its exit code and what it showed, prompts and echoed answers included."""
    main, terminal = pty.openpty()
    process = subprocess.Popen([KEYFOB, *args], stdin=terminal, stdout=terminal, stderr=terminal, env=env,
                               cwd=Path(env["KEYFOB_INSTANCE_PATH"]).parent, start_new_session=True)
    os.close(terminal)
    shown, answers, answered_at = b"", list(answers), -1
    try:
        while True:
            if answers and shown.endswith(b": ") and len(shown) > answered_at:
                os.write(main, answers.pop(0).encode() + b"\n")
                answered_at = len(shown)
            assert select.select([main], [], [], 30)[0], f"keyfob waits for an answer: {shown!r}"
            try:
                shown += os.read(main, 4096)
            except OSError:  # EIO: the command has ended
                break
    finally:
        os.close(main)
    return process.wait(timeout=30), shown.decode().replace("\r\n", "\n")


def command_paths(command=cli, path=()):
    """Every group and command of `keyfob`, as the words that name it."""
    yield path
    for name, subcommand in getattr(command, "commands", {}).items():
        yield from command_paths(subcommand, (*path, name))


@pytest.mark.parametrize("path", list(command_paths()), ids=lambda path: " ".join(path) or "keyfob")
def test_every_command_and_group_explains_itself_under_h_and_help(tmp_path, path):
    env = keyfob_env(tmp_path / "instance")
    short, long = keyfob(env, *path, "-h"), keyfob(env, *path, "--help")
    assert short.returncode == long.returncode == 0 and short.stdout == long.stdout
    assert long.stdout.startswith(f"Usage: {' '.join(('keyfob', *path))} ")
    listing = long.stdout.partition("\nCommands:\n")[2].splitlines()
    assert not any(line.endswith("...") for line in listing), listing  # no description cut mid-sentence


@pytest.mark.parametrize("path", [path for path in command_paths() if len(path) == 2 or path == ("audit",)],
                         ids=" ".join)
def test_the_readme_explains_every_command_and_its_options(path):
    command = functools.reduce(lambda group, name: group.commands[name], path, cli)
    options = [option for param in command.params for option in param.opts if option.startswith("--")]
    assert all(option in readme_row(*path) for option in options if option != "--help"), options


def test_a_listing_shows_one_line_and_help_the_whole_description(tmp_path):
    env = keyfob_env(tmp_path / "instance")
    assert "sweep   Remove unused self-registered clients (and idle tokens).\n" in keyfob(env, "client", "-h").stdout
    assert "KEYFOB_IDLE_TOKEN_DAYS" in keyfob(env, "client", "sweep", "--help").stdout


def test_serve_help_explains_its_options_and_the_environment_it_reads(tmp_path):
    help_text = keyfob(keyfob_env(tmp_path / "instance"), "serve", "--help").stdout
    for option, first_word in (("--host", "Address"), ("--port", "Port"), ("--threads", "Requests")):
        assert re.search(rf"^  {option} [A-Z ]+ {first_word} ", help_text, re.MULTILINE), option
    for setting in ("KEYFOB_ISSUER", "KEYFOB_DATABASE_URL", "KEYFOB_SECRET_KEY", "KEYFOB_INSTANCE_PATH"):
        assert len([line for line in help_text.splitlines() if line.split()[:1] == [setting]]) == 1
    assert max(map(len, help_text.splitlines())) <= 80


def test_version_is_the_installed_packages(tmp_path):
    result = keyfob(keyfob_env(tmp_path / "instance"), "--version")
    assert result.returncode == 0 and result.stdout == f"keyfob, version {importlib.metadata.version('keyfob')}\n"


def test_clients_is_not_a_second_name_for_client(tmp_path):
    env = keyfob_env(tmp_path / "instance")
    listing = keyfob(env, "--help").stdout.partition("\nCommands:\n")[2]
    assert [line.split()[0] for line in listing.splitlines()] == ["audit", "client", "db", "keys", "serve", "token", "user"]
    assert keyfob(env, "clients", "sweep").returncode == 2


@pytest.fixture
def instance_app(instance, env, monkeypatch):
    """The app the instance folder makes, as `keyfob serve` would build it, opened in this process."""
    for name in [name for name in os.environ if name.startswith("KEYFOB_")]:
        monkeypatch.delenv(name)
    for name in [name for name in env if name.startswith("KEYFOB_")]:
        monkeypatch.setenv(name, env[name])
    monkeypatch.setenv("KEYFOB_ISSUER", "http://127.0.0.1:8000")  # as `keyfob serve` sets it
    opened = []

    def open_app():
        opened.append(create_app())
        return opened[-1]
    yield open_app
    if opened:
        db.close()


def signs_in(app, username, password):
    return Actions(app.test_client()).sign_in(username, password).status_code == 302


def test_user_add_creates_a_user_who_can_sign_in(env, instance_app):
    added = keyfob(env, "user", "add", "alice", typed="password1\npassword1\n")
    assert added.returncode == 0 and "Added user alice" in added.stdout
    app = instance_app()
    assert signs_in(app, "alice", "password1") and not signs_in(app, "alice", "wrong")


def test_user_add_refuses_an_existing_name_and_keeps_the_first_password(env, instance_app):
    assert keyfob(env, "user", "add", "alice", typed="password1\npassword1\n").returncode == 0
    again = keyfob(env, "user", "add", "alice", typed="another one\nanother one\n")
    assert again.returncode != 0 and "A user named 'alice' already exists" in again.stderr
    app = instance_app()
    assert signs_in(app, "alice", "password1") and not signs_in(app, "alice", "another one")


TOO_LONG = "é" * 512 + "a"  # 1,025 bytes


@pytest.mark.parametrize("name, typed, message", [
    ("alice", "", "The password must not be empty"), ("alice", "\n\n", "The password must not be empty"),
    ("alice", "pw\nwp\n", "The two passwords do not match"), ("alice", "pw\n", "Give the password twice, on two lines"),
    ("alice", "short\nshort\n", "at least 8 characters"), ("alice", f"{TOO_LONG}\n{TOO_LONG}\n", "at most 1,024 bytes"),
    ("no spaces", "pw\npw\n", "A username is 1 to 150 letters")])
def test_user_add_refuses_bad_input_with_a_clear_message(env, instance_app, name, typed, message):
    result = keyfob(env, "user", "add", name, typed=typed)
    assert result.returncode != 0 and message in result.stderr
    instance_app()
    assert User.select().count() == 0


def test_user_password_sets_a_password_the_user_signs_in_with_and_ends_the_old_one(env, seeded, instance_app):
    piped = "Pässwörd\x1c\u2028 ok"  # unicode, a control character, a line separator that ends no line
    result = keyfob(env, "user", "password", "alice", typed=f"{piped}\n{piped}\n")
    assert result.returncode == 0 and result.stdout == "Set a new password for alice; their sessions have ended.\n"
    app = instance_app()
    assert [(event.event, event.details) for event in AuditEvent.recent(1)] == [("password.changed", {"sessions": 0, "by": "operator"})]
    assert signs_in(app, "alice", piped) and not signs_in(app, "alice", "password1")
    code, shown = at_terminal(env, "user", "password", "alice", answers=["correct horse ½", "correct horse ½"])
    assert code == 0 and "New password for alice: \nRepeat for confirmation: \nSet a new password" in shown
    assert signs_in(app, "alice", "correct horse ½") and not signs_in(app, "alice", piped)


@pytest.mark.parametrize("name, typed, sentence", [
    ("alice", "password2\npassword3\n", "The two passwords do not match"),
    ("alice", "password2\n", "Give the password twice, on two lines"),
    ("alice", "short\nshort\n", "The password must have at least 8 characters"),
    ("alice", f"{TOO_LONG}\n{TOO_LONG}\n", "The password must be at most 1,024 bytes long"),
    ("alice", "pass\0word2\npass\0word2\n", "The password must not be empty or contain NUL characters"),
    ("alice", "\n\n", "The password must not be empty or contain NUL characters"),
    ("nobody", "password2\npassword2\n", "No user named 'nobody'"),
    ("al\x1bice", "password2\npassword2\n", "No user named 'al\\x1bice'"),
    ("alice\u202e", "password2\npassword2\n", "No user named 'alice\\u202e'"),
    ("ålice", "password2\npassword2\n", "No user named 'ålice'"),
    (b"al\xffice", "password2\npassword2\n", "No user named 'al\\udcffice'"),
    ("a" * 151, "password2\npassword2\n", "No user named 'aaaa")])
def test_user_password_refuses_bad_input_in_one_sentence_and_changes_nothing(env, seeded, instance_app, name, typed,
                                                                              sentence):
    result = keyfob(env, "user", "password", name, typed=typed)
    assert result.returncode == 1 and result.stderr.startswith(f"Error: {sentence}") and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.strip().isprintable()
    app = instance_app()
    assert not AuditEvent.select().where(AuditEvent.event == "password.changed").exists()
    assert signs_in(app, "alice", "password1")


def test_a_password_must_be_utf8_text(env, seeded):
    for command in (("user", "password", "alice"), ("user", "add", "carol")):
        result = subprocess.run([KEYFOB, *command], input=b"pass\xffword\npass\xffword\n", env=env, capture_output=True)
        assert result.returncode == 1 and result.stderr == b"Error: The password is not UTF-8 text\n"


def test_first_run_creates_a_private_secret_key_that_later_runs_reuse(env, instance):
    assert keyfob(env, "user", "add", "alice", typed="password1\npassword1\n").returncode == 0
    secret_key = instance / "secret_key"
    assert stat.S_IMODE(secret_key.stat().st_mode) == 0o600
    first = secret_key.read_text()
    assert keyfob(env, "user", "add", "bob", typed="password1\npassword1\n").returncode == 0
    assert len(first) >= 64 and secret_key.read_text() == first


def test_the_default_database_runs_in_wal_mode(instance):
    env = keyfob_env(instance)
    assert keyfob(env, "user", "add", "alice", typed="password1\npassword1\n").returncode == 0
    with closing(sqlite3.connect(instance / "keyfob.db")) as database:
        assert database.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@pytest.fixture
def serve(env):
    """Start `keyfob serve` on a free port and wait (10 s at most) until it accepts connections."""
    processes = []

    def serve(**settings):
        port = free_port()
        process = subprocess.Popen([KEYFOB, "serve", "--port", str(port)], env=env | settings, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        processes.append(process)
        deadline = time.monotonic() + 10
        while not accepts_connections(port):
            assert process.poll() is None, process.communicate(timeout=10)
            assert time.monotonic() < deadline, f"keyfob serve did not listen on port {port} within 10 s"
            time.sleep(0.1)
        return port, process.stdout.readline()  # printed before it listens

    yield serve
    for process in processes:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def accepts_connections(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def metadata(port):
    url = f"http://127.0.0.1:{port}/.well-known/oauth-authorization-server"
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "application/json"
        return json.load(response)


def test_serve_prints_its_url_and_answers_discovery_over_http(serve, env):
    port, banner = serve()
    assert banner.startswith(f"Keyfob is serving http://127.0.0.1:{port} ")
    database = env.get("KEYFOB_DATABASE_URL") or f"sqlite:///{env['KEYFOB_INSTANCE_PATH']}/keyfob.db"
    assert banner.rstrip().endswith(f"(database: {database})")
    document = metadata(port)
    assert document["issuer"] == f"http://127.0.0.1:{port}"
    assert document["token_endpoint"] == f"http://127.0.0.1:{port}/oauth/token"


def test_serve_refuses_an_issuer_that_is_not_a_url_in_one_sentence(env):
    result = subprocess.run([KEYFOB, "serve", "--port", str(free_port())], env=env | {"KEYFOB_ISSUER": "auth.example"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == ("Error: KEYFOB_ISSUER: 'auth.example' is not an absolute http(s) URL without a query or"
                             " fragment\n")


def test_serve_takes_its_issuer_from_keyfob_issuer(serve):
    port, banner = serve(KEYFOB_ISSUER="https://keyfob.example.test/")
    assert banner.startswith("Keyfob is serving https://keyfob.example.test ")
    document = metadata(port)
    assert document["issuer"] == "https://keyfob.example.test"
    assert document["authorization_endpoint"] == "https://keyfob.example.test/oauth/authorization/new"


@pytest.fixture
def seeded(instance_app):
    """alice with an OAuth token and a personal token, bob with nothing, one self-registered client."""
    instance_app()
    alice, _ = User.register("alice", "password1"), User.register("bob", "password1")
    app = Client.create(name="Claude Code", redirect_uris=["http://127.0.0.1:33418/callback"], dynamically_registered=True)
    return {"client": app, "oauth": AccessToken.issue(alice, app, scope="read write"),
            "personal": AccessToken.issue(alice, description="CLI")}


def test_user_list_shows_each_user_with_their_token_count(env, seeded):
    lines = keyfob(env, "user", "list").stdout.splitlines()
    assert lines[0].split() == ["NAME", "ADDED", "TOKENS"]
    assert lines[1].startswith("alice") and lines[1].endswith("2") and lines[2].startswith("bob")


def test_user_list_says_how_to_add_the_first_user(env):
    assert "keyfob user add" in keyfob(env, "user", "list").stdout


def test_user_remove_deletes_the_user_and_their_tokens(env, seeded):
    result = keyfob(env, "user", "remove", "alice", "--yes")
    assert result.returncode == 0 and "Removed user alice" in result.stdout
    assert User.find_by("username", "alice") is None and AccessToken.select().count() == 0
    assert AccessToken.authenticate(seeded["oauth"].token) is None


def test_user_remove_takes_the_users_apps_and_every_token_issued_to_them(env, seeded):
    bob = User.find_by("username", "bob")
    app = Client.registered_by_user(User.find_by("username", "alice"), "Alice's app", ["https://app.example.com/cb"])
    bobs = AccessToken.issue(bob, app)
    result = keyfob(env, "user", "remove", "alice", "--yes")
    assert "Alice's app" in result.stdout and AccessToken.authenticate(bobs.token) is None
    assert Client.select().where(Client.name == "Alice's app").count() == 0


def test_commands_record_their_changes_without_printing_the_audit_lines(env, instance_app):
    for command, typed in ((("user", "add", "alice"), "password1\npassword1\n"),
                           (("client", "add", "notes", "--confidential"), ""), (("user", "remove", "alice", "--yes"), "")):
        result = keyfob(env, *command, typed=typed)
        assert result.returncode == 0, result.stderr
        assert not [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("{")], result
    instance_app()
    assert [event.event for event in AuditEvent.recent()] == ["user.removed", "client.registered"]


def test_serve_still_writes_the_audit_lines_to_standard_error(instance, instance_database, tmp_path):
    with serving(instance, instance_database, log=tmp_path / "serve.log") as (base, _):
        request = urllib.request.Request(f"{base}/oauth/clients", method="POST", headers={
            "Content-Type": "application/json"}, data=json.dumps({"redirect_uris": ["http://127.0.0.1/cb"]}).encode())
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 201
    assert '"event": "client.registered"' in (tmp_path / "serve.log").read_text()


def test_client_list_says_who_registered_an_app_and_never_prints_control_characters(env, seeded):
    Client.registered_by_user(User.find_by("username", "bob"), "Bob's app", ["https://app.example.com/cb"])
    Client.update(name="Evil\x1b]0;pwned\x07\rApp").where(Client.id == seeded["client"].id).execute()
    listing = keyfob(env, "client", "list").stdout
    assert "by bob" in listing and "\x1b" not in listing and "\x07" not in listing and "Evil]0;pwnedApp" in listing


FIELDS = {("user", "list"): {"username", "created_at", "tokens"},
          ("client", "list"): {"client_id", "name", "kind", "owner", "redirect_uris", "resource_server", "created_at",
                               "tokens"},
          ("token", "list"): {"display_prefix", "username", "client_id", "client_name", "scope", "created_at",
                              "last_used_at"},
          ("audit",): {"at", "event", "username", "client_id", "client_name", "address", "detail"}}


@pytest.mark.parametrize("command", FIELDS, ids=" ".join)
def test_lists_print_one_json_array_with_the_documented_fields(env, seeded, command):
    assert keyfob(env, "client", "add", "notes", "--confidential").returncode == 0  # an operator's app, an event
    result = keyfob(env, *command, "--json")
    records = json.loads(result.stdout)
    assert result.returncode == 0 and result.stderr == "" and isinstance(records, list) and records
    assert all(set(record) == FIELDS[command] for record in records)
    assert all(isinstance(record[name], int) for record in records for name in ("created_at", "at") if name in record)
    documented = readme_row(*command)
    assert "--json" in documented and all(f"`{name}`" in documented for name in FIELDS[command])


def test_json_lists_hold_the_stored_values(env, seeded):
    Client.update(name="Evil\x1b]0;pwned\x07App").where(Client.id == seeded["client"].id).execute()
    users = json.loads(keyfob(env, "user", "list", "--json").stdout)
    assert [(user["username"], user["tokens"]) for user in users] == [("alice", 2), ("bob", 0)]
    apps = json.loads(keyfob(env, "client", "list", "--json").stdout)
    assert apps[0] | {"created_at": 0} == {
        "client_id": seeded["client"].client_id, "name": "Evil\x1b]0;pwned\x07App", "kind": "self-registered",
        "owner": None, "redirect_uris": ["http://127.0.0.1:33418/callback"], "resource_server": None, "created_at": 0,
        "tokens": 1}
    tokens = json.loads(keyfob(env, "token", "list", "--user", "alice", "--json").stdout)
    assert [(token["display_prefix"], token["client_id"], token["last_used_at"]) for token in tokens] == [
        (seeded["oauth"].display_prefix, seeded["client"].client_id, None), (seeded["personal"].display_prefix, None, None)]
    listing = keyfob(env, "client", "list", "--json").stdout
    assert "\x1b" not in listing and "\\u001b" in listing  # escaped, as JSON spells a control character
    assert keyfob(env, "user", "remove", "bob", "--yes").returncode == 0
    events = json.loads(keyfob(env, "audit", "--json").stdout)
    assert events[-1] | {"at": 0} == {"at": 0, "event": "user.removed", "username": "bob", "client_id": None,
                                      "client_name": None, "address": None, "detail": {"tokens": 0, "by": "operator"}}


@pytest.mark.parametrize("command", FIELDS, ids=" ".join)
def test_an_empty_json_list_is_an_empty_array(env, command):
    result = keyfob(env, *command, "--json")
    assert result.returncode == 0 and result.stdout == "[]\n"


def test_token_list_refuses_an_unknown_user(env, seeded):
    result = keyfob(env, "token", "list", "--user", "nobody")
    assert result.returncode == 1 and "No user named 'nobody'" in result.stderr


def test_client_list_and_remove_take_the_clients_tokens_with_it(env, seeded):
    listing = keyfob(env, "client", "list").stdout
    assert seeded["client"].client_id in listing and "self-registered" in listing and "127.0.0.1:33418" in listing
    assert keyfob(env, "client", "remove", seeded["client"].client_id, "-y").returncode == 0
    assert AccessToken.authenticate(seeded["oauth"].token) is None
    assert AccessToken.authenticate(seeded["personal"].token)


def test_token_list_shows_prefixes_never_tokens(env, seeded):
    listing = keyfob(env, "token", "list").stdout
    assert seeded["oauth"].display_prefix in listing and seeded["personal"].display_prefix in listing
    assert seeded["oauth"].token not in listing and "personal" in listing and "Claude Code" in listing
    assert keyfob(env, "token", "list", "--user", "bob").stdout.strip() == "No tokens."


def test_token_revoke_by_prefix_or_whole_token(env, seeded):
    assert keyfob(env, "token", "revoke", seeded["oauth"].display_prefix[:8], "--yes").returncode == 0
    assert AccessToken.authenticate(seeded["oauth"].token) is None
    assert keyfob(env, "token", "revoke", seeded["personal"].token, "--yes").returncode == 0
    assert AccessToken.select().count() == 0


@pytest.fixture
def alike(seeded):
    """Three OAuth tokens of alice's whose display prefixes begin alike, and her personal token."""
    alice = User.find_by("username", "alice")
    tokens = [seeded["oauth"], *(AccessToken.issue(alice, seeded["client"]) for _ in range(2))]
    for token, prefix in zip(tokens, ("kf_at_Abc123", "kf_at_Abd456", "kf_at_abc789")):
        AccessToken.update(display_prefix=prefix).where(AccessToken.id == token.id).execute()


def test_token_revoke_takes_any_start_of_a_display_prefix_that_only_one_has_in_its_case(env, alike):
    result = keyfob(env, "token", "revoke", "kf_at_Abc", "--yes")
    assert result.returncode == 0 and "Revoked kf_at_Abc123" in result.stdout
    assert {token.display_prefix for token in AccessToken.select()} == {
        "kf_at_Abd456", "kf_at_abc789", AccessToken.get(AccessToken.oauth_client.is_null()).display_prefix}


@pytest.mark.parametrize("given, sentence", [
    ("kf_at_Ab", "2 tokens start with 'kf_at_Ab': give a longer prefix or the whole token"),
    ("kf_at", "3 tokens start with 'kf_at': give a longer prefix or the whole token"),
    ("kf_at_Abc1234", "No token matches 'kf_at_Abc1234'"), ("kf_at_X", "No token matches 'kf_at_X'"),
    ("kf%", "No token matches 'kf%'"), ("kf_at_\u00e5", "No token matches"), ("", "No token matches ''")])
def test_token_revoke_says_how_many_tokens_a_prefix_matches_unless_one(env, alike, given, sentence):
    result = keyfob(env, "token", "revoke", given, "--yes")
    assert result.returncode == 1 and sentence in result.stderr
    assert result.stderr.count("\n") == 1 and AccessToken.select().count() == 4


@pytest.fixture
def destructive(seeded, instance):
    """Each destructive command as (arguments, what it asks, what it says once done, whether it was done)."""
    alice, token = User.find_by("username", "alice"), seeded["oauth"]
    Client.registered_by_user(alice, "Alice's app", ["https://app.example.com/cb"])
    key = (instance / "secret_key").read_text()
    return {
        "user remove": (("user", "remove", "alice"), "Remove user alice, their 2 tokens and the 1 app they registered",
                        "Removed user alice", lambda: User.find_by("username", "alice") is None),
        "client remove": (("client", "remove", seeded["client"].client_id),
                          f"Remove client {seeded['client'].client_id} (Claude Code) and its 1 token?",
                          "Removed client", lambda: AccessToken.authenticate(token.token) is None),
        "token revoke": (("token", "revoke", token.display_prefix[:-2]),
                         f"Revoke alice's token {token.display_prefix}… (Claude Code)?",
                         f"Revoked {token.display_prefix}", lambda: AccessToken.authenticate(token.token) is None),
        "keys rotate": (("keys", "rotate"), "Make a new secret key, keeping only the current one as a fallback",
                        "Made a new secret key", lambda: (instance / "secret_key").read_text() != key),
        "keys reset": (("keys", "reset"), "Make this secret key the database's only one",
                       "This secret key is now the database's only key", lambda: None)}


DESTRUCTIVE = ["user remove", "client remove", "token revoke", "keys rotate", "keys reset"]


@pytest.mark.parametrize("command", DESTRUCTIVE)
@pytest.mark.parametrize("answer", ["y", "n", ""])
def test_destructive_commands_ask_at_a_terminal_and_go_ahead_only_on_yes(env, destructive, command, answer):
    args, question, done, is_done = destructive[command]
    code, shown = at_terminal(env, *args, answers=[answer])
    assert question in shown and "[y/N]: " in shown and "Traceback" not in shown
    assert (code == 0 and done in shown) if answer == "y" else (code == 1 and done not in shown)
    assert is_done() in ((answer == "y"), None)


@pytest.mark.parametrize("command", DESTRUCTIVE)
def test_destructive_commands_refuse_without_a_terminal_unless_told_yes(env, destructive, command):
    args, _, done, is_done = destructive[command]
    refused = keyfob(env, *args)
    assert refused.returncode == 1 and refused.stdout == "" and is_done() in (False, None)
    assert refused.stderr == "Error: Standard input is not a terminal, so nobody can confirm: add --yes to go ahead\n"
    result = keyfob(env, *args, "--yes")
    assert result.returncode == 0 and done in result.stdout and is_done() in (True, None), result.stderr


@pytest.mark.parametrize("command", [("user", "remove", "nobody"), ("client", "remove", "nope"),
                                     ("token", "revoke", "kf_at_nope")])
def test_admin_commands_fail_clearly_on_unknown_names(env, seeded, command):
    result = keyfob(env, *command)
    assert result.returncode == 1 and result.stderr.startswith("Error: No ") and "Traceback" not in result.stderr


def test_client_add_registers_a_confidential_client_and_shows_its_secret_once(env, instance_app):
    result = keyfob(env, "client", "add", "notes-server", "--confidential")
    client_id = result.stdout.split("client_id: ")[1].split()[0]
    secret = result.stdout.split("client_secret: ")[1].split()[0]
    instance_app()
    added = Client.find_by("client_id", client_id)
    assert added.is_confidential and added.authenticates(secret) and added.secret_digest != secret
    assert added.resource_server is None
    assert secret not in keyfob(env, "client", "list").stdout


def test_client_add_registers_a_resource_server_whose_url_tokens_may_be_bound_to(env, instance_app):
    notes = "http://127.0.0.1:8001/mcp"
    result = keyfob(env, "client", "add", "Notes", "--resource-server", notes)
    client_id = result.stdout.split("client_id: ")[1].split()[0]
    secret = result.stdout.split("client_secret: ")[1].split()[0]
    instance_app()
    added = Client.find_by("client_id", client_id)
    assert added.is_confidential and added.authenticates(secret) and added.resource_server == notes
    assert Client.resource_servers() == {notes: "Notes"}
    assert [(app["client_id"], app["resource_server"]) for app in
            json.loads(keyfob(env, "client", "list", "--json").stdout)] == [(client_id, notes)]
    assert notes in keyfob(env, "client", "list").stdout.splitlines()[1]


@pytest.mark.parametrize("url", ["notes.internal/mcp", "http://notes.internal/mcp#top", "ftp://notes.internal"])
def test_client_add_refuses_a_resource_server_url_that_is_not_an_http_url_in_one_sentence(env, url):
    result = keyfob(env, "client", "add", "Notes", "--resource-server", url)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (f"Error: {url} is not an absolute http(s) URL without a fragment (a resource server's"
                             " URL, as its clients name it).\n")


def test_client_add_needs_a_redirect_uri_for_an_app_that_signs_people_in(env):
    result = keyfob(env, "client", "add", "cli tool")
    assert result.returncode == 1 and "redirect URIs" in result.stderr
    assert keyfob(env, "client", "add", "cli tool", "--redirect-uri", "http://127.0.0.1:9/cb").returncode == 0


def test_client_add_refuses_a_name_that_could_spoof_the_consent_page(env):
    result = keyfob(env, "client", "add", "Keyfob (verified)", "--redirect-uri", "http://127.0.0.1:9/cb")
    assert result.returncode == 1 and 'The app\'s name must not contain "Keyfob" or "verified"' in result.stderr
    assert keyfob(env, "client", "add", "\u3164\u3164", "--confidential").stderr.startswith(
        "Error: The app's name must have a visible letter.")
    assert "No clients yet." in keyfob(env, "client", "list").stdout


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_db_upgrade_names_the_migrations_it_applied_or_says_none_was_pending(tmp_path, request, database):
    settings = {"KEYFOB_DATABASE_URL": request.getfixturevalue("new_postgresql_database")()} \
        if database == "postgresql" else {}
    env = keyfob_env(tmp_path / "instance", settings)
    names = [migration.name for migration in migrations.runner(SqliteDatabase(":memory:")).migrations()]
    first, again = keyfob(env, "db", "upgrade"), keyfob(env, "db", "upgrade")
    assert first.returncode == again.returncode == 0 and first.stdout.startswith(f"Schema version {len(names)}, ")
    assert first.stdout.endswith(f"; applied {', '.join(names)}.\n") and len(names) > 1
    assert again.stdout.endswith("; no migration was pending.\n")


def test_database_urls_are_printed_without_their_password():
    assert masked_url("postgresql://keyfob:hunter2@db:5432/keyfob") == "postgresql://keyfob:***@db:5432/keyfob"
    assert masked_url("postgresql://db/keyfob?user=k&password=hunter2&x=1") == "postgresql://db/keyfob?user=k&password=***&x=1"


@pytest.mark.parametrize("setting, value, sentence", [
    ("KEYFOB_TRUSTED_REDIRECT_SCHEMES", "javascript", "'javascript' is not an app's scheme"),
    ("KEYFOB_TRUSTED_REDIRECT_SCHEMES", "Cursor", "lower case"),
    ("KEYFOB_TRUSTED_REDIRECT_HOSTS", "https://claude.ai", "is not a host name"),
    ("KEYFOB_RESOURCES", "http://127.0.0.1:8002/mcp", "is not URL=Name"),
    ("KEYFOB_IDLE_TOKEN_DAYS", "soon", "is not a whole number of days")])
def test_a_setting_keyfob_cannot_use_is_one_sentence_not_a_traceback(env, setting, value, sentence):
    for command in (["user", "list"], ["serve", "--port", str(free_port())]):
        result = subprocess.run([KEYFOB, *command], env={**env, setting: value}, capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 1 and sentence in result.stderr and "Traceback" not in result.stderr
        assert result.stderr.count("\n") == 1 and setting in result.stderr


@pytest.fixture
def without_postgresql_driver(tmp_path):
    """A PYTHONPATH on which no PostgreSQL driver imports, as where the postgres extra is not installed."""
    for driver in ("psycopg", "psycopg2"):
        (tmp_path / "hidden" / driver).mkdir(parents=True)
        (tmp_path / "hidden" / driver / "__init__.py").write_text(f"raise ImportError('{driver} is hidden')\n")
    return str(tmp_path / "hidden")


@pytest.mark.parametrize("url, sentence", [
    ("mysqlx://keyfob:hunter2@db/keyfob", "KEYFOB_DATABASE_URL must be sqlite:///PATH (three slashes) or"
                                          " postgresql://USER@HOST/NAME (with pip install 'keyfob[postgres]'),"
                                          " not mysqlx://..."),
    ("postgresql://keyfob:hunter2@127.0.0.1:5432/keyfob", "KEYFOB_DATABASE_URL names a PostgreSQL database, and no"
                                                          " PostgreSQL driver is installed: pip install 'keyfob[postgres]'")])
def test_a_database_keyfob_cannot_open_is_one_sentence_naming_what_to_install(tmp_path, without_postgresql_driver,
                                                                              url, sentence):
    env = keyfob_env(tmp_path / "instance", {"KEYFOB_DATABASE_URL": url, "PYTHONPATH": without_postgresql_driver})
    drivers = subprocess.run([sys.executable, "-c", "import peewee; print(peewee.psycopg, peewee.psycopg2)"],
                             env=env, capture_output=True, text=True, timeout=30)
    assert drivers.stdout == "None None\n"  # peewee, importing them as it does, finds neither
    for command in (("user", "list"), ("db", "version"), ("serve", "--port", str(free_port()))):
        result = keyfob(env, *command)
        assert result.returncode == 1 and result.stderr == f"Error: {sentence}\n" and result.stdout == ""


def test_a_port_in_use_is_one_sentence_not_a_traceback(env):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([KEYFOB, "serve", "--port", str(port)], env=env, capture_output=True, text=True,
                                timeout=30)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "is serving" not in result.stdout
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "--port" in result.stderr


def test_an_address_this_computer_does_not_have_is_named_as_such(env):
    result = subprocess.run([KEYFOB, "serve", "--host", "192.0.2.1", "--port", str(free_port())], env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "choose another with --host" in result.stderr and "Traceback" not in result.stderr


def test_user_add_says_a_name_is_taken_before_asking_for_a_password(env, instance_app):
    assert keyfob(env, "user", "add", "alice", typed="password1\npassword1\n").returncode == 0
    again = keyfob(env, "user", "add", "alice")  # nothing typed: it must not get as far as reading a password
    assert again.returncode == 1 and "A user named 'alice' already exists" in again.stderr

