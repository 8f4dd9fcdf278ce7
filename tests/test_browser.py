"""The pages in a real browser: Debian's Chromium driven by Playwright against a live `keyfob serve`,
with a real loopback listener standing in for the MCP client's redirect. Screenshots of every page
land in tests/artifacts/ to be looked at."""
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from actions import PASSWORD
from live import Browser, hidden_inputs, keyfob_serving, me, redeem, register
from models import s256

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(not CHROMIUM, reason="Debian's chromium is not installed (apt-get install chromium)")
ARTIFACTS = Path(__file__).parent / "artifacts"
VERIFIER = "browser-test-verifier-" + "v" * 40


class Catcher(BaseHTTPRequestHandler):
    """The app's loopback redirect: remembers the query it was sent and says so."""

    def do_GET(self):
        if self.path.startswith("/callback?"):
            self.server.received.append({k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()})
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<h1>The app got its answer</h1>")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory, served_database):
    # One user per test: sign-in is limited to 5 a minute per username.
    people = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "judy", "kim", "lee"]
    with keyfob_serving(tmp_path_factory.mktemp("instance"), users=[(name, PASSWORD) for name in people],
                        settings=served_database) as base:
        yield base


@pytest.fixture
def catcher():
    listener = ThreadingHTTPServer(("127.0.0.1", 0), Catcher)
    listener.received = []
    thread = threading.Thread(target=listener.serve_forever, daemon=True)
    thread.start()
    yield listener
    listener.shutdown()
    listener.server_close()


@pytest.fixture(scope="module")
def chromium():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):
    context = chromium.new_context()
    yield context.new_page()
    context.close()


@pytest.fixture
def authorization_url(server, catcher):
    redirect_uri = f"http://127.0.0.1:{catcher.server_port}/callback"
    registration = register(server, "http://127.0.0.1:1/callback", client_name="Browser Test App").json()
    params = {"response_type": "code", "client_id": registration["client_id"], "redirect_uri": redirect_uri,
              "code_challenge": s256(VERIFIER), "code_challenge_method": "S256", "scope": "read write",
              "state": "browser-state"}
    return f"{server}/oauth/authorization/new?{urlencode(params)}", params


def screenshot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def sign_in(page, username="alice"):
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def exchange(server, params, code):
    return redeem(server, params["client_id"], code, VERIFIER, params["redirect_uri"]).json()["access_token"]


def test_approving_in_chrome_delivers_the_code_to_the_loopback_app(server, page, catcher, authorization_url):
    url, params = authorization_url
    page.goto(url)
    screenshot(page, "sign-in")
    sign_in(page)
    page.get_by_role("button", name="Approve").wait_for()
    screenshot(page, "consent")
    assert "Browser Test App" in page.content() and "chosen by the app itself" in page.content()
    page.get_by_role("button", name="Approve").click()
    page.get_by_text("The app got its answer").wait_for()
    answer = catcher.received[-1]
    assert answer["state"] == "browser-state" and answer["iss"] == server
    token = exchange(server, params, answer["code"])
    answer = me(server, token)
    assert answer.json()["user"] == "alice" and answer.json()["scope"] == "read write"


def test_a_connected_app_is_listed_and_disconnecting_it_refuses_its_token(server, page, catcher, authorization_url):
    url, params = authorization_url
    page.goto(url)
    sign_in(page, "erin")
    page.get_by_role("button", name="Approve").click()
    page.get_by_text("The app got its answer").wait_for()
    token = exchange(server, params, catcher.received[-1]["code"])
    assert me(server, token).status_code == 200  # used: its row shows when, and from where
    page.goto(f"{server}/my/connected_apps")
    sign_in(page, "erin")  # served on a loopback host, the approval ended the sign-in
    page.goto(f"{server}/my/connected_apps")
    row = page.get_by_role("row").filter(has_text="Browser Test App").first
    assert "Read and write" in row.inner_text() and "self-declared" in row.inner_text() and "from " in row.inner_text()
    assert page.evaluate("""() => { const table = document.querySelector('table.listing');
        return table.getBoundingClientRect().right <= table.closest('.card').getBoundingClientRect().right; }""")
    screenshot(page, "connected-apps")
    row.get_by_role("link", name="Disconnect…").click()
    screenshot(page, "disconnect-confirmation")
    page.get_by_role("button", name="Disconnect").click()
    page.get_by_text("is disconnected").wait_for()
    assert me(server, token).status_code == 401


