"""Client ID Metadata Documents: a client_id that is an https URL names a JSON document describing the
client (draft-ietf-oauth-client-id-metadata-document, MCP 2025-11-25). The fetch is made safe against
server-side request forgery: https only, public addresses only (the address checked is the one connected
to), a certificate valid for the host, short timeouts, a few KB, no redirects."""
import http.client
import ipaddress
import json
import re
import socket
import ssl
import threading
import time
from urllib.parse import urlsplit

from flask import current_app

from models import HTTPS_URI, Client, canonical_scope, plain_path, printable_name
from oauth import OAuthError

MAX_URL_LENGTH = 1024
MAX_BYTES = 5 * 1024
CONNECT_SECONDS, TOTAL_SECONDS = 2, 4
CACHE_SECONDS, MIN_CACHE_SECONDS, MAX_CACHE_SECONDS, FAILURE_CACHE_SECONDS = 300, 60, 24 * 3600, 30
MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*(\d{1,10})\s*(?:,|$)")
GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")  # outside it: mapped, compatible, translated, NAT64, site-local
MAX_ADDRESSES_TRIED, MAX_FETCHING = 2, 4

cache, cache_lock = {}, threading.Lock()
fetching = threading.BoundedSemaphore(MAX_FETCHING)  # fetches can never hold every thread of a server


class DocumentRefused(Exception):
    """Why a client's metadata document cannot be used."""


def is_document_url(client_id):
    return isinstance(client_id, str) and client_id.startswith("https://")


def client_for(url):
    """The client the document at url describes, its row created or refreshed to match; else OAuthError."""
    found = cached(url)
    if found is None:
        try:
            found = fetch_document(url)
        except DocumentRefused as refusal:
            found = str(refusal)
            remember(url, found)
    if isinstance(found, str):
        raise OAuthError("invalid_request", f"The client's metadata document cannot be used: {found}")
    return Client.from_document(url, **found)


def cached(url):
    with cache_lock:
        expires, found = cache.get(url, (0, None))
    return found if expires > time.monotonic() else None


def remember(url, found, seconds=None):
    seconds = FAILURE_CACHE_SECONDS if isinstance(found, str) else seconds
    with cache_lock:
        if len(cache) >= 1000:
            cache.pop(next(iter(cache)))
        cache[url] = (time.monotonic() + (seconds or CACHE_SECONDS), found)


def fetch_document(url):
    """The client's name, redirect URIs and scope from a valid document; else DocumentRefused."""
    parts = require_document_url(url)
    body, max_age = get(parts)
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise DocumentRefused("it is not JSON") from None
    found = validated(url, document)
    remember(url, found, max_age)
    return found


def require_document_url(url):
    parts = urlsplit(url) if len(url) <= MAX_URL_LENGTH else None
    match = HTTPS_URI.fullmatch(url) if parts else None
    if not match or not (match[3] or "").startswith("/") or len(match[3]) < 2 or not plain_path(match[3]) \
            or int(match[2] or 443) > 65535:
        raise DocumentRefused("the client_id is not an https URL with a host name and a path")
    return parts


def get(parts):
    """The body and max-age of a 200 answer to GET, from a public address, within the size and time caps:
    one deadline covers resolving, connecting and reading."""
    if not fetching.acquire(blocking=False):
        raise DocumentRefused("too many documents are being fetched at once; try again in a moment")
    try:
        return get_before(parts, time.monotonic() + TOTAL_SECONDS)
    finally:
        fetching.release()


def get_before(parts, deadline):
    addresses = public_addresses(parts.hostname, parts.port, deadline)
    connection = PinnedConnection(parts.hostname, parts.port or 443, addresses[:MAX_ADDRESSES_TRIED], tls_context(),
                                  deadline)
    cutter = threading.Timer(max(deadline - time.monotonic(), 0), connection.cut)  # a trickling server hits this
    cutter.start()
    try:
        connection.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""),
                           headers={"Accept": "application/json", "User-Agent": "Keyfob"})
        response = connection.getresponse()
        if response.status != 200:
            raise DocumentRefused(f"fetching it answered {response.status} (redirects are not followed)")
        body = response.read(MAX_BYTES + 1)
        if connection.was_cut:
            raise DocumentRefused("it did not arrive in time")
        if len(body) > MAX_BYTES:
            raise DocumentRefused(f"it is larger than {MAX_BYTES} bytes")
        return body, max_age(response.headers.get("Cache-Control", ""))
    except (OSError, ValueError, http.client.HTTPException) as error:
        reason = "it did not arrive in time" if connection.was_cut or isinstance(error, TimeoutError) else \
            f"fetching it failed ({type(error).__name__})"
        raise DocumentRefused(reason) from None
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


def public_addresses(host, port, deadline):
    """The host's addresses, resolved before the deadline, provided every one of them is public. One reason
    for every failure, so the page does not tell which internal names resolve."""
    answer = []
    lookup = threading.Thread(target=resolve, args=(host, port or 443, answer), daemon=True)
    lookup.start()
    lookup.join(max(deadline - time.monotonic(), 0))
    addresses = answer[0] if answer else []
    allowed = testing_addresses()
    if not addresses or not all(address in allowed or is_public(address) for address in addresses):
        raise DocumentRefused("its host does not resolve to public addresses only")
    return addresses


def resolve(host, port, answer):
    try:
        answer.append([info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)])
    except (OSError, UnicodeError):
        answer.append([])


def testing_addresses():
    """Addresses the test suite's document server may use: honoured only in testing, and only exact addresses."""
    allowed = current_app.config.get("TESTING_CLIENT_DOCUMENT_ADDRESSES") if current_app.testing else None
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
    testing_ca = current_app.config.get("TESTING_CLIENT_DOCUMENT_CA") if current_app.testing else None
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


def validated(url, document):
    """The fields Keyfob keeps from a document that names itself by url and is a public client."""
    if not isinstance(document, dict):
        raise DocumentRefused("it is not a JSON object")
    if document.get("client_id") != url:
        raise DocumentRefused("its client_id is not the URL it was fetched from")
    if document.get("token_endpoint_auth_method", "none") != "none" or "client_secret" in document:
        raise DocumentRefused("it must describe a public client (token_endpoint_auth_method none)")
    name, uris = document.get("client_name"), document.get("redirect_uris")
    if not isinstance(name, str) or not 0 < len(printable_name(name)) <= 255:
        raise DocumentRefused("its client_name is missing or longer than 255 characters")
    if not isinstance(uris, list) or not all(isinstance(uri, str) for uri in uris) \
            or Client.app_errors(name, uris):
        raise DocumentRefused(f"its redirect_uris must be 1 to {Client.MAX_REDIRECT_URIS} https or http loopback URIs")
    scope = document.get("scope", "read write")
    return {"name": printable_name(name), "redirect_uris": uris,
            "scope": canonical_scope(scope if isinstance(scope, str) else "") or "read write"}
