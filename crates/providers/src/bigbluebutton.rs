//! The `bigbluebutton` adapter: BigBlueButton's checksummed XML API
//! (`{base_url}/{call}?{query}&checksum=...`).
//!
//! BigBlueButton meetings are ephemeral (removed when nobody joins, ended when the last user
//! leaves), so nothing is made there ahead of time. A meeting is local state in confsync's store
//! (the `meetings` table, shared with the `jitsi` adapter; see [`crate::jitsi`]'s `served`
//! module): title, times, recurrence, occurrence exceptions and cancellation survive restarts.
//! The event's join link is confsync's `{public_url}join/{meeting_id}`. When someone opens it,
//! [`ConferenceProvider::join`]:
//! 1. refuses (`JoinAnswer::Refused`) a cancelled meeting, a cancelled occurrence, a click before
//!    start - early join or after end + grace (the same policy as jitsi, recurring series
//!    included: see the jitsi module doc);
//! 2. calls `create` (idempotent for the same meetingID: a running meeting answers SUCCESS with
//!    `duplicateWarning` on current releases, FAILED `idNotUnique` on older ones: both mean
//!    "already running" and the join goes ahead) with `name` = the title fitted to 2..=256
//!    characters ([`meeting_name`]: BigBlueButton answers `validationError` otherwise), `meetingID`,
//!    `record=false`, passwords in `password` mode, and optionally `duration` (minutes left in the
//!    join window) and `endWhenNoModerator=true`;
//! 3. answers `JoinAnswer::Redirect` to a checksummed `join` URL: `fullName` (the name the guest
//!    gave, or "Guest"), `meetingID`, `role=MODERATOR` when the link carried the host signature
//!    else `VIEWER` (or the matching password in `password` mode), `createTime` from the create
//!    answer (so the URL cannot be reused for a later session) and `redirect=true`.
//!
//! The BigBlueButton meetingID is 32 hex digits of HMAC-SHA256(shared secret, key): stable for
//! retries, not guessable, and distinct from confsync's public meeting id (another HMAC). It is
//! stored with the meeting, so rotating the shared secret does not move existing meetings.
//!
//! Reschedule, rename and occurrence changes are local (a running meeting keeps its name).
//! Delete marks the meeting cancelled first (later joins are refused) and then calls `end`;
//! `notFound` (not running) counts as done, and a retried delete calls `end` again.
//!
//! Answers: `returncode` SUCCESS is success; FAILED is classified by `messageKey`
//! (`checksumError`: permanent, a configuration error naming shared_secret and the checksum
//! algorithm; `notFound`: not found; `idNotUnique`: conflict, except on a join's `create` where it
//! means the meeting is already running; others: permanent with the key and message). A non-XML or truncated 200 answer (an HTML page from a proxy) is transient with the
//! status and request id; non-2xx statuses are classified as everywhere ([`http::classify`]).
//!
//! Unsure, made configurable: `join_auth = "role"` (default; `role` on join, no passwords, `end`
//! without password) needs a server that accepts `role` (2.4 or later as far as we know); use
//! `"password"` (deterministic attendeePW/moderatorPW derived from the secret, sent on create,
//! join and end) for older servers or ones that insist on the password for `end`. The checksum
//! is computed over the query string exactly as sent, encoded as Java's `URLEncoder` does
//! (space as '+'), which is how BigBlueButton's own examples encode it.
//!
//! Open doubts and what would settle them: which releases answer `idNotUnique` rather than
//! `duplicateWarning` to a repeated role-mode create (both are handled; a run against a 2.4 and a
//! 2.7 server would pin it down); whether the 2..=256 bound counts UTF-16 units or code points
//! (the cut assumes units, the stricter; a 256-emoji title against a 2.7 server would tell).

use std::time::Duration;

use chrono::{DateTime, Utc};
use confsync_store::Store;
use serde::Deserialize;

use crate::http::{self, Answer, Secret};
use crate::jitsi::{check_base_url, check_minutes, check_public_url, served};
use crate::keys::{Key, Section, Type};
use crate::{
    BoxFuture, Capabilities, ConferenceProvider, JoinAnswer, JoinRequest, Meeting, MeetingSpec,
    ProviderError, When,
};

