"""The token endpoint: one code, one token, and RFC 6749 §5.2 errors for everything else."""
import time

import pytest

from actions import REDIRECT_URI
from models import AccessToken, AuthorizationCode, User


@pytest.fixture
def seal(app, user, oauth_client, pkce):
    """Seal a code for the test client, as the consent screen would, with any field changed."""
    def seal(**changes):
        fields = {"client_id": oauth_client.client_id, "user_id": user.id, "user_check": user.session_check,
                  "redirect_uri": REDIRECT_URI, "scope": "read", "code_challenge": pkce[1], **changes}
        with app.app_context():
            return AuthorizationCode(**fields).seal()
    return seal


def test_token_exchange_issues_a_bearer_token(client, exchange, oauth_client):
    response = client.post("/oauth/token", data=exchange)
    assert response.status_code == 200
    assert set(response.json) == {"access_token", "token_type", "scope"}
    assert response.json["token_type"] == "Bearer" and response.json["scope"] == "read"
    assert response.json["access_token"].startswith("kf_at_")
    assert response.headers["Cache-Control"] == "no-store" and response.headers["Pragma"] == "no-cache"
    assert AccessToken.authenticate(response.json["access_token"]).client_id == oauth_client.client_id


def test_token_exchange_accepts_a_json_body(client, exchange):
    assert client.post("/oauth/token", json=exchange).status_code == 200


def test_token_exchange_reports_write_as_read_write(client, exchange, seal):
    response = client.post("/oauth/token", data={**exchange, "code": seal(scope="read write")})
    assert response.json["scope"] == "read write"


def test_token_errors_are_never_cached(client, exchange):
    response = client.post("/oauth/token", data={**exchange, "code": "nope"})
    assert response.status_code == 400 and response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize("missing", ["grant_type", "client_id", "code", "code_verifier", "redirect_uri"])
def test_token_exchange_requires_each_parameter(client, exchange, missing):
    del exchange[missing]
    response = client.post("/oauth/token", data=exchange)
    assert response.status_code == 400 and response.json["error"] == "invalid_request"
    assert missing in response.json["error_description"]


@pytest.mark.parametrize("name", ["grant_type", "client_id", "code", "code_verifier", "redirect_uri"])
@pytest.mark.parametrize("value", [["a", "b"], {"a": "b"}, 42, None, True, ""])
def test_token_exchange_rejects_non_string_parameters_as_malformed(client, exchange, name, value):
    response = client.post("/oauth/token", json={**exchange, name: value})
    assert response.status_code == 400 and response.json["error"] == "invalid_request"


def test_token_exchange_treats_repeated_parameters_as_malformed(client, exchange):
    body = "&".join(f"{name}={value}" for name, value in exchange.items()) + "&code=again"
    response = client.post("/oauth/token", data=body, content_type="application/x-www-form-urlencoded")
    assert response.json["error"] == "invalid_request"


@pytest.mark.parametrize("grant_type", ["refresh_token", "password", "client_credentials", "implicit"])
def test_token_exchange_rejects_other_grant_types(client, exchange, grant_type):
    response = client.post("/oauth/token", data={**exchange, "grant_type": grant_type})
    assert response.json["error"] == "unsupported_grant_type"


def test_token_exchange_rejects_an_unknown_client(client, exchange):
    response = client.post("/oauth/token", data={**exchange, "client_id": "unknown"})
    assert response.status_code == 400 and response.json["error"] == "invalid_client"


@pytest.mark.parametrize("bad_code", ["nope", "A" * 200, "kf_at_x"])
def test_token_exchange_rejects_an_invalid_code(client, exchange, bad_code):
    assert client.post("/oauth/token", data={**exchange, "code": bad_code}).json["error"] == "invalid_grant"


def test_token_exchange_rejects_an_expired_code(client, exchange, seal):
    response = client.post("/oauth/token", data={**exchange, "code": seal(issued_at=int(time.time()) - 61)})
    assert response.json["error"] == "invalid_grant"


def test_token_exchange_rejects_a_tampered_code(client, exchange):
    code = exchange["code"]
    tampered = code[:60] + ("A" if code[60] != "A" else "B") + code[61:]
    assert client.post("/oauth/token", data={**exchange, "code": tampered}).json["error"] == "invalid_grant"


def test_token_exchange_rejects_a_code_issued_to_another_client(client, exchange, other_oauth_client):
    response = client.post("/oauth/token", data={**exchange, "client_id": other_oauth_client.client_id})
    dead = client.post("/oauth/token", data={**exchange, "client_id": other_oauth_client.client_id, "code": "dead"})
    assert response.json == dead.json and response.json["error"] == "invalid_grant"
    assert client.post("/oauth/token", data=exchange).status_code == 200


@pytest.mark.parametrize("verifier", ["w" * 64, "short", "!" * 43, "a" * 129])
def test_token_exchange_rejects_a_wrong_pkce_verifier_and_keeps_the_code(client, exchange, verifier):
    response = client.post("/oauth/token", data={**exchange, "code_verifier": verifier})
    assert response.json == {"error": "invalid_grant", "error_description": "PKCE verification failed"}
    assert client.post("/oauth/token", data=exchange).status_code == 200


@pytest.mark.parametrize("redirect_uri", ["http://127.0.0.1:9/callback", REDIRECT_URI + "/", "http://localhost:8765/callback"])
def test_token_exchange_rejects_a_mismatched_redirect_uri(client, exchange, redirect_uri):
    response = client.post("/oauth/token", data={**exchange, "redirect_uri": redirect_uri})
    assert response.json["error"] == "invalid_grant"
    assert client.post("/oauth/token", data=exchange).status_code == 200


