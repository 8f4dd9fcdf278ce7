"""Activity: the signed-in user's own events from the audit trail, in words."""
from flask import Blueprint, render_template

from models import GRANTS, AuditEvent, scope_words
from oauth.authentication import current_user, login_required

bp = Blueprint("activity", __name__)

SHOWN = 100
WORDS = {"sign_in.failed": "Someone failed to sign in as you",
         "consent.granted": "You approved {app} to {scope}",
         "consent.denied": "You denied {app}",
         "token.issued": "{app} received an access token to {scope}",
         "code.replayed": "{app} presented a used authorization code again, so its token was revoked",
         "token.revoked": "An access token of {app} was revoked",
         "app.disconnected": "You disconnected {app}",
         "personal_token.created": "You created the personal token “{description}” to {scope}",
         "personal_token.revoked": "The personal token “{description}” was revoked",
         "client.registered": "The app {app} was registered",
         "client.changed": "The settings of the app {app} were changed",
         "client.secret_regenerated": "The app {app} got a new client secret",
         "client.deleted": "The app {app} was deleted, with every token issued to it"}
BY = {"operator": "by the operator", "holder": "by whoever held it"}


@bp.get("/my/activity")
@login_required
def index():
    """List the latest events of the signed-in user's account, newest first."""
    events = AuditEvent.recent(SHOWN, user=current_user())
    return render_template("activity/index.html", events=[(event, describe(event)) for event in events],
                           capped=len(events) == SHOWN)


def describe(event):
    """The event as a sentence; the names in it are escaped by the template like any other text."""
    details = event.details
    scope = details.get("scope") if details.get("scope") in GRANTS else "read"
    words = WORDS.get(event.event, event.event).format(app=event.client_name or "an app", scope=scope_words(scope),
                                                       description=details.get("description", ""))
    return f"{words} ({BY[details['by']]})" if details.get("by") in BY else words
