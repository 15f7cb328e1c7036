//! Close codes (RFC 6455 §7.4) and close frames (RFC 6455 §5.5.1).

use std::fmt;

/// A WebSocket close status code (RFC 6455 §7.4).
///
/// An open newtype over the wire number: a code a peer sends that this crate has no name for is
/// kept as it is, never lost. The registered codes are associated constants.
///
/// | range | meaning | may be sent |
/// |---|---|---|
/// | 0–999 | not used | never |
/// | 1000–1003, 1007–1014 | defined by RFC 6455 and the IANA registry | yes |
/// | 1004 | reserved | never |
/// | 1005, 1006, 1015 | local pseudo-codes: no status, abnormal closure, TLS failure | never |
/// | 1016–2999 | reserved for future protocol revisions, unassigned | never |
/// | 3000–3999 | registered with IANA by libraries and frameworks | yes |
/// | 4000–4999 | private use by applications | yes |
/// | 5000– | not defined | never |
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection has been fulfilled.
    pub const NORMAL: Self = Self(1000);
    /// 1001: an endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: Self = Self(1001);
    /// 1002: the peer violated the protocol.
    pub const PROTOCOL_ERROR: Self = Self(1002);
    /// 1003: a message of a type the endpoint cannot accept (text vs binary).
    pub const UNSUPPORTED_DATA: Self = Self(1003);
    /// 1004: reserved by RFC 6455; never sent.
    pub const RESERVED: Self = Self(1004);
    /// 1005: a close frame arrived without a status code; never sent.
    pub const NO_STATUS: Self = Self(1005);
    /// 1006: the connection closed without a close frame; never sent.
    pub const ABNORMAL: Self = Self(1006);
    /// 1007: a message's data was inconsistent with its type (invalid UTF-8 in text).
    pub const INVALID_PAYLOAD: Self = Self(1007);
    /// 1008: a message violated the endpoint's policy.
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a message was too big to process.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1010: the client expected the server to negotiate an extension it did not.
    pub const MANDATORY_EXTENSION: Self = Self(1010);
    /// 1011: the server met an unexpected condition.
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 1012: the service is restarting.
    pub const SERVICE_RESTART: Self = Self(1012);
    /// 1013: try again later (overload).
    pub const TRY_AGAIN_LATER: Self = Self(1013);
    /// 1014: a gateway or proxy received an invalid response from upstream.
    pub const BAD_GATEWAY: Self = Self(1014);
    /// 1015: the TLS handshake failed; never sent.
    pub const TLS_HANDSHAKE: Self = Self(1015);
    /// 3000: the endpoint requires authentication (IANA registry).
    pub const UNAUTHORIZED: Self = Self(3000);
    /// 3003: the endpoint refuses the authenticated party (IANA registry).
    pub const FORBIDDEN: Self = Self(3003);
    /// 3008: the endpoint timed out (IANA registry).
    pub const TIMEOUT: Self = Self(3008);

    /// The wire number.
    pub const fn as_u16(self) -> u16 {
        self.0
    }

    /// Which part of the code space this code belongs to.
    pub const fn class(self) -> CloseCodeClass {
        match self.0 {
            0..=999 => CloseCodeClass::Unused,
            1000..=1003 | 1007..=1014 => CloseCodeClass::Protocol,
            1004 => CloseCodeClass::Reserved,
            1005 | 1006 | 1015 => CloseCodeClass::LocalOnly,
            1016..=2999 => CloseCodeClass::Unassigned,
            3000..=3999 => CloseCodeClass::Registered,
            4000..=4999 => CloseCodeClass::Private,
            5000.. => CloseCodeClass::Unused,
        }
    }

    /// Whether this code may appear in a close frame on the wire (RFC 6455 §7.4.1, §7.4.2).
    ///
    /// A received close frame with a code for which this is `false` is a protocol error.
    pub const fn is_sendable(self) -> bool {
        matches!(
            self.class(),
            CloseCodeClass::Protocol | CloseCodeClass::Registered | CloseCodeClass::Private
        )
    }

    /// A stable, upper-case name for the code: the registry's name for a known code, or the name
    /// of its range (`REGISTERED`, `PRIVATE`, `UNASSIGNED`, `UNUSED`) otherwise. Suitable for logs
    /// and metrics labels; it never changes between releases.
    pub const fn name(self) -> &'static str {
        match self.0 {
            1000 => "NORMAL_CLOSURE",
            1001 => "GOING_AWAY",
            1002 => "PROTOCOL_ERROR",
            1003 => "UNSUPPORTED_DATA",
            1004 => "RESERVED",
            1005 => "NO_STATUS_RECEIVED",
            1006 => "ABNORMAL_CLOSURE",
            1007 => "INVALID_FRAME_PAYLOAD_DATA",
            1008 => "POLICY_VIOLATION",
            1009 => "MESSAGE_TOO_BIG",
            1010 => "MANDATORY_EXTENSION",
            1011 => "INTERNAL_ERROR",
            1012 => "SERVICE_RESTART",
            1013 => "TRY_AGAIN_LATER",
            1014 => "BAD_GATEWAY",
            1015 => "TLS_HANDSHAKE",
            3000 => "UNAUTHORIZED",
            3003 => "FORBIDDEN",
            3008 => "TIMEOUT",
            _ => match self.class() {
                CloseCodeClass::Registered => "REGISTERED",
                CloseCodeClass::Private => "PRIVATE",
                CloseCodeClass::Unassigned => "UNASSIGNED",
                CloseCodeClass::Unused
                | CloseCodeClass::Protocol
                | CloseCodeClass::Reserved
                | CloseCodeClass::LocalOnly => "UNUSED",
            },
        }
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        Self(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

impl fmt::Debug for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CloseCode({} {})", self.0, self.name())
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0, self.name())
    }
}

