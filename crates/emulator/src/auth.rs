//! OAuth 2.0 as Google's token endpoint speaks it: bearer tokens, the JWT-bearer grant of service
//! accounts (with domain-wide delegation through `sub`), the authorization-code grant with PKCE,
//! and refresh tokens that can be revoked.
//!
//! In dev mode `Bearer dev:<email>` is accepted as that user, and any RS256 key may sign a
//! service account's assertion; otherwise the key must have been registered.

use std::collections::HashMap;

use aws_lc_rs::digest;
use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

use crate::ids::secret;

/// Access tokens live an hour, like Google's.
pub const ACCESS_TOKEN_SECONDS: i64 = 3600;

struct AccessGrant {
    email: String,
    expires: DateTime<Utc>,
}

struct RefreshGrant {
    email: String,
    client_id: Option<String>,
    scope: String,
}

struct PendingCode {
    email: String,
    client_id: String,
    redirect_uri: String,
    challenge: Option<(String, String)>,
    scope: String,
    expires: DateTime<Utc>,
}

/// An OAuth error as the token endpoint answers it (`{"error", "error_description"}`).
#[derive(Debug, Clone, PartialEq)]
pub struct OAuthError {
    pub status: u16,
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    fn new(status: u16, error: &'static str, description: impl Into<String>) -> Self {
        OAuthError {
            status,
            error,
            description: description.into(),
        }
    }

    fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(400, "invalid_grant", description)
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(400, "invalid_request", description)
    }

    pub fn body(&self) -> Value {
        json!({"error": self.error, "error_description": self.description})
    }
}

/// Tokens, grants and registered service-account keys.
#[derive(Default)]
pub struct AuthState {
    access: HashMap<String, AccessGrant>,
    refresh: HashMap<String, RefreshGrant>,
    codes: HashMap<String, PendingCode>,
    service_accounts: HashMap<String, Vec<u8>>,
    /// Domain-wide delegation per service account: the scopes it may ask for as a user.
    /// Absent: every scope.
    delegations: HashMap<String, Vec<String>>,
}

/// What `/token` hands out.
pub struct Issued {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
}

impl Issued {
    pub fn body(&self) -> Value {
        let mut body = json!({
            "access_token": self.access_token,
            "expires_in": ACCESS_TOKEN_SECONDS - 1,
            "token_type": "Bearer",
        });
        if let Some(refresh) = &self.refresh_token {
            body["refresh_token"] = json!(refresh);
        }
        if let Some(scope) = &self.scope {
            body["scope"] = json!(scope);
        }
        body
    }
}

impl AuthState {
    /// The user a bearer token stands for, if it is valid now.
    pub fn user_for(&self, token: &str, now: DateTime<Utc>, dev_mode: bool) -> Option<String> {
        if let Some(email) = token.strip_prefix("dev:") {
            return dev_mode
                .then(|| email.trim().to_ascii_lowercase())
                .filter(|e| e.contains('@'));
        }
        self.access
            .get(token)
            .filter(|g| g.expires > now)
            .map(|g| g.email.clone())
    }

