//! Frame headers (RFC 6455 §5.2): decoding from input that arrives in arbitrary pieces, and
//! encoding.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! |     Extended payload length continued, if payload len == 127  |
//! + - - - - - - - - - - - - - - - +-------------------------------+
//! |                               |Masking-key, if MASK set to 1  |
//! +-------------------------------+-------------------------------+
//! ```

use std::fmt;

use bytes::BufMut;
use palisade_error::ProtocolError;

/// A frame's opcode (RFC 6455 §5.2). Reserved opcodes are refused when decoding, so every value
/// of this type is one the protocol defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: the first frame of a text message.
    Text,
    /// 0x2: the first frame of a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// The opcode for a wire value, or [`ProtocolError::ReservedOpcode`].
    pub fn from_u8(v: u8) -> Result<Self, ProtocolError> {
        Ok(match v {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            opcode => return Err(ProtocolError::ReservedOpcode { opcode }),
        })
    }

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    /// Whether this is a control opcode (close, ping, pong): RFC 6455 §5.5.
    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// RSV1, the bit permessage-deflate uses (RFC 7692 §6).
pub const RSV1: u8 = 0b100;
/// RSV2.
pub const RSV2: u8 = 0b010;
/// RSV3.
pub const RSV3: u8 = 0b001;

/// The longest possible frame header: 2 bytes, an 8-byte length and a 4-byte mask.
pub const MAX_HEADER_LEN: usize = 14;

/// The largest control frame payload (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A decoded or to-be-encoded frame header.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN: this is the final fragment of its message.
    pub fin: bool,
    /// RSV1..RSV3 as the low three bits ([`RSV1`] = 0b100).
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present on (and only on) frames sent by a client.
    pub mask: Option<[u8; 4]>,
    /// The payload length.
    pub payload_len: u64,
}

impl fmt::Debug for FrameHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "FrameHeader({:?}{}{} len={}{})",
            self.opcode,
            if self.fin { " FIN" } else { "" },
            if self.rsv != 0 { format!(" rsv={:03b}", self.rsv) } else { String::new() },
            self.payload_len,
            if self.mask.is_some() { " masked" } else { "" },
        )
    }
}

