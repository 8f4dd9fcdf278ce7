"""Rate limits: Flask-Limiter, used cheaply. Views declare their limits with its limit() and shared_limit(); a
limit is counted by the view it decorates, in memory or in Redis as configured."""
import ipaddress
import threading
import time
from functools import wraps

from flask import after_this_request, request
from flask_limiter import Limiter, RateLimitExceeded, RequestLimit
from flask_limiter.util import get_qualified_name, get_remote_address
from limits.storage import MemoryStorage, Storage
from limits.strategies import FixedWindowRateLimiter

STORAGE_CHECK_SECONDS = 30


class ViewLimiter(Limiter):
    """Flask-Limiter with its request hooks taken off: no limit applies app-wide, and the hooks cost every request,
    bearer checks included. A view's limits are parsed once. A limit that counts only some answers (deduct_when) is
    tested before the view and counted after it, by a hook on that request alone. Limits use what Keyfob's views
    need (a key, a scope, shared, exempt_when, deduct_when); any other option is refused when first checked.
    `_check_request_limit` is Flask-Limiter's own (checked against 4.1, tests/test_limits.py)."""

    def init_app(self, app):
        super().init_app(app)
        for hooks in (app.before_request_funcs, app.after_request_funcs, app.teardown_request_funcs):
            hooks[None] = [hook for hook in hooks.get(None, []) if not self.owns(hook)]
        self.view_limits, self.next_storage_check = {}, 0.0
        if isinstance(self._storage, MemoryStorage) and isinstance(self._limiter, FixedWindowRateLimiter):
            self._storage = Counts()
            self._limiter = FixedWindowRateLimiter(self._storage)
        if self._in_memory_fallback_enabled and isinstance(self._fallback_limiter, FixedWindowRateLimiter):
            self._fallback_storage = Counts()
            self._fallback_limiter = FixedWindowRateLimiter(self._fallback_storage)

    def limit(self, *args, **kwargs):
        return self.counted_by_view(super().limit(*args, **kwargs))

    def shared_limit(self, *args, **kwargs):
        return self.counted_by_view(super().shared_limit(*args, **kwargs))

    def counted_by_view(self, declared):
        """Flask-Limiter's decorator, declaring the limit for the view as it does; the view is wrapped once however
        many limits it has, by a wrapper that counts them all. Flask-Limiter's own looks up the endpoint's view
        and names it on every request, for hints its request hooks (off here) would use."""
        def decorate(view):
            declared(view)
            if getattr(view, "counts_limits", False):
                return view
            name = get_qualified_name(view)

            @wraps(view)
            def counted(*args, **kwargs):
                self._check_request_limit(in_middleware=False, callable_name=name)
                return view(*args, **kwargs)
            counted.counts_limits = True
            return counted
        return decorate

    def owns(self, hook):
        return getattr(hook, "__self__", None) is self or getattr(hook, "args", ())[:1] == (self,)

    def _check_request_limit(self, callable_name=None, in_middleware=True):
        if in_middleware or not self.enabled:
            return
        limits = self.view_limits.get(callable_name) or self.parse(callable_name)
        if self._storage_dead:
            self.check_storage()
        try:
            self.count(limits)
        except RateLimitExceeded:
            raise
        except Exception:
            if not self._in_memory_fallback_enabled or self._storage_dead:
                raise
            self.storage_failed()
            self.count(limits)

    def parse(self, callable_name):
        """The view's limits in Flask-Limiter's order, each with its scope: a view serves one endpoint."""
        limits = sorted(self.limit_manager.decorated_limits(callable_name), key=lambda limit: limit.limit)
        for limit in limits:
            if limit.methods or limit.per_method or limit.meta_limits or limit.on_breach or limit.cost != 1 \
                    or callable(limit.scope):
                raise ValueError(f"{callable_name}: Keyfob's limiter does not count {limit.limit} as declared")
        scoped = [(limit, limit.scope_for(request.endpoint, None)) for limit in limits]
        self.view_limits[callable_name] = scoped
        return scoped

    def count(self, limits):
        """Hit each limit that applies, in order, stopping at the first one breached (as Flask-Limiter does)."""
        tested, prefix = [], (self._key_prefix,) if self._key_prefix else ()
        for limit, scope in limits:
            if limit.exempt_when and limit.exempt_when():
                continue
            key = limit.key_func()
            if not key:
                continue
            args = (*prefix, key, scope)
            if limit.deduct_when:
                tested.append((limit, args))
            if not (self.limiter.test if limit.deduct_when else self.limiter.hit)(limit.limit, *args):
                self.context.view_rate_limit = RequestLimit(self, limit.limit, list(args), True, limit.shared)
                raise RateLimitExceeded(limit)
        if tested:
            after_this_request(lambda response: self.deduct(response, tested))

    def deduct(self, response, tested):
        for limit, args in tested:
            if limit.deduct_when(response):
                try:
                    self.limiter.hit(limit.limit, *args)
                except Exception:
                    if not self._in_memory_fallback_enabled or self._storage_dead:
                        raise
                    self.storage_failed()
                    self.limiter.hit(limit.limit, *args)
        return response

    def storage_failed(self):
        self.logger.warning("Rate limit storage unreachable - falling back to in-memory storage")
        self._storage_dead, self.next_storage_check = True, time.monotonic() + STORAGE_CHECK_SECONDS

    def check_storage(self):
        if time.monotonic() >= self.next_storage_check:
            self.next_storage_check = time.monotonic() + STORAGE_CHECK_SECONDS
            if self._storage.check():
                self.logger.info("Rate limit storage recovered")
                self._storage_dead = False


