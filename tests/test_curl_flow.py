"""examples/curl_flow.sh as its readers run it, against a real `keyfob serve`: unattended (curl signs in through
the real forms and approves), with the address a browser ends on pasted in, and stopping at a failed step."""
import os
import shutil
import subprocess
import threading
from pathlib import Path
from urllib.parse import urlencode

import pytest

from actions import PASSWORD
from live import Browser, free_port, keyfob_serving

SCRIPT = Path(__file__).parent.parent / "examples" / "curl_flow.sh"
LAST_LINE = "The revoked token answers 401."

pytestmark = pytest.mark.skipif(not shutil.which("curl"), reason="examples/curl_flow.sh needs curl: not on PATH")


@pytest.fixture(scope="module")
def server(tmp_path_factory, served_database):
    """The base URL (and issuer) of a real `keyfob serve` with one user, alice."""
    with keyfob_serving(tmp_path_factory.mktemp("instance"), settings=served_database) as base:
        yield base


def curl_flow(*arguments, password=PASSWORD):
    return subprocess.run([SCRIPT, *arguments], env={**os.environ, "KEYFOB_PASSWORD": password},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)


def test_curl_flow_runs_unattended_and_ends_with_the_revoked_token_refused(server):
    ran = curl_flow("--username", "alice", server)

    assert ran.returncode == 0, ran.stderr
    assert ran.stderr == ""
    assert ran.stdout.splitlines()[-2].startswith('8. GET /api/me with the revoked token: {"error":"invalid_token"')
    assert ran.stdout.splitlines()[-1] == LAST_LINE


def test_curl_flow_takes_the_address_the_browser_ends_on(server):
    with subprocess.Popen([SCRIPT, server], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as script:
        timer = threading.Timer(60, script.kill)  # should the script never print the URL or never finish
        timer.start()
        try:
            url = next((line.strip() for line in script.stdout if line.strip().startswith(f"{server}/oauth/")), None)
            assert url, script.stderr.read()
            with Browser(server) as browser:
                answer = browser.approve(url)
            output, errors = script.communicate(f"http://127.0.0.1:9999/callback?{urlencode(answer)}\n")
        finally:
            timer.cancel()

    assert script.returncode == 0, errors
    assert output.splitlines()[-1] == LAST_LINE


@pytest.mark.parametrize("nothing_there", [False, True], ids=["wrong password", "no server"])
def test_curl_flow_stops_with_one_line_saying_why(server, nothing_there):
    base = f"http://127.0.0.1:{free_port()}" if nothing_there else server
    ran = curl_flow("--username", "alice", base, password="not alice's password")

    assert ran.returncode == 1
    assert LAST_LINE not in ran.stdout
    assert len(ran.stderr.splitlines()) == 1
    assert ran.stderr.startswith("curl_flow.sh: ")
    expected = f"no answer from {base}/" if nothing_there else "signing in as alice was refused"
    assert expected in ran.stderr