    pub fn issue_access(&mut self, email: &str, now: DateTime<Utc>, lifetime: Duration) -> String {
        let token = format!("ya29.emu-{}", secret(24));
        self.access.insert(
            token.clone(),
            AccessGrant {
                email: email.to_owned(),
                // A lifetime past the end of time (admin input) never expires, never panics.
                expires: now
                    .checked_add_signed(lifetime)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC),
            },
        );
        token
    }

    pub fn issue_refresh(&mut self, email: &str, client_id: Option<&str>, scope: &str) -> String {
        let token = format!("1//emu-{}", secret(24));
        self.refresh.insert(
            token.clone(),
            RefreshGrant {
                email: email.to_owned(),
                client_id: client_id.map(str::to_owned),
                scope: scope.to_owned(),
            },
        );
        token
    }

    /// Revokes every grant of a user: refresh tokens answer `invalid_grant`, access tokens 401.
    pub fn revoke_user(&mut self, email: &str) -> usize {
        let before = self.access.len() + self.refresh.len();
        self.access.retain(|_, g| g.email != email);
        self.refresh.retain(|_, g| g.email != email);
        before - self.access.len() - self.refresh.len()
    }

    /// Registers a service account's public key (PEM `PUBLIC KEY`, i.e. SubjectPublicKeyInfo).
    pub fn register_service_account(
        &mut self,
        client_email: &str,
        pem: &str,
    ) -> Result<(), String> {
        let der = pem_to_der(pem).ok_or("publicKeyPem is not a PEM-encoded public key")?;
        aws_lc_rs::rsa::PublicEncryptingKey::from_der(&der).map_err(|_| {
            "publicKeyPem is not an RSA public key (expected -----BEGIN PUBLIC KEY-----)".to_owned()
        })?;
        self.service_accounts
            .insert(client_email.to_ascii_lowercase(), der);
        Ok(())
    }

    /// Grants (Some) or lifts (None: every scope allowed) a service account's domain-wide
    /// delegation scopes, as a Workspace admin does in the Admin console.
    pub fn set_delegation(&mut self, client_email: &str, scopes: Option<Vec<String>>) {
        let email = client_email.to_ascii_lowercase();
        match scopes {
            Some(scopes) => {
                self.delegations.insert(email, scopes);
            }
            None => {
                self.delegations.remove(&email);
            }
        }
    }

    /// `GET /o/oauth2/v2/auth`: no consent screen; the user is `login_hint`.
    pub fn authorize(
        &mut self,
        params: &HashMap<String, String>,
        now: DateTime<Utc>,
    ) -> Result<String, OAuthError> {
        let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let client_id = get("client_id")
            .ok_or_else(|| OAuthError::invalid_request("Missing required parameter: client_id"))?;
        let redirect_uri = get("redirect_uri").ok_or_else(|| {
            OAuthError::invalid_request("Missing required parameter: redirect_uri")
        })?;
        if get("response_type") != Some("code") {
            return Err(OAuthError::new(
                400,
                "unsupported_response_type",
                "response_type must be code",
            ));
        }
        let email = get("login_hint").ok_or_else(|| {
            OAuthError::invalid_request(
                "The emulator has no sign-in page: pass login_hint=<email> to choose the user",
            )
        })?;
        if !email.contains('@') {
            return Err(OAuthError::invalid_request(
                "login_hint must be an email address",
            ));
        }
        let challenge = match get("code_challenge") {
            Some(c) => {
                let method = get("code_challenge_method").unwrap_or("plain");
                if method != "S256" && method != "plain" {
                    return Err(OAuthError::invalid_request(
                        "code_challenge_method must be S256 or plain",
                    ));
                }
                Some((c.to_owned(), method.to_owned()))
            }
            None => None,
        };
        let code = format!("4/emu-{}", secret(18));
        self.codes.insert(
            code.clone(),
            PendingCode {
                email: email.to_ascii_lowercase(),
                client_id: client_id.to_owned(),
                redirect_uri: redirect_uri.to_owned(),
                challenge,
                scope: get("scope").unwrap_or("").to_owned(),
                expires: now + Duration::minutes(10),
            },
        );
        Ok(code)
    }

    /// `POST /token`.
    pub fn token(
        &mut self,
        form: &HashMap<String, String>,
        now: DateTime<Utc>,
        dev_mode: bool,
        token_url: &str,
    ) -> Result<(String, Issued), OAuthError> {
        let get = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
        match get("grant_type") {
            Some("urn:ietf:params:oauth:grant-type:jwt-bearer") => {
                let assertion = get("assertion").ok_or_else(|| {
                    OAuthError::invalid_request("Missing required parameter: assertion")
                })?;
                let (email, scope) = self.check_assertion(assertion, now, dev_mode, token_url)?;
                let access_token =
                    self.issue_access(&email, now, Duration::seconds(ACCESS_TOKEN_SECONDS));
                Ok((
                    email,
                    Issued {
                        access_token,
                        refresh_token: None,
                        scope: None,
                    }
                    .with_scope(scope),
                ))
            }
            Some("authorization_code") => {
                let code = get("code").ok_or_else(|| {
                    OAuthError::invalid_request("Missing required parameter: code")
                })?;
                let pending = self
                    .codes
                    .remove(code)
                    .ok_or_else(|| OAuthError::invalid_grant("Malformed auth code."))?;
                if pending.expires < now {
                    return Err(OAuthError::invalid_grant(
                        "The authorization code has expired.",
                    ));
                }
                if get("redirect_uri") != Some(pending.redirect_uri.as_str()) {
                    return Err(OAuthError::invalid_grant(
                        "Bad Request: redirect_uri does not match the authorization request.",
                    ));
                }
                if let Some(client) = get("client_id")
                    && client != pending.client_id
                {
                    return Err(OAuthError::new(
                        401,
                        "invalid_client",
                        "The OAuth client was not found.",
                    ));
                }
                if let Some((challenge, method)) = &pending.challenge {
                    let verifier = get("code_verifier")
                        .ok_or_else(|| OAuthError::invalid_grant("Missing code verifier."))?;
                    let computed = match method.as_str() {
                        "S256" => URL_SAFE_NO_PAD
                            .encode(digest::digest(&digest::SHA256, verifier.as_bytes())),
                        _ => verifier.to_owned(),
                    };
                    if &computed != challenge {
                        return Err(OAuthError::invalid_grant("Invalid code verifier."));
                    }
                }
                let access_token =
                    self.issue_access(&pending.email, now, Duration::seconds(ACCESS_TOKEN_SECONDS));
                let refresh =
                    self.issue_refresh(&pending.email, Some(&pending.client_id), &pending.scope);
                let scope = Some(pending.scope.clone()).filter(|s| !s.is_empty());
                Ok((
                    pending.email,
                    Issued {
                        access_token,
                        refresh_token: Some(refresh),
                        scope,
                    },
                ))
            }
            Some("refresh_token") => {
                let token = get("refresh_token").ok_or_else(|| {
                    OAuthError::invalid_request("Missing required parameter: refresh_token")
                })?;
                let grant = self.refresh.get(token).ok_or_else(|| {
                    OAuthError::invalid_grant("Token has been expired or revoked.")
                })?;
                if let (Some(expected), Some(given)) = (&grant.client_id, get("client_id"))
                    && expected != given
                {
                    return Err(OAuthError::new(401, "unauthorized_client", "Unauthorized"));
                }
                let (email, scope) = (grant.email.clone(), grant.scope.clone());
                let access_token =
                    self.issue_access(&email, now, Duration::seconds(ACCESS_TOKEN_SECONDS));
                Ok((
                    email,
                    Issued {
                        access_token,
                        refresh_token: None,
                        scope: Some(scope).filter(|s| !s.is_empty()),
                    },
                ))
            }
            Some(other) => Err(OAuthError::new(
                400,
                "unsupported_grant_type",
                format!("Invalid grant_type: {other}"),
            )),
            None => Err(OAuthError::invalid_request(
                "Missing required parameter: grant_type",
            )),
        }
    }

    /// Checks a service account's JWT; returns the user it acts as and the scope.
    fn check_assertion(
        &self,
        assertion: &str,
        now: DateTime<Utc>,
        dev_mode: bool,
        token_url: &str,
    ) -> Result<(String, String), OAuthError> {
        let bad = |why: &str| OAuthError::invalid_grant(format!("Invalid JWT: {why}"));
        let mut parts = assertion.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("expected three dot-separated parts"));
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part.trim_end_matches('='))
                .map_err(|_| bad("a part is not base64url"))
        };
        let header: Value =
            serde_json::from_slice(&decode(h)?).map_err(|_| bad("the header is not JSON"))?;
        let claims: Value =
            serde_json::from_slice(&decode(p)?).map_err(|_| bad("the claim set is not JSON"))?;
        let signature = decode(s)?;
        if header.get("alg").and_then(Value::as_str) != Some("RS256") {
            return Err(bad("alg must be RS256"));
        }
        let iss = claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("missing iss"))?
            .to_ascii_lowercase();
        let aud = claims.get("aud").and_then(Value::as_str).unwrap_or("");
        if aud != token_url
            && aud != "https://oauth2.googleapis.com/token"
            && aud != "https://accounts.google.com/o/oauth2/token"
        {
            return Err(bad(&format!(
                "aud must be the token endpoint ({token_url})"
            )));
        }
        let iat = claims
            .get("iat")
            .and_then(Value::as_i64)
            .ok_or_else(|| bad("missing iat"))?;
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or_else(|| bad("missing exp"))?;
        let skew = 300;
        // iat and exp are the client's numbers: compare without arithmetic that can overflow.
        if exp <= now.timestamp().saturating_sub(skew) {
            return Err(bad(
                "Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
            ));
        }
        if exp.checked_sub(iat).is_none_or(|lifetime| lifetime > 3600)
            || iat > now.timestamp().saturating_add(skew)
        {
            return Err(bad(
                "Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
            ));
        }
        let scope = claims
            .get("scope")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if scope.is_empty() && claims.get("target_audience").is_none() {
            return Err(OAuthError::new(
                400,
                "invalid_scope",
                "Invalid OAuth scope or ID token audience provided.",
            ));
        }
        match self.service_accounts.get(&iss) {
            Some(der) => {
                let signed = &assertion[..h.len() + 1 + p.len()];
                UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der)
                    .verify(signed.as_bytes(), &signature)
                    .map_err(|_| bad("Invalid JWT Signature."))?;
            }
            None if dev_mode => {
                if signature.len() < 128 {
                    return Err(bad("Invalid JWT Signature."));
                }
            }
            None => {
                return Err(OAuthError::new(
                    401,
                    "invalid_client",
                    "The OAuth client was not found.",
                ));
            }
        }
        let user = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or(&iss)
            .to_ascii_lowercase();
        // Acting as a user needs domain-wide delegation of every scope asked for; Google
        // answers anything less with 401 unauthorized_client.
        if user != iss
            && let Some(granted) = self.delegations.get(&iss)
            && !scope
                .split_whitespace()
                .all(|asked| granted.iter().any(|g| g == asked))
        {
            return Err(OAuthError::new(
                401,
                "unauthorized_client",
                "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.",
            ));
        }
        Ok((user, scope))
    }
}

