"""Property tests (Hypothesis): every endpoint, and the model rules under them, against random and hostile input —
huge strings, unicode (lone surrogates, bidi overrides, NUL and other controls), repeated parameters, JSON of every
type, wrong content types, malformed JSON and bodies in odd encodings.

Whatever comes in: never a 5xx; machine endpoints answer JSON with an RFC 6749 §5.2 "error" on every 4xx and pages
answer HTML; no row is written unless the input was valid by construction; a code or token prepared before the
hostile input still works after it. A test's examples share its function-scoped fixtures, so each example counts
rows before and after itself and sets up the sign-in it needs."""
import base64
import contextlib
import json
import random
import re
import unicodedata
from urllib.parse import parse_qs, quote_from_bytes, urlsplit

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings, strategies as st

from actions import ISSUER, PASSWORD, REDIRECT_URI
from models import (CODE_CHALLENGE, AccessToken, Refused, AuthorizationCode, Client, RedeemedCode, Session, User, canonical_scope,
                    loopback_parts, printable_name, s256, usable_password)

properties = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                             HealthCheck.data_too_large, HealthCheck.filter_too_much])
models_properties = settings(properties, max_examples=200)

# Strategies. Text is made of the characters that break parsers and displays (lone surrogates, bidi controls, NUL,
# escapes, separators), any code point at all, and plain letters; a few pass the 2048-character cap on parameters,
# some of them random noise that no compression shortens (and the garbage bodies pass the 64 KiB cap on bodies).
SPECIALS = [["\ud800", "\udfff", "\udbff\udbff", "\udc80"],  # lone surrogates: JSON \u escapes, or invalid UTF-8
            ["\x00", "\x1b[2J", "\x7f", "\x85", "\t", "\r\n", "\x0b"],  # NUL and other controls
            ["\u202e", "\u2066", "\u200f", "\ufeff", "\u200b", "\u2028", "\U0001f600", "\u0130", "\uffff"],  # bidi &c.
            [" ", "%", "%00", "%ED%A0%80", "+", "&", "=", "#", "?", "@", "\\", "/../", ":", "kf_at_", "kf_pat_", "null",
             "[]", "{}", "read", "write"]]  # syntax


def noise(seed):
    return base64.b64encode(random.Random(seed).randbytes(3072)).decode()


pieces = st.one_of(*map(st.sampled_from, SPECIALS), st.characters(exclude_categories=()),
                   st.text("abcXYZ019-_.~", max_size=4))
ascii_pieces = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), min_size=1, max_size=3)  # well-formed
huge = st.one_of(st.builds(str.__mul__, st.sampled_from(["a", "\U0001f600", "\x00", "%"]), st.just(2049)),
                 st.integers(0, 2 ** 16).map(noise))
texts = st.one_of(st.just(""), *[st.lists(pieces, min_size=1, max_size=5).map("".join)] * 8, huge)
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | texts,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
                           max_leaves=6)


class Dropped:
    def __repr__(self):
        return "DROP"


DROP = Dropped()


def hostile_versions(value):
    """Stand-ins for a valid value: the value with a hostile or merely wrong character inside or text after it,
    another string, the value repeated, any JSON, or nothing at all; never the value itself."""
    def inserted(insertions):
        return st.tuples(st.integers(0, len(value)), insertions).map(
            lambda cut: value[:cut[0]] + cut[1] + value[cut[0]:])
    near = [inserted(pieces), inserted(ascii_pieces), inserted(ascii_pieces), texts.map(lambda text: value + text)]
    return st.one_of(*(near if isinstance(value, str) else []), texts, st.just([value, value]), json_values,
                     st.just(DROP)).filter(lambda new: new != value)


@st.composite
def hostile_params(draw, valid, least=1, **versions):
    """valid with `least` of its parameters changed, or one more, beside hostile extra parameters: one change at a
    time gets past the checks before it."""
    params = {**draw(st.dictionaries(texts, json_values, max_size=2)), **valid}
    for name in sorted(draw(st.sets(st.sampled_from(sorted(valid)), min_size=least, max_size=least + 1))):
        new = draw(versions.get(name, hostile_versions(valid[name])))
        params[name] = new
        if new is DROP:
            del params[name]
    return params


