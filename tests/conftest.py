import fcntl
import itertools
import json
import os
import secrets
import ssl
import tempfile
import subprocess
import sys
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx2
import psycopg
import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis.configuration import set_hypothesis_home_dir

from actions import ISSUER, PASSWORD, REDIRECT_URI, Actions
from app import create_app
from live import (DOCUMENT_CALLBACK, MCP_SERVER_EXAMPLE, Documents, certificate, example_serving, free_port,
                  keyfob_serving)
from models import AccessToken, Client, User, db, s256

# Hypothesis keeps its examples and the constants it reads from the source (with this machine's paths) out of the
# project folder.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "keyfob-hypothesis")

POSTGRESQL = "postgresql://postgres@127.0.0.1:5432"
DATABASES = ("sqlite", "postgresql")
databases_made = itertools.count()


@pytest.fixture(scope="session")
def postgresql():
    """The local PostgreSQL server's admin connection, or a skip that says why there is none."""
    try:
        connection = psycopg.connect(f"{POSTGRESQL}/postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL is not answering at {POSTGRESQL} (start it to run these tests): {error}")
    with connection:
        yield connection


@pytest.fixture(scope="session")
def new_postgresql_database(postgresql):
    """Make empty databases of this test run's own; each is dropped at the end of the run."""
    made = []

    def new_postgresql_database():
        made.append(f"keyfob_test_{os.getpid()}_{next(databases_made)}")
        postgresql.execute(f"CREATE DATABASE {made[-1]}")
        return f"{POSTGRESQL}/{made[-1]}"
    yield new_postgresql_database
    for name in made:
        postgresql.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def shared_postgresql(new_postgresql_database):
    return new_postgresql_database()


@pytest.fixture(scope="module")
def limiter_storage(request):
    """The Redis database the module names in REDIS, emptied before and after: limits its processes share."""
    url = request.module.REDIS
    try:
        storage = redis.Redis.from_url(url, socket_timeout=3)
        storage.flushdb()
    except redis.RedisError as error:
        pytest.skip(f"Redis is not answering at {url} (start it to run these tests): {error}")
    yield url
    storage.flushdb()


@pytest.fixture
def emptied_postgresql(shared_postgresql):
    """The shared PostgreSQL database with every row of every table deleted (the schema's version kept)."""
    with psycopg.connect(shared_postgresql, autocommit=True) as connection:
        connection.execute("SET lock_timeout = '10s'")
        tables = [row[0] for row in connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'schema_migrations'")]
        if tables:
            connection.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    return shared_postgresql


@pytest.fixture(params=DATABASES)
def database_url(request, tmp_path):
    """Each test that opens the app runs on a fresh SQLite file and again on PostgreSQL, emptied for it."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/keyfob.db"
    return request.getfixturevalue("emptied_postgresql")


@pytest.fixture(params=DATABASES)
def instance_database(request):
    """The KEYFOB_ settings of a `keyfob` command: the instance's SQLite file, or PostgreSQL emptied for the test."""
    if request.param == "sqlite":
        return {}
    return {"KEYFOB_DATABASE_URL": request.getfixturevalue("emptied_postgresql")}


@pytest.fixture(scope="module", params=DATABASES)
def served_database(request):
    """The KEYFOB_ settings that put a module's live server on the instance's SQLite file, or on a
    PostgreSQL database of its own."""
    if request.param == "sqlite":
        return {}
    return {"KEYFOB_DATABASE_URL": request.getfixturevalue("new_postgresql_database")()}


@pytest.fixture
def config(tmp_path, database_url):
    return {"TESTING": True, "SECRET_KEY": "test-" + "k" * 40, "ISSUER": ISSUER,
            "DATABASE_URL": database_url, "RATELIMIT_ENABLED": False}


@pytest.fixture
def app(config, tmp_path, monkeypatch):
    monkeypatch.setenv("KEYFOB_INSTANCE_PATH", str(tmp_path / "instance"))
    yield create_app(config)
    db.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def stored_bytes(app):
    """Everything the app's database holds, when called: SQLite's files as written (the write-ahead log too), or
    every row of a PostgreSQL database as pg_dump prints it."""
    def stored_bytes():
        url = app.config["DATABASE_URL"]
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            return b"".join(file.read_bytes() for file in sorted(path.parent.glob(path.name + "*")))
        return subprocess.run(["pg_dump", "--data-only", url], capture_output=True, check=True, timeout=60).stdout
    return stored_bytes


@pytest.fixture(scope="session")
def password_digest():
    """Hashed once, as Keyfob hashes (argon2id is slow on purpose), for every user here shares the password."""
    return User.digest_of(PASSWORD)


@pytest.fixture
def user(app, password_digest):
    return User.create(username="alice", password_digest=password_digest)


@pytest.fixture
def other_user(app, password_digest):
    return User.create(username="mallory", password_digest=password_digest)


@pytest.fixture
def oauth_client(app):
    return Client.create(name="Test App", redirect_uris=[REDIRECT_URI], dynamically_registered=True)


@pytest.fixture
def other_oauth_client(app):
    return Client.create(name="Other App", redirect_uris=["http://127.0.0.1:9999/cb"], dynamically_registered=True)


@pytest.fixture
def access_token(user, oauth_client):
    return AccessToken.issue(user, oauth_client, scope="read")


@pytest.fixture
def pkce():
    verifier = secrets.token_urlsafe(48)
    return verifier, s256(verifier)


@pytest.fixture
def authorize_params(oauth_client, pkce):
    return {"client_id": oauth_client.client_id, "redirect_uri": REDIRECT_URI, "response_type": "code",
            "code_challenge": pkce[1], "code_challenge_method": "S256", "state": "xyz-state", "scope": "read"}


@pytest.fixture
def actions(client):
    """What a person and an MCP client do, through the test client (flaskr's `auth`)."""
    return Actions(client)


@pytest.fixture
def signed_in(actions, user):
    assert actions.sign_in().status_code == 302
    return user


@pytest.fixture
def code(signed_in, actions, authorize_params):
    return actions.query(actions.approve(authorize_params))["code"]


@pytest.fixture
def exchange(oauth_client, pkce, code):
    """A valid token request for the code."""
    return {"grant_type": "authorization_code", "client_id": oauth_client.client_id, "code": code,
            "code_verifier": pkce[0], "redirect_uri": REDIRECT_URI}


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="session")
def node_modules():
    """tests/ts/node_modules (the MCP TypeScript SDK client), installed from package-lock.json once per test run:
    with pytest-xdist, the first worker to need it installs it, and the others wait and use it."""
    folder, run = Path(__file__).parent / "ts", os.environ.get("PYTEST_XDIST_TESTRUNUID", f"pid {os.getpid()}")
    with open(folder / "node_modules.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.seek(0)
        if lock.read() != run:
            installed = subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=folder, capture_output=True,
                                       text=True, timeout=300)
            assert installed.returncode == 0, installed.stdout + installed.stderr
            lock.truncate(0)
            lock.write(run)


