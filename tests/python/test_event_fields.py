"""Computed event fields: `sequence` and `updated` as Google documents them."""

import datetime as dt

from calsupport import BASE_TIME, rfc3339, timed_event


def _times(start: dt.datetime, minutes: int = 30) -> dict:
    return {
        "start": {"dateTime": rfc3339(start)},
        "end": {"dateTime": rfc3339(start + dt.timedelta(minutes=minutes))},
    }


def test_sequence_increments_when_start_or_end_changes(alice):
    # RFC 5545 3.8.7.4 (SEQUENCE): incremented when the organizer makes a significant revision
    # (DTSTART, DTEND, DURATION, RRULE, ...); Google increments `sequence` when start or end
    # changes, even when the client sends back the sequence it read.
    events = alice.events()
    created = events.insert(calendarId="primary", body=timed_event("seq", BASE_TIME)).execute()
    assert created["sequence"] == 0
    eid = created["id"]

    moved = events.patch(calendarId="primary", eventId=eid,
                         body=_times(BASE_TIME + dt.timedelta(hours=1))).execute()
    assert moved["sequence"] == 1

    body = dict(moved)
    body.update(_times(BASE_TIME + dt.timedelta(hours=2)))
    put = events.update(calendarId="primary", eventId=eid, body=body).execute()
    assert body["sequence"] == 1
    assert put["sequence"] == 2

    renamed = events.patch(calendarId="primary", eventId=eid, body={"summary": "x"}).execute()
    assert renamed["sequence"] == 2

    raised = events.patch(calendarId="primary", eventId=eid, body={"sequence": 7}).execute()
    assert raised["sequence"] == 7


def test_reminder_only_edit_keeps_updated_and_changes_etag(admin, alice):
    # Discovery document (calendar.v3.json), Event.updated: "Last modification time of the main
    # event data (as a RFC3339 timestamp). Updating event reminders will not cause this to
    # change."
    events = alice.events()
    created = events.insert(calendarId="primary", body=timed_event("rem", BASE_TIME)).execute()
    with admin.clock_advanced(120):
        reminded = events.patch(calendarId="primary", eventId=created["id"], body={
            "reminders": {"useDefault": False,
                          "overrides": [{"method": "email", "minutes": 30}]},
        }).execute()
        assert reminded["updated"] == created["updated"]
        assert reminded["etag"] != created["etag"]
        fetched = events.get(calendarId="primary", eventId=created["id"]).execute()
        assert fetched["updated"] == created["updated"]

        renamed = events.patch(calendarId="primary", eventId=created["id"],
                               body={"summary": "renamed"}).execute()
        assert renamed["updated"] != created["updated"]