FORM = "application/x-www-form-urlencoded"
CONTENT_TYPES = [FORM, f"{FORM}; charset=utf-16", f"{FORM}; charset=latin-1", "application/json",
                 "application/json; charset=utf-16", "APPLICATION/JSON", "text/plain", "text/html", "application/xml",
                 "multipart/form-data", "multipart/form-data; boundary=b", f"{FORM}, application/json", "",
                 "application/octet-stream", "*/*", "\xe9/\xe9", "application/json\x00"]
CODECS = [("utf-8", "surrogatepass"), ("utf-16", "surrogatepass"), ("utf-7", "strict"), ("latin-1", "replace"),
          ("shift_jis", "replace")]
GARBAGE = [b'{"token": ', b"[" * 50_000, b'{"client_id": ' + b"9" * 5000 + b"}", b"null", b"42", b'"x"', b"{}",
           b'{"t": "\xff"}', b"\xef\xbb\xbf{}", b"\x00" * 8, b"%", b"=&=&&", b"a=%ED%A0%80&a", b"a" * 70_000,
           b'--b\r\nContent-Disposition: form-data; name="token"\r\n\r\nx\r\n--b--\r\n']
not_objects = json_values.filter(lambda value: not isinstance(value, dict)).map(lambda v: json.dumps(v).encode())
garbage = st.tuples(st.one_of(st.sampled_from(GARBAGE), st.binary(max_size=64), not_objects),
                    st.sampled_from(CONTENT_TYPES))


