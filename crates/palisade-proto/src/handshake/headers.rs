//! The header grammar of the handshake: RFC 7230 §3.2.6 tokens and quoted strings, §7 comma
//! lists, and the `Sec-WebSocket-Protocol` and `Sec-WebSocket-Extensions` values built from them
//! (RFC 6455 §4.3, §9.1).

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};
use palisade_error::{Error, HandshakeError, InvalidHeader, NegotiationError};

use super::bounded;

pub(crate) const SEC_WEBSOCKET_PROTOCOL: &str = "sec-websocket-protocol";
pub(crate) const SEC_WEBSOCKET_EXTENSIONS: &str = "sec-websocket-extensions";

/// One extension in a `Sec-WebSocket-Extensions` header: offered by a client, or accepted by a
/// server (RFC 6455 §9.1).
///
/// Parameter values are kept unquoted: `x="10"` and `x=10` give the same offer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ExtensionOffer {
    /// The extension's name, a token, such as `permessage-deflate`.
    pub name: String,
    /// Its parameters in order: a name and, if the parameter has one, its value.
    pub params: Vec<(String, Option<String>)>,
}

impl ExtensionOffer {
    /// An offer of extension `name` without parameters.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), params: Vec::new() }
    }

    /// Adds parameter `name`, with `value` if it has one.
    pub fn with_param(mut self, name: impl Into<String>, value: Option<String>) -> Self {
        self.params.push((name.into(), value));
        self
    }

    /// The parameter named `name` (compared case-insensitively): `Some(None)` if it is present
    /// without a value, `None` if absent.
    pub fn param(&self, name: &str) -> Option<Option<&str>> {
        self.params.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_deref())
    }
}

/// Whether `b` is a `tchar`, a character allowed in a token (RFC 7230 §3.2.6).
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// Whether `s` is a token: one or more `tchar` (RFC 7230 §3.2.6).
pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// Parses a `Sec-WebSocket-Protocol` value: a comma-separated list of one or more tokens
/// (RFC 6455 §4.1 item 10, §4.3; RFC 7230 §7), in order. Empty list elements are ignored.
///
/// # Errors
///
/// [`InvalidHeader`] with [`palisade_error::HeaderProblem::BadFormat`] (400) at the first byte
/// that breaks the grammar, or at the end if the list has no element. The value is redacted in
/// the error: browsers can only send a credential in a handshake as a subprotocol.
pub fn parse_subprotocols(value: &str) -> Result<Vec<String>, Error> {
    let bad = |pos| InvalidHeader::bad_format(SEC_WEBSOCKET_PROTOCOL, value, pos).into();
    let mut cursor = Cursor::new(value);
    let mut protocols = Vec::new();
    loop {
        // RFC 7230 §7: a recipient accepts and ignores empty elements (", , a").
        cursor.skip_ows();
        match cursor.peek() {
            None => break,
            Some(b',') => {
                cursor.bump();
                continue;
            }
            Some(_) => {}
        }
        let token = cursor.token();
        if token.is_empty() {
            return Err(bad(cursor.pos));
        }
        protocols.push(token.to_owned());
        cursor.skip_ows();
        match cursor.peek() {
            None => break,
            Some(b',') => cursor.bump(),
            Some(_) => return Err(bad(cursor.pos)),
        }
    }
    if protocols.is_empty() {
        return Err(bad(value.len()));
    }
    Ok(protocols)
}

