"""What the account pages share: one way to ask before anything that cannot be undone."""
from flask import render_template


def confirmation(title, consequences, action, button, cancel):
    """The page that asks first: what will stop working, in sentences, and a button that posts to action."""
    return render_template("confirm.html", title=title, consequences=consequences, action=action, button=button,
                           cancel=cancel)
