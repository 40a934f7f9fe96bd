//! Status at any scale: the counts, worst lists, lag and push coverage the operator's views read
//! (`/v1/status`, the status page, `/metrics`), each answered by the store without loading every
//! calendar. Every expectation is computed from the fixtures, on both backends.

use confsync_store::testing::{CalendarFixture, insert_calendars, stores};
use confsync_store::{Store, Worst};

const NOW: i64 = 1_800_000_000_000;
const MINUTE: i64 = 60_000;

/// A varied population: never synced, synced at spread times, failing with various counts,
/// owned by a user who lost their grant (recorded owner, or the id naming them, in any case),
/// with and without live channels, with stopped history.
fn population() -> Vec<CalendarFixture> {
    (0..120)
        .map(|i: i64| {
            let calendar_id = match i {
                7 => "Revoked.Person@Example.com".to_owned(),
                _ => format!("cal{i:03}@example.com"),
            };
            CalendarFixture {
                calendar_id,
                owner: (i % 20 == 3).then(|| "revoked@example.com".to_owned()),
                last_sync_at: (i % 9 != 0).then(|| NOW - ((i * 37) % 120) * MINUTE),
                sync_failures: if i % 11 == 5 { 1 + i % 4 } else { 0 },
                last_error: (i % 11 == 5).then(|| "503".to_owned()),
                retry_at: (i % 11 == 5).then_some(NOW + MINUTE),
                dirty_at: (i % 13 == 0).then_some(NOW - MINUTE),
                channel_expires_at: (i % 4 != 0).then(|| NOW + (i * 7919 % 1000) * MINUTE),
                stopped_channels: (i % 3) as usize,
            }
        })
        .collect()
}

async fn filled(store: &Store) -> Vec<CalendarFixture> {
    let calendars = population();
    insert_calendars(store, &calendars).await.unwrap();
    for (user, revoked) in [
        ("revoked@example.com", true),
        ("revoked.person@example.com", true),
        ("fine@example.com", false),
    ] {
        store.user_connect(user, "sealed", None, NOW).await.unwrap();
        if revoked {
            assert!(store.user_needs_reauth(user, "revoked", NOW).await.unwrap());
        }
    }
    calendars
}

fn needs_reauth(c: &CalendarFixture) -> bool {
    let user = c
        .owner
        .clone()
        .unwrap_or_else(|| c.calendar_id.to_lowercase());
    user == "revoked@example.com" || user == "revoked.person@example.com"
}

fn ids<'a>(calendars: impl IntoIterator<Item = &'a CalendarFixture>) -> Vec<String> {
    calendars
        .into_iter()
        .map(|c| c.calendar_id.clone())
        .collect()
}

#[tokio::test]
async fn counts_cover_every_calendar_and_worst_lists_are_bounded_and_ordered() {
    for store in stores().await {
        let all = filled(&store).await;
        let summary = store.calendar_summary().await.unwrap();
        assert_eq!(summary.calendars, all.len() as i64);
        let count = |f: fn(&CalendarFixture) -> bool| all.iter().filter(|c| f(c)).count() as i64;
        assert_eq!(summary.synced, count(|c| c.last_sync_at.is_some()));
        assert_eq!(summary.failing, count(|c| c.sync_failures > 0));
        assert_eq!(summary.dirty, count(|c| c.dirty_at.is_some()));
        assert_eq!(summary.needing_reauth, count(needs_reauth));
        assert!(
            summary.needing_reauth > 1,
            "the fixtures exercise both rules"
        );

        // Lagging: never synced first, then synced longest ago; ties by id.
        let mut lagging: Vec<&CalendarFixture> = all.iter().collect();
        lagging.sort_by_key(|c| (c.last_sync_at.unwrap_or(0), c.calendar_id.clone()));
        let got = store.calendars_ranked(Worst::Lagging, 10).await.unwrap();
        assert_eq!(got.len(), 10);
        assert_eq!(
            got.iter()
                .map(|c| c.calendar_id.clone())
                .collect::<Vec<_>>(),
            ids(lagging.iter().take(10).copied())
        );
        // Synced longest ago: the same without the never synced ones.
        let synced: Vec<&CalendarFixture> = lagging
            .iter()
            .copied()
            .filter(|c| c.last_sync_at.is_some())
            .collect();
        let got = store
            .calendars_ranked(Worst::SyncedLongestAgo, 7)
            .await
            .unwrap();
        assert_eq!(
            got.iter()
                .map(|c| c.calendar_id.clone())
                .collect::<Vec<_>>(),
            ids(synced.iter().take(7).copied())
        );
        // Failing: most failures first, failing ones only.
        let mut failing: Vec<&CalendarFixture> =
            all.iter().filter(|c| c.sync_failures > 0).collect();
        failing.sort_by_key(|c| (-c.sync_failures, c.calendar_id.clone()));
        let got = store.calendars_ranked(Worst::Failing, 100).await.unwrap();
        assert_eq!(
            got.iter()
                .map(|c| c.calendar_id.clone())
                .collect::<Vec<_>>(),
            ids(failing.iter().copied())
        );
        // Needing re-authorisation: by id, bounded by the limit.
        let mut reauth = ids(all.iter().filter(|c| needs_reauth(c)));
        reauth.sort();
        let got = store
            .calendars_ranked(Worst::NeedingReauth, 100)
            .await
            .unwrap();
        assert_eq!(
            got.iter()
                .map(|c| c.calendar_id.clone())
                .collect::<Vec<_>>(),
            reauth
        );
        let got = store
            .calendars_ranked(Worst::NeedingReauth, 2)
            .await
            .unwrap();
        assert_eq!(got.len(), 2);
    }
}

