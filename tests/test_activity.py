"""The Activity page: a user's own events in words, failed sign-ins folded, a page at a time."""
import pytest

from models import AuditEvent, User, now


@pytest.fixture
def signed_in(signed_in):
    """Signed in as a user added a day ago, so that the events recorded below are theirs."""
    User.update(created_at=now() - 86_400).where(User.id == signed_in.id).execute()
    return signed_in


def record(user, event, count, at, address="203.0.113.5"):
    for offset in range(count):
        AuditEvent.create(at=at + offset, event=event, user_id=user.id, username=user.username, address=address,
                          detail="{}")


def test_failed_sign_ins_within_a_minute_from_one_address_are_one_line(client, signed_in):
    record(signed_in, "sign_in.failed", 4, now() - 1000)          # four within a minute: one line
    record(signed_in, "sign_in.failed", 1, now() - 500)           # a minute later: another
    record(signed_in, "sign_in.failed", 2, now() - 400, "198.51.100.1")  # another address: another line
    page = client.get("/my/activity").text
    assert page.count("Someone failed to sign in as you") == 3
    assert "Someone failed to sign in as you (4 times within a minute)" in page
    assert "Someone failed to sign in as you (2 times within a minute)" in page


def test_activity_comes_fifty_lines_a_page_newest_first(client, signed_in):
    for minute in range(120):
        AuditEvent.create(at=now() - 10_000 + minute * 60, event="signed_out", user_id=signed_in.id,
                          username=signed_in.username, address="203.0.113.5", detail="{}")
    first = client.get("/my/activity").text
    assert first.count("<tr>") == 51  # the header and 50 events, the newest first: this sign-in among them
    second = client.get(f"/my/activity?before={older_than(first)}").text
    assert second.count("<tr>") == 51 and 'href="/my/activity">Newest</a>' in second
    third = client.get(f"/my/activity?before={older_than(second)}").text
    assert third.count("<tr>") == 1 + 121 - 100 and "Older events" not in third
    for odd in ("0", "-5", "x", "9" * 40):
        assert client.get(f"/my/activity?before={odd}").status_code == 200


def older_than(page):
    """The event id the page's "Older events" link starts from."""
    return page.split('href="/my/activity?before=')[1].split('"')[0]