/// The part of the close-code space a [`CloseCode`] falls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCodeClass {
    /// 0–999 and 5000 and above: not used by any specification; never sent.
    Unused,
    /// 1000–1003 and 1007–1014: defined by RFC 6455 and the IANA registry; may be sent.
    Protocol,
    /// 1004: reserved; never sent.
    Reserved,
    /// 1005, 1006, 1015: reported locally, never sent.
    LocalOnly,
    /// 1016–2999: reserved for future revisions of the protocol; never sent.
    Unassigned,
    /// 3000–3999: registered with IANA by libraries and frameworks; may be sent.
    Registered,
    /// 4000–4999: private use by applications; may be sent.
    Private,
}

/// The longest close reason, in bytes: a control frame carries at most 125 bytes (RFC 6455
/// §5.5), two of which are the code.
pub const MAX_REASON_LEN: usize = 123;

impl CloseCode {
    /// The reason palisade sends with this code when it closes on its own account (a
    /// protocol error, a limit, a handler's failure): generic on purpose, so that nothing of
    /// the peer's input or of the application's internals reaches the wire. Empty for codes
    /// palisade never sends by itself.
    pub fn generic_reason(self) -> &'static str {
        match self {
            Self::PROTOCOL_ERROR => "protocol error",
            Self::UNSUPPORTED_DATA => "unsupported data",
            Self::INVALID_PAYLOAD => "invalid payload data",
            Self::MESSAGE_TOO_BIG => "message too big",
            Self::POLICY_VIOLATION => "policy violation",
            Self::INTERNAL_ERROR => "internal error",
            Self::GOING_AWAY => "going away",
            Self::TRY_AGAIN_LATER => "try again later",
            Self::MANDATORY_EXTENSION => "extension required",
            _ => "",
        }
    }
}

/// The body of a close frame: a code and a UTF-8 reason of at most [`MAX_REASON_LEN`] bytes.
///
/// Built with [`CloseFrame::new`] (refuses an over-long reason) or [`CloseFrame::truncated`]
/// (cuts the reason at a character boundary); both refuse a code that may not be sent. A frame
/// received without a status is represented with [`CloseFrame::no_status`] (code 1005), which is
/// never sent: it exists so that a received close is never lost.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CloseFrame {
    code: CloseCode,
    reason: Box<str>,
}

