"""Discovery: RFC 8414 authorization server metadata and RFC 9728 protected resource metadata."""
import pytest


def test_metadata_advertises_the_endpoints_under_one_issuer(client):
    metadata = client.get("/.well-known/oauth-authorization-server").json
    assert metadata["issuer"] == "http://localhost"
    assert metadata["authorization_endpoint"] == "http://localhost/oauth/authorization/new"
    assert metadata["token_endpoint"] == "http://localhost/oauth/token"
    assert metadata["registration_endpoint"] == "http://localhost/oauth/clients"
    assert metadata["revocation_endpoint"] == "http://localhost/oauth/revocation"
    assert metadata["response_types_supported"] == ["code"]
    assert metadata["grant_types_supported"] == ["authorization_code"]
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["token_endpoint_auth_methods_supported"] == ["none", "client_secret_basic", "client_secret_post"]
    assert metadata["revocation_endpoint_auth_methods_supported"] == ["none", "client_secret_basic", "client_secret_post"]
    assert metadata["scopes_supported"] == ["read", "write"]
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert None not in metadata.values()


def test_protected_resource_metadata_names_this_server(client):
    metadata = client.get("/.well-known/oauth-protected-resource").json
    assert metadata["resource"] == "http://localhost"
    assert metadata["authorization_servers"] == ["http://localhost"]
    assert metadata["bearer_methods_supported"] == ["header"]


@pytest.mark.parametrize("config_issuer, expected", [("https://auth.example.com/", "https://auth.example.com"),
                                                      (None, "http://localhost")])
def test_issuer_comes_from_configuration_without_a_trailing_slash(config, config_issuer, expected, tmp_path, monkeypatch):
    from app import create_app
    monkeypatch.setenv("KEYFOB_INSTANCE_PATH", str(tmp_path / "i"))
    client = create_app({**config, "ISSUER": config_issuer}).test_client()
    assert client.get("/.well-known/oauth-authorization-server").json["issuer"] == expected
    assert client.get("/.well-known/oauth-protected-resource").json["authorization_servers"] == [expected]


def test_metadata_never_follows_the_host_header(client):
    headers = {"Host": "evil.example"}
    assert client.get("/.well-known/oauth-authorization-server", headers=headers).json["token_endpoint"] == (
        "http://localhost/oauth/token")
    assert client.get("/.well-known/oauth-protected-resource", headers=headers).json["resource"] == "http://localhost"


def test_metadata_is_readable_by_browser_clients(client):
    response = client.options("/.well-known/oauth-authorization-server", headers={
        "Origin": "http://example.test", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "mcp-protocol-version"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "mcp-protocol-version" in response.headers["Access-Control-Allow-Headers"].lower()
    assert "Access-Control-Allow-Credentials" not in response.headers
