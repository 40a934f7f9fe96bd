//! Google OAuth 2.0: where real access tokens come from, and how refresh tokens are kept.
//!
//! - [`ServiceAccountKey`] and [`ServiceAccountTokens`]: a service account's JSON key file and
//!   the JWT-bearer grant (RFC 7523), with domain-wide delegation through the `sub` claim.
//! - [`RefreshTokenTokens`]: the refresh-token grant for a user who authorised confsync.
//! - [`AuthCodeFlow`] and [`PkceVerifier`]: the authorization-code grant with PKCE (RFC 7636),
//!   which yields a [`Grant`] holding the refresh token.
//! - [`TokenCipher`]: AES-256-GCM for refresh tokens at rest.
//! - [`AuthError`]: token endpoint failures; [`AuthError::InvalidGrant`] (a revoked or expired
//!   grant) is the one that means "this account must be authorised again".
//!
//! Both token sources implement [`TokenSource`]: they cache the access token until five minutes
//! before it expires, refresh it under a lock so that concurrent callers cause one request, retry a
//! transient failure of the token endpoint once after a short pause, and remember an
//! `invalid_grant` so that a revoked account costs one token request, not one per API call (see
//! [`RefreshTokenTokens::needs_reauthorization`]). Through [`TokenSource`] an `invalid_grant`
//! surfaces as [`GcalError::Unauthorized`] with reason `invalid_grant`; [`is_invalid_grant`] tells
//! it apart from a refused access token.
//!
//! Secrets (private keys, assertions, client secrets, access and refresh tokens, PKCE verifiers,
//! encryption keys) never appear in `Debug` output, error messages or logs.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use chrono::Utc;
use reqwest::header;
use serde_json::{Value, json};

use crate::BoxFuture;
use crate::error::{ErrorContext, GcalError, parse_retry_after};
use crate::token::TokenSource;

/// Google's token endpoint (what key files name as `token_uri`).
pub const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// Google's authorization endpoint, where a user consents.
pub const GOOGLE_AUTH_URI: &str = "https://accounts.google.com/o/oauth2/v2/auth";

/// Full read/write access to a user's calendars.
pub const CALENDAR_SCOPE: &str = "https://www.googleapis.com/auth/calendar";

/// The `grant_type` of a service account's signed assertion (RFC 7523).
pub const JWT_BEARER_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The method name token endpoint failures carry in their [`ErrorContext`].
pub const TOKEN_METHOD: &str = "oauth2.token";

/// A cached access token is replaced this long before it expires (or at half its lifetime, if
/// that is shorter).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Default pause before the one retry of a transient token endpoint failure.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// Default time a service account that got `invalid_grant` waits before it asks again.
pub const DEFAULT_INVALID_GRANT_COOLDOWN: Duration = Duration::from_secs(600);

/// Timeout of one token request, connection to last body byte (the refresh lock is held
/// meanwhile, so a hung endpoint must not hold every caller for ever).
pub const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A `Retry-After` longer than this is not waited out inside a token request.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(5);

/// Lifetime of a service account's assertion (Google's maximum).
const ASSERTION_SECONDS: i64 = 3600;

/// Assumed lifetime when a token response has no `expires_in` (Google always sends one).
const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(3600);

/// At most this many characters of an `error_description` go into a message.
const DESCRIPTION_CHARS: usize = 200;

// --- errors ------------------------------------------------------------------------------

/// A failure to obtain a token, to read a key, or to start an authorization.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token endpoint answered `invalid_grant`: the refresh token was revoked or expired,
    /// the authorization code was used, expired or did not match its PKCE verifier, or the
    /// service account's assertion was refused (unknown subject, deleted key, clock skew).
    /// Retrying will not help; the account must be authorised again.
    #[error(
        "{context}; the grant was revoked or is no longer valid: the account must be authorised again"
    )]
    InvalidGrant {
        /// The token request, with Google's `error_description` as message.
        context: ErrorContext,
    },
    /// Any other token endpoint failure, classified like a Calendar API failure from the HTTP
    /// status: 5xx and transport failures are [`GcalError::Transient`], 429 is
    /// [`GcalError::RateLimited`], 400 (`invalid_request`, `invalid_scope`, ...) is
    /// [`GcalError::BadRequest`], 401 (`invalid_client`, `unauthorized_client`) is
    /// [`GcalError::Unauthorized`], and so on. The OAuth `error` code is the context's reason.
    #[error(transparent)]
    Endpoint(GcalError),
    /// The service account key file is unusable (not JSON, a missing field, a bad PEM key).
    #[error("invalid service account key: {message}")]
    InvalidKey {
        /// What is wrong (never the key material).
        message: String,
    },
    /// The OAuth settings are unusable (an endpoint that is not a URL, a malformed verifier).
    #[error("invalid OAuth configuration: {message}")]
    InvalidConfig {
        /// What is wrong.
        message: String,
    },
    /// Signing or random generation failed in the crypto library.
    #[error("OAuth cryptography failed: {message}")]
    Crypto {
        /// What failed.
        message: &'static str,
    },
}

impl AuthError {
    /// True for [`AuthError::InvalidGrant`].
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, AuthError::InvalidGrant { .. })
    }

    /// True when a later attempt may succeed (transient and rate-limited endpoint failures).
    pub fn is_retryable(&self) -> bool {
        matches!(self, AuthError::Endpoint(e) if e.is_retryable())
    }

    /// A stable snake_case name of the kind (`invalid_grant`, or the endpoint failure's
    /// [`GcalError::kind`]), for logs and metric labels.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthError::InvalidGrant { .. } => "invalid_grant",
            AuthError::Endpoint(e) => e.kind(),
            AuthError::InvalidKey { .. } => "invalid_key",
            AuthError::InvalidConfig { .. } => "invalid_config",
            AuthError::Crypto { .. } => "crypto",
        }
    }

    fn invalid_key(message: impl Into<String>) -> Self {
        AuthError::InvalidKey {
            message: message.into(),
        }
    }

    fn invalid_config(message: impl Into<String>) -> Self {
        AuthError::InvalidConfig {
            message: message.into(),
        }
    }
}

impl From<AuthError> for GcalError {
    /// [`AuthError::InvalidGrant`] becomes [`GcalError::Unauthorized`] with reason
    /// `invalid_grant` (not retryable; see [`is_invalid_grant`]); key and configuration problems
    /// become [`GcalError::InvalidConfig`].
    fn from(error: AuthError) -> GcalError {
        match error {
            AuthError::InvalidGrant { context } => GcalError::Unauthorized { context },
            AuthError::Endpoint(e) => e,
            AuthError::InvalidKey { message } => GcalError::InvalidConfig {
                message: format!("service account key: {message}"),
            },
            AuthError::InvalidConfig { message } => GcalError::InvalidConfig { message },
            AuthError::Crypto { message } => {
                let mut context = ErrorContext::new(TOKEN_METHOD, "");
                context.message = message.to_owned();
                GcalError::Unexpected { context }
            }
        }
    }
}