impl FrameHeader {
    /// Decodes a header from the start of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a header (more bytes are needed; nothing
    /// is consumed, and the next call re-reads at most 13 bytes, so decoding stays linear), or
    /// `Ok(Some((header, header_len)))`. Checks what the header alone can tell: reserved opcodes,
    /// a 64-bit length with its top bit set, and the control-frame rules (not fragmented, payload
    /// ≤ 125). Rules that depend on the connection (masking direction, RSV bits, limits) are the
    /// caller's.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        let [b0, b1, ..] = *buf else { return Ok(None) };
        let fin = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 0b111;
        let opcode = OpCode::from_u8(b0 & 0x0F)?;
        let masked = b1 & 0x80 != 0;
        let (payload_len, mut pos) = match b1 & 0x7F {
            126 => {
                let Some(ext) = buf.get(2..4) else { return Ok(None) };
                (u64::from(u16::from_be_bytes([ext[0], ext[1]])), 4)
            }
            127 => {
                let Some(ext) = buf.get(2..10) else { return Ok(None) };
                let mut b = [0; 8];
                b.copy_from_slice(ext);
                let len = u64::from_be_bytes(b);
                // RFC 6455 §5.2: "the most significant bit MUST be 0".
                if len >> 63 != 0 {
                    return Err(ProtocolError::InvalidPayloadLength);
                }
                (len, 10)
            }
            n => (u64::from(n), 2),
        };
        if opcode.is_control() {
            // RFC 6455 §5.5: control frames are not fragmented and carry at most 125 bytes.
            if !fin {
                return Err(ProtocolError::FragmentedControlFrame);
            }
            if payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlFrameTooLong { len: payload_len });
            }
        }
        let mask = if masked {
            let Some(key) = buf.get(pos..pos + 4) else { return Ok(None) };
            pos += 4;
            Some([key[0], key[1], key[2], key[3]])
        } else {
            None
        };
        Ok(Some((Self { fin, rsv, opcode, mask, payload_len }, pos)))
    }

    /// The number of bytes [`FrameHeader::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let len_bytes = match self.payload_len {
            0..=125 => 0,
            126..=0xFFFF => 2,
            _ => 8,
        };
        2 + len_bytes + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Appends the header to `out`, with the shortest length encoding (RFC 6455 §5.2: "the
    /// minimal number of bytes MUST be used").
    pub fn encode(&self, out: &mut impl BufMut) {
        // Built on the stack and appended at once: one capacity check per header, where a
        // `put_*` per field cost several (seen in callgrind profiles of small-message echo).
        let mut buf = [0u8; MAX_HEADER_LEN];
        buf[0] = (u8::from(self.fin) << 7) | ((self.rsv & 0b111) << 4) | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut len = match self.payload_len {
            n @ 0..=125 => {
                buf[1] = mask_bit | n as u8;
                2
            }
            n @ 126..=0xFFFF => {
                buf[1] = mask_bit | 126;
                buf[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                4
            }
            n => {
                buf[1] = mask_bit | 127;
                buf[2..10].copy_from_slice(&n.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            buf[len..len + 4].copy_from_slice(&key);
            len += 4;
        }
        out.put_slice(&buf[..len]);
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn header(opcode: OpCode, len: u64, mask: Option<[u8; 4]>) -> FrameHeader {
        FrameHeader { fin: true, rsv: 0, opcode, mask, payload_len: len }
    }

    #[test]
    fn length_forms_use_the_minimal_encoding() {
        for (len, header_len) in
            [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10), (u64::MAX >> 1, 10)]
        {
            let h = header(OpCode::Binary, len, None);
            let mut out = Vec::new();
            h.encode(&mut out);
            assert_eq!(out.len(), header_len, "len {len}");
            assert_eq!(h.encoded_len(), header_len);
            assert_eq!(FrameHeader::decode(&out).unwrap(), Some((h, header_len)));
        }
    }

    #[test]
    fn rfc_examples_decode() {
        // RFC 6455 §5.7: a single-frame unmasked text message "Hello".
        let (h, n) = FrameHeader::decode(&[0x81, 0x05, 0x48]).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode, h.payload_len, h.mask, n), (true, OpCode::Text, 5, None, 2));
        // A masked "Hello".
        let (h, n) = FrameHeader::decode(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d]).unwrap().unwrap();
        assert_eq!((h.mask, n), (Some([0x37, 0xfa, 0x21, 0x3d]), 6));
        // First fragment of an unmasked text message.
        let (h, _) = FrameHeader::decode(&[0x01, 0x03]).unwrap().unwrap();
        assert!(!h.fin);
        // 256 bytes binary message in a single unmasked frame.
        let (h, n) = FrameHeader::decode(&[0x82, 0x7E, 0x01, 0x00]).unwrap().unwrap();
        assert_eq!((h.payload_len, n), (256, 4));
    }

    #[test]
    fn partial_headers_ask_for_more() {
        let mut full = Vec::new();
        header(OpCode::Binary, 70_000, Some([1, 2, 3, 4])).encode(&mut full);
        for n in 0..full.len() {
            assert_eq!(FrameHeader::decode(&full[..n]).unwrap(), None, "prefix of {n}");
        }
        assert!(FrameHeader::decode(&full).unwrap().is_some());
    }

    #[test]
    fn reserved_opcodes_are_refused() {
        for op in (3..=7).chain(11..=15) {
            assert_eq!(
                FrameHeader::decode(&[0x80 | op, 0]),
                Err(ProtocolError::ReservedOpcode { opcode: op })
            );
        }
    }

    #[test]
    fn top_bit_of_64_bit_length_is_refused() {
        let mut buf = vec![0x82, 127];
        buf.extend_from_slice(&(1u64 << 63).to_be_bytes());
        assert_eq!(FrameHeader::decode(&buf), Err(ProtocolError::InvalidPayloadLength));
    }

    #[test]
    fn control_frame_rules() {
        assert_eq!(FrameHeader::decode(&[0x09, 0]), Err(ProtocolError::FragmentedControlFrame));
        assert_eq!(
            FrameHeader::decode(&[0x89, 126, 0, 126]),
            Err(ProtocolError::ControlFrameTooLong { len: 126 })
        );
        assert!(FrameHeader::decode(&[0x89, 125]).unwrap().is_some());
    }

    proptest! {
        #[test]
        fn any_header_round_trips(
            fin: bool, rsv in 0u8..8, op in prop::sample::select(vec![0u8, 1, 2, 8, 9, 10]),
            len in prop_oneof![0u64..200, 0u64..70_000, 0u64..(1 << 63)], mask: Option<[u8; 4]>,
        ) {
            let opcode = OpCode::from_u8(op).unwrap();
            let len = if opcode.is_control() { len % 126 } else { len };
            let fin = fin || opcode.is_control();
            let h = FrameHeader { fin, rsv, opcode, mask, payload_len: len };
            let mut out = Vec::new();
            h.encode(&mut out);
            prop_assert_eq!(FrameHeader::decode(&out).unwrap(), Some((h, out.len())));
        }

        #[test]
        fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..20)) {
            let _ = FrameHeader::decode(&bytes);
        }
    }
}