impl Issued {
    fn with_scope(mut self, scope: String) -> Self {
        self.scope = Some(scope).filter(|s| !s.is_empty());
        self
    }
}

fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    if body.is_empty() || !pem.contains("-----BEGIN") {
        return None;
    }
    STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode([7u8; 256]))
    }

    fn form(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn jwt_bearer_acts_as_sub_in_dev_mode() {
        let mut auth = AuthState::default();
        let now = Utc::now();
        let assertion = jwt(
            json!({"iss": "sa@p.iam.gserviceaccount.com", "sub": "Bob@Example.com", "scope": "https://www.googleapis.com/auth/calendar", "aud": "http://h/token", "iat": now.timestamp(), "exp": now.timestamp() + 3600}),
        );
        let f = form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &assertion),
        ]);
        let (email, issued) = auth.token(&f, now, true, "http://h/token").unwrap();
        assert_eq!(email, "bob@example.com");
        assert_eq!(
            auth.user_for(&issued.access_token, now, false).as_deref(),
            Some("bob@example.com")
        );
        // Outside dev mode an unregistered key is refused.
        assert_eq!(
            auth.token(&f, now, false, "http://h/token")
                .err()
                .map(|e| e.error),
            Some("invalid_client")
        );
    }

    #[test]
    fn acting_as_a_user_needs_every_scope_delegated() {
        let mut auth = AuthState::default();
        let now = Utc::now();
        let assertion = |scope: &str, sub: Option<&str>| {
            let mut claims = json!({"iss": "sa@p.iam.gserviceaccount.com", "scope": scope, "aud": "http://h/token", "iat": now.timestamp(), "exp": now.timestamp() + 3600});
            if let Some(sub) = sub {
                claims["sub"] = json!(sub);
            }
            form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", &jwt(claims)),
            ])
        };
        let calendar = "https://www.googleapis.com/auth/calendar";
        auth.set_delegation(
            "SA@p.iam.gserviceaccount.com",
            Some(vec![
                "https://www.googleapis.com/auth/calendar.readonly".into(),
            ]),
        );
        let refused = auth
            .token(
                &assertion(calendar, Some("bob@example.com")),
                now,
                true,
                "http://h/token",
            )
            .err()
            .unwrap();
        assert_eq!(
            (refused.status, refused.error),
            (401, "unauthorized_client")
        );
        // As itself, the service account needs no delegation.
        assert!(
            auth.token(&assertion(calendar, None), now, true, "http://h/token")
                .is_ok()
        );
        auth.set_delegation("sa@p.iam.gserviceaccount.com", Some(vec![calendar.into()]));
        assert!(
            auth.token(
                &assertion(calendar, Some("bob@example.com")),
                now,
                true,
                "http://h/token"
            )
            .is_ok()
        );
        auth.set_delegation("sa@p.iam.gserviceaccount.com", None);
        assert!(
            auth.token(
                &assertion(
                    "https://www.googleapis.com/auth/drive",
                    Some("bob@example.com")
                ),
                now,
                true,
                "http://h/token"
            )
            .is_ok()
        );
    }

    #[test]
    fn expired_or_foreign_assertions_are_refused() {
        let mut auth = AuthState::default();
        let now = Utc::now();
        let old = jwt(
            json!({"iss": "sa@x", "scope": "s", "aud": "http://h/token", "iat": now.timestamp() - 7200, "exp": now.timestamp() - 3600}),
        );
        let f = form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &old),
        ]);
        assert_eq!(
            auth.token(&f, now, true, "http://h/token")
                .err()
                .map(|e| e.error),
            Some("invalid_grant")
        );
        let wrong_aud = jwt(
            json!({"iss": "sa@x", "scope": "s", "aud": "https://evil/token", "iat": now.timestamp(), "exp": now.timestamp() + 60}),
        );
        let f = form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", &wrong_aud),
        ]);
        assert_eq!(
            auth.token(&f, now, true, "http://h/token")
                .err()
                .map(|e| e.error),
            Some("invalid_grant")
        );
        let f = form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", "a.b"),
        ]);
        assert!(auth.token(&f, now, true, "http://h/token").is_err());
    }

    #[test]
    fn authorization_code_with_pkce_then_refresh_then_revoke() {
        let mut auth = AuthState::default();
        let now = Utc::now();
        let verifier = "a-verifier-of-at-least-43-characters-long-0123456789";
        let challenge =
            URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()));
        let params = form(&[
            ("client_id", "c"),
            ("redirect_uri", "http://127.0.0.1/cb"),
            ("response_type", "code"),
            ("scope", "cal"),
            ("login_hint", "carol@example.com"),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ]);
        let code = auth.authorize(&params, now).unwrap();
        let wrong = form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1/cb"),
            ("code_verifier", "nope"),
        ]);
        assert_eq!(
            auth.token(&wrong, now, false, "t").err().map(|e| e.error),
            Some("invalid_grant")
        );
        // A code is single-use, even after a failed exchange.
        let code = auth.authorize(&params, now).unwrap();
        let right = form(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "http://127.0.0.1/cb"),
            ("code_verifier", verifier),
            ("client_id", "c"),
        ]);
        let (email, issued) = auth.token(&right, now, false, "t").unwrap();
        assert_eq!(email, "carol@example.com");
        let refresh = issued.refresh_token.unwrap();
        assert!(auth.token(&right, now, false, "t").is_err(), "code reuse");
        let f = form(&[("grant_type", "refresh_token"), ("refresh_token", &refresh)]);
        assert!(auth.token(&f, now, false, "t").is_ok());
        auth.revoke_user("carol@example.com");
        assert_eq!(
            auth.token(&f, now, false, "t").err().map(|e| e.error),
            Some("invalid_grant")
        );
        assert_eq!(auth.user_for(&issued.access_token, now, false), None);
    }

    #[test]
    fn dev_tokens_only_in_dev_mode() {
        let auth = AuthState::default();
        let now = Utc::now();
        assert_eq!(
            auth.user_for("dev:A@x.io", now, true).as_deref(),
            Some("a@x.io")
        );
        assert_eq!(auth.user_for("dev:A@x.io", now, false), None);
        assert_eq!(auth.user_for("garbage", now, true), None);
    }
}
