//! Per-user Google OAuth: users connect their own calendars through
//! `/oauth/google/start` -> Google -> `/oauth/google/callback` (authorization code with PKCE),
//! and [`UserCalendars`] reaches each calendar with its owner's refresh token.
//!
//! - Starting needs a link the service minted ([`UserCalendars::start_link`], in the
//!   AUTHENTICATION answers of the add-on API): the calendar, the user it is for (the identity
//!   token's email, when identities are verified) and an expiry ([`LINK_LIFETIME`]), signed
//!   (HMAC-SHA256 under a key of its own, [`UserCalendars::with_link_key`]). A start without a
//!   valid link is refused (400) before anything is stored.
//! - The PKCE verifier waits in the store (sealed, with the user the link was for) under the
//!   hash of a random `state`, for ten minutes and one callback; a replayed or forged `state`
//!   finds nothing. At most [`UserCalendars::with_max_pending`] requests wait at once (expired
//!   ones are dropped first; when full, starting answers 503 until some complete or expire).
//! - The callback refuses (403, nothing changed, a log line for the operator) an account other
//!   than the one the link was for, and a calendar whose owner (recorded, or implied by its id)
//!   is another user: a recorded owner is never replaced (one conditional write).
//! - Refresh tokens are stored sealed with AES-256-GCM ([`TokenCipher`]), bound to the user id:
//!   a sealed token copied to another user's row does not open. The key is in config, never in
//!   the database or logs.
//! - A calendar's owner is the user recorded for it (the first to connect it), or, when none
//!   is, the user whose email is the calendar id (a primary calendar).
//! - A revoked or expired grant (`invalid_grant`) marks the user as needing re-authorisation:
//!   their calendars fail fast without a token request or an API call (no retry storm), show in
//!   `/v1/status`, the status page and `confsync_calendars_needing_reauth`, and their pending
//!   write-backs wait. Connecting again clears the mark and syncs the calendars.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use confsync_engine::calendar::google::GoogleCalendar;
use confsync_engine::calendar::{CalendarApi, CalendarError, Route};
use confsync_gcal::auth::{AuthCodeFlow, PkceVerifier, TokenCipher};
use confsync_gcal::{Client, RetryPolicy};
use confsync_store::Store;
use serde_json::Value;
use tracing::{info, warn};

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// How long an authorization request waits for its callback.
pub const REQUEST_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// Longest `login_hint` passed on to Google (an email is at most 254 characters, a Google
/// account's `sub` at most 255).
pub const MAX_LOGIN_HINT: usize = 255;

/// How long a start link minted by the API stays valid.
pub const LINK_LIFETIME: Duration = Duration::from_secs(10 * 60);

/// Authorization requests waiting for their callback at most, by default.
pub const DEFAULT_MAX_PENDING: u32 = 1000;

/// What per-user OAuth needs.
pub struct GoogleOAuth {
    /// The OAuth client and endpoints; `redirect_uri` is `{public_url}oauth/google/callback`.
    pub flow: AuthCodeFlow,
    /// Seals refresh tokens and verifiers at rest.
    pub cipher: TokenCipher,
    /// Calendar's REST root (`https://www.googleapis.com/` or the emulator's base URL).
    pub calendar_base_url: String,
    pub retry: RetryPolicy,
}

impl GoogleOAuth {
    /// A calendar client acting as the holder of `refresh_token`.
    fn client(
        &self,
        user_id: &str,
        refresh_token: String,
        access: Option<(String, Duration)>,
    ) -> Result<Client, String> {
        let mut tokens = self.flow.token_source(refresh_token).with_account(user_id);
        if let Some((token, expires_in)) = access {
            tokens = tokens.with_access_token(token, expires_in);
        }
        Client::new(
            &self.calendar_base_url,
            Arc::new(tokens),
            self.retry.clone(),
        )
        .map_err(|e| e.to_string())
    }
}

