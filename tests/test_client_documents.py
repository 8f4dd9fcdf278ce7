"""Client ID Metadata Documents, served by a real HTTPS server on this machine with a test certificate
authority: Keyfob trusts that authority and that address only through its test-only settings."""
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from actions import Actions
from app import create_app
from live import DOCUMENT_CALLBACK, Documents, SdkClient, keyfob_serving
from models import AccessToken, Client, User, db
from oauth import MAX_PARAMETER_LENGTH
from oauth.client_documents import MAX_URL_LENGTH
from oauth.public_fetch import is_public


def hits(url):
    return Documents.hits.get(url.split("/", 3)[3].join(["/", ""]), 0)


@pytest.fixture
def config(config, tls_files):
    return {**config, "TESTING_CLIENT_DOCUMENT_CA": str(tls_files / "ca.pem"),
            "TESTING_CLIENT_DOCUMENT_ADDRESSES": ["127.0.0.1", "::1"]}


def params(client_id, pkce, redirect_uri="http://127.0.0.1:50811/callback"):
    return {"client_id": client_id, "redirect_uri": redirect_uri, "response_type": "code", "state": "st",
            "code_challenge": pkce[1], "code_challenge_method": "S256", "scope": "read"}


def test_a_document_client_is_authorized_like_any_other_and_its_host_is_shown(client, actions, signed_in, publish,
                                                                              pkce):
    url = publish()
    grant = params(url, pkce)
    page = client.get("/oauth/authorization/new", query_string=grant)
    html = page.get_data(as_text=True)
    assert page.status_code == 200, html
    assert "Described by <strong>localhost</strong>" in html and "Notes Desktop" in html
    assert "your own computer" in html  # the loopback redirect warning

    approved = client.post("/oauth/authorization",
                           data={**grant, "decision": "approve", "csrf_token": actions.csrf_token(page)})
    token = client.post("/oauth/token", data={"grant_type": "authorization_code", "client_id": url,
                                              "code": actions.query(approved)["code"], "code_verifier": pkce[0],
                                              "redirect_uri": grant["redirect_uri"]})
    assert token.status_code == 200, token.json
    bearer = {"Authorization": f"Bearer {token.json['access_token']}"}
    assert client.get("/api/me", headers=bearer).json["client_id"] == url
    assert [app.client.name for app in AccessToken.connected_apps(signed_in)] == ["Notes Desktop"]

    revoked = client.post("/oauth/revocation", data={"token": token.json["access_token"], "client_id": url})
    assert revoked.status_code == 200 and client.get("/api/me", headers=bearer).status_code == 401


def test_metadata_advertises_client_id_metadata_documents(client):
    assert client.get("/.well-known/oauth-authorization-server").json["client_id_metadata_document_supported"] is True


@pytest.mark.parametrize("case, document, expected", [
    ("mismatch", {"client_id": "https://elsewhere.example/client.json"}, "its client_id is not the URL"),
    ("no name", {"client_name": ""}, "its client_name"),
    ("invisible name", {"client_name": "\u3164\u3164\u3164"}, "its client_name must have a visible letter"),
    ("Keyfob's voice", {"client_name": "Verified by Keyfob"}, "its client_name must not contain"),
    ("long name", {"client_name": "n" * 101}, "its client_name must be at most 100 characters long"),
    ("six redirects", {"redirect_uris": [f"http://127.0.0.1/{n}" for n in range(6)]}, "must list 1 to 5"),
    ("secret", {"token_endpoint_auth_method": "client_secret_basic"}, "public client"),
    ("only a key", {"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://app.example/jwks"},
     "private_key_jwt needs a secret or a key that Keyfob does not check"),
    ("no code grant", {"grant_types": ["client_credentials"]}, "authorization_code grant"),
    ("bad redirect", {"redirect_uris": ["http://attacker.example/cb"]}, "its redirect_uris"),
    ("no redirects", {"redirect_uris": []}, "its redirect_uris"),
])
def test_an_invalid_document_is_refused_with_an_error_page(client, signed_in, publish, pkce, case, document, expected):
    page = client.get("/oauth/authorization/new", query_string=params(publish(document), pkce))
    assert page.status_code == 400 and page.location is None
    assert expected in page.get_data(as_text=True)
    assert Client.select().count() == 0


