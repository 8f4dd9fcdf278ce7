"""The rules that live on the models: redirect matching, the sealed code, PKCE, tokens, users."""
import dataclasses
import json
from pathlib import Path

import argon2
import peewee
import pytest

from peewee import IntegrityError
from werkzeug.security import generate_password_hash

from actions import PASSWORD
from models import (DAY, AccessToken, AuditEvent, AuthorizationCode, Client, RedeemedCode, RedirectTrust, Refused, User,
                    absent_user_digest, canonical_scope, db, digest, driver_errors, now, s256, stored_row)
from oauth import MAX_PARAMETER_LENGTH
from oauth.client_documents import MAX_URL_LENGTH

VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636 Appendix B
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


@pytest.fixture
def loopback_client(app):
    return Client(name="CLI", redirect_uris=["http://127.0.0.1:8765/callback?app=cli", "http://localhost/cb",
                                             "http://[::1]:5000/cb"])


@pytest.mark.parametrize("uri", [
    "http://127.0.0.1:8765/callback?app=cli", "http://127.0.0.1:1/callback?app=cli",
    "http://127.0.0.1/callback?app=cli", "http://localhost:65535/cb", "http://[::1]/cb", "http://[::1]:80/cb"])
def test_client_allows_registered_uri_with_any_loopback_port(loopback_client, uri):
    assert loopback_client.allows_redirect(uri)


@pytest.mark.parametrize("uri", [
    "http://localhost:8765/callback?app=cli",        # host spelling must match (RFC 8252 §8.3)
    "http://127.0.0.1:8765/callback",               # query must match
    "http://127.0.0.1:8765/callback?app=cli&x=1",
    "http://127.0.0.1:8765/callback/?app=cli",       # path must match
    "http://127.0.0.1:8765/Callback?app=cli",
    "http://127.0.0.1:8765/callback?app=cli#frag",   # no fragments
    "http://127.0.0.1:0/callback?app=cli", "http://127.0.0.1:65536/callback?app=cli",
    "http://user@127.0.0.1:8765/callback?app=cli",    # no userinfo
    "http://127.0.0.1@evil.example/callback?app=cli", "http://127.0.0.1.nip.io/callback?app=cli",
    "https://127.0.0.1:8765/callback?app=cli",        # only http varies its port
    "http://127.0.0.2:8765/callback?app=cli", "http://localhost.:80/cb", "HTTP://localhost/cb",
    "http://localhost/cb/../cb", "http://localhost/cb\n", " http://localhost/cb", "", None, ["http://localhost/cb"]])
def test_client_refuses_anything_but_a_port_change(loopback_client, uri):
    assert not loopback_client.allows_redirect(uri)


def test_client_ids_are_32_letters_and_digits(app):
    ids = {Client.create(name="x", redirect_uris=["http://localhost/cb"]).client_id for _ in range(50)}
    assert len(ids) == 50 and all(len(client_id) == 32 and client_id.isalnum() for client_id in ids)


@pytest.mark.parametrize("uri", [
    "http://127.0.0.1/cb", "http://127.0.0.1:0/cb", "http://[::1]:5555/cb", "http://localhost/callback",
    "http://localhost:3000", "http://127.0.0.1:8080/oauth/callback?client=cli"])
def test_dynamic_clients_may_register_http_loopback(uri):
    assert Client.registrable_redirect(uri)


@pytest.mark.parametrize("uri", [
    "https://example.com/cb", "http://example.com/cb", "https://localhost/cb", "myapp://callback",
    "http://evil.com:80@127.0.0.1/", "http://127.0.0.1@evil.com/", "http://localhost.evil.com/",
    "http://127.0.0.1.nip.io/", "http://127.0.0.1/cb#", "http://127.0.0.1/cb#x", "/cb", "", "javascript:alert(1)",
    "data:text/html,x", "JaVaScRiPt:alert(1)", "\thttp://127.0.0.1/cb", "http://127.0.0.1/c\nb",
    "http://127.0.0.1/\x00", "http://127.0.0.1/c\x0bb", "http://127.0.0.1/a/../b", "http://127.0.0.1/a/%2e%2e/b",
    "http://127.0.0.1/a/%2E/b", "http://127.0.0.1:65536/", "http://127.0.0.1:080/", "http://%6cocalhost/",
    "http://LOCALHOST/", "http://[::ffff:127.0.0.1]/", "http://127.0.0.2/", "http://localhost./",
    "http://127.0.0.1/é", "http://127.0.0.1/" + "a" * 600, 42, None])
