"""Client ID Metadata Documents: a client_id that is an https URL names a JSON document describing the
client (draft-ietf-oauth-client-id-metadata-document, MCP 2025-11-25), fetched safely (oauth/public_fetch.py),
a few at a time, and cached: a document for its max-age, a definite refusal (a bad document, a 4xx) for
FAILURE_CACHE_SECONDS, and nothing that may pass in a moment (busy, no answer in time)."""
import json
import threading
import time
from urllib.parse import urlsplit

from models import HTTPS_URI, Client, Refused, plain_path
from oauth import OAuthError, redirect_trust
from oauth.public_fetch import TOTAL_SECONDS, NotNow, Slots, fetch

MAX_URL_LENGTH = 1024
FAILURE_CACHE_SECONDS = 30
MAX_FETCHING, MAX_FETCHING_EACH = 4, 2

cache, cache_lock = {}, threading.Lock()
# Fetches can never hold every thread of a server, nor can one user's slow documents hold every fetch.
fetching = Slots(MAX_FETCHING, MAX_FETCHING_EACH)


def client_for(url, user_id):
    """The client the document at url describes, its row created or refreshed to match; else OAuthError.
    The signed-in user asking (user_id) fetches within their share of the slots."""
    found = cached(url)
    if found is None:
        try:
            found = fetch_document(url, user_id)
        except Refused as refusal:
            found = str(refusal)
            if not isinstance(refusal, NotNow):
                remember(url, found)
    if isinstance(found, str):
        raise OAuthError("invalid_request", f"The client's metadata document cannot be used: {found}")
    return Client.described_by_document(url, **found)


def cached(url):
    with cache_lock:
        expires, found = cache.get(url, (0, None))
    return found if expires > time.monotonic() else None


def remember(url, found, seconds=FAILURE_CACHE_SECONDS):
    with cache_lock:
        if len(cache) >= 1000:
            cache.pop(next(iter(cache)))
        cache[url] = (time.monotonic() + seconds, found)


def fetch_document(url, user_id):
    """The client's name, redirect URIs and scope from a valid document; else Refused."""
    parts = require_document_url(url)
    body, max_age = fetched(parts, user_id)
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise Refused("it is not JSON") from None
    found = Client.fields_from_document(url, document, redirect_trust())
    remember(url, found, max_age)
    return found


def require_document_url(url):
    parts = urlsplit(url) if len(url) <= MAX_URL_LENGTH else None
    match = HTTPS_URI.fullmatch(url) if parts else None
    if not match or not (match[3] or "").startswith("/") or len(match[3]) < 2 or not plain_path(match[3]) \
            or int(match[2] or 443) > 65535:
        raise Refused("the client_id is not an https URL with a host name and a path")
    return parts


def fetched(parts, user_id):
    """The body and max-age of the document, fetched in one of a few slots (MAX_FETCHING a process,
    MAX_FETCHING_EACH a user); a user past their share reads what everyone reads when all are taken."""
    slot = fetching.take(user_id)
    if slot is None:
        raise NotNow("too many documents are being fetched at once; try again in a moment")
    try:
        return fetch(parts, time.monotonic() + TOTAL_SECONDS, slot)
    finally:
        slot.let_go()
