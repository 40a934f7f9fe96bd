"""events.watch push notifications and channels.stop."""

import email.utils
import time

from calsupport import nth_event, wait_for

CHANNEL_ID = "confsync-test-channel-1"
TOKEN = "tok-123"


def start_watch(service, webhook, channel_id=CHANNEL_ID):
    return service.events().watch(
        calendarId="primary",
        body={
            "id": channel_id,
            "type": "web_hook",
            "address": webhook.url("/hook"),
            "token": TOKEN,
            "params": {"ttl": "3600"},
        },
    ).execute()


def header(message, name):
    return message["headers"].get(name.lower())


def test_watch_answers_a_channel_resource(alice, webhook):
    before_ms = time.time() * 1000
    channel = start_watch(alice, webhook)
    after_ms = time.time() * 1000

    assert channel["kind"] == "api#channel"
    assert channel["id"] == CHANNEL_ID
    assert channel["token"] == TOKEN
    assert channel["resourceId"]
    assert channel["resourceUri"]
    # expiration: unix milliseconds, an int64 and therefore a JSON string in Google's format.
    assert isinstance(channel["expiration"], str)
    expiration = int(channel["expiration"])
    assert before_ms + 3_540_000 <= expiration <= after_ms + 3_660_000


def test_watch_sends_sync_then_exists_and_stop_ends_delivery(env, alice, webhook):
    channel = start_watch(alice, webhook)

    sync_msg = webhook.wait_for_message(
        lambda m: header(m, "X-Goog-Resource-State") == "sync", what="the sync message")
    assert sync_msg["path"] == "/hook"
    assert header(sync_msg, "X-Goog-Message-Number") == "1"
    assert header(sync_msg, "X-Goog-Channel-ID") == CHANNEL_ID
    assert header(sync_msg, "X-Goog-Channel-Token") == TOKEN
    assert header(sync_msg, "X-Goog-Resource-ID") == channel["resourceId"]
    assert header(sync_msg, "X-Goog-Resource-URI") == channel["resourceUri"]
    expires_header = header(sync_msg, "X-Goog-Channel-Expiration")
    assert expires_header, "X-Goog-Channel-Expiration missing"
    expires_at = email.utils.parsedate_to_datetime(expires_header).timestamp() * 1000
    assert abs(expires_at - int(channel["expiration"])) <= 2000
    assert sync_msg["body"] == b""

    alice.events().insert(calendarId="primary", body=nth_event(1)).execute()

    exists_msg = webhook.wait_for_message(
        lambda m: header(m, "X-Goog-Resource-State") == "exists", what="an exists message")
    assert int(header(exists_msg, "X-Goog-Message-Number")) > 1
    assert header(exists_msg, "X-Goog-Channel-ID") == CHANNEL_ID
    assert header(exists_msg, "X-Goog-Channel-Token") == TOKEN
    assert header(exists_msg, "X-Goog-Resource-ID") == channel["resourceId"]
    assert header(exists_msg, "X-Goog-Resource-URI") == channel["resourceUri"]

    # The emulator's record of what it sent.
    def logged():
        records = env.admin.notifications(CHANNEL_ID)
        return records if len(records) >= 2 else None

    sent = wait_for(logged, message="two notifications in GET /emulator/notifications")
    assert [n["resourceState"] for n in sent[:2]] == ["sync", "exists"], sent
    assert sent[0]["messageNumber"] == 1 and sent[1]["messageNumber"] > 1, sent
    for record in sent:
        assert record["channelId"] == CHANNEL_ID, record
        assert record["status"] == 200, record
        assert record["attempts"] == 1, record

    result = alice.channels().stop(
        body={"id": CHANNEL_ID, "resourceId": channel["resourceId"]}).execute()
    assert result == ""

    stopped = [c for c in env.admin.channels() if c["id"] == CHANNEL_ID]
    assert len(stopped) == 1 and stopped[0]["active"] is False, stopped

    received = len(webhook.snapshot())
    alice.events().insert(calendarId="primary", body=nth_event(2)).execute()
    time.sleep(1.0)  # bounded check that nothing arrives after channels.stop
    assert len(webhook.snapshot()) == received, webhook.snapshot()[received:]
    assert len(env.admin.notifications(CHANNEL_ID)) == len(sent)


def test_each_change_notifies_with_increasing_message_numbers(alice, webhook):
    start_watch(alice, webhook)
    webhook.wait_for_message(lambda m: header(m, "X-Goog-Resource-State") == "sync",
                             what="the sync message")

    first = alice.events().insert(calendarId="primary", body=nth_event(1)).execute()
    wait_for(lambda: len(exists_messages(webhook)) >= 1, message="first exists")
    alice.events().patch(calendarId="primary", eventId=first["id"],
                         body={"summary": "Moved"}).execute()
    wait_for(lambda: len(exists_messages(webhook)) >= 2, message="second exists")
    alice.events().delete(calendarId="primary", eventId=first["id"]).execute()
    wait_for(lambda: len(exists_messages(webhook)) >= 3, message="third exists")

    numbers = [int(header(m, "X-Goog-Message-Number")) for m in exists_messages(webhook)]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    assert numbers[0] > 1


def exists_messages(webhook):
    return [m for m in webhook.snapshot() if header(m, "X-Goog-Resource-State") == "exists"]
