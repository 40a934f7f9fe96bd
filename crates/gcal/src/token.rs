//! Where access tokens come from: the [`TokenSource`] trait and [`StaticToken`].
//!
//! This module owns only the seam between the client and authentication; OAuth flows
//! (service-account JWT grants, refresh tokens) implement [`TokenSource`] elsewhere. Token values
//! are secrets: nothing here prints them.

use std::fmt;

use crate::BoxFuture;
use crate::error::GcalError;

/// Supplies the bearer token for each request.
///
/// The method returns a boxed future so that `Arc<dyn TokenSource>` works (a trait with an
/// `async fn` is not dyn-compatible).
pub trait TokenSource: Send + Sync {
    /// A currently valid access token (without the `Bearer ` prefix).
    fn token(&self) -> BoxFuture<'_, Result<String, GcalError>>;

    /// Called after a 401: the last token was refused, so the next [`TokenSource::token`] call
    /// should fetch a fresh one.
    fn invalidate(&self) {}
}

/// A fixed token (tests, the emulator's `dev:<email>` tokens, short-lived tools).
#[derive(Clone, PartialEq, Eq)]
pub struct StaticToken(pub String);

impl fmt::Debug for StaticToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticToken(<redacted>)")
    }
}

impl TokenSource for StaticToken {
    fn token(&self) -> BoxFuture<'_, Result<String, GcalError>> {
        let token = self.0.clone();
        Box::pin(async move { Ok(token) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_token() {
        let token = StaticToken("ya29.secret".into());
        assert!(!format!("{token:?}").contains("secret"));
    }

    #[tokio::test]
    async fn a_static_token_is_returned_as_is() {
        let token = StaticToken("dev:alice@example.com".into());
        assert_eq!(token.token().await.unwrap(), "dev:alice@example.com");
    }
}
