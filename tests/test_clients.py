"""Dynamic client registration (RFC 7591) for MCP clients on loopback redirects."""
import pytest

from models import Client

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
    assert body["client_name"] == "MCP Client" and body["scope"] == "read"


@pytest.mark.parametrize("scope, registered", [("write", "read write"), ("read", "read"), ("admin", "read"),
                                               ("read admin write", "read write"), ("", "read")])
def test_registration_canonicalises_scope(client, scope, registered):
    body = client.post("/oauth/clients", json={"redirect_uris": ["http://localhost/cb"], "scope": scope}).json
    assert body["scope"] == registered


def test_registration_strips_control_and_format_characters_from_the_name(client):
    name = "Good\u202eApp\x00\n"
    body = client.post("/oauth/clients", json={"redirect_uris": ["http://localhost/cb"], "client_name": name}).json
    assert body["client_name"] == "GoodApp"


def test_registration_accepts_a_255_character_name_and_refuses_256(client):
    ok = client.post("/oauth/clients", json={"redirect_uris": ["http://localhost/cb"], "client_name": "n" * 255})
    too_long = client.post("/oauth/clients", json={"redirect_uris": ["http://localhost/cb"], "client_name": "n" * 256})
    assert ok.status_code == 201 and too_long.json["error"] == "invalid_client_metadata"


@pytest.mark.parametrize("metadata", [{}, {"redirect_uris": []}, {"redirect_uris": None}])
def test_registration_requires_redirect_uris(client, metadata):
    assert client.post("/oauth/clients", json=metadata).json["error"] == "invalid_client_metadata"


@pytest.mark.parametrize("uris", [
    ["https://example.com/cb"], ["http://example.com/cb"], ["myapp://cb"], ["http://127.0.0.1/cb#"],
    ["http://127.0.0.1@evil.com/"], ["http://localhost/cb", "https://evil.example/"], "http://localhost/cb",
    [42], [["http://localhost/cb"]], ["http://localhost/cb"] * 11, ["http://localhost/" + "a" * 600]])
def test_registration_refuses_anything_but_http_loopback_redirects(client, uris):
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
