"""Dynamic client registration (RFC 7591): loopback, native apps' and trusted https redirects."""
import pytest

from app import create_app
from models import AuditEvent, Client, Refused, now

MCP_SDK_METADATA = {"client_name": "SDK client", "redirect_uris": ["http://127.0.0.1:33418/callback"],
                    "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
                    "scope": "read write", "token_endpoint_auth_method": "client_secret_post",
                    "application_type": "native"}


def test_registration_creates_a_public_client_and_echoes_its_metadata(client):
    response = client.post("/oauth/clients", json=MCP_SDK_METADATA)
    assert response.status_code == 201 and response.headers["Cache-Control"] == "no-store"
    body = response.json
    assert body["client_name"] == "SDK client" and body["redirect_uris"] == ["http://127.0.0.1:33418/callback"]
    assert body["token_endpoint_auth_method"] == "none" and "client_secret" not in body
    assert body["grant_types"] == ["authorization_code"] and body["response_types"] == ["code"]
    assert body["scope"] == "read write" and None not in body.values()
    stored = Client.get(Client.client_id == body["client_id"])
    assert stored.dynamically_registered and len(body["client_id"]) == 32


def test_registration_defaults_the_name_and_scope(client):
    body = client.post("/oauth/clients", json={"redirect_uris": ["http://localhost/cb"]}).json
    assert body["client_name"] == "MCP Client" and body["scope"] == "read write"


@pytest.mark.parametrize("scope, registered", [("write", "read write"), ("read", "read write"), ("admin", "read write"),
                                               ("read admin write", "read write"), ("", "read write")])
def test_a_self_registered_client_may_ask_for_every_scope_whatever_it_names(client, scope, registered):
    """The MCP SDKs register with the first challenge's scope, then step up: the registered scope is a ceiling."""
    body = client.post("/oauth/clients", json={"redirect_uris": ["http://localhost/cb"], "scope": scope}).json
    assert body["scope"] == registered


def test_registration_strips_control_and_format_characters_from_the_name(client):
    name = "Good\u202eApp\x00\n"
    body = client.post("/oauth/clients", json={"redirect_uris": ["http://localhost/cb"], "client_name": name}).json
    assert body["client_name"] == "GoodApp"


@pytest.mark.parametrize("name, description", [
    ("\u3164\u3164\u3164", "client_name must have a visible letter"), ("\u200b\t", "client_name must have a visible letter"),
    ("Reader\u0301\u0302\u0303\u0304", "client_name must not stack more than 2 combining marks on a character"),
    ("✔ Verified by Keyfob. This app is part of Keyfob itself.", 'client_name must not contain "Keyfob" or "verified"')])
def test_registration_refuses_a_name_that_could_spoof_the_consent_page(client, name, description):
    response = client.post("/oauth/clients", json={"redirect_uris": ["http://localhost/cb"], "client_name": name})
    assert response.status_code == 400 and response.json["error"] == "invalid_client_metadata"
    assert response.json["error_description"].startswith(description) and Client.select().count() == 0


def test_self_registration_accepts_a_100_character_name_and_refuses_101(client):
    """Anyone may register: a name of 100 characters is far more than any real client sends (25 at most)."""
    ok = client.post("/oauth/clients", json={"redirect_uris": ["http://localhost/cb"], "client_name": "n" * 100})
    too_long = client.post("/oauth/clients", json={"redirect_uris": ["http://localhost/cb"], "client_name": "n" * 101})
    assert ok.status_code == 201 and too_long.json["error"] == "invalid_client_metadata"
    assert too_long.json["error_description"] == "client_name must be a string of at most 100 characters"


@pytest.mark.parametrize("metadata", [{}, {"redirect_uris": []}, {"redirect_uris": None}])
def test_registration_requires_redirect_uris(client, metadata):
    assert client.post("/oauth/clients", json=metadata).json["error"] == "invalid_client_metadata"


@pytest.mark.parametrize("uris", [
    ["https://example.com/cb"], ["http://example.com/cb"], ["myapp://cb"], ["http://127.0.0.1/cb#"],
    ["http://127.0.0.1@evil.com/"], "http://localhost/cb",
    [42], [["http://localhost/cb"]], ["http://localhost/cb"] * 11, ["http://localhost/" + "a" * 600]])