def form_values(value):
    """How a form carries a value: a string as itself, a list of two or more as a repeated parameter, anything else
    as its JSON text."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and len(value) > 1:
        return [item if isinstance(item, str) else json.dumps(item) for item in value]
    return [json.dumps(value)]


codecs = st.sampled_from([CODECS[0]] * 4 + CODECS)  # UTF-8 mostly, as browsers and clients send


def form_body(params, codec=CODECS[0]):
    def escape(text):
        return quote_from_bytes(text.encode(*codec), safe="")
    return "&".join(f"{escape(name)}={escape(item)}" for name, value in params.items()
                    for item in form_values(value)).encode()


@st.composite
def encoded(draw, params):
    """params as a form in one of several encodings, or as JSON (lone surrogates escaped, or raw: invalid UTF-8),
    under its own content type or any other."""
    if draw(st.booleans()):
        body, own_type = form_body(params, draw(codecs)), FORM
    else:
        text, own_type = json.dumps(params, ensure_ascii=draw(st.sampled_from([True, True, False]))), "application/json"
        body = text.encode("utf-8", "surrogatepass")
    return body, draw(st.one_of(st.just(own_type), st.just(own_type), st.sampled_from(CONTENT_TYPES)))


def bodies(valid, least=1, **versions):
    """(body, content type): valid parameters made hostile, in any encoding, or garbage."""
    return st.one_of(*[hostile_params(valid, least, **versions).flatmap(encoded)] * 3, garbage)


def forms(valid, least=1, **versions):
    """(body, content type) for a page: mostly a form as browsers send it, else any body."""
    form = hostile_params(valid, least, **versions).map(lambda params: (form_body(params), FORM))
    return st.one_of(form, form, bodies(valid, least, **versions))


def as_header(text):
    """text as a WSGI server hands a header over: its UTF-8 bytes read as latin-1, and no line breaks."""
    return text.encode("utf-8", "surrogatepass").decode("latin-1").replace("\r", "").replace("\n", "")


def basic(client_id, secret):
    pair = client_id.encode("utf-8", "surrogatepass") + b":" + secret.encode("utf-8", "surrogatepass")
    return base64.b64encode(pair).decode()


@st.composite
def authorization_headers(draw, *known):
    """Any scheme, then random bytes, text, a Basic pair of hostile halves, or a known credential (a real token or
    client ID), as it is or made hostile."""
    credential = draw(st.one_of(
        texts.map(as_header), st.binary(max_size=48).map(lambda raw: raw.decode("latin-1")),
        st.tuples(st.sampled_from(known) | texts, texts).map(lambda pair: basic(*pair)),
        st.sampled_from(known).flatmap(lambda value: st.just(value) | hostile_versions(value).filter(
            lambda new: isinstance(new, str)).map(as_header))))
    scheme = draw(st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "basic", "", "Bearer,", "Bearer\0"]))
    return (scheme + draw(st.sampled_from([" ", "  ", "\t", ""])) + credential).replace("\r", "").replace("\n", "")


def maybe(strategy):
    """None three times in four: the hostile body, not a hostile header, is what most examples are about."""
    return st.one_of(st.none(), st.none(), st.none(), strategy)


def query_string(params, codec=CODECS[0]):
    return form_body(params, codec).decode()


URI_PARTS = [["http://", "https://", "HTTP://", "javascript:", "", "//", "http:/", "http:\\\\", "com.example.app:",
              "com.example.app:/", "cursor://", "Cursor://", "myapp://", "data:", "vscode:"],
             ["", "user@", "evil.com@", "127.0.0.1:80@", ":@"],
             ["127.0.0.1", "[::1]", "localhost", "LOCALHOST", "127.0.0.2", "0.0.0.0", "[::ffff:127.0.0.1]", "evil.com",
              "127.0.0.1.evil.com", "localhost.", "app.example.com", "", "127.1", "2130706433", "[::1"],
             ["", ":0", ":8765", ":65535", ":65536", ":08080", ":99999999", ":-1", ":", ":8765\t"],
             ["", "/", "/callback", "/cb?x=1", "/a/../cb", "/%2e%2e/cb", "/.%2E/", "\\cb", "/cb\\", "//evil.com",
              "/@evil.com", "?@evil.com", "/c b", "/c\x00b", "/\u202ecb", "/%00"],
             ["", "#", "#x", "#/../"]]
REGISTERED = [REDIRECT_URI, "http://localhost/cb", "http://[::1]:9/cb?x=1", "http://127.0.0.1", "http://localhost:80/",
              "https://app.example.com/cb?x=1", "https://a.example/"]
uri_candidates = st.one_of(
    st.tuples(*map(st.sampled_from, URI_PARTS)).map("".join), texts,
    st.tuples(st.just("http://"), st.sampled_from(["127.0.0.1", "[::1]", "localhost"]), st.sampled_from(URI_PARTS[3]),
              st.sampled_from(["/callback", "/cb", "/cb?x=1", "", "/"])).map("".join),
    st.tuples(st.sampled_from(REGISTERED),
              st.integers(0, 40), pieces | st.sampled_from([":1", "%2e", ".."]))
    .map(lambda parts: parts[0][:parts[1]] + parts[2] + parts[0][parts[1]:]))


# Properties.
RFC_TEXT = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]+")  # RFC 6749 §5.2: the characters of error and its description
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def rows():
    return {model.__name__: model.select().count() for model in (User, Client, AccessToken, RedeemedCode)}


def assert_machine_answer(response):
    """No 5xx; a 4xx is a JSON object with an RFC-style error, except a bare challenge to a request without
    credentials (RFC 6750 §3.1)."""
    assert response.status_code < 500, response.get_data()
    assert response.headers["X-Frame-Options"] == "DENY"
    if response.status_code < 400:
        return
    assert response.mimetype == "application/json", (response.status_code, response.get_data())
    body = response.get_json()
    if response.status_code == 401 and body == {}:
        challenge = response.headers["WWW-Authenticate"]
        assert challenge.startswith("Bearer ") and "error=" not in challenge
        return
    assert RFC_TEXT.fullmatch(body["error"]) and RFC_TEXT.fullmatch(body.get("error_description", "-")), body


def assert_page(response):
    """No 5xx; HTML, or a redirect."""
    assert response.status_code < 500, response.get_data()
    assert response.headers["X-Frame-Options"] == "DENY"
    if 300 <= response.status_code < 400:
        assert response.location
    else:
        assert response.mimetype == "text/html", (response.status_code, response.mimetype)


def safe_redirect(uri, https=False):
    """Keyfob's redirect rules read independently, through urllib: http loopback, a native app's scheme (or, for
    apps registered on the pages, https elsewhere), printable ASCII, a port in range, no userinfo, fragment,
    backslash or dot-segment."""
    if not isinstance(uri, str) or not re.fullmatch(r"[\x21-\x7e]+", uri) or "#" in uri or "\\" in uri:
        return False
    if app_redirect(uri):
        return True
    parts = urlsplit(uri)
    try:
        parts.port
    except ValueError:
        return False
    segments = parts.path.lower().replace("%2e", ".").split("/")
    where = (parts.scheme == "http" and parts.hostname in LOOPBACK
             or https and parts.scheme == "https" and bool(parts.hostname) and parts.hostname not in LOOPBACK)
    return where and "@" not in parts.netloc and "." not in segments and ".." not in segments


def app_redirect(uri):
    """A native app's private-use URI (RFC 8252 §7.1) as Keyfob takes one by default: a lower-case scheme with a
    period, or one of the matrix's apps'; not a browser's; something after the colon; no userinfo, fragment,
    backslash or dot-segment."""
    scheme, _, rest = uri.partition(":")
    segments = rest.split("?")[0].lower().replace("%2e", ".").split("/")
    return (re.fullmatch(r"[\x21-\x7e]+", uri) is not None and re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme) is not None
            and bool(rest) and ("." in scheme or scheme in ("cursor", "vscode", "vscode-insiders"))
            and plain_authority(rest) and "#" not in rest and "\\" not in rest and "." not in segments
            and ".." not in segments)


def plain_authority(rest):
    """No authority, or a lower-case host name (labels of letters, digits and inner hyphens, 63 at most) and a
    port in range: no userinfo, no brackets."""
    if not rest.startswith("//"):
        return True
    host, colon, port = re.split(r"[/?#]", rest[2:])[0].partition(":")
    labels_fit = all(re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", label) and len(label) <= 63
                     for label in (host.split(".") if host else []))
    return labels_fit and (not colon or port.isdigit() and len(port) <= 5 and int(port) <= 65535)


def printable(name):
    """No control, format (bidi) or surrogate character, and no whitespace around."""
    return name == name.strip() and not any(unicodedata.category(char) in ("Cc", "Cf", "Cs") for char in name)


def clean_name(name):
    return 0 < len(name) <= 255 and printable(name)


def sign_in_state(client, user):
    """Sign the test client in (or out, with None) between examples: the sessions view costs 0.05 s of argon2id a time,
    and the conftest `signed_in` fixture has proved it once. Consent redirects sign out on a loopback issuer."""
    with client.session_transaction() as session:
        if user:
            session["session"] = Session.start(user)
        else:
            session.pop("session", None)


def csrf_headers(actions, mode):
    """A valid CSRF token in the header read when the form has none, a hostile one, or none."""
    if mode == "valid":
        return {"X-CSRFToken": actions.csrf_token(actions.client.get("/session/new"))}
    return {"X-CSRFToken": mode} if mode else {}


csrf_modes = st.integers(0, 4).flatmap(lambda die: st.just("valid") if die < 3 else st.none() if die == 3 else
                                       texts.map(as_header))  # valid three times in five


def post(client, path, body, content_type, headers=None):
    return client.post(path, data=body, content_type=content_type, headers=headers or {})


def bearer_works(client, token):
    return client.get("/api/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200


# Discovery.
METADATA = ["/.well-known/oauth-authorization-server", "/.well-known/oauth-protected-resource"]


@properties
@given(path=st.one_of(st.sampled_from(METADATA), texts.map(lambda text: "/.well-known/" + quote_from_bytes(
           text.encode("utf-8", "surrogatepass")))),
       method=st.sampled_from(["GET", "GET", "POST", "PUT", "DELETE", "PATCH"]),
       query=st.dictionaries(texts, texts, max_size=3), codec=st.sampled_from(CODECS), body=garbage,
       authorization=authorization_headers("kf_at_x"))
def test_metadata_answers_any_query_with_its_document_and_anything_else_with_a_json_error(
        client, path, method, query, codec, body, authorization):
    response = client.open(path, method=method, query_string=query_string(query, codec), data=body[0],
                           content_type=body[1], headers={"Authorization": authorization})
    assert_machine_answer(response)
    if method == "GET" and path in METADATA:
        assert response.status_code == 200 and ISSUER in (response.json.get("issuer"), response.json.get("resource"))
    else:
        assert response.status_code in (404, 405, 413)


# The authorization endpoint: a page, or a redirect to a redirect URI the client registered.
def assert_authorization_answer(response, oauth_client, signed_in, may_issue):
    """A page, a redirect to sign in, or a redirect the client allows carrying iss and an error (or a code, only when
    one may be issued); the code then seals a grant that passed every check. Returns the query sent to the client."""
    assert_page(response)
    if response.status_code != 302:
        assert response.status_code in (200, 400, 413) and (response.status_code != 200 or signed_in)
        return {}
    if response.location == "/session/new":
        assert not signed_in
        return {}
    boundary = list(re.finditer(r"[?&](?:code|error)=", response.location))[-1].start()
    answer = parse_qs(response.location[boundary + 1:])
    assert oauth_client.allows_redirect(response.location[:boundary]) and answer["iss"] == [ISSUER]
    assert ("code" in answer) != ("error" in answer) and ("code" not in answer or may_issue), answer
    assert RFC_TEXT.fullmatch(answer.get("state", ["-"])[0])
    return answer


@properties
@given(data=st.data(), signed_in=st.booleans())
def test_authorization_page_answers_hostile_requests_with_a_page_or_an_allowed_redirect(
        client, user, oauth_client, authorize_params, data, signed_in):
    sign_in_state(client, user if signed_in else None)
    params = data.draw(hostile_params(authorize_params, least=0))
    before = rows()
    codec = data.draw(codecs)
    response = client.get("/oauth/authorization/new", query_string=query_string(params, codec))
    assert_authorization_answer(response, oauth_client, signed_in, may_issue=False)
    assert rows() == before


@properties
@given(data=st.data(), signed_in=st.booleans(), csrf=csrf_modes)
def test_authorization_decision_answers_hostile_forms_with_a_page_or_an_allowed_redirect(
        app, client, actions, user, oauth_client, authorize_params, pkce, data, signed_in, csrf):
    sign_in_state(client, user if signed_in else None)
    headers = csrf_headers(actions, csrf)
    body, content_type = data.draw(forms({**authorize_params, "decision": "approve"}, least=0))
    before = rows()
    response = post(client, "/oauth/authorization", body, content_type, headers)
    answer = assert_authorization_answer(response, oauth_client, signed_in, may_issue=signed_in and csrf == "valid")
    assert rows() == before
    if csrf != "valid" and response.status_code != 413:
        assert response.status_code == 400 and b"This form has expired" in response.data
    if "code" in answer:
        with app.app_context():
            code = AuthorizationCode.unseal(answer["code"][0])
        assert code.client_id == oauth_client.client_id and code.user_id == user.id and code.resource == ISSUER
        assert oauth_client.allows_redirect(code.redirect_uri) and CODE_CHALLENGE.fullmatch(code.code_challenge)
        assert canonical_scope(code.scope) == code.scope
        if code.code_challenge == pkce[1]:  # an issued code redeems
            exchange = {"grant_type": "authorization_code", "client_id": oauth_client.client_id,
                        "code": answer["code"][0], "code_verifier": pkce[0], "redirect_uri": code.redirect_uri}
            assert client.post("/oauth/token", data=exchange).status_code == 200


# Client endpoints: JSON errors, nothing written, and the prepared code or token still good.
@properties
@given(data=st.data())
def test_token_endpoint_answers_hostile_requests_with_a_json_error_and_the_code_still_redeems(
        app, client, user, oauth_client, pkce, data):
    with app.app_context():
        code = AuthorizationCode(client_id=oauth_client.client_id, user_id=user.id, redirect_uri=REDIRECT_URI,
                                 scope="read", code_challenge=pkce[1], user_check=user.session_check).seal()
    exchange = {"grant_type": "authorization_code", "client_id": oauth_client.client_id, "code": code,
                "code_verifier": pkce[0], "redirect_uri": REDIRECT_URI}
    body, content_type = data.draw(bodies(exchange))
    header = data.draw(maybe(authorization_headers(oauth_client.client_id, code)))
    before = rows()
    response = post(client, "/oauth/token", body, content_type, {"Authorization": header} if header else {})
    assert_machine_answer(response)
    assert response.status_code >= 400 and rows() == before
    assert response.headers["Cache-Control"] == "no-store"
    redeemed = client.post("/oauth/token", data=exchange)
    assert redeemed.status_code == 200 and bearer_works(client, redeemed.json["access_token"])


@properties
@given(data=st.data())
def test_revocation_answers_hostile_requests_with_200_or_a_json_error_and_keeps_the_token(
        client, access_token, oauth_client, data):
    body, content_type = data.draw(bodies({"token": access_token.token, "client_id": oauth_client.client_id}))
    header = data.draw(maybe(authorization_headers(oauth_client.client_id, access_token.token)))
    before = rows()
    response = post(client, "/oauth/revocation", body, content_type, {"Authorization": header} if header else {})
    assert_machine_answer(response)
    assert (response.status_code, response.data) == (200, b"") or response.status_code >= 400
    assert rows() == before and bearer_works(client, access_token.token)


@pytest.fixture
def resource_server(app):
    return Client.registered_by_operator("notes-server", [], resource_server="http://127.0.0.1:8001/mcp")


@pytest.fixture
def notes_token(user, oauth_client, resource_server):
    """A token bound to the resource server's resource, the only kind it sees active."""
    return AccessToken.issue(user, oauth_client, resource=resource_server.resource_server)


