"""Changing one's own password: the current one first, the rules of a new one, and every other session ends."""
import pytest

from actions import PASSWORD, Actions
from models import User

NEW = "a much better passphrase"


def change(client, actions, current=PASSWORD, password=NEW, again=None):
    form = actions.csrf_token(client.get("/my/password"))
    return client.post("/my/password", data={"current_password": current, "password": password,
                                              "password_again": password if again is None else again,
                                              "csrf_token": form})


def test_a_changed_password_signs_in_and_signs_out_every_other_session(app, client, actions, signed_in):
    elsewhere = app.test_client()
    Actions(elsewhere).sign_in()
    assert elsewhere.get("/").status_code == 200
    changed = change(client, actions)
    assert changed.status_code == 302 and changed.location == "/"
    assert "Every other session of yours is signed out" in client.get("/").text
    assert elsewhere.get("/").status_code == 302  # its cookie carried the old password's check
    assert Actions(app.test_client()).sign_in(password=NEW).status_code == 302
    assert Actions(app.test_client()).sign_in(password=PASSWORD).status_code == 401
    assert "Your password was changed" in client.get("/my/activity").text


@pytest.mark.parametrize("fields, message", [
    ({"current": "not it at all"}, "The current password is not right."),
    ({"current": ""}, "The current password is not right."),
    ({"again": NEW + "!"}, "The two new passwords do not match."),
    ({"password": "short1"}, "The password must have at least 8 characters."),
    ({"password": "é" * 513}, "The password must be at most 1,024 bytes long."),
    ({"password": "has a NUL \x00 in it"}, "The password must not be empty or contain NUL characters."),
    ({"password": ""}, "The password must not be empty or contain NUL characters.")])
def test_a_password_change_that_cannot_be_made_says_why_and_changes_nothing(app, client, actions, signed_in,
                                                                             fields, message):
    before = User.get_by_id(signed_in.id).password_digest
    refused = change(client, actions, **fields)
    assert refused.status_code == 422 and message in refused.text
    assert User.get_by_id(signed_in.id).password_digest == before and client.get("/").status_code == 200


def test_unicode_and_control_characters_are_a_password_like_any_other(app, client, actions, signed_in):
    assert change(client, actions, password="naïve\u202e\tpässwörd 🔑").status_code == 302
    assert Actions(app.test_client()).sign_in(password="naïve\u202e\tpässwörd 🔑").status_code == 302


def test_changing_a_password_needs_sign_in_and_a_csrf_token(client, user):
    assert client.get("/my/password").location == "/session/new"
    assert client.post("/my/password", data={"current_password": PASSWORD, "password": NEW,
                                              "password_again": NEW}).status_code == 400
    assert User.get_by_id(user.id).password_digest == user.password_digest
