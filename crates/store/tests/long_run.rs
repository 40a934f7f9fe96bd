//! A year of activity on a store (both backends): every day meetings are created, updated and
//! some cancelled, their outbox actions run, and the daily retention pass prunes what is past
//! its use. What must hold: the store's size follows what is live (meetings not yet over,
//! recent history), not the year; and what a windowed full sync verifies (links whose meeting
//! can still matter, `link_event_ids_ending_after`) is bounded by the window, not by history.
//! Live links of meetings long over are kept (one row each: an old event can still be edited,
//! and its change must find its meeting); everything else is bounded by the retention.

use std::collections::BTreeMap;

use confsync_core::model::{MeetingSpec, When};
use confsync_core::plan::{Action, Change, Link};
use confsync_store::testing::stores;
use confsync_store::{LinkBase, OutboxState, PlannedChange, Store};

const CAL: &str = "alice@example.com";
const DAY: i64 = 86_400_000;
/// Meetings created per day (each a week ahead), per calendar.
const PER_DAY: usize = 8;
const DAYS: i64 = 365;
const RETENTION_DAYS: i64 = 30;

fn spec(title: &str, start_ms: i64) -> MeetingSpec {
    let at = |ms: i64| {
        let Some(When::At(epoch)) = When::from_key("1970-01-01T00:00:00Z") else {
            unreachable!("the epoch parses")
        };
        When::At(epoch + std::time::Duration::from_millis(ms as u64))
    };
    MeetingSpec {
        title: title.to_owned(),
        description: String::new(),
        start: at(start_ms),
        end: at(start_ms + 3_600_000),
        time_zone: None,
        recurrence: Vec::new(),
        attendees: Vec::new(),
        organizer: Some(CAL.to_owned()),
    }
}

async fn write(store: &Store, link: Link, actions: Vec<Action>, now: i64) {
    let base = match store.link_record(&link.conference_id).await.unwrap() {
        Some(stored) => LinkBase::Version(stored.version),
        None => LinkBase::New,
    };
    let change = PlannedChange {
        link,
        base,
        actions,
        supersede_deletes: false,
        not_before_ms: 0,
    };
    store
        .commit_page(CAL, &[change], &[], None, now)
        .await
        .unwrap();
}

/// Rows in a table (for the size check).
async fn count(store: &Store, what: &str) -> i64 {
    match what {
        "outbox" => store.outbox_rows().await.unwrap(),
        "links" => store.link_rows().await.unwrap(),
        _ => unreachable!(),
    }
}

#[tokio::test]
async fn a_year_of_activity_keeps_the_store_and_full_sync_checks_bounded() {
    for store in stores().await {
        eprintln!("on {}", store.backend());
        let start = 1_800_000_000_000_i64 - 1_800_000_000_000 % DAY;
        store.ensure_calendar(CAL).await.unwrap();
        let mut peak = (0, 0);
        let mut at_day_100 = (0, 0);
        for day in 0..DAYS {
            let now = start + day * DAY;
            for i in 0..PER_DAY {
                let id = format!("m{day}x{i}");
                let meeting_at = now + 7 * DAY + i as i64 * 3_600_000;
                let link = Link {
                    conference_id: id.clone(),
                    provider: "local".into(),
                    calendar_id: CAL.into(),
                    event_id: format!("e{day}x{i}"),
                    spec: spec("Planning", meeting_at),
                    last_etag_seen: None,
                    last_etag_written: None,
                    occurrences: BTreeMap::new(),
                    deleted: false,
                    join_url: None,
                };
                // Created, then renamed the same day (an update).
                write(&store, link.clone(), vec![], now).await;
                let mut renamed = link.clone();
                renamed.spec.title = format!("Planning {i}");
                let update = Action::Update {
                    spec: renamed.spec.clone(),
                    changes: vec![Change::Retitled],
                };
                write(&store, renamed.clone(), vec![update], now).await;
                // One in four is cancelled the next day.
                if i % 4 == 0 && day > 0 {
                    let earlier = format!("m{}x{i}", day - 1);
                    let mut gone = store.link(&earlier).await.unwrap().unwrap();
                    gone.deleted = true;
                    write(
                        &store,
                        gone,
                        vec![Action::Delete {
                            reason: Change::EventCancelled,
                        }],
                        now,
                    )
                    .await;
                }
            }
            // The day's actions run.
            loop {
                let due = store.claim_due("w", 64, now, 60_000).await.unwrap();
                if due.is_empty() {
                    break;
                }
                for item in &due {
                    assert!(store.complete(item, now).await.unwrap());
                }
            }
            store
                .prune_history(now - RETENTION_DAYS * DAY, now)
                .await
                .unwrap();
            let size = (count(&store, "outbox").await, count(&store, "links").await);
            if day >= 60 {
                peak = (peak.0.max(size.0), peak.1.max(size.1));
            }
            if day == 100 {
                at_day_100 = size;
            }
        }
        let end = start + (DAYS - 1) * DAY;
        let (outbox, links) = (count(&store, "outbox").await, count(&store, "links").await);
        // Rows made in a year: PER_DAY links a day, each with an update, a quarter cancelled.
        let per_day = PER_DAY as i64;
        eprintln!(
            "after {DAYS} days: {outbox} outbox rows, {links} links (day 100: {at_day_100:?}; peak after day 60: {peak:?}); {} links made",
            DAYS * per_day
        );
        // Finished outbox rows are kept for the retention only.
        assert!(
            outbox <= (RETENTION_DAYS + 1) * (per_day + per_day / 4 + 1),
            "outbox {outbox}"
        );
        // Live links are never pruned (their meetings are in the past, but they are live), so
        // links grow with the meetings made; deleted ones go after the retention.
        let live = store.link_event_ids(CAL).await.unwrap().len() as i64;
        assert!(
            links - live <= (RETENTION_DAYS + 1) * (per_day / 4 + 1),
            "{links} {live}"
        );
        // Flat in time: the tables at the end are no bigger than at day 100 plus live growth.
        assert!(
            outbox <= at_day_100.0 + per_day,
            "{outbox} vs {at_day_100:?}"
        );
        // What a full sync with a 30-day window verifies: the meetings that end after the
        // window starts (the last 30 days and the week ahead), not the year's.
        let checked = store
            .link_event_ids_ending_after(CAL, end - 30 * DAY - DAY)
            .await
            .unwrap()
            .len() as i64;
        assert!(
            checked <= (30 + 1 + 7 + 1) * per_day,
            "{checked} links verified of {live} live"
        );
        assert!(live > 3 * checked, "history is much larger than the window");
        let pending = store
            .outbox_of("m0x1")
            .await
            .unwrap()
            .iter()
            .filter(|e| e.state == OutboxState::Pending)
            .count();
        assert_eq!(pending, 0);
    }
}
