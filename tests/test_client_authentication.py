"""Confidential clients at the token and revocation endpoints: client_secret_basic and client_secret_post
(RFC 6749 §2.3.1), checked before anything about the code or token, with one answer for every failure."""
import base64
from urllib.parse import quote, quote_plus

import pytest

from actions import ISSUER, REDIRECT_URI
from models import AccessToken, Client, digest

CONFIDENTIAL_ID, PUBLIC_ID, UNKNOWN_ID = "server-app-1", "cli-app", "unknown-app"
SECRET = "<the confidential client's secret>"  # stands for the generated secret in the tables below
CHALLENGE = f'Basic realm="{ISSUER}"'


@pytest.fixture
def confidential(app):
    return Client.create_confidential(client_id=CONFIDENTIAL_ID, name="Server App", redirect_uris=[REDIRECT_URI])


@pytest.fixture
def oauth_client(app):
    """conftest's public client (and its `exchange`), under an id the tables below can name."""
    return Client.create(client_id=PUBLIC_ID, name="CLI", redirect_uris=[REDIRECT_URI], dynamically_registered=True)


@pytest.fixture
def grant(signed_in, actions, authorize_params, confidential, pkce):
    """A token request for a fresh code of the confidential client, without its credentials."""
    code = actions.query(actions.approve({**authorize_params, "client_id": CONFIDENTIAL_ID}))["code"]
    return {"grant_type": "authorization_code", "code": code, "code_verifier": pkce[0], "redirect_uri": REDIRECT_URI}


@pytest.fixture
def present(confidential):
    """(body fields, headers) presenting a client_id and a secret by "basic" or "post"; a None secret is left out."""
    def present(way, client_id=CONFIDENTIAL_ID, secret=SECRET, encode=quote_plus):
        secret = confidential.secret if secret == SECRET else secret
        if way == "post":
            return {"client_id": client_id, "client_secret": secret}, {}
        return {}, basic(client_id, secret, encode)
    return present


def basic(client_id, secret, encode=quote_plus):
    """Authorization: Basic, each half form-urlencoded before the pair is base64-encoded (RFC 6749 Appendix B)."""
    return basic_raw(f"{encode(client_id)}:{encode(secret)}".encode())


def basic_raw(credentials):
    return {"Authorization": "Basic " + base64.b64encode(credentials).decode()}


def unencoded(half):
    return half


def exchange_with(client, grant, fields=(), headers=None, **changes):
    """POST the grant with credentials and any changes; a parameter set to None is left out."""
    data = {name: value for name, value in {**grant, **dict(fields), **changes}.items() if value is not None}
    return client.post("/oauth/token", data=data, headers=headers or {})


def answer(response):
    return response.status_code, response.json, response.headers.get("WWW-Authenticate")


def assert_invalid_client(response, basic_was_used):
    assert response.json == {"error": "invalid_client", "error_description": "Client authentication failed"}
    assert response.status_code == (401 if basic_was_used else 400)
    assert response.headers.get("WWW-Authenticate") == (CHALLENGE if basic_was_used else None)


FAILED_ATTEMPTS = [  # (way, client_id, secret): an unknown client and a wrong secret must look alike
    ("basic", CONFIDENTIAL_ID, "kf_cs_wrong"), ("basic", CONFIDENTIAL_ID, ""), ("basic", UNKNOWN_ID, SECRET),
    ("basic", PUBLIC_ID, SECRET), ("basic", PUBLIC_ID, ""),
    ("post", CONFIDENTIAL_ID, "kf_cs_wrong"), ("post", CONFIDENTIAL_ID, ""), ("post", CONFIDENTIAL_ID, None),
    ("post", UNKNOWN_ID, SECRET), ("post", UNKNOWN_ID, None), ("post", PUBLIC_ID, SECRET)]


# The token endpoint

@pytest.mark.parametrize("way, more_fields, more_headers", [
    ("basic", {}, {}), ("basic", {"client_id": CONFIDENTIAL_ID}, {}), ("basic", {"client_secret": ""}, {}),
    ("post", {}, {}), ("post", {}, {"Authorization": "Bearer kf_at_x"})],
    ids=["basic", "basic beside the same client_id", "basic beside an empty client_secret", "post",
         "post beside an Authorization header of another scheme"])
