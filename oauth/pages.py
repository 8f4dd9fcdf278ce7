"""What the account pages share: one way to ask before anything that cannot be undone."""
from flask import render_template


def confirmation(title, consequences, action, button, cancel, password=False, error=None):
    """The page that asks first: what will stop working, in sentences, and a button that posts to action (with
    the password again, if password and the user did not give it within 10 minutes)."""
    return render_template("confirm.html", title=title, consequences=consequences, action=action, button=button,
                           cancel=cancel, password=password, error=error), 401 if error else 200
