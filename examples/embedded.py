"""A Flask app that mounts Keyfob and protects its own routes with it; Keyfob needs its public URL to start:

    KEYFOB_ISSUER=http://127.0.0.1:5000 flask --app examples/embedded.py run
"""
from flask import g

from app import create_app
from oauth.authentication import require_token

app = create_app()  # Keyfob's sign-in, consent, token, discovery and account pages, and your routes beside them


@app.get("/reports")
@require_token("read")
def reports():
    return {"owner": g.access_token.username, "reports": []}


@app.post("/reports")
@require_token("write")
def add_report():
    return {"created_by": g.access_token.username}, 201
