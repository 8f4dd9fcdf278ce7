"""Sign-in and sign-out for the people who approve apps."""
import time

from flask import Blueprint, flash, redirect, render_template, request, session, url_for

from models import AuditEvent, Session, User, writing
from oauth.authentication import current_session, current_user, login_required, sign_in, sign_out
from oauth.limits import limiter
from oauth.pages import confirmation

bp = Blueprint("sessions", __name__)


def submitted_username():
    username = request.form.get("username", "")
    return username.strip().lower()[:150] or "-"


def failed(response):
    """Only a failed sign-in counts against the limits: they stop guessing, not people signing in again."""
    return response.status_code == 401


@bp.get("/session/new")
def new():
    """Show the sign-in form."""
    return render_template("sessions/new.html", username="")


@bp.post("/session")
@limiter.limit("10/minute", deduct_when=failed)
@limiter.limit("5/minute", key_func=submitted_username, scope="sign-in per username", deduct_when=failed)
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
    AuditEvent.record("signed_in", user)
    return redirect(return_to if is_local_path(return_to) else url_for("home.show"))


@bp.post("/session/destroy")
def destroy():
    """Sign out."""
    if current_user():
        AuditEvent.record("signed_out", current_user())
    sign_out()
    session.clear()
    flash("You are signed out.", "notice")
    return redirect(url_for("sessions.new"))


@bp.get("/my/sessions/end")
@login_required
def confirm_end_all():
    """Ask before signing out everywhere."""
    return confirmation("Sign out everywhere?", [
        "Every browser signed in as you is signed out at once, this one too: a copied session cookie stops working.",
        "Apps you connected keep their access; disconnect them on Connected apps."],
        url_for(".end_all"), "Sign out everywhere", url_for("activity.index"))


@bp.post("/my/sessions/end")
@login_required
def end_all():
    """End every session of the user's, this one included."""
    with writing():
        ended = Session.end_all(current_user())
        AuditEvent.record("signed_out.everywhere", current_user(), sessions=ended)
    session.clear()
    flash("You are signed out everywhere.", "notice")
    return redirect(url_for("sessions.new"))


def is_local_path(path):
    return isinstance(path, str) and path.startswith("/") and not path.startswith("//") and "\\" not in path


@bp.app_context_processor
def signed_in_user():
    return {"current_user": current_user(),
            "password_is_recent": lambda: current_session() is not None and current_session().is_recent()}


@bp.errorhandler(429)
def too_many_failures(error):
    """The sign-in form again, with the name typed, saying when to try again."""
    reset_at = getattr(limiter.current_limit, "reset_at", None)
    seconds = max(1, round(reset_at - time.time())) if reset_at else 60
    wait = f"{seconds} seconds" if seconds < 90 else f"{round(seconds / 60)} minutes"
    flash(f"Too many failed sign-ins for this name or from this address. Try again in {wait}.", "error")
    return render_template("sessions/new.html", username=request.form.get("username", "")[:150]), 429, \
        {"Retry-After": str(seconds)}
