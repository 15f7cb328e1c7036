//! Python's WebSocket exceptions, and the palisade error that takes the place of each. Run it
//! from the workspace root:
//!
//! ```text
//! cargo run --example coming_from_python
//! ```
//!
//! For every exception class of Python `websockets` 17.0 (and its legacy ones), of
//! simple-websocket and of Starlette, it builds the palisade error a Rust program gets in the
//! same situation, checks with `assert!` what the book says about it — close code, HTTP status,
//! category, retry class, and which `match` arm catches it — and prints one line per exception.
//! It fails if a class of `websockets.exceptions` is left without a row. Look at:
//!
//! - `python_class`: one `match` over `palisade::Error` whose arms are the `except` clauses of a
//!   Python program, each returning the name of the exception it replaces;
//! - the base classes (`except InvalidHandshake:` and the like), which become predicates over
//!   several variants, checked against every row;
//! - `peer_breaks_the_protocol`: the sans-I/O core failing on a client's unmasked frame. The error
//!   comes out once as `Error::Protocol`, then the connection reports `ConnectionClosedError` —
//!   where Python raises `ConnectionClosedError` at once, with the `ProtocolError` as its
//!   `__cause__`;
//! - Starlette's `(code, reason)` and simple-websocket's `status_code`, read off palisade errors.
//!
//! The book's chapter "Coming from Python" shows these listings.

use std::io;
use std::time::Instant;

use palisade::error::{
    CloseFrameError, ConcurrencyError, ConnectionClosed, HandshakeError, HeaderProblem,
    InvalidHeader, InvalidMessage, InvalidState, InvalidStatus, InvalidUri, NegotiationError,
    Operation, PolicyKind, PolicyViolation, ProtocolError, ProxyError, SecurityError, State,
    TimeoutPhase, TransportError, UriProblem,
};
use palisade::http::{HeaderMap, HeaderValue, StatusCode, header};
use palisade::proto::{Connection, FrameHeader, Message, OpCode, ProtocolConfig};
use palisade::{Category, CloseCode, CloseFrame, Error};

type BoxError = Box<dyn std::error::Error>;

/// `websockets.exceptions.__all__` in websockets 17.0.
const WEBSOCKETS_17: [&str; 32] = [
    "WebSocketException",
    "ConnectionClosed",
    "ConnectionClosedOK",
    "ConnectionClosedError",
    "InvalidURI",
    "InvalidProxy",
    "InvalidHandshake",
    "SecurityError",
    "RequestLineTooLong",
    "StatusLineTooLong",
    "HeaderLineTooLong",
    "TooManyHeaders",
    "ProxyError",
    "InvalidProxyMessage",
    "InvalidProxyStatus",
    "InvalidMessage",
    "InvalidMethod",
    "InvalidProtocol",
    "InvalidStatus",
    "InvalidHeader",
    "InvalidHeaderFormat",
    "InvalidHeaderValue",
    "InvalidOrigin",
    "InvalidUpgrade",
    "NegotiationError",
    "DuplicateParameter",
    "InvalidParameterName",
    "InvalidParameterValue",
    "ProtocolError",
    "PayloadTooBig",
    "InvalidState",
    "ConcurrencyError",
];

/// The deprecated aliases websockets 17.0 still resolves (from `websockets.legacy`).
const WEBSOCKETS_LEGACY: [&str; 4] =
    ["AbortHandshake", "InvalidStatusCode", "RedirectHandshake", "WebSocketProtocolError"];

/// One Python exception and the palisade error raised in its place.
struct Row {
    /// The Python exception, or what Python raises where it is not a `websockets` exception.
    python: &'static str,
    /// What `python_class` must answer for `error`; `None` when no `websockets` class applies.
    arm: Option<&'static str>,
    /// The variant, for the printout.
    palisade: &'static str,
    error: Error,
    close: Option<u16>,
    status: Option<u16>,
    category: Category,
    retry: bool,
}

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: coming_from_python

Every exception of Python's `websockets` (and simple-websocket's and Starlette's), the palisade
error that takes its place, checked and printed one per line.

  -h, --help   print this and exit
";

fn main() -> Result<(), BoxError> {
    args::Args::none("coming_from_python", USAGE);
    run()
}

