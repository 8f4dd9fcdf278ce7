"""The signed-in home page."""
from flask import Blueprint, render_template

from oauth import issuer
from oauth.authentication import login_required

bp = Blueprint("home", __name__)


@bp.get("/")
@login_required
def show():
    """Say who is signed in and how to point an MCP client here."""
    return render_template("home/show.html", issuer=issuer())