/// True when a Calendar call failed because the account's grant is gone (`invalid_grant` from
/// the token endpoint): the account's calendars need re-authorisation, and retrying is useless.
pub fn is_invalid_grant(error: &GcalError) -> bool {
    matches!(error, GcalError::Unauthorized { context }
        if context.method == TOKEN_METHOD && context.reason.as_deref() == Some("invalid_grant"))
}

// --- the token endpoint ------------------------------------------------------------------

/// A successful token response.
struct TokenResponse {
    access_token: String,
    expires_in: Duration,
    refresh_token: Option<String>,
    scope: Option<String>,
}

/// A form field: name and value (values may be secrets; never logged).
type Form = Vec<(&'static str, String)>;

/// One token endpoint, with its request counter.
struct Endpoint {
    http: reqwest::Client,
    token_uri: String,
    /// What the requests are for (`service account x as y`), for errors and logs.
    target: String,
    retry_backoff: Duration,
    requests: AtomicU64,
}

impl Endpoint {
    fn new(http: reqwest::Client, token_uri: String, target: String) -> Self {
        Endpoint {
            http,
            token_uri,
            target,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
            requests: AtomicU64::new(0),
        }
    }

    /// POSTs `form`; with `retry`, a retryable failure is tried once more after a short pause.
    async fn request(&self, form: &Form, retry: bool) -> Result<TokenResponse, AuthError> {
        let mut retried = !retry;
        loop {
            let error = match self.attempt(form).await {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            let AuthError::Endpoint(failure) = &error else {
                return Err(error);
            };
            if retried || !failure.is_retryable() {
                return Err(error);
            }
            let delay = failure
                .retry_after()
                .unwrap_or(self.retry_backoff)
                .max(self.retry_backoff);
            if delay > MAX_INLINE_WAIT {
                return Err(error);
            }
            retried = true;
            tracing::warn!(
                target_account = %self.target,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                error = %failure,
                "token request failed; retrying once"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(&self, form: &Form) -> Result<TokenResponse, AuthError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let transport = |e: reqwest::Error| {
            AuthError::Endpoint(GcalError::from_transport(
                TOKEN_METHOD,
                self.target.clone(),
                e,
            ))
        };
        let response = self
            .http
            .post(&self.token_uri)
            .header(header::ACCEPT, "application/json")
            .timeout(TOKEN_REQUEST_TIMEOUT)
            .form(form)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Utc::now()));
        let body = response.bytes().await.map_err(transport)?;
        if (200..300).contains(&status) {
            parse_token_response(&body).map_err(|why| {
                let mut context = ErrorContext::new(TOKEN_METHOD, self.target.clone());
                context.status = Some(status);
                // The body is not quoted: it holds tokens.
                context.message = format!("{why} ({} bytes)", body.len());
                AuthError::Endpoint(GcalError::Decode { context })
            })
        } else {
            Err(token_error(&self.target, status, retry_after, &body))
        }
    }
}

/// Reads `{"access_token", "expires_in", "refresh_token"?, "scope"?}`; the error says what is
/// wrong without quoting values.
fn parse_token_response(body: &[u8]) -> Result<TokenResponse, &'static str> {
    let value: Value =
        serde_json::from_slice(body).map_err(|_| "the token response is not JSON")?;
    let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
    let access_token = text("access_token")
        .filter(|t| !t.is_empty())
        .ok_or("the token response has no access_token")?;
    let expires_in = match value.get("expires_in") {
        None | Some(Value::Null) => DEFAULT_EXPIRES_IN,
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Duration::from_secs)
            .ok_or("the token response's expires_in is not a number of seconds")?,
        // Some servers send the number as a string.
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| "the token response's expires_in is not a number of seconds")?,
        Some(_) => return Err("the token response's expires_in is not a number of seconds"),
    };
    Ok(TokenResponse {
        access_token,
        expires_in,
        refresh_token: text("refresh_token").filter(|t| !t.is_empty()),
        scope: text("scope").filter(|s| !s.is_empty()),
    })
}

/// Classifies a token endpoint error response: `{"error": "...", "error_description": "..."}`
/// as OAuth defines it, or anything else by status like a Calendar API failure.
fn token_error(target: &str, status: u16, retry_after: Option<Duration>, body: &[u8]) -> AuthError {
    let oauth = serde_json::from_slice::<Value>(body).ok().and_then(|v| {
        let error = v.get("error")?.as_str()?.to_owned();
        let description = v
            .get("error_description")
            .and_then(Value::as_str)
            .map(clean_description)
            .unwrap_or_default();
        Some((error, description))
    });
    let Some((error, description)) = oauth else {
        return AuthError::Endpoint(GcalError::from_response(
            TOKEN_METHOD,
            target,
            status,
            retry_after,
            body,
        ));
    };
    let mut context = ErrorContext::new(TOKEN_METHOD, target);
    context.status = Some(status);
    context.message = description;
    if error == "invalid_grant" {
        context.reason = Some(error);
        return AuthError::InvalidGrant { context };
    }
    context.reason = Some(clean_description(&error));
    AuthError::Endpoint(GcalError::classify(context, retry_after))
}

/// A single line of at most [`DESCRIPTION_CHARS`] characters.
fn clean_description(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(DESCRIPTION_CHARS)
        .collect();
    if text.chars().count() > DESCRIPTION_CHARS {
        out.push('…');
    }
    out
}

// --- the cache shared by both token sources ----------------------------------------------

/// How long a token that lives `expires_in` is served from the cache: until [`REFRESH_MARGIN`]
/// before it expires, or half its lifetime if that is shorter.
pub fn cache_lifetime(expires_in: Duration) -> Duration {
    expires_in - REFRESH_MARGIN.min(expires_in / 2)
}

struct Cached {
    value: String,
    refresh_at: Instant,
}

/// A remembered `invalid_grant`.
struct Revoked {
    context: ErrorContext,
    at: Instant,
}

#[derive(Default)]
struct CacheState {
    token: Option<Cached>,
    revoked: Option<Revoked>,
}

/// The endpoint plus the cached token, the single-flight lock and the remembered revocation.
struct Core {
    endpoint: Endpoint,
    state: Mutex<CacheState>,
    refresh: tokio::sync::Mutex<()>,
    /// After an `invalid_grant`, how long to answer it without asking (None: for ever).
    invalid_grant_cooldown: Option<Duration>,
}

impl Core {
    fn new(endpoint: Endpoint, invalid_grant_cooldown: Option<Duration>) -> Self {
        Core {
            endpoint,
            state: Mutex::new(CacheState::default()),
            refresh: tokio::sync::Mutex::new(()),
            invalid_grant_cooldown,
        }
    }

    fn state(&self) -> MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached token if it is still fresh; the remembered `invalid_grant` if there is one.
    fn cached(&self) -> Result<Option<String>, AuthError> {
        let mut state = self.state();
        if let Some(revoked) = &state.revoked {
            let cooled = self
                .invalid_grant_cooldown
                .is_some_and(|cooldown| revoked.at.elapsed() >= cooldown);
            if !cooled {
                return Err(AuthError::InvalidGrant {
                    context: revoked.context.clone(),
                });
            }
            state.revoked = None;
        }
        let now = Instant::now();
        Ok(state
            .token
            .as_ref()
            .filter(|t| t.refresh_at > now)
            .map(|t| t.value.clone()))
    }