def test_dynamic_clients_may_not_register_other_redirects(uri):
    assert not Client.registrable_redirect(uri)


@pytest.mark.parametrize("value, canonical", [
    ("read", "read"), ("write", "read write"), ("read write", "read write"), ("write read", "read write")])
def test_scopes_are_canonical_with_write_including_read(value, canonical):
    assert canonical_scope(value) == canonical


@pytest.mark.parametrize("value", ["", " ", "admin", "read admin", "read  write", "READ", None, ["read"]])
def test_unknown_or_malformed_scopes_have_no_canonical_form(value):
    assert canonical_scope(value) is None


def make_code(**overrides):
    return AuthorizationCode(**{"client_id": "c1", "user_id": 7, "redirect_uri": "http://127.0.0.1/cb",
                                "scope": "read", "code_challenge": CHALLENGE, "resource": None, **overrides})


def test_code_round_trips_every_field_and_is_opaque(app):
    with app.app_context():
        code = make_code(client_id="client-visible-if-signed-only", resource="http://localhost")
        sealed = code.seal()
        assert AuthorizationCode.unseal(sealed) == code
    assert "client-visible" not in sealed and CHALLENGE not in sealed and len(sealed) > 100


def test_each_code_has_its_own_jti(app):
    assert make_code().jti != make_code().jti


def test_code_is_valid_at_55_seconds_and_expired_at_60(app):
    with app.app_context():
        sealed = make_code(issued_at=1_000_000).seal()
        assert AuthorizationCode.unseal(sealed, at=1_000_055)
        assert AuthorizationCode.unseal(sealed, at=1_000_060) is None
        assert AuthorizationCode.unseal(sealed, at=1_000_000 - 30) is None


def test_code_refuses_tampering_truncation_and_garbage(app):
    with app.app_context():
        sealed = make_code().seal()
        flipped = sealed[:50] + ("A" if sealed[50] != "A" else "B") + sealed[51:]
        for bad in (flipped, sealed[:-1], sealed + "A", sealed + "!", "", "garbage", "é" * 60, None, 42, "A" * 5000,
                    "A" * (AuthorizationCode.MAX_LENGTH + 4)):
            assert AuthorizationCode.unseal(bad) is None


def test_the_longest_code_fits_the_cap_the_token_endpoint_takes(app):
    """Every field at its cap, and every character of the URLs one that JSON escapes (a quote doubles)."""
    document_url = "https://a/" + '"' * (MAX_URL_LENGTH - len("https://a/"))
    redirect_uri = "http://127.0.0.1:65535/" + '"' * (Client.MAX_REDIRECT_URI_LENGTH - len("http://127.0.0.1/"))
    resource = "https://a/" + '"' * (MAX_PARAMETER_LENGTH - len("https://a/"))
    longest = make_code(client_id=document_url, user_id=2 ** 63 - 1, redirect_uri=redirect_uri, scope="read write",
                        resource=resource, user_check="f" * 16, issued_at=9_999_999_999)
    with app.app_context():
        sealed = longest.seal()
        assert AuthorizationCode.unseal(sealed, at=9_999_999_999) == longest
    assert 9_000 < len(sealed) <= AuthorizationCode.MAX_LENGTH


def test_code_sealed_under_another_secret_key_is_refused(app, config, tmp_path):
    with app.app_context():
        sealed = make_code().seal()
    app.secret_key = "another-secret-key-entirely"
    with app.app_context():
        assert AuthorizationCode.unseal(sealed) is None


def test_code_is_immutable():
    with pytest.raises(dataclasses.FrozenInstanceError):
        make_code().scope = "read write"


def test_pkce_accepts_the_rfc_7636_example():
    assert make_code().verifies(VERIFIER)


@pytest.mark.parametrize("verifier", [VERIFIER[:-1] + "l", "short", "a" * 42, "a" * 129, VERIFIER + "!", "é" * 43,
                                      "", None, [VERIFIER]])