def test_a_personal_token_is_created_copied_used_and_revoked(server, chromium):
    context = chromium.new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.goto(f"{server}/session/new")
    sign_in(page, "frank")
    page.get_by_role("navigation", name="Account").get_by_role("link", name="Personal access tokens").click()
    page.get_by_label("What is it for?").fill("Nightly backup")
    page.get_by_label("Read and write").check()
    page.get_by_role("button", name="Create token").click()
    page.get_by_role("button", name="Copy").click()
    page.get_by_role("button", name="Copied").wait_for()
    screenshot(page, "personal-token-created")
    token = page.evaluate("navigator.clipboard.readText()")
    assert token.startswith("kf_pat_") and me(server, token).status_code == 200
    page.get_by_role("link", name="Back to personal access tokens").click()
    screenshot(page, "personal-tokens")
    assert token not in page.content() and token[:13] in page.content()
    page.get_by_role("link", name="Revoke Nightly backup").click()
    assert me(server, token).status_code == 200  # only asked, so far
    page.get_by_role("button", name="Revoke").click()
    page.get_by_text("The token is revoked").wait_for()
    assert me(server, token).status_code == 401
    context.close()


def test_denying_in_chrome_tells_the_app_access_denied(page, catcher, authorization_url):
    page.goto(authorization_url[0])
    sign_in(page, "bob")
    page.get_by_role("button", name="Deny").click()
    page.get_by_text("The app got its answer").wait_for()
    assert catcher.received[-1]["error"] == "access_denied" and "code" not in catcher.received[-1]


def test_consent_works_from_the_keyboard_alone(page, catcher, authorization_url):
    page.goto(authorization_url[0])
    sign_in(page, "carol")
    page.get_by_role("button", name="Approve").wait_for()
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.value") == "approve":
            break
    page.keyboard.press("Enter")
    page.get_by_text("The app got its answer").wait_for()
    assert "code" in catcher.received[-1]


def test_pages_fit_a_phone_screen(chromium, authorization_url):
    context = chromium.new_context(viewport={"width": 375, "height": 740}, is_mobile=True)
    page = context.new_page()
    page.goto(authorization_url[0])
    sign_in(page, "dave")
    page.get_by_role("button", name="Approve").wait_for()
    screenshot(page, "consent-phone")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.goto(authorization_url[0].split("/oauth/")[0] + "/my/apps")
    page.get_by_label("Name people see when they approve it").fill("A dashboard with a rather long name indeed")
    page.get_by_label("Redirect URIs, one per line").fill("https://reports.example.com/oauth/callback/with/a/long/path")
    page.get_by_role("button", name="Register app").click()
    for path in ("/my/apps", "/my/connected_apps", "/my/access_tokens", "/"):
        page.goto(authorization_url[0].split("/oauth/")[0] + path)
        screenshot(page, "phone" + (path.replace("/", "-").rstrip("-") or "-home"))
        assert page.evaluate("document.documentElement.scrollWidth") <= 375, path
    context.close()


def test_an_unknown_client_gets_an_error_page(server, page):
    page.goto(f"{server}/oauth/authorization/new?client_id=nope&redirect_uri=http://127.0.0.1:1/cb")
    screenshot(page, "authorization-error")
    assert "can't be used" in page.content() and page.url.startswith(server)


