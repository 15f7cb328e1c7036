//! Violations of RFC 6455 framing and of the connection's state rules.

use std::fmt;

/// The peer broke a rule of RFC 6455 (or RFC 7692): the connection must be failed.
///
/// Each variant names the rule. All close with 1002 Protocol Error except the UTF-8 ones, which
/// close with 1007 Invalid Payload Data (RFC 6455 §7.4.1). None is retryable: the same peer will
/// break the same rule again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A client sent a frame without a mask (RFC 6455 §5.1: clients MUST mask).
    #[error("client frame is not masked")]
    UnmaskedClientFrame,
    /// A server sent a masked frame (RFC 6455 §5.1: servers MUST NOT mask).
    #[error("server frame is masked")]
    MaskedServerFrame,
    /// RSV bits set without a negotiated extension that defines them (RFC 6455 §5.2).
    #[error("reserved bits {bits:#05b} set without an extension that defines them")]
    ReservedBits {
        /// RSV1..RSV3 as the low three bits (RSV1 = 0b100).
        bits: u8,
    },
    /// An opcode RFC 6455 reserves (3–7, 11–15) (RFC 6455 §5.2).
    #[error("reserved opcode {opcode:#x}")]
    ReservedOpcode {
        /// The opcode.
        opcode: u8,
    },
    /// A control frame without FIN (RFC 6455 §5.5: control frames MUST NOT be fragmented).
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A control frame payload over 125 bytes (RFC 6455 §5.5).
    #[error("control frame payload is {len} bytes, the limit is 125")]
    ControlFrameTooLong {
        /// The announced length.
        len: u64,
    },
    /// A 64-bit payload length with the most significant bit set (RFC 6455 §5.2).
    #[error("payload length has its most significant bit set")]
    InvalidPayloadLength,
    /// A continuation frame with no fragmented message in progress (RFC 6455 §5.4).
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new data frame while a fragmented message is unfinished (RFC 6455 §5.4).
    #[error("new data frame before the fragmented message was finished")]
    MissingContinuation,
    /// A text message, or a close reason, that is not UTF-8 (RFC 6455 §8.1). Close 1007.
    #[error("invalid UTF-8 in text message at byte {position}")]
    InvalidUtf8 {
        /// Offset in the message of the first byte that cannot start or continue valid UTF-8.
        position: u64,
    },
    /// A close reason that is not UTF-8 (RFC 6455 §5.5.1). Close 1007.
    #[error("invalid UTF-8 in close reason")]
    InvalidCloseReason,
    /// A close frame with a code that may not be sent (RFC 6455 §7.4).
    #[error("invalid close code {code}")]
    InvalidCloseCode {
        /// The code received.
        code: u16,
    },
    /// A close frame with a one-byte payload (RFC 6455 §5.5.1).
    #[error("close frame payload of 1 byte")]
    InvalidClosePayload,
    /// Compressed data that does not inflate (RFC 7692 §6.2).
    #[error("compressed message does not inflate")]
    InvalidCompressedData,
    /// RSV1 on a control or continuation frame under permessage-deflate (RFC 7692 §6).
    #[error("compression bit set on a control or continuation frame")]
    UnexpectedCompressionBit,
}

impl ProtocolError {
    /// Whether the failure is bad data (1007) rather than bad framing (1002).
    pub fn is_invalid_data(self) -> bool {
        match self {
            Self::InvalidUtf8 { .. } | Self::InvalidCloseReason => true,
            Self::UnmaskedClientFrame
            | Self::MaskedServerFrame
            | Self::ReservedBits { .. }
            | Self::ReservedOpcode { .. }
            | Self::FragmentedControlFrame
            | Self::ControlFrameTooLong { .. }
            | Self::InvalidPayloadLength
            | Self::UnexpectedContinuation
            | Self::MissingContinuation
            | Self::InvalidCloseCode { .. }
            | Self::InvalidClosePayload
            | Self::InvalidCompressedData
            | Self::UnexpectedCompressionBit => false,
        }
    }
}

/// A frame or message is bigger than the configured limit. Close 1009; never retryable.
///
/// Raised from the frame header when the announced length already exceeds the limit (so nothing
/// is buffered), or while a fragmented or compressed message grows past it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} of {} exceeds the limit of {max} bytes", size.map_or_else(|| "more".to_owned(), |s| format!("{s} bytes")))]
pub struct PayloadTooBig {
    /// The size when known (a frame's announced length, or bytes so far).
    pub size: Option<u64>,
    /// The limit that was crossed.
    pub max: u64,
    /// Which limit.
    pub what: SizeLimit,
}

/// Which size limit a [`PayloadTooBig`] crossed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SizeLimit {
    /// A single frame's payload.
    Frame,
    /// A whole message after reassembly (and after decompression).
    Message,
}

impl fmt::Display for SizeLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Frame => "frame",
            Self::Message => "message",
        })
    }
}

/// An operation on a connection, for [`InvalidState`] and [`ConcurrencyError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Receiving a message.
    Recv,
    /// Sending a message.
    Send,
    /// Sending a ping.
    Ping,
    /// Sending a pong.
    Pong,
    /// Starting the close handshake.
    Close,
    /// Feeding received bytes in.
    Receive,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Recv => "recv",
            Self::Send => "send",
            Self::Ping => "ping",
            Self::Pong => "pong",
            Self::Close => "close",
            Self::Receive => "receive data",
        })
    }
}

/// The state of a connection (RFC 6455 §4.1, §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// The opening handshake is under way.
    Connecting,
    /// Messages flow both ways.
    Open,
    /// A close frame was sent or received; waiting for the other.
    Closing,
    /// The close handshake is complete or the connection failed.
    Closed,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connecting => "connecting",
            Self::Open => "open",
            Self::Closing => "closing",
            Self::Closed => "closed",
        })
    }
}

/// An operation the connection's state does not allow (sending after our close frame went out,
/// say). A bug in the caller, not the peer: no close code, never retryable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot {operation} while the connection is {state}")]
pub struct InvalidState {
    /// What was attempted.
    pub operation: Operation,
    /// The state it was attempted in.
    pub state: State,
}

/// Two tasks tried to receive at once, or to send at once on one half. Exactly one of them
/// gets this error; neither blocks forever and no frames interleave.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("another task is already doing {operation} on this connection")]
pub struct ConcurrencyError {
    /// What both tasks tried to do.
    pub operation: Operation,
}