/// Parses a `Sec-WebSocket-Extensions` value (RFC 6455 §9.1):
///
/// ```text
/// extension-list = 1#extension
/// extension      = token *( OWS ";" OWS param )
/// param          = token [ OWS "=" OWS ( token / quoted-string ) ]
/// ```
///
/// Quoted values are unquoted. Empty list elements are ignored (RFC 7230 §7). A parameter
/// that appears twice in one element is kept twice: the grammar allows it, and what it means
/// is for the extension to judge (RFC 7692 §7 has a server decline such a permessage-deflate
/// offer, and a client fail on such an answer, rather than refuse the whole handshake).
///
/// # Errors
///
/// All 400 on a server:
///
/// - [`NegotiationError::InvalidParameterName`]: a parameter name is not a token.
/// - [`NegotiationError::InvalidParameterValue`]: a value is empty or, once unquoted, not a
///   token (RFC 6455 §9.1 requires quoted values to be tokens after unquoting).
/// - [`InvalidHeader`] with [`palisade_error::HeaderProblem::BadFormat`]: any other syntax
///   error, at the byte where it is found.
pub fn parse_extensions(value: &str) -> Result<Vec<ExtensionOffer>, Error> {
    let bad = |pos| InvalidHeader::bad_format(SEC_WEBSOCKET_EXTENSIONS, value, pos).into();
    let mut cursor = Cursor::new(value);
    let mut offers = Vec::new();
    loop {
        cursor.skip_ows();
        match cursor.peek() {
            None => break,
            Some(b',') => {
                cursor.bump();
                continue;
            }
            Some(_) => {}
        }
        let name = cursor.token();
        if name.is_empty() {
            return Err(bad(cursor.pos));
        }
        let mut offer = ExtensionOffer::new(name);
        loop {
            cursor.skip_ows();
            if cursor.peek() != Some(b';') {
                break;
            }
            cursor.bump();
            cursor.skip_ows();
            let param = cursor.run(|b| matches!(b, b'=' | b';' | b',' | b' ' | b'\t'));
            if param.is_empty() {
                return Err(bad(cursor.pos));
            }
            if !is_token(param) {
                return Err(NegotiationError::InvalidParameterName {
                    extension: offer.name.clone(),
                    name: param.to_owned(),
                }
                .into());
            }
            cursor.skip_ows();
            let param_value = if cursor.peek() == Some(b'=') {
                cursor.bump();
                cursor.skip_ows();
                let raw = if cursor.peek() == Some(b'"') {
                    cursor.quoted_string().map_err(bad)?
                } else {
                    cursor.run(|b| matches!(b, b';' | b',' | b' ' | b'\t')).to_owned()
                };
                if !is_token(&raw) {
                    return Err(NegotiationError::InvalidParameterValue {
                        extension: offer.name.clone(),
                        name: param.to_owned(),
                        value: Some(raw),
                    }
                    .into());
                }
                Some(raw)
            } else {
                None
            };
            offer.params.push((param.to_owned(), param_value));
        }
        offers.push(offer);
        match cursor.peek() {
            None => break,
            Some(b',') => cursor.bump(),
            Some(_) => return Err(bad(cursor.pos)),
        }
    }
    if offers.is_empty() {
        return Err(bad(value.len()));
    }
    Ok(offers)
}

/// Formats extensions as a `Sec-WebSocket-Extensions` value, the inverse of
/// [`parse_extensions`]: `a; x; y=1, b`. Values are written bare, since RFC 6455 §9.1 requires
/// them to be tokens. An empty list gives an empty string; omit the header then.
///
/// # Errors
///
/// - [`InvalidHeader`] with [`palisade_error::HeaderProblem::BadFormat`]: an extension name is
///   not a token (the position is within the name).
/// - [`NegotiationError::InvalidParameterName`], [`NegotiationError::InvalidParameterValue`]:
///   as in [`parse_extensions`]. A repeated parameter is written as given, as parsing keeps it.
pub fn format_extensions(offers: &[ExtensionOffer]) -> Result<String, Error> {
    let mut out = String::new();
    for (i, offer) in offers.iter().enumerate() {
        if let Some(pos) = first_non_tchar(&offer.name) {
            return Err(
                InvalidHeader::bad_format(SEC_WEBSOCKET_EXTENSIONS, &offer.name, pos).into()
            );
        }
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&offer.name);
        for (name, value) in &offer.params {
            if !is_token(name) {
                return Err(NegotiationError::InvalidParameterName {
                    extension: offer.name.clone(),
                    name: name.clone(),
                }
                .into());
            }
            out.push_str("; ");
            out.push_str(name);
            if let Some(value) = value {
                if !is_token(value) {
                    return Err(NegotiationError::InvalidParameterValue {
                        extension: offer.name.clone(),
                        name: name.clone(),
                        value: Some(value.clone()),
                    }
                    .into());
                }
                out.push('=');
                out.push_str(value);
            }
        }
    }
    Ok(out)
}

