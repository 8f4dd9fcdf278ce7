"""Keyfob's domain: users, OAuth clients, access tokens, the audit trail, and the sealed authorization code.

Data access: peewee's query API, except on the request path of a flow or a bearer check, where a fixed SQL
statement runs instead (each such method says so): there peewee's query builder costs far more than the query."""
import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import string
import time
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple
from urllib.parse import urlsplit

import peewee
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from flask import current_app, has_request_context, request
from peewee import (AutoField, BigIntegerField, BooleanField, CharField, DatabaseError, DatabaseProxy,
                    ForeignKeyField, IntegerField, IntegrityError, InterfaceError, Model, TextField, fn)
from werkzeug.security import check_password_hash

db = DatabaseProxy()

# ---- Grammar and small helpers ---------------------------------------------------------------------------------

SCOPES = {"read": "See your account and read your data",  # each scope word, as the consent page asks for it
          "write": "Make changes to your data on your behalf"}
GRANTS = ("read", "read write")  # the scopes a token can hold: write includes read
OAUTH_TOKEN, PERSONAL_TOKEN, CLIENT_SECRET = "kf_at_", "kf_pat_", "kf_cs_"  # how each kind of secret begins
SECRET = "kf_"  # how every one of them begins
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
MAX_RESOURCE_LENGTH = 2048
DOCUMENT_ID = "https://"  # a client_id that begins so is the URL of its Client ID Metadata Document
LOOPBACK_URI = re.compile(
    r"http://(127\.0\.0\.1|\[::1\]|localhost)(?::(0|[1-9][0-9]{0,4}))?([/?][\x21-\x7e]*)?")
HTTPS_URI = re.compile(
    r"https://((?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)*[a-z](?:[a-z0-9-]*[a-z0-9])?)(?::([1-9][0-9]{0,4}))?([/?][\x21-\x7e]*)?")
PRIVATE_USE_URI = re.compile(r"([a-z][a-z0-9+.-]*):([\x21-\x7e]+)")
APP_AUTHORITY = re.compile(  # a private-use URI's authority, if it has one: a plain host name and port, no userinfo
    r"//(?:(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)?(?::([0-9]{1,5}))?(?:[/?].*)?")
BROWSER_SCHEMES = frozenset({  # schemes a browser handles itself or opens web pages with: never a native app's
    "about", "android-app", "blob", "brave", "chrome", "chrome-extension", "data", "edge", "file", "filesystem",
    "firefox", "firefox-bridge", "ftp", "googlechrome", "googlechromes", "http", "https", "intent", "javascript",
    "jar", "mailto", "microsoft-edge", "moz-extension", "opera", "resource", "sms", "tel", "vbscript", "view-source",
    "ws", "wss", "x-safari-http", "x-safari-https"})
CODE_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")
CODE_VERIFIER = re.compile(r"[A-Za-z0-9._~-]{43,128}")


class Refused(ValueError):
    """What a model refuses to store, and why, in words fit to show: the view turns the reasons into an
    OAuthError or a form message. (Something not found is None, not a refusal.)"""

    def __init__(self, *reasons):
        super().__init__(" ".join(reasons))
        self.reasons = list(reasons)


DAY = 24 * 60 * 60


def now():
    return int(time.time())


def canonical_scope(value):
    """"read" or "read write" for a valid scope string (write includes read), else None."""
    words = value.split(" ") if isinstance(value, str) else None
    if not words or any(word not in SCOPES for word in words):
        return None
    return GRANTS[1] if "write" in words else GRANTS[0]