@properties
@given(data=st.data(), post_credentials=st.booleans())
def test_introspection_answers_hostile_requests_as_inactive_or_with_a_json_error(
        client, notes_token, resource_server, data, post_credentials):
    valid, headers = {"token": notes_token.token}, {"Authorization": "Basic " + basic(resource_server.client_id,
                                                                                      resource_server.secret)}
    if post_credentials:
        valid, headers = {**valid, "client_id": resource_server.client_id, "client_secret": resource_server.secret}, {}
    body, content_type = data.draw(bodies(valid))
    header = data.draw(maybe(authorization_headers(resource_server.client_id, notes_token.token)))
    before = rows()
    response = post(client, "/oauth/introspection", body, content_type, 
                    {"Authorization": header} if header else headers)
    assert_machine_answer(response)
    assert response.status_code >= 400 or response.json == {"active": False}
    assert rows() == before
    again = post(client, "/oauth/introspection", form_body(valid), FORM, headers)
    assert again.status_code == 200 and again.json["active"] is True


REGISTRATION = {"client_name": "Test", "redirect_uris": [REDIRECT_URI], "scope": "read",
                "grant_types": ["authorization_code"], "response_types": ["code"], "token_endpoint_auth_method": "none"}


@properties
@given(data=st.data())
def test_registration_answers_hostile_metadata_with_a_json_error_or_a_clean_public_client(client, data):
    uris = st.one_of(st.lists(uri_candidates, min_size=1, max_size=3), st.just([REDIRECT_URI] * 11),
                     hostile_versions([REDIRECT_URI]))
    body, content_type = data.draw(bodies(REGISTRATION, least=0, redirect_uris=uris))
    before = rows()
    response = post(client, "/oauth/clients", body, content_type)
    assert_machine_answer(response)
    if response.status_code != 201:
        assert response.status_code >= 400 and rows() == before
        return
    assert rows() == {**before, "Client": before["Client"] + 1}
    registered = Client.find_by("client_id", response.json["client_id"])
    assert registered.registration() == response.json and clean_name(registered.name)
    assert registered.token_endpoint_auth_method == "none" and registered.scope in ("read", "read write")
    assert 1 <= len(registered.redirect_uris) <= 10 and all(map(safe_redirect, registered.redirect_uris))


