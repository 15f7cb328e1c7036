//! Connection settings: the protocol limits and timers, plus the runtime's own policies.

use std::time::Duration;

use palisade_error::CloseCode;
use palisade_proto::connection::ProtocolConfig;

/// Settings of a [`crate::WebSocket`]. Every limit has a safe default; see each field.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// The protocol core's settings: message and frame size limits (1 MiB), keepalive (ping
    /// every 20 s, fail after 20 s without pong), close timeout (10 s), idle timeout (off).
    pub protocol: ProtocolConfig,
    /// `send` waits once this many bytes are queued for a peer that reads slower than we
    /// write, and `try_send` fails. Default 64 KiB.
    pub write_high_water: usize,
    /// A waiting `send` resumes once the queue drains to this many bytes. Default 16 KiB.
    pub write_low_water: usize,
    /// A send that stays blocked this long on a peer that does not read closes the connection
    /// with [`Config::slow_consumer_code`]. Default 30 s.
    pub write_timeout: Option<Duration>,
    /// The close code for a peer that stopped reading: 1008 (default) or 1013.
    pub slow_consumer_code: CloseCode,
    /// Per-connection limits on incoming traffic. Default: none.
    pub rate_limit: Option<RateLimit>,
    /// While nobody receives (a handler that only pushes), the connection is still driven:
    /// pings answered, keepalive, the peer's close noticed. Messages that arrive meanwhile
    /// wait for a receiver, up to this many (default 16) and at most
    /// `protocol.max_message_size` bytes in all; then reading stops until a receiver takes
    /// them, and TCP holds the peer back.
    pub max_queue: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            protocol: ProtocolConfig::default(),
            write_high_water: 64 * 1024,
            write_low_water: 16 * 1024,
            write_timeout: Some(Duration::from_secs(30)),
            slow_consumer_code: CloseCode::POLICY_VIOLATION,
            rate_limit: None,
            max_queue: 16,
        }
    }
}

impl Config {
    /// Sets the largest message accepted (default 1 MiB); also raises the frame limit to match
    /// when it was lower.
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.protocol = self.protocol.with_max_message_size(bytes);
        if self.protocol.max_frame_size < bytes {
            self.protocol = self.protocol.with_max_frame_size(bytes);
        }
        self
    }

    /// Sets the largest frame accepted (default 1 MiB).
    pub fn with_max_frame_size(mut self, bytes: usize) -> Self {
        self.protocol = self.protocol.with_max_frame_size(bytes);
        self
    }

    /// Sets the keepalive ping interval and pong timeout (`None` disables either).
    pub fn with_keepalive(mut self, interval: Option<Duration>, timeout: Option<Duration>) -> Self {
        self.protocol = self.protocol.with_keepalive(interval, timeout);
        self
    }

    /// Sets how long to wait for the peer's side of the close handshake (default 10 s; `None`:
    /// no deadline).
    pub fn with_close_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.protocol = self.protocol.with_close_timeout(timeout);
        self
    }

    /// Sets the idle timeout (default off): no data message either way for this long closes
    /// with 1001.
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.protocol = self.protocol.with_idle_timeout(timeout);
        self
    }

    /// Sets the write buffer's high and low water marks.
    pub fn with_write_buffer(mut self, high: usize, low: usize) -> Self {
        self.write_high_water = high;
        self.write_low_water = low.min(high);
        self
    }

    /// Sets the write timeout and the close code for a peer that does not read.
    pub fn with_write_timeout(mut self, timeout: Option<Duration>, code: CloseCode) -> Self {
        self.write_timeout = timeout;
        self.slow_consumer_code = code;
        self
    }

    /// Sets how many messages wait for a receiver while nobody receives (default 16; at
    /// least 1).
    pub fn with_max_queue(mut self, messages: usize) -> Self {
        self.max_queue = messages.max(1);
        self
    }

    /// Sets the per-connection rate limit.
    pub fn with_rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.rate_limit = limit;
        self
    }
}

/// A token-bucket limit on incoming messages and bytes per second.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct RateLimit {
    /// Sustained messages per second.
    pub messages_per_sec: f64,
    /// Burst of messages allowed above the sustained rate.
    pub message_burst: f64,
    /// Sustained bytes per second (of message payload).
    pub bytes_per_sec: f64,
    /// Burst of bytes allowed above the sustained rate.
    pub byte_burst: f64,
    /// What to do with a message over the limit.
    pub action: RateLimitAction,
}

impl RateLimit {
    /// A limit of `messages_per_sec` (burst equal to one second's worth) and no byte limit,
    /// closing with 1008 when crossed.
    pub fn messages(messages_per_sec: f64) -> Self {
        Self {
            messages_per_sec,
            message_burst: messages_per_sec,
            bytes_per_sec: f64::INFINITY,
            byte_burst: f64::INFINITY,
            action: RateLimitAction::Close(CloseCode::POLICY_VIOLATION),
        }
    }

    /// Adds a byte limit (burst equal to one second's worth).
    pub fn with_bytes(mut self, bytes_per_sec: f64) -> Self {
        self.bytes_per_sec = bytes_per_sec;
        self.byte_burst = bytes_per_sec;
        self
    }

    /// Sets the bursts.
    pub fn with_burst(mut self, messages: f64, bytes: f64) -> Self {
        self.message_burst = messages;
        self.byte_burst = bytes;
        self
    }

    /// Sets the action.
    pub fn with_action(mut self, action: RateLimitAction) -> Self {
        self.action = action;
        self
    }
}

/// What happens to a message over the rate limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RateLimitAction {
    /// Drop the message; `recv` returns [`palisade_error::Error::Policy`] for it, and the
    /// connection stays open.
    Drop,
    /// Close the connection with this code (1008 or 1013).
    Close(CloseCode),
}
