"""Personal access tokens: created by a signed-in user, shown once, listed by prefix, revoked."""
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from models import GRANTS, AccessToken, printable_name
from oauth import forbid_caching
from oauth.authentication import current_user, login_required, password_guesses, password_refusal
from oauth.pages import confirmation

bp = Blueprint("access_tokens", __name__)
bp.after_request(forbid_caching)  # a new token is shown on the page that answers its form


@bp.get("/my/access_tokens")
@login_required
def index():
    """List the user's personal tokens, with a form for a new one."""
    return render_template("access_tokens/index.html", tokens=AccessToken.personal(current_user()), scopes=GRANTS,
                           description="", error=None)


@bp.post("/my/access_tokens")
@login_required
@password_guesses
def create():
    """Mint a personal token and show it, this once (a token outlives the session: the password again, if the
    user signed in more than 10 minutes ago)."""
    description, scope = printable_name(request.form.get("description", "")), request.form.get("scope")
    error = ("Describe what the token is for (at most 255 characters)." if not 0 < len(description) <= 255
             else "Choose read, or read and write." if scope not in GRANTS else None)
    refusal = None if error else password_refusal()
    if error or refusal:
        return render_template("access_tokens/index.html", tokens=AccessToken.personal(current_user()), scopes=GRANTS,
                               description=description[:255], scope=scope, error=error or refusal), 401 if refusal else 422
    token = AccessToken.create_personal(current_user(), scope, description)
    return render_template("access_tokens/created.html", token=token), 201


@bp.get("/my/access_tokens/<int:token_id>/revoke")
@login_required
def confirm_destroy(token_id):
    """Ask before revoking a personal token."""
    token = AccessToken.personal_token(current_user(), token_id) or abort(404)
    return confirmation(f"Revoke “{token.description}”?", [
        f"The token {token.display_prefix}… stops working at once: whatever uses it is refused from its next request.",
        "A revoked token cannot be brought back; make a new one if you need one."],
        url_for(".destroy", token_id=token_id), "Revoke", url_for(".index"))


@bp.post("/my/access_tokens/<int:token_id>/revoke")
@login_required
def destroy(token_id):
    """Revoke one of the user's personal tokens."""
    if not AccessToken.revoke_personal(current_user(), token_id):
        abort(404)
    flash("The token is revoked.", "notice")
    return redirect(url_for("access_tokens.index"))