@properties
@given(data=st.data())
def test_api_answers_hostile_credentials_with_a_bearer_challenge_and_keeps_the_token(client, access_token, data):
    token = access_token.token  # read only: a valid DELETE gets 403 and the token stays
    method, path = data.draw(st.sampled_from([("GET", "/api/me"), ("DELETE", "/api/token")]))
    header = data.draw(st.none() | authorization_headers(token))
    query = data.draw(st.one_of(st.dictionaries(texts, texts, max_size=2).map(query_string),
                                st.sampled_from([f"access_token={token}", "access_token", "a&access_token="])))
    body, content_type = data.draw(st.one_of(st.tuples(st.binary(max_size=64), st.sampled_from(CONTENT_TYPES)),
                                             st.just((f"access_token={token}".encode(), FORM))))
    before = rows()
    response = client.open(path, method=method, query_string=query, data=body, content_type=content_type,
                           headers={"Authorization": header} if header is not None else {})
    assert_machine_answer(response)
    scheme, _, credential = (header or "").partition(" ")
    if "access_token" in parse_qs(query, keep_blank_values=True) or (content_type == FORM and b"access_token" in body):
        assert response.status_code == 400 and response.json["error"] == "invalid_request"  # RFC 6750 §2.2, §2.3
    elif scheme.lower() != "bearer" or credential != token:
        assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer ")
    else:  # the token itself, which grants read and not write
        assert response.status_code == (200 if method == "GET" else 403)
    assert rows() == before and bearer_works(client, token)


