"""Connected apps: the clients holding a user's tokens, and disconnecting them."""
from flask import Blueprint, abort, flash, redirect, render_template, url_for

from models import AccessToken
from oauth.authentication import current_user, login_required

bp = Blueprint("connected_apps", __name__)


@bp.get("/my/connected_apps")
@login_required
def index():
    """List the apps that hold tokens for the signed-in user."""
    return render_template("connected_apps/index.html", apps=AccessToken.connected_apps(current_user()))


@bp.get("/my/connected_apps/<path:client_id>")
@login_required
def show(client_id):
    """Ask before disconnecting an app."""
    return render_template("connected_apps/show.html", app=find_connected_app(client_id))


@bp.post("/my/connected_apps/<path:client_id>/disconnect")
@login_required
def destroy(client_id):
    """Disconnect an app: revoke every token the user granted it."""
    app = find_connected_app(client_id)
    AccessToken.disconnect(current_user(), app)
    flash(f"{app.name} is disconnected: its access is revoked.", "notice")
    return redirect(url_for("connected_apps.index"))


def find_connected_app(client_id):
    """The app, if it holds the user's tokens; anyone else's connection is a 404 like a missing one."""
    app = next((app for app in AccessToken.connected_apps(current_user()) if app.client_id == client_id), None)
    return app or abort(404)