def when(timestamp):
    """A stored time as people read it (UTC), or "never"."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(timestamp)) if timestamp else "never"


def scope_words(scope):
    """A granted scope as people read it: "read", or "read and write"."""
    return " and ".join(scope.split(" "))


def s256(verifier):
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def new_client_id():
    """32 letters and digits (190 bits): nothing a shell or a command line would read as an option."""
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(32))


def usable_password(password):
    """Non-empty, UTF-8, and without NUL: HMAC pads keys with zeros, so "pw" and "pw" + NUL would hash alike."""
    try:
        return isinstance(password, str) and bool(password) and "\0" not in password and bool(password.encode())
    except UnicodeEncodeError:
        return False


def digest(secret):
    return hashlib.sha256(secret.encode()).hexdigest()


def request_address():
    """The address the current request came from, if there is one (a command has none)."""
    return request.remote_addr if has_request_context() else None


def is_document_url(client_id):
    return isinstance(client_id, str) and client_id.startswith(DOCUMENT_ID)


def loopback_parts(uri):
    """(host, port, path and query) of an http loopback URI with a plain authority, else None."""
    match = LOOPBACK_URI.fullmatch(uri) if isinstance(uri, str) else None
    if not match or int(match[2] or 0) > 65535:
        return None
    rest = match[3] or ""
    return (match[1], match[2], rest) if plain_path(rest) else None


def https_host(uri):
    """The host of an https URI with a plain host name (lower case ASCII, no userinfo), a port in range and a
    plain path, else None."""
    match = HTTPS_URI.fullmatch(uri) if isinstance(uri, str) else None
    return match[1] if match and int(match[2] or 443) <= 65535 and plain_path(match[3] or "") else None


def is_resource_url(url):
    """A resource's URL (RFC 8707 §2): absolute http or https, with a host, no fragment, and nothing but printable
    ASCII without spaces, within a token row's resource column."""
    if not (isinstance(url, str) and 0 < len(url) <= MAX_RESOURCE_LENGTH and url.isascii() and url.isprintable()
            and " " not in url and "#" not in url):
        return False
    try:
        parts = urlsplit(url)
        return parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port out of range, or an unclosed [IPv6 address
        return False


def app_scheme(uri):
    """The scheme of a native app's private-use URI (RFC 8252 §7.1: com.example.app:/cb), else None."""
    match = PRIVATE_USE_URI.fullmatch(uri) if isinstance(uri, str) else None
    authority = APP_AUTHORITY.fullmatch(match[2]) if match and match[2].startswith("//") else True
    usable = match and match[1] not in BROWSER_SCHEMES and plain_path(match[2]) and authority
    return match[1] if usable and (authority is True or int(authority[1] or 0) <= 65535) else None


def destination(uri):
    """Where a redirect URI sends people, in a few words: a native app's scheme, an https host, or a loopback
    host and port; None for anything else."""
    if app_scheme(uri):
        return f"the app for {app_scheme(uri)}: links"
    loopback = loopback_parts(uri)
    return https_host(uri) or (f"{loopback[0]}:{loopback[1]}" if loopback and loopback[1] else
                               loopback[0] if loopback else None)


def redirect_summary(uris):
    """What the audit trail keeps of a self-registered client's redirect URIs: how many, and where they lead
    (anyone can register one, so the full URIs would be theirs to fill the trail with)."""
    return {"redirect_uris": len(uris), "destinations": " ".join(sorted({destination(uri) or "?" for uri in uris}))}


def plain_path(rest):
    """No fragment, backslash or dot-segment (encoded or not) in a URI's path and query."""
    segments = rest.split("?")[0].lower().replace("%2e", ".").split("/")
    return "#" not in rest and "\\" not in rest and "." not in segments and ".." not in segments


def printable_name(name):
    """A name without control, format (bidi) or surrogate characters, which could disguise it when shown."""
    if name.isascii() and name.isprintable():  # nothing to take out: the usual case, checked in one step
        return name.strip()
    return "".join(char for char in name if unicodedata.category(char) not in ("Cc", "Cf", "Cs")).strip()


INVISIBLE_LETTERS = frozenset("\u115f\u1160\u3164\uffa0")  # the Hangul fillers: letters (Lo) that draw nothing


def has_visible_letter(name):
    return any(unicodedata.category(char)[0] == "L" and char not in INVISIBLE_LETTERS for char in name)


def stacked_marks(name):
    """The most combining marks drawn on one character of the name, fully decomposed: nonspacing and enclosing
    marks, which draw over their neighbours (a spacing mark takes room of its own)."""
    most = run = 0
    for char in unicodedata.normalize("NFD", name):
        run = run + 1 if unicodedata.category(char) in ("Mn", "Me") else 0
        most = max(most, run)
    return most


def folded(name):
    """The name's letters as a search for a word sees them: compatibility forms (NFKC's mappings) and case
    folded, accents dropped."""
    return "".join(char for char in unicodedata.normalize("NFKD", name.casefold())
                   if unicodedata.category(char)[0] != "M")


class RedirectTrust(NamedTuple):
    """Where, beyond http loopback, the operator lets clients that register themselves send people back: the
    single-word schemes of native apps (KEYFOB_TRUSTED_REDIRECT_SCHEMES; a scheme with a period needs no trust)
    and https hosts (KEYFOB_TRUSTED_REDIRECT_HOSTS)."""
    schemes: frozenset = frozenset({"cursor", "vscode", "vscode-insiders"})  # the matrix's clients (README)
    hosts: frozenset = frozenset()

    @classmethod
    def parse(cls, schemes=None, hosts=None):
        """From the settings' comma-separated words (unset: the defaults); Refused names what cannot be trusted."""
        schemes = cls._field_defaults["schemes"] if schemes is None else words(schemes)
        hosts = frozenset() if hosts is None else words(hosts)
        refused = ([f"KEYFOB_TRUSTED_REDIRECT_SCHEMES: {scheme!r} is not an app's scheme (lower case letters,"
                    " digits, + - and ., never one a browser handles itself)" for scheme in schemes
                    if app_scheme(f"{scheme}:/") != scheme] +
                   [f"KEYFOB_TRUSTED_REDIRECT_HOSTS: {host!r} is not a host name (lower case, IDN in its xn-- form)"
                    for host in hosts if https_host(f"https://{host}/") != host])
        if refused:
            raise Refused(*refused)
        return cls(frozenset(schemes), frozenset(hosts))


def allows(metadata, name, value, default=None):
    """Whether client metadata's list `name` holds value; absent, it holds RFC 7591 §2's default."""
    values = metadata.get(name, [value] if default is None else default)
    return isinstance(values, list) and value in values


def words(setting):
    return {word.strip() for word in setting.split(",") if word.strip()}


def writing():
    """A transaction that writes. On SQLite it takes the write lock when it begins (BEGIN IMMEDIATE), where the
    busy timeout applies: a transaction that read first and then writes is refused at once while another
    process writes, whatever the timeout (PostgreSQL needs nothing of the kind)."""
    return db.atomic("IMMEDIATE") if isinstance(db.obj, peewee.SqliteDatabase) else db.atomic()


# Two of peewee's internals, each used in one place on the request path. Checked against peewee 4.5;
# tests/test_models.py fails if either changes.
def driver_errors():
    """peewee's translation of the driver's exceptions into its own, around a statement on the driver's cursor."""
    return peewee.__exception_wrapper__


def fetch_one(sql, params):
    """The first row a fixed statement answers, or None, on the driver's cursor: the request path's lookups."""
    with driver_errors():
        cursor = db.cursor()
        cursor.execute(sql, params)
        return cursor.fetchone()


def stored_row(model, values, **related):
    """A model for a row read from the database, as peewee's own row readers make one: without computing the
    defaults of fields (a Client's default is a fresh client_id). Values become its data as they are, as peewee's
    field accessors would put them; a related row, given as a model, goes through its accessor."""
    row = model(__no_default__=True)
    row.__data__ = values
    for name, value in related.items():
        setattr(row, name, value)
    return row


# ---- BaseModel -------------------------------------------------------------------------------------------------

class BaseModel(Model):
    class Meta:
        database = db

    @classmethod
    def find_by(cls, column, value):
        """The row whose unique column holds value, or None. Fixed SQL on the driver's cursor: every request looks
        one up, and peewee's query and row wrappers would more than double its cost."""
        row = fetch_one(cls.lookup_sql(column, db.param), (value,))
        return None if row is None else cls.stored(row)

    @classmethod
    def stored(cls, row):
        """A model for a row of every column in field order; only the values the driver may return as another type
        than the field's (SQLite's 0 and 1 for a boolean) are converted."""
        names, converters = cls.readers()
        values = dict(zip(names, row))
        for name, convert in converters:
            if values[name] is not None:
                values[name] = convert(values[name])
        return stored_row(cls, values)

    @classmethod
    @lru_cache(maxsize=None)
    def readers(cls):
        """The fields' names in order, and the converters of those whose values the driver may return otherwise."""
        native = (AutoField, BigIntegerField, CharField, TextField, IntegerField, ForeignKeyField)  # str or int
        fields = cls._meta.sorted_fields
        return [field.name for field in fields], [(field.name, field.python_value) for field in fields
                                                  if type(field) not in native]

    @classmethod
    @lru_cache(maxsize=None)
    def lookup_sql(cls, column, param):
        return f"SELECT {cls.column_list()} FROM {cls._meta.table_name} WHERE {column} = {param}"

    @classmethod
    @lru_cache(maxsize=None)
    def column_list(cls):
        """Every column, in field order and named with the table, as stored() reads them."""
        return ", ".join(f"{cls._meta.table_name}.{field.column_name}" for field in cls._meta.sorted_fields)


# ---- User ------------------------------------------------------------------------------------------------------

class User(BaseModel):
    username = CharField(max_length=150, unique=True)
    password_digest = CharField(max_length=255)
    created_at = IntegerField(default=now)

    USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,149}")
    PASSWORD_CHARACTERS, PASSWORD_BYTES = 8, 1024  # at least, at most
    PASSWORDS = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)  # argon2id, as OWASP advises

    class Meta:
        table_name = "users"

    @classmethod
    def register(cls, username, password):
        """A new user; Refused says what is wrong with the name or password."""
        if not cls.USERNAME.fullmatch(username or ""):
            raise Refused("A username is 1 to 150 letters, digits or . _ @ + - and starts with a letter or digit")
        cls.check_new_password(password)
        try:
            with writing():
                return cls.create(username=username, password_digest=cls.digest_of(password))
        except IntegrityError:
            raise Refused(f"A user named {username!r} already exists") from None

    @classmethod
    def check_new_password(cls, password):
        """Refused, saying why, unless password may be set: 8 characters or more, at most 1,024 bytes, no NUL."""
        if not usable_password(password):
            raise Refused("The password must not be empty or contain NUL characters")
        if len(password) < cls.PASSWORD_CHARACTERS:
            raise Refused(f"The password must have at least {cls.PASSWORD_CHARACTERS} characters")
        if len(password.encode()) > cls.PASSWORD_BYTES:
            raise Refused(f"The password must be at most {cls.PASSWORD_BYTES:,} bytes long")

    def change_password(self, password, current=None, by=None):
        """Set a new password, checked as at registration; with current, only if that is the password now. Every
        session of the user's ends with the old password."""
        if current is not None and not (usable_password(current)
                                        and self.digest_matches(self.password_digest, current)):
            raise Refused("The current password is not right")
        self.check_new_password(password)
        self.password_digest = self.digest_of(password)
        with writing():
            self.save(only=[User.password_digest])
            sessions = Session.end_all(self)
            AuditEvent.record("password.changed", self, sessions=sessions, by=by)

    def remove(self, by=None):
        """Delete the user, the apps they registered (with every token issued to those) and every token
        they hold, in one transaction; the names of the apps removed."""
        with writing():
            apps = Client.owned_by(self)
            for app in apps:
                app.remove(by=by)
            tokens = AccessToken.delete().where(AccessToken.user == self).execute()
            Session.end_all(self)
            self.delete_instance()
            AuditEvent.record("user.removed", self, tokens=tokens, by=by)
        return [app.name for app in apps]

    @property
    def session_check(self):
        """What a session keeps beside the user's id: SQLite gives a removed user's id to the next user added,
        whose password digest (salted) differs, so the removed user's sessions name no one."""
        return hashlib.sha256(b"keyfob/session check:" + self.password_digest.encode()).hexdigest()[:16]

    @classmethod
    def named(cls, username):
        """The user with this name, for any string at all (a malformed name is no one's)."""
        return cls.find_by("username", username) if isinstance(username, str) and cls.USERNAME.fullmatch(username) else None

    @classmethod
    def authenticate(cls, username, password):
        """The user these credentials name, else None; as slow for an unknown name as for a wrong password.
        The user's digest is made anew if it was made otherwise than digest_of makes it now."""
        user = cls.find_by("username", username) if cls.USERNAME.fullmatch(username) else None
        usable = usable_password(password)
        matches = cls.digest_matches(user.password_digest if user and usable else absent_user_digest(),
                                     password if usable else "-")
        if not (user and usable and matches):
            return None
        user.rehash_password(password)
        return user

    @classmethod
    def digest_of(cls, password):
        """A new salted digest of the password: argon2id with 19 MiB, 2 passes and 1 lane (OWASP's first choice)."""
        return cls.PASSWORDS.hash(password)

    @classmethod
    def digest_matches(cls, stored, password):
        """Whether password is the one the stored digest was made of, compared in constant time: argon2id, or
        Werkzeug's scrypt or pbkdf2 of the versions before it."""
        if not stored.startswith("$argon2"):
            return check_password_hash(stored, password)
        try:
            return cls.PASSWORDS.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def rehash_password(self, password):
        """Store a digest of the password just proven if the stored one was made otherwise (scrypt, pbkdf2, other
        argon2id parameters). It replaces only the digest it was proven against, so a password changed meanwhile
        stays changed. Not an audit event: the password and the account stay as they were."""
        stored = self.password_digest
        if stored.startswith("$argon2id$") and not self.PASSWORDS.check_needs_rehash(stored):
            return
        digest_now = self.digest_of(password)
        with writing():
            replaced = (User.update(password_digest=digest_now)
                        .where((User.id == self.id) & (User.password_digest == stored)).execute())
        if replaced:
            self.password_digest = digest_now


