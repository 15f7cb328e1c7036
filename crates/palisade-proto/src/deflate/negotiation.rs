//! RFC 7692 §7.1: the parameters of permessage-deflate, offered, accepted and checked.

use palisade_error::{Error, NegotiationError};

use super::{DeflateConfig, EXTENSION_NAME};
use crate::handshake::{ExtensionOffer, format_extensions};

const SERVER_NO_CONTEXT_TAKEOVER: &str = "server_no_context_takeover";
const CLIENT_NO_CONTEXT_TAKEOVER: &str = "client_no_context_takeover";
const SERVER_MAX_WINDOW_BITS: &str = "server_max_window_bits";
const CLIENT_MAX_WINDOW_BITS: &str = "client_max_window_bits";

/// What both ends agreed on, in the RFC's terms. A window size the answer leaves out is 15 for
/// the server's window, and for the client's the size the client offered (15 if it offered
/// none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateParams {
    /// The server resets its compressor after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message.
    pub client_no_context_takeover: bool,
    /// The server's LZ77 window, in bits (8–15).
    pub server_max_window_bits: u8,
    /// The client's LZ77 window, in bits (8–15).
    pub client_max_window_bits: u8,
}

impl Default for DeflateParams {
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
        }
    }
}

/// An offer a server accepted: the `Sec-WebSocket-Extensions` element to answer with, and the
/// parameters in force.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Accepted {
    /// The response element, for [`crate::handshake::AcceptOptions::with_extensions`].
    pub response: ExtensionOffer,
    /// The parameters agreed on.
    pub params: DeflateParams,
}

/// The parameters of one offer or answer, parsed but not yet judged.
#[derive(Default)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)`: present without a value.
    client_max_window_bits: Option<Option<u8>>,
}

/// Parses the parameters of a permessage-deflate element (RFC 7692 §7): each at most once,
/// known names only, the context takeover flags without a value, window bits 8–15 written
/// without leading zeros (`%x38-39 / "1" %x30-35`).
fn parse(element: &ExtensionOffer) -> Result<Params, NegotiationError> {
    let mut p = Params::default();
    let mut seen = [false; 4];
    for (name, value) in &element.params {
        let invalid_value = || NegotiationError::InvalidParameterValue {
            extension: EXTENSION_NAME.to_owned(),
            name: name.clone(),
            value: value.clone(),
        };
        let index = [
            SERVER_NO_CONTEXT_TAKEOVER,
            CLIENT_NO_CONTEXT_TAKEOVER,
            SERVER_MAX_WINDOW_BITS,
            CLIENT_MAX_WINDOW_BITS,
        ]
        .iter()
        .position(|known| name.eq_ignore_ascii_case(known))
        .ok_or_else(|| NegotiationError::InvalidParameterName {
            extension: EXTENSION_NAME.to_owned(),
            name: name.clone(),
        })?;
        if std::mem::replace(&mut seen[index], true) {
            return Err(NegotiationError::DuplicateParameter {
                extension: EXTENSION_NAME.to_owned(),
                name: name.clone(),
            });
        }
        match index {
            0 | 1 => {
                if value.is_some() {
                    return Err(invalid_value());
                }
                if index == 0 {
                    p.server_no_context_takeover = true;
                } else {
                    p.client_no_context_takeover = true;
                }
            }
            2 => {
                let bits = value.as_deref().and_then(window_bits).ok_or_else(invalid_value)?;
                p.server_max_window_bits = Some(bits);
            }
            _ => {
                let bits = match value.as_deref() {
                    None => None,
                    Some(v) => Some(window_bits(v).ok_or_else(invalid_value)?),
                };
                p.client_max_window_bits = Some(bits);
            }
        }
    }
    Ok(p)
}

/// `8` to `15`, exactly as RFC 7692 §7.1.2 writes them.
fn window_bits(value: &str) -> Option<u8> {
    match value.as_bytes() {
        [d @ b'8'..=b'9'] => Some(d - b'0'),
        [b'1', d @ b'0'..=b'5'] => Some(10 + d - b'0'),
        _ => None,
    }
}

impl DeflateConfig {
    /// The element a client offers: this configuration's wishes, and always
    /// `client_max_window_bits` so that the server may shrink our window (RFC 7692 §7.1.2.2).
    pub fn offer(&self) -> ExtensionOffer {
        let mut offer = ExtensionOffer::new(EXTENSION_NAME);
        if self.server_no_context_takeover {
            offer = offer.with_param(SERVER_NO_CONTEXT_TAKEOVER, None);
        }
        if self.client_no_context_takeover {
            offer = offer.with_param(CLIENT_NO_CONTEXT_TAKEOVER, None);
        }
        if self.server_max_window_bits < 15 {
            offer = offer
                .with_param(SERVER_MAX_WINDOW_BITS, Some(self.server_max_window_bits.to_string()));
        }
        let client_bits =
            (self.client_max_window_bits < 15).then(|| self.client_max_window_bits.to_string());
        offer.with_param(CLIENT_MAX_WINDOW_BITS, client_bits)
    }

    /// [`DeflateConfig::offer`] as a `Sec-WebSocket-Extensions` value.
    pub fn offer_header(&self) -> String {
        format_extensions(&[self.offer()])
            .expect("invariant: the offer is built from tokens and small integers")
    }

    /// Server side: the first acceptable permessage-deflate offer among `offers`, in the
    /// client's order of preference (RFC 7692 §5), or `None` when there is none. Offers with
    /// an unknown, duplicate or malformed parameter are declined, as §7 requires, and the
    /// next one is tried.
    ///
    /// The answer never grants the client more than it offered: `server_max_window_bits` is at
    /// most the value offered, and `client_max_window_bits` is only sent when offered.
    pub fn accept(&self, offers: &[ExtensionOffer]) -> Option<Accepted> {
        offers
            .iter()
            .filter(|o| o.name.eq_ignore_ascii_case(EXTENSION_NAME))
            .find_map(|o| self.accept_offer(o).ok())
    }

