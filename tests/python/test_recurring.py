"""Recurring events: instances, exceptions, cancelled instances, and how sync reports them."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from calsupport import by_id, parse_instant, sync

UTC = dt.timezone.utc

BERLIN = ZoneInfo("Europe/Berlin")


def _last_sunday_of_march(year: int) -> dt.date:
    day = dt.date(year, 3, 31)
    return day - dt.timedelta(days=(day.weekday() + 1) % 7)


# Next year's weekly Monday 10:00 Berlin meeting starting two weeks before Berlin switches from
# CET (+01:00) to CEST (+02:00) on the last Sunday of March: the 1st and 2nd instances are at
# 09:00Z, the 3rd..5th still at 10:00 local time but at 08:00Z. Next year keeps the series well
# within any reasonable expansion horizon; the far future is covered by its own test below.
FIRST_DAY = _last_sunday_of_march(dt.date.today().year + 1) - dt.timedelta(days=13)
assert FIRST_DAY.weekday() == 0


def berlin(day: dt.date, hour: int, minute: int = 0) -> dict:
    local = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=BERLIN)
    return {"dateTime": local.isoformat(), "timeZone": "Europe/Berlin"}


SERIES = {
    "summary": "Weekly sync",
    "start": berlin(FIRST_DAY, 10),
    "end": berlin(FIRST_DAY, 10, 30),
    "recurrence": ["RRULE:FREQ=WEEKLY;COUNT=5"],
}

EXPECTED_STARTS_UTC = [
    dt.datetime.combine(FIRST_DAY + dt.timedelta(weeks=w), dt.time(10), BERLIN).astimezone(UTC)
    for w in range(5)
]
assert [t.hour for t in EXPECTED_STARTS_UTC] == [9, 9, 8, 8, 8]


def instance_id(series_id: str, start: dt.datetime) -> str:
    return f"{series_id}_{start.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}"


@pytest.fixture
def series(alice):
    created = alice.events().insert(calendarId="primary", body=SERIES).execute()
    assert created["recurrence"] == SERIES["recurrence"]
    assert created["start"]["timeZone"] == "Europe/Berlin"
    return created


def instances(service, series_id, **kwargs):
    items = []
    request = service.events().instances(calendarId="primary", eventId=series_id, **kwargs)
    while request is not None:
        page = request.execute()
        items.extend(page.get("items", []))
        request = service.events().instances_next(request, page)
    return items


def test_instances_have_utc_start_ids_recurring_event_id_and_original_start(alice, series):
    items = instances(alice, series["id"])

    assert len(items) == 5
    starts = sorted(parse_instant(i["start"]["dateTime"]) for i in items)
    assert starts == EXPECTED_STARTS_UTC
    for item in items:
        start = parse_instant(item["start"]["dateTime"])
        assert item["id"] == instance_id(series["id"], start)
        assert item["recurringEventId"] == series["id"]
        assert parse_instant(item["originalStartTime"]["dateTime"]) == start
        assert parse_instant(item["end"]["dateTime"]) - start == dt.timedelta(minutes=30)
        assert item["status"] == "confirmed"
        assert item["summary"] == "Weekly sync"
        assert item["iCalUID"] == series["iCalUID"]
        assert "recurrence" not in item


def test_single_events_list_expands_the_series_and_hides_the_master(alice, series):
    items, _ = sync(alice, calendarId="primary", singleEvents=True)

    assert sorted(i["id"] for i in items) == sorted(
        instance_id(series["id"], s) for s in EXPECTED_STARTS_UTC)
    assert series["id"] not in {i["id"] for i in items}


def move_second_and_cancel_fourth(alice, series):
    second = instance_id(series["id"], EXPECTED_STARTS_UTC[1])
    fourth = instance_id(series["id"], EXPECTED_STARTS_UTC[3])
    moved = alice.events().patch(
        calendarId="primary",
        eventId=second,
        body={
            "start": berlin(FIRST_DAY + dt.timedelta(weeks=1), 11),
            "end": berlin(FIRST_DAY + dt.timedelta(weeks=1), 11, 30),
        },
    ).execute()
    assert alice.events().delete(calendarId="primary", eventId=fourth).execute() == ""
    return moved, second, fourth


def test_moving_one_instance_and_cancelling_another(alice, series):
    moved, second, fourth = move_second_and_cancel_fourth(alice, series)

    assert moved["id"] == second
    assert moved["recurringEventId"] == series["id"]
    assert parse_instant(moved["start"]["dateTime"]) == EXPECTED_STARTS_UTC[1] + dt.timedelta(
        hours=1)
    assert parse_instant(moved["originalStartTime"]["dateTime"]) == EXPECTED_STARTS_UTC[1]

    items, _ = sync(alice, calendarId="primary", singleEvents=True)
    listed = by_id(items)
    assert len(listed) == 4
    assert fourth not in listed
    assert parse_instant(listed[second]["start"]["dateTime"]) == EXPECTED_STARTS_UTC[1] + \
        dt.timedelta(hours=1)
    assert parse_instant(listed[second]["originalStartTime"]["dateTime"]) == \
        EXPECTED_STARTS_UTC[1]

    remaining = instances(alice, series["id"])
    assert len(remaining) == 4
    assert fourth not in {i["id"] for i in remaining}


def test_incremental_sync_reports_the_exception_and_the_cancelled_instance(alice, series):
    full, token = sync(alice, calendarId="primary")
    assert [i["id"] for i in full] == [series["id"]]

    moved, second, fourth = move_second_and_cancel_fourth(alice, series)
    changes, _ = sync(alice, calendarId="primary", syncToken=token)
    changed = by_id(changes)

    # The master may or may not be reported as well; both instances must be.
    assert {second, fourth} <= set(changed) <= {second, fourth, series["id"]}

    exception = changed[second]
    assert exception["status"] == "confirmed"
    assert exception["recurringEventId"] == series["id"]
    assert parse_instant(exception["originalStartTime"]["dateTime"]) == EXPECTED_STARTS_UTC[1]
    assert parse_instant(exception["start"]["dateTime"]) == EXPECTED_STARTS_UTC[1] + \
        dt.timedelta(hours=1)
    assert exception["etag"] == moved["etag"]

    cancelled = changed[fourth]
    assert cancelled["status"] == "cancelled"
    assert cancelled["recurringEventId"] == series["id"]
    assert parse_instant(cancelled["originalStartTime"]["dateTime"]) == EXPECTED_STARTS_UTC[3]


def test_get_of_an_instance_id_returns_that_instance(alice, series):
    third = instance_id(series["id"], EXPECTED_STARTS_UTC[2])

    fetched = alice.events().get(calendarId="primary", eventId=third).execute()

    assert fetched["id"] == third
    assert fetched["recurringEventId"] == series["id"]
    assert parse_instant(fetched["start"]["dateTime"]) == EXPECTED_STARTS_UTC[2]


def test_finite_series_years_ahead_is_fully_expanded_without_time_bounds(alice):
    # timeMin/timeMax: "The default is not to filter by start time" (discovery document), so
    # a finite series is expanded completely however far in the future it lies.
    start = dt.datetime(dt.date.today().year + 5, 6, 3, 15, 0, tzinfo=BERLIN)
    series = alice.events().insert(calendarId="primary", body={
        "summary": "Far away",
        "start": {"dateTime": start.isoformat(), "timeZone": "Europe/Berlin"},
        "end": {"dateTime": (start + dt.timedelta(hours=1)).isoformat(),
                "timeZone": "Europe/Berlin"},
        "recurrence": ["RRULE:FREQ=DAILY;COUNT=3"],
    }).execute()
    expected = sorted(
        instance_id(series["id"], (start + dt.timedelta(days=d)).astimezone(UTC))
        for d in range(3))

    assert sorted(i["id"] for i in instances(alice, series["id"])) == expected
    items, _ = sync(alice, calendarId="primary", singleEvents=True)
    assert sorted(i["id"] for i in items) == expected


def test_default_list_includes_cancelled_instances_but_not_cancelled_series(alice, series):
    # Discovery document (calendar.v3.json), events.list showDeleted: "Cancelled instances of
    # recurring events (but not the underlying recurring event) will still be included if
    # showDeleted and singleEvents are both False." Google guarantees only id,
    # recurringEventId and originalStartTime on them.
    moved, second, fourth = move_second_and_cancel_fourth(alice, series)

    items, _ = sync(alice, calendarId="primary")
    listed = by_id(items)
    assert set(listed) == {series["id"], second, fourth}
    cancelled = listed[fourth]
    assert cancelled["status"] == "cancelled"
    assert cancelled["recurringEventId"] == series["id"]
    assert parse_instant(cancelled["originalStartTime"]["dateTime"]) == EXPECTED_STARTS_UTC[3]

    # singleEvents=True without showDeleted leaves it out.
    single, _ = sync(alice, calendarId="primary", singleEvents=True)
    assert fourth not in by_id(single)

    # Cancelling the whole series: neither it nor its cancelled instances are listed.
    alice.events().delete(calendarId="primary", eventId=series["id"]).execute()
    items, _ = sync(alice, calendarId="primary")
    assert items == []
