"""Revocation (RFC 7009): always 200, and only the rightful presenter revokes."""
import pytest

from models import AccessToken


def revoke(client, **data):
    return client.post("/oauth/revocation", data=data)


def test_revocation_deletes_the_clients_own_token(client, access_token, oauth_client):
    response = revoke(client, token=access_token.token, client_id=oauth_client.client_id, token_type_hint="refresh_token")
    assert response.status_code == 200 and response.get_data() == b""
    assert AccessToken.authenticate(access_token.token) is None


def test_revocation_accepts_a_json_body(client, access_token, oauth_client):
    client.post("/oauth/revocation", json={"token": access_token.token, "client_id": oauth_client.client_id})
    assert AccessToken.authenticate(access_token.token) is None


@pytest.mark.parametrize("token", ["kf_at_unknown", "garbage", "x" * 2000])
def test_revocation_answers_200_for_unknown_tokens(client, oauth_client, token):
    assert revoke(client, token=token, client_id=oauth_client.client_id).status_code == 200


def test_another_client_cannot_revoke_a_token_and_is_told_nothing(client, access_token, other_oauth_client):
    assert revoke(client, token=access_token.token, client_id=other_oauth_client.client_id).status_code == 200
    assert AccessToken.authenticate(access_token.token)


def test_an_oauth_token_presented_without_its_client_is_refused_and_kept(client, access_token):
    response = revoke(client, token=access_token.token)
    assert response.status_code == 400 and response.json["error"] == "invalid_request"
    assert AccessToken.authenticate(access_token.token)


def test_a_personal_token_is_revoked_by_whoever_presents_it(client, user, oauth_client):
    for presenter in ({}, {"client_id": oauth_client.client_id}):
        personal = AccessToken.issue(user, description="CLI")
        assert revoke(client, token=personal.token, **presenter).status_code == 200
        assert AccessToken.authenticate(personal.token) is None


@pytest.mark.parametrize("data", [{}, {"token": ""}, {"token": ["a", "b"]}])
def test_revocation_requires_a_single_token(client, data):
    response = client.post("/oauth/revocation", json=data)
    assert response.status_code == 400 and response.json["error"] == "invalid_request"


def test_revocation_refuses_an_unknown_client(client, access_token):
    response = revoke(client, token=access_token.token, client_id="unknown")
    assert response.json["error"] == "invalid_client" and AccessToken.authenticate(access_token.token)


class TestRateLimit:
    @pytest.fixture
    def config(self, config):
        return {**config, "RATELIMIT_ENABLED": True}

    def test_revocation_allows_20_refused_a_minute_per_address_and_any_number_answered(self, client):
        answered = [revoke(client, token="kf_pat_unknown") for _ in range(25)]
        refused = [revoke(client, token="kf_at_unnamed_client") for _ in range(21)]  # no client_id: invalid_request
        assert {answer.status_code for answer in answered} == {200}
        assert [answer.status_code for answer in refused] == [400] * 20 + [429]
