//! Who is calling: the add-on sends, with its API key, `X-Confsync-Identity: <ID token>`, the
//! OpenID Connect ID token Apps Script's `ScriptApp.getIdentityToken()` gives it for the user it
//! runs for. [`IdentityVerifier`] checks it the way Google documents: an RS256 signature by a key
//! of the issuer's JWKS (`kid` in the header), `iss` one of the allowed issuers, `aud` one of the
//! add-on's OAuth client ids, `exp` not passed and `iat` not in the future (a minute of clock
//! skew), a lifetime of at most a day, a `sub`, and a verified `email`.
//!
//! - Verification is CPU only: the key set is cached for the `max-age` of its `Cache-Control`
//!   (between [`MIN_CACHE`] and [`MAX_CACHE`]; an hour without one). It is fetched again when it
//!   expires, or when a token names a key it does not hold (how a rotation shows), but never
//!   twice within the refetch floor ([`DEFAULT_REFETCH_FLOOR`]): made-up key ids cannot make us
//!   fetch repeatedly. One fetch at a time; a failed fetch keeps the keys already held.
//! - Claims that need no key (`alg`, `iss`, `aud`, times) are checked before any key lookup, so
//!   a token for another audience costs no fetch.
//! - Nothing about a refused token is stored; the refusal names the check that failed.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use tracing::{info, warn};

/// Google's JWKS of ID-token signing keys.
pub const GOOGLE_CERTS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";

/// The `iss` values of Google's ID tokens (the modern one, and the legacy one).
pub const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];

/// The HTTP header carrying the ID token (a compact JWT, without "Bearer").
pub const IDENTITY_HEADER: &str = "x-confsync-identity";

/// The key set is fetched at most this often when tokens name keys it lacks.
pub const DEFAULT_REFETCH_FLOOR: Duration = Duration::from_secs(60);

/// Bounds on how long a fetched key set is used before it is fetched again.
pub const MIN_CACHE: Duration = Duration::from_secs(60);
pub const MAX_CACHE: Duration = Duration::from_secs(24 * 3600);
const DEFAULT_CACHE: Duration = Duration::from_secs(3600);

/// Clock skew tolerated on `exp` and `iat` (seconds).
pub const CLOCK_SKEW_SECONDS: i64 = 60;

/// Longest ID token accepted (bytes); Google's are about 1 KB.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Longest lifetime (`exp - iat`) accepted; Google's ID tokens live an hour.
const MAX_LIFETIME_SECONDS: i64 = 24 * 3600;

/// Largest JWKS document read.
const MAX_JWKS_BYTES: usize = 256 * 1024;

/// What the verifier checks tokens against.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// Accepted `aud` values: the add-on script's OAuth client id(s).
    pub audiences: Vec<String>,
    /// Accepted `iss` values.
    pub issuers: Vec<String>,
    /// The issuer's JWKS.
    pub certs_url: String,
    /// Unknown key ids refetch the key set at most this often.
    pub refetch_floor: Duration,
}

impl IdentitySettings {
    /// Google's issuers and keys for these audiences.
    pub fn google(audiences: Vec<String>) -> IdentitySettings {
        IdentitySettings {
            audiences,
            issuers: GOOGLE_ISSUERS.iter().map(|s| (*s).to_owned()).collect(),
            certs_url: GOOGLE_CERTS_URL.to_owned(),
            refetch_floor: DEFAULT_REFETCH_FLOOR,
        }
    }
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The verified email, lowercased.
    pub email: String,
    /// The account's stable id (`sub`).
    pub subject: String,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityError {
    /// No token, or one that does not verify: the caller cannot be trusted.
    Refused(String),
    /// The issuer's keys could not be fetched and none is held for the token's key id: worth
    /// retrying.
    Unavailable(String),
}

impl std::fmt::Display for IdentityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdentityError::Refused(why) => write!(f, "identity token refused: {why}"),
            IdentityError::Unavailable(why) => {
                write!(f, "identity tokens cannot be checked right now: {why}")
            }
        }
    }
}

#[derive(Clone)]
struct RsaKey {
    n: Vec<u8>,
    e: Vec<u8>,
}

#[derive(Default)]
struct KeySet {
    keys: HashMap<String, RsaKey>,
    /// When the set must be fetched again (None: never fetched).
    fresh_until: Option<Instant>,
    /// When a fetch was last attempted.
    last_attempt: Option<Instant>,
}

/// Verifies ID tokens against a cached key set.
pub struct IdentityVerifier {
    settings: IdentitySettings,
    http: reqwest::Client,
    keys: RwLock<KeySet>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    fetches: Mutex<u64>,
    /// Verification outcomes, for `/metrics`.
    pub counts: IdentityCounts,
    /// Recent answers to "may this user edit that calendar" (see [`EditorCache`]).
    pub editors: EditorCache,
}

