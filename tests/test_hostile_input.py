"""Bad input gets a clear error and loses nothing: every endpoint against malformed, oversized, mistyped,
unicode, repeated and mislabelled input, and the redirect-URI attacks of peers.md §4.2 (items 5, 10, 11)."""
from urllib.parse import urlencode

import pytest

from actions import ISSUER, PASSWORD, REDIRECT_URI
from models import AccessToken, AuthorizationCode, Client, User

DROP = object()
BAD_UTF8 = b"\xed\xa0\x80"  # U+D800 as a careless sender encodes it; Werkzeug keeps it as "%ED%A0%80"


def repeated(value): return [value, value]
def oversized(value): return value + "a" * (AuthorizationCode.MAX_LENGTH + 1)  # past every cap, a code's too
def with_nul(value): return value + "\x00"
def with_controls(value): return value + "\x1b[2J\x7f"
def with_emoji(value): return value + "\U0001f600"
def with_rtl_override(value): return "\u202e" + value


UNICODE = [with_nul, with_controls, with_emoji, with_rtl_override]
MALFORMED = [("data", change) for change in (repeated, oversized, *UNICODE)] + [
    ("json", change) for change in (None, 42, True, ["x"], {"$ne": ""}, "\ud800")]


def case(name, change, *rest):
    label = change.__name__ if callable(change) else "dropped" if change is DROP else repr(change)[:30]
    return pytest.param(name, change, *rest, id=" ".join([name, label, *rest[1:]]))


def apply(valid, name, change):
    """The valid parameters with one changed: to a function of its valid value, to a new value, or DROPped."""
    params = {key: value for key, value in valid.items() if key != name}
    if change is not DROP:
        params[name] = change(valid[name]) if callable(change) else change
    return params


def rows():
    return Client.select().count(), AccessToken.select().count(), User.select().count()


def assert_json_error(response, error, status=None):
    assert 400 <= response.status_code < 500 and response.status_code == (status or response.status_code)
    assert response.mimetype == "application/json" and response.json.get("error") == error, response.data


def assert_error_page(response, status=400):
    assert response.status_code == status and response.mimetype == "text/html" and "Location" not in response.headers


MULTIPART = '--b\r\nContent-Disposition: form-data; name="token"\r\n\r\nx\r\n--b--\r\n'
BODIES = [pytest.param(body, kind, error, id=label) for label, body, kind, error in [  # None: the endpoint's usual
    ("invalid JSON", '{"token": ', "application/json", None), ("JSON list", "[]", "application/json", None),
    ("JSON null", "null", "application/json", None), ("JSON number", "42", "application/json", None),
    ("JSON string", '"x"', "application/json", None), ("JSON not UTF-8", b'{"t": "\xff"}', "application/json", None),
    ("text/plain", "token=x", "text/plain", None), ("XML", "<token>x</token>", "application/xml", None),
    ("multipart", MULTIPART, "multipart/form-data; boundary=b", None),
    ("deeply nested JSON", "[" * 50_000, "application/json", None),
    ("JSON integer of 5000 digits", '{"client_id": ' + "9" * 5000 + "}", "application/json", None),
    ("oversized JSON", '{"t": "' + "a" * 70_000 + '"}', "application/json", "invalid_request"),
    ("oversized form", "token=" + "a" * 70_000, "application/x-www-form-urlencoded", None)]]
POST_ENDPOINTS = {"/oauth/token": "invalid_request", "/oauth/revocation": "invalid_request",  # JSON error
                  "/oauth/clients": "invalid_client_metadata", "/oauth/authorization": 400, "/session": 401}  # page


@pytest.mark.parametrize("path", POST_ENDPOINTS)
@pytest.mark.parametrize("body, content_type, error", BODIES)
def test_post_endpoints_answer_malformed_bodies_with_a_clear_error(client, actions, signed_in, access_token, path,
                                                                   body, content_type, error):
    before, headers = rows(), {"X-CSRFToken": actions.csrf_token(client.get("/"))}
    response, expected = client.post(path, data=body, content_type=content_type, headers=headers), POST_ENDPOINTS[path]
    if isinstance(expected, int):
        assert_error_page(response, 413 if len(body) > 64 * 1024 else expected)
    else:
        assert_json_error(response, error or expected)
    assert rows() == before