def test_pkce_refuses_wrong_or_malformed_verifiers(verifier):
    assert not make_code().verifies(verifier)


def test_pkce_refuses_a_malformed_verifier_even_when_its_hash_matches():
    verifier = "!" * 43
    assert not make_code(code_challenge=s256(verifier)).verifies(verifier)


def test_access_token_is_stored_only_as_a_digest(user, oauth_client):
    token = AccessToken.issue(user, oauth_client, scope="read write")
    row = AccessToken.get_by_id(token.id)
    assert token.token.startswith("kf_at_") and len(token.token) >= 6 + 43
    assert row.digest == digest(token.token) and token.token not in (row.digest, row.display_prefix)
    assert row.display_prefix == token.token[:12]


def test_personal_tokens_have_their_own_prefix(user):
    assert AccessToken.issue(user).token.startswith("kf_pat_")


def test_authenticate_finds_the_token_and_refuses_others(access_token, oauth_client):
    bearer = AccessToken.authenticate(access_token.token)
    assert bearer[:5] == (access_token.id, "alice", oauth_client.client_id, "read", None)
    assert (bearer.user_id, bearer.created_at) == (access_token.user_id, access_token.created_at)
    for other in (access_token.token + "x", access_token.token[:-1], "kf_at_nope", "", None, "x" * 5000):
        assert AccessToken.authenticate(other) is None


def test_authenticate_records_use_at_most_once_a_minute(access_token):
    AccessToken.authenticate(access_token.token, at=1_000)
    AccessToken.authenticate(access_token.token, at=1_059)
    assert AccessToken.get_by_id(access_token.id).last_used_at == 1_000
    AccessToken.authenticate(access_token.token, at=1_060)
    assert AccessToken.get_by_id(access_token.id).last_used_at == 1_060


def test_a_code_redeems_once_and_the_second_redemption_revokes_the_first(user, oauth_client):
    code = make_code(client_id=oauth_client.client_id, user_id=user.id)
    first = AccessToken.redeem(code, user, oauth_client)
    assert first and AccessToken.authenticate(first.token)
    assert AccessToken.redeem(code, user, oauth_client) is None
    assert AccessToken.authenticate(first.token) is None


def test_a_code_stays_spent_after_its_token_is_revoked(user, oauth_client):
    code = make_code(client_id=oauth_client.client_id, user_id=user.id)
    first = AccessToken.redeem(code, user, oauth_client)
    assert AccessToken.revoke(first.token, oauth_client)
    assert AccessToken.redeem(code, user, oauth_client) is None
    assert AccessToken.redeem(code, user, oauth_client) is None and AccessToken.select().count() == 0


def test_spent_codes_are_forgotten_only_after_two_code_lifetimes_and_once_a_lifetime(app):
    RedeemedCode.spend("old", at=1_000)
    RedeemedCode.spend("recent", at=1_100)  # forgets nothing: "old" is younger than two lifetimes
    RedeemedCode.spend("newer", at=1_159)  # nor within a lifetime of the last forgetting
    assert [row.jti for row in RedeemedCode.select().order_by(RedeemedCode.redeemed_at)] == ["old", "recent", "newer"]
    RedeemedCode.spend("newest", at=1_160)
    with pytest.raises(IntegrityError):
        RedeemedCode.spend("recent", at=1_161)
    assert [row.jti for row in RedeemedCode.select().order_by(RedeemedCode.redeemed_at)] == ["recent", "newer", "newest"]


def test_revoke_lets_anyone_revoke_a_personal_token_but_only_the_client_its_own(user, oauth_client, other_oauth_client):
    personal, granted = AccessToken.issue(user), AccessToken.issue(user, oauth_client)
    assert not AccessToken.revoke(granted.token) and not AccessToken.revoke(granted.token, other_oauth_client)
    assert AccessToken.revoke(granted.token, oauth_client) and AccessToken.revoke(personal.token)
    assert AccessToken.select().count() == 0


def test_deleting_a_client_deletes_its_tokens(access_token, oauth_client):
    oauth_client.delete_instance()
    assert AccessToken.authenticate(access_token.token) is None


