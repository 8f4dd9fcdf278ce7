"""Token introspection (RFC 7662) for the resource servers the operator registers, and tokens bound to the resources
they serve or that are configured (RFC 8707)."""
import base64

import pytest

from actions import REDIRECT_URI
from models import DAY, AccessToken, Client, now

NOTES = "http://127.0.0.1:8001/mcp"
REFUSED = {"error": "invalid_client", "error_description": "Client authentication failed"}


@pytest.fixture
def config(config):
    return {**config, "RESOURCES": f"{NOTES}=Notes"}


@pytest.fixture
def resource_server(app):
    return Client.registered_by_operator("notes-server", [], resource_server=NOTES)


def introspect(client, resource_server, token, secret=None, **options):
    return introspect_as(client, resource_server.client_id, secret or resource_server.secret, token, **options)


def introspect_as(client, client_id, secret, token, basic=True, **options):
    if not basic:
        return client.post("/oauth/introspection",
                           data={"token": token, "client_id": client_id, "client_secret": secret}, **options)
    credentials = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return client.post("/oauth/introspection", data={"token": token}, headers={"Authorization": f"Basic {credentials}"},
                       **options)


def test_introspection_describes_an_active_token(client, resource_server, user, oauth_client):
    token = AccessToken.issue(user, oauth_client, scope="read write", resource=NOTES)
    response = introspect(client, resource_server, token.token)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.json == {"active": True, "scope": "read write", "client_id": oauth_client.client_id,
                             "username": "alice", "sub": str(user.id), "aud": NOTES, "iat": token.created_at,
                             "token_type": "Bearer"}


@pytest.mark.parametrize("resource", [None, "http://localhost", "http://127.0.0.1:8002/mcp"],
                         ids=["personal token", "the built-in API", "another resource server"])
def test_a_token_bound_to_any_other_resource_is_inactive(client, resource_server, user, oauth_client, resource):
    """A resource server learns about the tokens meant for it, and about no one else's (RFC 7662 §2.2)."""
    token = AccessToken.issue(user, oauth_client if resource else None, resource=resource)
    assert introspect(client, resource_server, token.token).json == {"active": False}
    assert AccessToken.get_by_id(token.id).last_used_at is None  # nor does it count as a use of the token
    elsewhere = Client.registered_by_operator("Elsewhere", [], resource_server="http://127.0.0.1:8002/mcp")
    assert introspect(client, elsewhere, token.token).json["active"] is (resource == elsewhere.resource_server)


@pytest.mark.parametrize("token", ["kf_at_unknown", "garbage", "x" * 3000, "kf_at_" + "é" * 10])
def test_introspection_answers_only_inactive_for_tokens_that_grant_nothing(client, resource_server, token):
    assert introspect(client, resource_server, token).json == {"active": False}


def test_introspection_of_a_json_lone_surrogate_is_inactive_not_a_500(client, resource_server):
    credentials = base64.b64encode(f"{resource_server.client_id}:{resource_server.secret}".encode()).decode()
    response = client.post("/oauth/introspection", data='{"token": "kf_\\ud800"}', content_type="application/json",
                           headers={"Authorization": f"Basic {credentials}"})
    assert response.status_code == 200 and response.json == {"active": False}


def test_a_revoked_token_is_inactive(client, resource_server, user, oauth_client):
    token = AccessToken.issue(user, oauth_client)
    AccessToken.revoke(token.token, oauth_client)
    assert introspect(client, resource_server, token.token).json == {"active": False}


