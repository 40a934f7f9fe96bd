//! OpenID Connect ID tokens as Google issues them (what Apps Script's
//! `ScriptApp.getIdentityToken()` hands a script): compact JWTs signed RS256 with a key whose id
//! (`kid`) is in the header, claims `iss` (`https://accounts.google.com`), `azp`/`aud` (the
//! script's OAuth client id), `sub` (a stable numeric id per account), `email`,
//! `email_verified`, `iat` and `exp` (an hour later). The public keys are served as a JWKS at
//! `GET /oauth2/v3/certs` (Google's path), with a `Cache-Control: max-age`.
//!
//! Keys are made on first use (RSA 2048). Rotating adds a new signing key and keeps the
//! previous one published, as Google does.

use std::sync::Arc;

use aws_lc_rs::rsa::{KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

/// The issuer the emulator writes in `iss` (Google's modern value).
pub const ISSUER: &str = "https://accounts.google.com";

/// How long the emulator's JWKS may be cached (seconds), in its `Cache-Control` header.
pub const CERTS_MAX_AGE_SECONDS: u64 = 3600;

/// ID tokens live an hour, like Google's.
pub const ID_TOKEN_SECONDS: i64 = 3600;

/// Keys published at once (the newest signs).
const PUBLISHED_KEYS: usize = 2;

struct SigningKey {
    kid: String,
    pair: Arc<RsaKeyPair>,
}

/// The emulator's signing keys, newest last.
#[derive(Default)]
pub struct IdentityKeys {
    keys: Vec<SigningKey>,
}

/// What goes into one ID token.
pub struct IdTokenRequest<'a> {
    pub email: &'a str,
    pub audience: &'a str,
    pub issued_at: DateTime<Utc>,
    pub lifetime_seconds: i64,
    pub email_verified: bool,
    pub issuer: &'a str,
}

impl IdentityKeys {
    fn new_key() -> Result<SigningKey, String> {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048)
            .map_err(|_| "could not generate an RSA key".to_owned())?;
        Ok(SigningKey {
            kid: hex(&crate::ids::secret(15).into_bytes()[..20]),
            pair: Arc::new(pair),
        })
    }

    fn ensure(&mut self) -> Result<(), String> {
        if self.keys.is_empty() {
            self.keys.push(Self::new_key()?);
        }
        Ok(())
    }

    /// Adds a new signing key; the previous one stays published. Answers the new key's id.
    pub fn rotate(&mut self) -> Result<String, String> {
        self.ensure()?;
        self.keys.push(Self::new_key()?);
        while self.keys.len() > PUBLISHED_KEYS {
            self.keys.remove(0);
        }
        Ok(self.keys.last().map(|k| k.kid.clone()).unwrap_or_default())
    }

    /// The JWKS (`{"keys": [...]}`) of the published keys.
    pub fn jwks(&mut self) -> Result<Value, String> {
        self.ensure()?;
        let keys: Vec<Value> = self
            .keys
            .iter()
            .rev()
            .map(|k| {
                let public = PublicKeyComponents::<Vec<u8>>::from(k.pair.public_key());
                json!({
                    "kty": "RSA",
                    "alg": "RS256",
                    "use": "sig",
                    "kid": k.kid,
                    "n": URL_SAFE_NO_PAD.encode(&public.n),
                    "e": URL_SAFE_NO_PAD.encode(&public.e),
                })
            })
            .collect();
        Ok(json!({ "keys": keys }))
    }

    /// A signed ID token (the newest key signs).
    pub fn mint(&mut self, request: &IdTokenRequest<'_>) -> Result<String, String> {
        self.ensure()?;
        let key = self.keys.last().ok_or("no signing key")?;
        let iat = request.issued_at.timestamp();
        let header = json!({"alg": "RS256", "kid": key.kid, "typ": "JWT"});
        let email = request.email.to_ascii_lowercase();
        let claims = json!({
            "iss": request.issuer,
            "azp": request.audience,
            "aud": request.audience,
            "sub": subject_of(&email),
            "email": email,
            "email_verified": request.email_verified,
            "iat": iat,
            "exp": iat.saturating_add(request.lifetime_seconds),
        });
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0u8; key.pair.public_modulus_len()];
        key.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &aws_lc_rs::rand::SystemRandom::new(),
                signed.as_bytes(),
                &mut signature,
            )
            .map_err(|_| "signing failed".to_owned())?;
        Ok(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// A Google account's `sub`: up to 21 decimal digits, stable per account. Here: derived from
/// the email.
pub fn subject_of(email: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, email.as_bytes());
    let mut n = 0u64;
    for b in &digest.as_ref()[..8] {
        n = (n << 8) | u64::from(*b);
    }
    format!("1{n:020}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
