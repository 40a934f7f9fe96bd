"""Injected faults reach the client in Google's error envelope and the client's retry works."""

import pytest
from googleapiclient.errors import HttpError

from calsupport import assert_google_error, nth_event


def test_injected_503_is_a_google_error_and_clears_after_count(env, alice):
    env.admin.add_fault(status=503, reason="backendError", count=1, pathContains="/events")

    with pytest.raises(HttpError) as info:
        alice.events().list(calendarId="primary").execute()

    assert_google_error(info.value, 503, "backendError")
    assert alice.events().list(calendarId="primary").execute()["kind"] == "calendar#events"


def test_client_retry_gets_past_a_single_503(env, alice):
    alice.events().insert(calendarId="primary", body=nth_event(1)).execute()
    env.admin.add_fault(status=503, reason="backendError", count=1, pathContains="/events")

    page = alice.events().list(calendarId="primary").execute(num_retries=1)

    assert len(page["items"]) == 1


def test_injected_rate_limit_403_carries_its_reason(env, alice):
    env.admin.add_fault(status=403, reason="userRateLimitExceeded", count=1,
                        domain="usageLimits", pathContains="/events")

    with pytest.raises(HttpError) as info:
        alice.events().list(calendarId="primary").execute()

    first = assert_google_error(info.value, 403, "userRateLimitExceeded")
    assert first["domain"] == "usageLimits"


def test_reset_removes_faults(env, alice):
    env.admin.add_fault(status=500, reason="backendError", count=5, pathContains="/events")
    env.admin.reset()

    assert alice.events().list(calendarId="primary").execute()["kind"] == "calendar#events"
