//! The `jitsi` adapter: Jitsi Meet, which has no meeting API (the room is the URL path).
//!
//! What it maps. A meeting is local state in confsync's store (the `meetings` table, as the
//! `local` provider keeps its own): title, start, end, recurrence, occurrence exceptions and
//! whether it was cancelled, so all of it survives a restart. The event's join link is confsync's
//! own `{public_url}join/{meeting_id}`; the service routes a click there to
//! [`ConferenceProvider::join`], which answers:
//! - [`JoinAnswer::Redirect`] to `{base_url}/{room}?jwt=<token>` with a token minted at that
//!   moment (HS256 with the app secret, or RS256 with a PKCS#8/PKCS#1 PEM private key), claims
//!   `aud`, `iss`, `sub`, `room`, `nbf` = start - early join, `exp` = end + grace and
//!   `context.user{name, moderator}` (moderator = the link carried the host signature; `name`
//!   only when the guest gave one, otherwise Jitsi asks). Without `[jwt]` config (public Jitsi,
//!   `meet.jit.si`) it redirects to the plain room URL, with `#userInfo.displayName="..."`
//!   when a name was given; nobody can be made moderator there.
//! - [`JoinAnswer::Refused`] `"this meeting was cancelled"` once deleted, `"this meeting has
//!   ended"` after end + grace, `"this meeting opens at ... UTC"` before start - early join, and
//!   `"this occurrence was cancelled"` inside a cancelled occurrence's window.
//!
//! The room name is `room_prefix` + 32 hex digits of HMAC-SHA256(`room_secret`, key): stable for
//! retries of the create, not guessable from the event or from the public meeting id (which is
//! another HMAC of the key), and never the title. It is stored with the meeting, so rotating
//! `room_secret` only affects meetings created afterwards.
//!
//! Capabilities: title, time, recurrence and occurrences change in place (it is local state; the
//! join link never changes); description and attendees are not used by Jitsi, so the planner does
//! not call for them.
//!
//! Recurring series (documented choice): confsync does not expand recurrence rules here. A
//! series' link opens at the series' first start - early join and stays open after it (the
//! series' end, COUNT or UNTIL, is not computed); each token is minted with `nbf` = that opening
//! and `exp` = now + one occurrence's window (early join + duration + grace), so a token is only
//! good for the meeting being joined. Occurrence exceptions are honoured where their times are
//! known: a cancelled occurrence refuses joins during its own window (its original start - early
//! join to original start + duration + grace) unless a moved occurrence covers that moment.
//!
//! All-day events: the day is taken in every zone (midnight UTC+14 to midnight UTC-12, see
//! [`http::join_window`]).
//!
//! Token dialects (`jwt.mode`):
//! - `prosody` (default), per lib-jitsi-meet's doc/tokens.md ("Token structure"): `iss` = app_id,
//!   `aud` (default `jitsi`; some deployments expect the app id), `sub` (default `*`; the domain
//!   or tenant when the deployment checks it), optional `kid`.
//! - `jaas`: exactly what 8x8 documents (developer.8x8.com/jaas/docs/api-keys-jwt and its
//!   samples): header `{"alg": "RS256", "kid": "<tenant>/<key id>", "typ": "JWT"}`, claims
//!   `aud` "jitsi", `iss` "chat", `sub` = the tenant (`vpaas-magic-cookie-...`, the config's
//!   app_id), `room`, `nbf`, `exp`, `context.user`. Before this mode the adapter sent iss =
//!   app_id, which JaaS refuses.
//!
//! `context.user.moderator` is the string `"true"`/`"false"` by default: lib-jitsi-meet's
//! doc/tokens.md says every `context.user` field must be a string (other types raise an
//! exception) and JaaS documents the strings. `moderator_as_string = false` sends a boolean for
//! a self-hosted Prosody plugin that reads one (JaaS mode ignores it).
//!
//! Open doubts and what would settle them: whether a self-hosted Prosody's moderation plugin
//! (e.g. token_affiliation) accepts the string form (a join against such a deployment with both
//! settings); whether JaaS wants `context.user.id` or `features` for plain joins (8x8 lists them
//! without marking them required; a join against a JaaS tenant without them would tell).

use std::time::Duration;

use aws_lc_rs::signature::RsaKeyPair;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use confsync_store::Store;
use serde::Deserialize;
use serde_json::json;

use crate::http::{self, Secret};
use crate::keys::{Key, Section, Type};
use crate::{
    BoxFuture, Capabilities, ConferenceProvider, JoinAnswer, JoinRequest, Meeting, MeetingSpec,
    ProviderError, When,
};

const PROVIDER: &str = "jitsi";
/// The longest early join or grace accepted (a week).
const MAX_MINUTES: u64 = 7 * 24 * 60;

