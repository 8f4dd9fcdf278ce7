"""OAuth apps a user registers here: public or confidential, with the secret shown once."""
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from models import Client, Refused
from oauth import forbid_caching, redirect_trust
from oauth.authentication import current_user, login_required, password_guesses, password_refusal
from oauth.pages import confirmation

bp = Blueprint("apps", __name__)
bp.after_request(forbid_caching)  # a confidential app's secret is shown on the page that makes it

TYPES = dict(zip(Client.APP_TYPES, ("Public: a desktop, CLI or browser app that cannot keep a secret",
                                    "Confidential: a server that keeps a client secret")))


@bp.get("/my/apps")
@login_required
def index():
    """List the user's apps, with a form to register another."""
    return render_template("apps/index.html", apps=Client.owned_by(current_user()), kinds=TYPES, form={}, errors=[])


@bp.post("/my/apps")
@login_required
@password_guesses
def create():
    """Register an app; a confidential one gets a secret, shown this once (the password again, if the user
    signed in more than 10 minutes ago: a secret outlives the session)."""
    name, uris, app_type = submitted_app()
    try:
        Client.validate_app(name, uris, redirect_trust(), app_type=app_type)
    except Refused as refusal:
        return render_template("apps/index.html", apps=Client.owned_by(current_user()), kinds=TYPES,
                               form=request.form, errors=refusal.reasons), 422
    refusal = password_refusal() if app_type == "confidential" else None
    if refusal:
        return render_template("apps/index.html", apps=Client.owned_by(current_user()), kinds=TYPES,
                               form=request.form, errors=[refusal]), 401
    app = Client.registered_by_user(current_user(), name, uris, confidential=app_type == "confidential")
    if app.is_confidential:
        return render_template("apps/secret.html", app=app, secret=app.secret), 201
    flash(f"{app.name} is registered.", "notice")
    return redirect(url_for("apps.show", client_id=app.client_id))


@bp.get("/my/apps/<client_id>")
@login_required
def show(client_id):
    """Show an app's credentials and settings, for editing."""
    app = find_app(client_id)
    return render_template("apps/show.html", app=app, form={"name": app.name, "redirect_uris": "\n".join(app.redirect_uris)},
                           errors=[])


@bp.post("/my/apps/<client_id>")
@login_required
def update(client_id):
    """Change an app's name and redirect URIs (validated like registration)."""
    app = find_app(client_id)
    name, uris, _ = submitted_app()
    try:
        Client.validate_app(name, uris, redirect_trust())
    except Refused as refusal:
        return render_template("apps/show.html", app=app, form=request.form, errors=refusal.reasons), 422
    app.change_app(name, uris)
    flash("Saved.", "notice")
    return redirect(url_for("apps.show", client_id=client_id))


@bp.get("/my/apps/<client_id>/secret")
@login_required
def confirm_regenerate_secret(client_id):
    """Ask before replacing a confidential app's secret."""
    app = find_confidential_app(client_id)
    return secret_confirmation(app)


@bp.post("/my/apps/<client_id>/secret")
@login_required
@password_guesses
def regenerate_secret(client_id):
    """Replace a confidential app's secret; the old one stops working at once (the password again, if the
    user signed in more than 10 minutes ago)."""
    app = find_confidential_app(client_id)
    refusal = password_refusal()
    if refusal:
        return secret_confirmation(app, refusal)
    return render_template("apps/secret.html", app=app, secret=app.regenerate_secret(), regenerated=True)


def secret_confirmation(app, error=None):
    return confirmation(f"Generate a new secret for {app.name}?", [
        f"The secret {app.name} uses now stops working at once: every server holding it is refused until it is "
        "given the new one.", "The new secret is shown once, on the next page."],
        url_for(".regenerate_secret", client_id=app.client_id), "Generate a new secret",
        url_for(".show", client_id=app.client_id), password=True, error=error)


@bp.get("/my/apps/<client_id>/delete")
@login_required
def confirm_destroy(client_id):
    """Ask before deleting an app."""
    app = find_app(client_id)
    return confirmation(f"Delete {app.name}?", [
        "The app is removed, and every token issued to it — for every person who connected it — is revoked at once."],
        url_for(".destroy", client_id=client_id), "Delete app", url_for(".show", client_id=client_id))


@bp.post("/my/apps/<client_id>/delete")
@login_required
def destroy(client_id):
    """Delete the app and every token issued to it, in one transaction."""
    app = find_app(client_id)
    app.remove()
    flash(f"{app.name} is deleted, and every token issued to it is revoked.", "notice")
    return redirect(url_for("apps.index"))


def submitted_app():
    lines = request.form.get("redirect_uris", "").splitlines()
    return request.form.get("name", "").strip(), [line.strip() for line in lines if line.strip()], request.form.get("kind")


def find_app(client_id):
    """The user's own app; anyone else's is a 404 like a missing one."""
    app = Client.find_by("client_id", client_id)
    return app if app and app.owner_id == current_user().id else abort(404)


def find_confidential_app(client_id):
    app = find_app(client_id)
    return app if app.is_confidential else abort(404)