def test_user_registration_refuses_duplicates_empty_passwords_and_odd_names(app):
    User.register("alice", "password1")
    for name, password in (("alice", "password2"), ("bob", ""), ("bob", "password\0"), ("bob", "password\ud800"),
                           ("bob", "seven77"), ("bob", "é" * 513), ("", "password1"), (" bob", "password1"),
                           ("b" * 151, "password1"), ("bo b", "password1")):
        with pytest.raises(ValueError):
            User.register(name, password)


def test_user_authenticates_only_with_the_right_password(user):
    assert User.authenticate("alice", "correct horse battery staple") == user
    assert User.authenticate("alice", "wrong") is None and User.authenticate("nobody", "wrong") is None
    assert User.authenticate("alice", "correct horse battery staple\0") is None
    assert User.get_by_id(user.id).password_digest.startswith("$argon2id$v=19$m=19456,t=2,p=1$")


def test_an_unknown_name_costs_the_same_argon2id_check_as_a_wrong_password(user):
    assert argon2.extract_parameters(absent_user_digest()) == argon2.extract_parameters(user.password_digest)
    assert absent_user_digest() == absent_user_digest() != user.password_digest


EARLIER_DIGESTS = {"scrypt": lambda: generate_password_hash(PASSWORD, "scrypt"),
                   "pbkdf2": lambda: generate_password_hash(PASSWORD, "pbkdf2:sha256:1000"),  # the format, cheaply
                   "weaker argon2id": lambda: argon2.PasswordHasher(time_cost=1, memory_cost=8 * 1024).hash(PASSWORD)}


@pytest.mark.parametrize("kind", EARLIER_DIGESTS)
def test_a_digest_made_otherwise_is_made_anew_at_the_next_sign_in_and_only_then(app, kind):
    earlier = User.create(username="alice", password_digest=EARLIER_DIGESTS[kind]())
    assert User.authenticate("alice", "wrong password") is None
    assert User.get_by_id(earlier.id).password_digest == earlier.password_digest
    signed_in = User.authenticate("alice", PASSWORD)
    stored = User.get_by_id(earlier.id).password_digest
    assert signed_in == earlier and signed_in.password_digest == stored != earlier.password_digest
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$") and User.authenticate("alice", PASSWORD) == earlier
    assert User.get_by_id(earlier.id).password_digest == stored  # made once
    assert AuditEvent.select().count() == 0  # nothing about the account changed


def test_a_rehash_never_undoes_a_password_changed_meanwhile(app):
    proven = User.create(username="alice", password_digest=EARLIER_DIGESTS["scrypt"]())
    User.get_by_id(proven.id).change_password("the operator's new one", by="operator")
    proven.rehash_password(PASSWORD)  # a sign-in that checked the old digest just before the change
    assert User.authenticate("alice", PASSWORD) is None and User.authenticate("alice", "the operator's new one")


@pytest.fixture
def confidential(app):
    return Client.create_confidential(name="Server App", redirect_uris=["https://app.example/cb"])


def test_a_confidential_client_holds_only_the_digest_of_its_secret(confidential):
    row = Client.get_by_id(confidential.id)
    assert confidential.secret.startswith("kf_cs_") and len(confidential.secret) >= 6 + 43
    assert row.secret_digest == digest(confidential.secret) and not hasattr(row, "secret")
    assert row.is_confidential and row.token_endpoint_auth_method == "client_secret_basic"


@pytest.mark.parametrize("method, confidential", [
    ("none", False), ("client_secret_basic", True), ("client_secret_post", True)])
def test_only_a_secret_method_makes_a_client_confidential(app, method, confidential):
    assert Client(name="A", redirect_uris=[], token_endpoint_auth_method=method).is_confidential is confidential


@pytest.mark.parametrize("method", ["none", "private_key_jwt", None])
def test_a_confidential_client_needs_a_secret_method(app, method):
    with pytest.raises(ValueError):
        Client.create_confidential(method, name="A", redirect_uris=["https://app.example/cb"])
    assert Client.select().count() == 0


def test_a_client_authenticates_only_its_own_secret(confidential, oauth_client):
    assert confidential.authenticates(confidential.secret)
    assert Client.find_by("client_id", confidential.client_id).authenticates(confidential.secret)
    for wrong in (confidential.secret + "x", confidential.secret[:-1], confidential.secret.upper(), "", None,
                  [confidential.secret], 42, b"kf_cs_", "é", "\ud800"):
        assert not confidential.authenticates(wrong)
    assert not oauth_client.authenticates("") and not oauth_client.authenticates(None)
    assert not oauth_client.authenticates(confidential.secret)