def test_token_exchange_rejects_a_reused_code_and_revokes_its_token(client, exchange):
    first = client.post("/oauth/token", data=exchange)
    second = client.post("/oauth/token", data=exchange)
    assert second.status_code == 400 and second.json["error"] == "invalid_grant"
    assert AccessToken.authenticate(first.json["access_token"]) is None


def test_a_replay_without_the_verifier_does_not_revoke_the_token(client, exchange):
    first = client.post("/oauth/token", data=exchange)
    client.post("/oauth/token", data={**exchange, "code_verifier": "x" * 43})
    client.post("/oauth/token", data={**exchange, "redirect_uri": "http://127.0.0.1:1/callback"})
    assert AccessToken.authenticate(first.json["access_token"])


def test_a_fresh_code_works_after_a_replay(client, actions, exchange, authorize_params):
    client.post("/oauth/token", data=exchange)
    client.post("/oauth/token", data=exchange)
    actions.sign_in()
    fresh = actions.query(actions.approve(authorize_params))["code"]
    assert client.post("/oauth/token", data={**exchange, "code": fresh}).status_code == 200


def test_token_exchange_binds_the_resource_of_the_authorization(client, exchange, seal):
    bound = seal(resource="http://localhost")
    assert client.post("/oauth/token", data={**exchange, "code": bound, "resource": "http://evil.example"}).json["error"] == "invalid_target"
    response = client.post("/oauth/token", data={**exchange, "code": bound, "resource": "http://localhost"})
    assert AccessToken.authenticate(response.json["access_token"]).resource == "http://localhost"


def test_a_code_is_bound_to_the_built_in_api_when_no_resource_is_named(client, exchange):
    assert client.post("/oauth/token", data={**exchange, "resource": "http://elsewhere.example"}).json["error"] == "invalid_target"
    token = client.post("/oauth/token", data={**exchange, "resource": "http://localhost/"}).json["access_token"]
    assert AccessToken.authenticate(token).resource == "http://localhost"


def test_token_exchange_refuses_a_code_whose_user_is_gone(client, exchange, user):
    user.delete_instance()
    assert client.post("/oauth/token", data=exchange).json["error"] == "invalid_grant"


def test_token_exchange_refuses_a_code_whose_client_is_gone(client, exchange, oauth_client):
    oauth_client.delete_instance()
    assert client.post("/oauth/token", data=exchange).json["error"] == "invalid_client"


def test_token_endpoint_refuses_other_content_types(client, exchange):
    response = client.post("/oauth/token", data="grant_type=authorization_code", content_type="text/plain")
    assert response.status_code == 400 and response.json["error"] == "invalid_request"


def test_token_endpoint_refuses_an_oversized_body(client, exchange):
    response = client.post("/oauth/token", data={**exchange, "padding": "x" * 70_000})
    assert response.status_code == 413 and response.json["error"] == "invalid_request"


class TestRateLimit:
    @pytest.fixture
    def config(self, config):
        return {**config, "RATELIMIT_ENABLED": True}

    def test_exchanges_are_never_limited_for_succeeding(self, client, seal, oauth_client, pkce):
        """Clients behind one address (an office, an MCP server passing /token through) each exchange a code."""
        exchange = {"grant_type": "authorization_code", "client_id": oauth_client.client_id,
                    "code_verifier": pkce[0], "redirect_uri": REDIRECT_URI}
        answers = [client.post("/oauth/token", data={**exchange, "code": seal()}) for _ in range(25)]
        assert {answer.status_code for answer in answers} == {200}
        refused = [client.post("/oauth/token", data={**exchange, "code": "forged"}) for _ in range(21)]
        assert [answer.status_code for answer in refused] == [400] * 20 + [429]

    def test_token_endpoint_allows_20_refused_requests_a_minute_per_address(self, client):
        answers = [client.post("/oauth/token", data={"grant_type": "authorization_code"}) for _ in range(21)]
        assert {answer.status_code for answer in answers[:20]} == {400}
        assert answers[20].status_code == 429 and answers[20].json["error"] == "slow_down"
        assert answers[20].headers["Retry-After"] and answers[20].headers["Cache-Control"] == "no-store"
        other_address = client.post("/oauth/token", data={}, environ_base={"REMOTE_ADDR": "10.0.0.2"})
        assert other_address.status_code == 400


def test_a_code_of_a_removed_user_is_refused_to_a_new_user_given_the_same_id(client, seal, user, oauth_client, pkce):
    code = seal()
    user.remove()
    User.register("mallory", "another password")
    User.update(id=user.id).where(User.username == "mallory").execute()  # as SQLite gives the last id again
    answer = client.post("/oauth/token", data={"grant_type": "authorization_code", "client_id": oauth_client.client_id,
                                               "code": code, "code_verifier": pkce[0], "redirect_uri": REDIRECT_URI})
    assert answer.status_code == 400 and answer.json["error"] == "invalid_grant"


def test_the_token_endpoint_also_answers_at_the_root_for_clients_that_ignore_the_metadata(client, exchange):
    response = client.post("/token", data=exchange)
    assert response.status_code == 200 and response.json["access_token"].startswith("kf_at_")
    assert client.post("/token", data=exchange).json["error"] == "invalid_grant"  # the same code, the same rules
