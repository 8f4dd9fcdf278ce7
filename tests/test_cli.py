"""The `keyfob` command as a user runs it: the installed script in its own process, a fresh instance folder
for every test, and real HTTP against `keyfob serve`."""
import json
import os
import socket
import sqlite3
import stat
import subprocess
import time
import urllib.request
from contextlib import closing
from pathlib import Path

import pytest

from app import create_app
from conftest import csrf_token
from live import KEYFOB, free_port
from models import User, db



@pytest.fixture
def instance(tmp_path):
    return tmp_path / "instance"


@pytest.fixture
def env(instance):
    """The user's environment without any KEYFOB_ settings of ours, pointed at the test's instance folder."""
    clean = {name: value for name, value in os.environ.items() if not name.startswith("KEYFOB_")}
    return clean | {"KEYFOB_INSTANCE_PATH": str(instance), "PYTHONUNBUFFERED": "1"}


def keyfob(env, *args, typed=""):
    return subprocess.run([KEYFOB, *args], input=typed, env=env, cwd=Path(env["KEYFOB_INSTANCE_PATH"]).parent,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def instance_app(instance, monkeypatch):
    """The app the instance folder makes, as `keyfob serve` would build it, opened in this process."""
    for name in [name for name in os.environ if name.startswith("KEYFOB_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("KEYFOB_INSTANCE_PATH", str(instance))
    opened = []

    def open_app():
        opened.append(create_app())
        return opened[-1]
    yield open_app
    if opened:
        db.close()


def signs_in(app, username, password):
    client = app.test_client()
    form = {"username": username, "password": password, "csrf_token": csrf_token(client.get("/session/new"))}
    return client.post("/session", data=form).status_code == 302


def test_user_add_creates_a_user_who_can_sign_in(env, instance_app):
    added = keyfob(env, "user", "add", "alice", typed="pw\npw\n")
    assert added.returncode == 0 and "Added user alice" in added.stdout
    app = instance_app()
    assert signs_in(app, "alice", "pw") and not signs_in(app, "alice", "wrong")


def test_user_add_refuses_an_existing_name_and_keeps_the_first_password(env, instance_app):
    assert keyfob(env, "user", "add", "alice", typed="pw\npw\n").returncode == 0
    again = keyfob(env, "user", "add", "alice", typed="other\nother\n")
    assert again.returncode != 0 and "A user named 'alice' already exists" in again.stderr
    app = instance_app()
    assert signs_in(app, "alice", "pw") and not signs_in(app, "alice", "other")


@pytest.mark.parametrize("name, typed, message", [
    ("alice", "", "The password must not be empty"), ("alice", "\n\n", "The password must not be empty"),
    ("alice", "pw\nwp\n", "The two passwords do not match"), ("alice", "pw\n", "The two passwords do not match"),
    ("no spaces", "pw\npw\n", "A username is 1 to 150 letters")])
def test_user_add_refuses_bad_input_with_a_clear_message(env, instance_app, name, typed, message):
    result = keyfob(env, "user", "add", name, typed=typed)
    assert result.returncode != 0 and message in result.stderr
    instance_app()
    assert User.select().count() == 0


def test_first_run_creates_a_private_secret_key_that_later_runs_reuse(env, instance):
    assert keyfob(env, "user", "add", "alice", typed="pw\npw\n").returncode == 0
    secret_key = instance / "secret_key"
    assert stat.S_IMODE(secret_key.stat().st_mode) == 0o600
    first = secret_key.read_text()
    assert keyfob(env, "user", "add", "bob", typed="pw\npw\n").returncode == 0
    assert len(first) >= 64 and secret_key.read_text() == first


def test_the_database_runs_in_wal_mode(env, instance):
    assert keyfob(env, "user", "add", "alice", typed="pw\npw\n").returncode == 0
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


def test_serve_prints_its_url_and_answers_discovery_over_http(serve):
    port, banner = serve()
    assert banner.startswith(f"Keyfob is serving http://127.0.0.1:{port} ")
    document = metadata(port)
    assert document["issuer"] == f"http://127.0.0.1:{port}"
    assert document["token_endpoint"] == f"http://127.0.0.1:{port}/oauth/token"


def test_serve_takes_its_issuer_from_keyfob_issuer(serve):
    port, banner = serve(KEYFOB_ISSUER="https://keyfob.example.test/")
    assert banner.startswith("Keyfob is serving https://keyfob.example.test ")
    document = metadata(port)
    assert document["issuer"] == "https://keyfob.example.test"
    assert document["authorization_endpoint"] == "https://keyfob.example.test/oauth/authorization/new"