@pytest.mark.parametrize("case, served, expected", [
    ("not JSON", {"body": b"<html>hello</html>"}, "it is not JSON"),
    ("oversized", {"body": b'{"pad": "' + b"x" * 6000 + b'"}'}, "larger than"),
    ("redirect", {"status": 302, "headers": {"Location": "https://localhost/elsewhere.json"}, "body": b""},
     "answered 302"),
    ("missing", {"status": 404, "body": b""}, "answered 404"),
    ("slow", {"delay": 6}, "did not arrive in time"),
    ("trickling", {"trickle": 0.5}, "did not arrive in time"),
])
def test_an_unusable_fetch_is_refused(client, signed_in, publish, pkce, case, served, expected):
    started = time.monotonic()
    page = client.get("/oauth/authorization/new", query_string=params(publish(**served), pkce))
    assert page.status_code == 400 and expected in page.get_data(as_text=True)
    assert time.monotonic() - started < 5.5
    assert Client.select().count() == 0


def test_a_redirect_uri_the_document_does_not_list_gets_an_error_page(client, signed_in, publish, pkce):
    page = client.get("/oauth/authorization/new",
                      query_string=params(publish(), pkce, redirect_uri="http://127.0.0.1:50811/elsewhere"))
    assert page.status_code == 400 and page.location is None


def test_documents_are_cached_by_their_headers_within_bounds(client, signed_in, publish, pkce):
    url = publish(headers={"Cache-Control": "max-age=0"})  # kept the minimum minute all the same
    for _ in range(3):
        assert client.get("/oauth/authorization/new", query_string=params(url, pkce)).status_code == 200
    assert hits(url) == 1


def test_a_documents_max_age_sets_how_long_it_is_kept(client, signed_in, publish, pkce):
    import oauth.client_documents as documents
    import oauth.public_fetch as public_fetch
    url = publish(headers={"Cache-Control": "public, max-age=7200"})
    assert client.get("/oauth/authorization/new", query_string=params(url, pkce)).status_code == 200
    assert 7100 < documents.cache[url][0] - time.monotonic() <= 7200
    assert [public_fetch.max_age(header) for header in ("", "max-age=5", "max-age=9999999", "no-store, max-age=600")] \
        == [300, 60, 86400, 60]


def test_a_changed_document_updates_the_client_after_its_cache_time(app, client, signed_in, publish, pkce):
    import oauth.client_documents as documents
    url = publish(name="changing")
    assert client.get("/oauth/authorization/new", query_string=params(url, pkce)).status_code == 200
    publish({"client_id": url, "client_name": "Notes Desktop 2"}, name="changing")
    documents.cache.clear()  # as if its cache time had passed
    assert "Notes Desktop 2" in client.get("/oauth/authorization/new", query_string=params(url, pkce)).get_data(
        as_text=True)
    assert [row.name for row in Client.select()] == ["Notes Desktop 2"]


def test_production_defaults_refuse_a_private_address_and_an_untrusted_certificate(publish, pkce, database_url,
                                                                                    tls_files, password_digest):
    url = publish()
    base = {"TESTING": True, "SECRET_KEY": "k" * 40, "ISSUER": "http://keyfob.test", "DATABASE_URL": database_url,
            "RATELIMIT_ENABLED": False}
    trusting = {"TESTING_CLIENT_DOCUMENT_ADDRESSES": ["127.0.0.1"], "TESTING_CLIENT_DOCUMENT_CA": str(tls_files / "ca.pem")}
    for settings, expected in (({}, "does not resolve to public addresses only"),
                               ({"TESTING_CLIENT_DOCUMENT_ADDRESSES": ["127.0.0.1"]}, "fetching it failed"),
                               ({**trusting, "TESTING": False}, "does not resolve to public addresses only"),
                               ({"TESTING_CLIENT_DOCUMENT_ADDRESSES": "127.0.0.1/8"}, "public addresses only")):
        import oauth.client_documents as documents
        documents.cache.clear()
        app = create_app({**base, **settings})
        try:
            User.get_or_create(username="alice", defaults={"password_digest": password_digest})
            browser = Actions(app.test_client())
            assert browser.sign_in().status_code == 302
            page = browser.client.get("/oauth/authorization/new", query_string=params(url, pkce))
            assert page.status_code == 400 and expected in page.get_data(as_text=True)
        finally:
            db.close()


@pytest.mark.parametrize("address, public", [
    ("93.184.215.14", True), ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("224.0.0.1", False),
    ("::1", False), ("fe80::1", False), ("fd00::1", False), ("::ffff:127.0.0.1", False),
    ("::ffff:169.254.169.254", False), ("64:ff9b::a9fe:a9fe", False), ("2002:7f00:1::", False),
    ("::7f00:1", False), ("::ffff:0:7f00:1", False), ("64:ff9b:1::7f00:1", False), ("fec0::1", False),
])
def test_only_public_addresses_pass(address, public):
    assert is_public(address) is public