@lru_cache(maxsize=1)
def absent_user_digest():
    """What the password given for a name that is no one's is checked against, so that sign-in takes as long as
    a wrong password does: made once a process, at start-up (create_app), not at the first such sign-in."""
    return User.digest_of(secrets.token_urlsafe())


# ---- Client ----------------------------------------------------------------------------------------------------

class Client(BaseModel):
    client_id = CharField(max_length=2048, unique=True, default=lambda: new_client_id())
    name = CharField(max_length=255)
    redirect_uris_json = TextField(column_name="redirect_uris")
    scope = CharField(max_length=32, default="read write")  # the most it may ask for
    dynamically_registered = BooleanField(default=False)
    created_at = IntegerField(default=now)
    token_endpoint_auth_method = CharField(max_length=32, default="none")
    secret_digest = CharField(max_length=64, null=True)
    owner = ForeignKeyField(User, null=True, backref="apps", on_delete="CASCADE")  # who registered it on /my/apps
    last_authorized_at = IntegerField(null=True)  # consent screen shown or code issued: a consent in flight
    first_token_at = IntegerField(null=True)
    resource_server = CharField(max_length=MAX_RESOURCE_LENGTH, null=True)  # the resource it serves, if one

    # Who described the client: itself, by registering (RFC 7591) or by publishing a metadata document;
    # a user, on /my/apps; or the operator, with `keyfob client add`.
    SELF_REGISTERED, DOCUMENT, USER, OPERATOR = "self-registered", "document", "user", "operator"
    APP_TYPES = ("public", "confidential")
    MAX_NAME_LENGTH, SHOWN_NAME_LENGTH, MAX_STACKED_MARKS = 255, 60, 2
    KEYFOB_WORDS = ("keyfob", "verified")  # what the consent page could show as Keyfob vouching for the app
    MAX_REDIRECT_URIS, MAX_REDIRECT_URI_LENGTH = 10, 512  # an app of a user's or of the operator's
    # A client that names itself (anyone may register one): enough for every client in the compatibility matrix.
    SELF_NAME_LENGTH, SELF_REDIRECT_URIS, SELF_REDIRECT_URI_LENGTH = 100, 5, 256
    SECRET_METHODS = ("client_secret_basic", "client_secret_post")
    UNUSED_KEPT_FOR = DAY
    CONSENT_IN_FLIGHT_FOR = 60 * 60
    AUTHORIZATION_RECORDED_EVERY = 10 * 60

    class Meta:
        table_name = "clients"

    @property
    def kind(self):
        if is_document_url(self.client_id):
            return self.DOCUMENT
        if self.dynamically_registered:
            return self.SELF_REGISTERED
        return self.USER if self.owner_id else self.OPERATOR

    @property
    def names_itself(self):
        """Whether the client chose its name and addresses itself, which nobody here has checked."""
        return self.kind in (self.SELF_REGISTERED, self.DOCUMENT)

    @classmethod
    def naming_themselves(cls):
        """names_itself, as a condition on the table."""
        return (cls.dynamically_registered | cls.client_id.startswith(DOCUMENT_ID)) & cls.owner.is_null()

    @classmethod
    def registered_itself(cls, name, redirect_uris, scope):
        """A public client that registered itself (RFC 7591)."""
        with writing():
            client = cls.create(name=name, redirect_uris=redirect_uris, scope=scope, dynamically_registered=True)
            AuditEvent.record("client.registered", client=client, **redirect_summary(redirect_uris), kind="self")
        return client

    @classmethod
    def described_by_document(cls, url, name, redirect_uris, scope):
        """The client a Client ID Metadata Document describes, its row made on first use and kept in step
        with the document, so tokens, connected apps and revocation treat it like any other client."""
        client = cls.find_by("client_id", url)
        if client is None:
            try:
                with writing():
                    client = cls.create(client_id=url, name=name, redirect_uris=redirect_uris, scope=scope,
                                        dynamically_registered=True)
                    AuditEvent.record("client.registered", client=client, **redirect_summary(redirect_uris),
                                      kind="document")
                    return client
            except IntegrityError:
                client = cls.find_by("client_id", url)
        if (client.name, client.redirect_uris, client.scope) != (name, redirect_uris, scope):
            client.name, client.redirect_uris, client.scope = name, redirect_uris, scope
            with writing():
                client.save(only=[Client.name, Client.redirect_uris_json, Client.scope])
                AuditEvent.record("client.changed", client=client, redirect_uris=" ".join(redirect_uris))
        return client

    @classmethod
    def fields_from_document(cls, url, document, trust=RedirectTrust()):
        """The name, redirect URIs and scope a Client ID Metadata Document gives its client; Refused unless it is
        a JSON object that names itself by url, allows the code flow for a public client (whatever else it also
        allows) and lists a redirect URI that may be registered."""
        if not isinstance(document, dict):
            raise Refused("it is not a JSON object")
        if document.get("client_id") != url:
            raise Refused("its client_id is not the URL it was fetched from")
        if not allows(document, "grant_types", "authorization_code") or not allows(document, "response_types", "code"):
            raise Refused("it does not allow the authorization_code grant with the code response type")
        method, methods = document.get("token_endpoint_auth_method", "none"), "token_endpoint_auth_methods_supported"
        if "client_secret" in document or not (method == "none" or allows(document, methods, "none", default=())):
            raise Refused(f"it must allow a public client (token_endpoint_auth_method none): {str(method)[:40]} needs a"
                          " secret or a key that Keyfob does not check")
        name, uris, scope = document.get("client_name"), document.get("redirect_uris"), document.get("scope")
        try:
            name = cls.checked_name(name, cls.SELF_NAME_LENGTH)
        except Refused as refusal:
            raise Refused(f"its client_name {refusal}") from None
        listed = uris if isinstance(uris, list) and len(uris) <= cls.SELF_REDIRECT_URIS else []
        try:
            uris = cls.registrable_redirects(listed, trust, any_https=True)
        except Refused:
            raise Refused(f"its redirect_uris must list 1 to {cls.SELF_REDIRECT_URIS} https, http loopback or app URIs"
                          f" of at most {cls.SELF_REDIRECT_URI_LENGTH} characters (any others are left aside)") from None
        return {"name": name, "redirect_uris": uris,
                "scope": canonical_scope(scope if isinstance(scope, str) else "read write") or "read write"}

    @classmethod
    def registered_by_user(cls, owner, name, redirect_uris, confidential=False):
        """An app a user registers on /my/apps: it may ask for write, and may keep a secret."""
        return cls._register_app(owner, name, redirect_uris, confidential, by=None)

    @classmethod
    def registered_by_operator(cls, name, redirect_uris, confidential=False, resource_server=None):
        """An app the operator registers with `keyfob client add`. A resource server (always confidential) serves
        the resource at its URL: tokens may be bound to it, and it introspects those, and only those."""
        return cls._register_app(None, name, redirect_uris, confidential or resource_server is not None, by="operator",
                                 resource_server=resource_server)

    @classmethod
    def _register_app(cls, owner, name, redirect_uris, confidential, by, resource_server=None):
        fields = {"owner": owner, "name": cls.checked_name(name), "redirect_uris": redirect_uris,
                  "scope": "read write", "resource_server": resource_server}
        with writing():
            app = cls.create_confidential(**fields) if confidential else cls.create(**fields)
            AuditEvent.record("client.registered", owner, app, redirect_uris=" ".join(redirect_uris),
                              kind="confidential" if confidential else "public", resource_server=resource_server, by=by)
        return app

    @classmethod
    def create_confidential(cls, method="client_secret_basic", **fields):
        """A client with a secret: only its digest is stored, and the plaintext lives on the returned row."""
        if method not in cls.SECRET_METHODS:
            raise Refused(f"A confidential client authenticates with {' or '.join(cls.SECRET_METHODS)}")
        secret = cls.new_secret()
        client = cls.create(token_endpoint_auth_method=method, secret_digest=digest(secret), **fields)
        client.secret = secret
        return client

    @staticmethod
    def new_secret():
        return CLIENT_SECRET + secrets.token_urlsafe(32)

    @classmethod
    def checked_name(cls, name, longest=MAX_NAME_LENGTH):
        """The name as it is stored and shown (printable_name); Refused, saying why, unless it has a visible
        letter, at most longest characters, at most 2 combining marks stacked on a character, and neither "Keyfob"
        nor "verified" in any case, width or accent. Every name a client is given passes here."""
        name = printable_name(name) if isinstance(name, str) else ""
        if not has_visible_letter(name):
            raise Refused("must have a visible letter")
        if len(name) > longest:
            raise Refused(f"must be at most {longest} characters long")
        if stacked_marks(name) > cls.MAX_STACKED_MARKS:
            raise Refused(f"must not stack more than {cls.MAX_STACKED_MARKS} combining marks on a character")
        if any(word in folded(name) for word in cls.KEYFOB_WORDS):
            raise Refused('must not contain "Keyfob" or "verified": the consent page would seem to vouch for the app')
        return name

    @property
    def shown_name(self):
        """The name as the consent page shows it: at most 60 characters, so no name fills the page with words."""
        if len(self.name) <= self.SHOWN_NAME_LENGTH:
            return self.name
        return self.name[:self.SHOWN_NAME_LENGTH - 1].rstrip() + "…"

    @classmethod
    def validate_app(cls, name, redirect_uris, trust=RedirectTrust(), signs_people_in=True, app_type="public",
                     resource_server=None):
        """Refused, with every reason in words for the app's form, unless the name, redirect URIs, type and the
        URL of the resource it serves, if any, are fit. Only an app that signs people in needs a redirect URI (a
        resource server introspecting has none)."""
        reasons = []
        try:
            cls.checked_name(name)
        except Refused as refusal:
            reasons.append(f"The app's name {refusal}.")
        if resource_server is not None and not is_resource_url(resource_server):
            reasons.append(f"{resource_server[:80]} is not an absolute http(s) URL without a fragment (a resource"
                           " server's URL, as its clients name it).")
        if not int(signs_people_in) <= len(redirect_uris) <= cls.MAX_REDIRECT_URIS:
            reasons.append(f"Give between 1 and {cls.MAX_REDIRECT_URIS} redirect URIs.")
        reasons += [f"{uri[:80]} is not an https, http loopback or app URI without a fragment."
                    for uri in redirect_uris if not cls.registrable_redirect(uri, trust, any_https=True)]
        if app_type not in cls.APP_TYPES:
            reasons.append("Choose public or confidential.")
        if reasons:
            raise Refused(*reasons)

    @classmethod
    def registrable_redirects(cls, uris, trust=RedirectTrust(), any_https=False):
        """The URIs a client that names itself may register, in order and once each; Refused, with each URI's
        reason, if there are none. A registration gets what may be registered of what it asked for (RFC 7591
        §3.2.1)."""
        accepted, reasons = [], []
        for uri in uris:
            try:
                cls.check_redirect(uri, trust, any_https, cls.SELF_REDIRECT_URI_LENGTH)
                if uri not in accepted:
                    accepted.append(uri)
            except Refused as refusal:
                reasons.append(f"{str(uri)[:80]} {refusal}")
        if not accepted:
            raise Refused(*reasons)
        return accepted

    @classmethod
    def registrable_redirect(cls, uri, trust=RedirectTrust(), any_https=False):
        try:
            cls.check_redirect(uri, trust, any_https)
            return True
        except Refused:
            return False

    @classmethod
    def check_redirect(cls, uri, trust=RedirectTrust(), any_https=False, longest=MAX_REDIRECT_URI_LENGTH):
        """Refused, saying why, unless uri may be registered: http loopback (RFC 8252 §7.3), a native app's
        private-use URI (§7.1) whose scheme has a period or is trusted, or https on a trusted host. Apps
        registered here and metadata documents may use any https host (any_https), matched exactly."""
        scheme = uri.partition(":")[0].lower() if isinstance(uri, str) else ""
        if not isinstance(uri, str) or not 0 < len(uri) <= longest:
            raise Refused(f"is not a URI of at most {longest} characters")
        if not uri.startswith(scheme):
            raise Refused("has capital letters in its scheme: registered schemes are lower case")
        if scheme == "http" and not loopback_parts(uri):
            raise Refused("is not http loopback (127.0.0.1, [::1] or localhost) with a plain path")
        host = https_host(uri) if scheme == "https" else None
        if scheme == "https" and (host in (None, "localhost") or not (any_https or host in trust.hosts)):
            raise Refused("is not https on a host this server trusts (KEYFOB_TRUSTED_REDIRECT_HOSTS)")
        if scheme in BROWSER_SCHEMES - {"http", "https"}:
            raise Refused(f"uses {scheme}:, which the browser handles itself")
        if scheme not in ("http", "https") and app_scheme(uri) is None:
            raise Refused("is not a plain URI (no fragment, userinfo, dot-segment, space or control character)")
        if scheme not in ("http", "https") and "." not in scheme and scheme not in trust.schemes:
            raise Refused(f"uses {scheme}:, which is not a trusted app scheme (a native app's has a period, such as"
                          " com.example.app, or is in KEYFOB_TRUSTED_REDIRECT_SCHEMES)")

    @classmethod
    def resource_servers(cls):
        """{URL: name} of the resources the operator's resource servers serve, oldest first. Fixed SQL: every
        authorization request asks."""
        return dict(db.execute_sql("SELECT resource_server, name FROM clients WHERE resource_server IS NOT NULL"
                                   " ORDER BY id").fetchall())

    def serves(self, resource):
        """Whether a token bound to resource is for this resource server, a trailing slash aside (find_resource
        takes either spelling of a known resource)."""
        return bool(self.resource_server and resource) and resource.rstrip("/") == self.resource_server.rstrip("/")

    @classmethod
    def owned_by(cls, user):
        return list(cls.select().where(cls.owner == user).order_by(cls.created_at))

    @property
    def is_confidential(self):
        """Whichever secret method it registered, a confidential client may use either (RFC 6749 §2.3.1)."""
        return self.token_endpoint_auth_method in self.SECRET_METHODS

    def authenticates(self, secret):
        """Whether secret is this confidential client's secret, compared in constant time; ours are ASCII."""
        if not (self.is_confidential and self.secret_digest and isinstance(secret, str) and secret
                and secret.isascii()):
            return False
        return hmac.compare_digest(digest(secret), self.secret_digest)

    def regenerate_secret(self):
        """Replace the secret, which stops working at once, and return the new one: the only time it is seen."""
        if not self.is_confidential:
            raise Refused("A public client has no secret")
        secret = self.new_secret()
        self.secret_digest = digest(secret)
        with writing():
            self.save(only=[Client.secret_digest])
            AuditEvent.record("client.secret_regenerated", self.owner, self)
        return secret

    @property
    def redirect_uris(self):
        return json.loads(self.redirect_uris_json)

    @redirect_uris.setter
    def redirect_uris(self, uris):
        self.redirect_uris_json = json.dumps(list(uris))

    @property
    def sends_back_to(self):
        """Where people are sent back to, by the first redirect URI (see destination)."""
        return destination(self.redirect_uris[0]) if self.redirect_uris else None

    @property
    def short_id(self):
        """Enough of the client ID to tell two apps of one name apart: a document's host, or six characters."""
        return self.document_host or self.client_id[:6]

    @property
    def document_host(self):
        return urlsplit(self.client_id).hostname if self.kind == self.DOCUMENT else None

    def allows_redirect(self, uri, trust=RedirectTrust()):
        """An exact match, or a loopback URI that differs from a registered one only in its port. A client that
        registered itself keeps only what may still be registered: trust the operator withdrew is gone."""
        if not isinstance(uri, str) or self.kind == self.SELF_REGISTERED and not self.registrable_redirect(uri, trust):
            return False
        if uri in self.redirect_uris:
            return True
        requested = loopback_parts(uri)
        if not requested or requested[1] == "0":
            return False
        return any((parts[0], parts[2]) == (requested[0], requested[2])
                   for parts in map(loopback_parts, self.redirect_uris) if parts)

    def redirects_without_asking(self, uri, trust=RedirectTrust()):
        """Whether an error found before the user decided may be sent to uri at once (RFC 9700 §4.11.2: only to
        redirect URIs the server trusts): a loopback one, on the user's own computer; https on a host the
        operator trusts; or one of the operator's apps. Not a native app's scheme: a deep link of the
        requester's choosing could make an app act."""
        return loopback_parts(uri) is not None or https_host(uri) in trust.hosts or self.kind == self.OPERATOR

    def change_app(self, name, redirect_uris):
        """Rename the app and replace its redirect URIs, cleaned as at registration."""
        self.name, self.redirect_uris = self.checked_name(name), redirect_uris
        with writing():
            self.save()
            AuditEvent.record("client.changed", self.owner, self, redirect_uris=" ".join(redirect_uris))

    def record_authorization(self, at=None):
        """Note that someone is consenting to this client now, which keeps housekeeping's hands off it for
        an hour; written at most every AUTHORIZATION_RECORDED_EVERY seconds, as that is close enough.
        Fixed SQL: every consent screen and approval runs it."""
        at = at or now()
        if self.last_authorized_at and 0 <= at - self.last_authorized_at < self.AUTHORIZATION_RECORDED_EVERY:
            return
        self.last_authorized_at = at
        db.execute_sql(f"UPDATE clients SET last_authorized_at = {db.param} WHERE id = {db.param}",
                       (self.last_authorized_at, self.id))

    def record_first_token(self, at):
        """Note, once, that the client obtained a token: from then on housekeeping never sweeps it.
        Fixed SQL: every token issued runs it."""
        if self.first_token_at is None:
            self.first_token_at = at
            db.execute_sql(f"UPDATE clients SET first_token_at = {db.param} WHERE id = {db.param}"
                           " AND first_token_at IS NULL", (at, self.id))

    def remove(self, by=None):
        """Delete the client and, in the same transaction, every token issued to it."""
        with writing():
            tokens = AccessToken.delete().where(AccessToken.oauth_client == self).execute()
            if self.delete_instance():
                AuditEvent.record("client.deleted", self.owner, self, tokens=tokens, by=by)

    @classmethod
    def make_room(cls, cap, at=None):
        """Whether one more self-registered client fits under cap of those that never obtained a token; if it
        would not, the oldest of them that is an hour old and no consent is waiting for goes first (what
        housekeeping would sweep soon anyway), so no one registering in a loop locks registration for everyone."""
        at = at or now()
        unused = cls.naming_themselves() & cls.first_token_at.is_null()
        if cls.select(cls.id).where(unused).limit(cap).count() < cap:
            return True
        evictable = (unused & (cls.created_at < at - cls.CONSENT_IN_FLIGHT_FOR)
                     & ~fn.EXISTS(AccessToken.select(AccessToken.id).where(AccessToken.oauth_client == cls.id))
                     & (cls.last_authorized_at.is_null() | (cls.last_authorized_at < at - cls.CONSENT_IN_FLIGHT_FOR)))
        oldest = cls.select(cls.id).where(evictable).order_by(cls.created_at).limit(1)
        return cls.delete().where(cls.id.in_(oldest)).execute() == 1

    @classmethod
    def sweep(cls, at=None):
        """Delete, in one statement, the clients that named themselves more than a day ago and never obtained
        a token, unless a consent is in flight; their (client_id, name)."""
        at = at or now()
        unused = (cls.naming_themselves() & (cls.created_at < at - cls.UNUSED_KEPT_FOR) & cls.first_token_at.is_null()
                  & ~fn.EXISTS(AccessToken.select(AccessToken.id).where(AccessToken.oauth_client == cls.id))
                  & (cls.last_authorized_at.is_null() | (cls.last_authorized_at < at - cls.CONSENT_IN_FLIGHT_FOR)))
        return list(cls.delete().where(unused).returning(cls.client_id, cls.name).tuples().execute())

    def registration(self):
        """The client's metadata as RFC 7591 §3.2.1 returns it: what is stored, and no nulls."""
        return {"client_id": self.client_id, "client_id_issued_at": self.created_at,
                "client_name": self.name, "redirect_uris": self.redirect_uris,
                "grant_types": ["authorization_code"], "response_types": ["code"],
                "token_endpoint_auth_method": self.token_endpoint_auth_method, "scope": self.scope}