/// How many identity tokens were verified, refused, or could not be checked (keys unavailable),
/// and how calendar access was decided for verified callers.
#[derive(Debug, Default)]
pub struct IdentityCounts {
    pub verified: std::sync::atomic::AtomicU64,
    pub refused: std::sync::atomic::AtomicU64,
    pub unavailable: std::sync::atomic::AtomicU64,
    /// The caller owns the calendar.
    pub access_owner: std::sync::atomic::AtomicU64,
    /// The caller can edit it (an ACL rule gives them writer or owner role).
    pub access_editor: std::sync::atomic::AtomicU64,
    /// Refused: neither owner nor editor (or the ACL could not be read).
    pub access_refused: std::sync::atomic::AtomicU64,
}

impl IdentityCounts {
    pub fn bump(counter: &std::sync::atomic::AtomicU64) {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(counter: &std::sync::atomic::AtomicU64) -> u64 {
        counter.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Recent answers to "can user U edit calendar C" read from the calendar's ACL, so a user who
/// works on a shared calendar does not cost an `acl.get` per add-on call. Bounded: at most
/// [`EditorCache::CAPACITY`] entries, expired ones dropped first, and all of them when it is
/// still full (only verified callers reach it, so the churn is bounded by real users).
/// A grant lasts [`EditorCache::TTL`]; a refusal is not cached (the owner may be sharing the
/// calendar right now, and a refused call costs the caller, not us, a retry).
#[derive(Debug, Default)]
pub struct EditorCache {
    entries: Mutex<HashMap<(String, String), Instant>>,
}

impl EditorCache {
    pub const CAPACITY: usize = 10_000;
    /// How long an ACL answer that granted editing is trusted: a revoked share takes effect
    /// within this time.
    pub const TTL: Duration = Duration::from_secs(300);

    /// The user was seen able to edit the calendar within [`EditorCache::TTL`].
    pub fn holds(&self, calendar_id: &str, email: &str) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(&(calendar_id.to_owned(), email.to_owned()))
            .is_some_and(|until| *until > Instant::now())
    }

    pub fn remember(&self, calendar_id: &str, email: &str) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= Self::CAPACITY {
            entries.retain(|_, until| *until > now);
            if entries.len() >= Self::CAPACITY {
                entries.clear();
            }
        }
        entries.insert((calendar_id.to_owned(), email.to_owned()), now + Self::TTL);
    }
}

impl IdentityVerifier {
    pub fn new(settings: IdentitySettings) -> IdentityVerifier {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        IdentityVerifier {
            settings,
            http,
            keys: RwLock::new(KeySet::default()),
            fetching: tokio::sync::Mutex::new(()),
            fetches: Mutex::new(0),
            counts: IdentityCounts::default(),
            editors: EditorCache::default(),
        }
    }

    pub fn settings(&self) -> &IdentitySettings {
        &self.settings
    }

    /// How many times the key set was fetched (for tests and metrics).
    pub fn fetches(&self) -> u64 {
        *self.fetches.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fetches the key set now (at startup, so the first request does not wait for it).
    pub async fn prefetch(&self) {
        if let Err(e) = self.refresh(None).await {
            warn!(certs_url = %self.settings.certs_url, error = %e, "could not fetch the identity token keys; retrying at the first request");
        }
    }

    /// Checks a token; `now` is seconds since the epoch.
    pub async fn verify(&self, token: &str, now: i64) -> Result<Identity, IdentityError> {
        let refused = |why: &str| IdentityError::Refused(why.to_owned());
        if token.is_empty() {
            return Err(refused("no identity token (X-Confsync-Identity)"));
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(refused("the token is too long"));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(refused("not a compact JWT (three dot-separated parts)"));
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| refused("a part is not base64url"))
        };
        let header: Value =
            serde_json::from_slice(&decode(h)?).map_err(|_| refused("the header is not JSON"))?;
        let claims: Value =
            serde_json::from_slice(&decode(p)?).map_err(|_| refused("the claims are not JSON"))?;
        let signature = decode(s)?;
        if header.get("alg").and_then(Value::as_str) != Some("RS256") {
            return Err(refused("alg must be RS256"));
        }
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .filter(|k| !k.is_empty() && k.len() <= 128)
            .ok_or_else(|| refused("the header names no key (kid)"))?;
        let identity = self.check_claims(&claims, now)?;
        let key = self.key(kid).await?;
        aws_lc_rs::signature::RsaPublicKeyComponents {
            n: &key.n,
            e: &key.e,
        }
        .verify(
            &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
            &token.as_bytes()[..h.len() + 1 + p.len()],
            &signature,
        )
        .map_err(|_| refused("bad signature"))?;
        Ok(identity)
    }