#[tokio::test]
async fn only_the_calendars_asked_about_are_checked_for_re_authorisation() {
    for store in stores().await {
        let all = filled(&store).await;
        let asked: Vec<&str> = all
            .iter()
            .skip(1)
            .step_by(2)
            .map(|c| c.calendar_id.as_str())
            .collect();
        let mut expected: Vec<String> = all
            .iter()
            .skip(1)
            .step_by(2)
            .filter(|c| needs_reauth(c))
            .map(|c| c.calendar_id.clone())
            .collect();
        expected.sort();
        assert!(!expected.is_empty());
        assert_eq!(
            store.calendars_needing_reauth_among(&asked).await.unwrap(),
            expected
        );
        assert!(
            store
                .calendars_needing_reauth_among(&[])
                .await
                .unwrap()
                .is_empty()
        );
        // Once both users connect again, nobody needs it and nothing is scanned.
        for user in ["revoked@example.com", "revoked.person@example.com"] {
            store.user_connect(user, "sealed", None, NOW).await.unwrap();
        }
        assert!(!store.any_user_needs_reauth().await.unwrap());
        assert!(
            store
                .calendars_needing_reauth_among(&asked)
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.calendar_summary().await.unwrap().needing_reauth, 0);
        assert!(
            store
                .calendars_ranked(Worst::NeedingReauth, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}

#[tokio::test]
async fn sync_lag_is_measured_over_every_synced_calendar_in_one_query() {
    for store in stores().await {
        let all = filled(&store).await;
        let cut_offs = [NOW - 15 * MINUTE, NOW - 60 * MINUTE, NOW - 1000 * MINUTE];
        let (summary, lag) = store.calendar_summary_and_lag(&cut_offs).await.unwrap();
        assert_eq!(summary, store.calendar_summary().await.unwrap());
        assert_eq!(
            lag.oldest_sync_at,
            all.iter().filter_map(|c| c.last_sync_at).min()
        );
        let expected: Vec<i64> = cut_offs
            .iter()
            .map(|cut| {
                all.iter()
                    .filter(|c| c.last_sync_at.is_some_and(|t| t < *cut))
                    .count() as i64
            })
            .collect();
        assert_eq!(lag.synced_before, expected);
        assert!(expected[0] > expected[1] && expected[1] > 0 && expected[2] == 0);
    }
    // No calendar synced yet: no oldest pass, nothing lagging.
    for store in stores().await {
        let (_, lag) = store.calendar_summary_and_lag(&[NOW]).await.unwrap();
        assert_eq!(lag.oldest_sync_at, None);
        assert_eq!(lag.synced_before, vec![0]);
    }
}

#[tokio::test]
async fn push_coverage_takes_each_calendars_newest_live_channel() {
    for store in stores().await {
        let all = filled(&store).await;
        // A second, older live channel on one calendar (a renewal's overlap) and an expired
        // one on another: neither changes what counts.
        let renewed = all.iter().find(|c| c.channel_expires_at.is_some()).unwrap();
        let overlap = CalendarFixture {
            calendar_id: renewed.calendar_id.clone(),
            channel_expires_at: Some(NOW + 1),
            ..CalendarFixture::default()
        };
        confsync_store::testing::insert_channels(&store, &[overlap], "overlap")
            .await
            .unwrap();
        let expired = CalendarFixture {
            calendar_id: all
                .iter()
                .find(|c| c.channel_expires_at.is_none())
                .unwrap()
                .calendar_id
                .clone(),
            channel_expires_at: Some(NOW - 1),
            ..CalendarFixture::default()
        };
        confsync_store::testing::insert_channels(&store, &[expired], "expired")
            .await
            .unwrap();

        let mut newest: Vec<(String, i64)> = all
            .iter()
            .filter_map(|c| Some((c.calendar_id.clone(), c.channel_expires_at?)))
            .collect();
        let (with_channel, first) = store.channel_coverage(NOW).await.unwrap();
        assert_eq!(with_channel, newest.len() as i64);
        assert_eq!(first, newest.iter().map(|(_, e)| *e).min());

        newest.sort_by_key(|(id, e)| (*e, id.clone()));
        assert_eq!(
            store.calendars_by_channel_expiry(NOW, 5).await.unwrap(),
            newest[..5].to_vec()
        );

        let asked: Vec<&str> = all
            .iter()
            .take(30)
            .map(|c| c.calendar_id.as_str())
            .collect();
        let mut expected: Vec<(String, i64)> = all
            .iter()
            .take(30)
            .filter_map(|c| Some((c.calendar_id.clone(), c.channel_expires_at?)))
            .collect();
        expected.sort();
        assert_eq!(
            store.channels_newest_among(NOW, &asked).await.unwrap(),
            expected
        );
    }
}
