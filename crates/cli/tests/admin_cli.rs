//! `confsync admin forget` and `confsync admin migrate-provider`, the real binary, on a SQLite
//! store seeded through the store's API.

mod common_tmp;
use common_tmp::TempDir;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use confsync_core::model::{MeetingSpec, When};
use confsync_core::plan::{Action, Link};
use confsync_store::{Channel, LinkBase, OutboxState, PlannedChange, Store};

const ALICE: &str = "alice@example.com";
const UNSET_SECRET: &str = "CONFSYNC_TEST_ADMIN_CLI_UNSET_SECRET";

/// The binary with `args` and `--config`, none of the machine's CONFSYNC_* variables.
fn confsync(args: &[&str], config: &Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_confsync"));
    cmd.args(args).arg("--config").arg(config);
    for (name, _) in std::env::vars() {
        if name.starts_with("CONFSYNC_") {
            cmd.env_remove(name);
        }
    }
    cmd.output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn link(conference_id: &str, provider: &str, event_id: &str, days_ahead: i64) -> Link {
    let start = chrono::Utc::now() + chrono::Duration::days(days_ahead);
    let start = start.with_timezone(&chrono::Utc);
    Link {
        conference_id: conference_id.to_owned(),
        provider: provider.to_owned(),
        calendar_id: ALICE.to_owned(),
        event_id: event_id.to_owned(),
        spec: MeetingSpec {
            title: "Planning".into(),
            description: String::new(),
            start: When::At(start),
            end: When::At(start + chrono::Duration::hours(1)),
            time_zone: None,
            recurrence: Vec::new(),
            attendees: Vec::new(),
            organizer: Some(ALICE.into()),
        },
        last_etag_seen: Some("\"1\"".into()),
        last_etag_written: None,
        occurrences: BTreeMap::new(),
        deleted: false,
        join_url: None,
    }
}

async fn seed(db: &Path) -> Store {
    let store = Store::open(db.to_str().unwrap()).await.unwrap();
    let changes: Vec<PlannedChange> = [
        link("zoom-1", "zoom", "e1", 3),
        link("zoom-2", "zoom", "e2", 5),
        link("zoom-old", "zoom", "e3", -3),
        link("teams-1", "teams", "e4", 3),
    ]
    .into_iter()
    .map(|link| PlannedChange {
        link,
        base: LinkBase::New,
        actions: Vec::new(),
        supersede_deletes: false,
        not_before_ms: 0,
    })
    .collect();
    store
        .commit_page(ALICE, &changes, &[], Some("token"), 1_000)
        .await
        .unwrap();
    store
        .channel_create(&Channel {
            channel_id: "cs1-test".into(),
            calendar_id: ALICE.into(),
            resource_id: "r1".into(),
            token_hash: "h".into(),
            expiration_ms: i64::MAX,
            created_at: 0,
            stopped: false,
        })
        .await
        .unwrap();
    store
}

/// `confsync admin migrate-provider`: a dry run counts, a run queues a recreate per future
/// meeting of the previous provider (the ended one stays), a rerun queues nothing; bad
/// configuration is refused clearly. Then `confsync admin forget` removes the calendar (its
/// meetings kept), refuses an unknown one, and says how its channels are stopped.
#[tokio::test]
async fn migrate_provider_and_forget_work_on_the_store() {
    let dir = TempDir::new("admin-cli");
    let db = dir.0.join("admin.db");
    let store = seed(&db).await;
    let config = dir.0.join("confsync.toml");
    let write_config = |previous: &str| {
        std::fs::write(
            &config,
            format!(
                "[store]\npath = \"{}\"\n[provider]\nkind = \"teams\"\nprevious = {previous}\n\
                 [provider.teams]\ntenant_id = \"t\"\nclient_id = \"c\"\nclient_secret = \"env:{UNSET_SECRET}\"\nuser_id = \"{ALICE}\"\n\
                 [provider.zoom]\naccount_id = \"a\"\nclient_id = \"c\"\nclient_secret = \"env:{UNSET_SECRET}\"\n",
                db.display()
            ),
        )
        .unwrap();
    };
    write_config("[\"zoom\"]");

    let dry = confsync(&["admin", "migrate-provider", "--dry-run"], &config);
    assert!(dry.status.success(), "{dry:?}");
    let out = text(&dry.stdout);
    assert!(
        out.contains("provider teams (from zoom): 2 to move, 0 queued, 0 moved, 0 failed, 1 ended"),
        "{out}"
    );
    assert!(out.contains("dry run"), "{out}");
    assert!(store.outbox_of("zoom-1").await.unwrap().is_empty());

    let run = confsync(&["admin", "migrate-provider", "--by", "ops"], &config);
    assert!(run.status.success(), "{run:?}");
    let out = text(&run.stdout);
    assert!(out.contains("0 to move, 2 queued"), "{out}");
    assert!(out.contains("2 queued now"), "{out}");
    for id in ["zoom-1", "zoom-2"] {
        let rows = store.outbox_of(id).await.unwrap();
        assert_eq!(rows.len(), 1, "{id}: {rows:?}");
        assert!(matches!(rows[0].action, Action::Recreate { .. }));
        assert_eq!(rows[0].state, OutboxState::Pending);
    }
    assert!(
        store.outbox_of("zoom-old").await.unwrap().is_empty(),
        "ended: left"
    );
    assert!(store.outbox_of("teams-1").await.unwrap().is_empty());
    let rerun = confsync(&["admin", "migrate-provider"], &config);
    assert!(text(&rerun.stdout).contains("0 queued now"), "{rerun:?}");

    // Bad input: refused with a clear error, nothing queued.
    let bad = confsync(&["admin", "migrate-provider", "--limit", "0"], &config);
    assert!(!bad.status.success());
    assert!(text(&bad.stderr).contains("--limit"), "{bad:?}");
    write_config("[\"teams\"]");
    let same = confsync(&["admin", "migrate-provider"], &config);
    assert!(!same.status.success());
    assert!(text(&same.stderr).contains("provider.previous"), "{same:?}");
    write_config("[]");
    let none = confsync(&["admin", "migrate-provider"], &config);
    assert!(none.status.success(), "{none:?}");
    assert!(
        text(&none.stdout).contains("no provider.previous"),
        "{none:?}"
    );

    // Forget.
    let unknown = confsync(
        &["admin", "forget", "--calendar", "nobody@example.com"],
        &config,
    );
    assert!(!unknown.status.success());
    assert!(
        text(&unknown.stderr).contains("does not sync calendar"),
        "{unknown:?}"
    );
    let forgot = confsync(
        &["admin", "forget", "--calendar", ALICE, "--by", "ops"],
        &config,
    );
    assert!(forgot.status.success(), "{forgot:?}");
    let out = text(&forgot.stdout);
    assert!(
        out.contains("4 links (4 meetings kept at the provider), 2 pending actions dropped"),
        "{out}"
    );
    assert!(out.contains("1 push channels to stop"), "{out}");
    assert!(
        text(&forgot.stderr).contains("when they next notify"),
        "{forgot:?}"
    );
    assert!(store.calendar(ALICE).await.unwrap().is_none());
    assert!(store.link("zoom-1").await.unwrap().is_none());
    assert!(!store.mark_dirty(ALICE, 2_000).await.unwrap());
    let again = confsync(&["admin", "forget", "--calendar", ALICE], &config);
    assert!(!again.status.success());
}
