//! `GET /healthz/identity?nonce=N`: proves that this service runs on a given store, for
//! `confsync doctor`'s check that `serve.public_url` reaches this deployment and not some other
//! server (or another confsync on another store).
//!
//! The answer is `{"service": "confsync", "proof": HMAC-SHA256(store id, "confsync-identity:" +
//! nonce)}` in hex. The store id ([`confsync_store::Store::store_id`]) is random and never
//! leaves the store: whoever can read the store (the doctor) computes the same proof and
//! compares; anyone else learns nothing (a fresh nonce per check, so an answer cannot be
//! replayed by another server either). Reachable without credentials, so it costs nothing: the
//! nonce is checked first (1 to 64 characters of `[A-Za-z0-9_-]`), the id is read from the
//! store once per process and kept, nothing is written per request, and the answer names no
//! host, version or secret.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::Service;

/// The proof a service on the store whose id is `store_id` answers for `nonce`.
pub fn identity_proof(store_id: &str, nonce: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, store_id.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, format!("confsync-identity:{nonce}").as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a nonce is acceptable: 1 to 64 characters of `[A-Za-z0-9_-]`.
pub fn valid_nonce(nonce: &str) -> bool {
    (1..=64).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A new random value for a store that has no id yet (64 hex characters).
pub fn fresh_store_id() -> String {
    use aws_lc_rs::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    if aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .is_err()
    {
        // Without the system's random generator nothing else works either; an id made of the
        // clock still tells stores apart.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes[..16].copy_from_slice(&now.to_le_bytes());
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The store's id, read once per process and store location.
async fn cached_store_id(service: &Service) -> Option<String> {
    static IDS: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    let ids = IDS.get_or_init(Mutex::default);
    let location = service.store.location().to_owned();
    if let Some(id) = ids.lock().unwrap_or_else(|p| p.into_inner()).get(&location) {
        return Some(id.clone());
    }
    match service.store.store_id(&fresh_store_id()).await {
        Ok(id) => {
            ids.lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(location, id.clone());
            Some(id)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the store's id");
            None
        }
    }
}

/// `GET /healthz/identity?nonce=N` (see the module documentation).
pub(crate) async fn identity(
    State(service): State<Arc<Service>>,
    RawQuery(query): RawQuery,
) -> Response {
    let nonce = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "nonce")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if !valid_nonce(&nonce) {
        return crate::json_error(
            StatusCode::BAD_REQUEST,
            "nonce: 1 to 64 characters of A-Z, a-z, 0-9, '-' and '_'",
        );
    }
    match cached_store_id(&service).await {
        Some(id) => axum::Json(json!({
            "service": "confsync",
            "proof": identity_proof(&id, &nonce),
        }))
        .into_response(),
        None => crate::json_error(StatusCode::SERVICE_UNAVAILABLE, "the store does not answer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_depend_on_the_store_and_the_nonce_and_nonces_are_checked() {
        let a = identity_proof("store-a", "n1");
        assert_eq!(a.len(), 64);
        assert_eq!(a, identity_proof("store-a", "n1"));
        assert_ne!(a, identity_proof("store-b", "n1"));
        assert_ne!(a, identity_proof("store-a", "n2"));
        assert!(valid_nonce("abc-DEF_123"));
        for bad in ["", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(!valid_nonce(bad), "{bad:?}");
        }
        assert_ne!(fresh_store_id(), fresh_store_id());
    }
}
