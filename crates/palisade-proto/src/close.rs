//! Close frame payloads (RFC 6455 §5.5.1): a 2-byte code and a UTF-8 reason, or nothing.

use bytes::BufMut;
use palisade_error::{CloseCode, CloseFrame, ProtocolError};

/// Decodes a received close payload. An empty payload is a close without status, reported as
/// [`CloseFrame::no_status`] (1005, RFC 6455 §7.1.5).
///
/// Refuses a one-byte payload ([`ProtocolError::InvalidClosePayload`]), a code that may not be
/// sent ([`ProtocolError::InvalidCloseCode`], RFC 6455 §7.4) and a reason that is not UTF-8
/// ([`ProtocolError::InvalidCloseReason`], §5.5.1). The length limit of 125 bytes was already
/// enforced from the frame header.
pub fn decode(payload: &[u8]) -> Result<CloseFrame, ProtocolError> {
    match payload {
        [] => Ok(CloseFrame::no_status()),
        [_] => Err(ProtocolError::InvalidClosePayload),
        [hi, lo, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
            if !code.is_sendable() {
                return Err(ProtocolError::InvalidCloseCode { code: code.0 });
            }
            let reason =
                std::str::from_utf8(reason).map_err(|_| ProtocolError::InvalidCloseReason)?;
            Ok(CloseFrame::from_wire_unchecked(code, reason))
        }
    }
}

/// Appends the payload for `frame` to `out`: nothing for a frame without status (1005 is never
/// sent; RFC 6455 §7.4.1), else the code and the reason.
pub fn encode(frame: &CloseFrame, out: &mut impl BufMut) {
    if frame.code().is_sendable() {
        out.put_u16(frame.code().0);
        out.put_slice(frame.reason().as_bytes());
    }
}

/// The length of [`encode`]'s output.
pub fn encoded_len(frame: &CloseFrame) -> usize {
    if frame.code().is_sendable() { 2 + frame.reason().len() } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_rules() {
        assert_eq!(decode(&[]).unwrap(), CloseFrame::no_status());
        assert_eq!(decode(&[3]), Err(ProtocolError::InvalidClosePayload));
        assert_eq!(decode(&[0x03, 0xE8]).unwrap(), CloseFrame::normal());
        let f = decode(b"\x03\xe9bye").unwrap();
        assert_eq!((f.code(), f.reason()), (CloseCode::GOING_AWAY, "bye"));
        for bad in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert_eq!(
                decode(&bad.to_be_bytes()),
                Err(ProtocolError::InvalidCloseCode { code: bad })
            );
        }
        assert_eq!(decode(b"\x03\xe8\xff"), Err(ProtocolError::InvalidCloseReason));
    }

    #[test]
    fn encode_round_trips_and_omits_no_status() {
        let f = CloseFrame::new(CloseCode(4001), "custom").unwrap();
        let mut out = Vec::new();
        encode(&f, &mut out);
        assert_eq!(out.len(), encoded_len(&f));
        assert_eq!(decode(&out).unwrap(), f);
        let mut out = Vec::new();
        encode(&CloseFrame::no_status(), &mut out);
        assert!(out.is_empty());
    }
}
