"""Rate limits: Flask-Limiter's limits, counted by the views they decorate, in a storage without timer threads."""
import inspect
import threading
import time

import pytest
from flask_limiter import Limiter
from flask_limiter.util import get_qualified_name

from app import create_app
from oauth.limits import limiter
from oauth.limits import Counts


def test_the_limiter_takes_flask_limiters_hooks_off_every_request(config):
    """ViewLimiter overrides Flask-Limiter's private _check_request_limit and reads its storage attributes
    (checked against 4.1): if their names change, every limit would silently apply twice or never."""
    limited = create_app({**config, "RATELIMIT_ENABLED": True})
    parameters = list(inspect.signature(Limiter._check_request_limit).parameters)
    assert parameters == ["self", "callable_name", "in_middleware"]
    hooks = [*limited.before_request_funcs.get(None, []), *limited.after_request_funcs[None],
             *limited.teardown_request_funcs.get(None, [])]
    assert not [hook for hook in hooks if limiter.owns(hook)]
    for name in ("_storage", "_limiter", "_storage_dead", "_fallback_limiter", "_in_memory_fallback_enabled",
                 "_key_prefix"):
        assert hasattr(limiter, name), name
    assert isinstance(limiter.storage, Counts) and isinstance(limiter._fallback_storage, Counts)


def test_a_limit_with_an_option_keyfob_does_not_count_is_refused():
    @limiter.limit("1/minute", methods=["POST"])
    def unsupported():
        pass
    with pytest.raises(ValueError, match="does not count"):
        limiter.parse(get_qualified_name(unsupported))


def test_counts_expire_with_their_window_and_are_swept_once_the_table_doubles():
    counts = Counts()
    assert [counts.incr("a", 2) for _ in range(3)] == [1, 2, 3]
    assert counts.get("a") == 3 and counts.get_expiry("a") > time.time()
    counts.counts["a"] = (3, time.time() - 0.001)  # its window has passed
    assert counts.get("a") == 0 and counts.incr("a", 60) == 1  # a new window
    for n in range(2000):
        counts.incr(f"brief-{n}", 0.01)
    time.sleep(0.05)
    for n in range(100):
        counts.incr(f"live-{n}", 60)
    assert len(counts.counts) < 2000 and counts.get("a") == 1 and counts.get("live-99") == 1


def test_counts_are_exact_under_threads():
    counts, barrier = Counts(), threading.Barrier(8)

    def hit():
        barrier.wait()
        for _ in range(500):
            counts.incr("shared", 60)
    threads = [threading.Thread(target=hit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert counts.get("shared") == 4000


def test_counting_hits_starts_no_thread(config, oauth_client):
    """limits' MemoryStorage starts a timer thread every few hits; Counts expires keys as it reads them."""
    client = create_app({**config, "RATELIMIT_ENABLED": True}).test_client()
    client.post("/oauth/revocation", data={"token": "x", "client_id": oauth_client.client_id})
    before = threading.active_count()
    answers = [client.post("/oauth/revocation", data={"token": "x", "client_id": oauth_client.client_id},
                           environ_base={"REMOTE_ADDR": f"192.0.2.{n % 200}"}) for n in range(200)]
    assert {answer.status_code for answer in answers} == {200} and threading.active_count() <= before


def test_a_view_is_wrapped_once_however_many_limits_it_has():
    def view():
        return "counted"
    once = limiter.limit("5/minute", scope="a")(view)
    assert limiter.shared_limit("7/minute", scope="b")(once) is once and once.counts_limits
    assert [limit.limit.amount for limit in limiter.limit_manager.decorated_limits(get_qualified_name(view))] == [5, 7]