/// Checks and prints every row; the interop tests call it too.
pub(crate) fn run() -> Result<(), BoxError> {
    let websockets = websockets_rows()?;
    let legacy = legacy_rows()?;
    let elsewhere = not_websockets_rows();
    let simple = simple_websocket_rows()?;
    let starlette = starlette_rows()?;

    for (title, rows) in [
        ("websockets 17.0", &websockets),
        ("websockets, legacy aliases", &legacy),
        ("Python, outside websockets.exceptions", &elsewhere),
        ("simple-websocket", &simple),
        ("Starlette", &starlette),
    ] {
        println!("{title}:");
        for row in rows.iter() {
            check(row);
            print_row(row);
        }
        println!();
    }
    println!("  RedirectHandshake: no error; the client follows redirects itself\n");

    every_class_has_a_row(&websockets, &legacy);
    let all: Vec<&Row> =
        [&websockets, &legacy, &elsewhere, &simple, &starlette].into_iter().flatten().collect();
    base_classes(&all);
    println!("\nmessage loop:");
    message_loop(&all);

    println!("\na client's unmasked frame, in the sans-I/O core:");
    peer_breaks_the_protocol()?;
    println!("\nStarlette and simple-websocket, read off palisade errors:");
    starlette_and_simple_websocket()?;
    Ok(())
}

/// Checks one row against the error's own classification and against `python_class`.
fn check(row: &Row) {
    let e = &row.error;
    assert_eq!(e.close_code().map(CloseCode::as_u16), row.close, "close_code of {}", row.python);
    // The HTTP status either way: owed to the peer, or (a refusal) received from it.
    let status = e.status_to_send().or_else(|| e.received_status());
    assert_eq!(status.map(|s| s.as_u16()), row.status, "status of {}", row.python);
    assert_eq!(e.category(), row.category, "category of {}", row.python);
    assert_eq!(e.is_retryable(), row.retry, "is_retryable of {}", row.python);
    assert_eq!(python_class(e), row.arm, "python_class for {}", row.python);
}

fn print_row(row: &Row) {
    let close = row.close.map_or_else(|| "-".to_owned(), |c| c.to_string());
    let status = row.status.map_or_else(|| "-".to_owned(), |s| s.to_string());
    let retry = if row.retry { "retry" } else { "no retry" };
    println!(
        "  {:<28} {:<46} {close:>4} {status:>3} {:<9} {retry}",
        row.python,
        row.palisade,
        row.category.name()
    );
}

// ANCHOR: except
/// The `websockets` exception class that `except` would name for `err`; `None` where Python
/// raises something else (`OSError`, `TimeoutError`, an `ssl` error) or nothing.
///
/// `Error` and its leaf enums are `#[non_exhaustive]`, so each `match` ends with a `_` arm.
fn python_class(err: &Error) -> Option<&'static str> {
    let class = match err {
        // except ConnectionClosedOK / ConnectionClosedError
        Error::ConnectionClosedOk(_) => "ConnectionClosedOK",
        Error::ConnectionClosedError(_) => "ConnectionClosedError",
        // except InvalidURI
        Error::InvalidUri(_) => "InvalidURI",
        // except InvalidProxy / InvalidProxyMessage / InvalidProxyStatus
        Error::Proxy(proxy) => match &**proxy {
            ProxyError::InvalidProxy { .. } => "InvalidProxy",
            ProxyError::InvalidProxyMessage { .. } => "InvalidProxyMessage",
            // Also a SOCKS5 refusal, which Python raises as a bare ProxyError.
            ProxyError::InvalidProxyStatus { .. } => "InvalidProxyStatus",
            _ => "ProxyError",
        },
        Error::Handshake(handshake) => match &**handshake {
            HandshakeError::Security(security) => match security {
                // Also a client's over-long status line (Python: StatusLineTooLong).
                SecurityError::RequestLineTooLong { .. } => "RequestLineTooLong",
                SecurityError::HeaderLineTooLong { .. } => "HeaderLineTooLong",
                SecurityError::TooManyHeaders { .. } => "TooManyHeaders",
                // Python: ssl.SSLCertVerificationError, an OSError.
                SecurityError::Certificate { .. } => return None,
                // HeadTooLarge, InsecureRedirect.
                _ => "SecurityError",
            },
            // Python: SecurityError("more than 10 redirects").
            HandshakeError::TooManyRedirects { .. } => "SecurityError",
            HandshakeError::InvalidMessage(message) => match message {
                InvalidMessage::MethodNotAllowed { .. } => "InvalidMethod",
                InvalidMessage::UnsupportedHttpVersion { .. } => "InvalidProtocol",
                _ => "InvalidMessage",
            },
            // except InvalidStatus as exc: exc.response.status_code
            HandshakeError::InvalidStatus(_) => "InvalidStatus",
            HandshakeError::InvalidHeader(header) => match header.problem() {
                HeaderProblem::BadFormat { .. } => "InvalidHeaderFormat",
                HeaderProblem::BadValue { .. } => "InvalidHeaderValue",
                // Missing, Duplicate.
                _ => "InvalidHeader",
            },
            // Python checks Sec-WebSocket-Version like any other header value.
            HandshakeError::UnsupportedVersion { .. } => "InvalidHeaderValue",
            HandshakeError::InvalidOrigin { .. } => "InvalidOrigin",
            HandshakeError::InvalidUpgrade { .. } => "InvalidUpgrade",
            HandshakeError::Negotiation(negotiation) => match negotiation {
                NegotiationError::DuplicateParameter { .. } => "DuplicateParameter",
                NegotiationError::InvalidParameterName { .. } => "InvalidParameterName",
                NegotiationError::InvalidParameterValue { .. } => "InvalidParameterValue",
                // NoCommonSubprotocol, UnofferedSubprotocol, UnofferedExtension,
                // MissingExtension.
                _ => "NegotiationError",
            },
            // A refusal on purpose, as the legacy AbortHandshake was.
            HandshakeError::Rejected { .. } => "AbortHandshake",
            _ => "InvalidHandshake",
        },
        // Python: ConnectionClosedError from recv(), with one of these as its __cause__.
        Error::Protocol(_) => "ProtocolError",
        Error::PayloadTooBig(_) => "PayloadTooBig",
        // Only the sans-I/O core returns InvalidState; the tokio connection answers a closed
        // connection's operations with ConnectionClosed*, as Python's asyncio API does.
        Error::InvalidState(_) => "InvalidState",
        Error::Concurrency(_) => "ConcurrencyError",
        // Transport: OSError, EOFError, ssl.SSLError. Timeout: TimeoutError, or Python's
        // ConnectionClosedError after a keepalive timeout. Policy: palisade's own limits.
        _ => return None,
    };
    Some(class)
}
// ANCHOR_END: except

