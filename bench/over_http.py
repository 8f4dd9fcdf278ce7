"""The bearer-protected /api/me against a plain Flask app under the same server, over real HTTP.

    .venv/bin/python bench/over_http.py [--server waitress gunicorn] [--rounds 5] [--seconds 5] [--connections 4]

Serves create_app() plus /bench/bare (a fixed JSON body on Keyfob's app) from a temporary instance folder, and
beside it a plain Flask app with the same route and no extensions (bench/bench.py's yardstick): under waitress as
`keyfob serve` runs it (one process, 8 threads), and under `gunicorn -w 4`. wrk loads them (or, without wrk,
client processes with keep-alive http.client connections), in rotating order each round. Prints req/s, p50/p99,
bearer ÷ plain Flask (median of rounds; target ≥ 0.85) and each Keyfob server process's resident memory after
startup and after the load (target ≤ 60 MB).
"""
import argparse
import http.client
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
ISSUER = "http://keyfob.test"
BARE = "/bench/bare"
WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def bench_app():
    """Keyfob's app with one bare route beside its own, for the server to load (bench.over_http:bench_app)."""
    from app import create_app
    from cli import SWITCH_INTERVAL
    sys.setswitchinterval(SWITCH_INTERVAL)  # as `keyfob serve` sets it (one thread at a time: no effect in gunicorn)
    app = create_app()
    app.add_url_rule(BARE, "bare", lambda: {"user": "alice", "scope": "read", "client_id": None})
    return app


def plain_app():
    """The yardstick, for the server to load (bench.over_http:plain_app), with the same switch interval."""
    from bench.bench import plain_flask
    from cli import SWITCH_INTERVAL
    sys.setswitchinterval(SWITCH_INTERVAL)
    return plain_flask()


def personal_token(env):
    """Create the tables, a user and a personal token in the server's database, as the server will see them."""
    os.environ.update(env)
    from app import create_app
    from models import AccessToken, User, db
    create_app()
    with db.connection_context():
        return AccessToken.issue(User.register("alice", "password1")).token


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port, path, headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers=headers or {})
        return connection.getresponse().status
    except OSError:
        return 0
    finally:
        connection.close()


def serve(kind, port, env, options, factory="bench_app"):
    command = {"waitress": [sys.executable, "-m", "waitress", "--threads", "8", f"--port={port}", "--host=127.0.0.1",
                            "--ident=keyfob", "--call", f"bench.over_http:{factory}"],
               "gunicorn": [os.path.join(BIN, "gunicorn"), "-w", str(options.workers), "-b", f"127.0.0.1:{port}",
                            f"bench.over_http:{factory}()"]}[kind]
    # app from the checkout measured, bench.over_http from this one (bench is a namespace package across both)
    env = {**env, "PYTHONPATH": os.pathsep.join([options.source, REPOSITORY])}
    return subprocess.Popen(command, env=env, cwd=options.source, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def wait_until_answering(server, port):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"The server exited with {server.returncode}:\n{server.stderr.read()}")
        if get(port, BARE) == 200:
            return
        time.sleep(0.2)
    raise SystemExit("The server did not answer within 30 s")


def processes(pid):
    """The server process and its children (gunicorn's workers)."""
    with open(f"/proc/{pid}/task/{pid}/children") as file:
        return [pid] + [int(child) for child in file.read().split()]


def resident_mb(pid):
    with open(f"/proc/{pid}/status") as file:
        return int(re.search(r"VmRSS:\s+(\d+) kB", file.read())[1]) / 1024


