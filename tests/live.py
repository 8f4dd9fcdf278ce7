"""A real `keyfob serve` in a subprocess, started as a user starts it, for tests that speak HTTP."""
import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest

KEYFOB = Path(sys.executable).parent / "keyfob"
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


@contextlib.contextmanager
def keyfob_serving(instance, users=(("alice", "pw"),), settings=None):
    """Add the users with `keyfob user add`, run `keyfob serve` on a free port, yield its base URL.
    `settings` are more environment variables for every `keyfob` command, e.g. KEYFOB_RESOURCES."""
    env = keyfob_env(instance, settings)
    for name, password in users:
        subprocess.run([KEYFOB, "user", "add", name], input=f"{password}\n{password}\n", env=env,
                       capture_output=True, text=True, check=True, timeout=30)
    port, log = free_port(), instance / "serve.log"
    with open(log, "w") as output:
        process = subprocess.Popen([KEYFOB, "serve", "--port", str(port)], env=env,
                                   stdout=output, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(process, f"{base}/.well-known/oauth-authorization-server", log)
        yield base
    finally:
        stop(process)