def test_a_confidential_client_exchanges_a_code_with_either_secret_method(client, grant, present, way, more_fields,
                                                                          more_headers):
    fields, headers = present(way)
    response = exchange_with(client, grant, {**fields, **more_fields}, {**headers, **more_headers})
    assert response.status_code == 200, response.json
    assert AccessToken.authenticate(response.json["access_token"]).client_id == CONFIDENTIAL_ID


def test_a_confidential_client_may_send_its_secret_in_a_json_body(client, grant, present):
    assert client.post("/oauth/token", json={**grant, **present("post")[0]}).status_code == 200


@pytest.mark.parametrize("encode", [quote_plus, lambda half: quote(half, safe=""), unencoded],
                         ids=["form-urlencoded", "as the MCP Python SDK quotes", "raw, as the TypeScript SDK sends"])
@pytest.mark.parametrize("scheme", ["Basic", "basic", "BASIC"])
def test_basic_takes_a_url_safe_secret_encoded_or_not_under_any_case_of_scheme(client, grant, present, encode, scheme):
    headers = {"Authorization": present("basic", encode=encode)[1]["Authorization"].replace("Basic", scheme, 1)}
    assert exchange_with(client, grant, headers=headers).status_code == 200


@pytest.fixture
def awkward_secret(confidential):
    """A secret Basic must encode: ':' would split early, '+' would decode to a space, '%' starts an escape."""
    secret = "pa:ss word+%41/~"
    Client.update(secret_digest=digest(secret)).where(Client.id == confidential.id).execute()
    return secret


@pytest.mark.parametrize("encode", [quote_plus, lambda half: quote(half, safe="")], ids=["form", "MCP Python SDK"])
def test_basic_decodes_each_half_after_splitting_on_the_first_colon(client, grant, awkward_secret, encode):
    assert exchange_with(client, grant, headers=basic(CONFIDENTIAL_ID, awkward_secret, encode)).status_code == 200


def test_an_awkward_secret_sent_unencoded_in_basic_decodes_to_another_secret(client, grant, present, awkward_secret):
    response = exchange_with(client, grant, *present("basic", secret=awkward_secret, encode=unencoded))
    assert_invalid_client(response, basic_was_used=True)
    assert exchange_with(client, grant, *present("post", secret=awkward_secret)).status_code == 200


def test_a_bad_escape_in_basic_fails_even_where_it_would_spell_the_secret(client, grant, present, confidential):
    Client.update(secret_digest=digest("100%")).where(Client.id == confidential.id).execute()
    assert_invalid_client(exchange_with(client, grant, *present("basic", secret="100%", encode=unencoded)), True)
    assert exchange_with(client, grant, *present("basic", secret="100%")).status_code == 200


def encoded(id_and_secret):
    return basic_raw(id_and_secret.encode())["Authorization"].removeprefix("Basic ")


MALFORMED_BASIC = {  # the Authorization header, from the confidential client's id and secret
    "not base64": lambda i, s: "Basic !" + encoded(f"{i}:{s}"),
    "base64 with a space inside": lambda i, s: "Basic " + encoded(f"{i}:{s}")[:8] + " " + encoded(f"{i}:{s}")[8:],
    "base64 without its padding": lambda i, s: "Basic " + encoded(f"{i}:{s}").rstrip("="),  # 62 bytes: one "="
    "no colon": lambda i, s: "Basic " + encoded(f"{i}{s}"),
    "an empty client_id": lambda i, s: "Basic " + encoded(f":{s}"),
    "a bad %-escape": lambda i, s: "Basic " + encoded(f"{i}:{s}%4"),
    "a %-escape of invalid UTF-8": lambda i, s: "Basic " + encoded(f"{i}:{s}%FF"),
    "raw invalid UTF-8": lambda i, s: "Basic " + base64.b64encode(f"{i}:{s}".encode() + b"\xff").decode(),
    "a control character in the client_id": lambda i, s: "Basic " + encoded(f"{i}\x01:{s}"),
    "an oversized client_id": lambda i, s: "Basic " + encoded(f"{i * 300}:{s}"),
    "no credentials": lambda i, s: "Basic",
}