/// `[provider]` settings of the `jitsi` kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JitsiConfig {
    /// The Jitsi Meet deployment (for JaaS with the tenant path:
    /// `https://8x8.vc/vpaas-magic-cookie-...`).
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// confsync's own public base URL (ends with '/'): join links are `{public_url}join/{id}`.
    pub public_url: String,
    /// Keys the HMAC that derives room names and meeting ids (keep it; see the module doc).
    pub room_secret: Secret,
    /// Put in front of every room name (lowercase letters, digits, '-' and '_', at most 32).
    #[serde(default)]
    pub room_prefix: String,
    /// Minutes before the start a link opens (token `nbf`).
    #[serde(default = "default_early_join")]
    pub early_join_minutes: u64,
    /// Minutes after the end a link still works (token `exp`).
    #[serde(default = "default_grace")]
    pub grace_minutes: u64,
    /// Token authentication; without it rooms are public (anyone with the room URL joins).
    #[serde(default)]
    pub jwt: Option<JitsiJwtConfig>,
}

/// The keys of `[provider.jitsi]` (see [`crate::keys`]).
pub const CONFIG: Section = Section {
    path: "provider.jitsi",
    doc: "Jitsi Meet (kind = \"jitsi\"): join links point at confsync, which sends each click to its room (with a fresh JWT when [provider.jitsi.jwt] is set; without it rooms are public).",
    optional: true,
    keys: &[
        Key::defaulted(
            "base_url",
            Type::Url,
            "\"https://meet.jit.si\"",
            "The Jitsi Meet deployment (JaaS: with the tenant path, `https://8x8.vc/vpaas-magic-cookie-...`).",
        ),
        Key::required(
            "public_url",
            Type::Url,
            "\"https://confsync.example.com/\"",
            "confsync's own public base URL (ends with '/'): join links are `{public_url}join/{id}`.",
        ),
        Key::required(
            "room_secret",
            Type::Secret,
            "\"env:JITSI_ROOM_SECRET\"",
            "Keys the HMAC that derives room names and meeting ids (at least 16 characters); rotating it affects only meetings created afterwards.",
        ),
        Key::defaulted(
            "room_prefix",
            Type::String,
            "\"\"",
            "Put in front of every room name: at most 32 lowercase letters, digits, '-' and '_'.",
        ),
        Key::bounded(
            "early_join_minutes",
            "15",
            0,
            10080,
            "Minutes before the start a link opens (token `nbf`).",
        ),
        Key::bounded(
            "grace_minutes",
            "60",
            0,
            10080,
            "Minutes after the end a link still works (token `exp`).",
        ),
    ],
};

/// JWT settings (Prosody `token` authentication or JaaS).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JitsiJwtConfig {
    /// The application id: the token's `iss`.
    pub app_id: String,
    /// The token's `aud`.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// The token's `sub`: `*`, the deployment's domain, or the JaaS tenant.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// HS256: the app secret shared with Prosody. Exactly one of this and `private_key`.
    #[serde(default)]
    pub app_secret: Option<Secret>,
    /// RS256: a PEM private key (`BEGIN PRIVATE KEY` PKCS#8, or `BEGIN RSA PRIVATE KEY`);
    /// usually `file:/path/key.pem`.
    #[serde(default)]
    pub private_key: Option<Secret>,
    /// The `kid` header. JaaS: the API key's id from the JaaS console (`4f4910`, or the whole
    /// `<tenant>/4f4910`); the header then carries `<tenant>/<key id>`.
    #[serde(default)]
    pub key_id: Option<String>,
    /// `context.user.moderator` as the strings `"true"`/`"false"` (default, as lib-jitsi-meet's
    /// doc/tokens.md and JaaS require); `false` sends a boolean, for a self-hosted Prosody whose
    /// token plugin reads one. Ignored in JaaS mode (always strings).
    #[serde(default = "default_true")]
    pub moderator_as_string: bool,
    /// `prosody` (default: `iss` = app_id, `aud` = audience, `sub` = subject) or `jaas` (8x8
    /// Jitsi as a Service: `iss` "chat", `aud` "jitsi", `sub` = app_id (the
    /// `vpaas-magic-cookie-...` tenant), `kid` = `<tenant>/<key_id>`, RS256 only).
    #[serde(default)]
    pub mode: JwtMode,
}