    fn check_claims(&self, claims: &Value, now: i64) -> Result<Identity, IdentityError> {
        let refused = |why: String| Err(IdentityError::Refused(why));
        let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
        if !self.settings.issuers.iter().any(|i| i == iss) {
            return refused("the issuer (iss) is not an accepted one".into());
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(aud)) => self.settings.audiences.contains(aud),
            // OpenID Connect allows a list; then each must be ours (Google sends a string).
            Some(Value::Array(list)) => {
                !list.is_empty()
                    && list.iter().all(|a| {
                        a.as_str()
                            .is_some_and(|a| self.settings.audiences.iter().any(|x| x == a))
                    })
            }
            _ => false,
        };
        if !aud_ok {
            return refused("the token is for another audience (aud): not this add-on".into());
        }
        let (Some(exp), Some(iat)) = (
            claims.get("exp").and_then(Value::as_i64),
            claims.get("iat").and_then(Value::as_i64),
        ) else {
            return refused("exp and iat must be numbers".into());
        };
        if exp <= now.saturating_sub(CLOCK_SKEW_SECONDS) {
            return refused("the token has expired".into());
        }
        if iat > now.saturating_add(CLOCK_SKEW_SECONDS)
            || exp <= iat
            || exp.saturating_sub(iat) > MAX_LIFETIME_SECONDS
        {
            return refused("the token's issue and expiry times are not sane".into());
        }
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .ok_or_else(|| IdentityError::Refused("no subject (sub)".into()))?;
        let email = claims
            .get("email")
            .and_then(Value::as_str)
            .filter(|e| e.contains('@') && e.len() <= 254 && !e.chars().any(char::is_control))
            .ok_or_else(|| {
                IdentityError::Refused("no email: the add-on needs the userinfo.email scope".into())
            })?;
        let verified = match claims.get("email_verified") {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true",
            _ => false,
        };
        if !verified {
            return refused("the email is not verified (email_verified)".into());
        }
        Ok(Identity {
            email: email.to_ascii_lowercase(),
            subject: subject.to_owned(),
        })
    }