const PROVIDER: &str = "bigbluebutton";
/// Meeting names are cut to this many characters (UTF-16 code units, as the server counts).
const MAX_NAME: usize = 256;
/// Shorter meeting names are refused with `validationError`.
const MIN_NAME: usize = 2;
/// Display names are cut to this many characters.
const MAX_FULL_NAME: usize = 100;

/// The checksum's hash function.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumAlgorithm {
    Sha1,
    #[default]
    Sha256,
    /// BigBlueButton 2.5 and later.
    Sha384,
    /// BigBlueButton 2.5 and later.
    Sha512,
}

/// How joiners get their role.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinAuth {
    /// `role=MODERATOR|VIEWER` on join; no passwords.
    #[default]
    Role,
    /// attendeePW/moderatorPW (derived from the shared secret) on create, join and end.
    Password,
}

/// `[provider]` settings of the `bigbluebutton` kind.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BigBlueButtonConfig {
    /// The API endpoint, e.g. `https://bbb.example.com/bigbluebutton/api` (no default: every
    /// deployment is self-hosted).
    pub base_url: String,
    /// The server's shared secret (`bbb-conf --secret`).
    pub shared_secret: Secret,
    /// `sha1`, `sha256` (default), `sha384` or `sha512`.
    #[serde(default)]
    pub checksum: ChecksumAlgorithm,
    /// confsync's own public base URL (ends with '/'): join links are `{public_url}join/{id}`.
    pub public_url: String,
    /// Minutes before the start the link opens.
    #[serde(default = "default_early_join")]
    pub early_join_minutes: u64,
    /// Minutes after the end the link still works.
    #[serde(default = "default_grace")]
    pub grace_minutes: u64,
    /// `role` (default) or `password`.
    #[serde(default)]
    pub join_auth: JoinAuth,
    /// Send `duration` on create: BigBlueButton ends the meeting when the join window closes.
    #[serde(default)]
    pub duration_from_event: bool,
    /// Send `endWhenNoModerator=true` on create.
    #[serde(default)]
    pub end_when_no_moderator: bool,
    /// Seconds before a call to the server is abandoned.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

/// The keys of `[provider.bigbluebutton]` (see [`crate::keys`]).
pub const CONFIG: Section = Section {
    path: "provider.bigbluebutton",
    doc: "BigBlueButton (kind = \"bigbluebutton\"): join links point at confsync, which calls create, then redirects to a signed join.",
    optional: true,
    keys: &[
        Key::required(
            "base_url",
            Type::Url,
            "\"https://bbb.example.com/bigbluebutton/api\"",
            "The API endpoint.",
        ),
        Key::required(
            "shared_secret",
            Type::Secret,
            "\"env:BBB_SECRET\"",
            "The server's shared secret (`bbb-conf --secret`).",
        ),
        Key::defaulted(
            "checksum",
            Type::OneOf(&["sha1", "sha256", "sha384", "sha512"]),
            "\"sha256\"",
            "The checksum algorithm (sha384 and sha512 need BigBlueButton 2.5 or later).",
        ),
        Key::required(
            "public_url",
            Type::Url,
            "\"https://confsync.example.com/\"",
            "confsync's own public base URL (ends with '/'): join links are `{public_url}join/{id}`.",
        ),
        Key::bounded(
            "early_join_minutes",
            "15",
            0,
            10080,
            "Minutes before the start the link opens.",
        ),
        Key::bounded(
            "grace_minutes",
            "60",
            0,
            10080,
            "Minutes after the end the link still works.",
        ),
        Key::defaulted(
            "join_auth",
            Type::OneOf(&["role", "password"]),
            "\"role\"",
            "`role`: role=MODERATOR|VIEWER on join; `password`: attendee and moderator passwords derived from the shared secret.",
        ),
        Key::defaulted(
            "duration_from_event",
            Type::Bool,
            "false",
            "Send `duration` on create: BigBlueButton ends the meeting when the join window closes.",
        ),
        Key::defaulted(
            "end_when_no_moderator",
            Type::Bool,
            "false",
            "Send `endWhenNoModerator=true` on create.",
        ),
        Key::bounded(
            "timeout_secs",
            "15",
            1,
            300,
            "Seconds before a call to the server is abandoned.",
        ),
    ],
};

fn default_early_join() -> u64 {
    15
}
fn default_grace() -> u64 {
    60
}
fn default_timeout() -> u64 {
    15
}

