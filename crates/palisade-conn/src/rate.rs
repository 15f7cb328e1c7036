//! Token buckets for per-connection rate limits.

use std::time::Instant;

use crate::config::RateLimit;

/// Two token buckets (messages and bytes) refilled continuously.
#[derive(Debug)]
pub(crate) struct Limiter {
    limit: RateLimit,
    messages: f64,
    bytes: f64,
    last: Instant,
}

impl Limiter {
    pub(crate) fn new(limit: RateLimit, now: Instant) -> Self {
        Self { limit, messages: limit.message_burst, bytes: limit.byte_burst, last: now }
    }

    /// Takes one message of `len` bytes; `false` if either bucket is short (nothing is taken).
    pub(crate) fn admit(&mut self, len: usize, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.messages =
            (self.messages + dt * self.limit.messages_per_sec).min(self.limit.message_burst);
        self.bytes = (self.bytes + dt * self.limit.bytes_per_sec).min(self.limit.byte_burst);
        let len = len as f64;
        if self.messages >= 1.0 && self.bytes >= len {
            self.messages -= 1.0;
            self.bytes -= len;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bucket_allows_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut l = Limiter::new(RateLimit::messages(10.0).with_burst(3.0, f64::INFINITY), t0);
        assert!((0..3).all(|_| l.admit(1, t0)));
        assert!(!l.admit(1, t0), "burst exhausted");
        assert!(l.admit(1, t0 + Duration::from_millis(100)), "one token per 100 ms");
        assert!(!l.admit(1, t0 + Duration::from_millis(100)));
    }

    #[test]
    fn byte_bucket_limits_large_messages() {
        let t0 = Instant::now();
        let mut l = Limiter::new(RateLimit::messages(1000.0).with_bytes(1000.0), t0);
        assert!(l.admit(800, t0));
        assert!(!l.admit(800, t0));
        assert!(l.admit(800, t0 + Duration::from_secs(1)));
    }
}
