"""The application factory: configuration, the instance secret, what every response carries."""
import ast
import io
import os
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from flask import request
from flask.json.provider import DefaultJSONProvider
from itsdangerous import BadSignature, SignatureExpired
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge
from werkzeug.wrappers import Request

import app as app_module
from app import create_app, instance_secret
from models import absent_user_digest
from oauth import MACHINE_ENDPOINTS, forbid_caching, read_params
from oauth.forms import check_form


def test_instance_secret_is_generated_once_even_when_processes_start_together(tmp_path):
    keys, barrier = [], threading.Barrier(8)

    def start():
        barrier.wait()
        keys.append(instance_secret(tmp_path))
    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(keys) == 8 and len(set(keys)) == 1 and len(keys[0]) >= 64
    assert sorted(path.name for path in tmp_path.iterdir()) == ["secret_key"]
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_the_digest_unknown_names_are_checked_against_is_made_at_start_up(config, tmp_path, monkeypatch):
    monkeypatch.setenv("KEYFOB_INSTANCE_PATH", str(tmp_path / "instance"))
    absent_user_digest.cache_clear()
    create_app(config)
    assert absent_user_digest.cache_info().currsize == 1 and absent_user_digest().startswith("$argon2id$")


def test_an_empty_secret_file_is_refused_rather_than_used(tmp_path):
    (tmp_path / "secret_key").write_text("\n")
    with pytest.raises(RuntimeError, match="empty"):
        instance_secret(tmp_path)


