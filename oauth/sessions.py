"""Sign-in and sign-out for the people who approve apps."""
from flask import Blueprint, flash, redirect, render_template, request, session, url_for

from models import AuditEvent, User
from oauth import limiter
from oauth.authentication import current_user, sign_in

bp = Blueprint("sessions", __name__)


def submitted_username():
    username = request.form.get("username", "")
    return username.strip().lower()[:150] or "-"


@bp.get("/session/new")
def new():
    """Show the sign-in form."""
    return render_template("sessions/new.html", username="")


@bp.post("/session")
@limiter.limit("10/minute")
@limiter.limit("5/minute", key_func=submitted_username, scope="sign-in per username")
def create():
    """Sign in, then go back to where the browser was going (an authorization request, usually)."""
    username, password = request.form.get("username", ""), request.form.get("password", "")
    user = User.authenticate(username.strip(), password) if username and password else None
    if user is None:
        # Only a name that is someone's is recorded: people type passwords into the username field.
        AuditEvent.record("sign_in.failed", User.named(username.strip()))
        flash("That username and password do not match.", "error")
        return render_template("sessions/new.html", username=username[:150]), 401
    return_to = session.get("return_to")
    sign_in(user)
    return redirect(return_to if is_local_path(return_to) else url_for("home.show"))


@bp.post("/session/destroy")
def destroy():
    """Sign out."""
    session.clear()
    flash("You are signed out.", "notice")
    return redirect(url_for("sessions.new"))


def is_local_path(path):
    return isinstance(path, str) and path.startswith("/") and not path.startswith("//") and "\\" not in path


@bp.app_context_processor
def signed_in_user():
    return {"current_user": current_user()}