// ANCHOR: bases
/// `except ConnectionClosed:` (`ConnectionClosedOK` or `ConnectionClosedError`).
fn is_connection_closed(err: &Error) -> bool {
    err.connection_closed().is_some()
}

/// `except InvalidHandshake:`. Python files proxy failures under it, but neither an invalid
/// proxy URL (`InvalidProxy`) nor a certificate failure (an `ssl` error).
fn is_invalid_handshake(err: &Error) -> bool {
    match err {
        Error::Handshake(handshake) => {
            !matches!(**handshake, HandshakeError::Security(SecurityError::Certificate { .. }))
        }
        Error::Proxy(proxy) => !matches!(**proxy, ProxyError::InvalidProxy { .. }),
        _ => false,
    }
}

/// `except SecurityError:`: a limit on the HTTP head, or a redirect refused.
fn is_security_error(err: &Error) -> bool {
    let Error::Handshake(handshake) = err else { return false };
    match &**handshake {
        HandshakeError::Security(SecurityError::Certificate { .. }) => false,
        HandshakeError::Security(_) | HandshakeError::TooManyRedirects { .. } => true,
        _ => false,
    }
}

/// `except ProxyError:`.
fn is_proxy_error(err: &Error) -> bool {
    matches!(err, Error::Proxy(proxy) if !matches!(**proxy, ProxyError::InvalidProxy { .. }))
}

/// `except InvalidHeader:`. In Python, `InvalidOrigin` and `InvalidUpgrade` are subclasses of
/// `InvalidHeader`; in palisade they are variants of their own.
fn is_invalid_header(err: &Error) -> bool {
    let Error::Handshake(handshake) = err else { return false };
    matches!(
        **handshake,
        HandshakeError::InvalidHeader(_)
            | HandshakeError::InvalidOrigin { .. }
            | HandshakeError::InvalidUpgrade { .. }
            | HandshakeError::UnsupportedVersion { .. }
    )
}

/// `except NegotiationError:`.
fn is_negotiation_error(err: &Error) -> bool {
    let Error::Handshake(handshake) = err else { return false };
    matches!(**handshake, HandshakeError::Negotiation(_))
}
// ANCHOR_END: bases