def test_a_document_clients_tokens_go_when_the_user_disconnects_it(client, signed_in, publish, pkce):
    url = publish()
    Client.described_by_document(url, "Notes Desktop", [DOCUMENT_CALLBACK], "read write")
    token = AccessToken.issue(signed_in, Client.find_by("client_id", url))
    page = client.get("/my/connected_apps")
    assert "Notes Desktop" in page.get_data(as_text=True) and "Disconnect" in page.get_data(as_text=True)
    assert AccessToken.disconnect(signed_in, Client.find_by("client_id", url)) == 1
    assert AccessToken.authenticate(token.token) is None


@pytest.mark.anyio
async def test_the_mcp_python_sdk_client_completes_the_flow_with_a_client_metadata_url(publish, tmp_path, tls_files,
                                                                                     served_database):
    import anyio

    url = publish({"client_name": "SDK by document"})
    settings = {**served_database, "KEYFOB_TESTING": "true", "KEYFOB_TESTING_CLIENT_DOCUMENT_CA": str(tls_files / "ca.pem"),
                "KEYFOB_TESTING_CLIENT_DOCUMENT_ADDRESSES": '["127.0.0.1", "::1"]'}
    with keyfob_serving(tmp_path / "instance", settings=settings) as server:
        sdk = SdkClient(server, f"{server}/api/me", "SDK by document", grant_types=["authorization_code"],
                        client_metadata_url=url)
        async with sdk.http() as http:
            with anyio.fail_after(30):
                response = await http.get(f"{server}/api/me")

    assert response.status_code == 200
    assert response.json() == {"user": "alice", "scope": "read", "client_id": url}
    assert ("POST", "/oauth/clients", 201) not in sdk.statuses(base=server)  # no registration: the URL is the client_id
    assert hits(url) == 1


def test_a_signed_out_request_fetches_nothing_and_makes_no_client(client, user, publish, pkce):
    url = publish()
    page = client.get("/oauth/authorization/new", query_string=params(url, pkce))
    assert page.status_code == 302 and page.location == "/session/new"
    answer = client.post("/oauth/authorization", data={**params(url, pkce), "decision": "approve"},
                         headers={"X-CSRFToken": "-"})
    assert answer.status_code in (400, 403) and answer.location is None
    assert hits(url) == 0 and Client.select().count() == 0


def test_the_fetch_limit_reads_the_client_id_where_the_view_reads_it(app, publish):
    from oauth.authorizations import names_document
    url = publish()
    with app.test_request_context("/oauth/authorization?client_id=x", method="POST", data={"client_id": url}):
        assert names_document()
    with app.test_request_context("/oauth/authorization", method="POST", json={"client_id": url}):
        assert names_document()


def test_fetches_beyond_the_concurrent_cap_are_refused_at_once_and_not_remembered(client, signed_in, publish, pkce):
    import oauth.client_documents as documents
    held = [documents.fetching.take(f"someone {n // 2}") for n in range(documents.MAX_FETCHING)]
    url = publish()
    try:
        page = client.get("/oauth/authorization/new", query_string=params(url, pkce))
        assert page.status_code == 400 and "try again in a moment" in page.get_data(as_text=True)
    finally:
        for slot in filter(None, held):
            slot.let_go()
    assert client.get("/oauth/authorization/new", query_string=params(url, pkce)).status_code == 200


def test_a_document_client_is_disconnected_through_the_page(client, actions, signed_in, publish):
    url = publish()
    client_row = Client.described_by_document(url, "Notes Desktop", [DOCUMENT_CALLBACK], "read")
    token = AccessToken.issue(signed_in, client_row)
    index = client.get("/my/connected_apps").get_data(as_text=True)
    assert f'href="/my/connected_apps/{url}"' in index
    page = client.get(f"/my/connected_apps/{url}")
    assert page.status_code == 200
    gone = client.post(f"/my/connected_apps/{url}/disconnect", data={"csrf_token": actions.csrf_token(page)})
    assert gone.status_code == 302 and AccessToken.authenticate(token.token) is None