TOKEN_CASES = [case(name, change, "invalid_request", encoding) for name in (
    "grant_type", "client_id", "code", "code_verifier", "redirect_uri") for encoding, change in MALFORMED] + [
    case(name, change, error, "data") for name, change, error in [
        ("grant_type", "password", "unsupported_grant_type"), ("client_id", "nobody", "invalid_client"),
        ("code", "A" * 64, "invalid_grant"), ("code_verifier", "v" * 64, "invalid_grant"),
        ("redirect_uri", REDIRECT_URI + "/", "invalid_grant"), ("resource", "a" * 5000, "invalid_request")]]


@pytest.mark.parametrize("name, change, error, encoding", TOKEN_CASES)
def test_token_rejects_hostile_parameters_and_keeps_the_code_redeemable(client, exchange, name, change, error,
                                                                         encoding):
    before = rows()
    assert_json_error(client.post("/oauth/token", **{encoding: apply(exchange, name, change)}), error)
    assert rows() == before
    assert client.post("/oauth/token", data=exchange).status_code == 200


@pytest.mark.parametrize("name, change, error, encoding", [
    *(case(name, change, "invalid_request", encoding)
      for name in ("token", "client_id") for encoding, change in MALFORMED),
    case("token", DROP, "invalid_request", "data"), case("client_id", "nobody", "invalid_client", "data")])
def test_revocation_rejects_hostile_parameters_and_keeps_the_token(client, access_token, name, change, error, encoding):
    before, valid = rows(), {"token": access_token.token, "client_id": access_token.oauth_client.client_id}
    assert_json_error(client.post("/oauth/revocation", **{encoding: apply(valid, name, change)}), error)
    assert rows() == before
    assert client.get("/api/me", headers={"Authorization": f"Bearer {access_token.token}"}).status_code == 200


ATTACK_URIS = [  # peers.md §4.2 item 5
    "https://127.0.0.1/cb", "http://example.com/cb", "http://evil.com:80@127.0.0.1/", "http://127.0.0.1@evil.com/",
    "http://localhost.evil.com/", "http://127.0.0.1.nip.io/", "http://127.0.0.1/cb#fragment", "/cb", "",
    "javascript:alert(1)", "data:text/html,<script>alert(1)</script>", "JaVaScRiPt:alert(1)", "\thttp://127.0.0.1/cb",
    "http://127.0.0.1/c\nb", "http://127.0.0.1/cb\x00", "\x0bhttp://127.0.0.1/cb", "http://127.0.0.1/a/../cb",
    "http://127.0.0.1/%2e%2e/cb", "http://127.0.0.1/.%2E/cb", "http://127.0.0.1:65536/cb", "http://127.0.0.1:08080/cb",
    "http://127.0.0.1/" + "a" * 600]
NEAR_MISSES = [  # peers.md §4.2 item 10, against the registered http://127.0.0.1:8765/callback
    "http://localhost:8765/callback", "http://[::1]:8765/callback", "http://127.0.0.1:8765/callback/",
    "http://127.0.0.1:8765/other", "http://127.0.0.1:8765/callback?x=1", "http://127.0.0.1:8765/CALLBACK",
    REDIRECT_URI + "#x", "http://127.0.0.1:8765/x/../callback", "http://127.0.0.1:8765@evil.com/callback",
    REDIRECT_URI + "\x00", " " + REDIRECT_URI, "http://127.0.0.1:0/callback"]