/// Each base-class predicate holds for exactly the rows whose class is a subclass of it.
fn base_classes(rows: &[&Row]) {
    type Predicate = fn(&Error) -> bool;
    let bases: [(&str, Predicate, &[&str]); 6] = [
        (
            "ConnectionClosed",
            is_connection_closed,
            &["ConnectionClosedOK", "ConnectionClosedError"],
        ),
        (
            "InvalidHandshake",
            is_invalid_handshake,
            &[
                "SecurityError",
                "RequestLineTooLong",
                "HeaderLineTooLong",
                "TooManyHeaders",
                "ProxyError",
                "InvalidProxyMessage",
                "InvalidProxyStatus",
                "InvalidMessage",
                "InvalidMethod",
                "InvalidProtocol",
                "InvalidStatus",
                "InvalidHeader",
                "InvalidHeaderFormat",
                "InvalidHeaderValue",
                "InvalidOrigin",
                "InvalidUpgrade",
                "NegotiationError",
                "DuplicateParameter",
                "InvalidParameterName",
                "InvalidParameterValue",
                "AbortHandshake",
            ],
        ),
        (
            "SecurityError",
            is_security_error,
            &["SecurityError", "RequestLineTooLong", "HeaderLineTooLong", "TooManyHeaders"],
        ),
        (
            "ProxyError",
            is_proxy_error,
            &["ProxyError", "InvalidProxyMessage", "InvalidProxyStatus"],
        ),
        (
            "InvalidHeader",
            is_invalid_header,
            &[
                "InvalidHeader",
                "InvalidHeaderFormat",
                "InvalidHeaderValue",
                "InvalidOrigin",
                "InvalidUpgrade",
            ],
        ),
        (
            "NegotiationError",
            is_negotiation_error,
            &[
                "NegotiationError",
                "DuplicateParameter",
                "InvalidParameterName",
                "InvalidParameterValue",
            ],
        ),
    ];
    println!("base classes:");
    for (base, predicate, subclasses) in bases {
        let mut caught = 0;
        for row in rows {
            let expected = python_class(&row.error).is_some_and(|c| subclasses.contains(&c));
            assert_eq!(predicate(&row.error), expected, "except {base}: for {}", row.python);
            caught += usize::from(expected);
        }
        println!("  except {base}: catches {caught} of the {} rows", rows.len());
    }
}

/// Fails unless every class of `websockets.exceptions` is a row, or a base class the
/// predicates above replace, or `WebSocketException` (any `Err`).
fn every_class_has_a_row(websockets: &[Row], legacy: &[Row]) {
    let bases = [
        "WebSocketException",
        "ConnectionClosed",
        "InvalidHandshake",
        "SecurityError",
        "ProxyError",
        "InvalidHeader",
        "NegotiationError",
    ];
    for class in WEBSOCKETS_17 {
        assert!(
            bases.contains(&class) || websockets.iter().any(|r| r.python == class),
            "no row for websockets.exceptions.{class}"
        );
    }
    for class in WEBSOCKETS_LEGACY {
        assert!(
            class == "RedirectHandshake" || legacy.iter().any(|r| r.python == class),
            "no row for the legacy {class}"
        );
    }
}

/// `async for message in websocket:` ends quietly on `ConnectionClosedOK` and raises anything
/// else; palisade's message loop ends (`None`) on `is_closed_ok()` and yields `Some(Err(_))`
/// otherwise.
fn message_loop(rows: &[&Row]) {
    for row in rows {
        let quiet_in_python = python_class(&row.error) == Some("ConnectionClosedOK");
        assert_eq!(row.error.is_closed_ok(), quiet_in_python, "loop end for {}", row.python);
    }
    println!("  the message loop ends quietly exactly where `async for` does");
}

// ---------------------------------------------------------------------------------------------
// The rows.

/// `python [as class] => "variant", error; close code, HTTP status, category, retryable;`
///
/// `as class` names what `python_class` answers where palisade has no variant of the Python
/// exception's own.
macro_rules! rows {
    ($($python:literal $(as $arm:literal)? => $label:literal, $err:expr;
        $close:expr, $status:expr, $cat:ident, $retry:expr;)*) => {
        vec![$(row($python, $label, $err, $close, $status, Category::$cat, $retry)
            $(.caught_as($arm))?,)*]
    };
}