/// Hex SHA-256 of an OAuth `state` (the store keys requests by it, never by the state itself).
pub fn state_hash(state: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, state.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The user a calendar id names by itself: a primary calendar's id is its owner's email.
/// Group and resource calendars (`...calendar.google.com`) name nobody.
pub fn implied_owner(calendar_id: &str) -> Option<String> {
    (calendar_id.contains('@') && !calendar_id.ends_with("calendar.google.com"))
        .then(|| calendar_id.to_ascii_lowercase())
}

/// Why a connect attempt failed, as shown to the user on the callback page.
#[derive(Debug)]
pub struct ConnectError {
    /// 400 for the user's or Google's refusal, 502/503 for failures worth retrying.
    pub status: u16,
    pub message: String,
}

impl ConnectError {
    fn bad(message: impl Into<String>) -> ConnectError {
        ConnectError {
            status: 400,
            message: message.into(),
        }
    }
    fn refused(message: impl Into<String>) -> ConnectError {
        ConnectError {
            status: 403,
            message: message.into(),
        }
    }
    fn upstream(message: impl Into<String>) -> ConnectError {
        ConnectError {
            status: 502,
            message: message.into(),
        }
    }
    fn store(e: confsync_store::StoreError) -> ConnectError {
        warn!(error = %e, "store failure during OAuth");
        ConnectError {
            status: 503,
            message: "the service's database is unavailable; try again".into(),
        }
    }
}

/// A connected user: who, and which calendar they asked to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    pub user_id: String,
    pub calendar_id: Option<String>,
}

/// Calendars reached with their owners' grants.
pub struct UserCalendars {
    oauth: Arc<GoogleOAuth>,
    store: Store,
    clients: Mutex<HashMap<String, Arc<GoogleCalendar>>>,
    max_pending: u32,
    link_key: [u8; 32],
}

impl UserCalendars {
    pub fn new(oauth: Arc<GoogleOAuth>, store: Store) -> UserCalendars {
        UserCalendars {
            oauth,
            store,
            clients: Mutex::new(HashMap::new()),
            max_pending: DEFAULT_MAX_PENDING,
            link_key: random_key(),
        }
    }