impl CloseFrame {
    /// A close frame with `code` and `reason`, refusing a code that may not be sent and a reason
    /// longer than [`MAX_REASON_LEN`] bytes.
    pub fn new(code: CloseCode, reason: impl Into<String>) -> Result<Self, CloseFrameError> {
        let reason = reason.into();
        if !code.is_sendable() {
            return Err(CloseFrameError::UnsendableCode { code });
        }
        if reason.len() > MAX_REASON_LEN {
            return Err(CloseFrameError::ReasonTooLong { len: reason.len() });
        }
        Ok(Self { code, reason: reason.into_boxed_str() })
    }

    /// A close frame with `code` and `reason` cut to at most [`MAX_REASON_LEN`] bytes at a
    /// character boundary; refuses only a code that may not be sent.
    pub fn truncated(code: CloseCode, reason: &str) -> Result<Self, CloseFrameError> {
        if !code.is_sendable() {
            return Err(CloseFrameError::UnsendableCode { code });
        }
        let mut end = reason.len().min(MAX_REASON_LEN);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Ok(Self { code, reason: reason[..end].into() })
    }

    /// A close frame with `code` and `reason` cut to [`MAX_REASON_LEN`] bytes. 1005 gives
    /// [`CloseFrame::no_status`] (a close frame without a body, RFC 6455 §5.5.1); any other
    /// code that may not be sent (1006, 1015, a reserved range) becomes 1011 Internal Error
    /// with the same reason. The one fallback palisade uses wherever a frame is built from a
    /// caller's code, so an invalid code is never sent and never silently turns into a normal
    /// close.
    pub fn lossy(code: CloseCode, reason: &str) -> Self {
        if code == CloseCode::NO_STATUS {
            return Self::no_status();
        }
        let code = if code.is_sendable() { code } else { CloseCode::INTERNAL_ERROR };
        let mut end = reason.len().min(MAX_REASON_LEN);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        Self { code, reason: reason[..end].into() }
    }

    /// A close frame with a code and an empty reason. Infallible for sendable constants.
    ///
    /// Refuses an unsendable code like [`CloseFrame::new`].
    pub fn from_code(code: CloseCode) -> Result<Self, CloseFrameError> {
        Self::new(code, String::new())
    }

    /// 1000 Normal Closure with no reason.
    pub fn normal() -> Self {
        Self { code: CloseCode::NORMAL, reason: "".into() }
    }

    /// The close frame a peer sent without a body: code 1005, no reason (RFC 6455 §7.1.5).
    /// Never sent on the wire; a connection asked to send it sends an empty close frame.
    pub fn no_status() -> Self {
        Self { code: CloseCode::NO_STATUS, reason: "".into() }
    }

    /// A close frame decoded from the wire by the protocol core, which has already checked that
    /// the code is sendable and the reason is UTF-8 of at most 123 bytes.
    #[doc(hidden)]
    pub fn from_wire_unchecked(code: CloseCode, reason: &str) -> Self {
        debug_assert!(code.is_sendable() && reason.len() <= MAX_REASON_LEN);
        Self { code, reason: reason.into() }
    }

    /// The close code.
    pub fn code(&self) -> CloseCode {
        self.code
    }

    /// The reason, possibly empty.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for CloseFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} {:?}", self.code, &*self.reason)
        }
    }
}

