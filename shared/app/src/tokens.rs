//! Random and derived identifiers: webhook tokens, single-use URL secrets, callback signing
//! secrets, and the ids that must come out the same each time they are derived.

use rand::Rng as _;
use rand::distr::Alphanumeric;

/// 24 characters of base62 (`A-Z a-z 0-9`): about 143 random bits. Webhook tokens and the
/// secrets of single-use URLs.
pub fn new_token() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect()
}

/// A Standard Webhooks signing secret: `whsec_` and the base64 of 32 random bytes.
pub fn new_callback_secret() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::rng().random();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// A ULID of time `ms` whose random part is the first 80 bits of `digest`: the id of
/// something that must be the same each time it is derived (a cron tick, a Kafka record's
/// run, a flow run).
pub fn derived_ulid(ms: i64, digest: &[u8]) -> String {
    let mut random = [0u8; 16];
    random[6..].copy_from_slice(&digest[..10]);
    ulid::Ulid::from_parts(u64::try_from(ms).unwrap_or(0), u128::from_be_bytes(random)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_24_characters_of_base62_and_differ() {
        let a = new_token();
        let b = new_token();
        assert_eq!(a.len(), 24);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn a_derived_ulid_is_the_same_each_time_and_keeps_its_time() {
        let digest = [7u8; 32];
        let id = derived_ulid(1_800_000_000_000, &digest);
        assert_eq!(id, derived_ulid(1_800_000_000_000, &digest));
        let parsed = ulid::Ulid::from_string(&id).expect("a ULID");
        assert_eq!(parsed.timestamp_ms(), 1_800_000_000_000);
    }
}