    /// Server side: judges one offer, with the reason it is declined.
    ///
    /// # Errors
    ///
    /// [`NegotiationError::InvalidParameterName`], [`NegotiationError::DuplicateParameter`] or
    /// [`NegotiationError::InvalidParameterValue`] for the first bad parameter.
    pub fn accept_offer(&self, offer: &ExtensionOffer) -> Result<Accepted, NegotiationError> {
        let offered = parse(offer)?;
        let mut response = ExtensionOffer::new(EXTENSION_NAME);
        // RFC 7692 §7.1.1: the server may add either flag even when not offered.
        let server_no_context_takeover =
            offered.server_no_context_takeover || self.server_no_context_takeover;
        let client_no_context_takeover =
            offered.client_no_context_takeover || self.client_no_context_takeover;
        if server_no_context_takeover {
            response = response.with_param(SERVER_NO_CONTEXT_TAKEOVER, None);
        }
        if client_no_context_takeover {
            response = response.with_param(CLIENT_NO_CONTEXT_TAKEOVER, None);
        }
        // §7.1.2.1: an offered value must be answered with the same or a smaller one; without
        // an offer the server may still limit its own window.
        let server_bits = match offered.server_max_window_bits {
            Some(bits) => bits.min(self.server_max_window_bits),
            None => self.server_max_window_bits,
        };
        if offered.server_max_window_bits.is_some() || server_bits < 15 {
            response = response.with_param(SERVER_MAX_WINDOW_BITS, Some(server_bits.to_string()));
        }
        // §7.1.2.2: the client's window can only be limited if it offered the parameter.
        let client_bits = match offered.client_max_window_bits {
            None => 15,
            Some(None) => self.client_max_window_bits,
            Some(Some(bits)) => bits.min(self.client_max_window_bits),
        };
        if client_bits < 15 {
            response = response.with_param(CLIENT_MAX_WINDOW_BITS, Some(client_bits.to_string()));
        }
        Ok(Accepted {
            response,
            params: DeflateParams {
                server_no_context_takeover,
                client_no_context_takeover,
                server_max_window_bits: server_bits,
                client_max_window_bits: client_bits,
            },
        })
    }

    /// Client side: checks the server's answer to [`DeflateConfig::offer`] (RFC 7692 §7.1).
    ///
    /// # Errors
    ///
    /// - [`NegotiationError::InvalidParameterName`]: an unknown parameter.
    /// - [`NegotiationError::DuplicateParameter`]: a parameter twice.
    /// - [`NegotiationError::InvalidParameterValue`]: a malformed value; a window larger than
    ///   offered; `client_max_window_bits` without a value; a parameter we asked for missing
    ///   from the answer (`value: None`).
    pub fn check_answer(&self, answer: &ExtensionOffer) -> Result<DeflateParams, NegotiationError> {
        let got = parse(answer)?;
        let invalid = |name: &str, value: Option<u8>| NegotiationError::InvalidParameterValue {
            extension: EXTENSION_NAME.to_owned(),
            name: name.to_owned(),
            value: value.map(|v| v.to_string()),
        };
        // §7.1.1.1: asking for server_no_context_takeover is accepted by echoing it.
        if self.server_no_context_takeover && !got.server_no_context_takeover {
            return Err(invalid(SERVER_NO_CONTEXT_TAKEOVER, None));
        }
        // §7.1.2.1: a requested server window must be answered with one at most as large.
        let server_bits = match (self.server_max_window_bits < 15, got.server_max_window_bits) {
            (true, None) => return Err(invalid(SERVER_MAX_WINDOW_BITS, None)),
            (true, Some(bits)) if bits > self.server_max_window_bits => {
                return Err(invalid(SERVER_MAX_WINDOW_BITS, Some(bits)));
            }
            (_, Some(bits)) => bits,
            (false, None) => 15,
        };
        // §7.1.2.2: the answer carries a value, at most the one offered; without it the client
        // keeps the window it offered.
        let client_bits = match got.client_max_window_bits {
            None => self.client_max_window_bits,
            Some(None) => return Err(invalid(CLIENT_MAX_WINDOW_BITS, None)),
            Some(Some(bits)) if bits > self.client_max_window_bits => {
                return Err(invalid(CLIENT_MAX_WINDOW_BITS, Some(bits)));
            }
            Some(Some(bits)) => bits,
        };
        Ok(DeflateParams {
            server_no_context_takeover: got.server_no_context_takeover,
            client_no_context_takeover: got.client_no_context_takeover
                || self.client_no_context_takeover,
            server_max_window_bits: server_bits,
            client_max_window_bits: client_bits,
        })
    }

    /// Client side: finds and checks permessage-deflate among all the extensions the server
    /// accepted (`Negotiated::extensions`). `Ok(None)` when the server declined it.
    ///
    /// # Errors
    ///
    /// Those of [`DeflateConfig::check_answer`], and
    /// [`NegotiationError::UnofferedExtension`] when the server accepts it more than once (one
    /// offer was made).
    pub fn check_answers(
        &self,
        accepted: &[ExtensionOffer],
    ) -> Result<Option<DeflateParams>, Error> {
        let mut answers = accepted.iter().filter(|e| e.name.eq_ignore_ascii_case(EXTENSION_NAME));
        let Some(answer) = answers.next() else { return Ok(None) };
        if answers.next().is_some() {
            return Err(
                NegotiationError::UnofferedExtension { name: EXTENSION_NAME.to_owned() }.into()
            );
        }
        Ok(Some(self.check_answer(answer)?))
    }
}
