"""Authentication: dev tokens, the service-account JWT-bearer flow, missing/bogus tokens."""

import google.auth.exceptions
import google.oauth2.credentials
import google_auth_httplib2
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.oauth2 import service_account
from googleapiclient.errors import HttpError

from calsupport import (
    ALICE,
    BOB,
    assert_google_error,
    build_calendar,
    new_http,
    nth_event,
)

CALENDAR_SCOPE = "https://www.googleapis.com/auth/calendar"


def service_account_info(base_url: str) -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    ).decode("ascii")
    return {
        "type": "service_account",
        "project_id": "confsync-test",
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": pem,
        "client_email": "syncer@confsync-test.iam.gserviceaccount.com",
        "client_id": "100000000000000000001",
        "token_uri": base_url + "token",
    }


def test_dev_token_for_an_unknown_user_creates_that_user(env):
    carol = env.calendar("carol@example.com")

    created = carol.events().insert(calendarId="primary", body=nth_event(1)).execute()

    assert created["organizer"]["email"] == "carol@example.com"
    fetched = carol.events().get(calendarId="carol@example.com", eventId=created["id"]).execute()
    assert fetched["id"] == created["id"]


def test_service_account_with_subject_acts_as_the_impersonated_user(env):
    credentials = service_account.Credentials.from_service_account_info(
        service_account_info(env.base_url), scopes=[CALENDAR_SCOPE], subject=BOB)
    calendar = build_calendar(env.base_url, credentials=credentials)

    created = calendar.events().insert(calendarId="primary", body=nth_event(1, "By SA")).execute()

    # The client obtained a real-looking access token from <base>/token.
    assert credentials.valid
    assert credentials.token and not credentials.token.startswith("dev:")
    assert created["organizer"]["email"] == BOB
    # It is in Bob's primary calendar, not Alice's.
    bob_items = env.calendar(BOB).events().list(calendarId=BOB).execute().get("items", [])
    assert [i["id"] for i in bob_items] == [created["id"]]
    alice_items = env.calendar(ALICE).events().list(calendarId="primary").execute()
    assert alice_items.get("items", []) == []
    # And the same credentials keep working for reads.
    listed = calendar.events().list(calendarId="primary").execute()
    assert [i["id"] for i in listed["items"]] == [created["id"]]


def test_request_without_a_bearer_token_is_401(env):
    # No credentials at all: a plain httplib2.Http sends no Authorization header.
    calendar = build_calendar(env.base_url, http=new_http())

    with pytest.raises(HttpError) as info:
        calendar.events().list(calendarId="primary").execute()

    assert_google_error(info.value, 401)


def test_bogus_bearer_token_is_401_auth_error(env):
    credentials = google.oauth2.credentials.Credentials(token="ya29.not-a-real-token")
    # Disable google-auth's refresh-on-401 so the raw 401 reaches the caller.
    http = google_auth_httplib2.AuthorizedHttp(credentials, http=new_http(),
                                               refresh_status_codes=())
    calendar = build_calendar(env.base_url, http=http)

    with pytest.raises(HttpError) as info:
        calendar.events().list(calendarId="primary").execute()

    assert_google_error(info.value, 401, "authError")


def test_bogus_token_makes_the_default_client_attempt_a_refresh(env):
    # With the default wiring, google-auth reacts to a 401 by refreshing the credentials; a bare
    # access token cannot be refreshed, so the application sees RefreshError.
    calendar = build_calendar(env.base_url, token="ya29.not-a-real-token")

    with pytest.raises(google.auth.exceptions.RefreshError):
        calendar.events().list(calendarId="primary").execute()