/// The keys of `[provider.jitsi.jwt]` (see [`crate::keys`]).
pub const JWT_CONFIG: Section = Section {
    path: "provider.jitsi.jwt",
    doc: "Token authentication for Jitsi: a self-hosted Prosody with the token plugin, or 8x8 JaaS (mode = \"jaas\").",
    optional: true,
    keys: &[
        Key::required(
            "app_id",
            Type::String,
            "\"...\"",
            "The application id: the token's `iss` (JaaS: the AppID, `vpaas-magic-cookie-...`).",
        ),
        Key::defaulted("audience", Type::String, "\"jitsi\"", "The token's `aud`."),
        Key::defaulted(
            "subject",
            Type::String,
            "\"*\"",
            "The token's `sub`: `*`, the deployment's domain, or the JaaS tenant.",
        ),
        Key::optional(
            "app_secret",
            Type::Secret,
            "\"env:JITSI_APP_SECRET\"",
            "HS256: the app secret shared with Prosody. Exactly one of app_secret and private_key.",
        ),
        Key::optional(
            "private_key",
            Type::Secret,
            "\"file:/etc/confsync/jitsi.pem\"",
            "RS256: a PEM private key (PKCS#8 `BEGIN PRIVATE KEY` or `BEGIN RSA PRIVATE KEY`).",
        ),
        Key::optional(
            "key_id",
            Type::String,
            "\"4f4910\"",
            "The `kid` header. JaaS (required): the API key's id from the JaaS console.",
        ),
        Key::defaulted(
            "moderator_as_string",
            Type::Bool,
            "true",
            "The moderator flag as the strings \"true\"/\"false\" (lib-jitsi-meet, JaaS); false sends a boolean, for a Prosody plugin that reads one.",
        ),
        Key::defaulted(
            "mode",
            Type::OneOf(&["prosody", "jaas"]),
            "\"prosody\"",
            "`prosody`: iss = app_id, aud = audience, sub = subject; `jaas`: 8x8 Jitsi as a Service tokens (RS256, key_id required).",
        ),
    ],
};

/// Which token dialect to mint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JwtMode {
    /// A self-hosted Prosody with the token plugin (lib-jitsi-meet's doc/tokens.md).
    #[default]
    Prosody,
    /// 8x8 JaaS (developer.8x8.com/jaas/docs/api-keys-jwt).
    Jaas,
}

fn default_true() -> bool {
    true
}

fn default_base_url() -> String {
    "https://meet.jit.si".into()
}
fn default_early_join() -> u64 {
    15
}
fn default_grace() -> u64 {
    60
}
fn default_audience() -> String {
    "jitsi".into()
}
fn default_subject() -> String {
    "*".into()
}

enum Signer {
    Hs256(Secret),
    Rs256(Box<RsaKeyPair>),
}

struct Jwt {
    /// The `iss` claim (the app id; "chat" for JaaS).
    app_id: String,
    audience: String,
    subject: String,
    key_id: Option<String>,
    moderator_as_string: bool,
    signer: Signer,
}

/// The Jitsi provider.
pub struct JitsiProvider {
    served: served::Served,
    base_url: String,
    room_secret: Secret,
    room_prefix: String,
    early_join: Duration,
    grace: Duration,
    jwt: Option<Jwt>,
}

/// Checks a `http(s)://` URL that must end with '/' (confsync's public URL).
pub(crate) fn check_public_url(field: &str, url: &str) -> Result<(), String> {
    if !(url.starts_with("https://") || url.starts_with("http://")) || !url.ends_with('/') {
        return Err(format!(
            "{field} must be an http(s) URL ending with '/' (got {url:?})"
        ));
    }
    if url.contains(['?', '#']) {
        return Err(format!("{field} must not carry a query or fragment"));
    }
    Ok(())
}

/// Checks a provider base URL and drops trailing slashes.
pub(crate) fn check_base_url(field: &str, url: &str) -> Result<String, String> {
    let trimmed = url.trim_end_matches('/');
    if !(trimmed.starts_with("https://") || trimmed.starts_with("http://"))
        || trimmed.contains(['?', '#'])
        || trimmed.len() <= "https://".len()
    {
        return Err(format!(
            "{field} must be an http(s) URL without query (got {url:?})"
        ));
    }
    Ok(trimmed.to_owned())
}

/// Checks an early-join or grace setting.
pub(crate) fn check_minutes(field: &str, minutes: u64) -> Result<Duration, String> {
    if minutes > MAX_MINUTES {
        return Err(format!(
            "{field} = {minutes} is more than a week ({MAX_MINUTES} minutes)"
        ));
    }
    Ok(Duration::from_secs(minutes * 60))
}

/// Parses an RSA private key from PEM (PKCS#8 or PKCS#1). Errors never quote the key.
fn parse_private_key(pem: &str) -> Result<RsaKeyPair, String> {
    let text = pem.trim();
    let (label, body) = match text.strip_prefix("-----BEGIN ") {
        Some(rest) => {
            let (label, rest) = rest
                .split_once("-----")
                .ok_or("jwt.private_key: malformed PEM header")?;
            let end = format!("-----END {label}-----");
            let body = rest
                .split(end.as_str())
                .next()
                .filter(|_| rest.contains(end.as_str()))
                .ok_or("jwt.private_key: PEM end line missing")?;
            (label.to_owned(), body)
        }
        None => {
            return Err(
                "jwt.private_key: expected a PEM block (-----BEGIN PRIVATE KEY-----)".into(),
            );
        }
    };
    let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = STANDARD
        .decode(compact)
        .map_err(|_| "jwt.private_key: the PEM body is not base64".to_owned())?;
    let parsed = match label.as_str() {
        "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
        "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
        other => {
            return Err(format!(
                "jwt.private_key: a {other:?} PEM block is not an unencrypted RSA private key"
            ));
        }
    };
    parsed.map_err(|e| format!("jwt.private_key: not a usable RSA private key ({e})"))
}