    /// A fresh token: from the cache, or from one request (`form` builds its fields) that
    /// concurrent callers wait for.
    async fn token(
        &self,
        form: impl FnOnce() -> Result<Form, AuthError>,
    ) -> Result<String, AuthError> {
        if let Some(token) = self.cached()? {
            return Ok(token);
        }
        let _single_flight = self.refresh.lock().await;
        if let Some(token) = self.cached()? {
            return Ok(token);
        }
        let form = form()?;
        let started = Instant::now();
        match self.endpoint.request(&form, true).await {
            Ok(response) => {
                tracing::debug!(
                    target_account = %self.endpoint.target,
                    expires_in_s = response.expires_in.as_secs(),
                    "access token obtained"
                );
                self.state().token = Some(Cached {
                    value: response.access_token.clone(),
                    refresh_at: started + cache_lifetime(response.expires_in),
                });
                Ok(response.access_token)
            }
            Err(AuthError::InvalidGrant { context }) => {
                tracing::warn!(
                    target_account = %self.endpoint.target,
                    error = %context,
                    "invalid_grant: the account needs to be authorised again"
                );
                let mut state = self.state();
                state.token = None;
                state.revoked = Some(Revoked {
                    context: context.clone(),
                    at: Instant::now(),
                });
                Err(AuthError::InvalidGrant { context })
            }
            Err(error) => Err(error),
        }
    }

    fn invalidate(&self) {
        self.state().token = None;
    }

    fn needs_reauthorization(&self) -> bool {
        self.cached().is_err()
    }

    fn seed(&self, access_token: String, expires_in: Duration) {
        self.state().token = Some(Cached {
            value: access_token,
            refresh_at: Instant::now() + cache_lifetime(expires_in),
        });
    }
}

// --- service accounts --------------------------------------------------------------------

/// A service account's JSON key file, as the Google Cloud console downloads it.
///
/// Read: `type` (must be `service_account`), `client_email`, `private_key` (PEM, PKCS#8
/// `BEGIN PRIVATE KEY` as Google issues it; PKCS#1 `BEGIN RSA PRIVATE KEY` is accepted too),
/// `private_key_id` (the JWT's `kid`; optional) and `token_uri`; other fields are ignored. The
/// private key is parsed once, here, and never printed.
#[derive(Clone)]
pub struct ServiceAccountKey {
    client_email: String,
    private_key_id: Option<String>,
    token_uri: String,
    project_id: Option<String>,
    key_pair: Arc<RsaKeyPair>,
}

impl fmt::Debug for ServiceAccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountKey")
            .field("client_email", &self.client_email)
            .field("private_key_id", &self.private_key_id)
            .field("token_uri", &self.token_uri)
            .field("project_id", &self.project_id)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl ServiceAccountKey {
    /// Parses a key file's text. Errors name the missing or malformed field.
    pub fn from_json(text: &str) -> Result<ServiceAccountKey, AuthError> {
        let value: Value = serde_json::from_str(text).map_err(|e| {
            // serde_json's syntax errors name a line and column, never content.
            AuthError::invalid_key(format!("the key file is not JSON: {e}"))
        })?;
        if !value.is_object() {
            return Err(AuthError::invalid_key("the key file is not a JSON object"));
        }
        let optional = |name: &str| -> Result<Option<String>, AuthError> {
            match value.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
                Some(_) => Err(AuthError::invalid_key(format!(
                    "field `{name}` must be a string"
                ))),
            }
        };
        let required = |name: &str| -> Result<String, AuthError> {
            optional(name)?.ok_or_else(|| AuthError::invalid_key(format!("missing field `{name}`")))
        };
        let kind = required("type")?;
        if kind != "service_account" {
            return Err(AuthError::invalid_key(format!(
                "`type` is {kind:?}, expected \"service_account\" (is this an OAuth client or user credentials file?)"
            )));
        }
        let client_email = required("client_email")?;
        if !client_email.contains('@') {
            return Err(AuthError::invalid_key(
                "`client_email` is not an email address",
            ));
        }
        let token_uri = required("token_uri")?;
        check_http_url("token_uri", &token_uri).map_err(AuthError::invalid_key)?;
        let key_pair = parse_private_key(&required("private_key")?)?;
        Ok(ServiceAccountKey {
            client_email,
            private_key_id: optional("private_key_id")?,
            token_uri,
            project_id: optional("project_id")?,
            key_pair: Arc::new(key_pair),
        })
    }

    /// Reads and parses a key file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<ServiceAccountKey, AuthError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthError::invalid_key(format!("cannot read {}: {e}", path.display())))?;
        Self::from_json(&text)
    }

    /// The service account (`iss` of its assertions).
    pub fn client_email(&self) -> &str {
        &self.client_email
    }

    /// The key's id (`kid` of its assertions), if the file has one.
    pub fn private_key_id(&self) -> Option<&str> {
        self.private_key_id.as_deref()
    }

    /// Where assertions are sent (and their `aud`).
    pub fn token_uri(&self) -> &str {
        &self.token_uri
    }

    /// The Cloud project, if the file names one.
    pub fn project_id(&self) -> Option<&str> {
        self.project_id.as_deref()
    }
}