def test_registration_refuses_when_no_redirect_uri_may_be_registered(client, uris):
    response = client.post("/oauth/clients", json={"redirect_uris": uris})
    assert response.status_code == 400 and response.json["error"] == "invalid_redirect_uri"
    assert Client.select().count() == 0


@pytest.mark.parametrize("metadata", [
    {"client_name": 42}, {"client_name": ["x"]}, {"scope": ["read"]}, {"token_endpoint_auth_method": "private_key_jwt"},
    {"grant_types": ["client_credentials"]}, {"grant_types": "authorization_code"}, {"response_types": ["token"]}])
def test_registration_refuses_invalid_metadata(client, metadata):
    response = client.post("/oauth/clients", json={"redirect_uris": ["http://localhost/cb"], **metadata})
    assert response.status_code == 400 and response.json["error"] == "invalid_client_metadata"
    assert Client.select().count() == 0


@pytest.mark.parametrize("body, content_type", [
    ('{"redirect_uris": ["http://localhost/cb"]', "application/json"), ("[]", "application/json"),
    ("null", "application/json"), ("redirect_uris=http://localhost/cb", "application/x-www-form-urlencoded")])
def test_registration_needs_a_json_object(client, body, content_type):
    response = client.post("/oauth/clients", data=body, content_type=content_type)
    assert response.status_code == 400 and response.json["error"] == "invalid_client_metadata"


class TestRateLimit:
    @pytest.fixture
    def config(self, config):
        return {**config, "RATELIMIT_ENABLED": True}

    def test_registration_allows_10_a_minute_per_address(self, client):
        answers = [client.post("/oauth/clients", json={"redirect_uris": ["http://localhost/cb"]}) for _ in range(11)]
        assert [answer.status_code for answer in answers] == [201] * 10 + [429]
        assert answers[10].json["error"] == "slow_down" and Client.select().count() == 10

    def test_an_ipv6_address_counts_by_its_64(self, client):
        """A host usually holds a whole /64: one bucket for it, not 2^64."""
        def register(address):
            return client.post("/oauth/clients", json={"redirect_uris": ["http://localhost/cb"]},
                               environ_base={"REMOTE_ADDR": address}).status_code
        assert [register(f"2001:db8::{n:x}") for n in range(1, 12)] == [201] * 10 + [429]
        assert register("2001:db8:0:1::1") == 201

    def test_ipv4_clients_on_a_dual_stack_socket_count_each_by_its_own_address(self, client):
        """gunicorn on [::] sees IPv4 clients as ::ffff:a.b.c.d: they are not one /64."""
        def register(address):
            return client.post("/oauth/clients", json={"redirect_uris": ["http://localhost/cb"]},
                               environ_base={"REMOTE_ADDR": address}).status_code
        assert [register("::ffff:192.0.2.1") for _ in range(11)] == [201] * 10 + [429]
        assert register("::ffff:192.0.2.2") == 201 and register("192.0.2.1") == 429


def test_self_registration_stores_at_most_5_redirect_uris_of_256_characters(client):
    """Anyone may register, so what they may store is small: enough for every client in the compatibility
    matrix (at most 4 URIs, the longest 53 characters)."""
    longest = "http://127.0.0.1/" + "a" * (256 - len("http://127.0.0.1/"))
    taken = client.post("/oauth/clients", json={"redirect_uris": [longest] * 5})
    assert taken.status_code == 201 and taken.json["redirect_uris"] == [longest]
    too_long = client.post("/oauth/clients", json={"redirect_uris": [longest + "a"]})
    assert too_long.json["error"] == "invalid_redirect_uri" and "at most 256 characters" in too_long.json["error_description"]
    too_many = client.post("/oauth/clients", json={"redirect_uris": [f"http://127.0.0.1/{n}" for n in range(6)]})
    assert too_many.status_code == 400 and too_many.json["error"] == "invalid_redirect_uri"