def test_a_confidential_app_is_registered_used_with_its_secret_and_deleted(server, page, catcher):
    redirect_uri = f"http://127.0.0.1:{catcher.server_port}/callback"
    page.goto(f"{server}/session/new")
    sign_in(page, "grace")
    page.get_by_role("navigation", name="Account").get_by_role("link", name="OAuth apps").click()
    page.get_by_label("Name people see when they approve it").fill("Grace's reports")
    page.get_by_label("Redirect URIs, one per line").fill(redirect_uri)
    page.get_by_label("Confidential").check()
    page.get_by_role("button", name="Register app").click()
    screenshot(page, "app-secret")
    secret = page.locator("#client-secret").inner_text()
    client_id = page.locator("dd code").first.inner_text()
    page.get_by_role("link", name="Go to Grace's reports").click()
    screenshot(page, "app-settings")
    assert secret not in page.content()

    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "scope": "read",
              "code_challenge": s256(VERIFIER), "code_challenge_method": "S256"}
    page.goto(f"{server}/oauth/authorization/new?{urlencode(params)}")
    page.get_by_role("button", name="Approve").click()
    page.get_by_text("The app got its answer").wait_for()
    code = catcher.received[-1]["code"]
    without_secret = redeem(server, client_id, code, VERIFIER, redirect_uri)
    assert without_secret.status_code == 400  # a confidential app needs its secret
    token = redeem(server, client_id, code, VERIFIER, redirect_uri, client_secret=secret).json()["access_token"]
    assert me(server, token).status_code == 200

    page.goto(f"{server}/my/apps")
    sign_in(page, "grace")  # served on a loopback host, the approval ended the sign-in
    page.goto(f"{server}/my/apps")
    page.get_by_role("link", name="Grace's reports").click()
    page.get_by_role("link", name="Delete app…").click()
    page.get_by_role("button", name="Delete app").click()
    page.get_by_text("is deleted").wait_for()
    assert me(server, token).status_code == 401


def test_activity_lists_what_happened_in_the_account_on_a_wide_and_a_phone_screen(server, chromium):
    # Signed in from an address of its own: sign-in allows 10 a minute per address, and this module's other
    # tests use most of 127.0.0.1's.
    with Browser(server, "127.0.0.2") as heidi:
        for password in ("not heidi's password", PASSWORD):
            heidi.sign_in("heidi", password)
        form = hidden_inputs(heidi.get("/my/access_tokens").text)
        heidi.post("/my/access_tokens", data={**form, "description": "Sync of the shared calendar between the laptop"
                                              " and the phone", "scope": "read"})
        session = heidi.cookies["keyfob_session"]
    for name, viewport in (("activity", {"width": 1280, "height": 720}), ("activity-phone", {"width": 375, "height": 740})):
        context = chromium.new_context(viewport=viewport, is_mobile=viewport["width"] < 400)
        context.add_cookies([{"name": "keyfob_session", "value": session, "url": server}])
        page = context.new_page()
        page.goto(server)
        page.get_by_role("navigation", name="Account").get_by_role("link", name="Activity").click()
        newest = page.locator("tbody tr").first  # on a phone the header row is hidden, and with it its role
        assert "You created the personal token" in newest.inner_text() and "127.0.0.2" in newest.inner_text()
        assert "Someone failed to sign in as you" in page.content()
        screenshot(page, name)
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        context.close()