impl JitsiProvider {
    /// Validates `config`; meetings live in `store`.
    pub fn new(config: JitsiConfig, store: Store) -> Result<Self, String> {
        let base_url = check_base_url("base_url", &config.base_url)?;
        check_public_url("public_url", &config.public_url)?;
        if config.room_prefix.len() > 32
            || !config
                .room_prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(format!(
                "room_prefix {:?}: at most 32 of lowercase letters, digits, '-' and '_'",
                config.room_prefix
            ));
        }
        if config.room_secret.expose().len() < 16 {
            return Err("room_secret must be at least 16 characters".into());
        }
        let early_join = check_minutes("early_join_minutes", config.early_join_minutes)?;
        let grace = check_minutes("grace_minutes", config.grace_minutes)?;
        let jwt = match config.jwt {
            None => None,
            Some(j) => {
                if j.app_id.trim().is_empty() {
                    return Err("jwt.app_id is empty".into());
                }
                if j.audience.is_empty() || j.subject.is_empty() {
                    return Err("jwt.audience and jwt.subject must not be empty".into());
                }
                let signer = match (j.app_secret, j.private_key) {
                    (Some(secret), None) => Signer::Hs256(secret),
                    (None, Some(pem)) => Signer::Rs256(Box::new(parse_private_key(pem.expose())?)),
                    (Some(_), Some(_)) => {
                        return Err(
                            "jwt: set app_secret (HS256) or private_key (RS256), not both".into(),
                        );
                    }
                    (None, None) => {
                        return Err("jwt: set app_secret (HS256) or private_key (RS256)".into());
                    }
                };
                if j.mode == JwtMode::Jaas {
                    // 8x8's JaaS JWT page (developer.8x8.com/jaas/docs/api-keys-jwt): header
                    // {alg RS256, kid "<tenant>/<key id>", typ JWT}; body aud "jitsi", iss
                    // "chat", sub = the tenant (AppID "vpaas-magic-cookie-..."), room, nbf,
                    // exp, context.user with moderator "true"/"false". Rooms live under the
                    // tenant: https://8x8.vc/<tenant>/<room>.
                    let tenant = j.app_id.trim().to_owned();
                    if !tenant.starts_with("vpaas-magic-cookie-") {
                        return Err(format!(
                            "jwt.mode = \"jaas\": app_id must be the JaaS AppID (vpaas-magic-cookie-...), got {tenant:?}"
                        ));
                    }
                    if !matches!(signer, Signer::Rs256(_)) {
                        return Err(
                            "jwt.mode = \"jaas\": JaaS tokens are RS256: set private_key, not app_secret"
                                .into(),
                        );
                    }
                    let key = j
                        .key_id
                        .as_deref()
                        .map(str::trim)
                        .filter(|k| !k.is_empty())
                        .ok_or("jwt.mode = \"jaas\": key_id (the API key's id) is required")?;
                    let key = key
                        .strip_prefix(&format!("{tenant}/"))
                        .unwrap_or(key)
                        .to_owned();
                    if key.contains('/') {
                        return Err(format!(
                            "jwt.key_id {key:?} names another tenant than app_id"
                        ));
                    }
                    if !base_url.ends_with(&format!("/{tenant}")) {
                        return Err(format!(
                            "jwt.mode = \"jaas\": base_url must be the tenant's address (https://8x8.vc/{tenant})"
                        ));
                    }
                    Some(Jwt {
                        app_id: "chat".into(),
                        audience: "jitsi".into(),
                        subject: tenant.clone(),
                        key_id: Some(format!("{tenant}/{key}")),
                        moderator_as_string: true,
                        signer,
                    })
                } else {
                    Some(Jwt {
                        app_id: j.app_id,
                        audience: j.audience,
                        subject: j.subject,
                        key_id: j.key_id,
                        moderator_as_string: j.moderator_as_string,
                        signer,
                    })
                }
            }
        };
        Ok(JitsiProvider {
            served: served::Served::new(store, PROVIDER, config.public_url),
            base_url,
            room_secret: config.room_secret,
            room_prefix: config.room_prefix,
            early_join,
            grace,
            jwt,
        })
    }

    fn meeting_id_for(&self, key: &str) -> String {
        let mac = http::hmac_sha256_hex(
            self.room_secret.expose().as_bytes(),
            format!("confsync jitsi meeting\n{key}").as_bytes(),
        );
        format!("jitsi-{}", &mac[..32])
    }

    fn room_for(&self, key: &str) -> String {
        let mac = http::hmac_sha256_hex(
            self.room_secret.expose().as_bytes(),
            format!("confsync jitsi room\n{key}").as_bytes(),
        );
        format!("{}{}", self.room_prefix, &mac[..32])
    }

    /// What a click on the meeting's link at `now` gets ([`ConferenceProvider::join`] uses the
    /// current time). Unknown meetings are [`ProviderError::NotFound`].
    pub async fn join_at(
        &self,
        meeting_id: &str,
        request: &JoinRequest,
        now: DateTime<Utc>,
    ) -> Result<JoinAnswer, ProviderError> {
        let loaded = self.served.load(meeting_id).await?;
        let (not_before, expires) = match served::admit(&loaded, now, self.early_join, self.grace) {
            served::Admission::Open {
                not_before,
                expires,
            } => (not_before, expires),
            served::Admission::Refused(why) => return Ok(JoinAnswer::Refused(why)),
        };
        let room = &loaded.state.room;
        let name = request
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| http::truncate(n, 100).to_owned());
        let Some(jwt) = &self.jwt else {
            let mut url = format!("{}/{room}", self.base_url);
            if let Some(name) = name {
                url.push_str("#userInfo.displayName=");
                url.push_str(&fragment_encode(&format!("\"{name}\"")));
            }
            return Ok(JoinAnswer::Redirect(url));
        };
        let mut user = serde_json::Map::new();
        if let Some(name) = name {
            user.insert("name".into(), name.into());
        }
        // lib-jitsi-meet's doc/tokens.md ("Token Identifiers"): every field of context.user
        // must be a string (other types raise an exception); JaaS documents "true"/"false".
        user.insert(
            "moderator".into(),
            if jwt.moderator_as_string {
                json!(if request.host { "true" } else { "false" })
            } else {
                json!(request.host)
            },
        );
        let claims = json!({
            "aud": jwt.audience,
            "iss": jwt.app_id,
            "sub": jwt.subject,
            "room": room,
            "nbf": not_before.timestamp(),
            "exp": expires.timestamp(),
            "context": { "user": user },
        });
        let token = sign(jwt, &claims)?;
        Ok(JoinAnswer::Redirect(format!(
            "{}/{room}?jwt={token}",
            self.base_url
        )))
    }
}