class TestPendingClients:
    """Past KEYFOB_MAX_PENDING_CLIENTS self-registered clients that never obtained a token, registration waits
    for housekeeping: an anonymous loop cannot fill the database."""

    @pytest.fixture
    def config(self, config):
        return {**config, "MAX_PENDING_CLIENTS": 3}

    def test_registration_slows_down_past_the_cap_until_a_client_obtains_a_token(self, client):
        answers = [client.post("/oauth/clients", json={"redirect_uris": ["http://localhost/cb"]}) for _ in range(4)]
        assert [answer.status_code for answer in answers] == [201] * 3 + [429]
        assert answers[3].json["error"] == "slow_down" and answers[3].headers["Retry-After"] == "600"
        Client.update(first_token_at=1).where(Client.client_id == answers[0].json["client_id"]).execute()
        assert client.post("/oauth/clients", json={"redirect_uris": ["http://localhost/cb"]}).status_code == 201

    def test_the_oldest_idle_client_makes_way_so_no_loop_locks_registration_for_long(self, client):
        """Someone registering in a loop from many addresses fills the cap; an hour on, the oldest unused client
        goes first, and a client that is being approved right now is never the one."""
        ids = [client.post("/oauth/clients", json={"redirect_uris": ["http://localhost/cb"]}).json["client_id"]
               for _ in range(3)]
        Client.update(created_at=now() - 2 * 60 * 60).where(Client.client_id << ids[:2]).execute()
        Client.update(last_authorized_at=now()).where(Client.client_id == ids[0]).execute()  # a consent in flight
        assert client.post("/oauth/clients", json={"redirect_uris": ["http://localhost/cb"]}).status_code == 201
        assert [Client.find_by("client_id", client_id) is not None for client_id in ids] == [True, False, True]

    def test_apps_of_users_and_of_the_operator_do_not_count(self, client, user):
        for n in range(3):
            Client.registered_by_user(user, f"App {n}", ["https://app.example.com/cb"])
        assert client.post("/oauth/clients", json={"redirect_uris": ["http://localhost/cb"]}).status_code == 201


@pytest.mark.parametrize("setting", ["0", "-1", "many", "1.5"])
def test_the_pending_client_cap_must_be_a_whole_number(config, setting, monkeypatch, tmp_path):
    monkeypatch.setenv("KEYFOB_MAX_PENDING_CLIENTS", setting)
    with pytest.raises(ValueError, match="KEYFOB_MAX_PENDING_CLIENTS"):
        create_app(config)


def test_the_audit_trail_keeps_where_a_self_registered_client_leads_not_its_uris(client):
    client.post("/oauth/clients", json={"redirect_uris": ["http://127.0.0.1:8765/callback?x=" + "a" * 200,
                                                         "com.example.app:/cb"]})
    event = AuditEvent.get(AuditEvent.event == "client.registered")
    assert event.details == {"redirect_uris": 2, "destinations": "127.0.0.1:8765 the app for com.example.app: links",
                             "kind": "self"}


CURSOR = ["cursor://anysphere.cursor-mcp/oauth/callback", "https://www.cursor.com/agents/mcp/oauth/callback",
          "http://localhost:8787/callback"]  # tests/clients/cursor.json
VS_CODE = ["https://insiders.vscode.dev/redirect", "https://vscode.dev/redirect", "http://127.0.0.1/",
           "http://127.0.0.1:33418/"]  # tests/clients/vscode.json


@pytest.mark.parametrize("uris, registered", [
    (CURSOR, [CURSOR[0], CURSOR[2]]), (VS_CODE, VS_CODE[2:]),
    (["http://localhost/cb", "https://evil.example/", "javascript:alert(1)"], ["http://localhost/cb"]),
    (["com.example.notes:/oauth", "com.example.notes:/oauth"], ["com.example.notes:/oauth"])])
def test_registration_keeps_the_redirect_uris_it_may_register_and_says_so(client, uris, registered):
    """RFC 7591 §3.2.1: the server may register less than it was asked for, and answers with what it registered."""
    response = client.post("/oauth/clients", json={"redirect_uris": uris, "application_type": "web"})
    assert response.status_code == 201 and response.json["redirect_uris"] == registered
    assert Client.find_by("client_id", response.json["client_id"]).redirect_uris == registered


def test_registration_names_each_refused_uri_and_why(client):
    uris = ["https://evil.example/cb", "myapp://cb", "data:text/html,x", "http://example.com/cb"]
    response = client.post("/oauth/clients", json={"redirect_uris": uris})
    assert response.status_code == 400 and response.json["error"] == "invalid_redirect_uri"
    description = response.json["error_description"]
    assert "https://evil.example/cb is not https on a host this server trusts" in description
    assert "myapp://cb uses myapp:, which is not a trusted app scheme" in description
    assert "data:text/html,x uses data:, which the browser handles itself" in description
    assert "http://example.com/cb is not http loopback" in description
    assert Client.select().count() == 0