/// The position of the first byte of `s` that is not a `tchar`; `Some(0)` for an empty string.
fn first_non_tchar(s: &str) -> Option<usize> {
    if s.is_empty() {
        return Some(0);
    }
    s.bytes().position(|b| !is_tchar(b))
}

/// `value` as text, for a header whose grammar is ASCII.
///
/// # Errors
///
/// [`InvalidHeader`] with [`palisade_error::HeaderProblem::BadFormat`] (400) at the first byte
/// that is neither visible ASCII, space nor tab.
pub(crate) fn header_str<'a>(name: &'static str, value: &'a HeaderValue) -> Result<&'a str, Error> {
    value.to_str().map_err(|_| {
        let bytes = value.as_bytes();
        let pos = bytes
            .iter()
            .position(|&b| !(b == b'\t' || (0x20..0x7f).contains(&b)))
            .unwrap_or(bytes.len());
        InvalidHeader::bad_format(name, &String::from_utf8_lossy(bytes), pos).into()
    })
}

/// Whether any of the comma-separated elements of any of `values` equals `wanted`, ignoring
/// ASCII case and surrounding whitespace (RFC 7230 §6.1 `Connection`, §6.7 `Upgrade`: both are
/// case-insensitive lists that may be split over several header lines).
pub(crate) fn list_contains<'a>(
    values: impl IntoIterator<Item = &'a HeaderValue>,
    wanted: &str,
) -> bool {
    values.into_iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|element| trim_ows(element).eq_ignore_ascii_case(wanted.as_bytes()))
    })
}

/// Checks that the list in header `name` contains `token` (RFC 6455 §4.1 client steps 2–3,
/// §4.2.1 items 3–4).
///
/// # Errors
///
/// [`HandshakeError::InvalidUpgrade`] (426 on a server) naming `label`, with the values
/// received (joined, at most 128 bytes), or `None` if the header is absent.
pub(crate) fn require_token(
    headers: &HeaderMap,
    name: HeaderName,
    label: &'static str,
    token: &str,
) -> Result<(), Error> {
    let values = headers.get_all(&name);
    if list_contains(values.iter(), token) {
        return Ok(());
    }
    let value = headers.contains_key(&name).then(|| {
        let joined = values.iter().map(HeaderValue::as_bytes).collect::<Vec<_>>().join(&b", "[..]);
        bounded(&joined, 128)
    });
    Err(HandshakeError::InvalidUpgrade { header: label, value }.into())
}