fn websockets_rows() -> Result<Vec<Row>, BoxError> {
    let deflate = || "permessage-deflate".to_owned();
    let header_line = SecurityError::HeaderLineTooLong { len: 8193, max: 8192 };
    let start_line = || SecurityError::RequestLineTooLong { len: 8193, max: 8192 };
    Ok(rows![
        "ConnectionClosedOK" => "ConnectionClosedOk (1000)", closed(1000, 1000)?;
            None, None, Closed, false;
        "ConnectionClosedOK" => "ConnectionClosedOk (1001)", going_away()?;
            None, None, Closed, true;
        "ConnectionClosedError" => "ConnectionClosedError (1011)", closed(1011, 1011)?;
            None, None, Closed, true;
        "ConnectionClosedError" => "ConnectionClosedError (1008)", closed(1008, 1008)?;
            None, None, Closed, false;
        "ConnectionClosedError" => "ConnectionClosedError (1006, no frame)",
            Error::closed(ConnectionClosed::abnormal());
            None, None, Closed, true;
        "InvalidURI" => "InvalidUri (UriProblem::Scheme)",
            InvalidUri::new("http://example.com/", UriProblem::Scheme).into();
            None, None, Uri, false;
        "InvalidProxy" => "Proxy(InvalidProxy)",
            ProxyError::invalid_proxy("https://proxy.example:3128", "https is unsupported").into();
            None, None, Proxy, false;
        "RequestLineTooLong" => "Handshake(Security(RequestLineTooLong))", start_line().into();
            None, Some(414), Security, false;
        // palisade's client reports an over-long status line with the request-line variant.
        "StatusLineTooLong" as "RequestLineTooLong" => "Handshake(Security(RequestLineTooLong))",
            start_line().into();
            None, Some(414), Security, false;
        "HeaderLineTooLong" => "Handshake(Security(HeaderLineTooLong))", header_line.into();
            None, Some(431), Security, false;
        "TooManyHeaders" => "Handshake(Security(TooManyHeaders))",
            SecurityError::TooManyHeaders { max: 64 }.into();
            None, Some(431), Security, false;
        "SecurityError" => "Handshake(Security(InsecureRedirect))",
            SecurityError::InsecureRedirect.into();
            None, None, Security, false;
        "SecurityError" => "Handshake(Security(HeadTooLarge))",
            SecurityError::HeadTooLarge { len: 16385, max: 16384 }.into();
            None, Some(431), Security, false;
        "SecurityError" => "Handshake(TooManyRedirects)",
            HandshakeError::TooManyRedirects { max: 5 }.into();
            None, None, Handshake, false;
        // Python raises a bare ProxyError when a SOCKS proxy refuses; palisade maps the SOCKS5
        // reply to the nearest HTTP status.
        "ProxyError" as "InvalidProxyStatus" => "Proxy(InvalidProxyStatus 502) (SOCKS5)",
            ProxyError::InvalidProxyStatus { status: 502, reason: "general failure".into() }
                .into();
            None, None, Proxy, true;
        "InvalidProxyMessage" => "Proxy(InvalidProxyMessage)",
            ProxyError::InvalidProxyMessage { reason: "not a SOCKS5 proxy" }.into();
            None, None, Proxy, false;
        "InvalidProxyStatus" => "Proxy(InvalidProxyStatus 407)",
            ProxyError::InvalidProxyStatus { status: 407, reason: "Proxy Auth…".into() }.into();
            None, None, Proxy, false;
        "InvalidMessage" => "Handshake(InvalidMessage(Incomplete))",
            InvalidMessage::Incomplete.into();
            None, Some(400), Handshake, false;
        "InvalidMethod" => "Handshake(InvalidMessage(MethodNotAllowed))",
            InvalidMessage::MethodNotAllowed { method: "POST".into() }.into();
            None, Some(405), Handshake, false;
        "InvalidProtocol" => "Handshake(InvalidMessage(UnsupportedHttp…))",
            InvalidMessage::UnsupportedHttpVersion { minor: 0 }.into();
            None, Some(505), Handshake, false;
        "InvalidStatus" => "Handshake(InvalidStatus) 401", refused(401, None)?;
            None, Some(401), Handshake, false;
        "InvalidStatus" => "Handshake(InvalidStatus) 503", refused(503, Some(30))?;
            None, Some(503), Handshake, true;
        "InvalidHeader" => "Handshake(InvalidHeader) Missing",
            InvalidHeader::missing("sec-websocket-accept").into();
            None, Some(400), Handshake, false;
        "InvalidHeaderFormat" => "Handshake(InvalidHeader) BadFormat",
            InvalidHeader::bad_format("sec-websocket-extensions", "permessage-deflate;", 19)
                .into();
            None, Some(400), Handshake, false;
        "InvalidHeaderValue" => "Handshake(InvalidHeader) BadValue",
            InvalidHeader::bad_value("sec-websocket-accept", "AAAA", "does not match the key")
                .into();
            None, Some(400), Handshake, false;
        "InvalidHeaderValue" => "Handshake(UnsupportedVersion)",
            HandshakeError::UnsupportedVersion { version: Some("8".into()) }.into();
            None, Some(426), Handshake, false;
        "InvalidOrigin" => "Handshake(InvalidOrigin)",
            HandshakeError::InvalidOrigin { origin: Some("https://evil.example".into()) }.into();
            None, Some(403), Security, false;
        "InvalidUpgrade" => "Handshake(InvalidUpgrade)",
            HandshakeError::InvalidUpgrade { header: "upgrade", value: None }.into();
            None, Some(426), Handshake, false;
        "NegotiationError" => "Handshake(Negotiation(NoCommonSubprotocol))",
            NegotiationError::NoCommonSubprotocol.into();
            None, Some(400), Handshake, false;
        "NegotiationError" => "Handshake(Negotiation(UnofferedSubprotocol))",
            NegotiationError::UnofferedSubprotocol { protocol: "superchat".into() }.into();
            None, None, Handshake, false;
        "NegotiationError" => "Handshake(Negotiation(MissingExtension))",
            NegotiationError::MissingExtension { name: deflate() }.into();
            Some(1010), None, Handshake, false;
        "DuplicateParameter" => "Handshake(Negotiation(DuplicateParameter))",
            NegotiationError::DuplicateParameter {
                extension: deflate(),
                name: "server_no_context_takeover".into(),
            }
            .into();
            None, Some(400), Handshake, false;
        "InvalidParameterName" => "Handshake(Negotiation(InvalidParameterName))",
            NegotiationError::InvalidParameterName { extension: deflate(), name: "x".into() }
                .into();
            None, Some(400), Handshake, false;
        "InvalidParameterValue" => "Handshake(Negotiation(InvalidParameterValue))",
            NegotiationError::InvalidParameterValue {
                extension: deflate(),
                name: "server_max_window_bits".into(),
                value: Some("16".into()),
            }
            .into();
            None, Some(400), Handshake, false;
        "ProtocolError" => "Protocol(UnmaskedClientFrame)", peer_sends(&unmasked_text_frame())?;
            Some(1002), None, Protocol, false;
        "ProtocolError" => "Protocol(InvalidUtf8)",
            ProtocolError::InvalidUtf8 { position: 3 }.into();
            Some(1007), None, Protocol, false;
        "PayloadTooBig" => "PayloadTooBig (frame over 1 MiB)",
            peer_sends(&oversized_frame_header())?;
            Some(1009), None, Protocol, false;
        "InvalidState" => "InvalidState (core: send after close)", send_after_close()?;
            None, None, State, false;
        "ConcurrencyError" => "Concurrency (two tasks in recv)",
            ConcurrencyError { operation: Operation::Recv }.into();
            None, None, State, false;
    ])
}