@pytest.mark.parametrize("name, change, error", [case(name, change, error) for name, error, changes in [
    ("redirect_uris", "invalid_redirect_uri", [*([uri] for uri in ATTACK_URIS), [REDIRECT_URI] * 11, REDIRECT_URI,
                                               [42], [None], [[REDIRECT_URI]], {"uri": REDIRECT_URI}, True]),
    ("redirect_uris", "invalid_client_metadata", [None, [], DROP]),
    ("client_name", "invalid_client_metadata", [42, None, ["x"], {"x": 1}, False, oversized]),
    ("scope", "invalid_client_metadata", [42, ["read"], None]),
    ("grant_types", "invalid_client_metadata", ["authorization_code", ["password"], None]),
    ("response_types", "invalid_client_metadata", [["token"], "code"]),
    ("token_endpoint_auth_method", "invalid_client_metadata", ["private_key_jwt", ["none"], None])]
    for change in changes])
def test_registration_rejects_attack_redirect_uris_and_mistyped_metadata(client, name, change, error):
    before = rows()
    valid = {"client_name": "Test", "redirect_uris": [REDIRECT_URI], "scope": "read",
             "grant_types": ["authorization_code"], "response_types": ["code"], "token_endpoint_auth_method": "none"}
    assert_json_error(client.post("/oauth/clients", json=apply(valid, name, change)), error, 400)
    assert rows() == before


@pytest.mark.parametrize("name, shown", [
    ("Claude \U0001f916", "Claude \U0001f916"), ("evil\u202egnp.exe", "evilgnp.exe"), ("a\x00b\x1b[31mc", "ab[31mc"),
    ("x\ud800", "x")])
def test_registration_strips_unprintable_characters_from_client_name(client, name, shown):
    response = client.post("/oauth/clients", json={"client_name": name, "redirect_uris": [REDIRECT_URI]})
    assert response.status_code == 201 and response.json["client_name"] == shown


def authorize(actions, method, params):
    if method == "GET":
        return actions.client.get("/oauth/authorization/new", query_string=urlencode(params, doseq=True))
    form = urlencode({**params, "decision": "approve", "csrf_token": actions.csrf_token(actions.client.get("/"))},
                     doseq=True)
    return actions.client.post("/oauth/authorization", data=form, content_type="application/x-www-form-urlencoded")


# peers.md §4.2 items 5 and 10: a bad client or redirect_uri (error None) gets a local 400 page with no Location;
# item 11: once both are validated, every other error goes back to the client with error, state and iss.
AUTHORIZATION_CASES = [
    *(case(name, change, None) for name in ("client_id", "redirect_uri")
      for change in [DROP, "unknown", BAD_UTF8, repeated, oversized, *UNICODE]),
    *(case("redirect_uri", uri, None) for uri in ATTACK_URIS + NEAR_MISSES),
    *(case(name, change, "invalid_request") for name in ("state", "code_challenge", "code_challenge_method", "scope")
      for change in [repeated, oversized, *UNICODE]),
    *(case(name, change, "invalid_request") for name, change in [
        ("code_challenge", DROP), ("code_challenge", "a" * 42), ("code_challenge", "a" * 44),
        ("code_challenge", "+" * 43), ("code_challenge", BAD_UTF8), ("code_challenge_method", DROP),
        ("code_challenge_method", "plain"), ("code_challenge_method", "s256"), ("resource", [ISSUER, ISSUER])]),
    case("scope", "admin", "invalid_scope"), case("scope", BAD_UTF8, "invalid_scope"),
    case("resource", "https://evil.example", "invalid_target"),
    case("response_type", "token", "unsupported_response_type"),
    case("response_type", DROP, "invalid_request"), case("response_type", repeated, "invalid_request")]


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("name, change, error", AUTHORIZATION_CASES)
def test_authorization_answers_hostile_requests_with_a_page_or_an_error_redirect(
        client, actions, signed_in, authorize_params, method, name, change, error):
    before = rows()
    response = authorize(actions, method, apply(authorize_params, name, change))
    if error is None:
        assert_error_page(response)
        assert b"invalid_request" in response.data
    else:
        answer = actions.query(response)
        assert response.status_code == 302 and response.location.startswith(REDIRECT_URI + "?")
        assert answer["error"] == error and answer["iss"] == ISSUER and "code" not in answer
        assert answer.get("state") == (None if name == "state" else "xyz-state")
    assert rows() == before