@pytest.mark.parametrize("malformed", MALFORMED_BASIC)
def test_a_malformed_basic_header_fails_with_a_basic_challenge_and_keeps_the_code(client, grant, present,
                                                                                   confidential, malformed):
    header = MALFORMED_BASIC[malformed](CONFIDENTIAL_ID, confidential.secret)
    response = exchange_with(client, grant, headers={"Authorization": header})
    assert_invalid_client(response, basic_was_used=True)
    assert response.headers["Cache-Control"] == "no-store"
    assert exchange_with(client, grant, *present("basic")).status_code == 200


@pytest.mark.parametrize("way, client_id, secret", FAILED_ATTEMPTS)
def test_every_failed_attempt_gets_one_answer_and_keeps_the_code(client, grant, present, way, client_id, secret):
    assert_invalid_client(exchange_with(client, grant, *present(way, client_id, secret)), basic_was_used=way == "basic")
    assert exchange_with(client, grant, *present(way)).status_code == 200


@pytest.mark.parametrize("secret", [["s"], 42, True, {"$ne": ""}, "\ud800", "é" * 43])
def test_a_secret_that_is_not_a_string_of_ascii_fails_as_invalid_client(client, grant, secret):
    response = client.post("/oauth/token", json={**grant, "client_id": CONFIDENTIAL_ID, "client_secret": secret})
    assert_invalid_client(response, basic_was_used=False)


@pytest.mark.parametrize("body_secret", [lambda secret: secret, lambda secret: "kf_cs_wrong", lambda secret: [secret]],
                         ids=["right", "wrong", "a list"])
def test_basic_and_a_body_secret_together_are_an_invalid_request(client, grant, present, confidential, body_secret):
    response = client.post("/oauth/token", json={**grant, "client_secret": body_secret(confidential.secret)},
                           headers=present("basic")[1])
    assert response.status_code == 400 and response.json["error"] == "invalid_request"
    assert "WWW-Authenticate" not in response.headers


@pytest.mark.parametrize("body_client_id", [PUBLIC_ID, UNKNOWN_ID, [CONFIDENTIAL_ID]])
def test_basic_naming_another_client_than_the_body_fails(client, grant, present, oauth_client, body_client_id):
    response = client.post("/oauth/token", json={**grant, "client_id": body_client_id}, headers=present("basic")[1])
    assert_invalid_client(response, basic_was_used=True)


def test_a_secret_in_the_query_string_never_authenticates(client, grant, present):
    credentials, _ = present("post")
    response = client.post("/oauth/token", query_string=credentials, data={**grant, "client_id": CONFIDENTIAL_ID})
    assert_invalid_client(response, basic_was_used=False)
    response = client.post("/oauth/token", query_string=credentials, data=grant)
    assert response.status_code == 400 and response.json["error"] == "invalid_request"
    assert "client_id" in response.json["error_description"]


def test_a_public_client_may_send_an_empty_secret_but_no_other(client, exchange):
    assert_invalid_client(client.post("/oauth/token", data={**exchange, "client_secret": "x"}), basic_was_used=False)
    assert_invalid_client(client.post("/oauth/token", data=exchange, headers=basic(PUBLIC_ID, "")), True)
    assert client.post("/oauth/token", data={**exchange, "client_secret": ""}).status_code == 200


@pytest.mark.parametrize("way", ["basic", "post"])
@pytest.mark.parametrize("change", [
    {"code": "dead"}, {"code": None}, {"code_verifier": "w" * 64}, {"code_verifier": None},
    {"redirect_uri": "http://127.0.0.1:9/callback"}, {"resource": "http://evil.example"}],
    ids=["dead code", "no code", "wrong verifier", "no verifier", "other redirect_uri", "other resource"])
def test_a_wrong_secret_is_refused_before_the_code_is_looked_at(client, grant, present, way, change):
    live = exchange_with(client, grant, *present(way, secret="kf_cs_wrong"))
    assert_invalid_client(live, basic_was_used=way == "basic")
    assert answer(exchange_with(client, grant, *present(way, secret="kf_cs_wrong"), **change)) == answer(live)
    assert exchange_with(client, grant, *present(way)).status_code == 200


def test_a_confidential_client_cannot_redeem_another_clients_code(client, exchange, present):
    foreign = exchange_with(client, exchange, *present("post"))
    dead = exchange_with(client, exchange, *present("post"), code="dead")
    assert answer(foreign) == answer(dead) and foreign.json["error"] == "invalid_grant"
    assert client.post("/oauth/token", data=exchange).status_code == 200