def test_settings_come_from_the_environment_with_string_settings_kept_as_strings(config, tmp_path, monkeypatch):
    monkeypatch.setenv("KEYFOB_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("KEYFOB_SECRET_KEY", "12345")
    monkeypatch.setenv("KEYFOB_RATELIMIT_ENABLED", "false")
    monkeypatch.setenv("KEYFOB_ISSUER", "https://auth.example.com/")
    app = create_app({"DATABASE_URL": config["DATABASE_URL"]})
    assert app.secret_key == "12345" and app.config["RATELIMIT_ENABLED"] is False
    assert app.config["ISSUER"] == "https://auth.example.com" and app.config["SESSION_COOKIE_SECURE"]


def test_an_app_that_serves_requests_refuses_to_start_without_an_issuer(config, tmp_path, monkeypatch):
    """Without KEYFOB_ISSUER (gunicorn, an app embedding Keyfob) the issuer would follow the Host header."""
    monkeypatch.setenv("KEYFOB_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.delenv("KEYFOB_ISSUER", raising=False)
    with pytest.raises(ValueError) as refused:
        create_app({**config, "TESTING": False, "ISSUER": None})
    assert str(refused.value) == ("KEYFOB_ISSUER is not set: set it to the public base URL people and apps reach"
                                  " Keyfob at (such as https://auth.example.com), as Keyfob never takes its name"
                                  " from a request")


@pytest.mark.parametrize("issuer", ["auth.example.com", "ftp://auth.example.com", "https://auth.example.com/?a=b",
                                    "https://auth.example.com/#x", "https:///path", "https://auth example.com"])
def test_an_issuer_that_is_not_an_http_url_stops_keyfob_starting(config, issuer, tmp_path, monkeypatch):
    monkeypatch.setenv("KEYFOB_INSTANCE_PATH", str(tmp_path / "instance"))
    with pytest.raises(ValueError, match="^KEYFOB_ISSUER: .* is not an absolute http"):
        create_app({**config, "ISSUER": issuer})


def test_the_instance_folder_is_its_owners_only(app):
    assert os.stat(app.instance_path).st_mode & 0o777 == 0o700


def test_unknown_paths_answer_json_to_machines_and_a_page_to_browsers(client):
    assert client.get("/oauth/nothing").status_code == 404
    assert client.get("/api/nothing").json["error"] == "not_found"
    page = client.get("/nothing")
    assert "<h1>This page does not exist</h1>" in page.text and 'href="/session/new">Sign in</a>' in page.text


def test_wrong_methods_answer_an_oauth_error(client):
    response = client.get("/oauth/token")
    assert response.status_code == 405 and response.json["error"] == "invalid_request"


def test_hooks_run_only_on_the_requests_they_concern(app):
    """No hook runs on a request no blueprint serves; pages check CSRF, machine endpoints answer CORS."""
    assert None not in app.before_request_funcs or not app.before_request_funcs[None]
    assert None not in app.after_request_funcs or not app.after_request_funcs[None]
    for blueprint in app.blueprints:
        (hook,) = app.before_request_funcs[blueprint]
        assert (check_form in hook.steps) is (blueprint not in MACHINE_ENDPOINTS), blueprint
        cors = [step for step in hook.steps if "cross_origin" in step.__qualname__]
        assert bool(cors) is (blueprint in MACHINE_ENDPOINTS), blueprint


@pytest.mark.parametrize("path, csp", [
    ("/session/new", "default-src 'none'"), ("/nothing", "default-src 'none'"), ("/static/keyfob.css", "default-src"),
    ("/api/me", "frame-ancestors 'none'"), ("/.well-known/oauth-authorization-server", "frame-ancestors 'none'"),
    ("/api/nothing", "frame-ancestors 'none'"), ("/", "default-src 'none'")])
def test_every_response_denies_framing_and_sniffing(client, path, csp):
    response = client.get(path)
    assert response.headers["X-Frame-Options"] == "DENY" and response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["Content-Security-Policy"].startswith(csp)
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


def test_a_response_whose_caching_is_forbidden_carries_no_store_once(app):
    """forbid_caching replaces any caching header a view set, as setting the headers would."""
    with app.test_request_context("/oauth/token"):
        response = app.make_response(({"access_token": "kf_at_x"}, {"Cache-Control": "max-age=60", "pragma": "x"}))
        body, status, headers = forbid_caching(response).get_wsgi_response(request.environ)
    assert [value for name, value in headers if name.lower() in ("cache-control", "pragma")] == ["no-store", "no-cache"]
    assert ("X-Frame-Options", "DENY") in headers


def test_cors_runs_only_for_requests_with_an_origin_and_only_on_machine_endpoints(client):
    """allow_cross_origin takes flask-cors' own hook back (checked against 6.0) to run it only when asked."""
    origin = {"Origin": "https://inspector.example"}
    assert client.get("/.well-known/oauth-authorization-server", headers=origin).headers[
        "Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Origin" not in client.get("/.well-known/oauth-authorization-server").headers
    assert "Access-Control-Allow-Origin" not in client.get("/session/new", headers=origin).headers
    preflight = client.options("/oauth/token", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"


def test_every_function_in_app_py_serves_create_app():
    """app.py holds create_app() and only what it sets up: every other function and class there is used there."""
    tree = ast.parse(Path(app_module.__file__).read_text())
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    assert defined - {"create_app"} <= used


@pytest.mark.parametrize("method, path, data, title", [
    ("get", "/nothing", None, "This page does not exist"), ("get", "/session", None, "This page does not work that way"),
    ("post", "/my/password", {"csrf_token": "stale"}, "This form has expired")])
def test_error_pages_are_in_the_sites_layout_with_a_way_on(client, actions, signed_in, method, path, data, title):
    page = getattr(client, method)(path, data=data)
    assert f"<h1>{title}</h1>" in page.text and 'href="/">Go to your account</a>' in page.text
    assert 'class="masthead"' in page.text


def test_a_logged_request_path_cannot_forge_a_log_line(app, client, caplog):
    """Control characters a path may carry (%0a decodes to a newline) are escaped in every line Keyfob logs."""
    @app.before_request
    def fail_on_boom():
        if request.path.startswith("/boom"):
            raise RuntimeError("boom")
    assert client.get("/boom/x%0aINFO%20keyfob%20all%20is%20well%1b[2J").status_code == 500
    (line,) = [record.getMessage() for record in caplog.records if "Unhandled error" in record.getMessage()]
    assert "\n" not in line and "\x1b" not in line and "\\nINFO keyfob all is well\\x1b[2J" in line


CHECKPOINTED = """
import os, sys, time
from app import create_app
from models import User, db
create_app({"ISSUER": "http://keyfob.test", "SECRET_KEY": "k" * 40, "DATABASE_URL": "sqlite:///" + sys.argv[1]})
sizes = []
with db.connection_context():
    for batch in range(2):
        for n in range(300):
            User.create(username=f"user-{batch}-{n}", password_digest="-")
        sizes.append(os.path.getsize(sys.argv[1] + "-wal"))
        time.sleep(1.5)
print(*sizes)
"""


@pytest.mark.parametrize("seconds, log_reused", [(None, True), ("0", False)])
def test_every_serving_process_copies_sqlites_log_into_the_database(tmp_path, seconds, log_reused):
    """Under gunicorn or embedded, not only under `keyfob serve`: once the log is copied, the next writes reuse it
    from its start, so it stops growing (KEYFOB_CHECKPOINT_SECONDS=0 turns the thread off, to show the difference)."""
    env = {**os.environ, "KEYFOB_INSTANCE_PATH": str(tmp_path)}
    if seconds is not None:
        env["KEYFOB_CHECKPOINT_SECONDS"] = seconds
    result = subprocess.run([sys.executable, "-c", CHECKPOINTED, str(tmp_path / "keyfob.db")], env=env,
                            cwd=Path(app_module.__file__).parent, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    first, second = map(int, result.stdout.split())
    assert (second < 1.5 * first) is log_reused, (first, second)


def test_layout_links_are_built_once_yet_follow_a_mounted_apps_script_root(client):
    assert 'href="/static/keyfob.css' in client.get("/session/new").text
    mounted = client.get("/session/new", base_url="http://localhost/auth").text
    assert 'href="/auth/static/keyfob.css' in mounted and 'action="/auth/session"' in mounted
    assert 'href="/static/keyfob.css' in client.get("/session/new").text


@pytest.mark.parametrize("environ", [
    {}, {"HTTP_HOST": "Auth.Example.COM"}, {"HTTP_HOST": "auth.example.com:8443"}, {"HTTP_HOST": "[::1]:8000"},
    {"HTTP_HOST": "auth.example.com."}, {"HTTP_HOST": "a..b"}, {"HTTP_HOST": ".a"}, {"HTTP_HOST": "x" * 64},
    {"HTTP_HOST": "bücher.example"}, {"HTTP_HOST": "bad host"}, {"SCRIPT_NAME": "/keyfob"},
    {"PATH_INFO": "/caf\xc3\xa9/\xff", "QUERY_STRING": "a=%C3%A9&b=\xe9"}, {"PATH_INFO": ""},
    {"wsgi.url_scheme": "https", "SERVER_PORT": "443"},
    {"HTTP_UPGRADE": "websocket", "HTTP_CONNECTION": "Upgrade"}, {"REQUEST_METHOD": "POST"}])
def test_url_adapters_are_the_ones_flask_makes(app, environ):
    base = {"REQUEST_METHOD": "GET", "PATH_INFO": "/api/me", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000",
            "wsgi.url_scheme": "http"}

    def adapter(make):
        request = app.request_class({**base, **environ})
        try:
            made = make(app, request)
        except Exception as error:  # a Host IDNA refuses is a 400, the same either way
            return type(error), request.host
        return {name: value for name, value in vars(made).items() if name != "map"}, request.host

    assert adapter(app_module.Keyfob.create_url_adapter) == adapter(app_module.Flask.create_url_adapter)


@pytest.mark.parametrize("answer", [{"b": 1, "a": [None, True, 1.5]}, {"name": "Zoë ☕", "at": 0}, {}])
def test_json_answers_are_the_ones_flask_writes(app, answer):
    made, flasks = app.json.response(answer), DefaultJSONProvider(app).response(answer)
    assert (made.get_data(), made.headers["Content-Type"]) == (flasks.get_data(), flasks.headers["Content-Type"])


@pytest.mark.parametrize("content_type", [
    "", "application/x-www-form-urlencoded", " Application/X-WWW-Form-URLencoded ;", ";",
    "application/x-www-form-urlencoded; charset=UTF-8", "text/plain;a=\"b;c\"", "application/json\t; charset=utf-8",
    "multipart/form-data; boundary=x"])
def test_request_mimetypes_are_werkzeugs(app, content_type):
    environ = {"REQUEST_METHOD": "POST", "CONTENT_TYPE": content_type}
    assert app.request_class(environ).mimetype == Request(environ).mimetype


@pytest.mark.parametrize("length, body, form", [
    ("9", b"a=1&b=%41", {"a": "1", "b": "A"}), ("3", b"a=1&b=2", {"a": "1"}), ("", b"a=1", {}),
    ("x", b"a=1", {}), ("4", b"a=\xff\xfe", {}), (None, b"a=1", {})])
def test_urlencoded_bodies_read_as_werkzeug_reads_them(app, length, body, form):
    environ = {"REQUEST_METHOD": "POST", "CONTENT_TYPE": "application/x-www-form-urlencoded"}
    if length is not None:
        environ["CONTENT_LENGTH"] = length
    read = [made({**environ, "wsgi.input": io.BytesIO(body)}) for made in (app.request_class, Request)]
    assert [request.form.to_dict() for request in read] == [form, form]
    assert [request.get_data() for request in read] == [b"", b""]


class Trickle:
    """A server's stream that hands over a few bytes at a time when asked for some, and the rest when asked for all."""

    def __init__(self, body):
        self.left = body

    def read(self, size=-1):
        chunk, self.left = (self.left, b"") if size is None or size < 0 else (self.left[:4], self.left[4:])
        return chunk


@pytest.mark.parametrize("input_terminated", [False, True])
def test_a_body_is_read_whole_however_the_server_hands_it_over_or_whatever_read_it_first(app, input_terminated):
    body = b"client_id=abc&token=kf_at_xyz&x=%41"
    environ = {"REQUEST_METHOD": "POST", "CONTENT_TYPE": "application/x-www-form-urlencoded",
               "CONTENT_LENGTH": str(len(body)), "wsgi.input_terminated": input_terminated}
    expected = {"client_id": "abc", "token": "kf_at_xyz", "x": "A"}
    for made in (app.request_class, Request):
        assert made({**environ, "wsgi.input": Trickle(body)}).form.to_dict() == expected, made
        read_first = made({**environ, "wsgi.input": io.BytesIO(body)})
        assert read_first.get_data() == body and read_first.form.to_dict() == expected, made


@pytest.mark.parametrize("form_first", [False, True])
def test_oauth_parameters_and_the_form_are_the_same_fields_whichever_is_read_first(app, form_first):
    body = b"scope=read&resource=a&resource=b&x=%41&empty="
    with app.test_request_context("/oauth/token", method="POST", data=body,
                                  content_type="application/x-www-form-urlencoded"):
        form = request.form.to_dict(flat=False) if form_first else None
        assert read_params(request) == {"scope": "read", "resource": ["a", "b"], "x": "A", "empty": ""}
        expected = {"scope": ["read"], "resource": ["a", "b"], "x": ["A"], "empty": [""]}
        assert request.form.to_dict(flat=False) == expected and form in (None, expected)


def test_a_body_shorter_than_its_length_or_over_the_limit_is_refused(client):
    for length, refusal in (("10", ClientDisconnected), (str(64 * 1024 + 1), RequestEntityTooLarge)):
        request = client.application.request_class({
            "REQUEST_METHOD": "POST", "CONTENT_TYPE": "application/x-www-form-urlencoded", "CONTENT_LENGTH": length,
            "wsgi.input": io.BytesIO(b"a=1")})
        request.max_content_length = 64 * 1024
        with pytest.raises(refusal):
            request.form
    assert client.post("/oauth/token", data="a=" + "x" * 70_000,
                       content_type="application/x-www-form-urlencoded").status_code == 413


def test_session_cookies_are_remembered_once_checked_yet_their_age_is_checked_on_every_request(app, monkeypatch):
    cookies = app.session_interface.get_signing_serializer(app)
    assert cookies is app.session_interface.get_signing_serializer(app)
    cookie, lifetime = cookies.dumps({"flashes": [["notice", "Saved."]]}), 12 * 3600
    first = cookies.loads(cookie, lifetime)
    first["flashes"].append("changed")
    assert cookies.loads(cookie, lifetime) == {"flashes": [["notice", "Saved."]]} and cookie in cookies.checked
    for forged in (cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB"), "x", cookie + "."):
        with pytest.raises(BadSignature):
            cookies.loads(forged, lifetime)
        assert forged not in cookies.checked
    later = time.time() + lifetime + 1
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(SignatureExpired):
        cookies.loads(cookie, lifetime)
    for n in range(cookies.REMEMBERED + 1):
        cookies.loads(cookies.dumps({"n": n}), lifetime)
    assert len(cookies.checked) <= cookies.REMEMBERED
    long = cookies.dumps({"return_to": "/oauth/authorization/new?state=" + secrets.token_urlsafe(1500)})
    cookies.loads(long, lifetime)
    assert long not in cookies.checked