def test_chromium_shows_the_publishing_host_and_the_local_warning_then_delivers_the_code(
        publish, tmp_path, tls_files, served_database, chromium, catcher, request):
    url = publish({"client_name": "Notes Desktop"})
    database = {"KEYFOB_DATABASE_URL": request.getfixturevalue("new_postgresql_database")()} if served_database else {}
    settings = {**database, "KEYFOB_TESTING": "true", "KEYFOB_TESTING_CLIENT_DOCUMENT_CA": str(tls_files / "ca.pem"),
                "KEYFOB_TESTING_CLIENT_DOCUMENT_ADDRESSES": '["127.0.0.1", "::1"]'}
    params = {"response_type": "code", "client_id": url, "redirect_uri": f"http://127.0.0.1:{catcher.server_port}/callback",
              "code_challenge": s256(VERIFIER), "code_challenge_method": "S256", "scope": "read", "state": "doc"}
    with keyfob_serving(tmp_path / "instance", users=[("ivan", PASSWORD)], settings=settings) as server:
        for viewport, name in (({"width": 1280, "height": 900}, "consent-document"),
                               ({"width": 390, "height": 844}, "consent-document-phone")):
            context = chromium.new_context(viewport=viewport)
            page = context.new_page()
            page.goto(f"{server}/oauth/authorization/new?{urlencode(params)}")
            sign_in(page, "ivan")
            publisher = page.locator(".publisher")
            assert publisher.inner_text() == "Described by localhost"
            assert "your own computer" in page.locator(".warning").inner_text()
            screenshot(page, name)
            if name == "consent-document":
                page.get_by_role("button", name="Approve").click()
                page.wait_for_url(f"{params['redirect_uri']}?**")
            context.close()
        answer = catcher.received[-1]
        assert answer["state"] == "doc" and answer["iss"] == server
        token = exchange(server, params, answer["code"])
        assert me(server, token).json()["client_id"] == url


def test_a_native_apps_scheme_and_its_warning_fit_the_consent_page_on_a_wide_and_a_phone_screen(server, chromium):
    """Cursor registers cursor://, which a default Keyfob trusts: the consent page names the scheme and says that
    approving opens the app registered for it (tests/clients/cursor.json)."""
    redirect_uri = "cursor://anysphere.cursor-mcp/oauth/callback"
    client_id = register(server, redirect_uri, local_address="127.0.0.3", client_name="Cursor").json()["client_id"]
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "state": "native",
              "code_challenge": s256(VERIFIER), "code_challenge_method": "S256", "scope": "read write"}
    for name, viewport in (("consent-native-app", {"width": 1280, "height": 800}),
                           ("consent-native-app-phone", {"width": 390, "height": 844})):
        with Browser(server, "127.0.0.3") as judy:  # its own address: sign-in allows 10 a minute per address
            assert judy.sign_in("judy").status_code == 302
            session = judy.cookies["keyfob_session"]
        context = chromium.new_context(viewport=viewport, is_mobile=viewport["width"] < 400)
        context.add_cookies([{"name": "keyfob_session", "value": session, "url": server}])
        page = context.new_page()
        page.goto(f"{server}/oauth/authorization/new?{urlencode(params)}")
        assert "the app on this computer that opens cursor: links" in page.locator(".facts").inner_text()
        assert "registered for cursor: links" in page.locator("p.warning").last.inner_text()
        screenshot(page, name)
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        context.close()


SPLIT_WORDS = r"""() => {
  // Words (between spaces) of 20 characters or fewer that the layout broke across two lines, in tables, headings
  // and buttons; URIs and IDs (.uri, code) may wrap anywhere.
  const split = [];
  for (const cell of document.querySelectorAll("td, th, h1, h2, dd, .facts dt, nav a, button, a.button")) {
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (node.parentElement.closest(".uri, code")) continue;
      for (const match of node.textContent.matchAll(/\S{2,}/g)) {
        if (match[0].length > 20) continue;  // a longer word (a self-chosen name, say) may wrap anywhere
        const range = document.createRange();
        range.setStart(node, match.index);
        range.setEnd(node, match.index + match[0].length);
        const lines = new Set([...range.getClientRects()].filter(rect => rect.width > 0).map(rect => Math.round(rect.top)));
        if (lines.size > 1) split.push(match[0]);
      }
    }
  }
  return split;
}"""