@pytest.fixture(scope="module")
def notes_url():
    return f"http://127.0.0.1:{free_port()}/mcp"


@pytest.fixture(scope="module")
def keyfob_instance(tmp_path_factory):
    return tmp_path_factory.mktemp("instance")


@pytest.fixture(scope="module")
def keyfob(keyfob_instance, notes_url, served_database):
    """A real `keyfob serve`, as the README starts it; one user, alice. It issues tokens for notes_url once `notes`
    registers the example there as a resource server."""
    with keyfob_serving(keyfob_instance, settings=served_database) as base:
        yield base


@pytest.fixture(scope="module")
def notes(keyfob, keyfob_instance, notes_url, tmp_path_factory, served_database):
    """examples/mcp_server.py, introspecting at Keyfob as the resource server `Notes`; its URL."""
    command = [sys.executable, MCP_SERVER_EXAMPLE, "--port", str(httpx2.URL(notes_url).port), "--keyfob", keyfob]
    with example_serving(command, keyfob_instance, notes_url, tmp_path_factory.mktemp("notes"), served_database):
        yield notes_url


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    """A certificate authority of the test run's own, and a server certificate it signed for localhost."""
    folder = tmp_path_factory.mktemp("tls")
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate("Keyfob test CA", "Keyfob test CA", ca_key, ca_key, ca=True)
    server = certificate("localhost", "Keyfob test CA", server_key, ca_key, names=["localhost"])
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    (folder / "server.key").write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return folder


@pytest.fixture(scope="session")
def document_server(tls_files):
    """An HTTPS server on 127.0.0.1 answering for https://localhost:PORT; its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Documents)
    server.daemon_threads = True
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls_files / "server.pem", tls_files / "server.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://localhost:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def publish(document_server):
    """Serve a document at a fresh path; returns its URL (the client_id)."""
    def publish(document=None, status=200, headers=None, body=None, delay=0, trickle=0, name=None):
        path = f"/clients/{name or time.monotonic_ns()}.json"
        url = document_server + path
        if body is None:
            document = {"client_id": url, "client_name": "Notes Desktop", "redirect_uris": [DOCUMENT_CALLBACK],
                        "token_endpoint_auth_method": "none", **(document or {})}
            body = json.dumps(document).encode()
        Documents.routes[path] = (status, {"Content-Type": "application/json", **(headers or {})}, body, delay, trickle)
        return url
    return publish
