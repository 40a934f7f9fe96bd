"""calendarList.list: paging and incremental sync.

Sources: the discovery document (calendar.v3.json), calendarList.list parameters maxResults
("By default the value is 100 entries. The page size can never be larger than 250 entries."),
showDeleted/showHidden (default False) and syncToken ("only entries that have changed since
then [...] All entries deleted and hidden since the previous list request will always be in the
result set and it is not allowed to set showDeleted neither showHidden to False [...] If the
syncToken expires, the server will respond with a 410 GONE"), and the CalendarList schema
(nextPageToken "Omitted if no further results are available, in which case nextSyncToken is
provided").
"""

import pytest
from googleapiclient.errors import HttpError

from calsupport import ALICE, BOB, assert_google_error


def list_pages(service, **kwargs) -> list[dict]:
    pages = []
    request = service.calendarList().list(**kwargs)
    while request is not None:
        page = request.execute()
        pages.append(page)
        request = service.calendarList().list_next(request, page)
        assert len(pages) < 100, "runaway paging"
    for page in pages[:-1]:
        assert "nextPageToken" in page and "nextSyncToken" not in page, page
    assert "nextSyncToken" in pages[-1] and "nextPageToken" not in pages[-1], pages[-1]
    return pages


def sync(service, **kwargs) -> tuple[dict, str]:
    pages = list_pages(service, **kwargs)
    items = {}
    for page in pages:
        for item in page.get("items", []):
            assert item["id"] not in items, f"{item['id']} returned twice"
            items[item["id"]] = item
    return items, pages[-1]["nextSyncToken"]


def test_calendar_list_pages_by_max_results(env, admin, alice):
    for i in range(104):
        admin.create_calendar(ALICE, f"calendar {i}")

    first = alice.calendarList().list().execute()
    assert len(first["items"]) == 100
    assert "nextPageToken" in first and "nextSyncToken" not in first
    assert first["items"][0]["id"] == ALICE and first["items"][0]["primary"] is True

    pages = list_pages(alice, maxResults=10)
    assert len(pages) == 11
    ids = [item["id"] for page in pages for item in page["items"]]
    assert len(ids) == len(set(ids)) == 105


def test_calendar_list_max_results_is_capped_at_250(env, admin, alice):
    for i in range(251):
        admin.create_calendar(ALICE, f"calendar {i}")
    page = alice.calendarList().list(maxResults=1000).execute()
    assert len(page["items"]) == 250
    assert "nextPageToken" in page and "nextSyncToken" not in page


def test_calendar_list_incremental_sync(env, admin, alice):
    work = admin.create_calendar(ALICE, "work")["id"]
    home = admin.create_calendar(ALICE, "home")["id"]
    full, token = sync(alice)
    assert set(full) == {ALICE, work, home}

    unchanged, token = sync(alice, syncToken=token)
    assert unchanged == {}

    trips = admin.create_calendar(ALICE, "trips")["id"]
    admin.create_calendar(BOB, "not alice's")
    admin.set_calendar_list_entry(ALICE, work, hidden=True)
    admin.set_calendar_list_entry(ALICE, home, deleted=True)
    changes, token = sync(alice, syncToken=token, maxResults=1)
    assert set(changes) == {trips, work, home}
    assert changes[work]["hidden"] is True
    assert changes[home]["deleted"] is True

    plain, _ = sync(alice)
    assert set(plain) == {ALICE, trips}
    everything, _ = sync(alice, showHidden=True, showDeleted=True)
    assert set(everything) == {ALICE, trips, work, home}

    nothing, _ = sync(alice, syncToken=token)
    assert nothing == {}


@pytest.mark.parametrize("extra", [{"showDeleted": False}, {"showHidden": False},
                                   {"minAccessRole": "reader"}])
def test_calendar_list_sync_token_refuses_restrictions(env, alice, extra):
    _, token = sync(alice)
    with pytest.raises(HttpError) as caught:
        alice.calendarList().list(syncToken=token, **extra).execute()
    assert_google_error(caught.value, 400)


def test_calendar_list_invalid_or_expired_sync_token_is_410(env, admin, alice):
    for bad in ["garbage", "x" * 40]:
        with pytest.raises(HttpError) as caught:
            alice.calendarList().list(syncToken=bad).execute()
        assert_google_error(caught.value, 410, "fullSyncRequired")

    _, token = sync(alice)
    bob = env.calendar(BOB)
    with pytest.raises(HttpError) as caught:
        bob.calendarList().list(syncToken=token).execute()
    assert_google_error(caught.value, 410, "fullSyncRequired")

    # Older than the emulator's default maximum token age (28 days).
    with admin.clock_advanced(29 * 86400):
        with pytest.raises(HttpError) as caught:
            alice.calendarList().list(syncToken=token).execute()
    assert_google_error(caught.value, 410, "fullSyncRequired")