def test_regenerating_a_secret_invalidates_the_old_one(confidential):
    old = confidential.secret
    new = confidential.regenerate_secret()
    row = Client.get_by_id(confidential.id)
    assert new != old and new.startswith("kf_cs_")
    assert row.authenticates(new) and not row.authenticates(old) and row.secret_digest == digest(new)


def test_a_public_client_has_no_secret_to_regenerate(oauth_client):
    with pytest.raises(ValueError):
        oauth_client.regenerate_secret()
    assert Client.get_by_id(oauth_client.id).secret_digest is None


def test_a_dynamically_registered_client_stays_public(oauth_client):
    assert not oauth_client.is_confidential
    assert oauth_client.registration()["token_endpoint_auth_method"] == "none"


def test_the_peewee_internals_keyfob_uses_are_still_there(app):
    """driver_errors and stored_row rest on two of peewee's internals (checked against peewee 4.5)."""
    with pytest.raises(peewee.DatabaseError), driver_errors():  # the driver's own error, translated into peewee's
        db.cursor().execute("SELECT * FROM no_such_table")
    assert stored_row(Client, {"name": "x"}).client_id is None  # no default computed for a stored row
    assert len(Client(name="x").client_id) == 32


@pytest.mark.parametrize("made, kind", [
    (lambda user: Client.registered_itself("CLI", ["http://127.0.0.1/cb"], "read"), Client.SELF_REGISTERED),
    (lambda user: Client.described_by_document("https://app.example/client.json", "Doc", ["https://app.example/cb"],
                                               "read"), Client.DOCUMENT),
    (lambda user: Client.registered_by_user(user, "Mine", ["https://app.example/cb"]), Client.USER),
    (lambda user: Client.registered_by_operator("Notes", [], confidential=True), Client.OPERATOR)])
def test_a_clients_kind_is_who_described_it(user, made, kind):
    client = made(user)
    assert client.kind == kind and Client.find_by("client_id", client.client_id).kind == kind
    assert client.names_itself == (kind in (Client.SELF_REGISTERED, Client.DOCUMENT))
    assert (Client.select().where(Client.naming_themselves()).count() == 1) == client.names_itself


def test_a_resource_server_is_a_confidential_operators_client_that_serves_only_its_own_resource(app):
    notes = Client.registered_by_operator("Notes", [], resource_server="http://127.0.0.1:8001/mcp")
    stored = Client.find_by("client_id", notes.client_id)
    assert stored.is_confidential and stored.kind == Client.OPERATOR and stored.authenticates(notes.secret)
    assert stored.serves("http://127.0.0.1:8001/mcp") and stored.serves("http://127.0.0.1:8001/mcp/")
    assert not any(map(stored.serves, [None, "", "http://127.0.0.1:8001/mcp2", "http://127.0.0.1:8001", "http://x"]))
    assert not Client.registered_by_operator("Worker", [], confidential=True).serves(None)
    assert Client.resource_servers() == {"http://127.0.0.1:8001/mcp": "Notes"}


@pytest.mark.parametrize("url", ["notes.internal/mcp", "ftp://notes.internal", "http://notes.internal/mcp#top",
                                 "http:///mcp", "http://notes internal/mcp", "http://[::1/mcp", "x" * 3000])
def test_a_resource_servers_url_must_be_an_absolute_http_url(app, url):
    with pytest.raises(Refused, match="is not an absolute http"):
        Client.validate_app("Notes", [], signs_people_in=False, resource_server=url)


def test_an_app_refusal_carries_every_reason(app):
    with pytest.raises(Refused) as refusal:
        Client.validate_app("", ["ftp://x"], app_type="secret")
    assert refusal.value.reasons == ["The app's name must have a visible letter.",
                                     "ftp://x is not an https, http loopback or app URI without a fragment.",
                                     "Choose public or confidential."]


