"""Helpers shared by the conformance tests (no pytest fixtures here; see conftest.py).

Everything that talks to the Calendar API goes through Google's official client
(googleapiclient + google-auth). Only the emulator's admin API (/emulator/...) is called with
urllib, and only for setup, fault injection and inspection.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable

import google.oauth2.credentials
import httplib2
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

# Per-request socket timeout, so that a hung emulator fails one test instead of the whole run.
HTTP_TIMEOUT_SECONDS = 10

ALICE = "alice@example.com"
BOB = "bob@example.com"


# --------------------------------------------------------------------------------------------
# The official client
# --------------------------------------------------------------------------------------------


def api_endpoint(base_url: str) -> str:
    """The value for client_options["api_endpoint"].

    googleapiclient.discovery.build_from_document computes
    ``base = urljoin(rootUrl, servicePath)`` and then *replaces* it wholesale with
    ``client_options.api_endpoint`` when one is given; method paths
    ("calendars/{calendarId}/events") are then joined onto that base. So the endpoint has to
    include the service path ``calendar/v3/`` itself, otherwise requests would land on
    ``<base>/calendars/...`` instead of ``<base>/calendar/v3/calendars/...``.
    """
    return base_url.rstrip("/") + "/calendar/v3/"


def new_http() -> httplib2.Http:
    """What googleapiclient.http.build_http() makes, with a short timeout."""
    http = httplib2.Http(timeout=HTTP_TIMEOUT_SECONDS)
    http.redirect_codes = http.redirect_codes - {308}
    return http


def build_calendar(base_url: str, *, token: str | None = None, credentials=None, http=None):
    """Build the Calendar v3 service exactly as an application would.

    ``token="dev:<email>"`` gives google.oauth2.credentials.Credentials(token=...), the same
    object an app holds after its OAuth flow; ``credentials`` may be any google-auth credentials
    (e.g. service-account ones). Both go through build(credentials=...), which wraps them in
    google_auth_httplib2.AuthorizedHttp(credentials, http=build_http()). ``http`` instead
    bypasses credentials entirely (a raw httplib2.Http, or a custom AuthorizedHttp).
    """
    if token is not None:
        credentials = google.oauth2.credentials.Credentials(token=token)
    kwargs = dict(
        client_options={"api_endpoint": api_endpoint(base_url)},
        static_discovery=True,
        cache_discovery=False,
    )
    if http is not None:
        assert credentials is None
        return build("calendar", "v3", http=http, **kwargs)
    assert credentials is not None, "need a token, credentials or an http object"
    # build_http() takes its socket timeout from socket.getdefaulttimeout() (else 60 s); use a
    # short one so that a hung emulator fails a single test quickly.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(HTTP_TIMEOUT_SECONDS)
    try:
        return build("calendar", "v3", credentials=credentials, **kwargs)
    finally:
        socket.setdefaulttimeout(previous)


def user_calendar(base_url: str, email: str):
    return build_calendar(base_url, token=f"dev:{email}")


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


def error_reasons(exc: HttpError) -> list[str]:
    details = exc.error_details if isinstance(exc.error_details, list) else []
    return [d.get("reason") for d in details if isinstance(d, dict)]


def error_body(exc: HttpError) -> dict:
    try:
        return json.loads(exc.content.decode("utf-8"))
    except ValueError:
        return {}


def describe(exc: HttpError) -> str:
    return f"HTTP {exc.resp.status} {exc.uri}: {exc.content[:2000]!r}"


def assert_google_error(exc: HttpError, status: int, reason: str | None = None) -> dict:
    """Check Google's error envelope; return its first `errors` item.

    {"error":{"errors":[{"domain","reason","message",...}],"code":N,"message":"..."}}
    """
    assert exc.resp.status == status, describe(exc)
    body = error_body(exc)
    assert isinstance(body.get("error"), dict), describe(exc)
    err = body["error"]
    assert err.get("code") == status, describe(exc)
    assert isinstance(err.get("message"), str) and err["message"], describe(exc)
    assert isinstance(err.get("errors"), list) and err["errors"], describe(exc)
    first = err["errors"][0]
    assert isinstance(first.get("reason"), str) and first["reason"], describe(exc)
    assert isinstance(first.get("message"), str) and first["message"], describe(exc)
    assert isinstance(first.get("domain"), str) and first["domain"], describe(exc)
    if reason is not None:
        assert first["reason"] == reason, describe(exc)
    # What googleapiclient exposes to applications.
    assert exc.reason == err["message"].strip()
    assert exc.error_details == err["errors"]
    return first


# --------------------------------------------------------------------------------------------
# Events
# --------------------------------------------------------------------------------------------

UTC = dt.timezone.utc


def rfc3339(t: dt.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def parse_instant(value: str) -> dt.datetime:
    """RFC 3339 date-time (with offset or Z) -> aware datetime."""
    t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert t.tzinfo is not None, f"dateTime without offset: {value!r}"
    return t


def timed_event(summary: str, start: dt.datetime, minutes: int = 30, **extra) -> dict:
    end = start + dt.timedelta(minutes=minutes)
    body = {
        "summary": summary,
        "start": {"dateTime": rfc3339(start)},
        "end": {"dateTime": rfc3339(end)},
    }
    body.update(extra)
    return body


BASE_TIME = dt.datetime(2030, 1, 7, 9, 0, tzinfo=UTC)


def nth_event(i: int, prefix: str = "Event") -> dict:
    return timed_event(f"{prefix} {i}", BASE_TIME + dt.timedelta(days=i))


def list_pages(service, **kwargs) -> list[dict]:
    """events.list, following nextPageToken with list_next; returns every page."""
    pages = []
    request = service.events().list(**kwargs)
    while request is not None:
        page = request.execute()
        pages.append(page)
        request = service.events().list_next(request, page)
        assert len(pages) < 100, "runaway paging"
    return pages


def sync(service, **kwargs) -> tuple[list[dict], str]:
    """Full or incremental sync: all items of all pages and the final nextSyncToken."""
    pages = list_pages(service, **kwargs)
    for page in pages[:-1]:
        assert "nextPageToken" in page and "nextSyncToken" not in page, page
    last = pages[-1]
    assert "nextSyncToken" in last and "nextPageToken" not in last, last
    items = [item for page in pages for item in page.get("items", [])]
    return items, last["nextSyncToken"]


def by_id(items: list[dict]) -> dict[str, dict]:
    result: dict[str, dict] = {}
    for item in items:
        assert item["id"] not in result, f"event {item['id']} returned twice"
        result[item["id"]] = item
    return result


# --------------------------------------------------------------------------------------------
# Polling
# --------------------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02,
             message: str = "condition") -> Any:
    """Bounded poll: return the first truthy value of predicate(), or fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# Admin API (/emulator/...): setup and faults only