# ---- AccessToken, with the bearer lookup and spent codes -----------------------------------------------------

BEARER_COLUMNS = "t.id, u.username, c.client_id, t.scope, t.resource, t.user_id, t.created_at, t.last_used_at"


class BearerToken(NamedTuple):
    """What a presented access token grants: who, through which client, for what."""
    id: int
    username: str
    client_id: str | None
    scope: str
    resource: str | None
    user_id: int
    created_at: int
    expires_at: int | None = None  # only when idle tokens expire (KEYFOB_IDLE_TOKEN_DAYS)


class AccessToken(BaseModel):
    digest = CharField(max_length=64, unique=True)
    display_prefix = CharField(max_length=16)
    user = ForeignKeyField(User, backref="access_tokens", on_delete="CASCADE")
    oauth_client = ForeignKeyField(Client, null=True, backref="access_tokens", on_delete="CASCADE",
                                   column_name="oauth_client_id")
    scope = CharField(max_length=32, default="read")
    resource = CharField(max_length=2048, null=True)
    code_jti = CharField(max_length=64, null=True, unique=True)
    description = CharField(max_length=255, null=True)
    created_at = IntegerField(default=now)
    last_used_at = IntegerField(null=True)
    created_from = CharField(max_length=64, null=True)  # the address of the request that made it
    last_used_from = CharField(max_length=64, null=True)  # the address it was last presented from, at the API

    MAX_LENGTH = 128
    USE_RECORDED_EVERY = 60
    BEARER_SQL = {param: f"SELECT {BEARER_COLUMNS} FROM access_tokens t JOIN users u ON u.id = t.user_id"
                         f" LEFT JOIN clients c ON c.id = t.oauth_client_id WHERE t.digest = {param}"
                  for param in ("?", "%s")}

    class Meta:
        table_name = "access_tokens"

    @classmethod
    def issue(cls, user, client=None, scope="read", resource=None, code_jti=None, description=None):
        """Mint a token; only its SHA-256 digest is stored, the plaintext lives on the returned row.
        Fixed SQL: every flow ends here."""
        kind = OAUTH_TOKEN if client else PERSONAL_TOKEN
        token = kind + secrets.token_urlsafe(32)
        fields = {"digest": digest(token), "display_prefix": token[:len(kind) + 6], "scope": scope,
                  "resource": resource, "code_jti": code_jti, "description": description, "created_at": now(),
                  "created_from": request_address()}
        columns = {**fields, "user_id": user.id, "oauth_client_id": client.id if client else None}
        inserted = db.execute_sql(f"INSERT INTO access_tokens ({', '.join(columns)}) VALUES"
                                  f" ({', '.join([db.param] * len(columns))}) RETURNING id", list(columns.values()))
        row = cls(id=inserted.fetchall()[0][0], user=user, oauth_client=client, **fields)
        row.token = token
        if client:
            client.record_first_token(fields["created_at"])
        return row

    @classmethod
    def redeem(cls, code, user, client):
        """The token for a code, minted once; a second redemption deletes the first's token (RFC 6749 §4.1.2)."""
        try:
            with writing():
                RedeemedCode.spend(code.jti)
                token = cls.issue(user, client, scope=code.scope, resource=code.resource, code_jti=code.jti)
                AuditEvent.record("token.issued", user, client, token=token.display_prefix, scope=token.scope,
                                  resource=token.resource)
                return token
        except IntegrityError:
            with writing():
                revoked = cls.delete().where(cls.code_jti == code.jti).execute()
                AuditEvent.record("code.replayed", user, client, revoked=revoked)
            return None

    @classmethod
    def create_personal(cls, user, scope, description):
        """A personal token, recorded with it."""
        with writing():
            token = cls.issue(user, scope=scope, description=description)
            AuditEvent.record("personal_token.created", user, token=token.display_prefix, scope=scope,
                              description=description)
        return token

    @classmethod
    def authenticate(cls, token, idle_days=0, address=None, at=None, audience=None):
        """The BearerToken a presented token stands for, else None; records its use (and address) at most once a
        minute. With idle_days, a token unused that long is refused and one in use expires that long after its last
        use. With audience (a test of the token's resource), a token for another resource is None, its use not
        recorded. Fixed SQL on the driver's cursor: every API call runs it; peewee's wrapper would double its cost."""
        stored = cls.stored_digest(token)
        if stored is None:
            return None
        return cls.presented(fetch_one(cls.BEARER_SQL[db.param], (stored,)), idle_days, address, at, audience)

    @classmethod
    def introspected_by(cls, client_id, token):
        """The client of client_id and the row of BEARER_COLUMNS the token stands for, each None if not stored, in one
        statement: a resource server introspects on each of its requests. Give the row to presented()."""
        fields = len(Client._meta.sorted_fields)
        row = fetch_one(cls.introspection_sql(db.param), (cls.stored_digest(token), client_id))
        if row is None:
            return None, None
        return Client.stored(row[:fields]), row[fields:] if row[fields] is not None else None

    @classmethod
    @lru_cache(maxsize=None)
    def introspection_sql(cls, param):
        return (f"SELECT {Client.column_list()}, {BEARER_COLUMNS} FROM clients"
                f" LEFT JOIN access_tokens t ON t.digest = {param} LEFT JOIN users u ON u.id = t.user_id"
                f" LEFT JOIN clients c ON c.id = t.oauth_client_id WHERE clients.client_id = {param}")

    @classmethod
    def stored_digest(cls, token):
        """The digest a presented token would be stored by, or None for what Keyfob never issues."""
        if not isinstance(token, str) or not token.startswith(SECRET) or len(token) > cls.MAX_LENGTH \
                or not token.isascii():
            return None
        return digest(token)

    @classmethod
    def presented(cls, row, idle_days=0, address=None, at=None, audience=None):
        """The BearerToken for a row of BEARER_COLUMNS, else None; as authenticate() says."""
        if row is None:
            return None
        at, last_use = at or now(), row[7] or row[6]
        if idle_days and at - last_use >= idle_days * DAY or audience and not audience(row[4]):
            return None
        if row[7] is None or at - row[7] >= cls.USE_RECORDED_EVERY:
            db.execute_sql(f"UPDATE access_tokens SET last_used_at = {db.param},"
                           f" last_used_from = COALESCE({db.param}, last_used_from) WHERE id = {db.param}",
                           (at, address, row[0]))
            last_use = at
        return BearerToken._make((*row[:7], last_use + idle_days * DAY if idle_days else None))

    @classmethod
    def connected_apps(cls, user):
        """The apps holding the user's tokens, by name; apps of the same name are told apart by their suffix."""
        apps = {}
        for token in (cls.select(cls, Client).join(Client).where(cls.user == user)
                      .order_by(cls.created_at.desc(), cls.id.desc())):
            apps.setdefault(token.oauth_client_id, ConnectedApp(token.oauth_client, [])).tokens.append(token)
        named = sorted(apps.values(), key=lambda app: (app.client.name.lower(), app.client.created_at))
        names = [app.client.name for app in named]
        return [app._replace(suffix=app.client.short_id if names.count(app.client.name) > 1 else None)
                for app in named]

    @classmethod
    def connected_app(cls, user, client_id):
        """One of the user's connected apps by client_id, else None."""
        return next((app for app in cls.connected_apps(user) if app.client.client_id == client_id), None)

    @classmethod
    def disconnect(cls, user, client, token_id=None):
        """Revoke the tokens the user granted the client (one connection's, with token_id), in one statement;
        how many there were."""
        condition = (cls.user == user) & (cls.oauth_client == client)
        one = cls.get_or_none(condition & (cls.id == token_id)) if token_id else None
        with writing():
            revoked = cls.delete().where(condition & (cls.id == token_id if token_id else True)).execute()
            if revoked:
                AuditEvent.record("app.disconnected", user, client, revoked=revoked,
                                  token=one.display_prefix if one else None)
        return revoked

    @classmethod
    def sweep_idle(cls, days, at=None):
        """Delete the tokens, personal and OAuth alike, last used (or, if never used, made) more than `days`
        days ago; how many. No days, no sweep."""
        if not days:
            return 0
        idle_since = (at or now()) - days * DAY
        return cls.delete().where(fn.COALESCE(cls.last_used_at, cls.created_at) < idle_since).execute()

    @classmethod
    def personal(cls, user):
        return list(cls.select().where((cls.user == user) & cls.oauth_client.is_null()).order_by(cls.created_at.desc()))

    @classmethod
    def personal_token(cls, user, token_id):
        """One of the user's personal tokens by id, else None."""
        if not 0 < token_id < 2 ** 63:
            return None
        return cls.get_or_none((cls.id == token_id) & (cls.user == user) & cls.oauth_client.is_null())

    @classmethod
    def revoke_personal(cls, user, token_id):
        """Delete one of the user's personal tokens by id; False if the user has no such token."""
        token = cls.personal_token(user, token_id)
        return bool(token and token.remove())

    @classmethod
    def matching(cls, token_or_prefix):
        """The tokens an operator means by a whole token, or by the start of a display prefix (as `token list`
        shows it)."""
        if not token_or_prefix or not token_or_prefix.isascii():
            return []
        if token_or_prefix.startswith(SECRET) and len(token_or_prefix) > 20:
            return list(cls.select().where(cls.digest == digest(token_or_prefix)))
        start = fn.SUBSTR(cls.display_prefix, 1, len(token_or_prefix))  # not LIKE, which ignores case
        return list(cls.select().where(start == token_or_prefix))

    @classmethod
    def revoke(cls, token, client=None):
        """Delete a token its presenter may revoke: a personal one by anyone, an OAuth one only by its client."""
        row = cls.get_or_none(cls.digest == digest(token))
        if row and (row.oauth_client_id is None or (client and row.oauth_client_id == client.id)):
            row.remove(by="holder")
            return True
        return False

    def remove(self, by=None):
        """Delete the token and record who lost it: its user on the pages, its holder (at the revocation endpoint
        or the API), or the operator. Whether it was still there."""
        with writing():
            if not self.delete_instance():
                return False
            AuditEvent.record("token.revoked" if self.oauth_client_id else "personal_token.revoked", self.user,
                              self.oauth_client, token=self.display_prefix, description=self.description, by=by)
        return True