def wrk(port, path, headers, options):
    """(req/s, p50 ms, p99 ms, errors) from wrk with keep-alive connections."""
    command = ["wrk", f"-t{min(2, options.connections)}", f"-c{options.connections}", f"-d{options.seconds}s", "--latency"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run(command + [f"http://127.0.0.1:{port}{path}"], capture_output=True, text=True,
                            check=True).stdout
    latency = {share: float(value) * WRK_UNITS[unit]
               for share, value, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)$", output, re.M)}
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = int(failed[1]) if failed else 0
    errors += sum(map(int, socket_errors.groups())) if socket_errors else 0
    return float(re.search(r"Requests/sec:\s+([\d.]+)", output)[1]), latency["50"], latency["99"], errors


def keep_alive_client(port, path, headers, seconds):
    connection, latencies, errors = http.client.HTTPConnection("127.0.0.1", port, timeout=10), [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        latencies.append(time.perf_counter() - started)
        errors += response.status != 200
    return latencies, errors


def python_clients(port, path, headers, options):
    """The same figures as wrk from one client process per connection."""
    with ProcessPoolExecutor(options.connections) as pool:
        results = list(pool.map(keep_alive_client, *zip(*[(port, path, headers, options.seconds)] * options.connections)))
    latencies = sorted(latency for result in results for latency in result[0])
    return (len(latencies) / options.seconds, latencies[len(latencies) // 2] * 1e3,
            latencies[int(len(latencies) * 0.99)] * 1e3, sum(result[1] for result in results))


def measure(kind, env, token, options):
    port, plain_port = free_port(), free_port()
    server, plain = serve(kind, port, env, options), serve(kind, plain_port, env, options, "plain_app")
    try:
        wait_until_answering(server, port)
        wait_until_answering(plain, plain_port)
        time.sleep(2)  # every gunicorn worker has loaded the app
        idle = {pid: resident_mb(pid) for pid in processes(server.pid)}
        load = wrk if shutil.which("wrk") and not options.python_client else python_clients
        targets = {"plain Flask": (plain_port, BARE, {}), "bare": (port, BARE, {}),
                   "bearer": (port, "/api/me", {"Authorization": f"Bearer {token}"})}
        if get(port, "/api/me", targets["bearer"][2]) != 200:
            raise SystemExit("The bearer token does not answer 200 on /api/me")
        rounds, names = {name: [] for name in targets}, list(targets)
        for number in range(options.rounds):
            for name in names[number % 3:] + names[:number % 3]:
                rounds[name].append(load(*targets[name], options))
        loaded = {pid: resident_mb(pid) for pid in processes(server.pid)}
    finally:
        for process in (server, plain):
            process.terminate()
            process.wait(timeout=30)
    return report(kind, rounds, idle, loaded, load, options)


def report(kind, rounds, idle, loaded, load, options):
    client = "wrk" if load is wrk else "Python client processes"
    print(f"\n{kind}: {options.rounds} rounds of {options.seconds} s, {options.connections} connections ({client});"
          f" load average {open('/proc/loadavg').read().split()[0]} on {os.cpu_count()} cores")
    for name, runs in rounds.items():
        print(f"  {name:<11} {statistics.median(run[0] for run in runs):8,.0f} req/s   p50 "
              f"{statistics.median(run[1] for run in runs):6.2f} ms   p99 {statistics.median(run[2] for run in runs):6.2f} ms"
              f"   errors {sum(run[3] for run in runs)}")
    ratios = {name: [run[0] / plain[0] for run, plain in zip(rounds[name], rounds["plain Flask"])]
              for name in ("bare", "bearer")}
    for name, goal in (("bare", None), ("bearer", 0.85)):
        median = statistics.median(ratios[name])
        verdict = f"; target ≥ {goal}: {'met' if median >= goal else 'NOT met'}" if goal else ""
        print(f"  {name} ÷ plain Flask {median:.2f} (rounds {min(ratios[name]):.2f}–{max(ratios[name]):.2f}{verdict})")
    for number, pid in enumerate(idle):
        role = "process" if len(idle) == 1 else "master" if number == 0 else f"worker {number}"
        print(f"  RSS {role:<8} {idle[pid]:5.1f} MB after startup, {loaded.get(pid, 0):5.1f} MB after load"
              " (target ≤ 60)")
    return statistics.median(ratios["bearer"])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", nargs="+", choices=("waitress", "gunicorn"), default=["waitress", "gunicorn"])
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (default 4)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5, help="per target and round (default 5)")
    parser.add_argument("--connections", type=int, default=4, help="concurrent keep-alive connections (default 4)")
    parser.add_argument("--database-url", help="default: SQLite in the temporary instance folder")
    parser.add_argument("--python-client", action="store_true", help="load with http.client processes, not wrk")
    parser.add_argument("--source", default=REPOSITORY, help="the Keyfob checkout to serve (default: this one)")
    options = parser.parse_args()
    sys.path.insert(0, options.source)
    instance = tempfile.mkdtemp(prefix="keyfob-http-")
    env = {name: value for name, value in os.environ.items() if not name.startswith("KEYFOB_")}
    env.update(KEYFOB_INSTANCE_PATH=instance, KEYFOB_ISSUER=ISSUER, KEYFOB_SECRET_KEY="bench-" + "k" * 40,
               **({"KEYFOB_DATABASE_URL": options.database_url} if options.database_url else {}))
    try:
        token = personal_token(env)
        ratios = {kind: measure(kind, env, token, options) for kind in options.server}
    finally:
        shutil.rmtree(instance, ignore_errors=True)
    print("\nbearer ÷ plain Flask (target ≥ 0.85): "
          + ", ".join(f"{kind} {ratio:.2f}" for kind, ratio in ratios.items()))


if __name__ == "__main__":
    main()