    /// Start links are signed with a key derived from `secret` (domain-separated). Without it
    /// the key is random for this process (links die with it; several instances disagree).
    pub fn with_link_key(mut self, secret: &[u8]) -> UserCalendars {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret);
        let tag = aws_lc_rs::hmac::sign(&key, b"confsync oauth start links v1");
        self.link_key.copy_from_slice(tag.as_ref());
        self
    }

    fn link_signature(&self, calendar_id: &str, user: &str, expires: i64) -> String {
        use base64::Engine;
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &self.link_key);
        let tag = aws_lc_rs::hmac::sign(
            &key,
            format!("start\n{calendar_id}\n{user}\n{expires}").as_bytes(),
        );
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&tag.as_ref()[..16])
    }

    /// The query of a start link (`calendar=&user=&expires=&sig=`) for `calendar_id`, bound to
    /// `user` (the verified caller; None when identities are not verified), valid for
    /// [`LINK_LIFETIME`].
    pub fn start_link(&self, calendar_id: &str, user: Option<&str>, now_ms: i64) -> String {
        let expires = now_ms / 1000 + LINK_LIFETIME.as_secs() as i64;
        let user = user.unwrap_or("");
        let enc = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
        let mut query = format!("calendar={}", enc(calendar_id));
        if !user.is_empty() {
            query.push_str(&format!("&user={}", enc(user)));
        }
        query.push_str(&format!(
            "&expires={expires}&sig={}",
            self.link_signature(calendar_id, user, expires)
        ));
        query
    }

    /// Checks a start link's parameters (constant-time signature comparison).
    pub fn check_link(
        &self,
        calendar_id: &str,
        user: Option<&str>,
        expires: &str,
        signature: &str,
        now_ms: i64,
    ) -> Result<(), ConnectError> {
        let invalid = || {
            ConnectError::bad(
                "this sign-in link is not valid: open it again from Google Calendar (create the conference again)",
            )
        };
        let expires: i64 = expires.parse().map_err(|_| invalid())?;
        let expected = self.link_signature(calendar_id, user.unwrap_or(""), expires);
        aws_lc_rs::constant_time::verify_slices_are_equal(
            expected.as_bytes(),
            signature.as_bytes(),
        )
        .map_err(|_| invalid())?;
        if now_ms / 1000 > expires {
            return Err(ConnectError::bad(
                "this sign-in link has expired: create the conference again in Google Calendar for a new one",
            ));
        }
        Ok(())
    }

    /// At most `max_pending` authorization requests wait for their callback at once (at least
    /// one).
    pub fn with_max_pending(mut self, max_pending: u32) -> UserCalendars {
        self.max_pending = max_pending.max(1);
        self
    }

    pub fn oauth(&self) -> &Arc<GoogleOAuth> {
        &self.oauth
    }

    /// Begins a connect (after [`UserCalendars::check_link`]): answers the URL to send the
    /// browser to. The verifier is kept (sealed, with `user`) for the callback; `calendar_id` is
    /// the calendar to connect, `user` the account the link was for (None: any account).
    pub async fn start(
        &self,
        calendar_id: &str,
        user: Option<&str>,
        now_ms: i64,
    ) -> Result<String, ConnectError> {
        crate::validate_id(crate::IdKind::Calendar, calendar_id)
            .map_err(|e| ConnectError::bad(format!("calendar: {e}")))?;
        let implied = implied_owner(calendar_id);
        let login_hint = user.or(implied.as_deref());
        if let Some(hint) = login_hint
            && (hint.len() > MAX_LOGIN_HINT
                || hint.chars().any(|c| c.is_control() || c.is_whitespace()))
        {
            return Err(ConnectError::bad(format!(
                "login_hint must be an email: at most {MAX_LOGIN_HINT} printable characters"
            )));
        }
        let state = random_state().map_err(ConnectError::upstream)?;
        let (url, verifier) = self
            .oauth
            .flow
            .start(&state, login_hint)
            .map_err(|e| ConnectError::upstream(e.to_string()))?;
        let hash = state_hash(&state);
        let sealed = self
            .oauth
            .cipher
            .encrypt(
                &format!("{}\n{}", verifier.secret(), user.unwrap_or("")),
                &hash,
            )
            .map_err(|e| ConnectError::upstream(e.to_string()))?;
        let stale_before = now_ms - REQUEST_LIFETIME.as_millis() as i64;
        let stored = self
            .store
            .oauth_request_put(
                &hash,
                &sealed,
                Some(calendar_id),
                now_ms,
                stale_before,
                self.max_pending,
            )
            .await
            .map_err(ConnectError::store)?;
        if !stored {
            warn!(
                max_pending = self.max_pending,
                "too many authorization requests waiting: refusing to start another"
            );
            return Err(ConnectError {
                status: 503,
                message: "too many sign-ins are in progress: try again in a few minutes".into(),
            });
        }
        Ok(url)
    }

    /// Completes a connect: checks `state`, exchanges the code, learns who the user is, stores
    /// the sealed refresh token and, if asked, records the user as the calendar's owner (after
    /// checking they can read it).
    pub async fn callback(
        &self,
        code: &str,
        state: &str,
        now_ms: i64,
    ) -> Result<Connected, ConnectError> {
        let hash = state_hash(state);
        let request = self
            .store
            .oauth_request_take(&hash)
            .await
            .map_err(ConnectError::store)?
            .ok_or_else(|| {
                ConnectError::bad("unknown or already used authorization request: start again")
            })?;
        if now_ms - request.created_at > REQUEST_LIFETIME.as_millis() as i64 {
            return Err(ConnectError::bad(
                "the authorization request expired: start again",
            ));
        }
        let (verifier, bound_user) = self
            .oauth
            .cipher
            .decrypt(&request.verifier_sealed, &hash)
            .ok()
            .and_then(|secret| {
                let (verifier, user) = match secret.split_once('\n') {
                    Some((v, u)) => (v.to_owned(), Some(u.to_owned()).filter(|u| !u.is_empty())),
                    None => (secret, None),
                };
                PkceVerifier::from_secret(verifier).ok().map(|v| (v, user))
            })
            .ok_or_else(|| {
                ConnectError::bad("the authorization request cannot be read: start again")
            })?;
        let grant = self
            .oauth
            .flow
            .exchange(code, &verifier)
            .await
            .map_err(|e| {
                if e.is_invalid_grant() {
                    ConnectError::bad(
                        "Google refused the authorization code (used or expired): start again",
                    )
                } else {
                    ConnectError::upstream(format!("the token exchange failed: {e}"))
                }
            })?;
        if !grant.has_scopes(&self.oauth.flow.scopes) {
            return Err(ConnectError::bad(
                "calendar access was not granted: start again and allow access to your calendars",
            ));
        }
        let refresh_token = grant.refresh_token.clone().ok_or_else(|| {
            ConnectError::bad("Google returned no refresh token: remove confsync's access in your Google account settings, then start again")
        })?;
        // Who is this? The user's primary calendar id is their email.
        let probe = self
            .oauth
            .client(
                "the connecting user",
                refresh_token.clone(),
                Some((grant.access_token.clone(), grant.expires_in)),
            )
            .map_err(ConnectError::upstream)?;
        let primary = probe
            .get_calendar("primary")
            .await
            .map_err(|e| ConnectError::upstream(format!("reading your calendar failed: {e}")))?;
        let user_id = primary
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            .ok_or_else(|| ConnectError::upstream("Google's answer names no calendar id"))?;
        if let Some(bound) = &bound_user
            && bound != &user_id
        {
            warn!(link_user = %bound, signed_in = %user_id, "OAuth callback refused: the account is not the one the sign-in link was for");
            return Err(ConnectError::refused(format!(
                "This sign-in link was made for {bound}, but you signed in as {user_id}. Nothing was changed: sign in as {bound}."
            )));
        }
        if let Some(calendar_id) = &request.calendar_id {
            self.check_not_owned_by_other(calendar_id, &user_id).await?;
        }
        if let Some(calendar_id) = &request.calendar_id
            && calendar_id != &user_id
        {
            probe.get_calendar(calendar_id).await.map_err(|e| {
                ConnectError::bad(format!(
                    "{user_id} cannot read calendar {calendar_id}: {}",
                    e.kind()
                ))
            })?;
        }
        let sealed = self
            .oauth
            .cipher
            .encrypt(&refresh_token, &user_id)
            .map_err(|e| ConnectError::upstream(e.to_string()))?;
        self.store
            .user_connect(&user_id, &sealed, grant.scope.as_deref(), now_ms)
            .await
            .map_err(ConnectError::store)?;
        if let Some(calendar_id) = &request.calendar_id
            && let Some(other) = self
                .store
                .calendar_claim_owner(calendar_id, &user_id, now_ms)
                .await
                .map_err(ConnectError::store)?
        {
            return Err(self.owned_by_other(calendar_id, &user_id, &other));
        }
        self.forget(&user_id);
        info!(user_id = %user_id, "user connected their Google account");
        Ok(Connected {
            user_id,
            calendar_id: request.calendar_id,
        })
    }

    /// Refuses when the calendar's owner (recorded, or implied by its id) is someone else.
    async fn check_not_owned_by_other(
        &self,
        calendar_id: &str,
        user_id: &str,
    ) -> Result<(), ConnectError> {
        let owner = self
            .owner(calendar_id)
            .await
            .map_err(|e| ConnectError::upstream(e.to_string()))?;
        match owner {
            Some(owner) if owner != user_id => {
                Err(self.owned_by_other(calendar_id, user_id, &owner))
            }
            _ => Ok(()),
        }
    }

    fn owned_by_other(&self, calendar_id: &str, user_id: &str, owner: &str) -> ConnectError {
        warn!(calendar_id, signed_in = %user_id, owner = %owner, "OAuth callback refused: the calendar belongs to another user; its owner is unchanged");
        ConnectError::refused(format!(
            "Calendar {calendar_id} is connected to confsync by another account. Nothing was changed: only its owner can connect it."
        ))
    }

    /// Drops the cached client of a user (after they connect again).
    pub fn forget(&self, user_id: &str) {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(user_id);
    }

    /// The calendar's owner: the recorded one, else the one its id implies.
    pub async fn owner(&self, calendar_id: &str) -> Result<Option<String>, CalendarError> {
        let recorded =
            self.store
                .calendar_owner(calendar_id)
                .await
                .map_err(|e| CalendarError::Retryable {
                    detail: e.to_string(),
                    retry_after: None,
                })?;
        Ok(recorded.or_else(|| implied_owner(calendar_id)))
    }

    /// Whether the calendar can be reached now (its owner connected and the grant is not
    /// marked revoked). Answers the reason when not.
    pub async fn check(&self, calendar_id: &str) -> Result<(), CalendarError> {
        self.calendar_for(calendar_id).await.map(|_| ())
    }

    async fn calendar_for(
        &self,
        calendar_id: &str,
    ) -> Result<(String, Arc<GoogleCalendar>), CalendarError> {
        let Some(user_id) = self.owner(calendar_id).await? else {
            return Err(CalendarError::Reauth {
                detail: format!(
                    "calendar {calendar_id} has no connected owner: its owner must connect it"
                ),
            });
        };
        if let Some(client) = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&user_id)
        {
            return Ok((user_id, client.clone()));
        }
        let user = self
            .store
            .user(&user_id)
            .await
            .map_err(|e| CalendarError::Retryable {
                detail: e.to_string(),
                retry_after: None,
            })?;
        let user = match user {
            None => {
                return Err(CalendarError::Reauth {
                    detail: format!("{user_id} has not connected their Google account"),
                });
            }
            Some(u) if u.needs_reauth => {
                return Err(CalendarError::Reauth {
                    detail: format!(
                        "{user_id} must connect their Google account again ({})",
                        u.reauth_reason
                            .as_deref()
                            .unwrap_or("the grant was revoked")
                    ),
                });
            }
            Some(u) => u,
        };
        let refresh_token = self
            .oauth
            .cipher
            .decrypt(&user.refresh_token_sealed, &user_id)
            .map_err(|_| CalendarError::Reauth {
                detail: format!(
                    "{user_id}'s stored grant cannot be opened with the configured key: they must connect again"
                ),
            })?;
        let client = self
            .oauth
            .client(&user_id, refresh_token, None)
            .map_err(|detail| CalendarError::Fatal { detail })?;
        let calendar = Arc::new(GoogleCalendar { client });
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(user_id.clone(), calendar.clone());
        Ok((user_id, calendar))
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn random_key() -> [u8; 32] {
    use aws_lc_rs::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random generator is available");
    bytes
}

