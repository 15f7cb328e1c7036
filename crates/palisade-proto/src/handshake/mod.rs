//! The HTTP/1.1 opening handshake (RFC 6455 §4), for both roles, sans I/O.
//!
//! Everything here takes bytes and returns values or bytes; the runtime does the reading and
//! writing. Every header limit is enforced while the head arrives ([`HeadReader`]), every
//! rule of RFC 6455 §4 is checked with its own error (see [`UpgradeRequest::from_request`] and
//! [`ClientHandshake::validate`]), and nothing a peer sends can make this module panic.
//!
//! # Server: call order
//!
//! 1. Create a [`HeadReader`] with the server's [`HeadLimits`].
//! 2. Read from the socket, append to a buffer, and call [`HeadReader::feed`] with the whole
//!    buffer; repeat while it returns `Ok(None)`. On end of stream first, the handshake failed
//!    with [`palisade_error::InvalidMessage::Incomplete`].
//! 3. On `Ok(Some(head_len))`, call [`UpgradeRequest::parse`] on `&buf[..head_len]`. Bytes
//!    after `head_len` are the first WebSocket frames: hand them to the connection.
//! 4. Apply policy to the [`UpgradeRequest`] (origin, authentication, subprotocol and
//!    extension choice), then [`UpgradeRequest::accept`] and [`write_response`] with an empty
//!    body.
//! 5. On any error from steps 2–4, answer with [`rejection`]`(&err)`, written with
//!    [`write_response`] and its body, then close. A policy refusal is an error too:
//!    [`palisade_error::HandshakeError::Rejected`] or `InvalidOrigin`.
//!
//! # Client: call order
//!
//! 1. [`ClientHandshake::new`] with the URI and 16 bytes from an RNG, then the `with_*`
//!    methods; [`ClientHandshake::write_request`] gives the bytes to send.
//! 2. Read the answer into a buffer and feed it to a [`HeadReader`] as on the server.
//! 3. On `Ok(Some(head_len))`, [`ClientHandshake::read_response`] on the buffer gives:
//!    - [`ResponseOutcome::Upgraded`]: open; the bytes after `head_len` are frames.
//!    - [`ResponseOutcome::NotUpgraded`]: any other status. Read the body that follows the
//!      head (its framing is in the headers) up to a limit, or follow a redirect, then fail
//!      with [`palisade_error::InvalidStatus::new`].
//!    - An error: the server broke the protocol; fail the connection (RFC 6455 §4.1).

mod client;
mod head;
mod headers;
mod key;
mod origin;
mod server;
mod wire;

pub use client::{ClientHandshake, Negotiated, ResponseOutcome};
pub use head::{HeadLimits, HeadReader, parse_request, parse_response};
pub use headers::{
    ExtensionOffer, format_extensions, is_tchar, is_token, parse_extensions, parse_subprotocols,
};
pub use key::Key;
pub use origin::OriginPolicy;
pub use server::{AcceptOptions, ExtendedConnect, UpgradeRequest, rejection};
pub use wire::{write_request, write_response};

/// The only WebSocket version there is: `Sec-WebSocket-Version: 13` (RFC 6455 §4.1 item 9).
pub const VERSION: &str = "13";

/// Peer bytes as text for an error value: lossy UTF-8, at most `max` bytes, cut on a character
/// boundary.
fn bounded(bytes: &[u8], max: usize) -> String {
    let mut text = String::from_utf8_lossy(&bytes[..bytes.len().min(max)]).into_owned();
    // A multi-byte character cut by the byte limit became U+FFFD; drop it.
    if bytes.len() > max && text.ends_with('\u{FFFD}') {
        text.pop();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_on_a_character_boundary() {
        assert_eq!(bounded(b"POST", 16), "POST");
        assert_eq!(bounded(b"ABCDEFGHIJKLMNOPQRST", 16), "ABCDEFGHIJKLMNOP");
        assert_eq!(bounded("aé".as_bytes(), 2), "a");
        assert_eq!(bounded(b"a\xff", 8), "a\u{FFFD}");
    }
}