def names_in(fixture):
    """Every client_name a compatibility fixture sends, wherever it sends it."""
    if isinstance(fixture, list):
        return [name for value in fixture for name in names_in(value)]
    if isinstance(fixture, dict):
        return [fixture.get("client_name"), *names_in(list(fixture.values()))]
    return []


MATRIX_NAMES = sorted({name for path in (Path(__file__).parent / "clients").glob("*.json")
                       for name in names_in(json.loads(path.read_text())) if name is not None})


@pytest.mark.parametrize("name", [*MATRIX_NAMES, "MCP Client", "Claude \U0001f916", "Tie\u0302\u0301ng Vie\u0323\u0302t",
                                  "कीं", "Zed\u200b", "Key fob manager", "n" * 255])
def test_the_names_real_clients_send_are_accepted(name):
    assert Client.checked_name(name) == name.replace("\u200b", "")


def test_the_compatibility_matrix_names_are_all_checked():
    assert {"Claude", "Claude Code", "ChatGPT", "Codex", "Cursor", "MCP Inspector", "Visual Studio Code"} <= set(MATRIX_NAMES)


@pytest.mark.parametrize("name, reason", [
    ("\u3164\u3164\u3164", "visible letter"), ("\uffa0\u115f\u1160", "visible letter"), ("   ", "visible letter"),
    ("\u200b\u2060\u202e", "visible letter"), ("\u2800 \u3000 42 ✔", "visible letter"), ("", "visible letter"), (None, "visible letter"),
    ("n" * 256, "at most 255 characters"), ("Zalgo\u0300\u0301\u0302", "2 combining marks"),
    ("o\u0300\u0301\u0302", "2 combining marks"), ("A\u20dd\u20dd\u20dd", "2 combining marks"),
    ("✔ Verified by Keyfob. This app is part of Keyfob itself", "Keyfob"), ("keyfob", "Keyfob"), ("KEYFOB", "Keyfob"),
    ("ＫＥＹＦＯＢ", "Keyfob"), ("Ke\u200byfob", "Keyfob"), ("Unverified", "verified"), ("VÉRIFIED app", "verified"),
    ("ᵛᵉʳⁱᶠⁱᵉᵈ", "verified")])
def test_a_name_that_could_spoof_the_consent_page_is_refused(name, reason):
    with pytest.raises(Refused, match=reason):
        Client.checked_name(name)


def test_every_way_a_client_gets_a_name_checks_it(app, user):
    spoof = "Verified by Keyfob"
    for register in (lambda: Client.validate_app(spoof, ["https://app.example/cb"]),
                     lambda: Client.registered_by_user(user, spoof, ["https://app.example/cb"]),
                     lambda: Client.registered_by_operator(spoof, [], confidential=True),
                     lambda: Client.fields_from_document(CHATGPT["client_id"], {**CHATGPT, "client_name": spoof})):
        with pytest.raises(Refused, match="Keyfob"):
            register()
    app = Client.registered_by_user(user, "Reports", ["https://app.example/cb"])
    with pytest.raises(Refused, match="visible letter"):
        app.change_app("\u3164", app.redirect_uris)
    assert Client.get_by_id(app.id).name == "Reports" and Client.select().count() == 1


@pytest.mark.parametrize("name, shown", [("n" * 60, "n" * 60), ("n" * 61, "n" * 59 + "…"),
                                         ("a" * 58 + " " * 10, "a" * 58 + "…"), ("Claude", "Claude")])
def test_the_consent_page_shows_at_most_60_characters_of_a_name(name, shown):
    assert Client(name=name).shown_name == shown and len(shown) <= Client.SHOWN_NAME_LENGTH


CHATGPT = {"client_id": "https://chatgpt.com/oauth/client.json", "client_name": "ChatGPT",
           "redirect_uris": ["https://chatgpt.com/connector_platform_oauth_redirect"],
           "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
           "token_endpoint_auth_method": "private_key_jwt",
           "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"],
           "jwks_uri": "https://chatgpt.com/oauth/jwks.json"}  # tests/clients/chatgpt.json


def test_a_document_that_also_allows_what_keyfob_does_not_use_describes_a_public_client():
    fields = Client.fields_from_document(CHATGPT["client_id"], CHATGPT)
    assert fields == {"name": "ChatGPT", "redirect_uris": CHATGPT["redirect_uris"], "scope": "read write"}


