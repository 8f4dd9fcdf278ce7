"""The built-in API as a resource server (RFC 6750, RFC 9728 challenges)."""
import pytest

from models import AccessToken

METADATA = 'resource_metadata="http://localhost/.well-known/oauth-protected-resource"'


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_api_answers_who_the_token_acts_for(client, access_token, oauth_client):
    response = client.get("/api/me", headers=bearer(access_token.token))
    assert response.json == {"user": "alice", "scope": "read", "client_id": oauth_client.client_id}


def test_api_reports_a_personal_token_without_client(client, user):
    response = client.get("/api/me", headers=bearer(AccessToken.issue(user, scope="read write").token))
    assert response.json == {"user": "alice", "scope": "read write", "client_id": None}


def test_api_accepts_the_scheme_in_any_case(client, access_token):
    assert client.get("/api/me", headers={"Authorization": f"bEaReR {access_token.token}"}).status_code == 200


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic dXNlcjpwdw=="}, {"Authorization": ""}])
def test_api_challenges_a_request_without_a_bearer_token_with_no_error_code(client, headers):
    response = client.get("/api/me", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == f'Bearer {METADATA}, scope="read"'


@pytest.mark.parametrize("authorization", ["Bearer", "Bearer ", "Bearer kf_at_unknown", "Bearer a b",
                                           "Bearer  kf_at_x", "Bearer " + "k" * 5000, "Bearer kf_at_\u00e9"])
def test_api_refuses_an_invalid_token(client, authorization):
    response = client.get("/api/me", headers={"Authorization": authorization})
    assert response.status_code == 401 and response.json["error"] == "invalid_token"
    assert response.headers["WWW-Authenticate"].startswith(f'Bearer {METADATA}, error="invalid_token"')


def test_api_refuses_a_token_in_the_query_or_body(client, access_token):
    in_query = client.get("/api/me", query_string={"access_token": access_token.token})
    in_body = client.delete("/api/token", data={"access_token": access_token.token})
    assert in_query.status_code == in_body.status_code == 400
    assert in_query.json["error"] == "invalid_request"


def test_api_refuses_a_read_token_on_a_write_method(client, access_token):
    response = client.delete("/api/token", headers=bearer(access_token.token))
    assert response.status_code == 403 and response.json["error"] == "insufficient_scope"
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]
    assert 'scope="read write"' in response.headers["WWW-Authenticate"]
    assert AccessToken.authenticate(access_token.token)


def test_a_write_token_can_revoke_itself(client, user, oauth_client):
    token = AccessToken.issue(user, oauth_client, scope="read write").token
    assert client.delete("/api/token", headers=bearer(token)).status_code == 204
    assert client.get("/api/me", headers=bearer(token)).status_code == 401


def test_api_records_last_use(client, access_token):
    client.get("/api/me", headers=bearer(access_token.token))
    assert AccessToken.get_by_id(access_token.id).last_used_at is not None


def test_api_exposes_its_challenge_to_browser_clients(client):
    response = client.get("/api/me", headers={"Origin": "http://example.test"})
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "WWW-Authenticate" in response.headers["Access-Control-Expose-Headers"]


class TestTheAudienceIsTheIssuerWhateverTheHost:
    """The issuer comes from KEYFOB_ISSUER (under TESTING, the test client's host), never from the Host header the
    client chooses, so a token bound to another resource cannot pass for one of the API's (RFC 8707)."""

    @pytest.fixture(params=["http://localhost", None], ids=["issuer set", "testing default"])
    def config(self, config, request):
        return {**config, "ISSUER": request.param}

    @pytest.mark.parametrize("host", ["localhost", "notes.internal"])
    def test_api_refuses_a_token_bound_to_another_resource(self, client, user, oauth_client, host):
        token = AccessToken.issue(user, oauth_client, resource="http://notes.internal")
        response = client.get("/api/me", headers={**bearer(token.token), "Host": host})
        assert response.status_code == 401 and response.json["error"] == "invalid_token"
        assert METADATA in response.headers["WWW-Authenticate"]

    def test_api_accepts_its_own_tokens_and_challenges_with_the_issuers_metadata_whatever_the_host(
            self, client, user, oauth_client):
        token = AccessToken.issue(user, oauth_client, resource="http://localhost")
        assert client.get("/api/me", headers={**bearer(token.token), "Host": "notes.internal"}).status_code == 200
        challenge = client.get("/api/me", headers={"Host": "notes.internal"}).headers["WWW-Authenticate"]
        assert challenge == f'Bearer {METADATA}, scope="read"'