class ConnectedApp(NamedTuple):
    """An app as the user who connected it sees it: the client and the user's tokens for it, one a connection,
    newest first."""
    client: Client
    tokens: list
    suffix: str | None = None  # when another connected app has the same name

    @property
    def first_authorized(self):
        return min(token.created_at for token in self.tokens)

    @property
    def last_use(self):
        """The most recently used token, or None if none was used."""
        return max((token for token in self.tokens if token.last_used_at), key=lambda token: token.last_used_at,
                   default=None)

    @property
    def scope(self):
        """The widest scope granted ("read" sorts before "read write")."""
        return max(token.scope for token in self.tokens)

    @property
    def resources(self):
        return sorted({token.resource for token in self.tokens if token.resource})


class RedeemedCode(BaseModel):
    """The jti of each code redeemed within its lifetime: a code stays spent after its token is gone,
    whether a replay or a revocation deleted it, so no racer or later replay can redeem it again."""
    jti = CharField(max_length=64, primary_key=True)
    redeemed_at = IntegerField(default=now, index=True)

    swept_at = 0  # when this process last forgot jtis

    class Meta:
        table_name = "redeemed_codes"

    @classmethod
    def spend(cls, jti, at=None):
        """Record the jti, or raise IntegrityError if it was spent. Fixed SQL: every code redeemed runs it.
        The jtis of codes expired a lifetime ago are forgotten at most once a lifetime by each process, not by every
        redemption (a statement of each token request)."""
        at = at or now()
        if not 0 <= at - cls.swept_at < AuthorizationCode.TTL:
            db.execute_sql(f"DELETE FROM redeemed_codes WHERE redeemed_at < {db.param}",
                           (at - 2 * AuthorizationCode.TTL,))
            cls.swept_at = at
        db.execute_sql(f"INSERT INTO redeemed_codes (jti, redeemed_at) VALUES ({db.param}, {db.param})", (jti, at))