def test_a_document_that_also_lists_grants_and_methods_keyfob_does_not_use_is_served_as_public(
        client, actions, signed_in, publish, pkce):
    """As ChatGPT's and Claude's documents (tests/clients): refresh and JWT grants, private_key_jwt beside none."""
    url = publish({"grant_types": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:jwt-bearer"],
                   "token_endpoint_auth_method": "private_key_jwt", "jwks_uri": "https://app.example/jwks",
                   "token_endpoint_auth_methods_supported": ["none", "private_key_jwt"], "application_type": "web"})
    approved = actions.approve(params(url, pkce))
    assert approved.status_code == 302 and "code" in actions.query(approved)
    described = Client.find_by("client_id", url)
    assert described.kind == Client.DOCUMENT and not described.is_confidential



def test_one_user_fetches_at_most_two_documents_at_once_and_others_fetch_beside_them(app, publish, pkce, user,
                                                                                     other_user):
    alice, mallory = browser(app, user.username), browser(app, other_user.username)
    slow = [publish(delay=5, name=f"slow-{n}-{time.monotonic_ns()}") for n in range(2)]
    with ThreadPoolExecutor(2) as pool:
        holding = [pool.submit(browser(app, user.username).client.get, "/oauth/authorization/new",
                               query_string=params(url, pkce)) for url in slow]
        wait_for(lambda: all(hits(url) for url in slow))
        third = alice.client.get("/oauth/authorization/new", query_string=params(publish(), pkce))
        assert third.status_code == 400 and "try again in a moment" in third.get_data(as_text=True)
        assert mallory.client.get("/oauth/authorization/new", query_string=params(publish(), pkce)).status_code == 200
        timed_out = [future.result() for future in holding]
    assert all(page.status_code == 400 and "did not arrive in time" in page.get_data(as_text=True)
               for page in timed_out)

    publish(name=slow[0].rsplit("/", 1)[1].removesuffix(".json"))  # the same document, answering at once now
    assert mallory.client.get("/oauth/authorization/new", query_string=params(slow[0], pkce)).status_code == 200
    assert alice.client.get("/oauth/authorization/new", query_string=params(slow[0], pkce)).status_code == 200


def test_a_definite_refusal_is_remembered_and_a_server_error_is_not(client, signed_in, publish, pkce):
    missing, failing = publish(status=404, body=b""), publish(status=503, body=b"")
    for url in (missing, failing):
        for _ in range(2):
            page = client.get("/oauth/authorization/new", query_string=params(url, pkce))
            assert page.status_code == 400 and "answered" in page.get_data(as_text=True)
    assert (hits(missing), hits(failing)) == (1, 2)


def browser(app, username):
    """Another browser, signed in as username."""
    signed = Actions(app.test_client())
    assert signed.sign_in(username).status_code == 302
    return signed


def wait_for(condition, seconds=3):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_code_for_the_longest_document_url_redirect_and_resource_redeems(config, document_server, publish, pkce,
                                                                           password_digest):
    """Each at its cap and made of quotes, which the sealed JSON doubles: the longest code Keyfob can seal."""
    resource = "https://a/" + '"' * (MAX_PARAMETER_LENGTH - len("https://a/"))
    app = create_app({**config, "RESOURCES": f"{resource}=Long"})
    try:
        User.create(username="alice", password_digest=password_digest)
        browser = Actions(app.test_client())
        assert browser.sign_in().status_code == 302
        name_length = MAX_URL_LENGTH - len(f"{document_server}/clients/.json")
        document_redirect = "http://127.0.0.1/" + '"' * (Client.SELF_REDIRECT_URI_LENGTH - len("http://127.0.0.1/"))
        url = publish({"redirect_uris": [document_redirect]}, name='"' * name_length)
        grant = {**params(url, pkce, redirect_uri=document_redirect.replace("127.0.0.1/", "127.0.0.1:65535/")),
                 "scope": "read write", "resource": resource, "state": "s" * MAX_PARAMETER_LENGTH}
        assert (len(url), len(grant["redirect_uri"])) == (MAX_URL_LENGTH, Client.SELF_REDIRECT_URI_LENGTH + 6)

        code = browser.query(browser.approve(grant))["code"]
        token = browser.client.post("/oauth/token", data={
            "grant_type": "authorization_code", "client_id": url, "code": code, "code_verifier": pkce[0],
            "redirect_uri": grant["redirect_uri"], "resource": resource})
        assert len(code) > 9_000 and token.status_code == 200, (len(code), token.json)
        assert AccessToken.authenticate(token.json["access_token"]).resource == resource
    finally:
        db.close()