fn legacy_rows() -> Result<Vec<Row>, BoxError> {
    Ok(rows![
        "InvalidStatusCode" as "InvalidStatus" => "Handshake(InvalidStatus) 403",
            refused(403, None)?;
            None, Some(403), Handshake, false;
        "AbortHandshake" => "Handshake(Rejected) (server: no route)",
            HandshakeError::Rejected { status: StatusCode::NOT_FOUND, reason: "no route".into() }
                .into();
            None, Some(404), Handshake, false;
        "WebSocketProtocolError" as "ProtocolError" => "Protocol(ReservedOpcode)",
            ProtocolError::ReservedOpcode { opcode: 3 }.into();
            Some(1002), None, Protocol, false;
    ])
}

/// What Python raises outside `websockets.exceptions`, and palisade's own policies.
fn not_websockets_rows() -> Vec<Row> {
    let refused = || io::Error::new(io::ErrorKind::ConnectionRefused, "connection refused");
    let rate_limited =
        PolicyViolation { kind: PolicyKind::RateLimited, code: CloseCode::POLICY_VIOLATION };
    rows![
        "OSError" => "Transport(Io)", TransportError::Io(refused()).into();
            None, None, Transport, true;
        "InvalidMessage from EOFError" => "Transport(UnexpectedEof)",
            TransportError::UnexpectedEof.into();
            None, None, Transport, true;
        "ssl.SSLCertVerificationError" => "Handshake(Security(Certificate))",
            SecurityError::Certificate { reason: "certificate has expired".into() }.into();
            None, None, Security, false;
        "ssl.SSLError" => "Transport(Tls)",
            TransportError::Tls { message: "handshake alert".into(), source: None }.into();
            None, None, Transport, false;
        "TimeoutError" => "Timeout(Response)", Error::timeout(TimeoutPhase::Response);
            None, None, Timeout, true;
        "ConnectionClosedError 1011" => "Timeout(Keepalive)",
            Error::timeout(TimeoutPhase::Keepalive);
            Some(1011), None, Timeout, true;
        "(no equivalent)" => "Policy(RateLimited)", rate_limited.into();
            Some(1008), None, Policy, false;
        "(no equivalent)" => "Timeout(Idle)", Error::timeout(TimeoutPhase::Idle);
            Some(1001), None, Timeout, true;
    ]
}

