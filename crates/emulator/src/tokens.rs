//! Sync tokens and page tokens: opaque to clients, authenticated, bound to what issued them.
//!
//! A token is `base64url(json || hmac)`: the payload says which calendar and which point of its
//! change log it stands for; the HMAC (a key made when the emulator starts) makes any corrupted,
//! forged or foreign token detectable, so it can be answered like Google does (410 for sync
//! tokens, 400 for page tokens) instead of being misread.

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

const MAC_LEN: usize = 16;

/// Signs and checks tokens.
pub struct TokenSigner {
    key: hmac::Key,
}

impl TokenSigner {
    pub fn new(secret: &[u8]) -> Self {
        TokenSigner {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    pub fn seal<T: Serialize>(&self, payload: &T) -> String {
        let mut bytes = serde_json::to_vec(payload).expect("token payloads serialize");
        let tag = hmac::sign(&self.key, &bytes);
        bytes.extend_from_slice(&tag.as_ref()[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The payload, or None when the token is malformed or was not made by this emulator.
    pub fn open<T: DeserializeOwned>(&self, token: &str) -> Option<T> {
        let bytes = URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).ok()?;
        if bytes.len() <= MAC_LEN {
            return None;
        }
        let (payload, tag) = bytes.split_at(bytes.len() - MAC_LEN);
        let expected = hmac::sign(&self.key, payload);
        // Constant time is not needed against ourselves, but costs nothing.
        if aws_lc_rs::constant_time::verify_slices_are_equal(&expected.as_ref()[..MAC_LEN], tag)
            .is_err()
        {
            return None;
        }
        serde_json::from_slice(payload).ok()
    }
}

/// What a sync token stands for: "every change of calendar `cal` after `seq`".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncToken {
    /// The calendar's internal number (a token of one calendar is invalid for another).
    pub cal: u64,
    /// The calendar's token epoch; bumping it invalidates every older token.
    pub epoch: u32,
    pub seq: u64,
    /// Unix seconds when issued, for the maximum token age.
    pub issued: i64,
    /// `singleEvents` of the listing that produced it; must stay the same.
    pub single: bool,
}

/// What a calendarList sync token stands for: "every change of `user`'s calendar list after
/// `list_seq`". Its fields differ from [`SyncToken`]'s, so neither is ever read as the other.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalendarListSyncToken {
    pub user: String,
    pub list_seq: u64,
    /// Unix seconds when issued, for the maximum token age.
    pub issued: i64,
}

/// What an `acl.list` sync token stands for: "every rule change of calendar `acl_cal` after
/// `acl_seq`". Its field names differ from the other tokens', so none is read as another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AclSyncToken {
    /// The calendar's internal number.
    pub acl_cal: u64,
    /// The calendar's token epoch (`expire-sync-tokens` expires ACL tokens too).
    pub acl_epoch: u32,
    pub acl_seq: u64,
    /// Unix seconds when issued, for the maximum token age.
    pub issued: i64,
}

/// Where the previous page stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Cursor {
    /// Default order: the last event id emitted, and how far into its instances (the original
    /// start, as Unix seconds, of the last instance emitted).
    Id(String, Option<i64>),
    /// Incremental order: the last change sequence number emitted.
    Seq(u64, Option<i64>),
    /// Sorted orders (`orderBy`): items already returned.
    Offset(usize),
}

/// A page token: bound to the query (fingerprint) and to the snapshot of the first page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PageToken {
    pub query: u64,
    /// The calendar's change sequence number when the first page was served; the final page's
    /// sync token stands for it, so nothing changed during paging is lost.
    pub snapshot: u64,
    pub cursor: Cursor,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> SyncToken {
        SyncToken {
            cal: 3,
            epoch: 0,
            seq: 42,
            issued: 1_700_000_000,
            single: false,
        }
    }

    #[test]
    fn round_trips() {
        let signer = TokenSigner::new(b"k");
        let sealed = signer.seal(&token());
        assert_eq!(signer.open::<SyncToken>(&sealed), Some(token()));
    }

    #[test]
    fn event_and_calendar_list_sync_tokens_are_never_read_as_each_other() {
        let signer = TokenSigner::new(b"k");
        let list = signer.seal(&CalendarListSyncToken {
            user: "a@example.com".into(),
            list_seq: 42,
            issued: 1_700_000_000,
        });
        assert_eq!(signer.open::<SyncToken>(&list), None);
        let events = signer.seal(&token());
        assert_eq!(signer.open::<CalendarListSyncToken>(&events), None);
        let acl = signer.seal(&AclSyncToken {
            acl_cal: 3,
            acl_epoch: 0,
            acl_seq: 42,
            issued: 1_700_000_000,
        });
        assert_eq!(signer.open::<SyncToken>(&acl), None);
        assert_eq!(signer.open::<CalendarListSyncToken>(&acl), None);
        assert_eq!(signer.open::<AclSyncToken>(&events), None);
        assert_eq!(signer.open::<AclSyncToken>(&list), None);
    }

    #[test]
    fn corrupted_or_foreign_tokens_are_refused() {
        let signer = TokenSigner::new(b"k");
        let sealed = signer.seal(&token());
        let mut corrupted = sealed.clone().into_bytes();
        corrupted[3] = if corrupted[3] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            signer.open::<SyncToken>(&String::from_utf8(corrupted).unwrap()),
            None
        );
        assert_eq!(TokenSigner::new(b"other").open::<SyncToken>(&sealed), None);
        assert_eq!(signer.open::<SyncToken>("not a token!"), None);
        assert_eq!(signer.open::<SyncToken>(""), None);
    }
}
