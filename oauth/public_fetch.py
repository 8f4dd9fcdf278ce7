"""An https GET that server-side request forgery cannot steer: https only, public addresses only (the address
checked is the one connected to), a certificate valid for the host, short timeouts, a few KB, no redirects;
a few at a time."""
import http.client
import ipaddress
import re
import socket
import ssl
import threading
import time
from collections import Counter

from flask import current_app

from models import Refused

MAX_BYTES = 5 * 1024
CONNECT_SECONDS, TOTAL_SECONDS = 2, 4
CACHE_SECONDS, MIN_CACHE_SECONDS, MAX_CACHE_SECONDS = 300, 60, 24 * 3600
MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*(\d{1,10})\s*(?:,|$)")
GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")  # outside it: mapped, compatible, translated, NAT64, site-local
MAX_ADDRESSES_TRIED = 2
MOMENTARY_STATUSES = (408, 429)  # with 5xx: the server may answer otherwise in a moment


class NotNow(Refused):
    """A refusal that may not hold a moment later (busy, no answer in time, a failed lookup or connection, a
    server error): never remembered."""


class Slots:
    """Fetches under way: at most `total` in the process, and `each` for any one holder."""

    def __init__(self, total, each):
        self.total, self.each, self.held, self.lock = total, each, Counter(), threading.Lock()

    def take(self, holder):
        """A slot for holder, or None when every slot, or holder's share of them, is in use."""
        with self.lock:
            if self.held.total() >= self.total or self.held[holder] >= self.each:
                return None
            self.held[holder] += 1
        return Slot(lambda: self.give_back(holder))

    def give_back(self, holder):
        with self.lock:
            self.held -= Counter({holder: 1})


class Slot:
    """One of the Slots, held by each thread of a fetch and free again once the last has let go: a name lookup
    cannot be cut off, so one that outlives the deadline still counts until it returns."""

    def __init__(self, give_back):
        self.give_back, self.threads, self.lock = give_back, 1, threading.Lock()

    def share(self):
        with self.lock:
            self.threads += 1

    def let_go(self):
        with self.lock:
            self.threads -= 1
            last = self.threads == 0
        if last:
            self.give_back()


def fetch(parts, deadline, slot, resolver=socket.getaddrinfo):
    """The body and max-age of a 200 answer to GET, from a public address, within the size cap, before the
    deadline, which covers resolving, connecting and reading; else Refused, or NotNow for what may pass."""
    addresses = public_addresses(parts.hostname, parts.port, deadline, slot, resolver)
    connection = PinnedConnection(parts.hostname, parts.port or 443, addresses[:MAX_ADDRESSES_TRIED], tls_context(),
                                  deadline)
    cutter = threading.Timer(max(deadline - time.monotonic(), 0), connection.cut)  # a trickling server hits this
    cutter.start()
    try:
        connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""),
                           headers={"Accept": "application/json", "User-Agent": "Keyfob"})
        response = connection.getresponse()
        if response.status >= 500 or response.status in MOMENTARY_STATUSES:
            raise NotNow(f"fetching it answered {response.status}")
        if response.status != 200:
            raise Refused(f"fetching it answered {response.status} (redirects are not followed)")
        body = response.read(MAX_BYTES + 1)
        if connection.was_cut:
            raise NotNow("it did not arrive in time")
        if len(body) > MAX_BYTES:
            raise Refused(f"it is larger than {MAX_BYTES} bytes")
        return body, max_age(response.headers.get("Cache-Control", ""))
    except Refused:
        raise
    except (OSError, ValueError, http.client.HTTPException) as error:
        reason = "it did not arrive in time" if connection.was_cut or isinstance(error, TimeoutError) else \
            f"fetching it failed ({type(error).__name__})"
        raise NotNow(reason) from None
    finally:
        cutter.cancel()
        connection.close()


def max_age(cache_control):
    """How long to keep the document: its max-age within bounds; no-store or no-cache get the minimum."""
    if "no-store" in cache_control or "no-cache" in cache_control:
        return MIN_CACHE_SECONDS
    match = MAX_AGE.search(cache_control.lower())
    seconds = int(match[1]) if match else CACHE_SECONDS
    return min(max(seconds, MIN_CACHE_SECONDS), MAX_CACHE_SECONDS)


def public_addresses(host, port, deadline, slot, resolver):
    """The host's addresses, resolved before the deadline, provided every one of them is public. One reason
    for every failure, never remembered, so neither the page nor the cache tells which internal names resolve."""
    answer = []
    lookup = threading.Thread(target=resolve, args=(resolver, host, port or 443, answer, slot), daemon=True)
    slot.share()
    lookup.start()
    lookup.join(max(deadline - time.monotonic(), 0))
    addresses = answer[0] if answer else []
    allowed = testing_addresses()
    if not addresses or not all(address in allowed or is_public(address) for address in addresses):
        raise NotNow("its host does not resolve to public addresses only")
    return addresses


def resolve(resolver, host, port, answer, slot):
    try:
        answer.append([info[4][0] for info in resolver(host, port, type=socket.SOCK_STREAM)])
    except (OSError, UnicodeError):
        answer.append([])
    finally:
        slot.let_go()


def testing_setting(name):
    """Where the test suite's document server is (TESTING_CLIENT_DOCUMENT_ADDRESSES, exact addresses) and what
    signs its certificate (TESTING_CLIENT_DOCUMENT_CA): settings honoured only in testing."""
    return current_app.config.get(name) if current_app.testing else None


def testing_addresses():
    allowed = testing_setting("TESTING_CLIENT_DOCUMENT_ADDRESSES")
    return [str(ipaddress.ip_address(address)) for address in allowed] if isinstance(allowed, list) else []


def is_public(address):
    """A globally routable unicast address. IPv6 only from the global unicast block, and not when it embeds
    an IPv4 address that is not public itself (6to4, Teredo)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 6:
        if ip not in GLOBAL_UNICAST:
            return False
        embedded = ip.sixtofour or (ip.teredo or (None, None))[1]
        if embedded is not None and not is_public(str(embedded)):
            return False
    return ip.is_global and not ip.is_multicast


def tls_context():
    testing_ca = testing_setting("TESTING_CLIENT_DOCUMENT_CA")
    context = ssl.create_default_context(cafile=testing_ca if isinstance(testing_ca, str) else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class PinnedConnection(http.client.HTTPSConnection):
    """HTTPS to the addresses that were checked, with the certificate checked for the host name: a second
    DNS answer cannot swap in a private address."""

    def __init__(self, host, port, addresses, context, deadline):
        super().__init__(host, port, timeout=CONNECT_SECONDS, context=context)
        self.addresses, self.deadline, self.raw, self.was_cut = addresses, deadline, None, False

    def connect(self):
        for address in self.addresses:
            remaining = min(CONNECT_SECONDS, self.deadline - time.monotonic())
            if remaining <= 0:
                raise TimeoutError
            try:
                self.raw = socket.create_connection((address, self.port), remaining)
                break
            except OSError:
                if address == self.addresses[-1]:
                    raise
        self.sock = self.raw = self._context.wrap_socket(self.raw, server_hostname=self.host)
        if self.was_cut:  # the deadline passed while connecting, when there was nothing to cut
            raise TimeoutError

    def cut(self):
        """End the exchange from another thread: whatever read is waiting fails at once."""
        self.was_cut = True
        if self.raw is not None:
            try:
                socket.socket.shutdown(self.raw, socket.SHUT_RDWR)  # below TLS: a blocked read returns
            except OSError:
                pass
