"""Partial responses (`fields`) and gzip, through Google's official client.

google-api-python-client takes `fields=` on every method (a standard parameter of the discovery
document) and asks for gzip on every request the way Google's "Performance tips" page says:
`accept-encoding: gzip, deflate` and `(gzip)` appended to the user agent
(googleapiclient/model.py, BaseModel.request); httplib2 decodes the answer.
"""

import google.oauth2.credentials
import google_auth_httplib2
import httplib2
import pytest
from googleapiclient.errors import HttpError

from calsupport import (
    ALICE,
    BASE_TIME,
    HTTP_TIMEOUT_SECONDS,
    assert_google_error,
    build_calendar,
    list_pages,
    timed_event,
)


def _rich_event(summary: str, day: int) -> dict:
    import datetime as dt

    return timed_event(
        summary,
        BASE_TIME + dt.timedelta(days=day),
        description=f"<p>Agenda for {summary}</p>",
        location="Room 1",
        attendees=[
            {"email": "bob@example.com", "displayName": "Bob", "responseStatus": "accepted"},
            {"email": "room-1@example.com", "resource": True},
        ],
        conferenceData={
            "conferenceId": f"meeting-{day}",
            "conferenceSolution": {"key": {"type": "addOn"}, "name": "Confsync"},
            "entryPoints": [
                {"entryPointType": "video", "uri": f"https://meet.example.com/{day}",
                 "label": f"meet.example.com/{day}"},
                {"entryPointType": "phone", "uri": "tel:+1-555-0100", "pin": "1234"},
            ],
            "parameters": {"addOnParameters": {"parameters": {"meetingId": str(day)}}},
        },
    )


def _insert_rich(alice, n: int) -> list[dict]:
    return [
        alice.events().insert(calendarId="primary", body=_rich_event(f"Rich {i}", i),
                              conferenceDataVersion=1).execute()
        for i in range(1, n + 1)
    ]


def test_a_masked_list_answers_only_the_named_fields(alice):
    created = _insert_rich(alice, 3)
    page = alice.events().list(
        calendarId="primary",
        fields="nextPageToken,nextSyncToken,items(id,summary,start/dateTime)",
    ).execute()
    assert set(page) == {"nextSyncToken", "items"}, page
    assert len(page["items"]) == 3
    for item in page["items"]:
        assert set(item) == {"id", "summary", "start"}, item
        assert set(item["start"]) == {"dateTime"}, item
    assert sorted(i["id"] for i in page["items"]) == sorted(e["id"] for e in created)


def test_nested_groups_paths_and_wildcards(alice):
    created = _insert_rich(alice, 1)[0]
    page = alice.events().list(
        calendarId="primary",
        fields="items(id,attendees(email),conferenceData(conferenceId,entryPoints(uri)),"
               "organizer/*)",
    ).execute()
    (item,) = page["items"]
    assert item == {
        "id": created["id"],
        "attendees": [{"email": "bob@example.com"}, {"email": "room-1@example.com"}],
        "conferenceData": {"conferenceId": "meeting-1",
                           "entryPoints": [{"uri": "https://meet.example.com/1"},
                                           {"uri": "tel:+1-555-0100"}]},
        "organizer": created["organizer"],
    }
    everything = alice.events().list(calendarId="primary", fields="*").execute()
    assert everything == alice.events().list(calendarId="primary").execute()
    got = alice.events().get(calendarId="primary", eventId=created["id"],
                             fields="id,etag,conferenceData/parameters").execute()
    assert got == {"id": created["id"], "etag": created["etag"],
                   "conferenceData": {"parameters": created["conferenceData"]["parameters"]}}


def test_masked_paging_follows_the_tokens(alice):
    created = _insert_rich(alice, 5)
    pages = list_pages(alice, calendarId="primary", maxResults=2,
                       fields="nextPageToken,nextSyncToken,items(id)")
    assert len(pages) == 3
    assert "nextSyncToken" in pages[-1]
    ids = [item["id"] for page in pages for item in page["items"]]
    assert sorted(ids) == sorted(e["id"] for e in created)
    assert all(set(item) == {"id"} for page in pages for item in page["items"])


@pytest.mark.parametrize("mask,name", [
    ("pagetoken,items(id)", "pagetoken"),
    ("items(id,nope)", "nope"),
    ("items/summary/text", "text"),
    ("items(id", "items(id"),
])
def test_a_bad_mask_is_googles_400(alice, mask, name):
    with pytest.raises(HttpError) as info:
        alice.events().list(calendarId="primary", fields=mask).execute()
    first = assert_google_error(info.value, 400, "invalidParameter")
    assert first["message"] == f"Invalid field selection {name}"
    assert first["location"] == "fields"
    assert first["locationType"] == "parameter"


class RecordingHttp(httplib2.Http):
    """httplib2 as googleapiclient uses it, keeping each request's headers and response."""

    def __init__(self):
        super().__init__(timeout=HTTP_TIMEOUT_SECONDS)
        self.exchanges = []

    def request(self, uri, method="GET", body=None, headers=None, **kwargs):
        response, content = super().request(uri, method, body=body, headers=headers, **kwargs)
        self.exchanges.append(({k.lower(): v for k, v in (headers or {}).items()}, response))
        return response, content


def test_the_official_client_asks_for_gzip_and_gets_it(env, alice):
    _insert_rich(alice, 3)
    recording = RecordingHttp()
    credentials = google.oauth2.credentials.Credentials(token=f"dev:{ALICE}")
    service = build_calendar(env.base_url,
                             http=google_auth_httplib2.AuthorizedHttp(credentials, http=recording))
    page = service.events().list(calendarId="primary", fields="items(id,summary)").execute()
    assert len(page["items"]) == 3
    sent, response = recording.exchanges[-1]
    assert "gzip" in sent["accept-encoding"]
    assert "(gzip)" in sent["user-agent"]
    # httplib2 decoded the body and moved the header aside.
    assert response.get("-content-encoding") == "gzip", response
    assert response.get("vary") == "Accept-Encoding", response
    assert response.status == 200
