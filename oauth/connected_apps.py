"""Connected apps: the clients holding a user's tokens, each connection of them, and disconnecting."""
from flask import Blueprint, abort, flash, redirect, render_template, url_for

from models import SCOPES, AccessToken, when
from oauth import resources
from oauth.authentication import current_user, login_required
from oauth.pages import confirmation

bp = Blueprint("connected_apps", __name__)


@bp.get("/my/connected_apps")
@login_required
def index():
    """List the apps that hold tokens for the signed-in user."""
    return render_template("connected_apps/index.html", apps=AccessToken.connected_apps(current_user()),
                           resources=resources())


@bp.get("/my/connected_apps/<path:client_id>")
@login_required
def show(client_id):
    """An app's connections: one token each, when it was made and last used, and from where."""
    return render_template("connected_apps/show.html", app=find_connected_app(client_id), resources=resources())


@bp.get("/my/connected_apps/<path:client_id>/disconnect")
@login_required
def confirm_destroy(client_id):
    """Ask before disconnecting an app."""
    app = find_connected_app(client_id)
    connections = f"its {len(app.tokens)} connections" if len(app.tokens) > 1 else "its connection"
    return confirmation(f"Disconnect {named(app)}?", [
        f"{named(app)} loses {connections} at once: its next request is refused, and it can no longer "
        f"{lost(app.scope)}.", "To use it again you will have to approve it again."],
        url_for(".destroy", client_id=client_id), "Disconnect", url_for(".show", client_id=client_id))


@bp.post("/my/connected_apps/<path:client_id>/disconnect")
@login_required
def destroy(client_id):
    """Disconnect an app: revoke every token the user granted it."""
    app = find_connected_app(client_id)
    AccessToken.disconnect(current_user(), app.client)
    flash(f"{named(app)} is disconnected: its access is revoked.", "notice")
    return redirect(url_for(".index"))


@bp.get("/my/connected_apps/<path:client_id>/tokens/<int:token_id>/disconnect")
@login_required
def confirm_destroy_token(client_id, token_id):
    """Ask before disconnecting one connection of an app."""
    app, token = find_connection(client_id, token_id)
    return confirmation(f"Disconnect this connection of {named(app)}?", [
        f"The token {token.display_prefix}…, which {app.client.name} received on {when(token.created_at)}, is revoked "
        f"at once: whatever uses it can no longer {lost(token.scope)}.", what_stays(app)],
        url_for(".destroy_token", client_id=client_id, token_id=token_id), "Disconnect this one",
        url_for(".show", client_id=client_id))


@bp.post("/my/connected_apps/<path:client_id>/tokens/<int:token_id>/disconnect")
@login_required
def destroy_token(client_id, token_id):
    """Disconnect one connection: revoke its token."""
    app, token = find_connection(client_id, token_id)
    AccessToken.disconnect(current_user(), app.client, token.id)
    flash(f"One connection of {named(app)}, {token.display_prefix}…, is disconnected.", "notice")
    return redirect(url_for(".show", client_id=client_id) if len(app.tokens) > 1 else url_for(".index"))


def find_connected_app(client_id):
    """The app, if it holds the user's tokens; anyone else's connection is a 404 like a missing one."""
    return AccessToken.connected_app(current_user(), client_id) or abort(404)


def find_connection(client_id, token_id):
    app = find_connected_app(client_id)
    return app, next((token for token in app.tokens if token.id == token_id), None) or abort(404)


def named(app):
    """The app's name, with the start of its client ID when another connected app has the same name."""
    return f"{app.client.name} ({app.suffix})" if app.suffix else app.client.name


def what_stays(app):
    """After one connection goes, in a sentence."""
    others = len(app.tokens) - 1
    if not others:
        return f"It is {app.client.name}'s only connection: the app is disconnected."
    return "Its other connection keeps working." if others == 1 else f"Its other {others} connections keep working."


def lost(scope):
    """What a token's scope let an app do, as the end of a sentence."""
    return " or ".join(SCOPES[word][0].lower() + SCOPES[word][1:] for word in scope.split(" "))
