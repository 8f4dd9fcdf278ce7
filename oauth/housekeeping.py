"""Housekeeping without cron: each process looks at most once an hour whether the daily sweep is due, and the
one that claims it in the database (models.Housekeeping) runs it, in a thread of its own so no request waits.
Under gunicorn or on several hosts the deployment keeps itself clean; `keyfob client sweep` stays for
manual runs."""
import threading
import time

from models import db, printable_name, sweep_if_due

LOOK_EVERY = 60 * 60


def look_hourly(app):
    """A request hook that looks when the process answers its first request, then hourly; None under TESTING
    unless asked for."""
    if app.testing and not app.config.get("HOUSEKEEPING"):
        return None
    next_look, lock = [0.0], threading.Lock()

    def look():
        if time.monotonic() < next_look[0]:
            return
        with lock:
            if time.monotonic() < next_look[0]:
                return
            next_look[0] = time.monotonic() + LOOK_EVERY
        threading.Thread(target=run, args=(app,), name="keyfob-housekeeping", daemon=True).start()
    return look


def run(app):
    """Sweep, if no process has in the last day; a failure is logged and frees the claim for the next look."""
    try:
        with app.app_context(), db.connection_context():
            swept = sweep_if_due(app.config["IDLE_TOKEN_DAYS"])
    except Exception:
        app.logger.exception("Housekeeping failed; a process will try again within the hour")
        return
    clients, idle_tokens = swept or ([], 0)
    if clients or idle_tokens:
        removed = "".join(f" {client_id} ({printable_name(name)})" for client_id, name in clients)
        app.logger.info("Housekeeping removed %d self-registered client(s) that never obtained a token%s; %d idle "
                        "token(s)", len(clients), removed, idle_tokens)
