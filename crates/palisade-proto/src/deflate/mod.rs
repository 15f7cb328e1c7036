//! permessage-deflate (RFC 7692): negotiation for both roles and the codec.
//!
//! - [`DeflateConfig`]: what this end wants — context takeover and window sizes per direction,
//!   compression level, and the size under which messages go out uncompressed. Presets:
//!   [`DeflateConfig::default`] (best ratio) and [`DeflateConfig::lean`] (no context takeover,
//!   small windows: little memory per idle connection).
//! - Negotiation: a client sends [`DeflateConfig::offer`] and checks the server's answer with
//!   [`DeflateConfig::check_answer`]; a server picks the first acceptable offer with
//!   [`DeflateConfig::accept`]. Both produce the [`DeflateParams`] agreed on.
//! - [`Deflate`]: the [`crate::Extension`] to install with
//!   [`crate::Connection::set_extension`] once the handshake is done.
//!
//! # Memory between messages
//!
//! A zlib-rs compressor takes about 370 KiB whatever its window and `memLevel` (its hash table
//! alone is 128 KiB), a decompressor about 40 KiB. Kept for the life of every connection with
//! context takeover, that was 337 KiB of resident memory per idle connection. So by default
//! [`Deflate`] keeps no zlib stream between messages: in a direction with context takeover it
//! keeps the last bytes that went through, at most the agreed window (2^bits bytes), and gives
//! them to a fresh stream as its dictionary when the next message comes — a raw deflate stream
//! never refers further back than its window, so the peer sees one continuous stream.
//! Compressors are taken from, and given back to, a few kept per thread (16, about 6 MiB at
//! most): a connection that comes back on the same thread while its compressor is still there
//! continues it as it was; otherwise it gets one reset and gives it the window's bytes, which
//! costs CPU (zlib-rs indexes the dictionary at about 2 ns a byte: some 60 µs for a full
//! 32 KiB window, where compressing 1 KiB takes 7 µs). Nothing of another connection's stream
//! ever reaches a compressor handed out reset. Where the rebuilding costs too much,
//! [`DeflateConfig::with_retained_streams`] keeps every connection's streams instead.
//!
//! # Decompression bombs
//!
//! Inflation is incremental and never writes past the connection's message size limit: a
//! message that would inflate beyond it fails the connection with
//! [`palisade_error::PayloadTooBig`] (close 1009) after at most that many bytes were produced,
//! whatever the compression ratio. The heap it costs is the limit (1.5 times the limit for the
//! moment the buffer last doubles) plus zlib's fixed state; `deflate_bomb_heap_stays_near_the_limit` in
//! `tests/alloc.rs` holds a bomb's peak heap under 1.5 times the limit plus 256 KiB.
//!
//! # Window sizes
//!
//! zlib cannot compress with an 8-bit window in raw deflate mode (zlib and zlib-rs refuse it,
//! flate2 accepts 9 to 15 only), and compressing with 9 would use a window the peer did not
//! accept. When 8 bits are agreed for our direction, [`Deflate`]
//! therefore sends every message uncompressed, which RFC 7692 §6.1 permits (RSV1 is per
//! message). Inflating with a 9-bit window instead of 8 is always correct: a larger window
//! decodes every stream a smaller one does.

mod codec;
mod negotiation;
mod spare;
mod window;

pub use codec::Deflate;
pub use negotiation::{Accepted, DeflateParams};

/// The extension token (RFC 7692 §7).
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// The trailer a sync flush ends with, removed on send and put back on receive (RFC 7692
/// §7.2.1, §7.2.2).
pub(crate) const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// What this end asks for and how it compresses. The `server_*` and `client_*` fields use the
/// RFC's names, whatever the role: `server_*` concerns what the server sends.
///
/// A server applies them as limits on each offer it accepts; a client offers them. Defaults:
/// context takeover both ways, 15-bit windows, level 1, threshold 64 bytes, and only the
/// windows' bytes kept between messages (see the [module docs](self#memory-between-messages)).
///
/// Level 1, not zlib's default 6: on JSON-like text it leaves 27% of the bytes where 6 leaves
/// 20%, for a quarter of the CPU. `cargo xtask bench` measured 64 connections echoing 1 KiB
/// messages at 5,100 round trips/s with level 6 and 19,400 with level 1 on one core; the
/// compressor's search for matches (`longest_match`) was over a third of the server's time at
/// level 6. Raise it with [`DeflateConfig::with_level`] where bytes cost more than CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// The server resets its compressor after each message (RFC 7692 §7.1.1.1).
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message (RFC 7692 §7.1.1.2).
    pub client_no_context_takeover: bool,
    /// Largest LZ77 window, in bits (8–15), the server compresses with (RFC 7692 §7.1.2.1).
    pub server_max_window_bits: u8,
    /// Largest LZ77 window, in bits (8–15), the client compresses with (RFC 7692 §7.1.2.2).
    pub client_max_window_bits: u8,
    /// zlib compression level, 0–9 (1 by default: see above).
    pub level: u32,
    /// Messages shorter than this many bytes are sent uncompressed: deflate rarely saves more
    /// than it costs on them.
    pub threshold: usize,
    /// Keep zlib's compressor and decompressor between messages in the directions with context
    /// takeover (false by default). Off, a connection keeps only the last bytes of each such
    /// direction, at most a window's worth, and rebuilds the stream from them when the next
    /// message comes; on, it keeps the streams themselves, about 370 KiB with zlib-rs, and
    /// skips that rebuilding.
    pub retain_streams: bool,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            level: 1,
            threshold: 64,
            retain_streams: false,
        }
    }
}

impl DeflateConfig {
    /// The memory-lean preset for servers holding many connections: no context takeover in
    /// either direction (an idle connection holds no zlib state at all) and 10-bit windows.
    /// Messages still compress well on their own; repeated content across messages does not.
    pub fn lean() -> Self {
        Self {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: 10,
            client_max_window_bits: 10,
            ..Self::default()
        }
    }

    /// Sets [`DeflateConfig::server_no_context_takeover`].
    pub fn with_server_no_context_takeover(mut self, on: bool) -> Self {
        self.server_no_context_takeover = on;
        self
    }

    /// Sets [`DeflateConfig::client_no_context_takeover`].
    pub fn with_client_no_context_takeover(mut self, on: bool) -> Self {
        self.client_no_context_takeover = on;
        self
    }

    /// Sets [`DeflateConfig::server_max_window_bits`], clamped to 8–15.
    pub fn with_server_max_window_bits(mut self, bits: u8) -> Self {
        self.server_max_window_bits = bits.clamp(8, 15);
        self
    }

    /// Sets [`DeflateConfig::client_max_window_bits`], clamped to 8–15.
    pub fn with_client_max_window_bits(mut self, bits: u8) -> Self {
        self.client_max_window_bits = bits.clamp(8, 15);
        self
    }

    /// Sets [`DeflateConfig::level`], clamped to 0–9.
    pub fn with_level(mut self, level: u32) -> Self {
        self.level = level.min(9);
        self
    }

    /// Sets [`DeflateConfig::threshold`].
    pub fn with_threshold(mut self, bytes: usize) -> Self {
        self.threshold = bytes;
        self
    }

    /// Sets [`DeflateConfig::retain_streams`].
    pub fn with_retained_streams(mut self, on: bool) -> Self {
        self.retain_streams = on;
        self
    }
}

#[cfg(test)]
mod tests;