# ---- Session ---------------------------------------------------------------------------------------------------

class Session(BaseModel):
    """A signed-in browser. Its cookie holds a random token and this row the token's digest, so signing out, a
    password change or removing the user ends the session here, and a copied cookie ends with it."""
    user = ForeignKeyField(User, backref="sessions", on_delete="CASCADE")
    token_digest = CharField(max_length=64, unique=True)
    user_check = CharField(max_length=16)  # the user's session_check at sign-in: a password changed since ends it
    signed_in_at = BigIntegerField(default=now, index=True)
    confirmed_at = BigIntegerField(default=now)  # the password last given: at sign-in, or to confirm an action

    LIFETIME = 12 * 60 * 60  # from signing in, however often the browser comes back
    RECENT = 10 * 60  # what outlives a session may be made without the password again (GitHub's "sudo mode")

    class Meta:
        table_name = "sessions"

    @classmethod
    def start(cls, user):
        """A new session for user; the token for the cookie (only its digest is stored)."""
        token = secrets.token_urlsafe(32)
        with writing():
            cls.create(user=user, token_digest=digest(token), user_check=user.session_check)
        return token

    @classmethod
    def find(cls, token, at=None):
        """The live session this cookie token names, with its user, else None. Fixed SQL: every page asks."""
        if not isinstance(token, str) or len(token) != 43:
            return None
        row = fetch_one(f"SELECT sessions.id, sessions.user_check, sessions.signed_in_at, sessions.confirmed_at,"
                        f" {User.column_list()} FROM sessions JOIN users ON users.id = sessions.user_id"
                        f" WHERE sessions.token_digest = {db.param} AND sessions.signed_in_at > {db.param}",
                        (digest(token), (at or now()) - cls.LIFETIME))
        if row is None:
            return None
        session_id, user_check, signed_in_at, confirmed_at, *user_values = row
        user = User.stored(user_values)
        if not hmac.compare_digest(user_check, user.session_check):  # a sign-in that raced a password change
            return None
        return stored_row(cls, {"id": session_id, "user_check": user_check, "signed_in_at": signed_in_at,
                                "confirmed_at": confirmed_at}, user=user)

    def end(self):
        Session.delete().where(Session.id == self.id).execute()

    @classmethod
    def end_all(cls, user):
        """End every session of the user's; how many there were."""
        return cls.delete().where(cls.user == user.id).execute()

    def is_recent(self, at=None):
        """Whether the password was given within RECENT seconds."""
        return 0 <= (at or now()) - self.confirmed_at < self.RECENT

    def confirm(self, password):
        """Whether password is the user's; if it is, the session counts as recent again, and if a wrong one was
        given, the user's Activity says so."""
        if User.authenticate(self.user.username, password) is None:
            if password:
                AuditEvent.record("password.confirm_failed", self.user)
            return False
        self.confirmed_at = now()
        with writing():
            self.save(only=[Session.confirmed_at])
        return True

    @classmethod
    def sweep(cls, at=None):
        """Forget the sessions past their lifetime; how many."""
        return cls.delete().where(cls.signed_in_at <= (at or now()) - cls.LIFETIME).execute()