@pytest.mark.parametrize("basic", [True, False], ids=["client_secret_basic", "client_secret_post"])
def test_only_a_resource_server_may_introspect_and_every_other_caller_reads_the_same(
        client, resource_server, user, oauth_client, basic):
    """Not an oracle for client IDs: an unknown client, a wrong secret, a public client and confidential clients that
    serve no resource (a user's app from /my/apps, the operator's --confidential one) get one answer."""
    token = AccessToken.issue(user, oauth_client, resource=NOTES).token
    app = Client.registered_by_user(user, "Mine", [REDIRECT_URI], confidential=True)
    worker = Client.registered_by_operator("Worker", [], confidential=True)
    callers = [("kf_unknown_client", "kf_cs_wrong"), (resource_server.client_id, "kf_cs_wrong"),
               (oauth_client.client_id, ""), (app.client_id, app.secret), (worker.client_id, worker.secret)]
    answers = [introspect_as(client, client_id, secret, token, basic) for client_id, secret in callers]
    assert {(answer.status_code, answer.data, answer.headers.get("WWW-Authenticate")) for answer in answers} == {
        (401 if basic else 400, answers[0].data, 'Basic realm="http://localhost"' if basic else None)}
    assert answers[0].json == REFUSED
    assert AccessToken.get(AccessToken.resource == NOTES).last_used_at is None  # a refused caller is no use of it
    assert introspect_as(client, resource_server.client_id, resource_server.secret, token, basic).json["active"]


def test_a_request_without_client_credentials_is_refused(client, access_token):
    anonymous = client.post("/oauth/introspection", data={"token": access_token.token})
    assert anonymous.status_code == 400 and "active" not in anonymous.json


def test_metadata_advertises_introspection(client):
    metadata = client.get("/.well-known/oauth-authorization-server").json
    assert metadata["introspection_endpoint"] == "http://localhost/oauth/introspection"
    assert metadata["introspection_endpoint_auth_methods_supported"] == ["client_secret_basic", "client_secret_post"]


def test_the_only_configured_resource_is_meant_when_none_is_named(client, actions, signed_in, authorize_params, pkce,
                                                                  resource_server):
    page = client.get("/oauth/authorization/new", query_string=authorize_params).get_data(as_text=True)
    assert "It will be able to, in Notes" in page  # KEYFOB_RESOURCES names the resource server registered for it
    code = actions.query(actions.approve(authorize_params))["code"]
    token = client.post("/oauth/token", data={"grant_type": "authorization_code", "code": code, "client_id":
                        authorize_params["client_id"], "code_verifier": pkce[0], "redirect_uri": REDIRECT_URI})
    assert AccessToken.authenticate(token.json["access_token"]).resource == NOTES


@pytest.mark.parametrize("resource, error", [("http://127.0.0.1:8001/other", "invalid_target"),
                                             ("http://evil.example/mcp", "invalid_target")])
def test_an_unknown_resource_is_refused(client, actions, signed_in, authorize_params, resource, error):
    response = client.get("/oauth/authorization/new", query_string={**authorize_params, "resource": resource})
    assert actions.query(response)["error"] == error


class TestARegisteredResourceServerIsAKnownResource:
    """`keyfob client add NAME --resource-server URL` is all a resource server needs: no KEYFOB_RESOURCES."""

    @pytest.fixture
    def config(self, config):
        return {**config, "RESOURCES": ""}

    def test_tokens_are_bound_to_it_by_name_or_as_the_only_one_and_it_sees_them_active(
            self, client, actions, signed_in, authorize_params, pkce, resource_server):
        for params in ({**authorize_params, "resource": NOTES + "/"}, authorize_params):
            page = client.get("/oauth/authorization/new", query_string=params).get_data(as_text=True)
            assert "It will be able to, in notes-server" in page
            code = actions.query(actions.approve(params))["code"]
            token = client.post("/oauth/token", data={"grant_type": "authorization_code", "code": code, "client_id":
                                params["client_id"], "code_verifier": pkce[0], "redirect_uri": REDIRECT_URI})
            assert AccessToken.authenticate(token.json["access_token"]).resource == NOTES
            assert introspect(client, resource_server, token.json["access_token"]).json["aud"] == NOTES
            actions.sign_in()  # approving on the loopback issuer signs out

    def test_an_unregistered_resource_is_still_refused(self, client, actions, signed_in, authorize_params,
                                                       resource_server):
        response = client.get("/oauth/authorization/new",
                              query_string={**authorize_params, "resource": "http://127.0.0.1:8002/mcp"})
        assert actions.query(response)["error"] == "invalid_target"