fn simple_websocket_rows() -> Result<Vec<Row>, BoxError> {
    let bad_101 = HandshakeError::InvalidUpgrade { header: "connection", value: None };
    Ok(rows![
        "ConnectionError(401)" as "InvalidStatus" => "Handshake(InvalidStatus) 401",
            refused(401, None)?;
            None, Some(401), Handshake, false;
        // simple-websocket lets wsproto's exception through for a malformed 101.
        "wsproto RemoteProtocolError" as "InvalidUpgrade" => "Handshake(InvalidUpgrade)",
            bad_101.into();
            None, Some(426), Handshake, false;
        "ConnectionClosed(1000, None)" as "ConnectionClosedOK" => "ConnectionClosedOk (1000)",
            closed(1000, 1000)?;
            None, None, Closed, false;
        "ConnectionClosed(1005, None)" as "ConnectionClosedError"
            => "ConnectionClosedError (1006, no frame)",
            Error::closed(ConnectionClosed::abnormal());
            None, None, Closed, true;
    ])
}

fn starlette_rows() -> Result<Vec<Row>, BoxError> {
    Ok(rows![
        "WebSocketDisconnect(1000)" as "ConnectionClosedOK" => "ConnectionClosedOk (1000)",
            closed(1000, 1000)?;
            None, None, Closed, false;
        "WebSocketDisconnect(1001)" as "ConnectionClosedOK" => "ConnectionClosedOk (1001)",
            going_away()?;
            None, None, Closed, true;
        "WebSocketDisconnect(4001, …)" as "ConnectionClosedError"
            => "ConnectionClosedError (4001)",
            session_expired()?;
            None, None, Closed, false;
        "WebSocketDisconnect(1006)" as "ConnectionClosedError"
            => "ConnectionClosedError (1006, no frame)",
            Error::closed(ConnectionClosed::abnormal());
            None, None, Closed, true;
    ])
}

fn row(
    python: &'static str,
    palisade: &'static str,
    error: Error,
    close: Option<u16>,
    status: Option<u16>,
    category: Category,
    retry: bool,
) -> Row {
    // What Python raises outside `websockets.exceptions` has no class for `python_class`.
    let known = WEBSOCKETS_17.contains(&python) || WEBSOCKETS_LEGACY.contains(&python);
    let arm = known.then_some(python);
    Row { python, arm, palisade, error, close, status, category, retry }
}