# ---- AuditEvent ------------------------------------------------------------------------------------------------

class AuditEvent(BaseModel):
    """One thing that happened to an account or a client, appended and never changed: who, which client, when,
    from which address. Never a secret: a token appears by its display prefix, a failed sign-in by the name tried."""
    at = BigIntegerField(default=now)
    event = CharField(max_length=32)
    user_id = IntegerField(null=True)  # no foreign key: a removed user's history stays, under its username
    username = CharField(max_length=150, null=True)
    client_id = TextField(null=True)
    client_name = TextField(null=True)
    address = CharField(max_length=64, null=True)
    detail = TextField(default="{}")

    LOG = logging.getLogger("keyfob.audit")
    LIMITS = {"username": 150, "client_id": 2048, "client_name": 255, "address": 64}
    INSERT_SQL = {param: "INSERT INTO audit_events (at, event, user_id, username, client_id, client_name, address,"
                         f" detail) VALUES ({', '.join([param] * 8)})" for param in ("?", "%s")}

    class Meta:
        table_name = "audit_events"
        indexes = ((("user_id", "id"), False),)

    @classmethod
    def record(cls, event, user=None, client=None, username=None, **detail):
        """Append an event to the table and, as one JSON line, to the log. The address is the request's, if any;
        detail is a few short words (empty ones left out). Inside a transaction the row is part of the change: if
        it cannot be stored, the change is undone too. Alone, a failed write is logged, never raised.
        Fixed SQL: most changes record one."""
        detail = json.dumps({name: clean(value, 512) for name, value in detail.items() if value not in (None, "")})
        row = {"at": now(), "event": event, "user_id": user.id if user else None,
               "username": clean(user.username if user else username, cls.LIMITS["username"]),
               "client_id": clean(client.client_id, cls.LIMITS["client_id"]) if client else None,
               "client_name": clean(client.name, cls.LIMITS["client_name"]) if client else None,
               "address": clean(request_address(), cls.LIMITS["address"])}
        if cls.LOG.isEnabledFor(logging.INFO):
            line = json.dumps(row)
            cls.LOG.info(line if detail == "{}" else f"{line[:-1]}, {detail[1:]}")  # row and detail, one object
        try:
            db.execute_sql(cls.INSERT_SQL[db.param], [*row.values(), detail])
        except (DatabaseError, InterfaceError) as error:
            cls.LOG.warning("The audit event %s was not stored: %s", event, type(error).__name__)
            if db.in_transaction():
                raise

    @classmethod
    def recent(cls, limit=100, user=None, username=None, before=None):
        """The latest events (before an event's id, for the next page), newest first: a user's own, or those
        recorded under a username, or everyone's."""
        events = cls.select().order_by(cls.id.desc()).limit(limit)
        if before is not None:
            events = events.where(cls.id < before)
        if user is not None:  # SQLite may give a removed user's id to the next one: not their history
            events = events.where((cls.user_id == user.id) & (cls.username == user.username)
                                  & (cls.at >= user.created_at))
        if username is not None:
            events = events.where(cls.username == username)
        return list(events)

    @property
    def details(self):
        return json.loads(self.detail or "{}")