/// The BigBlueButton provider.
pub struct BigBlueButtonProvider {
    served: served::Served,
    client: reqwest::Client,
    base_url: String,
    secret: Secret,
    checksum: ChecksumAlgorithm,
    join_auth: JoinAuth,
    early_join: Duration,
    grace: Duration,
    duration_from_event: bool,
    end_when_no_moderator: bool,
}

/// The `name` sent on `create`: BigBlueButton refuses names shorter than 2 or longer than 256
/// characters with `validationError` (so every join of a meeting titled "X" failed). Reference:
/// the API reference's `create` parameters ("name ... must be between 2 and 256 characters",
/// enforced since 2.7's request validation), https://docs.bigbluebutton.org/development/api#create,
/// and the b3lb 3.2.1 release notes (same bounds). The server is Java: it counts UTF-16 code
/// units, so the cut keeps at most 256 of those, always on a character boundary; a title with
/// fewer than 2 characters gets " meeting" appended (an empty one is "Meeting").
pub fn meeting_name(title: &str) -> String {
    let title = title.trim();
    if title.is_empty() {
        return "Meeting".to_owned();
    }
    let mut out = String::new();
    let mut units = 0;
    for c in title.chars() {
        if units + c.len_utf16() > MAX_NAME {
            break;
        }
        units += c.len_utf16();
        out.push(c);
    }
    if out.encode_utf16().count() < MIN_NAME {
        out.push_str(" meeting");
    }
    out
}