class Counts(Storage):
    """Fixed-window counters in this process's memory, each dropped once its window has passed: limits'
    MemoryStorage starts a timer thread every few hits to scan every key. Expired keys are swept when the
    table has doubled since the last sweep."""
    STORAGE_SCHEME = ["keyfob-memory"]

    def __init__(self, uri=None, wrap_exceptions=False, **options):
        self.counts, self.lock, self.swept_at_size = {}, threading.Lock(), 1024
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)

    @property
    def base_exceptions(self):
        return ValueError

    def incr(self, key, expiry, amount=1):
        now = time.time()
        with self.lock:
            count, ends = self.counts.get(key, (0, 0.0))
            if ends <= now:
                count, ends = 0, now + expiry
            self.counts[key] = count + amount, ends
            if len(self.counts) >= 2 * self.swept_at_size:
                self.sweep(now)
        return count + amount

    def sweep(self, now):
        self.counts = {key: entry for key, entry in self.counts.items() if entry[1] > now}
        self.swept_at_size = max(1024, len(self.counts))

    def get(self, key):
        count, ends = self.counts.get(key, (0, 0.0))
        return count if ends > time.time() else 0

    def get_expiry(self, key):
        count, ends = self.counts.get(key, (0, 0.0))
        return ends if ends > time.time() else time.time()

    def check(self):
        return True

    def reset(self):
        with self.lock:
            cleared, self.counts = len(self.counts), {}
        return cleared

    def clear(self, key):
        with self.lock:
            self.counts.pop(key, None)


def refused(response):
    """What the token and revocation endpoints count against an address: their refusals. An exchange spends a code
    a person approved and revocation answers the same for any token, so clients behind one address (an office, an
    MCP server passing /token through) are never limited for working, and guessing still is."""
    return response.status_code >= 400


def address_bucket():
    """Whom a per-address limit counts: the address, or an IPv6 address's /64, which one host or home usually
    has whole (each of its addresses counted alone would multiply every limit by 2^64); an IPv4 client that
    reaches a dual-stack socket as ::ffff:a.b.c.d is its IPv4 address."""
    address = get_remote_address() or ""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return address
    if ip.ipv4_mapped:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))


limiter = ViewLimiter(address_bucket)