# Sign-in and the account pages: HTML, and a write only from a valid form with a valid CSRF token.
@settings(properties, max_examples=10)  # each attempt with a username and a password costs 0.05 s of argon2id
@given(data=st.data())
def test_sign_in_answers_hostile_credentials_with_a_page_and_signs_in_only_alice(client, actions, user, data):
    sign_in_state(client, None)
    params = data.draw(hostile_params({"username": "alice", "password": PASSWORD}))
    body, content_type = data.draw(st.just((form_body(params), FORM)) | garbage)
    first = {name: form_values(value)[0] for name, value in params.items()}  # a form field's first value counts
    valid = (content_type == FORM and body == form_body(params) and len(body) <= 64 * 1024
             and (first.get("username", "").strip(), first.get("password")) == ("alice", PASSWORD))
    before = rows()
    response = post(client, "/session", body, content_type, csrf_headers(actions, "valid"))
    assert_page(response)
    assert rows() == before
    assert response.status_code in ((302,) if valid else (401, 413))
    assert (client.get("/").status_code == 200) == valid


@pytest.fixture
def personal_token(user):
    return AccessToken.issue(user, scope="read", description="Backup")


@properties
@given(data=st.data(), csrf=csrf_modes)
def test_personal_token_form_answers_hostile_input_with_a_page_and_mints_only_clean_tokens(
        client, actions, signed_in, personal_token, data, csrf):
    sign_in_state(client, signed_in)
    headers = csrf_headers(actions, csrf)
    body, content_type = data.draw(forms({"description": "Backup script", "scope": "read write"}, least=0))
    before = rows()
    response = post(client, "/my/access_tokens", body, content_type, headers)
    assert_page(response)
    if response.status_code == 201:
        assert csrf == "valid" and rows() == {**before, "AccessToken": before["AccessToken"] + 1}
        minted = AccessToken.select().order_by(AccessToken.id.desc()).get()
        assert clean_name(minted.description) and minted.scope in ("read", "read write")
        assert response.headers["Cache-Control"] == "no-store" and minted.display_prefix.encode() in response.data
    else:
        assert response.status_code in (400, 413, 422) and rows() == before
    assert bearer_works(client, personal_token.token)


