"""Changing one's own password; every other session ends with the old one."""
from flask import Blueprint, flash, redirect, render_template, request, url_for

from models import Refused
from oauth.authentication import current_user, login_required, sign_in
from oauth.limits import limiter

bp = Blueprint("passwords", __name__)


@bp.get("/my/password")
@login_required
def edit():
    """Show the form: the current password, and the new one twice."""
    return render_template("passwords/edit.html", error=None)


@bp.post("/my/password")
@login_required
@limiter.limit("10/minute", deduct_when=lambda response: response.status_code == 422)  # guesses of the current one
def update():
    """Change the password; the session goes on under it, and every other session ends."""
    new = request.form.get("password", "")
    if new != request.form.get("password_again", ""):
        return render_template("passwords/edit.html", error="The two new passwords do not match."), 422
    try:
        current_user().change_password(new, current=request.form.get("current_password", ""))
    except Refused as refusal:
        return render_template("passwords/edit.html", error=f"{refusal}."), 422
    sign_in(current_user())
    flash("Your password is changed. Every other session of yours is signed out.", "notice")
    return redirect(url_for("home.show"))
