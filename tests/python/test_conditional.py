"""Conditional requests (If-Match / If-None-Match), duplicate inserts, double deletes."""

import pytest
from googleapiclient.errors import HttpError

from calsupport import assert_google_error, nth_event, parse_instant


@pytest.fixture
def event_with_stale_etag(alice):
    """An event edited once after creation: returns (current event, stale etag)."""
    created = alice.events().insert(calendarId="primary", body=nth_event(1)).execute()
    body = {k: created[k] for k in ("start", "end")}
    body["summary"] = "Edited by the user"
    current = alice.events().update(
        calendarId="primary", eventId=created["id"], body=body).execute()
    assert current["etag"] != created["etag"], "every write must change the etag"
    return current, created["etag"]


def test_every_write_changes_etag_and_updated(alice):
    created = alice.events().insert(calendarId="primary", body=nth_event(1)).execute()
    patched = alice.events().patch(
        calendarId="primary", eventId=created["id"], body={"summary": "Patched"}).execute()
    body = {k: patched[k] for k in ("start", "end")}
    body["summary"] = "Updated"
    updated = alice.events().update(
        calendarId="primary", eventId=created["id"], body=body).execute()
    patched_again = alice.events().patch(
        calendarId="primary", eventId=created["id"], body={"description": "Notes"}).execute()

    versions = [created, patched, updated, patched_again]
    etags = [v["etag"] for v in versions]
    assert len(set(etags)) == 4, etags
    updated_times = [parse_instant(v["updated"]) for v in versions]
    assert updated_times == sorted(updated_times) and len(set(updated_times)) == 4, updated_times
    assert all(v["created"] == created["created"] for v in versions)


def test_patch_with_stale_if_match_is_412_condition_not_met(alice, event_with_stale_etag):
    current, stale = event_with_stale_etag
    request = alice.events().patch(
        calendarId="primary", eventId=current["id"], body={"summary": "Overwrite attempt"}
    )
    request.headers["If-Match"] = stale

    with pytest.raises(HttpError) as info:
        request.execute()

    first = assert_google_error(info.value, 412, "conditionNotMet")
    assert first["domain"] == "global"
    after = alice.events().get(calendarId="primary", eventId=current["id"]).execute()
    assert after["summary"] == "Edited by the user"
    assert after["etag"] == current["etag"]


def test_patch_with_current_if_match_succeeds_and_changes_etag(alice, event_with_stale_etag):
    current, _ = event_with_stale_etag
    request = alice.events().patch(
        calendarId="primary", eventId=current["id"], body={"summary": "Conditional edit"}
    )
    request.headers["If-Match"] = current["etag"]

    updated = request.execute()

    assert updated["summary"] == "Conditional edit"
    assert updated["etag"] != current["etag"]
    after = alice.events().get(calendarId="primary", eventId=current["id"]).execute()
    assert after["etag"] == updated["etag"]


def test_update_with_stale_if_match_is_412(alice, event_with_stale_etag):
    current, stale = event_with_stale_etag
    body = {k: current[k] for k in ("summary", "start", "end")}
    body["summary"] = "Full update attempt"
    request = alice.events().update(calendarId="primary", eventId=current["id"], body=body)
    request.headers["If-Match"] = stale

    with pytest.raises(HttpError) as info:
        request.execute()

    assert_google_error(info.value, 412, "conditionNotMet")


def test_delete_with_stale_if_match_is_412_and_keeps_the_event(alice, event_with_stale_etag):
    current, stale = event_with_stale_etag
    request = alice.events().delete(calendarId="primary", eventId=current["id"])
    request.headers["If-Match"] = stale

    with pytest.raises(HttpError) as info:
        request.execute()

    assert_google_error(info.value, 412, "conditionNotMet")
    after = alice.events().get(calendarId="primary", eventId=current["id"]).execute()
    assert after["status"] == "confirmed"


def test_get_with_current_if_none_match_is_304_not_modified(alice):
    created = alice.events().insert(calendarId="primary", body=nth_event(1)).execute()
    request = alice.events().get(calendarId="primary", eventId=created["id"])
    request.headers["If-None-Match"] = created["etag"]

    # googleapiclient treats every status >= 300 as an error: a 304 surfaces as HttpError.
    with pytest.raises(HttpError) as info:
        request.execute()

    assert info.value.resp.status == 304
    assert info.value.content == b""


def test_get_with_stale_if_none_match_returns_the_event(alice, event_with_stale_etag):
    current, stale = event_with_stale_etag
    request = alice.events().get(calendarId="primary", eventId=current["id"])
    request.headers["If-None-Match"] = stale

    fetched = request.execute()

    assert fetched["etag"] == current["etag"]
    assert fetched["summary"] == "Edited by the user"


def test_insert_with_an_existing_id_is_409_duplicate(alice):
    body = nth_event(1)
    body["id"] = "dupevent0001"
    created = alice.events().insert(calendarId="primary", body=body).execute()
    assert created["id"] == "dupevent0001"

    with pytest.raises(HttpError) as info:
        alice.events().insert(calendarId="primary", body=dict(body, summary="Again")).execute()

    assert_google_error(info.value, 409, "duplicate")
    after = alice.events().get(calendarId="primary", eventId="dupevent0001").execute()
    assert after["summary"] == body["summary"]


def test_deleting_twice_is_410_deleted(alice):
    created = alice.events().insert(calendarId="primary", body=nth_event(1)).execute()
    assert alice.events().delete(calendarId="primary", eventId=created["id"]).execute() == ""

    with pytest.raises(HttpError) as info:
        alice.events().delete(calendarId="primary", eventId=created["id"]).execute()

    assert_google_error(info.value, 410, "deleted")


def test_get_of_a_deleted_event_returns_it_cancelled(alice):
    created = alice.events().insert(calendarId="primary", body=nth_event(1)).execute()
    alice.events().delete(calendarId="primary", eventId=created["id"]).execute()

    fetched = alice.events().get(calendarId="primary", eventId=created["id"]).execute()

    assert fetched["id"] == created["id"]
    assert fetched["status"] == "cancelled"
