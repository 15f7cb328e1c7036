//! `Sec-WebSocket-Key` and `Sec-WebSocket-Accept` (RFC 6455 §4.1 item 7, §4.2.2 item 5.4).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest as _, Sha1};

use palisade_error::{Error, InvalidHeader};

pub(crate) const SEC_WEBSOCKET_KEY: &str = "sec-websocket-key";

/// The GUID that RFC 6455 §1.3 appends to the key before hashing it.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A valid `Sec-WebSocket-Key`: the base64 encoding of 16 bytes (RFC 6455 §4.1 item 7).
///
/// The key is a nonce, not a secret: it only proves that the server understood the
/// handshake. A client draws the 16 bytes from an RNG ([`Key::from_bytes`]); a server receives
/// the text ([`Key::parse`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    encoded: String,
}

impl Key {
    /// The key for 16 random bytes, which the caller draws (this crate has no RNG).
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        Self { encoded: STANDARD.encode(bytes) }
    }

    /// Parses a `Sec-WebSocket-Key` value.
    ///
    /// # Errors
    ///
    /// Both 400 on a server (RFC 6455 §4.2.1 item 5):
    ///
    /// - [`InvalidHeader`] with [`palisade_error::HeaderProblem::BadFormat`]: the value is not
    ///   canonical padded base64; the position is that of the first offending byte (or the end).
    /// - [`InvalidHeader`] with [`palisade_error::HeaderProblem::BadValue`]: it is base64, but
    ///   not of 16 bytes.
    pub fn parse(value: &str) -> Result<Self, Error> {
        let decoded = STANDARD.decode(value).map_err(|e| {
            let pos = match e {
                base64::DecodeError::InvalidByte(pos, _)
                | base64::DecodeError::InvalidLastSymbol(pos, _) => pos,
                base64::DecodeError::InvalidLength(_) | base64::DecodeError::InvalidPadding => {
                    value.len()
                }
            };
            InvalidHeader::bad_format(SEC_WEBSOCKET_KEY, value, pos)
        })?;
        if decoded.len() != 16 {
            return Err(InvalidHeader::bad_value(
                SEC_WEBSOCKET_KEY,
                value,
                "not the base64 of 16 bytes",
            )
            .into());
        }
        Ok(Self { encoded: value.to_owned() })
    }

    /// The key as sent in the header: 24 characters of base64.
    pub fn as_str(&self) -> &str {
        &self.encoded
    }

    /// The `Sec-WebSocket-Accept` value that answers this key: base64 of the SHA-1 of the key
    /// followed by the RFC 6455 GUID (§4.2.2 item 5.4).
    pub fn accept(&self) -> String {
        let mut sha1 = Sha1::new();
        sha1.update(self.encoded.as_bytes());
        sha1.update(ACCEPT_GUID);
        STANDARD.encode(sha1.finalize())
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use palisade_error::{HandshakeError, HeaderProblem};

    use super::*;

    fn problem(err: Error) -> HeaderProblem {
        assert_eq!(err.status_to_send(), Some(StatusCode::BAD_REQUEST));
        match err {
            Error::Handshake(h) => match *h {
                HandshakeError::InvalidHeader(h) => {
                    assert_eq!(h.name(), SEC_WEBSOCKET_KEY);
                    h.problem()
                }
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rfc_6455_section_1_3_example() {
        let key = Key::parse("dGhlIHNhbXBsZSBub25jZQ==").unwrap();
        assert_eq!(key.accept(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(Key::from_bytes(*b"the sample nonce"), key);
        assert_eq!(key.as_str(), "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn rejects_what_is_not_base64() {
        assert_eq!(
            problem(Key::parse("dGhlIHNhbXBsZSBub25j!Q==").unwrap_err()),
            HeaderProblem::BadFormat { pos: 20 }
        );
        assert_eq!(
            problem(Key::parse("dGhl IHNhbXBsZSBub25jZQ=").unwrap_err()),
            HeaderProblem::BadFormat { pos: 4 }
        );
        // Unpadded, or with bits left over in the last symbol: not canonical.
        assert!(matches!(
            problem(Key::parse("dGhlIHNhbXBsZSBub25jZQ").unwrap_err()),
            HeaderProblem::BadFormat { .. }
        ));
        assert!(matches!(
            problem(Key::parse("dGhlIHNhbXBsZSBub25jZR==").unwrap_err()),
            HeaderProblem::BadFormat { .. }
        ));
        assert!(matches!(
            problem(Key::parse("dGhlIHNhbXBsZSBub25jZQ=").unwrap_err()),
            HeaderProblem::BadFormat { .. }
        ));
    }

    #[test]
    fn rejects_base64_of_another_length() {
        for value in ["", "AAAA", "AAAAAAAAAAAAAAAAAAAAAAA=", "AAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
            assert!(
                matches!(
                    problem(Key::parse(value).unwrap_err()),
                    HeaderProblem::BadValue { .. } | HeaderProblem::BadFormat { .. }
                ),
                "{value}"
            );
        }
        assert!(matches!(problem(Key::parse("AAAA").unwrap_err()), HeaderProblem::BadValue { .. }));
        assert!(matches!(problem(Key::parse("").unwrap_err()), HeaderProblem::BadValue { .. }));
        // 17 bytes.
        assert!(matches!(
            problem(Key::parse("AAAAAAAAAAAAAAAAAAAAAAA=").unwrap_err()),
            HeaderProblem::BadValue { .. }
        ));
    }
}