def test_twenty_approvals_in_a_row_never_meet_a_rate_limit(server, chromium, catcher, authorization_url):
    """On the loopback issuer each approval ends the sign-in, so connecting app after app means signing in again
    and again: only failed sign-ins count against the limits."""
    url, _ = authorization_url
    context = chromium.new_context()
    page = context.new_page()
    for _ in range(20):
        response = page.goto(url)
        assert response.status != 429
        sign_in(page, "kim")
        page.get_by_role("button", name="Approve").click()
        page.get_by_text("The app got its answer").wait_for()
    assert len(catcher.received) == 20 and all("code" in answer for answer in catcher.received)
    context.close()


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 800}, {"width": 390, "height": 844}],
                         ids=["desktop", "phone"])
def test_every_page_keeps_words_whole_and_every_destructive_button_asks_first(server, chromium, viewport):
    phone = viewport["width"] < 400
    with Browser(server, "127.0.0.4") as lee:  # its own address: sign-in allows 10 a minute per address
        assert lee.sign_in("lee").status_code == 302
        session = lee.cookies["keyfob_session"]
        form = hidden_inputs(lee.get("/my/apps").text)
        lee.post("/my/apps", data={**form, "name": "Confidential reporting dashboard", "kind": "confidential",
                                   "redirect_uris": "https://reports.example.com/oauth/callback/with/a/long/path"})
        lee.post("/my/access_tokens", data={**form, "description": "Nightly backup of the shared calendar",
                                            "scope": "read write"})
    client_id = register(server, "http://127.0.0.1:41234/oauth/callback", local_address="127.0.0.4",  # a name of
                         client_name="Supercalifragilisticexpialidocious_MCP_Connector_Extraordinaire"  # its own
                         ).json()["client_id"]
    with Browser(server, "127.0.0.4") as lee:
        code, verifier = lee.authorize(client_id, "http://127.0.0.1:41234/oauth/callback", username="lee",
                                       scope="read write")
    token = redeem(server, client_id, code, verifier, "http://127.0.0.1:41234/oauth/callback").json()["access_token"]
    me(server, token)
    context = chromium.new_context(viewport=viewport, is_mobile=phone)
    context.add_cookies([{"name": "keyfob_session", "value": session, "url": server}])
    page = context.new_page()
    pages = {"home": "/", "connected-apps": "/my/connected_apps", "connected-app": f"/my/connected_apps/{client_id}",
             "personal-tokens": "/my/access_tokens", "apps": "/my/apps", "activity": "/my/activity",
             "password": "/my/password"}
    for name, path in pages.items():
        page.goto(server + path)
        screenshot(page, f"first-hour-{name}-{'phone' if phone else 'desktop'}")
        assert page.evaluate(SPLIT_WORDS) == [], path
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"], path
    page.goto(f"{server}/my/apps")
    page.get_by_role("link", name="Confidential reporting dashboard").first.click()
    app_path = page.url.removeprefix(server)
    destructive = [("/my/access_tokens", "Revoke…"), ("/my/connected_apps", "Disconnect…"),
                   (f"/my/connected_apps/{client_id}", "Disconnect this one…"),
                   (f"/my/connected_apps/{client_id}", "Disconnect all…"), (app_path, "Delete app…"),
                   (app_path, "Generate a new secret…")]
    for path, label in destructive:
        page.goto(server + path)
        page.locator("a", has_text=label).first.click()
        assert page.locator("h1").inner_text().endswith("?"), (path, label)
        assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"], (path, label)
        assert page.get_by_role("link", name="Cancel").is_visible() and page.get_by_role("button").last.is_visible()
        if path == app_path:
            screenshot(page, f"first-hour-confirm-{'phone' if phone else 'desktop'}")
    context.close()


def test_every_error_page_offers_a_way_on(server, page):
    for path in ("/nothing", "/session", "/my/apps/not-an-app"):  # the last sends a signed-out visitor to sign in
        page.goto(server + path)
        assert page.get_by_role("link", name="Sign in").count() + page.get_by_role("button", name="Sign in").count() > 0
    page.goto(f"{server}/nothing")
    screenshot(page, "error-404")