impl Row {
    /// Where palisade has no variant of the Python exception's own: the class `python_class`
    /// answers for the error palisade raises instead.
    fn caught_as(mut self, class: &'static str) -> Self {
        self.arm = Some(class);
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Building the errors.

/// Both close frames exchanged, the peer's first, with these codes.
fn closed(received: u16, sent: u16) -> Result<Error, CloseFrameError> {
    Ok(Error::closed(ConnectionClosed {
        received: Some(CloseFrame::from_code(CloseCode(received))?),
        sent: Some(CloseFrame::from_code(CloseCode(sent))?),
        received_then_sent: Some(true),
    }))
}

/// The server shut down: it sent 1001 and we answered.
fn going_away() -> Result<Error, CloseFrameError> {
    Ok(Error::closed(ConnectionClosed {
        received: Some(CloseFrame::new(CloseCode::GOING_AWAY, "server shutting down")?),
        sent: Some(CloseFrame::from_code(CloseCode::GOING_AWAY)?),
        received_then_sent: Some(true),
    }))
}

/// The client closed with an application code of its own.
fn session_expired() -> Result<Error, CloseFrameError> {
    let frame = CloseFrame::new(CloseCode(4001), "session expired")?;
    Ok(Error::closed(ConnectionClosed {
        received: Some(frame.clone()),
        sent: Some(frame),
        received_then_sent: Some(true),
    }))
}

/// The server answered the upgrade with `status` (and `Retry-After`, if given).
fn refused(status: u16, retry_after: Option<u64>) -> Result<Error, BoxError> {
    let mut headers = HeaderMap::new();
    if let Some(seconds) = retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    let body = br#"{"error":"go away"}"#;
    Ok(InvalidStatus::new(StatusCode::from_u16(status)?, &headers, body, 4096).into())
}

/// A text frame from a client without the mask RFC 6455 §5.1 requires.
fn unmasked_text_frame() -> Vec<u8> {
    let mut bytes = Vec::new();
    FrameHeader { fin: true, rsv: 0, opcode: OpCode::Text, mask: None, payload_len: 5 }
        .encode(&mut bytes);
    bytes.extend_from_slice(b"hello");
    bytes
}

/// The header alone of a masked 2 MiB frame: over the default 1 MiB frame limit.
fn oversized_frame_header() -> Vec<u8> {
    let mut bytes = Vec::new();
    let mask = Some([0x37, 0xfa, 0x21, 0x3d]);
    FrameHeader { fin: true, rsv: 0, opcode: OpCode::Binary, mask, payload_len: 2 << 20 }
        .encode(&mut bytes);
    bytes
}

/// The error a fresh server core reports when a client sends `bytes`.
fn peer_sends(bytes: &[u8]) -> Result<Error, BoxError> {
    let mut server = Connection::server(ProtocolConfig::default(), Instant::now());
    server.handle_bytes(bytes);
    match server.poll_event() {
        Some(Err(err)) => Ok(err),
        other => Err(format!("expected the connection to fail, got {other:?}").into()),
    }
}

/// The error the core returns for a message sent after our close frame.
fn send_after_close() -> Result<Error, BoxError> {
    let mut server = Connection::server(ProtocolConfig::default(), Instant::now());
    server.close(CloseFrame::normal())?;
    match server.send(&Message::text("too late")) {
        Err(err) => Ok(err),
        Ok(()) => Err("a send after close was accepted".into()),
    }
}

// ---------------------------------------------------------------------------------------------
// The walkthroughs.

// ANCHOR: protocol
/// A client sends an unmasked frame to palisade's sans-I/O server core.
fn peer_breaks_the_protocol() -> Result<(), BoxError> {
    let mut server = Connection::server(ProtocolConfig::default(), Instant::now());
    server.handle_bytes(&unmasked_text_frame());

    // The failure is reported once, as itself, and it names the close code it sent.
    let Some(Err(failure)) = server.poll_event() else { return Err("no failure".into()) };
    assert!(matches!(failure, Error::Protocol(ProtocolError::UnmaskedClientFrame)));
    assert_eq!(failure.close_code(), Some(CloseCode::PROTOCOL_ERROR));
    println!("  first:      {failure}");

    // From then on, the connection describes its end: we sent 1002, the peer sent nothing.
    let closed = server.closed_error();
    let Error::ConnectionClosedError(info) = &closed else { return Err("not closed".into()) };
    assert_eq!(info.sent.as_ref().map(CloseFrame::code), Some(CloseCode::PROTOCOL_ERROR));
    assert!(info.received.is_none() && info.received_then_sent.is_none());
    assert!(!closed.is_retryable());
    println!("  afterwards: {closed}");

    // In the core, sending now is a state error (Python: InvalidState, in its Sans-I/O layer).
    let Err(late) = server.send(&Message::text("too late")) else { return Err("sent".into()) };
    assert!(matches!(
        late,
        Error::InvalidState(InvalidState { operation: Operation::Send, state: State::Closed })
    ));
    println!("  send:       {late}");
    Ok(())
}
// ANCHOR_END: protocol

// ANCHOR: disconnect
/// Starlette's `WebSocketDisconnect(code, reason)`, or simple-websocket's
/// `ConnectionClosed(reason, message)`: the code and reason of a closed connection.
fn disconnect(err: &Error) -> Option<(u16, &str)> {
    let closed = err.connection_closed()?;
    Some((closed.code().as_u16(), closed.reason()))
}

/// simple-websocket's `ConnectionError(status_code)`: the status the server refused the
/// upgrade with. Not `status_to_send()`, which on a client also classifies failures where the
/// server answered 101.
fn refusal_status(err: &Error) -> Option<u16> {
    let Error::Handshake(handshake) = err else { return None };
    match &**handshake {
        HandshakeError::InvalidStatus(refusal) => Some(refusal.status().as_u16()),
        _ => None,
    }
}
// ANCHOR_END: disconnect

fn starlette_and_simple_websocket() -> Result<(), BoxError> {
    let cases = [
        ("server shut down", going_away()?, Some((1001, "server shutting down")), None),
        ("client closed with 4001", session_expired()?, Some((4001, "session expired")), None),
        ("TCP dropped", Error::closed(ConnectionClosed::abnormal()), Some((1006, "")), None),
        ("server refused with 401", refused(401, None)?, None, Some(401)),
        // The server answered 101, with a wrong header: no refusal status, although
        // status_to_send() classifies the error as 426.
        (
            "101 without Connection: Upgrade",
            HandshakeError::InvalidUpgrade { header: "connection", value: None }.into(),
            None,
            None,
        ),
    ];
    for (what, err, code_reason, status) in cases {
        assert_eq!(disconnect(&err), code_reason, "{what}");
        assert_eq!(refusal_status(&err), status, "{what}");
        match (disconnect(&err), refusal_status(&err)) {
            (Some((code, reason)), _) => {
                println!("  {what}: WebSocketDisconnect(code={code}, reason={reason:?})");
            }
            (None, Some(status)) => println!("  {what}: ConnectionError(status_code={status})"),
            (None, None) => println!(
                "  {what}: no refusal status, yet status_to_send() = {:?}",
                err.status_to_send().map(|s| s.as_u16())
            ),
        }
    }
    Ok(())
}