/// Percent-encodes everything but unreserved characters (for a URL fragment value).
fn fragment_encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A compact JWS over `claims`.
fn sign(jwt: &Jwt, claims: &serde_json::Value) -> Result<String, ProviderError> {
    let mut header = json!({
        "alg": match jwt.signer { Signer::Hs256(_) => "HS256", Signer::Rs256(_) => "RS256" },
        "typ": "JWT",
    });
    if let Some(kid) = &jwt.key_id {
        header["kid"] = json!(kid);
    }
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = match &jwt.signer {
        Signer::Hs256(secret) => {
            let key =
                aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, secret.expose().as_bytes());
            aws_lc_rs::hmac::sign(&key, input.as_bytes())
                .as_ref()
                .to_vec()
        }
        Signer::Rs256(key) => {
            let mut signature = vec![0; key.public_modulus_len()];
            key.sign(
                &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| ProviderError::Permanent {
                provider: PROVIDER.into(),
                detail: "RS256 signing failed (check jwt.private_key)".into(),
            })?;
            signature
        }
    };
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
}

impl ConferenceProvider for JitsiProvider {
    fn name(&self) -> &str {
        PROVIDER
    }

    /// Jitsi has no API to ask: the meetings' store answers a read, and with JWT auth a token
    /// is signed locally with the configured key (whether the Jitsi deployment accepts it can
    /// only be seen by joining).
    fn check<'a>(&'a self) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            self.served.check_store().await?;
            let Some(jwt) = &self.jwt else {
                return Ok(
                    "jitsi: no API to ask; the meetings' store answers; no JWT configured (open rooms)"
                        .to_owned(),
                );
            };
            let now = Utc::now().timestamp();
            sign(
                jwt,
                &json!({"aud": jwt.audience, "iss": jwt.app_id, "sub": jwt.subject,
                        "room": "confsync-doctor", "nbf": now, "exp": now + 60}),
            )?;
            let alg = match jwt.signer {
                Signer::Hs256(_) => "HS256",
                Signer::Rs256(_) => "RS256",
            };
            Ok(format!(
                "jitsi: no API to ask; the meetings' store answers; a {alg} token was signed with the configured key (whether the deployment accepts it shows at the first join)"
            ))
        })
    }

    fn capabilities(&self) -> Capabilities {
        served::CAPABILITIES
    }

    fn create<'a>(
        &'a self,
        spec: &'a MeetingSpec,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Meeting, ProviderError>> {
        Box::pin(async move {
            self.served
                .create(&self.meeting_id_for(key), key, &self.room_for(key), spec)
                .await
        })
    }

    fn update<'a>(
        &'a self,
        meeting_id: &'a str,
        spec: &'a MeetingSpec,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ProviderError>> {
        Box::pin(async move { self.served.update(meeting_id, spec).await.map(Some) })
    }

    fn update_occurrence<'a>(
        &'a self,
        meeting_id: &'a str,
        occurrence: When,
        start: When,
        end: When,
        title: &'a str,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            self.served
                .set_occurrence(meeting_id, occurrence, Some((start, end, title.to_owned())))
                .await
        })
    }

    fn cancel_occurrence<'a>(
        &'a self,
        meeting_id: &'a str,
        occurrence: When,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            self.served
                .set_occurrence(meeting_id, occurrence, None)
                .await
        })
    }

    fn delete<'a>(
        &'a self,
        meeting_id: &'a str,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move { self.served.delete(meeting_id).await.map(|_| ()) })
    }

    fn join<'a>(
        &'a self,
        meeting_id: &'a str,
        request: &'a JoinRequest,
    ) -> BoxFuture<'a, Result<Option<JoinAnswer>, ProviderError>> {
        Box::pin(async move {
            self.join_at(meeting_id, request, Utc::now())
                .await
                .map(Some)
        })
    }
}

