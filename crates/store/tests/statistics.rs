//! Postgres: the outbox's planner statistics are refreshed after a burst (`refresh_statistics`
//! in `outbox.rs`). A file of its own: the refresh is counted per process, and other tests'
//! stores would take it.

use confsync_core::model::{MeetingSpec, When};
use confsync_core::plan::{Action, Change, Link};
use confsync_store::{LinkBase, PlannedChange};

fn spec(title: &str) -> MeetingSpec {
    MeetingSpec {
        title: title.to_owned(),
        description: String::new(),
        start: When::from_key("2027-01-01T10:00:00Z").expect("a time"),
        end: When::from_key("2027-01-01T11:00:00Z").expect("a time"),
        time_zone: None,
        recurrence: Vec::new(),
        attendees: Vec::new(),
        organizer: None,
    }
}

/// Postgres: a claim after a thousand rows were queued refreshes the outbox's planner
/// statistics first, so a burst queued since autovacuum's last pass is not planned as a
/// handful of rows (a self-join of every pending row per claim).
#[tokio::test]
async fn a_claim_after_a_burst_refreshes_the_outbox_statistics() {
    let Some(store) = confsync_store::testing::postgres().await else {
        eprintln!("no Postgres: skipped");
        return;
    };
    let mut conn = confsync_store::testing::raw_connection(&store)
        .await
        .expect("a Postgres store");
    async fn analyzed(conn: &mut sqlx::PgConnection) -> i64 {
        sqlx::query_scalar(
            "SELECT analyze_count FROM pg_stat_user_tables \
             WHERE relname = 'outbox' AND schemaname = current_schema()",
        )
        .fetch_one(conn)
        .await
        .unwrap()
    }
    let before = analyzed(&mut conn).await;
    let changes: Vec<PlannedChange> = (0..1_000)
        .map(|i| PlannedChange {
            link: Link {
                conference_id: format!("m{i}"),
                provider: "local".to_owned(),
                calendar_id: "alice@example.com".to_owned(),
                event_id: format!("e{i}"),
                spec: spec("Planning"),
                last_etag_seen: None,
                last_etag_written: None,
                occurrences: Default::default(),
                deleted: false,
                join_url: None,
            },
            base: LinkBase::New,
            actions: vec![Action::Update {
                spec: spec(&format!("Planning {i}")),
                changes: vec![Change::Retitled],
            }],
            supersede_deletes: false,
            not_before_ms: 0,
        })
        .collect();
    store
        .commit_page("alice@example.com", &changes, &[], None, 1_000)
        .await
        .unwrap();
    let claimed = store.claim_due("w", 64, 1_000, 60_000).await.unwrap();
    assert_eq!(claimed.len(), 64);
    // The statistics collector reports the count a moment later.
    let mut after = before;
    for _ in 0..50 {
        after = analyzed(&mut conn).await;
        if after > before {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(after > before, "outbox analyzed {before} -> {after} times");
}
