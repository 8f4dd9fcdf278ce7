"""What tests do through the Flask test client, as flaskr's AuthActions: sign in, read a form and a redirect,
approve, register. The constants are the fixtures' own, importable for module-level parametrize lists."""
import re
from urllib.parse import parse_qs, urlsplit

ISSUER = "http://localhost"
PASSWORD = "correct horse battery staple"
REDIRECT_URI = "http://127.0.0.1:8765/callback"


class Actions:
    """A person's and an MCP client's steps, taken through one test client."""

    def __init__(self, client):
        self.client = client

    @staticmethod
    def csrf_token(page):
        """The CSRF token in a page's form (of a test client's response or an httpx2 one)."""
        return re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1]

    @staticmethod
    def query(response):
        """The query of a redirect's Location, one value per name."""
        return {name: values[0] for name, values in parse_qs(urlsplit(response.headers["Location"]).query).items()}

    def sign_in(self, username="alice", password=PASSWORD):
        token = self.csrf_token(self.client.get("/session/new"))
        return self.client.post("/session", data={"username": username, "password": password, "csrf_token": token})

    def approve(self, params, decision="approve"):
        """Open the consent screen for params and press a button; returns the redirect response."""
        page = self.client.get("/oauth/authorization/new", query_string=params)
        assert page.status_code == 200, page.text
        return self.client.post("/oauth/authorization",
                                data={**params, "decision": decision, "csrf_token": self.csrf_token(page)})

    def register(self, client_name, redirect_uri=REDIRECT_URI):
        """Register a public client by JSON (RFC 7591), as an MCP client does; returns the response."""
        return self.client.post("/oauth/clients", json={"client_name": client_name, "redirect_uris": [redirect_uri]})
