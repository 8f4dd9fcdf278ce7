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


def wait_until_serving(process, base, log):
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"keyfob serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx2.get(f"{base}/.well-known/oauth-authorization-server", timeout=1).status_code == 200:
                return
        except httpx2.TransportError:
            time.sleep(0.1)
    pytest.fail(f"keyfob serve did not answer within {TIMEOUT} s:\n{log.read_text()}")


@contextlib.contextmanager
def keyfob_serving(instance, users=(("alice", "pw"),)):
    """Add the users with `keyfob user add`, run `keyfob serve` on a free port, yield its base URL."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("KEYFOB_")}
    env["KEYFOB_INSTANCE_PATH"] = str(instance)
    for name, password in users:
        subprocess.run([KEYFOB, "user", "add", name], input=f"{password}\n{password}\n", env=env,
                       capture_output=True, text=True, check=True, timeout=30)
    port, log = free_port(), instance / "serve.log"
    with open(log, "w") as output:
        process = subprocess.Popen([KEYFOB, "serve", "--port", str(port)], env=env,
                                   stdout=output, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(process, base, log)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