    /// The key named `kid`: from the cache while it is fresh; else after a fetch (an expired
    /// set, or an unknown kid and no fetch within the floor).
    async fn key(&self, kid: &str) -> Result<RsaKey, IdentityError> {
        if let Some(key) = self.cached(kid, true) {
            return Ok(key);
        }
        match self.refresh(Some(kid)).await {
            Ok(()) => {}
            Err(e) => {
                // Keys already held stay good while the issuer cannot be reached.
                if let Some(key) = self.cached(kid, false) {
                    return Ok(key);
                }
                if self.read().keys.is_empty() {
                    return Err(IdentityError::Unavailable(e));
                }
                return Err(IdentityError::Refused(format!("unknown signing key ({e})")));
            }
        }
        self.cached(kid, false).ok_or_else(|| {
            IdentityError::Refused(
                "the token is signed with a key the issuer does not publish".into(),
            )
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, KeySet> {
        self.keys.read().unwrap_or_else(|p| p.into_inner())
    }

    fn cached(&self, kid: &str, fresh_only: bool) -> Option<RsaKey> {
        let set = self.read();
        if fresh_only && set.fresh_until.is_none_or(|t| t <= Instant::now()) {
            return None;
        }
        set.keys.get(kid).cloned()
    }

    /// Fetches the key set if allowed: it is stale, or `kid` is missing and the last attempt is
    /// older than the floor. Err only when a fetch was made and failed, or was not allowed.
    async fn refresh(&self, kid: Option<&str>) -> Result<(), String> {
        let _one = self.fetching.lock().await;
        {
            let set = self.read();
            let stale = set.fresh_until.is_none_or(|t| t <= Instant::now());
            let missing = kid.is_some_and(|k| !set.keys.contains_key(k));
            if !stale && !missing {
                return Ok(()); // someone else fetched meanwhile
            }
            let recent = set
                .last_attempt
                .is_some_and(|t| t.elapsed() < self.settings.refetch_floor);
            if recent {
                return if stale && set.keys.is_empty() {
                    Err("the key set could not be fetched recently".into())
                } else if missing {
                    Err("the key set was fetched moments ago".into())
                } else {
                    Ok(())
                };
            }
        }
        self.write().last_attempt = Some(Instant::now());
        *self.fetches.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        let (keys, max_age) = self.fetch().await?;
        let count = keys.len();
        let mut set = self.write();
        set.keys = keys;
        set.fresh_until = Some(Instant::now() + max_age);
        drop(set);
        info!(
            keys = count,
            max_age_s = max_age.as_secs(),
            "fetched the identity token keys"
        );
        Ok(())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, KeySet> {
        self.keys.write().unwrap_or_else(|p| p.into_inner())
    }

    async fn fetch(&self) -> Result<(HashMap<String, RsaKey>, Duration), String> {
        let response = self
            .http
            .get(&self.settings.certs_url)
            .send()
            .await
            .map_err(|e| format!("fetching the key set failed: {}", e.without_url()))?;
        if !response.status().is_success() {
            return Err(format!("the key set answered {}", response.status()));
        }
        let max_age = response
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age)
            .map(|s| Duration::from_secs(s).clamp(MIN_CACHE, MAX_CACHE))
            .unwrap_or(DEFAULT_CACHE);
        if response
            .content_length()
            .is_some_and(|l| l > MAX_JWKS_BYTES as u64)
        {
            return Err("the key set is too large".into());
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("reading the key set failed: {}", e.without_url()))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err("the key set is too large".into());
        }
        let keys = parse_jwks(&body)?;
        Ok((keys, max_age))
    }
}

/// `max-age=N` of a Cache-Control header.
fn max_age(header: &str) -> Option<u64> {
    header.split(',').find_map(|d| {
        let (name, value) = d.trim().split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("max-age")
            .then(|| value.trim().trim_matches('"').parse().ok())
            .flatten()
    })
}

/// The RSA signing keys of a JWKS, by key id (other keys are skipped).
fn parse_jwks(body: &[u8]) -> Result<HashMap<String, RsaKey>, String> {
    let doc: Value = serde_json::from_slice(body).map_err(|_| "the key set is not JSON")?;
    let list = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the key set has no keys")?;
    let mut keys = HashMap::new();
    for key in list {
        let field = |name: &str| key.get(name).and_then(Value::as_str);
        if field("kty") != Some("RSA")
            || field("alg").is_some_and(|a| a != "RS256")
            || field("use").is_some_and(|u| u != "sig")
        {
            continue;
        }
        let (Some(kid), Some(n), Some(e)) = (field("kid"), field("n"), field("e")) else {
            continue;
        };
        let (Ok(n), Ok(e)) = (URL_SAFE_NO_PAD.decode(n), URL_SAFE_NO_PAD.decode(e)) else {
            continue;
        };
        // Without leading zeros, as aws-lc wants them.
        let strip = |v: Vec<u8>| {
            let first = v.iter().position(|b| *b != 0).unwrap_or(v.len());
            v[first..].to_vec()
        };
        keys.insert(
            kid.to_owned(),
            RsaKey {
                n: strip(n),
                e: strip(e),
            },
        );
    }
    if keys.is_empty() {
        return Err("the key set has no RS256 signing key".into());
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_max_age() {
        assert_eq!(
            max_age("public, max-age=19845, must-revalidate, no-transform"),
            Some(19845)
        );
        assert_eq!(max_age("no-store"), None);
        assert_eq!(max_age("Max-Age=5"), Some(5));
    }

    #[test]
    fn claims_are_checked() {
        let v = IdentityVerifier::new(IdentitySettings::google(vec!["aud-1".into()]));
        let now = 1_800_000_000;
        let good = serde_json::json!({"iss": "https://accounts.google.com", "aud": "aud-1", "sub": "1", "email": "A@x.io", "email_verified": true, "iat": now - 100, "exp": now + 3500});
        assert_eq!(v.check_claims(&good, now).unwrap().email, "a@x.io");
        let with = |k: &str, value: Value| {
            let mut c = good.clone();
            c[k] = value;
            v.check_claims(&c, now)
        };
        assert!(with("iss", "https://evil.example".into()).is_err());
        assert!(with("iss", "accounts.google.com".into()).is_ok());
        assert!(with("aud", "aud-2".into()).is_err());
        assert!(with("aud", serde_json::json!(["aud-1", "aud-2"])).is_err());
        assert!(with("exp", (now - 61).into()).is_err());
        assert!(with("exp", (now - 30).into()).is_ok(), "skew");
        assert!(with("iat", (now + 600).into()).is_err());
        assert!(with("exp", (now + 90_000).into()).is_err(), "a day at most");
        assert!(with("email_verified", false.into()).is_err());
        assert!(with("email_verified", "true".into()).is_ok());
        assert!(with("email", Value::Null).is_err());
        assert!(with("sub", "".into()).is_err());
    }
}