@pytest.mark.parametrize("change, reason", [
    ({"token_endpoint_auth_methods_supported": ["private_key_jwt"]}, "private_key_jwt needs a secret or a key"),
    ({"token_endpoint_auth_methods_supported": None}, "must allow a public client"),
    ({"grant_types": ["urn:ietf:params:oauth:grant-type:jwt-bearer"]}, "authorization_code grant"),
    ({"response_types": ["token"]}, "code response type"), ({"grant_types": "authorization_code"}, "authorization_code"),
    ({"redirect_uris": ["http://chatgpt.com/cb", "myapp://cb"]}, "redirect_uris must list"),
    ({"client_secret": "x", "token_endpoint_auth_method": "none"}, "must allow a public client")])
def test_a_document_is_refused_when_keyfob_cannot_serve_it_as_a_public_client(change, reason):
    with pytest.raises(Refused, match=reason):
        Client.fields_from_document(CHATGPT["client_id"], {**CHATGPT, **change})


def test_a_documents_redirect_uris_keep_what_may_be_registered():
    uris = ["http://127.0.0.1:33418/", "https://vscode.dev/redirect", "javascript:alert(1)", "vscode://x/cb"]
    document = {"client_id": "https://vscode.dev/oauth/client-metadata.json", "client_name": "VS Code",
                "redirect_uris": uris}
    assert Client.fields_from_document(document["client_id"], document)["redirect_uris"] == [uris[0], uris[1], uris[3]]
    trusting_nothing = RedirectTrust.parse(schemes="", hosts="")
    assert Client.fields_from_document(document["client_id"], document, trusting_nothing)["redirect_uris"] == uris[:2]


@pytest.mark.parametrize("uri, allowed", [
    ("com.example.app:/oauth2redirect", True), ("com.example.app://cb?x=1", True), ("cursor://a/cb", True),
    ("vscode-insiders://a/cb", True), ("myapp://cb", False), ("com.example.app:", False), ("com.example.app:/#x", False),
    ("com.example.app://user@host/cb", False), ("com.example.app:/a/%2e%2e/b", False), ("Com.Example.App:/cb", False),
    ("javascript:alert(1)", False), ("view-source:https://x", False), ("intent://x#Intent;end", False),
    ("x-safari-https://evil.example/", False), ("microsoft-edge:https://evil.example/", False),
    ("x.y://h:abc/", False), ("x.y://[::1/", False), ("x.y://a..b/", False), ("x.y://" + "a" * 64 + "/", False),
    ("x.y://h:65536/", False), ("x.y://UPPER/", False), ("x.y://h:8080/cb?at=@x", True), ("x.y:///cb", True)])
def test_native_apps_register_private_use_schemes_with_a_period_or_trusted(uri, allowed):
    assert Client.registrable_redirect(uri) is allowed  # RFC 8252 §7.1


def test_trust_comes_from_the_settings_and_never_takes_a_browsers_scheme():
    assert RedirectTrust.parse() == RedirectTrust() and RedirectTrust().schemes == {"cursor", "vscode", "vscode-insiders"}
    trust = RedirectTrust.parse(schemes=" myapp , com.example.app", hosts="claude.ai,chatgpt.com")
    assert trust == RedirectTrust(frozenset({"myapp", "com.example.app"}), frozenset({"claude.ai", "chatgpt.com"}))
    assert Client.registrable_redirect("https://claude.ai/api/mcp/auth_callback", trust)
    with pytest.raises(Refused) as refusal:
        RedirectTrust.parse(schemes="javascript,ok", hosts="Claude.AI")
    assert len(refusal.value.reasons) == 2


def test_with_idle_days_an_unused_token_is_refused_and_one_in_use_expires(user, oauth_client):
    token = AccessToken.issue(user, oauth_client)
    assert AccessToken.authenticate(token.token).expires_at is None  # tokens live until revoked by default
    at = now() + 120
    assert AccessToken.authenticate(token.token, idle_days=30, at=at).expires_at == at + 30 * DAY
    assert AccessToken.authenticate(token.token, idle_days=30, at=at + 30 * DAY) is None
    assert AccessToken.get_or_none(AccessToken.digest == digest(token.token)) is not None  # refused, not yet swept

