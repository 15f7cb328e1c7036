//! The settings of one blocking connection: the protocol core's limits, keepalive and close
//! timeout, plus what only a blocking writer needs.

use std::time::Duration;

use palisade_error::CloseCode;
use palisade_proto::connection::ProtocolConfig;

/// Settings of a [`crate::WebSocket`], the same defaults as palisade's tokio connection:
/// messages and frames up to 1 MiB, a keepalive ping every 20 s with a 20 s pong deadline,
/// a 10 s close timeout, a 30 s write timeout.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// The protocol core's settings: size limits, keepalive, close and idle timeouts.
    pub protocol: ProtocolConfig,
    /// How long one write may block on a peer that does not read. Crossing it ends the
    /// connection with [`palisade_error::PolicyViolation`] (`SlowConsumer`), as the tokio
    /// connection does. Default 30 s; `None` waits for ever.
    pub write_timeout: Option<Duration>,
    /// The close code reported for a slow consumer: 1008 (default) or 1013.
    pub slow_consumer_code: CloseCode,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            protocol: ProtocolConfig::default(),
            write_timeout: Some(Duration::from_secs(30)),
            slow_consumer_code: CloseCode::POLICY_VIOLATION,
        }
    }
}

impl Config {
    /// Sets the largest message accepted, after reassembly and decompression (default 1 MiB);
    /// raises the frame limit with it when it is lower. Crossing it closes with 1009.
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.protocol = self.protocol.with_max_message_size(bytes);
        if self.protocol.max_frame_size < bytes {
            self.protocol = self.protocol.with_max_frame_size(bytes);
        }
        self
    }

    /// Sets the largest single frame accepted (default 1 MiB). Crossing it closes with 1009.
    pub fn with_max_frame_size(mut self, bytes: usize) -> Self {
        self.protocol = self.protocol.with_max_frame_size(bytes);
        self
    }

    /// Sets the keepalive ping interval and the pong deadline (`None` disables either). A
    /// missed pong closes with 1011. Pings go out while a thread waits in `recv` or
    /// `recv_timeout`.
    pub fn with_keepalive(mut self, interval: Option<Duration>, timeout: Option<Duration>) -> Self {
        self.protocol = self.protocol.with_keepalive(interval, timeout);
        self
    }

    /// Sets how long to wait for the peer's side of the close handshake (default 10 s).
    pub fn with_close_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.protocol = self.protocol.with_close_timeout(timeout);
        self
    }

    /// Sets the idle limit: closing with 1001 after this long without a data message either
    /// way (default off).
    pub fn with_idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.protocol = self.protocol.with_idle_timeout(timeout);
        self
    }

    /// Sets the write timeout and the code a slow consumer is reported with.
    pub fn with_write_timeout(mut self, timeout: Option<Duration>, code: CloseCode) -> Self {
        self.write_timeout = timeout;
        self.slow_consumer_code = code;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_larger_message_limit_raises_the_frame_limit_but_never_lowers_it() {
        let config = Config::default().with_max_message_size(16 << 20);
        assert_eq!(config.protocol.max_message_size, 16 << 20);
        assert_eq!(config.protocol.max_frame_size, 16 << 20);
        let config = Config::default().with_max_frame_size(4 << 20).with_max_message_size(1024);
        assert_eq!(config.protocol.max_frame_size, 4 << 20);
        assert_eq!(config.protocol.max_message_size, 1024);
    }
}