fn check_http_url(name: &str, url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{name}` is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("`{name}` must be an http(s) URL"));
    }
    Ok(())
}

/// Decodes one PEM block: its label and DER bytes.
fn pem_decode(pem: &str) -> Result<(String, Vec<u8>), String> {
    let begin = pem
        .find("-----BEGIN ")
        .ok_or("it is not PEM (no -----BEGIN line)")?;
    let rest = &pem[begin + "-----BEGIN ".len()..];
    let label_end = rest
        .find("-----")
        .ok_or("its -----BEGIN line is incomplete")?;
    let label = rest[..label_end].to_owned();
    let body_start = label_end + "-----".len();
    let end_marker = format!("-----END {label}-----");
    let end = rest[body_start..]
        .find(&end_marker)
        .ok_or_else(|| format!("it has no {end_marker} line"))?;
    let body: String = rest[body_start..body_start + end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if body.contains(':') {
        return Err("it has PEM headers (an encrypted key?)".to_owned());
    }
    let der = STANDARD
        .decode(body.as_bytes())
        .map_err(|_| "its body is not base64".to_owned())?;
    if der.is_empty() {
        return Err("its body is empty".to_owned());
    }
    Ok((label, der))
}

fn parse_private_key(pem: &str) -> Result<RsaKeyPair, AuthError> {
    let bad = |why: String| AuthError::invalid_key(format!("`private_key`: {why}"));
    let (label, der) = pem_decode(pem).map_err(bad)?;
    let parsed = match label.as_str() {
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
        "ENCRYPTED PRIVATE KEY" => {
            return Err(bad(
                "encrypted private keys are not supported; use the key file as Google issues it"
                    .to_owned(),
            ));
        }
        other => {
            return Err(bad(format!(
                "expected -----BEGIN PRIVATE KEY----- (PKCS#8), found -----BEGIN {other}-----"
            )));
        }
    };
    parsed.map_err(|rejected| {
        bad(format!(
            "not a usable RSA private key ({})",
            rejected.description_()
        ))
    })
}

/// Access tokens for a service account, optionally impersonating a Workspace user
/// (domain-wide delegation), from the JWT-bearer grant.
///
/// Each request signs a fresh RS256 assertion (`iss` = the service account, `sub` = the
/// impersonated user, `scope`, `aud` = the key's `token_uri`, one hour of validity) and posts it
/// to the key's `token_uri`. After `invalid_grant` (for example, the user does not exist or
/// delegation was withdrawn) the same error is answered without a request for
/// [`DEFAULT_INVALID_GRANT_COOLDOWN`], then one new attempt is made.
pub struct ServiceAccountTokens {
    key: ServiceAccountKey,
    subject: Option<String>,
    scopes: Vec<String>,
    rng: SystemRandom,
    core: Core,
}

impl fmt::Debug for ServiceAccountTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceAccountTokens")
            .field("key", &self.key)
            .field("subject", &self.subject)
            .field("scopes", &self.scopes)
            .field("token_requests", &self.token_requests())
            .finish_non_exhaustive()
    }
}

impl ServiceAccountTokens {
    /// Tokens for `key`'s service account acting as `subject` (None: as itself) with `scopes`
    /// (for Calendar, [`CALENDAR_SCOPE`]), requested through `http`.
    pub fn new(
        key: ServiceAccountKey,
        subject: Option<String>,
        scopes: Vec<String>,
        http: reqwest::Client,
    ) -> ServiceAccountTokens {
        let target = match &subject {
            Some(user) => format!("service account {} as {user}", key.client_email),
            None => format!("service account {}", key.client_email),
        };
        let endpoint = Endpoint::new(http, key.token_uri.clone(), target);
        ServiceAccountTokens {
            key,
            subject,
            scopes,
            rng: SystemRandom::new(),
            core: Core::new(endpoint, Some(DEFAULT_INVALID_GRANT_COOLDOWN)),
        }
    }

    /// Pause before the one retry of a transient failure (default [`DEFAULT_RETRY_BACKOFF`]).
    pub fn with_retry_backoff(mut self, backoff: Duration) -> Self {
        self.core.endpoint.retry_backoff = backoff;
        self
    }

    /// How long an `invalid_grant` is answered from memory before one new attempt (default
    /// [`DEFAULT_INVALID_GRANT_COOLDOWN`]).
    pub fn with_invalid_grant_cooldown(mut self, cooldown: Duration) -> Self {
        self.core.invalid_grant_cooldown = Some(cooldown);
        self
    }

    /// The impersonated user, if any.
    pub fn subject(&self) -> Option<&str> {
        self.subject.as_deref()
    }

    /// HTTP requests sent to the token endpoint so far (retries included): for metrics.
    pub fn token_requests(&self) -> u64 {
        self.core.endpoint.requests.load(Ordering::Relaxed)
    }

    /// True while the last answer was `invalid_grant` (within the cooldown): for status pages
    /// and metrics.
    pub fn needs_reauthorization(&self) -> bool {
        self.core.needs_reauthorization()
    }

    /// A currently valid access token: cached, or from one JWT-bearer request.
    pub async fn access_token(&self) -> Result<String, AuthError> {
        self.core
            .token(|| {
                let assertion = self.assertion(Utc::now().timestamp())?;
                Ok(vec![
                    ("grant_type", JWT_BEARER_GRANT_TYPE.to_owned()),
                    ("assertion", assertion),
                ])
            })
            .await
    }

    /// The signed assertion for a request at `now` (Unix seconds).
    fn assertion(&self, now: i64) -> Result<String, AuthError> {
        let mut jwt_header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.key.private_key_id {
            jwt_header["kid"] = json!(kid);
        }
        let mut claims = json!({
            "iss": self.key.client_email,
            "scope": self.scopes.join(" "),
            "aud": self.key.token_uri,
            "iat": now,
            "exp": now + ASSERTION_SECONDS,
        });
        if let Some(subject) = &self.subject {
            claims["sub"] = json!(subject);
        }
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(jwt_header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0; self.key.key_pair.public_modulus_len()];
        self.key
            .key_pair
            .sign(
                &RSA_PKCS1_SHA256,
                &self.rng,
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| AuthError::Crypto {
                message: "signing the service account assertion failed",
            })?;
        Ok(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        ))
    }
}

impl TokenSource for ServiceAccountTokens {
    fn token(&self) -> BoxFuture<'_, Result<String, GcalError>> {
        Box::pin(async move { self.access_token().await.map_err(GcalError::from) })
    }

    fn invalidate(&self) {
        self.core.invalidate();
    }
}

// --- refresh tokens ----------------------------------------------------------------------

/// Access tokens for one user from a refresh token (the refresh-token grant).
///
/// After `invalid_grant` (the user revoked access, or the token expired) every later call
/// answers the same error without a request: a revoked refresh token never works again, so
/// recovery is a new authorization and a new source.
pub struct RefreshTokenTokens {
    client_id: String,
    client_secret: Option<String>,
    refresh_token: String,
    core: Core,
}

impl fmt::Debug for RefreshTokenTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshTokenTokens")
            .field("token_uri", &self.core.endpoint.token_uri)
            .field("target", &self.core.endpoint.target)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("refresh_token", &"<redacted>")
            .field("token_requests", &self.token_requests())
            .finish_non_exhaustive()
    }
}

impl RefreshTokenTokens {
    /// Tokens from `refresh_token`, issued to the OAuth client `client_id` (with its secret, if
    /// it has one), requested from `token_uri` through `http`.
    pub fn new(
        token_uri: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: Option<String>,
        refresh_token: impl Into<String>,
        http: reqwest::Client,
    ) -> RefreshTokenTokens {
        let client_id = client_id.into();
        let target = format!("refresh token (client {client_id})");
        RefreshTokenTokens {
            core: Core::new(Endpoint::new(http, token_uri.into(), target), None),
            client_id,
            client_secret,
            refresh_token: refresh_token.into(),
        }
    }

    /// Names the account (its email) in errors and logs instead of the client id.
    pub fn with_account(mut self, account: &str) -> Self {
        self.core.endpoint.target = format!("refresh token of {account}");
        self
    }

    /// Pause before the one retry of a transient failure (default [`DEFAULT_RETRY_BACKOFF`]).
    pub fn with_retry_backoff(mut self, backoff: Duration) -> Self {
        self.core.endpoint.retry_backoff = backoff;
        self
    }

    /// Starts with an access token already in hand (the one a code exchange returned), valid
    /// for `expires_in` from now.
    pub fn with_access_token(self, access_token: impl Into<String>, expires_in: Duration) -> Self {
        self.core.seed(access_token.into(), expires_in);
        self
    }

    /// HTTP requests sent to the token endpoint so far (retries included): for metrics.
    pub fn token_requests(&self) -> u64 {
        self.core.endpoint.requests.load(Ordering::Relaxed)
    }

    /// True once the token endpoint answered `invalid_grant`: the account must be authorised
    /// again (for status pages and metrics).
    pub fn needs_reauthorization(&self) -> bool {
        self.core.needs_reauthorization()
    }

    /// A currently valid access token: cached, or from one refresh-token request.
    pub async fn access_token(&self) -> Result<String, AuthError> {
        self.core
            .token(|| {
                let mut form = vec![
                    ("grant_type", "refresh_token".to_owned()),
                    ("refresh_token", self.refresh_token.clone()),
                    ("client_id", self.client_id.clone()),
                ];
                if let Some(secret) = &self.client_secret {
                    form.push(("client_secret", secret.clone()));
                }
                Ok(form)
            })
            .await
    }
}

impl TokenSource for RefreshTokenTokens {
    fn token(&self) -> BoxFuture<'_, Result<String, GcalError>> {
        Box::pin(async move { self.access_token().await.map_err(GcalError::from) })
    }

    fn invalidate(&self) {
        self.core.invalidate();
    }
}

// --- authorization code with PKCE --------------------------------------------------------

/// The PKCE code verifier of one authorization (RFC 7636): 86 characters of base64url from
/// 64 random bytes. Keep it (server side, e.g. in the session keyed by `state`) between
/// [`AuthCodeFlow::start`] and [`AuthCodeFlow::exchange`]; it is a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct PkceVerifier(String);

impl fmt::Debug for PkceVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PkceVerifier(<redacted>)")
    }
}

impl PkceVerifier {
    /// A new random verifier.
    pub fn generate() -> Result<PkceVerifier, AuthError> {
        let mut bytes = [0u8; 64];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| AuthError::Crypto {
                message: "the system random generator failed",
            })?;
        Ok(PkceVerifier(URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A verifier kept from [`PkceVerifier::secret`]: 43 to 128 characters of
    /// `[A-Za-z0-9-._~]`.
    pub fn from_secret(secret: impl Into<String>) -> Result<PkceVerifier, AuthError> {
        let secret = secret.into();
        let valid_chars = secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
        if !(43..=128).contains(&secret.len()) || !valid_chars {
            return Err(AuthError::invalid_config(
                "a PKCE verifier is 43 to 128 characters of A-Z a-z 0-9 - . _ ~",
            ));
        }
        Ok(PkceVerifier(secret))
    }

    /// The verifier itself, to store until the callback.
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// The S256 challenge sent with the authorization request: base64url(SHA-256(verifier)).
    pub fn challenge(&self) -> String {
        URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, self.0.as_bytes()))
    }
}

/// What a code exchange returns.
#[derive(Clone, PartialEq, Eq)]
pub struct Grant {
    /// An access token, valid for `expires_in`.
    pub access_token: String,
    /// The refresh token; Google sends one with `access_type=offline` and `prompt=consent`.
    pub refresh_token: Option<String>,
    /// How long `access_token` is valid from the response.
    pub expires_in: Duration,
    /// The scopes granted, space-separated (a user may grant fewer than asked for).
    pub scope: Option<String>,
}

impl fmt::Debug for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grant")
            .field("access_token", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

impl Grant {
    /// True when every one of `scopes` was granted.
    pub fn has_scopes(&self, scopes: &[String]) -> bool {
        let granted: Vec<&str> = self
            .scope
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        scopes.iter().all(|s| granted.contains(&s.as_str()))
    }
}

/// The authorization-code grant with PKCE, for users who connect their own calendars: send the
/// browser to [`AuthCodeFlow::start`]'s URL (`/oauth/google/start`), then on the redirect
/// (`/oauth/google/callback?code&state`) check `state` and call [`AuthCodeFlow::exchange`].
#[derive(Clone)]
pub struct AuthCodeFlow {
    /// The authorization endpoint ([`GOOGLE_AUTH_URI`], or the emulator's `/o/oauth2/v2/auth`).
    pub auth_uri: String,
    /// The token endpoint ([`GOOGLE_TOKEN_URI`], or the emulator's `/token`).
    pub token_uri: String,
    /// The OAuth client id.
    pub client_id: String,
    /// The OAuth client secret (web clients have one; installed apps may not).
    pub client_secret: Option<String>,
    /// Where the user's browser comes back; must be registered with the client.
    pub redirect_uri: String,
    /// The scopes to ask for (for Calendar, [`CALENDAR_SCOPE`]).
    pub scopes: Vec<String>,
    /// The HTTP client for the code exchange.
    pub http: reqwest::Client,
}

impl fmt::Debug for AuthCodeFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthCodeFlow")
            .field("auth_uri", &self.auth_uri)
            .field("token_uri", &self.token_uri)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("redirect_uri", &self.redirect_uri)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl AuthCodeFlow {
    /// The URL to send the user's browser to, and the verifier to keep until the callback.
    ///
    /// The URL asks for a code (`response_type=code`) with an S256 PKCE challenge, offline
    /// access with a consent prompt (so Google returns a refresh token even to a returning
    /// user), `state` (which the callback must check against the session), and `login_hint`
    /// (the user's email) if given.
    pub fn start(
        &self,
        state: &str,
        login_hint: Option<&str>,
    ) -> Result<(String, PkceVerifier), AuthError> {
        check_http_url("auth_uri", &self.auth_uri).map_err(AuthError::invalid_config)?;
        let mut url = reqwest::Url::parse(&self.auth_uri)
            .map_err(|e| AuthError::invalid_config(format!("`auth_uri` is not a URL: {e}")))?;
        let verifier = PkceVerifier::generate()?;
        {
            let mut query = url.query_pairs_mut();
            query
                .append_pair("response_type", "code")
                .append_pair("client_id", &self.client_id)
                .append_pair("redirect_uri", &self.redirect_uri)
                .append_pair("scope", &self.scopes.join(" "))
                .append_pair("state", state)
                .append_pair("code_challenge", &verifier.challenge())
                .append_pair("code_challenge_method", "S256")
                .append_pair("access_type", "offline")
                .append_pair("prompt", "consent");
            if let Some(hint) = login_hint {
                query.append_pair("login_hint", hint);
            }
        }
        Ok((url.into(), verifier))
    }

    /// Exchanges the callback's `code` (with the verifier [`AuthCodeFlow::start`] returned) for
    /// tokens. Not retried: a code is single-use, so a retry after a lost response would fail
    /// anyway. A used, expired or mismatched code is [`AuthError::InvalidGrant`].
    pub async fn exchange(&self, code: &str, verifier: &PkceVerifier) -> Result<Grant, AuthError> {
        check_http_url("token_uri", &self.token_uri).map_err(AuthError::invalid_config)?;
        let endpoint = Endpoint::new(
            self.http.clone(),
            self.token_uri.clone(),
            format!("authorization code (client {})", self.client_id),
        );
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.to_owned()),
            ("redirect_uri", self.redirect_uri.clone()),
            ("client_id", self.client_id.clone()),
            ("code_verifier", verifier.secret().to_owned()),
        ];
        if let Some(secret) = &self.client_secret {
            form.push(("client_secret", secret.clone()));
        }
        let response = endpoint.request(&form, false).await?;
        Ok(Grant {
            access_token: response.access_token,
            refresh_token: response.refresh_token,
            expires_in: response.expires_in,
            scope: response.scope,
        })
    }

    /// A token source for a refresh token this client obtained (the flow's endpoint, client id
    /// and secret, and HTTP client).
    pub fn token_source(&self, refresh_token: impl Into<String>) -> RefreshTokenTokens {
        RefreshTokenTokens::new(
            self.token_uri.clone(),
            self.client_id.clone(),
            self.client_secret.clone(),
            refresh_token,
            self.http.clone(),
        )
    }
}

// --- refresh tokens at rest --------------------------------------------------------------

/// Why a token could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    /// The configured key is not 32 bytes of base64.
    #[error("invalid token encryption key: {message}")]
    InvalidKey {
        /// What is wrong (never the key).
        message: String,
    },
    /// The stored value is not `base64url(nonce || ciphertext || tag)`.
    #[error("the sealed token is malformed (expected base64url of nonce, ciphertext and tag)")]
    Malformed,
    /// Authentication failed: the value was altered, or sealed with another key or for another
    /// account (associated data).
    #[error(
        "the sealed token failed authentication: it was altered, or sealed with another key or for another account"
    )]
    Rejected,
    /// The system random generator failed.
    #[error("the system random generator failed")]
    Random,
}

/// AES-256-GCM for refresh tokens at rest.
///
/// [`TokenCipher::encrypt`] returns `base64url(nonce || ciphertext || tag)` (no padding) with a
/// fresh random 96-bit nonce per call; the associated data (the account's email, say) is
/// authenticated but not stored, so a sealed token copied to another account's row does not
/// open. The key is 32 bytes, configured as base64 (see [`TokenCipher::generate_key`]).
pub struct TokenCipher {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl fmt::Debug for TokenCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenCipher(AES-256-GCM, key <redacted>)")
    }
}

/// AES-GCM's tag length.
const TAG_LEN: usize = 16;

impl TokenCipher {
    /// A cipher with a raw 32-byte key.
    pub fn new(key: &[u8]) -> Result<TokenCipher, CipherError> {
        if key.len() != 32 {
            return Err(CipherError::InvalidKey {
                message: format!("expected 32 bytes, got {}", key.len()),
            });
        }
        let unbound = UnboundKey::new(&AES_256_GCM, key).map_err(|_| CipherError::InvalidKey {
            message: "rejected by AES-256-GCM".to_owned(),
        })?;
        Ok(TokenCipher {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        })
    }

    /// A cipher with a key given as base64 (standard or URL-safe alphabet, padding optional,
    /// surrounding whitespace ignored): for keys from configuration or the environment.
    pub fn from_base64(key: &str) -> Result<TokenCipher, CipherError> {
        let key = key.trim();
        let bytes = [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(key).ok())
            .ok_or_else(|| CipherError::InvalidKey {
                message: "not base64".to_owned(),
            })?;
        Self::new(&bytes)
    }

    /// A new random key, as standard base64 (what [`TokenCipher::from_base64`] reads).
    pub fn generate_key() -> Result<String, CipherError> {
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| CipherError::Random)?;
        Ok(STANDARD.encode(key))
    }

    /// Seals `plaintext`, bound to `associated_data`.
    pub fn encrypt(&self, plaintext: &str, associated_data: &str) -> Result<String, CipherError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| CipherError::Random)?;
        let mut sealed = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plaintext.as_bytes());
        let tag = self
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(associated_data.as_bytes()),
                &mut sealed[NONCE_LEN..],
            )
            .map_err(|_| CipherError::Random)?;
        sealed.extend_from_slice(tag.as_ref());
        Ok(URL_SAFE_NO_PAD.encode(sealed))
    }

    /// Opens what [`TokenCipher::encrypt`] sealed with the same key and `associated_data`.
    pub fn decrypt(&self, sealed: &str, associated_data: &str) -> Result<String, CipherError> {
        let mut bytes = URL_SAFE_NO_PAD
            .decode(sealed.trim())
            .map_err(|_| CipherError::Malformed)?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(CipherError::Malformed);
        }
        let (nonce, in_out) = bytes.split_at_mut(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CipherError::Malformed)?;
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(associated_data.as_bytes()), in_out)
            .map_err(|_| CipherError::Rejected)?;
        String::from_utf8(plaintext.to_vec()).map_err(|_| CipherError::Rejected)
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::KeySize;
    use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

    use super::*;

    fn pem(label: &str, der: &[u8]) -> String {
        let body = STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    fn key_file(private_key: &str) -> Value {
        json!({
            "type": "service_account",
            "project_id": "p",
            "private_key_id": "kid-1",
            "private_key": private_key,
            "client_email": "sa@p.iam.gserviceaccount.com",
            "client_id": "123",
            "token_uri": "https://oauth2.googleapis.com/token",
        })
    }

    fn generated() -> (RsaKeyPair, String) {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
        let pkcs8 = pair.as_der().unwrap();
        let pem = pem("PRIVATE KEY", pkcs8.as_ref());
        (pair, pem)
    }

    #[test]
    fn the_assertion_is_a_signed_rs256_jwt_with_googles_claims() {
        let (pair, private_pem) = generated();
        let key = ServiceAccountKey::from_json(&key_file(&private_pem).to_string()).unwrap();
        let tokens = ServiceAccountTokens::new(
            key,
            Some("bob@example.com".into()),
            vec![CALENDAR_SCOPE.into(), "openid".into()],
            reqwest::Client::new(),
        );
        let jwt = tokens.assertion(1_800_000_000).unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let decode = |s: &str| -> Value {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap()
        };
        assert_eq!(
            decode(parts[0]),
            json!({"alg": "RS256", "typ": "JWT", "kid": "kid-1"})
        );
        assert_eq!(
            decode(parts[1]),
            json!({"iss": "sa@p.iam.gserviceaccount.com",
                   "scope": format!("{CALENDAR_SCOPE} openid"),
                   "aud": "https://oauth2.googleapis.com/token",
                   "iat": 1_800_000_000, "exp": 1_800_003_600, "sub": "bob@example.com"})
        );
        let spki = pair.public_key().as_der().unwrap();
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, spki.as_ref())
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
            .expect("the signature verifies with the public key");
        // Without a subject there is no `sub`.
        let key = ServiceAccountKey::from_json(&key_file(&private_pem).to_string()).unwrap();
        let tokens = ServiceAccountTokens::new(key, None, vec!["s".into()], reqwest::Client::new());
        let jwt = tokens.assertion(1).unwrap();
        let claims = decode(jwt.split('.').nth(1).unwrap());
        assert!(claims.get("sub").is_none());
    }

    #[test]
    fn key_file_errors_name_the_problem() {
        let (_, private_pem) = generated();
        let error = |value: Value| {
            ServiceAccountKey::from_json(&value.to_string())
                .unwrap_err()
                .to_string()
        };
        for field in ["type", "client_email", "private_key", "token_uri"] {
            let mut file = key_file(&private_pem);
            file.as_object_mut().unwrap().remove(field);
            let message = error(file);
            assert!(
                message.contains(&format!("missing field `{field}`")),
                "{message}"
            );
        }
        let mut file = key_file(&private_pem);
        file["type"] = json!("authorized_user");
        assert!(error(file).contains("expected \"service_account\""));
        let mut file = key_file(&private_pem);
        file["client_email"] = json!(42);
        assert!(error(file).contains("`client_email` must be a string"));
        let mut file = key_file(&private_pem);
        file["token_uri"] = json!("not a url");
        assert!(error(file).contains("`token_uri` is not a URL"));
        assert!(
            ServiceAccountKey::from_json("{not json")
                .unwrap_err()
                .to_string()
                .contains("not JSON")
        );

        let cases = [
            ("MIIEvQIBADANBgkqhkiG9w0BAQEFAASC", "no -----BEGIN line"),
            (
                "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
                "not base64",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n",
                "no -----END PRIVATE KEY----- line",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nAAECAwQ=\n-----END PRIVATE KEY-----\n",
                "not a usable RSA private key",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAAECAwQ=\n-----END CERTIFICATE-----\n",
                "expected -----BEGIN PRIVATE KEY----- (PKCS#8)",
            ),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAECAwQ=\n-----END ENCRYPTED PRIVATE KEY-----\n",
                "encrypted private keys are not supported",
            ),
        ];
        for (private_key, expected) in cases {
            let message = error(key_file(private_key));
            assert!(message.contains("`private_key`"), "{message}");
            assert!(message.contains(expected), "{expected}: {message}");
        }

        // The key material never reaches Debug.
        let key = ServiceAccountKey::from_json(&key_file(&private_pem).to_string()).unwrap();
        let debug = format!("{key:?}");
        let body_line = private_pem.lines().nth(1).unwrap();
        assert!(!debug.contains(body_line), "{debug}");
        assert!(debug.contains("sa@p.iam.gserviceaccount.com"));
    }

    /// The content of the DER element at `pos`: (tag, content start, content end).
    fn der_element(der: &[u8], pos: usize) -> (u8, usize, usize) {
        let tag = der[pos];
        let first = der[pos + 1];
        if first < 0x80 {
            return (tag, pos + 2, pos + 2 + usize::from(first));
        }
        let n = usize::from(first & 0x7f);
        let len = der[pos + 2..pos + 2 + n]
            .iter()
            .fold(0usize, |acc, b| acc << 8 | usize::from(*b));
        (tag, pos + 2 + n, pos + 2 + n + len)
    }

    /// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo`.
    fn pkcs1_of(pkcs8: &[u8]) -> Vec<u8> {
        let (_, start, _) = der_element(pkcs8, 0); // SEQUENCE
        let (_, _, version_end) = der_element(pkcs8, start); // INTEGER 0
        let (_, _, algorithm_end) = der_element(pkcs8, version_end); // AlgorithmIdentifier
        let (tag, key_start, key_end) = der_element(pkcs8, algorithm_end);
        assert_eq!(tag, 0x04, "OCTET STRING");
        pkcs8[key_start..key_end].to_vec()
    }

    #[test]
    fn pkcs1_keys_are_accepted_too() {
        let (pair, _) = generated();
        let pkcs8 = pair.as_der().unwrap();
        let pkcs1 = pem("RSA PRIVATE KEY", &pkcs1_of(pkcs8.as_ref()));
        let key = ServiceAccountKey::from_json(&key_file(&pkcs1).to_string()).unwrap();
        assert_eq!(
            key.key_pair.public_key().as_ref(),
            pair.public_key().as_ref()
        );
        // A PKCS#8 body under the PKCS#1 label is refused with a precise message.
        let message = ServiceAccountKey::from_json(
            &key_file(&pem("RSA PRIVATE KEY", pkcs8.as_ref())).to_string(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.contains("not a usable RSA private key"),
            "{message}"
        );
    }

    #[test]
    fn the_pkce_challenge_is_rfc_7636s() {
        // RFC 7636, appendix B.
        let verifier =
            PkceVerifier::from_secret("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk").unwrap();
        assert_eq!(
            verifier.challenge(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
        let random = PkceVerifier::generate().unwrap();
        assert!((43..=128).contains(&random.secret().len()));
        assert_ne!(random, PkceVerifier::generate().unwrap());
        assert!(PkceVerifier::from_secret(random.secret()).is_ok());
        assert!(PkceVerifier::from_secret("short").is_err());
        assert!(PkceVerifier::from_secret("a".repeat(129)).is_err());
        assert!(PkceVerifier::from_secret(format!("{}+", "a".repeat(50))).is_err());
        assert_eq!(format!("{random:?}"), "PkceVerifier(<redacted>)");
    }

    fn flow() -> AuthCodeFlow {
        AuthCodeFlow {
            auth_uri: GOOGLE_AUTH_URI.into(),
            token_uri: GOOGLE_TOKEN_URI.into(),
            client_id: "cid.apps.googleusercontent.com".into(),
            client_secret: Some("client-secret-value".into()),
            redirect_uri: "https://confsync.example/oauth/google/callback".into(),
            scopes: vec![CALENDAR_SCOPE.into(), "email".into()],
            http: reqwest::Client::new(),
        }
    }

    #[test]
    fn the_authorization_url_asks_for_an_offline_code_with_s256() {
        let (url, verifier) = flow().start("st@te 1", Some("carol@example.com")).unwrap();
        let url = reqwest::Url::parse(&url).unwrap();
        assert_eq!(url.host_str(), Some("accounts.google.com"));
        assert_eq!(url.path(), "/o/oauth2/v2/auth");
        let query: std::collections::HashMap<String, String> =
            url.query_pairs().into_owned().collect();
        let expect = [
            ("response_type", "code"),
            ("client_id", "cid.apps.googleusercontent.com"),
            (
                "redirect_uri",
                "https://confsync.example/oauth/google/callback",
            ),
            ("scope", "https://www.googleapis.com/auth/calendar email"),
            ("state", "st@te 1"),
            ("code_challenge_method", "S256"),
            ("access_type", "offline"),
            ("prompt", "consent"),
            ("login_hint", "carol@example.com"),
        ];
        for (k, v) in expect {
            assert_eq!(query.get(k).map(String::as_str), Some(v), "{k}");
        }
        assert_eq!(query["code_challenge"], verifier.challenge());
        assert_eq!(query.len(), expect.len() + 1);
        assert!(!url.as_str().contains(verifier.secret()));
        let (url, _) = flow().start("s", None).unwrap();
        assert!(!url.contains("login_hint"));
        let mut bad = flow();
        bad.auth_uri = "nope".into();
        assert!(matches!(
            bad.start("s", None),
            Err(AuthError::InvalidConfig { .. })
        ));
        let debug = format!("{:?}", flow());
        assert!(!debug.contains("client-secret-value"), "{debug}");
    }

    #[test]
    fn token_endpoint_errors_are_classified_without_secrets() {
        let body = |error: &str, description: &str| {
            json!({"error": error, "error_description": description})
                .to_string()
                .into_bytes()
        };
        let revoked = token_error(
            "refresh token of carol@example.com",
            400,
            None,
            &body("invalid_grant", "Token has been expired or revoked."),
        );
        let AuthError::InvalidGrant { context } = &revoked else {
            panic!("{revoked:?}");
        };
        assert_eq!(context.reason.as_deref(), Some("invalid_grant"));
        assert_eq!(context.status, Some(400));
        assert!(!revoked.is_retryable());
        let as_gcal = GcalError::from(revoked.clone());
        assert!(is_invalid_grant(&as_gcal));
        assert!(!as_gcal.is_retryable());
        assert_eq!(
            as_gcal.to_string(),
            "oauth2.token (refresh token of carol@example.com) failed: HTTP 400 invalid_grant: Token has been expired or revoked.; the access token was refused: refresh it, or re-authorize the account"
        );

        let cases = [
            (400, "invalid_request", "bad_request"),
            (400, "invalid_scope", "bad_request"),
            (401, "invalid_client", "unauthorized"),
            (401, "unauthorized_client", "unauthorized"),
            (429, "rate_limit_exceeded", "rate_limited"),
            (500, "internal_failure", "transient"),
            (503, "temporarily_unavailable", "transient"),
        ];
        for (status, error, kind) in cases {
            let e = token_error("t", status, None, &body(error, "d"));
            assert_eq!(e.kind(), kind, "{status} {error}");
            assert!(!e.is_invalid_grant());
            let gcal = GcalError::from(e);
            assert!(!is_invalid_grant(&gcal));
            assert_eq!(gcal.reason(), Some(error));
            assert_eq!(gcal.method(), Some(TOKEN_METHOD));
        }

        let html = token_error("t", 502, None, b"<html><body>Bad Gateway</body></html>");
        assert_eq!(html.kind(), "transient");
        let garbage = token_error("t", 400, None, b"\xff\x00");
        assert_eq!(garbage.kind(), "bad_request");
        // An invalid_grant status other than 400 is still invalid_grant.
        assert!(token_error("t", 401, None, &body("invalid_grant", "")).is_invalid_grant());
        let long = token_error("t", 400, None, &body("invalid_grant", &"x\n".repeat(500)));
        let message = &long.to_string();
        assert!(!message.contains('\n'));
        assert!(message.chars().count() < 400, "{message}");
    }

    #[test]
    fn token_responses_are_read_without_quoting_them() {
        let ok = parse_token_response(
            br#"{"access_token":"ya29.a","expires_in":3599,"scope":"s","token_type":"Bearer"}"#,
        )
        .unwrap();
        assert_eq!(ok.access_token, "ya29.a");
        assert_eq!(ok.expires_in, Duration::from_secs(3599));
        assert_eq!(ok.refresh_token, None);
        assert_eq!(ok.scope.as_deref(), Some("s"));
        let text = parse_token_response(br#"{"access_token":"a","expires_in":"60"}"#).unwrap();
        assert_eq!(text.expires_in, Duration::from_secs(60));
        let missing = parse_token_response(br#"{"access_token":"a"}"#).unwrap();
        assert_eq!(missing.expires_in, DEFAULT_EXPIRES_IN);
        for bad in [
            &br#"{"expires_in":3599}"#[..],
            br#"{"access_token":""}"#,
            br#"{"access_token":"secret","expires_in":"soon"}"#,
            br#"{"access_token":"secret","expires_in":-1}"#,
            b"not json",
        ] {
            let why = parse_token_response(bad).err().unwrap();
            assert!(!why.contains("secret"));
        }
    }

    #[test]
    fn tokens_are_cached_until_five_minutes_before_expiry() {
        assert_eq!(
            cache_lifetime(Duration::from_secs(3599)),
            Duration::from_secs(3299)
        );
        assert_eq!(
            cache_lifetime(Duration::from_secs(600)),
            Duration::from_secs(300)
        );
        assert_eq!(
            cache_lifetime(Duration::from_secs(60)),
            Duration::from_secs(30)
        );
        assert_eq!(cache_lifetime(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test]
    async fn a_seeded_token_is_served_and_invalidate_drops_it() {
        let tokens = RefreshTokenTokens::new(
            "http://127.0.0.1:9/token",
            "cid",
            Some("client-secret-value".into()),
            "1//refresh-secret",
            reqwest::Client::new(),
        )
        .with_access_token("ya29.seeded", Duration::from_secs(3599));
        assert_eq!(tokens.token().await.unwrap(), "ya29.seeded");
        assert_eq!(tokens.token_requests(), 0);
        let debug = format!("{tokens:?}");
        assert!(!debug.contains("client-secret-value"), "{debug}");
        assert!(!debug.contains("refresh-secret"), "{debug}");
        assert!(!debug.contains("ya29.seeded"), "{debug}");
        tokens.invalidate();
        // Nothing listens on port 9: the request fails (transient), and is retried once.
        let tokens = tokens.with_retry_backoff(Duration::from_millis(1));
        let error = tokens.token().await.unwrap_err();
        assert!(error.is_retryable(), "{error:?}");
        assert_eq!(tokens.token_requests(), 2);
        assert!(!tokens.needs_reauthorization());
    }

    #[test]
    fn the_cipher_round_trips_and_detects_tampering() {
        let key = TokenCipher::generate_key().unwrap();
        let cipher = TokenCipher::from_base64(&key).unwrap();
        let sealed = cipher.encrypt("1//refresh", "carol@example.com").unwrap();
        assert!(!sealed.contains("refresh"));
        assert_eq!(sealed.len(), ((NONCE_LEN + 10 + TAG_LEN) * 4).div_ceil(3));
        assert_eq!(
            cipher.decrypt(&sealed, "carol@example.com").unwrap(),
            "1//refresh"
        );
        assert_ne!(
            sealed,
            cipher.encrypt("1//refresh", "carol@example.com").unwrap(),
            "a fresh nonce per call"
        );
        assert_eq!(
            cipher.decrypt(&sealed, "bob@example.com"),
            Err(CipherError::Rejected)
        );
        assert_eq!(cipher.decrypt("AAAA", "x"), Err(CipherError::Malformed));
        assert_eq!(cipher.decrypt("***", "x"), Err(CipherError::Malformed));
        assert!(format!("{cipher:?}").contains("redacted"));
        for bad in ["", "AAAA", "not base64 at all!"] {
            assert!(matches!(
                TokenCipher::from_base64(bad),
                Err(CipherError::InvalidKey { .. })
            ));
        }
        let url_safe = URL_SAFE_NO_PAD.encode(STANDARD.decode(&key).unwrap());
        let same = TokenCipher::from_base64(&format!(" {url_safe}\n")).unwrap();
        assert_eq!(
            same.decrypt(&sealed, "carol@example.com").unwrap(),
            "1//refresh"
        );
    }
}