def clean(value, limit):
    """A value fit for the trail: printable, and no longer than its column (PostgreSQL refuses NUL and overlong text)."""
    return printable_name(value)[:limit] if isinstance(value, str) else value


# ---- Secret-key checks -----------------------------------------------------------------------------------------

class KeyMismatch(Refused):
    """This process's secret key is not the one the other processes on its database use."""


class SecretKeyCheck(BaseModel):
    """An HMAC of each secret key in use on this database, never the key itself."""
    digest = CharField(max_length=64, primary_key=True)
    created_at = IntegerField(default=now)

    PURPOSE = b"keyfob/secret key check"

    class Meta:
        table_name = "secret_key_checks"

    @classmethod
    def of(cls, key):
        return hmac.new(key.encode() if isinstance(key, str) else key, cls.PURPOSE, hashlib.sha256).hexdigest()

    @classmethod
    def confirm(cls, key, fallbacks=()):
        """Record key as this database's; raise KeyMismatch if the processes already on it use another
        key, as each would refuse the other's sessions and codes. A key the database knows as a fallback
        is a rotation: the new key joins, and keys no longer kept as fallbacks are forgotten."""
        current, kept = cls.of(key), {cls.of(fallback) for fallback in fallbacks}
        with writing():
            known = {row.digest for row in cls.select()}
            if known and current not in known and not known & kept:
                raise KeyMismatch(
                    "This database is in use with a different secret key. Every process on one database must "
                    "share one KEYFOB_SECRET_KEY; to change it, set the new key as KEYFOB_SECRET_KEY and the old "
                    "one in KEYFOB_SECRET_KEY_FALLBACKS, or run `keyfob keys reset` to make this key the only one.")
            cls.delete().where(cls.digest.not_in([current, *kept])).execute()
            if current not in known:
                cls.create(digest=current)

    @classmethod
    def reset(cls, key):
        """Make key the database's only key (after a lost key: whatever the others signed stops working)."""
        with writing():
            cls.delete().execute()
            cls.create(digest=cls.of(key))


# ---- AuthorizationCode -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AuthorizationCode:
    """A grant of 60 seconds, sealed (AES-GCM) into the code itself: nothing is stored until redemption."""
    client_id: str
    user_id: int
    redirect_uri: str
    scope: str
    code_challenge: str
    resource: str | None = None
    user_check: str = ""  # the approving user's session check: a later user given the same id is not them
    jti: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    issued_at: int = field(default_factory=now)

    TTL = 60
    CLOCK_SKEW = 5
    PURPOSE = b"keyfob/authorization codes"
    # The longest code: a 1,024-character document URL for client_id, a 262-character redirect URI (256 and a
    # loopback port) and a 2,048-character resource, every character of them one that JSON escapes, seals to
    # about 9,400 characters (tests/test_client_documents.py). The token endpoint takes a code up to this length.
    MAX_LENGTH = 10 * 1024
    SEALED = re.compile(rf"[A-Za-z0-9_-]{{40,{MAX_LENGTH}}}")

    def seal(self):
        nonce = os.urandom(12)
        payload = json.dumps(vars(self), separators=(",", ":")).encode()  # flat: asdict's deep copy is not needed
        return base64.urlsafe_b64encode(nonce + _code_cipher().encrypt(nonce, payload, self.PURPOSE)).rstrip(b"=").decode()

    @classmethod
    def unseal(cls, sealed, at=None):
        """The code, if it was sealed with our key and is under 60 seconds old; else None."""
        if not isinstance(sealed, str) or not cls.SEALED.fullmatch(sealed):
            return None
        try:
            raw = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
        except ValueError:
            return None
        code = next(filter(None, (cls._open(cipher, raw) for cipher in _code_ciphers())), None)
        if code is None:
            return None
        age = (at or time.time()) - code.issued_at
        return code if -cls.CLOCK_SKEW <= age < cls.TTL else None

    @classmethod
    def _open(cls, cipher, raw):
        try:
            return cls(**json.loads(cipher.decrypt(raw[:12], raw[12:], cls.PURPOSE)))
        except (ValueError, TypeError, InvalidTag):
            return None

    def verifies(self, verifier):
        """PKCE S256 (RFC 7636 §4.6): a well-formed verifier whose hash is the challenge."""
        if not isinstance(verifier, str) or not CODE_VERIFIER.fullmatch(verifier):
            return False
        return hmac.compare_digest(s256(verifier), self.code_challenge)


def _code_cipher():
    return _cipher_for(current_app.secret_key)


def _code_ciphers():
    """The current key's cipher, then those of retired keys: a code sealed just before a rotation
    still opens within its 60 seconds."""
    return [_code_cipher(), *map(_cipher_for, current_app.config.get("SECRET_KEY_FALLBACKS") or ())]


@lru_cache(maxsize=4)
def _cipher_for(secret_key):
    secret = secret_key.encode() if isinstance(secret_key, str) else secret_key
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=AuthorizationCode.PURPOSE).derive(secret)
    return AESGCM(key)


# ---- Housekeeping ----------------------------------------------------------------------------------------------

class Housekeeping(BaseModel):
    """When each daily task last ran, for every process of a deployment at once: the process whose update moves
    the time on runs the task; the others see it done."""
    task = CharField(max_length=32, primary_key=True)
    last_run_at = BigIntegerField(default=0)

    class Meta:
        table_name = "housekeeping"

    @classmethod
    def claim(cls, task, at=None):
        """Whether this process runs task now: it last ran a day ago or more, and no other process has claimed
        it since (one atomic UPDATE decides). Call it inside the task's transaction, so a failed run frees it."""
        at = at or now()
        cls.insert(task=task, last_run_at=0).on_conflict_ignore().execute()
        return cls.update(last_run_at=at).where((cls.task == task) & (cls.last_run_at <= at - DAY)).execute() == 1


def sweep_if_due(idle_token_days, at=None):
    """sweep(), if no process of the deployment has run it in the last day; else None."""
    with writing():
        return sweep(idle_token_days, at) if Housekeeping.claim("sweep", at) else None


def sweep(idle_token_days, at=None):
    """Remove the self-registered clients that never obtained a token (after a day, never while a consent
    is in flight) and the tokens idle for idle_token_days (0: none); the clients' (client_id, name) and the
    number of tokens. Each is one DELETE that checks its own conditions, so processes sweeping one database
    at once do no harm."""
    Session.sweep(at)
    return Client.sweep(at), AccessToken.sweep_idle(idle_token_days, at)