def test_another_client_cannot_redeem_a_confidential_clients_code(client, grant, oauth_client):
    foreign = exchange_with(client, grant, {"client_id": PUBLIC_ID})
    dead = exchange_with(client, grant, {"client_id": PUBLIC_ID}, code="dead")
    assert answer(foreign) == answer(dead) and foreign.json["error"] == "invalid_grant"


@pytest.mark.parametrize("verifier, error", [(None, "invalid_request"), ("w" * 64, "invalid_grant")])
def test_pkce_stays_mandatory_for_an_authenticated_confidential_client(client, grant, present, verifier, error):
    response = exchange_with(client, grant, *present("basic"), code_verifier=verifier)
    assert response.status_code == 400 and response.json["error"] == error


def test_a_regenerated_secret_replaces_the_old_one_at_once(client, grant, present, confidential):
    old_secret, new_secret = confidential.secret, confidential.regenerate_secret()
    assert_invalid_client(exchange_with(client, grant, *present("basic", secret=old_secret)), basic_was_used=True)
    assert exchange_with(client, grant, *present("basic", secret=new_secret)).status_code == 200


def test_the_secret_is_stored_only_as_its_digest(client, grant, present, confidential, stored_bytes):
    assert exchange_with(client, grant, *present("basic")).status_code == 200
    assert Client.get_by_id(confidential.id).secret_digest == digest(confidential.secret)
    stored = stored_bytes()
    assert digest(confidential.secret).encode() in stored and confidential.secret.encode() not in stored


# The revocation endpoint

@pytest.fixture
def own_token(user, confidential):
    return AccessToken.issue(user, confidential)


def revoke(client, token, fields=(), headers=None):
    return client.post("/oauth/revocation", data={"token": token, **dict(fields)}, headers=headers or {})


@pytest.mark.parametrize("way", ["basic", "post"])
def test_a_confidential_client_revokes_its_own_token(client, present, own_token, way):
    assert revoke(client, own_token.token, *present(way)).status_code == 200
    assert AccessToken.authenticate(own_token.token) is None


@pytest.mark.parametrize("way", ["basic", "post"])
def test_a_confidential_client_cannot_revoke_another_clients_token_and_is_told_nothing(client, present, access_token,
                                                                                       way):
    assert revoke(client, access_token.token, *present(way)).status_code == 200
    assert AccessToken.authenticate(access_token.token)


@pytest.mark.parametrize("way", ["basic", "post"])
def test_a_personal_token_is_revoked_beside_credentials_that_authenticate(client, user, present, way):
    personal = AccessToken.issue(user, description="CLI")
    assert revoke(client, personal.token, *present(way)).status_code == 200
    assert AccessToken.authenticate(personal.token) is None


@pytest.mark.parametrize("token", ["personal", "own", "kf_pat_unknown"])
@pytest.mark.parametrize("way, client_id, secret", FAILED_ATTEMPTS)
def test_credentials_that_fail_are_refused_whatever_the_token(client, user, present, own_token, oauth_client,
                                                              token, way, client_id, secret):
    tokens = {"personal": AccessToken.issue(user).token, "own": own_token.token}
    response = revoke(client, tokens.get(token, token), *present(way, client_id, secret))
    assert_invalid_client(response, basic_was_used=way == "basic")
    assert AccessToken.select().count() == 2


@pytest.mark.parametrize("fields, headers, basic_was_used", [
    ({}, {"Authorization": "Basic !!!"}, True),
    ({"client_id": CONFIDENTIAL_ID, "client_secret": "kf_cs_wrong"}, {"Authorization": "Bearer kf_at_x"}, False)],
    ids=["malformed Basic", "a wrong body secret beside another scheme"])
def test_revocation_answers_a_failure_by_the_method_it_tried(client, user, confidential, fields, headers,
                                                             basic_was_used):
    personal = AccessToken.issue(user)
    assert_invalid_client(revoke(client, personal.token, fields, headers), basic_was_used)
    assert AccessToken.authenticate(personal.token)


def test_revocation_refuses_basic_beside_a_body_secret(client, user, present, confidential):
    personal = AccessToken.issue(user)
    response = revoke(client, personal.token, {"client_secret": confidential.secret}, present("basic")[1])
    assert response.status_code == 400 and response.json["error"] == "invalid_request"
    assert AccessToken.authenticate(personal.token)