/// Why a [`CloseFrame`] could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseFrameError {
    /// The code may not appear on the wire (1004–1006, 1015, 0–999, 1016–2999, 5000 and up).
    #[error("close code {code} may not be sent")]
    UnsendableCode {
        /// The refused code.
        code: CloseCode,
    },
    /// The reason is longer than 123 bytes.
    #[error("close reason is {len} bytes, the limit is 123")]
    ReasonTooLong {
        /// The reason's length in bytes.
        len: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendable_codes_follow_rfc_and_registry() {
        let sendable: Vec<u16> = (0..=u16::MAX).filter(|&c| CloseCode(c).is_sendable()).collect();
        let expected: Vec<u16> =
            (1000..=1003).chain(1007..=1014).chain(3000..=3999).chain(4000..=4999).collect();
        assert_eq!(sendable, expected);
        for never in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert!(!CloseCode(never).is_sendable(), "{never}");
        }
    }

    #[test]
    fn every_registered_code_has_its_own_name() {
        let named = [
            (1000, "NORMAL_CLOSURE"),
            (1001, "GOING_AWAY"),
            (1002, "PROTOCOL_ERROR"),
            (1003, "UNSUPPORTED_DATA"),
            (1004, "RESERVED"),
            (1005, "NO_STATUS_RECEIVED"),
            (1006, "ABNORMAL_CLOSURE"),
            (1007, "INVALID_FRAME_PAYLOAD_DATA"),
            (1008, "POLICY_VIOLATION"),
            (1009, "MESSAGE_TOO_BIG"),
            (1010, "MANDATORY_EXTENSION"),
            (1011, "INTERNAL_ERROR"),
            (1012, "SERVICE_RESTART"),
            (1013, "TRY_AGAIN_LATER"),
            (1014, "BAD_GATEWAY"),
            (1015, "TLS_HANDSHAKE"),
            (3000, "UNAUTHORIZED"),
            (3003, "FORBIDDEN"),
            (3008, "TIMEOUT"),
        ];
        for (code, name) in named {
            assert_eq!(CloseCode(code).name(), name);
        }
        assert_eq!(CloseCode(3500).name(), "REGISTERED");
        assert_eq!(CloseCode(4321).name(), "PRIVATE");
        assert_eq!(CloseCode(2000).name(), "UNASSIGNED");
        assert_eq!(CloseCode(5).name(), "UNUSED");
        assert_eq!(CloseCode(6000).name(), "UNUSED");
    }

    #[test]
    fn classes_cover_the_code_space() {
        assert_eq!(CloseCode(999).class(), CloseCodeClass::Unused);
        assert_eq!(CloseCode(1004).class(), CloseCodeClass::Reserved);
        assert_eq!(CloseCode(1015).class(), CloseCodeClass::LocalOnly);
        assert_eq!(CloseCode(1016).class(), CloseCodeClass::Unassigned);
        assert_eq!(CloseCode(3999).class(), CloseCodeClass::Registered);
        assert_eq!(CloseCode(4999).class(), CloseCodeClass::Private);
        assert_eq!(CloseCode(5000).class(), CloseCodeClass::Unused);
    }

    #[test]
    fn new_refuses_long_reason_and_bad_code() {
        assert_eq!(
            CloseFrame::new(CloseCode::NORMAL, "x".repeat(124)),
            Err(CloseFrameError::ReasonTooLong { len: 124 })
        );
        assert!(CloseFrame::new(CloseCode::NORMAL, "x".repeat(123)).is_ok());
        assert_eq!(
            CloseFrame::new(CloseCode::ABNORMAL, ""),
            Err(CloseFrameError::UnsendableCode { code: CloseCode::ABNORMAL })
        );
    }

    #[test]
    fn truncated_cuts_at_a_char_boundary() {
        // 61 two-byte characters = 122 bytes, then a four-byte one that would end at 126.
        let reason = format!("{}{}", "é".repeat(61), "🦀");
        let frame = CloseFrame::truncated(CloseCode::GOING_AWAY, &reason).unwrap();
        assert_eq!(frame.reason().len(), 122);
        assert!(frame.reason().chars().all(|c| c == 'é'));
        // Every cut of a multi-byte string stays valid and within the limit.
        let long = "aé🦀".repeat(40);
        for n in 0..long.len() {
            if let Some(prefix) = long.get(..n) {
                let f = CloseFrame::truncated(CloseCode::NORMAL, prefix).unwrap();
                assert!(f.reason().len() <= MAX_REASON_LEN);
                assert!(prefix.starts_with(f.reason()));
            }
        }
        assert!(CloseFrame::truncated(CloseCode::NO_STATUS, "x").is_err());
    }

    #[test]
    fn display_names_code_and_reason() {
        let f = CloseFrame::new(CloseCode::GOING_AWAY, "bye").unwrap();
        assert_eq!(f.to_string(), "1001 (GOING_AWAY) \"bye\"");
        assert_eq!(CloseFrame::no_status().to_string(), "1005 (NO_STATUS_RECEIVED)");
    }
}
