"""Keyfob served for real: `keyfob serve` or gunicorn in a subprocess, started as a user starts them, for tests
that speak HTTP."""
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

from actions import PASSWORD

KEYFOB = Path(sys.executable).parent / "keyfob"
GUNICORN = Path(sys.executable).parent / "gunicorn"
TIMEOUT = 10


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_answering(process, url, log, name="keyfob serve"):
    """Poll url until it answers 200 (at most TIMEOUT seconds), failing with the process's log if it dies."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{name} exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx2.get(url, timeout=1).status_code == 200:
                return
        except httpx2.TransportError:
            time.sleep(0.1)
    pytest.fail(f"{name} did not answer within {TIMEOUT} s:\n{log.read_text()}")


def stop(process):
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def keyfob_env(instance, settings=None):
    """The environment a `keyfob` command runs in: none of the caller's KEYFOB_ settings, only these."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("KEYFOB_")}
    return {**env, "KEYFOB_INSTANCE_PATH": str(instance), **(settings or {})}


def add_user(instance, name="alice", password=PASSWORD, settings=None):
    """`keyfob user add`, the password typed twice."""
    added = subprocess.run([KEYFOB, "user", "add", name], input=f"{password}\n{password}\n",
                           env=keyfob_env(instance, settings), capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr


@contextlib.contextmanager
def serving(instance, settings=None, workers=None, log=None):
    """`keyfob serve`, or `gunicorn -w workers 'app:create_app()'` when workers are given, on a free port in a
    process group of its own, writing to log (by default named for the program and the port): its base URL and
    process. On the way out it is stopped, and whatever is left of its group (workers a killed master left
    behind) killed."""
    port = free_port()
    name, command = ("keyfob serve", [KEYFOB, "serve", "--port", str(port)]) if workers is None else (
        "gunicorn", [GUNICORN, "-w", str(workers), "-b", f"127.0.0.1:{port}", "app:create_app()"])
    log = log or instance / f"{name.split()[0]}-{port}.log"
    with open(log, "w") as output:
        process = subprocess.Popen(command, env=keyfob_env(instance, settings), stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(process, f"{base}/.well-known/oauth-authorization-server", log, name)
        yield base, process
    finally:
        stop(process)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def keyfob_serving(instance, users=(("alice", PASSWORD),), settings=None):
    """Add the users with `keyfob user add`, run `keyfob serve` on a free port, yield its base URL.
    `settings` are more environment variables for every `keyfob` command, e.g. KEYFOB_RESOURCES."""
    for name, password in users:
        add_user(instance, name, password, settings)
    with serving(instance, settings, log=instance / "serve.log") as (base, _):
        yield base