def test_the_built_in_api_refuses_a_token_bound_to_another_resource(client, user, oauth_client):
    token = AccessToken.issue(user, oauth_client, resource=NOTES)
    response = client.get("/api/me", headers={"Authorization": f"Bearer {token.token}"})
    assert response.status_code == 401 and response.json["error"] == "invalid_token"



class TestIdleTokensExpire:
    @pytest.fixture
    def config(self, config):
        return {**config, "IDLE_TOKEN_DAYS": 30}

    def test_introspection_says_when_an_idle_token_will_expire(self, client, resource_server, user, oauth_client):
        """An SDK's verifier wants an expiry (the TypeScript SDK refuses a token without one): with
        KEYFOB_IDLE_TOKEN_DAYS, `exp` is the last recorded use plus that many days."""
        token = AccessToken.issue(user, oauth_client, resource=NOTES)
        body = introspect(client, resource_server, token.token).json
        used = AccessToken.get_by_id(token.id).last_used_at
        assert body["active"] and body["iat"] == token.created_at and body["exp"] == used + 30 * DAY

    def test_a_token_idle_past_its_deadline_is_inactive_before_housekeeping_deletes_it(
            self, client, resource_server, user, oauth_client):
        token = AccessToken.issue(user, oauth_client, resource=NOTES)
        AccessToken.update(created_at=now() - 30 * DAY).where(AccessToken.id == token.id).execute()
        assert introspect(client, resource_server, token.token).json == {"active": False}
        assert client.get("/api/me", headers={"Authorization": f"Bearer {AccessToken.issue(user).token}"}).status_code == 200
        idle = AccessToken.issue(user)
        AccessToken.update(created_at=now() - 31 * DAY).where(AccessToken.id == idle.id).execute()
        assert client.get("/api/me", headers={"Authorization": f"Bearer {idle.token}"}).status_code == 401
        assert AccessToken.get_or_none(AccessToken.id == idle.id) is not None


def test_without_idle_days_tokens_have_no_expiry_to_tell(client, resource_server, user, oauth_client):
    body = introspect(client, resource_server, AccessToken.issue(user, oauth_client, resource=NOTES).token).json
    assert "exp" not in body and body["iat"]


class TestRateLimit:
    """Only failed client authentication counts: a resource server asks about whatever tokens strangers send it."""

    @pytest.fixture
    def config(self, config):
        return {**config, "RATELIMIT_ENABLED": True}

    def test_a_resource_server_asking_about_any_tokens_is_never_limited(self, client, resource_server, user,
                                                                          oauth_client):
        token = AccessToken.issue(user, oauth_client, resource=NOTES).token
        asked = [token, "kf_at_made_up", "", "garbage"] * 160  # past the 600 a minute the address once had
        answers = [introspect(client, resource_server, each).status_code for each in asked]
        assert set(answers) == {200, 400} and answers.count(400) == 160  # an empty token is invalid_request
        assert introspect(client, resource_server, token).json["active"] is True

    @pytest.mark.parametrize("basic", [True, False], ids=["client_secret_basic", "client_secret_post"])
    def test_ten_failed_authentications_a_minute_per_address(self, client, resource_server, basic):
        wrong = [introspect_as(client, resource_server.client_id, "wrong", "kf_at_x", basic) for _ in range(10)]
        assert {answer.json["error"] for answer in wrong} == {"invalid_client"}
        refused = introspect(client, resource_server, "kf_at_x")  # the right secret, from the same address
        assert refused.status_code == 429 and refused.json["error"] == "slow_down" and refused.headers["Retry-After"]
        other_address = introspect(client, resource_server, "kf_at_x", environ_base={"REMOTE_ADDR": "10.0.0.2"})
        assert other_address.json == {"active": False}
