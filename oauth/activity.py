"""Activity: the signed-in user's own events from the audit trail, in words."""
from flask import Blueprint, render_template, request

from models import GRANTS, AuditEvent, scope_words
from oauth.authentication import current_user, login_required

bp = Blueprint("activity", __name__)

SHOWN = 50  # a page
FOLDED_WITHIN = 60  # seconds between failed sign-ins shown as one line
WORDS = {"sign_in.failed": "Someone failed to sign in as you",
         "signed_in": "You signed in",
         "signed_out": "You signed out",
         "signed_out.everywhere": "You signed out everywhere",
         "password.confirm_failed": "A wrong password was given to confirm an action while you were signed in",
         "password.changed": "Your password was changed",
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
    """The signed-in user's events, newest first, a page at a time; repeated failed sign-ins fold into one line."""
    before = request.args.get("before", type=int)
    events = AuditEvent.recent(SHOWN + 1, user=current_user(), before=before if before and 0 < before < 2 ** 63 else None)
    page = events[:SHOWN]
    lines = [(event, describe(event), count) for event, count in folded(page)]
    return render_template("activity/index.html", lines=lines, older=page[-1].id if len(events) > SHOWN else None,
                           paged=before is not None)


def folded(events):
    """(event, how many) for each line: failed sign-ins less than a minute apart from one address are one line."""
    lines = []
    for event in events:
        previous = lines[-1][0] if lines else None
        if previous and event.event == previous.event == "sign_in.failed" and event.address == previous.address \
                and previous.at - event.at <= FOLDED_WITHIN:
            lines[-1] = (event, lines[-1][1] + 1)  # the line keeps the earliest time of its run
        else:
            lines.append((event, 1))
    return lines


def describe(event):
    """The event as a sentence; the names in it are escaped by the template like any other text."""
    details = event.details
    scope = details.get("scope") if details.get("scope") in GRANTS else "read"
    words = WORDS.get(event.event, event.event).format(app=event.client_name or "an app", scope=scope_words(scope),
                                                       description=details.get("description", ""))
    return f"{words} ({BY[details['by']]})" if details.get("by") in BY else words