fn random_state() -> Result<String, String> {
    use aws_lc_rs::rand::SecureRandom;
    use base64::Engine;
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "the system random generator failed".to_owned())?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Each call goes to the calendar's owner's client (wrap in
/// [`confsync_engine::calendar::Routed`] to use it as a calendar); an `invalid_grant` marks the
/// owner as needing re-authorisation, once.
impl Route for UserCalendars {
    fn route<'a>(
        &'a self,
        calendar_id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Arc<dyn CalendarApi>, CalendarError>> {
        Box::pin(async move {
            // A channel is stopped by the user who made it; an orphan's maker is unknown.
            let Some(calendar_id) = calendar_id else {
                return Err(CalendarError::Fatal {
                    detail: "an orphan channel's owner is unknown; it expires by itself".into(),
                });
            };
            let (_, calendar) = self.calendar_for(calendar_id).await?;
            let calendar: Arc<dyn CalendarApi> = calendar;
            Ok(calendar)
        })
    }

    fn failed<'a>(
        &'a self,
        calendar_id: Option<&'a str>,
        error: &'a CalendarError,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let (Some(calendar_id), CalendarError::Reauth { detail }) = (calendar_id, error) else {
                return;
            };
            let Ok(Some(user_id)) = self.owner(calendar_id).await else {
                return;
            };
            self.forget(&user_id);
            match self
                .store
                .user_needs_reauth(&user_id, "the grant was revoked or expired", now_ms())
                .await
            {
                Ok(true) => {
                    warn!(user_id = %user_id, calendar_id = %calendar_id, error = %detail, "grant revoked: the user's calendars wait for re-authorisation")
                }
                Ok(false) => {}
                Err(e) => warn!(user_id = %user_id, error = %e, "cannot record re-authorisation"),
            }
        })
    }
}
