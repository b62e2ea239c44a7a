//! Rate limits on the webhook route, per token and per client address: token buckets in
//! this process (exact in the local shape; in AWS each function instance has its own, and
//! the HTTP API's throttling is the real limit). Over the limit: `429` with
//! `Retry-After`, and nothing is recorded.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Requests per second allowed for each key; a burst of twice that is allowed at once.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RateLimits {
    /// Per webhook token; 0: none.
    pub per_token: u32,
    /// Per client address; 0: none.
    pub per_client: u32,
}

/// The most keys kept; past it, the idle ones are forgotten (a spray of addresses costs
/// bounded memory).
const MAX_KEYS: usize = 100_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Default)]
pub struct Limiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Limiter {
    /// Takes one request for `key` at `rate` per second. `Err(wait)`: over the limit,
    /// retry after `wait`.
    pub fn take(&self, key: &str, rate: u32) -> Result<(), Duration> {
        if rate == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let rate = f64::from(rate);
        let burst = rate * 2.0;
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            map.retain(|_, b| now.duration_since(b.at).as_secs_f64() * rate < burst);
            if map.len() >= MAX_KEYS {
                map.clear();
            }
        }
        let b = map.entry(key.to_string()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_with_a_wait() {
        let l = Limiter::default();
        for _ in 0..20 {
            assert!(l.take("t", 10).is_ok());
        }
        let wait = l.take("t", 10).unwrap_err();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(l.take("other", 10).is_ok(), "keys are apart");
        assert!(l.take("t", 0).is_ok(), "0 is no limit");
    }
}
