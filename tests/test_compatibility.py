"""The compatibility matrix: what each real MCP client sends (tests/clients/*.json, with its sources), replayed
black box against a live `keyfob serve` as a new operator starts it. Metadata documents are published on the
suite's local https server. Each client registers or is described, its user signs in and approves through the
real forms, the callback carries code, state and iss, the code becomes a token, the token reaches /api/me, and
once revoked it no longer does."""
import json
import re
import secrets
from pathlib import Path
from urllib.parse import urlencode

import httpx2
import pytest

from actions import PASSWORD
from live import TIMEOUT, Browser, free_port, keyfob_serving, me, revoke
from models import s256

CLIENTS = sorted(Path(__file__).parent.glob("clients/*.json"), key=lambda path: path.stem)


@pytest.fixture(scope="module")
def server(tmp_path_factory, served_database, tls_files):
    """`keyfob serve` with nothing set but where the suite's document server is; a user named for each client
    (sign-in is limited per username)."""
    settings = {**served_database, "KEYFOB_TESTING": "true",
                "KEYFOB_TESTING_CLIENT_DOCUMENT_CA": str(tls_files / "ca.pem"),
                "KEYFOB_TESTING_CLIENT_DOCUMENT_ADDRESSES": '["127.0.0.1", "::1"]'}
    users = [(path.stem, PASSWORD) for path in CLIENTS]
    with keyfob_serving(tmp_path_factory.mktemp("instance"), users=users, settings=settings) as base:
        yield base


def fill(template, values):
    """The fixture's strings with each {{name}} replaced by its value."""
    if isinstance(template, dict):
        return {name: fill(value, values) for name, value in template.items()}
    if isinstance(template, list):
        return [fill(value, values) for value in template]
    return re.sub(r"\{\{(\w+)\}\}", lambda match: values[match[1]], template)


def address(path):
    """A loopback address of the client's own: rate limits count per address."""
    return f"127.0.0.{10 + CLIENTS.index(path)}"


def client_id_of(server, fixture, publish, values, local_address):
    """The client ID the client gets: its document's URL, or what registration gives it."""
    if "document" in fixture:
        return publish({name: value for name, value in fixture["document"].items() if name != "client_id"})
    request = fill(fixture["registration"], values)
    with httpx2.Client(transport=httpx2.HTTPTransport(local_address=local_address), timeout=TIMEOUT) as app:
        preflight_if_cross_origin(app, f"{server}/oauth/clients", "POST", request["headers"])
        answer = app.post(f"{server}/oauth/clients", json=request["body"], headers=request["headers"])
    assert answer.status_code == 201, answer.text
    assert answer.json()["redirect_uris"] == request["registers"]
    assert_cross_origin(answer, request["headers"])
    return answer.json()["client_id"]


def preflight_if_cross_origin(app, url, method, headers):
    """A browser's CORS preflight, for a page that sends these headers from another origin."""
    if "Origin" in headers:
        asked = ", ".join(name for name in headers if name not in ("Origin", "Accept"))
        answer = app.options(url, headers={"Origin": headers["Origin"], "Access-Control-Request-Method": method,
                                           "Access-Control-Request-Headers": asked})
        assert answer.status_code == 200 and answer.headers["Access-Control-Allow-Origin"] == "*"
        allowed = answer.headers.get("Access-Control-Allow-Headers", "").lower()
        assert all(name.lower() in allowed for name in asked.split(", ") if name != "Content-Type"), allowed


def assert_cross_origin(answer, headers):
    if "Origin" in headers:
        assert answer.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("path", CLIENTS, ids=lambda path: path.stem)
def test_the_client_connects_with_what_it_sends(server, publish, path):
    fixture, local_address = json.loads(path.read_text()), address(path)
    values = {"port": str(free_port()), "resource": server}
    discovery = fixture.get("discovery_headers", {})
    with httpx2.Client(transport=httpx2.HTTPTransport(local_address=local_address), timeout=TIMEOUT) as app:
        preflight_if_cross_origin(app, f"{server}/.well-known/oauth-authorization-server", "GET", discovery)
        metadata = app.get(f"{server}/.well-known/oauth-authorization-server", headers=discovery)
    assert_cross_origin(metadata, discovery)
    assert metadata.json()["client_id_metadata_document_supported"] is True  # Claude and Codex need both of these
    assert "none" in metadata.json()["token_endpoint_auth_methods_supported"]
    values["client_id"] = client_id_of(server, fixture, publish, values, local_address)
    for callback in fixture["callbacks"]:
        connects(server, fixture, path.stem, local_address, {**values, "redirect_uri": fill(callback, values)})


def connects(server, fixture, username, local_address, values):
    """One connection: authorize, approve, redeem, call the API, revoke."""
    verifier = secrets.token_urlsafe(48)
    values = {**values, "verifier": verifier, "challenge": s256(verifier), "state": secrets.token_urlsafe(12)}
    paths = {"authorize": "/oauth/authorization/new", "token": "/oauth/token", **fixture.get("paths", {})}
    authorize = fill(fixture["authorize"], values)
    with Browser(server, local_address=local_address) as browser:
        answer = browser.approve(f"{paths['authorize']}?{urlencode(authorize)}", username=username)
    assert answer["state"] == authorize["state"] and answer["iss"] == server  # RFC 9207, which some clients demand
    token_request = fill(fixture["token"], {**values, "code": answer["code"]})
    with httpx2.Client(transport=httpx2.HTTPTransport(local_address=local_address), timeout=TIMEOUT) as app:
        preflight_if_cross_origin(app, server + paths["token"], "POST", token_request["headers"])
        issued = app.post(server + paths["token"], content=urlencode(token_request["body"]),
                          headers=token_request["headers"])
    assert issued.status_code == 200, issued.text
    assert_cross_origin(issued, token_request["headers"])
    token = issued.json()["access_token"]
    assert issued.json()["token_type"] == "Bearer" and issued.json()["scope"] == authorize["scope"]
    assert me(server, token).json()["user"] == username
    assert revoke(server, token, values["client_id"]).status_code == 200
    assert me(server, token).status_code == 401


def test_vs_code_registers_its_loopback_redirects_when_it_falls_back_from_its_document(server):
    """Of VS Code's four redirect URIs, a default Keyfob registers the two loopback ones; the https ones need
    KEYFOB_TRUSTED_REDIRECT_HOSTS (test_clients.py)."""
    request = json.loads((Path(__file__).parent / "clients" / "vscode.json").read_text())["fallback_registration"]
    with httpx2.Client(transport=httpx2.HTTPTransport(local_address="127.0.0.9"), timeout=TIMEOUT) as app:
        answer = app.post(f"{server}/oauth/clients", json=request["body"], headers=request["headers"])
    assert answer.status_code == 201 and answer.json()["redirect_uris"] == request["registers"]
    assert answer.json()["grant_types"] == ["authorization_code"]
