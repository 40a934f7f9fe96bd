"""The official client reaches the emulator by changing only the API endpoint."""

import pytest
from googleapiclient.errors import HttpError

from calsupport import ALICE, BOB, assert_google_error, nth_event, parse_instant


def test_requests_land_under_calendar_v3_of_the_emulator(env, alice):
    request = alice.events().list(calendarId="primary")
    assert request.uri.startswith(env.base_url + "calendar/v3/calendars/primary/events?")
    assert request.method == "GET"
    page = request.execute()
    assert page["kind"] == "calendar#events"
    assert page.get("items", []) == []


def test_inserted_event_reads_back_with_server_fields(alice):
    body = nth_event(1)
    created = alice.events().insert(calendarId="primary", body=body).execute()

    assert created["kind"] == "calendar#event"
    assert created["status"] == "confirmed"
    assert created["summary"] == body["summary"]
    assert created["id"] and created["iCalUID"]
    # Etags are opaque quoted strings.
    assert created["etag"].startswith('"') and created["etag"].endswith('"')
    assert parse_instant(created["start"]["dateTime"]) == parse_instant(body["start"]["dateTime"])
    assert parse_instant(created["end"]["dateTime"]) == parse_instant(body["end"]["dateTime"])
    assert created["organizer"]["email"] == ALICE
    assert created["creator"]["email"] == ALICE

    fetched = alice.events().get(calendarId="primary", eventId=created["id"]).execute()
    assert fetched == created


def test_primary_alias_and_calendar_id_address_the_same_calendar(alice):
    created = alice.events().insert(calendarId="primary", body=nth_event(1)).execute()
    fetched = alice.events().get(calendarId=ALICE, eventId=created["id"]).execute()
    assert fetched["id"] == created["id"]


def test_unknown_event_is_404_not_found(alice):
    with pytest.raises(HttpError) as info:
        alice.events().get(calendarId="primary", eventId="doesnotexist0001").execute()
    assert_google_error(info.value, 404, "notFound")


def test_users_do_not_see_each_others_primary_events(env, alice):
    alice.events().insert(calendarId="primary", body=nth_event(1)).execute()
    bob = env.calendar(BOB)
    assert bob.events().list(calendarId="primary").execute().get("items", []) == []