/// Encodes a query value as Java's `URLEncoder` (what BigBlueButton's examples use).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'*' | b'_' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The query string of `params` as sent (and checksummed).
pub fn query_string(params: &[(&str, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// `hex(sha(call + query + secret))`.
pub fn checksum(algorithm: ChecksumAlgorithm, call: &str, query: &str, secret: &str) -> String {
    use aws_lc_rs::digest;
    let algorithm = match algorithm {
        ChecksumAlgorithm::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
        ChecksumAlgorithm::Sha256 => &digest::SHA256,
        ChecksumAlgorithm::Sha384 => &digest::SHA384,
        ChecksumAlgorithm::Sha512 => &digest::SHA512,
    };
    let mut ctx = digest::Context::new(algorithm);
    ctx.update(call.as_bytes());
    ctx.update(query.as_bytes());
    ctx.update(secret.as_bytes());
    http::hex(ctx.finish().as_ref())
}

/// A BigBlueButton XML answer, scanned by hand (the answers are flat: `<response>` with simple
/// elements).
struct Xml(String);

impl Xml {
    /// The text of the first `<name>` element, entities decoded.
    fn get(&self, name: &str) -> Option<String> {
        let open = format!("<{name}>");
        let close = format!("</{name}>");
        let start = self.0.find(&open)? + open.len();
        let len = self.0[start..].find(&close)?;
        let raw = self.0[start..start + len].trim();
        let raw = raw
            .strip_prefix("<![CDATA[")
            .and_then(|r| r.strip_suffix("]]>"))
            .map(str::to_owned)
            .unwrap_or_else(|| {
                raw.replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&quot;", "\"")
                    .replace("&apos;", "'")
                    .replace("&amp;", "&")
            });
        Some(raw)
    }
}

impl BigBlueButtonProvider {
    /// Validates `config`; meetings live in `store`.
    pub fn new(config: BigBlueButtonConfig, store: Store) -> Result<Self, String> {
        let base_url = check_base_url("base_url", &config.base_url)?;
        check_public_url("public_url", &config.public_url)?;
        if config.shared_secret.expose().len() < 8 {
            return Err("shared_secret is too short to be a BigBlueButton secret".into());
        }
        let early_join = check_minutes("early_join_minutes", config.early_join_minutes)?;
        let grace = check_minutes("grace_minutes", config.grace_minutes)?;
        if !(1..=300).contains(&config.timeout_secs) {
            return Err(format!(
                "timeout_secs = {} must be between 1 and 300",
                config.timeout_secs
            ));
        }
        Ok(BigBlueButtonProvider {
            served: served::Served::new(store, PROVIDER, config.public_url),
            client: http::client(Duration::from_secs(config.timeout_secs))?,
            base_url,
            secret: config.shared_secret,
            checksum: config.checksum,
            join_auth: config.join_auth,
            early_join,
            grace,
            duration_from_event: config.duration_from_event,
            end_when_no_moderator: config.end_when_no_moderator,
        })
    }

    fn mac(&self, label: &str, value: &str) -> String {
        http::hmac_sha256_hex(
            self.secret.expose().as_bytes(),
            format!("confsync bigbluebutton {label}\n{value}").as_bytes(),
        )
    }

    fn meeting_id_for(&self, key: &str) -> String {
        format!("bbb-{}", &self.mac("meeting", key)[..32])
    }

    fn bbb_meeting_id_for(&self, key: &str) -> String {
        self.mac("room", key)[..32].to_owned()
    }

    fn password(&self, moderator: bool, room: &str) -> String {
        let label = if moderator { "moderator" } else { "attendee" };
        self.mac(label, room)[..20].to_owned()
    }

    /// The checksummed URL of an API call.
    fn url(&self, call: &str, params: &[(&str, String)]) -> String {
        let query = query_string(params);
        let sum = checksum(self.checksum, call, &query, self.secret.expose());
        if query.is_empty() {
            format!("{}/{call}?checksum={sum}", self.base_url)
        } else {
            format!("{}/{call}?{query}&checksum={sum}", self.base_url)
        }
    }

    fn failure(answer: &Answer, xml: &Xml) -> ProviderError {
        let key = xml.get("messageKey").unwrap_or_default();
        let message = xml
            .get("message")
            .map(|m| http::truncate(&m, 200).to_owned())
            .unwrap_or_default();
        let detail = format!(
            "HTTP {}{}: FAILED {key}: {message}",
            answer.status,
            answer
                .request_id
                .as_ref()
                .map(|r| format!(", request id {r}"))
                .unwrap_or_default()
        );
        let provider = PROVIDER.to_owned();
        match key.as_str() {
            "checksumError" => ProviderError::Permanent {
                provider,
                detail: format!(
                    "{detail} (configuration: the server rejected our checksum; check shared_secret and the checksum algorithm)"
                ),
            },
            "notFound" => ProviderError::NotFound { provider },
            "idNotUnique" => ProviderError::Conflict { provider, detail },
            _ => ProviderError::Permanent { provider, detail },
        }
    }

    /// Calls the API; SUCCESS answers the XML, everything else a classified error.
    async fn call(&self, call: &str, params: &[(&str, String)]) -> Result<Xml, ProviderError> {
        let answer = http::send(PROVIDER, self.client.get(self.url(call, params))).await?;
        if !answer.is_success() {
            return Err(answer.error());
        }
        let text = String::from_utf8_lossy(&answer.body).into_owned();
        let xml = Xml(text);
        let complete = xml.0.contains("<response>") && xml.0.contains("</response>");
        match xml.get("returncode").as_deref() {
            Some("SUCCESS") if complete => Ok(xml),
            Some("FAILED") if complete => Err(Self::failure(&answer, &xml)),
            _ => Err(ProviderError::Transient {
                provider: PROVIDER.into(),
                detail: format!("{}: not a BigBlueButton XML answer", answer.describe()),
                retry_after: answer.retry_after,
            }),
        }
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
        let expires = match served::admit(&loaded, now, self.early_join, self.grace) {
            served::Admission::Open { expires, .. } => expires,
            served::Admission::Refused(why) => return Ok(JoinAnswer::Refused(why)),
        };
        let room = loaded.state.room.clone();
        let name = meeting_name(&loaded.state.spec.title);
        let mut params = vec![
            ("name", name),
            ("meetingID", room.clone()),
            ("record", "false".to_owned()),
        ];
        if self.join_auth == JoinAuth::Password {
            params.push(("attendeePW", self.password(false, &room)));
            params.push(("moderatorPW", self.password(true, &room)));
        }
        if self.duration_from_event {
            let seconds = (expires - now).num_seconds().max(60);
            params.push(("duration", ((seconds + 59) / 60).to_string()));
        }
        if self.end_when_no_moderator {
            params.push(("endWhenNoModerator", "true".to_owned()));
        }
        // A repeated `create` for a running meeting is "already exists", a success: current
        // releases answer SUCCESS + `duplicateWarning`; older ones (and any release when the
        // create parameters differ, e.g. the random passwords a server makes up in role mode)
        // answer FAILED `idNotUnique`. Reference: the API reference's `create` section
        // ("Example Response" with messageKey duplicateWarning, and the idNotUnique error),
        // https://docs.bigbluebutton.org/development/api#create. The createTime for the join
        // then comes from `getMeetingInfo` (best effort: without it the join still works).
        let create_time = match self.call("create", &params).await {
            Ok(created) => created.get("createTime"),
            Err(ProviderError::Conflict { detail, .. }) if detail.contains("idNotUnique") => {
                tracing::debug!(
                    meeting = meeting_id,
                    "bigbluebutton: create answered idNotUnique: the meeting is running"
                );
                self.call("getMeetingInfo", &[("meetingID", room.clone())])
                    .await
                    .ok()
                    .and_then(|info| info.get("createTime"))
            }
            Err(e) => return Err(e),
        };
        let full_name = request
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| http::truncate(n, MAX_FULL_NAME).to_owned())
            .unwrap_or_else(|| "Guest".to_owned());
        let mut join = vec![("fullName", full_name), ("meetingID", room.clone())];
        match self.join_auth {
            JoinAuth::Role => join.push((
                "role",
                if request.host { "MODERATOR" } else { "VIEWER" }.to_owned(),
            )),
            JoinAuth::Password => join.push(("password", self.password(request.host, &room))),
        }
        if let Some(create_time) = create_time.filter(|t| !t.is_empty()) {
            join.push(("createTime", create_time));
        }
        join.push(("redirect", "true".to_owned()));
        Ok(JoinAnswer::Redirect(self.url("join", &join)))
    }
}

impl ConferenceProvider for BigBlueButtonProvider {
    fn name(&self) -> &str {
        PROVIDER
    }

    /// A signed `getMeetings` (it lists, never creates): the server answers SUCCESS only when
    /// the checksum, made with the shared secret and the configured algorithm, is accepted.
    fn check<'a>(&'a self) -> BoxFuture<'a, Result<String, ProviderError>> {
        Box::pin(async move {
            self.served.check_store().await?;
            self.call("getMeetings", &[]).await?;
            Ok("bigbluebutton: a signed getMeetings was accepted (shared secret and checksum algorithm); the meetings' store answers".to_owned())
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
                .create(
                    &self.meeting_id_for(key),
                    key,
                    &self.bbb_meeting_id_for(key),
                    spec,
                )
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
        Box::pin(async move {
            let Some(state) = self.served.delete(meeting_id).await? else {
                return Ok(());
            };
            let mut params = vec![("meetingID", state.room.clone())];
            if self.join_auth == JoinAuth::Password {
                params.push(("password", self.password(true, &state.room)));
            }
            match self.call("end", &params).await {
                Ok(_) | Err(ProviderError::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_encode_like_java_and_checksums_follow_the_algorithm() {
        let q = query_string(&[
            ("name", "Räume & Co/1 2*".to_owned()),
            ("meetingID", "abc".to_owned()),
        ]);
        assert_eq!(q, "name=R%C3%A4ume+%26+Co%2F1+2*&meetingID=abc");
        // sha1("isMeetingRunning" "meetingID=x" "secret")
        assert_eq!(
            checksum(
                ChecksumAlgorithm::Sha1,
                "isMeetingRunning",
                "meetingID=x",
                "secret"
            )
            .len(),
            40
        );
        assert_eq!(
            checksum(ChecksumAlgorithm::Sha256, "", "", ""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            checksum(ChecksumAlgorithm::Sha512, "a", "b", "c").len(),
            128
        );
        assert_eq!(checksum(ChecksumAlgorithm::Sha384, "a", "b", "c").len(), 96);
    }

    #[test]
    fn xml_elements_are_read_with_entities_and_cdata() {
        let xml = Xml(
            "<response><returncode>SUCCESS</returncode><message>a &amp; b &lt;c&gt;</message><x><![CDATA[<y>]]></x></response>"
                .into(),
        );
        assert_eq!(xml.get("returncode").as_deref(), Some("SUCCESS"));
        assert_eq!(xml.get("message").as_deref(), Some("a & b <c>"));
        assert_eq!(xml.get("x").as_deref(), Some("<y>"));
        assert_eq!(xml.get("missing"), None);
    }
}