/// What the adapters whose join links point at confsync share (`jitsi`, `bigbluebutton`): the
/// meeting's state in the store's `meetings` table and the decision whether a click may join.
///
/// `spec_json` holds the [`MeetingSpec`] (flattened, so the `local` join page still reads it)
/// plus `provider` (who owns the row) and `room` (the provider-side room or meeting id, kept so
/// a secret rotation never moves an existing meeting). `occurrences_json` has the `local`
/// provider's shape ([`crate::local::Occurrences`]). Rows are created with the idempotency key
/// `{provider}:{key}` so they never collide with another provider's rows.
pub(crate) mod served {
    use std::time::Duration;

    use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
    use confsync_store::{Store, StoreError};
    use serde::{Deserialize, Serialize};

    use crate::http::join_window;
    use crate::local::Occurrences;
    use crate::{Capabilities, Meeting, MeetingSpec, ProviderError, When};

    /// Everything that matters is local state; description and attendees are not used.
    pub(crate) const CAPABILITIES: Capabilities = Capabilities {
        title: true,
        description: false,
        time: true,
        attendees: false,
        recurrence: true,
        occurrences: true,
    };

    /// `spec_json` of a served meeting.
    #[derive(Debug, Clone, Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub(crate) struct State {
        pub provider: String,
        pub room: String,
        #[serde(flatten)]
        pub spec: MeetingSpec,
    }

    /// A stored meeting, decoded.
    #[derive(Debug, Clone)]
    pub(crate) struct Loaded {
        pub state: State,
        pub occurrences: Occurrences,
        pub deleted: bool,
    }

    pub(crate) struct Served {
        store: Store,
        provider: &'static str,
        public_url: String,
    }

    fn now_ms() -> i64 {
        Utc::now().timestamp_millis()
    }

    impl Served {
        pub fn new(store: Store, provider: &'static str, public_url: String) -> Served {
            Served {
                store,
                provider,
                public_url,
            }
        }

        fn not_found(&self) -> ProviderError {
            ProviderError::NotFound {
                provider: self.provider.into(),
            }
        }

        fn error(&self, e: StoreError) -> ProviderError {
            if e.is_not_found() {
                return self.not_found();
            }
            // The database is ours: a failure is worth retrying (busy, I/O).
            ProviderError::Transient {
                provider: self.provider.into(),
                detail: e.to_string(),
                retry_after: None,
            }
        }

        fn encode(&self, room: &str, spec: &MeetingSpec) -> Result<String, ProviderError> {
            serde_json::to_string(&State {
                provider: self.provider.into(),
                room: room.into(),
                spec: spec.clone(),
            })
            .map_err(|e| ProviderError::Permanent {
                provider: self.provider.into(),
                detail: e.to_string(),
            })
        }

        /// Creates the meeting once per `key`.
        pub async fn create(
            &self,
            meeting_id: &str,
            key: &str,
            room: &str,
            spec: &MeetingSpec,
        ) -> Result<Meeting, ProviderError> {
            let join_url = format!("{}join/{meeting_id}", self.public_url);
            let made = self
                .store
                .meeting_create(
                    meeting_id,
                    &format!("{}:{key}", self.provider),
                    &self.encode(room, spec)?,
                    &join_url,
                    now_ms(),
                )
                .await
                .map_err(|e| self.error(e))?;
            Ok(Meeting {
                meeting_id: made.meeting_id,
                join_url: made.join_url,
            })
        }

        /// The store holding the meetings answers a read (`confsync doctor`).
        pub async fn check_store(&self) -> Result<(), ProviderError> {
            self.store
                .meeting("confsync-doctor-check")
                .await
                .map(|_| ())
                .map_err(|e| self.error(e))
        }

        /// The meeting, deleted or not; NotFound if unknown or another provider's.
        pub async fn load(&self, meeting_id: &str) -> Result<Loaded, ProviderError> {
            let row = self
                .store
                .meeting(meeting_id)
                .await
                .map_err(|e| self.error(e))?
                .ok_or_else(|| self.not_found())?;
            let state: State = match serde_json::from_str(&row.spec_json) {
                Ok(s) => s,
                // Not ours (a `local` meeting has no provider field).
                Err(_) => return Err(self.not_found()),
            };
            if state.provider != self.provider {
                return Err(self.not_found());
            }
            Ok(Loaded {
                state,
                occurrences: serde_json::from_str(&row.occurrences_json).unwrap_or_default(),
                deleted: row.deleted,
            })
        }

        async fn live(&self, meeting_id: &str) -> Result<Loaded, ProviderError> {
            let loaded = self.load(meeting_id).await?;
            if loaded.deleted {
                return Err(self.not_found());
            }
            Ok(loaded)
        }

        /// Replaces the spec (room kept); answers the unchanged join link.
        pub async fn update(
            &self,
            meeting_id: &str,
            spec: &MeetingSpec,
        ) -> Result<String, ProviderError> {
            let loaded = self.live(meeting_id).await?;
            self.store
                .meeting_update(
                    meeting_id,
                    &self.encode(&loaded.state.room, spec)?,
                    now_ms(),
                )
                .await
                .map_err(|e| self.error(e))?;
            Ok(format!("{}join/{meeting_id}", self.public_url))
        }

        /// Records a moved (Some) or cancelled (None) occurrence.
        pub async fn set_occurrence(
            &self,
            meeting_id: &str,
            occurrence: When,
            exception: Option<(When, When, String)>,
        ) -> Result<(), ProviderError> {
            let mut loaded = self.live(meeting_id).await?;
            loaded.occurrences.insert(occurrence.key(), exception);
            let json = serde_json::to_string(&loaded.occurrences).map_err(|e| {
                ProviderError::Permanent {
                    provider: self.provider.into(),
                    detail: e.to_string(),
                }
            })?;
            self.store
                .meeting_set_occurrences(meeting_id, &json)
                .await
                .map_err(|e| self.error(e))
        }

        /// Marks the meeting deleted (later joins are refused) and answers its state, also when
        /// it was already deleted (a retried delete redoes the provider-side part). An unknown
        /// meeting is done: None.
        pub async fn delete(&self, meeting_id: &str) -> Result<Option<State>, ProviderError> {
            let loaded = match self.load(meeting_id).await {
                Ok(l) => l,
                Err(ProviderError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            };
            if !loaded.deleted {
                match self.store.meeting_delete(meeting_id).await {
                    Ok(()) => {}
                    Err(e) if e.is_not_found() => return Ok(None),
                    Err(e) => return Err(self.error(e)),
                }
            }
            Ok(Some(loaded.state))
        }
    }

    /// Whether a click may join now.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Admission {
        /// Yes; a token minted now is valid over this window.
        Open {
            not_before: DateTime<Utc>,
            expires: DateTime<Utc>,
        },
        Refused(String),
    }

    fn parse_key(key: &str) -> Option<When> {
        if key.len() == 10 {
            return NaiveDate::parse_from_str(key, "%Y-%m-%d")
                .ok()
                .map(When::Day);
        }
        DateTime::parse_from_rfc3339(key)
            .ok()
            .map(|t| When::At(t.with_timezone(&Utc)))
    }

    /// An occurrence starting at `start` lasts as long as the series' first one.
    fn shifted_end(spec: &MeetingSpec, start: When) -> Option<When> {
        match (spec.start, spec.end, start) {
            (When::At(s), When::At(e), When::At(o)) => Some(When::At(o + (e - s))),
            (When::Day(s), When::Day(e), When::Day(o)) => Some(When::Day(o + (e - s))),
            _ => None,
        }
    }

    fn opens_message(at: DateTime<Utc>) -> String {
        format!("this meeting opens at {} UTC", at.format("%Y-%m-%d %H:%M"))
    }

    /// The join policy of served meetings (see the jitsi module doc).
    pub(crate) fn admit(
        loaded: &Loaded,
        now: DateTime<Utc>,
        early_join: Duration,
        grace: Duration,
    ) -> Admission {
        if loaded.deleted {
            return Admission::Refused("this meeting was cancelled".into());
        }
        let spec = &loaded.state.spec;
        let (open, close) = join_window(spec.start, spec.end, early_join, grace);
        if spec.recurrence.is_empty() {
            if now < open {
                return Admission::Refused(opens_message(open));
            }
            if now > close {
                return Admission::Refused("this meeting has ended".into());
            }
            return Admission::Open {
                not_before: open,
                expires: close,
            };
        }
        let mut first_open = open;
        let mut moved_now = false;
        let mut cancelled_now = false;
        for (key, exception) in &loaded.occurrences {
            match exception {
                Some((start, end, _)) => {
                    let (o, c) = join_window(*start, *end, early_join, grace);
                    first_open = first_open.min(o);
                    moved_now |= o <= now && now <= c;
                }
                None => {
                    let Some(original) = parse_key(key) else {
                        continue;
                    };
                    let Some(end) = shifted_end(spec, original) else {
                        continue;
                    };
                    let (o, c) = join_window(original, end, early_join, grace);
                    cancelled_now |= o <= now && now <= c;
                }
            }
        }
        if now < first_open {
            return Admission::Refused(opens_message(first_open));
        }
        if cancelled_now && !moved_now {
            return Admission::Refused("this occurrence was cancelled".into());
        }
        let length = (close - open).max(TimeDelta::zero());
        Admission::Open {
            not_before: first_open,
            expires: now.checked_add_signed(length).unwrap_or(close),
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn at(s: &str) -> When {
            When::At(s.parse().unwrap())
        }

        fn loaded(recurrence: &[&str], occurrences: Occurrences) -> Loaded {
            Loaded {
                state: State {
                    provider: "jitsi".into(),
                    room: "r".into(),
                    spec: MeetingSpec {
                        title: "t".into(),
                        description: String::new(),
                        start: at("2026-12-01T10:00:00Z"),
                        end: at("2026-12-01T11:00:00Z"),
                        time_zone: None,
                        recurrence: recurrence.iter().map(|s| s.to_string()).collect(),
                        attendees: vec![],
                        organizer: None,
                    },
                },
                occurrences,
                deleted: false,
            }
        }

        fn now(s: &str) -> DateTime<Utc> {
            s.parse().unwrap()
        }

        const EARLY: Duration = Duration::from_secs(15 * 60);
        const GRACE: Duration = Duration::from_secs(3600);

        #[test]
        fn a_single_meeting_opens_early_and_ends_after_the_grace() {
            let l = loaded(&[], Occurrences::new());
            assert_eq!(
                admit(&l, now("2026-12-01T09:40:00Z"), EARLY, GRACE),
                Admission::Refused("this meeting opens at 2026-12-01 09:45 UTC".into())
            );
            assert_eq!(
                admit(&l, now("2026-12-01T09:50:00Z"), EARLY, GRACE),
                Admission::Open {
                    not_before: now("2026-12-01T09:45:00Z"),
                    expires: now("2026-12-01T12:00:00Z"),
                }
            );
            assert_eq!(
                admit(&l, now("2026-12-01T12:00:01Z"), EARLY, GRACE),
                Admission::Refused("this meeting has ended".into())
            );
            let mut gone = l.clone();
            gone.deleted = true;
            assert_eq!(
                admit(&gone, now("2026-12-01T10:30:00Z"), EARLY, GRACE),
                Admission::Refused("this meeting was cancelled".into())
            );
        }

        #[test]
        fn a_series_honours_cancelled_and_moved_occurrences() {
            let mut occurrences = Occurrences::new();
            occurrences.insert("2026-12-08T10:00:00Z".into(), None);
            occurrences.insert(
                "2026-12-15T10:00:00Z".into(),
                Some((
                    at("2026-12-15T16:00:00Z"),
                    at("2026-12-15T17:00:00Z"),
                    "t".into(),
                )),
            );
            let l = loaded(&["RRULE:FREQ=WEEKLY"], occurrences);
            // Any later time works, with a token good for one occurrence's window from now.
            assert_eq!(
                admit(&l, now("2027-03-02T10:05:00Z"), EARLY, GRACE),
                Admission::Open {
                    not_before: now("2026-12-01T09:45:00Z"),
                    expires: now("2027-03-02T12:20:00Z"),
                }
            );
            assert_eq!(
                admit(&l, now("2026-12-08T10:30:00Z"), EARLY, GRACE),
                Admission::Refused("this occurrence was cancelled".into())
            );
            assert!(matches!(
                admit(&l, now("2026-12-15T16:30:00Z"), EARLY, GRACE),
                Admission::Open { .. }
            ));
            assert!(matches!(
                admit(&l, now("2026-11-30T10:00:00Z"), EARLY, GRACE),
                Admission::Refused(_)
            ));
        }
    }
}
