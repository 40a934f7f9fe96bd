//! Identifiers and secrets.
//!
//! Event ids look like Google's: 26 characters of base32hex (`a-v`, `0-9`). They come from a
//! seeded generator so a run with a fixed seed is reproducible. Bearer tokens, refresh tokens and
//! authorization codes are secrets and come from the operating system's generator instead.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};

const BASE32HEX: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";

/// SplitMix64: small, fast, and good enough for ids and fault probabilities.
#[derive(Debug, Clone)]
pub struct IdGen {
    state: u64,
}

impl IdGen {
    pub fn new(seed: u64) -> Self {
        IdGen { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A new event id: 26 base32hex characters.
    pub fn event_id(&mut self) -> String {
        let bits = (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64());
        (0..26)
            .map(|i| BASE32HEX[((bits >> (i * 5)) & 31) as usize] as char)
            .collect()
    }
}

/// A random secret of `bytes` bytes, URL-safe base64 encoded.
pub fn secret(bytes: usize) -> String {
    use base64::Engine;
    let mut buf = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the system random generator is available");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Google's rule for client-supplied event ids: base32hex characters, 5 to 1024 long.
pub fn is_valid_event_id(id: &str) -> bool {
    (5..=1024).contains(&id.len()) && id.bytes().all(|b| BASE32HEX.contains(&b))
}

/// FNV-1a, for stable fingerprints (query binding of page tokens, instance etags).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(std::iter::once(&0xffu8)) {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_valid_and_distinct() {
        let mut ids = IdGen::new(7);
        let a = ids.event_id();
        let b = ids.event_id();
        assert!(is_valid_event_id(&a), "{a}");
        assert_ne!(a, b);
        assert_eq!(IdGen::new(7).event_id(), a, "same seed, same ids");
    }

    #[test]
    fn client_ids_follow_googles_alphabet() {
        assert!(is_valid_event_id("abcde012"));
        assert!(!is_valid_event_id("abcd"));
        assert!(!is_valid_event_id("ABCDEFG"));
        assert!(!is_valid_event_id("abcdefw"));
        assert!(!is_valid_event_id("abc_20261201T100000Z"));
    }
}