@pytest.fixture
def own_app(user):
    return Client.registered_by_user(user, "Mine", [REDIRECT_URI], confidential=True)


@properties
@given(data=st.data(), csrf=csrf_modes, change=st.booleans())
def test_app_form_answers_hostile_input_with_a_page_and_saves_only_clean_apps(
        client, actions, signed_in, own_app, data, csrf, change):
    sign_in_state(client, signed_in)
    headers = csrf_headers(actions, csrf)
    uris = st.lists(uri_candidates, max_size=3).map("\n".join) | hostile_versions(REDIRECT_URI)
    body, content_type = data.draw(forms({"name": "My app", "redirect_uris": REDIRECT_URI, "kind": "public"}, least=0,
                                         redirect_uris=uris))
    before, kept = rows(), Client.get_by_id(own_app.id)
    response = post(client, f"/my/apps/{own_app.client_id}" if change else "/my/apps", body, content_type, headers)
    assert_page(response)
    saved = Client.get_by_id(own_app.id) if change else Client.select().order_by(Client.id.desc()).get()
    if response.status_code in (201, 302):
        assert csrf == "valid" and rows() == {**before, "Client": before["Client"] + (not change)}
        assert saved.owner_id == signed_in.id and clean_name(saved.name)
        assert 1 <= len(saved.redirect_uris) <= 10
        assert all(safe_redirect(uri, https=True) for uri in saved.redirect_uris)
    else:
        assert response.status_code in (400, 413, 422) and rows() == before
        assert not change or (saved.name, saved.redirect_uris) == (kept.name, kept.redirect_uris)
    assert Client.get_by_id(own_app.id).authenticates(own_app.secret)


ACCOUNT_PATHS = ["GET /my/connected_apps/{}", "POST /my/connected_apps/{}/disconnect", "GET /my/apps/{}",
                 "POST /my/apps/{}", "POST /my/apps/{}/secret", "GET /my/apps/{}/delete", "POST /my/apps/{}/delete",
                 "POST /my/access_tokens/{}/revoke", "GET /my/connected_apps?{}", "GET /my/access_tokens?{}",
                 "GET /my/apps?{}"]


@pytest.fixture
def others_app(other_user):
    return Client.registered_by_user(other_user, "Theirs", [REDIRECT_URI])


@properties
@given(route=st.sampled_from(ACCOUNT_PATHS), csrf=st.sampled_from(["valid", None]), data=st.data())
def test_account_pages_answer_hostile_paths_with_a_page_and_touch_nothing_of_the_users(
        client, actions, signed_in, access_token, personal_token, own_app, others_app, data, route, csrf):
    sign_in_state(client, signed_in)
    segment = data.draw(st.one_of(
        texts.filter(lambda text: not text.isdecimal()),  # Werkzeug's int converter reads any script's digits
        st.integers().map(str).filter(lambda number: int(number) != personal_token.id),
        st.just(others_app.client_id)))
    method, path = route.split(" ")
    before = rows()
    response = client.open(path.format(quote_from_bytes(segment.encode("utf-8", "surrogatepass"), safe="")),
                           method=method, headers=csrf_headers(actions, csrf))
    assert_page(response)
    assert response.status_code == 200 if "?" in path else 400 <= response.status_code < 500
    assert rows() == before and bearer_works(client, access_token.token) and bearer_works(client, personal_token.token)
    assert Client.get_by_id(own_app.id).authenticates(own_app.secret)