def test_registration_answers_with_what_keyfob_does_in_place_of_what_it_does_not(client):
    response = client.post("/oauth/clients", json={
        "redirect_uris": ["http://127.0.0.1/cb"], "grant_types": ["authorization_code", "refresh_token",
                                                                  "urn:ietf:params:oauth:grant-type:device_code"],
        "response_types": ["code"], "application_type": "native", "client_uri": "https://app.example",
        "software_id": "x", "logo_uri": "https://app.example/logo.png", "scope": "read write offline_access"})
    assert response.status_code == 201
    assert {name: response.json[name] for name in ("grant_types", "response_types", "token_endpoint_auth_method",
                                                   "scope")} == {"grant_types": ["authorization_code"],
                                                                 "response_types": ["code"],
                                                                 "token_endpoint_auth_method": "none",
                                                                 "scope": "read write"}
    assert "application_type" not in response.json and "software_id" not in response.json


def test_registration_is_also_answered_at_the_root_for_clients_that_ignore_the_metadata(client):
    response = client.post("/register", json={"redirect_uris": ["http://localhost/cb"]})
    assert response.status_code == 201 and response.headers["Cache-Control"] == "no-store"
    assert client.post("/register", json={}).json["error"] == "invalid_client_metadata"


class TestTrustedRedirects:
    @pytest.fixture
    def config(self, config):
        return {**config, "TRUSTED_REDIRECT_HOSTS": "vscode.dev, insiders.vscode.dev,www.cursor.com",
                "TRUSTED_REDIRECT_SCHEMES": "cursor,myapp"}

    @pytest.mark.parametrize("uris", [CURSOR, VS_CODE, ["myapp://cb"]])
    def test_registration_takes_https_on_trusted_hosts_and_trusted_app_schemes(self, client, uris):
        response = client.post("/oauth/clients", json={"redirect_uris": uris})
        assert response.status_code == 201 and response.json["redirect_uris"] == uris

    @pytest.mark.parametrize("uri", [
        "vscode://cb",  # a default scheme, no longer trusted once the setting lists others
        "https://VSCODE.dev/redirect", "https://vscode.dev./redirect", "https://vscode.dev.evil.com/redirect",
        "https://evil.com@vscode.dev/redirect", "https://vscode.dev@evil.com/redirect", "https://vscode.dev:99999/x",
        "https://vscоde.dev/redirect", "https://xn--vscde-3ve.dev/redirect", "https://vscode.dev/redirect#x",
        "https://vscode.dev/a/../redirect", "http://vscode.dev/redirect", "https://sub.vscode.dev/redirect",
        "myapp://u@host/cb", "myapp://cb#x", "MYAPP://cb", "javascript:alert(1)", "vbscript:x", "file:///etc/passwd",
        "blob:https://vscode.dev/x", "about:blank", "ws://127.0.0.1/", "wss://vscode.dev/", "ftp://vscode.dev/"])
    def test_registration_refuses_tricks_against_the_trusted_lists(self, client, uri):
        response = client.post("/oauth/clients", json={"redirect_uris": [uri]})
        assert response.status_code == 400 and response.json["error"] == "invalid_redirect_uri"
        assert Client.select().count() == 0


@pytest.mark.parametrize("setting, value", [
    ("TRUSTED_REDIRECT_SCHEMES", "javascript"), ("TRUSTED_REDIRECT_SCHEMES", "https"),
    ("TRUSTED_REDIRECT_SCHEMES", "my app"), ("TRUSTED_REDIRECT_HOSTS", "Claude.AI"),
    ("TRUSTED_REDIRECT_HOSTS", "clаude.ai"), ("TRUSTED_REDIRECT_HOSTS", "claude.ai/api"),
    ("TRUSTED_REDIRECT_HOSTS", "*.claude.ai")])
def test_a_setting_that_would_trust_a_browser_scheme_or_no_host_stops_keyfob_starting(config, setting, value):
    with pytest.raises(Refused, match=f"KEYFOB_{setting}"):
        create_app({**config, setting: value})


def test_a_scheme_with_capitals_is_refused_for_what_it_is(client):
    response = client.post("/oauth/clients", json={"redirect_uris": ["Cursor://anysphere.cursor-mcp/oauth/callback"]})
    assert response.json["error"] == "invalid_redirect_uri" and "lower case" in response.json["error_description"]