# --------------------------------------------------------------------------------------------


class AdminError(AssertionError):
    pass


class Admin:
    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/") + "/"

    def call(self, method: str, path: str, body: Any = None, query: dict | None = None) -> Any:
        url = self.base_url + path.lstrip("/")
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        elif method in ("POST", "PUT"):
            data = b""
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_SECONDS) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raise AdminError(f"{method} {url} -> {e.code}: {e.read()[:2000]!r}") from None
        if not raw.strip():
            return None
        return json.loads(raw)

    def reset(self) -> None:
        self.call("POST", "emulator/reset")

    def create_user(self, email: str, display_name: str | None = None) -> dict:
        body = {"email": email}
        if display_name:
            body["displayName"] = display_name
        return self.call("POST", "emulator/users", body)

    def create_calendar(self, email: str, summary: str, time_zone: str | None = None) -> dict:
        body = {"summary": summary}
        if time_zone:
            body["timeZone"] = time_zone
        return self.call("POST", f"emulator/users/{urllib.parse.quote(email)}/calendars", body)

    def expire_sync_tokens(self, calendar_id: str) -> None:
        self.call("POST",
                  f"emulator/calendars/{urllib.parse.quote(calendar_id)}/expire-sync-tokens")

    def set_calendar_list_entry(self, email: str, calendar_id: str, **changes) -> dict:
        """Hide/show (hidden=...) or remove/re-add (deleted=...) a calendar list entry."""
        return self.call(
            "POST",
            f"emulator/users/{urllib.parse.quote(email)}/calendarList/"
            f"{urllib.parse.quote(calendar_id)}",
            changes,
        )

    def set_config(self, **changes) -> dict:
        """PUT /emulator/config (camelCase keys); answers the whole configuration."""
        return self.call("PUT", "emulator/config", changes)

    @contextlib.contextmanager
    def conferences_pending(self):
        """Meet createRequests stay pending until resolve_conferences(); switched off afterwards
        (a reset keeps the configuration, and the emulator process is shared by every test)."""
        self.set_config(conferenceCreatePending=True)
        try:
            yield
        finally:
            self.set_config(conferenceCreatePending=False)

    def resolve_conferences(self, status_code: str | None = None) -> list[dict]:
        body = {"statusCode": status_code} if status_code else {}
        return _as_list(self.call("POST", "emulator/conferences/resolve", body), "resolved")

    @contextlib.contextmanager
    def clock_advanced(self, seconds: int):
        """Moves the emulator's clock forward, and back afterwards (a reset keeps the clock, and
        the emulator process is shared by every test)."""
        self.call("POST", "emulator/clock", {"advanceSeconds": seconds})
        try:
            yield
        finally:
            self.call("POST", "emulator/clock", {"advanceSeconds": -seconds})

    def add_fault(self, **fault) -> dict:
        return self.call("POST", "emulator/faults", fault)

    def clear_faults(self) -> None:
        self.call("DELETE", "emulator/faults")

    def channels(self) -> list[dict]:
        return _as_list(self.call("GET", "emulator/channels"), "channels")

    def notifications(self, channel_id: str | None = None) -> list[dict]:
        query = {"channelId": channel_id} if channel_id else None
        return _as_list(self.call("GET", "emulator/notifications", query=query), "notifications")


def _as_list(payload: Any, key: str) -> list[dict]:
    """The admin API answers either a bare JSON array or an object wrapping one."""
    if isinstance(payload, list):
        return payload
    if isinstance(payload, dict):
        for k in (key, "items"):
            if isinstance(payload.get(k), list):
                return payload[k]
    raise AssertionError(f"expected a list of {key}, got {payload!r}")