# The model rules under the endpoints, on any input.
@models_properties
@given(value=st.one_of(texts, json_values, st.lists(st.sampled_from(["read", "write", "Read", "", " ", "\t"]),
                                                     max_size=4).map(" ".join)))
def test_canonical_scope_names_read_or_read_write_only_for_space_separated_scope_words(value):
    scope = canonical_scope(value)
    assert scope in (None, "read", "read write") and canonical_scope(scope or "read") == (scope or "read")
    words = isinstance(value, str) and re.fullmatch(r"(read|write)( (read|write))*", value)
    assert (scope is not None) == bool(words) and (scope == "read write") == bool(words and "write" in value)


@models_properties
@given(uri=st.one_of(uri_candidates, json_values))
def test_loopback_parts_accepts_only_plain_http_loopback_uris(uri):
    parts = loopback_parts(uri)
    assert parts is None or (safe_redirect(uri) and urlsplit(uri).port == (int(parts[1]) if parts[1] else None))
    registrable = parts is not None or isinstance(uri, str) and app_redirect(uri)
    assert Client.registrable_redirect(uri) == (registrable and len(uri) <= 512)


@models_properties
@given(registered=st.lists(st.sampled_from(REGISTERED), min_size=1, max_size=3),
       uri=st.one_of(uri_candidates, json_values))
def test_allows_redirect_accepts_a_registered_uri_or_a_loopback_one_on_another_port(registered, uri):
    oauth_client = Client(name="Test", redirect_uris=registered)
    if not oauth_client.allows_redirect(uri) or uri in registered:
        return
    requested = urlsplit(uri)  # RFC 8252 §7.3: only the port of an http loopback URI may differ
    assert safe_redirect(uri) and requested.port != 0
    assert any(without_port(urlsplit(known)) == without_port(requested) for known in registered)


def without_port(parts):
    return parts._replace(netloc=parts.hostname)


@models_properties
@given(name=texts, uris=st.lists(uri_candidates, max_size=3))
def test_validate_app_passes_only_clean_names_and_safe_redirect_uris(name, uris):
    with contextlib.suppress(Refused):
        Client.validate_app(name, uris)
        assert clean_name(printable_name(name)) and all(safe_redirect(uri, https=True) for uri in uris)


@models_properties
@given(name=texts, password=st.one_of(texts, json_values))
def test_printable_name_and_usable_password_take_any_input(name, password):
    shown = printable_name(name)
    assert printable_name(shown) == shown and printable(shown)
    assert usable_password(password) == (isinstance(password, str) and password != "" and "\0" not in password
                                         and not any(unicodedata.category(char) == "Cs" for char in password))


BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
code_key = Flask(__name__)  # sealing needs only an app's secret key, not a database
code_key.secret_key = "test-" + "k" * 40


@settings(models_properties, max_examples=100)
@given(sealed=st.one_of(texts, json_values, st.text(BASE64URL, min_size=40, max_size=300)), tail=texts.filter(bool),
       index=st.integers(0, 500), replacement=st.sampled_from("Aa0-_Z"), verifier=st.one_of(texts, json_values))
def test_unseal_and_verifies_take_any_string_and_open_only_untampered_codes(pkce, sealed, tail, index, replacement,
                                                                          verifier):
    with code_key.app_context():
        code = AuthorizationCode(client_id="c", user_id=1, redirect_uri=REDIRECT_URI, scope="read",
                                 code_challenge=pkce[1])
        real = code.seal()
        tampered = real[:index % len(real)] + replacement + real[index % len(real) + 1:]
        assert AuthorizationCode.unseal(sealed) is None and AuthorizationCode.unseal(real + tail) is None
        assert AuthorizationCode.unseal(tampered) in (None, code)  # the last character's unused bits may differ
        assert AuthorizationCode.unseal(real) == code and code.verifies(pkce[0])
        assert code.verifies(verifier) == (verifier == pkce[0]) and s256(pkce[0]) == code.code_challenge