@pytest.mark.parametrize("name, change", [  # "pw" + NUL once signed in as "pw": HMAC pads short keys with zeros
    case(name, change) for name in ("username", "password") for change in [oversized, *UNICODE, BAD_UTF8, DROP]])
def test_sign_in_rejects_hostile_credentials_with_a_page(client, actions, user, name, change):
    before, token = rows(), actions.csrf_token(client.get("/session/new"))
    form = urlencode(apply({"username": "alice", "password": PASSWORD, "csrf_token": token}, name, change))
    assert_error_page(client.post("/session", data=form, content_type="application/x-www-form-urlencoded"), 401)
    assert rows() == before and client.get("/").location == "/session/new"


BEARER_CASES = [  # (Authorization header, query string, status, error), where {t} is the real token
    ("Bearer {t}\x00", "", 401, "invalid_token"), ("Bearer {t}, Bearer {t}", "", 401, "invalid_token"),
    ("Bearer kf_" + "a" * 5000, "", 401, "invalid_token"), ("Bearer \x1b[2J{t}", "", 401, "invalid_token"),
    ("Bearer " + "\U0001f600\u202e".encode().decode("latin-1"), "", 401, "invalid_token"),
    ("Bearer", "", 401, "invalid_token"), ("Basic {t}", "", 401, None),
    ("", "access_token={t}", 400, "invalid_request"),
    ("Bearer {t}", "access_token={t}&access_token={t}", 400, "invalid_request")]


@pytest.mark.parametrize("method, path", [("GET", "/api/me"), ("DELETE", "/api/token")])
@pytest.mark.parametrize("header, query_string, status, error", BEARER_CASES)
def test_api_rejects_hostile_credentials_and_keeps_the_token(
        client, access_token, method, path, header, query_string, status, error):
    before, bearer = rows(), {"Authorization": f"Bearer {access_token.token}"}
    response = client.open(path, method=method, query_string=query_string.format(t=access_token.token),
                           headers={"Authorization": header.format(t=access_token.token)} if header else {})
    assert response.status_code == status and response.headers["WWW-Authenticate"].startswith("Bearer ")
    assert response.json.get("error") == error  # no error code at all without credentials (RFC 6750 §3.1)
    assert rows() == before and client.get("/api/me", headers=bearer).status_code == 200


@pytest.mark.parametrize("method, path", [("GET", "/api/me"), ("DELETE", "/api/token")])
def test_api_rejects_an_oversized_body_and_keeps_the_token(client, access_token, method, path):
    bearer = {"Authorization": f"Bearer {access_token.token}"}
    response = client.open(path, method=method, headers=bearer, data="x=" + "a" * 70_000,
                           content_type="application/x-www-form-urlencoded")
    assert_json_error(response, "invalid_request", 413)
    assert client.get("/api/me", headers=bearer).status_code == 200


@pytest.mark.parametrize("path, status, error", [
    ("/.well-known/oauth-authorization-server", 200, None), ("/.well-known/oauth-protected-resource", 200, None),
    ("/.well-known/oauth-authorization-server%00", 404, "not_found"), ("/.well-known/%ED%A0%80", 404, "not_found"),
    ("/.well-known/" + "a" * 5000, 404, "not_found")])
@pytest.mark.parametrize("query_string", ["issuer=https%3A%2F%2Fevil.example", "x=%ED%A0%80&x=%00", "q=" + "a" * 5000])
def test_metadata_ignores_hostile_queries_and_answers_unknown_paths_and_methods_with_json(client, path, status, error,
                                                                                          query_string):
    response = client.get(path, query_string=query_string)
    assert response.status_code == status and response.json.get("error") == error
    assert status != 200 or ISSUER in (response.json.get("issuer"), response.json.get("resource"))
    assert_json_error(client.post(path, data=query_string), error or "invalid_request", 405 if status == 200 else 404)
