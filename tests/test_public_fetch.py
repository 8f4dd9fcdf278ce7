"""The fetch that server-side request forgery cannot steer: how its slots are held."""
import socket
import threading
import time
from urllib.parse import urlsplit

import pytest

from oauth.public_fetch import NotNow, Slots, fetch


def test_a_name_lookup_that_outlives_the_deadline_holds_its_slot_until_it_returns(app):
    slots, answering = Slots(total=1, each=1), threading.Event()

    def hanging_resolver(*args, **kwargs):
        answering.wait(10)
        return socket.getaddrinfo(*args, **kwargs)

    slot, started = slots.take("alice"), time.monotonic()
    with app.app_context(), pytest.raises(NotNow, match="does not resolve to public addresses only"):
        try:
            fetch(urlsplit("https://localhost/client.json"), started + 0.2, slot, hanging_resolver)
        finally:
            slot.let_go()
    assert time.monotonic() - started < 1  # the page is answered at the deadline...
    assert slots.take("bob") is None  # ...while the lookup still counts

    answering.set()
    deadline = time.monotonic() + 3
    while (freed := slots.take("bob")) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert freed is not None


def test_a_holder_gets_at_most_its_share_of_the_slots():
    slots = Slots(total=3, each=2)
    alices = [slots.take("alice") for _ in range(3)]
    assert alices[2] is None and slots.take("bob") is not None and slots.take("carol") is None
    alices[0].let_go()
    assert slots.take("carol") is not None