/// The value of header `name` if it appears at most once.
///
/// # Errors
///
/// [`InvalidHeader`] with [`palisade_error::HeaderProblem::Duplicate`] (400) naming `label`.
pub(crate) fn single<'a>(
    headers: &'a HeaderMap,
    name: HeaderName,
    label: &'static str,
) -> Result<Option<&'a HeaderValue>, Error> {
    let mut values = headers.get_all(name).into_iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(InvalidHeader::duplicate(label).into());
    }
    Ok(first)
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A position in a header value, moved forward by the grammar rules.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(s: &'a str) -> Self {
        Self { s, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn bump(&mut self) {
        self.pos += 1;
    }

    /// OWS = *( SP / HTAB ) (RFC 7230 §3.2.3).
    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.bump();
        }
    }

    /// The longest run of `tchar` from here, possibly empty.
    fn token(&mut self) -> &'a str {
        self.run(|b| !is_tchar(b))
    }

    /// The run of bytes from here up to the first for which `stop` holds. `stop` must hold
    /// for every non-ASCII byte or for none, so that the run ends on a character boundary;
    /// all callers stop only at ASCII bytes or at every non-`tchar`.
    fn run(&mut self, stop: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while let Some(b) = self.peek() {
            if stop(b) {
                break;
            }
            self.bump();
        }
        // Both ends are at ASCII bytes or at the end, hence character boundaries.
        self.s.get(start..self.pos).unwrap_or_default()
    }

    /// A quoted-string starting at the cursor's `"`, unquoted (RFC 7230 §3.2.6):
    ///
    /// ```text
    /// quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE
    /// qdtext        = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
    /// quoted-pair   = "\" ( HTAB / SP / VCHAR / obs-text )
    /// ```
    ///
    /// On error, the position of the offending byte (or of the end, if it is unterminated).
    fn quoted_string(&mut self) -> Result<String, usize> {
        let mut out = Vec::new();
        self.bump();
        loop {
            match self.peek() {
                None => return Err(self.pos),
                Some(b'"') => {
                    self.bump();
                    break;
                }
                Some(b'\\') => {
                    self.bump();
                    match self.peek() {
                        Some(b)
                            if b == b'\t'
                                || b == b' '
                                || (0x21..0x7f).contains(&b)
                                || b >= 0x80 =>
                        {
                            out.push(b);
                            self.bump();
                        }
                        _ => return Err(self.pos),
                    }
                }
                Some(b)
                    if b == b'\t'
                        || b == b' '
                        || b == 0x21
                        || (0x23..0x7f).contains(&b)
                        || b >= 0x80 =>
                {
                    out.push(b);
                    self.bump();
                }
                Some(_) => return Err(self.pos),
            }
        }
        // Escapes only ever drop a backslash before a byte, so whole UTF-8 sequences of the
        // input are copied intact; a lone continuation byte after a backslash is the only way
        // to split one, and the lossy conversion turns it into U+FFFD, which is no token.
        Ok(String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;
    use palisade_error::{HandshakeError, HeaderProblem};
    use proptest::prelude::*;

    use super::*;

    fn negotiation(err: Error) -> NegotiationError {
        assert_eq!(err.status_to_send(), Some(StatusCode::BAD_REQUEST));
        match err {
            Error::Handshake(h) => match *h {
                HandshakeError::Negotiation(n) => n,
                other => panic!("not a negotiation error: {other:?}"),
            },
            other => panic!("not a handshake error: {other:?}"),
        }
    }

    fn bad_format_at(err: Error) -> (&'static str, usize) {
        assert_eq!(err.status_to_send(), Some(StatusCode::BAD_REQUEST));
        match err {
            Error::Handshake(h) => match *h {
                HandshakeError::InvalidHeader(h) => match h.problem() {
                    HeaderProblem::BadFormat { pos } => (h.name(), pos),
                    other => panic!("not a format error: {other:?}"),
                },
                other => panic!("not a header error: {other:?}"),
            },
            other => panic!("not a handshake error: {other:?}"),
        }
    }

    fn offer(name: &str, params: &[(&str, Option<&str>)]) -> ExtensionOffer {
        ExtensionOffer {
            name: name.into(),
            params: params.iter().map(|(n, v)| ((*n).into(), v.map(Into::into))).collect(),
        }
    }

    #[test]
    fn tokens_follow_rfc_7230() {
        for ok in ["a", "chat.v2", "x-y_z", "!#$%&'*+-.^_`|~09AZaz"] {
            assert!(is_token(ok), "{ok}");
        }
        for bad in ["", "a b", "a,b", "a\"", "(a)", "a/b", "a:b", "é", "a=b", "{", "a\t"] {
            assert!(!is_token(bad), "{bad}");
        }
    }

    #[test]
    fn subprotocol_lists_tolerate_empty_elements_and_whitespace() {
        assert_eq!(parse_subprotocols("chat").unwrap(), ["chat"]);
        assert_eq!(parse_subprotocols(" chat ,\tsuperchat").unwrap(), ["chat", "superchat"]);
        assert_eq!(parse_subprotocols(", ,a,,b ,").unwrap(), ["a", "b"]);
    }

    #[test]
    fn subprotocol_syntax_errors_point_at_the_byte() {
        assert_eq!(
            bad_format_at(parse_subprotocols("a b").unwrap_err()),
            (SEC_WEBSOCKET_PROTOCOL, 2)
        );
        assert_eq!(
            bad_format_at(parse_subprotocols("a, /b").unwrap_err()),
            (SEC_WEBSOCKET_PROTOCOL, 3)
        );
        assert_eq!(bad_format_at(parse_subprotocols("").unwrap_err()), (SEC_WEBSOCKET_PROTOCOL, 0));
        assert_eq!(
            bad_format_at(parse_subprotocols(" , ").unwrap_err()),
            (SEC_WEBSOCKET_PROTOCOL, 3)
        );
        assert_eq!(
            bad_format_at(parse_subprotocols("a;b").unwrap_err()),
            (SEC_WEBSOCKET_PROTOCOL, 1)
        );
    }

    #[test]
    fn subprotocol_errors_do_not_show_the_value() {
        let err = parse_subprotocols("access_token.s3cret, not valid").unwrap_err();
        assert!(!err.to_string().contains("s3cret"));
        assert!(!format!("{err:?}").contains("s3cret"));
    }

    #[test]
    fn extensions_parse_with_parameters_and_quoted_values() {
        let got = parse_extensions(
            "permessage-deflate; client_max_window_bits; server_max_window_bits=10, \
             permessage-deflate ;client_max_window_bits = \"15\", x-foo",
        )
        .unwrap();
        assert_eq!(
            got,
            [
                offer(
                    "permessage-deflate",
                    &[("client_max_window_bits", None), ("server_max_window_bits", Some("10"))]
                ),
                offer("permessage-deflate", &[("client_max_window_bits", Some("15"))]),
                offer("x-foo", &[]),
            ]
        );
        assert_eq!(got[0].param("SERVER_MAX_WINDOW_BITS"), Some(Some("10")));
        assert_eq!(got[0].param("client_max_window_bits"), Some(None));
        assert_eq!(got[0].param("absent"), None);
        // quoted-pair
        assert_eq!(parse_extensions(r#"e; a="1\0""#).unwrap(), [offer("e", &[("a", Some("10"))])]);
        // empty elements
        assert_eq!(parse_extensions(" , a ,, ").unwrap(), [offer("a", &[])]);
    }

    #[test]
    fn an_invalid_parameter_name_is_a_negotiation_error() {
        for (value, name) in
            [("e; a\"b=1", "a\"b"), ("e; (x)", "(x)"), ("e; é=1", "é"), ("e; a/b", "a/b")]
        {
            assert_eq!(
                negotiation(parse_extensions(value).unwrap_err()),
                NegotiationError::InvalidParameterName { extension: "e".into(), name: name.into() },
                "{value}"
            );
        }
    }

    #[test]
    fn an_invalid_parameter_value_is_a_negotiation_error() {
        for (value, bad) in [
            ("e; a=", ""),
            ("e; a=;b", ""),
            ("e; a=\"\"", ""),
            ("e; a=\"1 0\"", "1 0"),
            ("e; a=b=c", "b=c"),
            ("e; a=x\"y", "x\"y"),
            ("e; a=\"x,y\"", "x,y"),
        ] {
            assert_eq!(
                negotiation(parse_extensions(value).unwrap_err()),
                NegotiationError::InvalidParameterValue {
                    extension: "e".into(),
                    name: "a".into(),
                    value: Some(bad.into())
                },
                "{value}"
            );
        }
    }

    #[test]
    fn a_repeated_parameter_is_kept_for_the_extension_to_judge() {
        let offers = parse_extensions("e; a=1; b; A=2, e; a").unwrap();
        assert_eq!(offers.len(), 2);
        let names: Vec<_> =
            offers[0].params.iter().map(|(n, v)| (n.as_str(), v.as_deref())).collect();
        assert_eq!(names, [("a", Some("1")), ("b", None), ("A", Some("2"))]);
        // `param` answers with the first.
        assert_eq!(offers[0].param("a"), Some(Some("1")));
    }

    #[test]
    fn extension_syntax_errors_point_at_the_byte() {
        for (value, pos) in [
            ("", 0),
            (",", 1),
            ("e f", 2),
            ("e;", 2),
            ("e; ;a", 3),
            ("e; =1", 3),
            ("(e)", 0),
            ("e; a=\"unterminated", 18),
            ("e; a=\"ctl\x01\"", 9),
            ("e; a=\"x\\\x01\"", 8),
            ("e; a=\"1\"x", 8),
        ] {
            assert_eq!(
                bad_format_at(parse_extensions(value).unwrap_err()),
                (SEC_WEBSOCKET_EXTENSIONS, pos),
                "{value:?}"
            );
        }
    }

    #[test]
    fn format_writes_the_canonical_form() {
        let offers = [
            offer(
                "permessage-deflate",
                &[("client_max_window_bits", None), ("server_max_window_bits", Some("10"))],
            ),
            offer("x", &[]),
        ];
        assert_eq!(
            format_extensions(&offers).unwrap(),
            "permessage-deflate; client_max_window_bits; server_max_window_bits=10, x"
        );
        assert_eq!(format_extensions(&[]).unwrap(), "");
    }

    #[test]
    fn format_refuses_what_parse_refuses() {
        assert_eq!(
            bad_format_at(format_extensions(&[offer("a b", &[])]).unwrap_err()),
            (SEC_WEBSOCKET_EXTENSIONS, 1)
        );
        assert_eq!(
            bad_format_at(format_extensions(&[offer("", &[])]).unwrap_err()),
            (SEC_WEBSOCKET_EXTENSIONS, 0)
        );
        assert!(matches!(
            negotiation(format_extensions(&[offer("e", &[("a b", None)])]).unwrap_err()),
            NegotiationError::InvalidParameterName { .. }
        ));
        assert!(matches!(
            negotiation(format_extensions(&[offer("e", &[("a", Some("1 0"))])]).unwrap_err()),
            NegotiationError::InvalidParameterValue { .. }
        ));
        assert_eq!(
            format_extensions(&[offer("e", &[("a", None), ("A", None)])]).unwrap(),
            "e; a; A"
        );
    }

    #[test]
    fn list_contains_is_case_insensitive_and_spans_lines() {
        let values =
            [HeaderValue::from_static("keep-alive"), HeaderValue::from_static(" foo ,  UpGrade\t")];
        assert!(list_contains(&values, "upgrade"));
        assert!(!list_contains(&values[..1], "upgrade"));
        assert!(!list_contains(&[HeaderValue::from_static("upgrades")], "upgrade"));
        assert!(!list_contains(&[HeaderValue::from_static("up grade")], "upgrade"));
    }

    #[test]
    fn header_str_points_at_the_first_non_ascii_byte() {
        let value = HeaderValue::from_bytes(b"ab\xffc").unwrap();
        assert_eq!(bad_format_at(header_str("origin", &value).unwrap_err()), ("origin", 2));
        assert_eq!(header_str("origin", &HeaderValue::from_static("a\tb")).unwrap(), "a\tb");
    }

    fn token() -> impl Strategy<Value = String> {
        "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}"
    }

    fn offers() -> impl Strategy<Value = Vec<ExtensionOffer>> {
        proptest::collection::vec(
            (token(), proptest::collection::vec((token(), proptest::option::of(token())), 0..4)),
            1..4,
        )
        .prop_map(|list| {
            list.into_iter()
                .map(|(name, params)| {
                    let mut offer = ExtensionOffer::new(name);
                    for (n, v) in params {
                        if offer.param(&n).is_none() {
                            offer.params.push((n, v));
                        }
                    }
                    offer
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn format_then_parse_gives_back_the_offers(offers in offers()) {
            let value = format_extensions(&offers).unwrap();
            prop_assert_eq!(parse_extensions(&value).unwrap(), offers);
        }

        #[test]
        fn quoting_values_changes_nothing(offers in offers()) {
            let mut value = String::new();
            for offer in &offers {
                value.push_str(" ,");
                value.push_str(&offer.name);
                for (n, v) in &offer.params {
                    value.push_str(" ;\t");
                    value.push_str(n);
                    if let Some(v) = v {
                        value.push_str(" = \"");
                        for c in v.chars() {
                            if c == '\'' { value.push('\\'); }
                            value.push(c);
                        }
                        value.push('"');
                    }
                }
            }
            prop_assert_eq!(parse_extensions(&value).unwrap(), offers);
        }

        #[test]
        fn subprotocol_lists_round_trip(protocols in proptest::collection::vec(token(), 1..6)) {
            prop_assert_eq!(parse_subprotocols(&protocols.join(" , ")).unwrap(), protocols);
        }

        #[test]
        fn random_values_never_panic(value in "\\PC{0,40}|[ ,;=\"\\\\a-c\t]{0,40}") {
            let _ = parse_subprotocols(&value);
            if let Ok(offers) = parse_extensions(&value) {
                // Whatever parses formats, and formats back to the same offers.
                let formatted = format_extensions(&offers).unwrap();
                prop_assert_eq!(parse_extensions(&formatted).unwrap(), offers);
            }
        }
    }
}
