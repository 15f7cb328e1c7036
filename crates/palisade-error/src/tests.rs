//! One test per row of the classification tables on [`Error`].

use http::{HeaderMap, StatusCode};

use super::*;

fn closed(received: Option<u16>, sent: Option<u16>) -> Error {
    let frame = |c: u16| {
        if c == 1005 { CloseFrame::no_status() } else { CloseFrame::new(CloseCode(c), "").unwrap() }
    };
    Error::closed(ConnectionClosed {
        received: received.map(frame),
        sent: sent.map(frame),
        received_then_sent: (received.is_some() && sent.is_some()).then_some(true),
    })
}

fn status(code: u16) -> Error {
    InvalidStatus::new(StatusCode::from_u16(code).unwrap(), &HeaderMap::new(), b"", 0).into()
}

fn rejected(code: u16) -> Error {
    HandshakeError::Rejected { status: StatusCode::from_u16(code).unwrap(), reason: "x".into() }
        .into()
}

fn proxy_status(status: u16) -> Error {
    ProxyError::InvalidProxyStatus { status, reason: "x".into() }.into()
}

fn too_big(what: SizeLimit) -> Error {
    PayloadTooBig { size: Some(10), max: 5, what }.into()
}

fn policy(kind: PolicyKind, code: CloseCode) -> Error {
    PolicyViolation { kind, code }.into()
}

fn timeout(phase: TimeoutPhase) -> Error {
    Error::timeout(phase)
}

fn neg(e: NegotiationError) -> Error {
    e.into()
}

fn sec(e: SecurityError) -> Error {
    e.into()
}

fn ext(name: &str) -> String {
    name.to_owned()
}

/// `name: error => close code, HTTP status, category, retryable;`
macro_rules! table {
    ($($name:ident: $err:expr => $close:expr, $status:expr, $cat:ident, $retry:expr;)*) => {
        $(
            #[test]
            fn $name() {
                let e: Error = $err;
                assert_eq!(e.close_code().map(CloseCode::as_u16), $close, "close_code of {e:?}");
                assert_eq!(e.status_to_send().map(|s| s.as_u16()), $status, "status_to_send of {e:?}");
                assert_eq!(e.category(), Category::$cat, "category of {e:?}");
                assert_eq!(e.is_retryable(), $retry, "is_retryable of {e:?}");
                assert!(!e.to_string().is_empty());
            }
        )*
    };
}

table! {
    closed_normal_1000: closed(Some(1000), Some(1000)) => None, None, Closed, false;
    closed_going_away_1001: closed(Some(1001), Some(1001)) => None, None, Closed, true;
    closed_no_status_1005: closed(Some(1005), Some(1000)) => None, None, Closed, false;
    closed_abnormal_1006: Error::closed(ConnectionClosed::abnormal()) => None, None, Closed, true;
    closed_protocol_1002: closed(Some(1002), Some(1002)) => None, None, Closed, false;
    closed_policy_1008: closed(Some(1008), Some(1008)) => None, None, Closed, false;
    closed_internal_1011: closed(Some(1011), Some(1011)) => None, None, Closed, true;
    closed_restart_1012: closed(Some(1012), None) => None, None, Closed, true;
    closed_try_later_1013: closed(Some(1013), None) => None, None, Closed, true;
    closed_bad_gateway_1014: closed(Some(1014), None) => None, None, Closed, true;
    closed_sent_only: closed(None, Some(1000)) => None, None, Closed, false;
    closed_unauthorized_3000: closed(Some(3000), Some(3000)) => None, None, Closed, false;

    message_malformed: InvalidMessage::Malformed { reason: "x" }.into() => None, Some(400), Handshake, false;
    message_incomplete: InvalidMessage::Incomplete.into() => None, Some(400), Handshake, false;
    message_unexpected: InvalidMessage::Unexpected { reason: "x" }.into() => None, Some(400), Handshake, false;
    message_method: InvalidMessage::MethodNotAllowed { method: "POST".into() }.into() => None, Some(405), Handshake, false;
    message_http10: InvalidMessage::UnsupportedHttpVersion { minor: 0 }.into() => None, Some(505), Handshake, false;

    status_302: status(302) => None, None, Handshake, false;
    status_400: status(400) => None, None, Handshake, false;
    status_401: status(401) => None, None, Handshake, false;
    status_403: status(403) => None, None, Handshake, false;
    status_404: status(404) => None, None, Handshake, false;
    status_408: status(408) => None, None, Handshake, true;
    status_429: status(429) => None, None, Handshake, true;
    status_500: status(500) => None, None, Handshake, true;
    status_503: status(503) => None, None, Handshake, true;

    header_missing: InvalidHeader::missing("host").into() => None, Some(400), Handshake, false;
    header_bad_format: InvalidHeader::bad_format("connection", "up grade", 2).into() => None, Some(400), Handshake, false;
    header_bad_value: InvalidHeader::bad_value("sec-websocket-key", "abc", "not 16 bytes").into() => None, Some(400), Handshake, false;
    header_duplicate: InvalidHeader::duplicate("sec-websocket-key").into() => None, Some(400), Handshake, false;
    upgrade_invalid: HandshakeError::InvalidUpgrade { header: "upgrade", value: None }.into() => None, Some(426), Handshake, false;
    version_unsupported: HandshakeError::UnsupportedVersion { version: Some("8".into()) }.into() => None, Some(426), Handshake, false;
    origin_invalid: HandshakeError::InvalidOrigin { origin: Some("https://evil.example".into()) }.into() => None, Some(403), Security, false;

    negotiation_no_subprotocol: neg(NegotiationError::NoCommonSubprotocol) => None, Some(400), Handshake, false;
    negotiation_unoffered_subprotocol: neg(NegotiationError::UnofferedSubprotocol { protocol: ext("chat") }) => None, None, Handshake, false;
    negotiation_unoffered_extension: neg(NegotiationError::UnofferedExtension { name: ext("x-foo") }) => None, None, Handshake, false;
    negotiation_missing_extension: neg(NegotiationError::MissingExtension { name: ext("permessage-deflate") }) => Some(1010), None, Handshake, false;
    negotiation_duplicate_parameter: neg(NegotiationError::DuplicateParameter { extension: ext("permessage-deflate"), name: ext("server_no_context_takeover") }) => None, Some(400), Handshake, false;
    negotiation_invalid_parameter_name: neg(NegotiationError::InvalidParameterName { extension: ext("permessage-deflate"), name: ext("x") }) => None, Some(400), Handshake, false;
    negotiation_invalid_parameter_value: neg(NegotiationError::InvalidParameterValue { extension: ext("permessage-deflate"), name: ext("server_max_window_bits"), value: Some(ext("7")) }) => None, Some(400), Handshake, false;

    security_request_line: sec(SecurityError::RequestLineTooLong { len: 9000, max: 8192 }) => None, Some(414), Security, false;
    security_header_line: sec(SecurityError::HeaderLineTooLong { len: 9000, max: 8192 }) => None, Some(431), Security, false;
    security_header_count: sec(SecurityError::TooManyHeaders { max: 64 }) => None, Some(431), Security, false;
    security_head_size: sec(SecurityError::HeadTooLarge { len: 20000, max: 16384 }) => None, Some(431), Security, false;
    security_insecure_redirect: sec(SecurityError::InsecureRedirect) => None, None, Security, false;
    security_certificate: sec(SecurityError::Certificate { reason: "expired".into() }) => None, None, Security, false;

    rejected_401: rejected(401) => None, Some(401), Handshake, false;
    rejected_404: rejected(404) => None, Some(404), Handshake, false;
    rejected_429: rejected(429) => None, Some(429), Handshake, true;
    rejected_503: rejected(503) => None, Some(503), Handshake, true;
    too_many_redirects: HandshakeError::TooManyRedirects { max: 5 }.into() => None, None, Handshake, false;

    uri_syntax: InvalidUri::new("::", UriProblem::Syntax).into() => None, None, Uri, false;
    uri_scheme: InvalidUri::new("http://x", UriProblem::Scheme).into() => None, None, Uri, false;
    uri_host: InvalidUri::new("ws://", UriProblem::Host).into() => None, None, Uri, false;
    uri_fragment: InvalidUri::new("ws://x/#f", UriProblem::Fragment).into() => None, None, Uri, false;
    uri_port: InvalidUri::new("ws://x:0", UriProblem::Port).into() => None, None, Uri, false;

    proxy_invalid: ProxyError::invalid_proxy("ftp://p", "unsupported scheme").into() => None, None, Proxy, false;
    proxy_invalid_message: ProxyError::InvalidProxyMessage { reason: "not HTTP" }.into() => None, None, Proxy, false;
    proxy_status_407: proxy_status(407) => None, None, Proxy, false;
    proxy_status_429: proxy_status(429) => None, None, Proxy, true;
    proxy_status_502: proxy_status(502) => None, None, Proxy, true;

    protocol_unmasked_client: ProtocolError::UnmaskedClientFrame.into() => Some(1002), None, Protocol, false;
    protocol_masked_server: ProtocolError::MaskedServerFrame.into() => Some(1002), None, Protocol, false;
    protocol_reserved_bits: ProtocolError::ReservedBits { bits: 0b010 }.into() => Some(1002), None, Protocol, false;
    protocol_reserved_opcode: ProtocolError::ReservedOpcode { opcode: 3 }.into() => Some(1002), None, Protocol, false;
    protocol_fragmented_control: ProtocolError::FragmentedControlFrame.into() => Some(1002), None, Protocol, false;
    protocol_control_too_long: ProtocolError::ControlFrameTooLong { len: 126 }.into() => Some(1002), None, Protocol, false;
    protocol_payload_length: ProtocolError::InvalidPayloadLength.into() => Some(1002), None, Protocol, false;
    protocol_unexpected_continuation: ProtocolError::UnexpectedContinuation.into() => Some(1002), None, Protocol, false;
    protocol_missing_continuation: ProtocolError::MissingContinuation.into() => Some(1002), None, Protocol, false;
    protocol_invalid_utf8: ProtocolError::InvalidUtf8 { position: 3 }.into() => Some(1007), None, Protocol, false;
    protocol_invalid_close_reason: ProtocolError::InvalidCloseReason.into() => Some(1007), None, Protocol, false;
    protocol_invalid_close_code: ProtocolError::InvalidCloseCode { code: 1005 }.into() => Some(1002), None, Protocol, false;
    protocol_invalid_close_payload: ProtocolError::InvalidClosePayload.into() => Some(1002), None, Protocol, false;
    protocol_invalid_compressed: ProtocolError::InvalidCompressedData.into() => Some(1002), None, Protocol, false;
    protocol_unexpected_rsv1: ProtocolError::UnexpectedCompressionBit.into() => Some(1002), None, Protocol, false;
    payload_too_big_frame: too_big(SizeLimit::Frame) => Some(1009), None, Protocol, false;
    payload_too_big_message: too_big(SizeLimit::Message) => Some(1009), None, Protocol, false;

    policy_rate_limited: policy(PolicyKind::RateLimited, CloseCode::POLICY_VIOLATION) => Some(1008), None, Policy, false;
    policy_rate_limited_try_later: policy(PolicyKind::RateLimited, CloseCode::TRY_AGAIN_LATER) => Some(1013), None, Policy, true;
    policy_slow_consumer: policy(PolicyKind::SlowConsumer, CloseCode::POLICY_VIOLATION) => Some(1008), None, Policy, false;
    policy_unauthorized: policy(PolicyKind::Unauthorized, CloseCode::UNAUTHORIZED) => Some(3000), None, Policy, false;
    policy_unsupported_data: policy(PolicyKind::UnsupportedData, CloseCode::UNSUPPORTED_DATA) => Some(1003), None, Policy, false;

    invalid_state: InvalidState { operation: Operation::Send, state: State::Closed }.into() => None, None, State, false;
    concurrency: ConcurrencyError { operation: Operation::Recv }.into() => None, None, State, false;

    transport_io: Error::io(std::io::Error::from(std::io::ErrorKind::ConnectionReset)) => None, None, Transport, true;
    transport_eof: Error::io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)) => None, None, Transport, true;
    transport_tls_from_io: Error::io(std::io::Error::new(std::io::ErrorKind::InvalidData, "received fatal alert: BadRecordMac")) => None, None, Transport, false;
    transport_tls: TransportError::Tls { message: "bad record mac".into(), source: None }.into() => None, None, Transport, false;

    timeout_connect: timeout(TimeoutPhase::Connect) => None, None, Timeout, true;
    timeout_tls: timeout(TimeoutPhase::Tls) => None, None, Timeout, true;
    timeout_response: timeout(TimeoutPhase::Response) => None, None, Timeout, true;
    timeout_handshake: timeout(TimeoutPhase::Handshake) => None, Some(408), Timeout, true;
    timeout_close: timeout(TimeoutPhase::Close) => None, None, Timeout, true;
    timeout_keepalive: timeout(TimeoutPhase::Keepalive) => Some(1011), None, Timeout, true;
    timeout_idle: timeout(TimeoutPhase::Idle) => Some(1001), None, Timeout, true;
    timeout_first_message: timeout(TimeoutPhase::FirstMessage) => Some(1008), None, Timeout, true;

    application_undecodable: ApplicationError::UndecodablePayload { format: "JSON", detail: "expected value at line 1 column 1".into() }.into() => Some(1007), None, Application, false;
    application_unsupported: ApplicationError::UnsupportedData { detail: "binary message".into() }.into() => Some(1003), None, Application, false;
    application_policy: ApplicationError::PolicyViolation { detail: "not a member".into() }.into() => Some(1008), None, Application, false;
    application_unencodable: ApplicationError::Unencodable { format: "JSON", detail: "key must be a string".into() }.into() => Some(1011), None, Application, false;
    application_closed_4000: ApplicationError::closed(CloseCode(4000), "bye").unwrap().into() => Some(4000), None, Application, false;
    application_closed_4999: ApplicationError::closed(CloseCode(4999), "bye").unwrap().into() => Some(4999), None, Application, false;
}

#[test]
fn application_codes_are_4000_to_4999_only() {
    for code in [1000, 1008, 3000, 3999, 5000] {
        assert!(ApplicationError::closed(CloseCode(code), "x").is_none(), "{code}");
    }
    let long = "é".repeat(100);
    let Some(ApplicationError::Closed { frame }) = ApplicationError::closed(CloseCode(4321), &long)
    else {
        panic!("4321 is an application code")
    };
    assert!(frame.reason().len() <= MAX_REASON_LEN && frame.code() == CloseCode(4321));
}

#[test]
fn lossy_frames_never_carry_an_unsendable_code() {
    assert_eq!(CloseFrame::lossy(CloseCode::NO_STATUS, "x"), CloseFrame::no_status());
    for code in [0, 999, 1004, 1006, 1015, 2999, 5000] {
        let frame = CloseFrame::lossy(CloseCode(code), "why");
        assert_eq!((frame.code(), frame.reason()), (CloseCode::INTERNAL_ERROR, "why"), "{code}");
    }
    let frame = CloseFrame::lossy(CloseCode(4001), &"a".repeat(200));
    assert_eq!((frame.code(), frame.reason().len()), (CloseCode(4001), MAX_REASON_LEN));
}

#[test]
fn generic_reasons_name_the_code_and_nothing_else() {
    for (code, reason) in [
        (CloseCode::PROTOCOL_ERROR, "protocol error"),
        (CloseCode::UNSUPPORTED_DATA, "unsupported data"),
        (CloseCode::INVALID_PAYLOAD, "invalid payload data"),
        (CloseCode::MESSAGE_TOO_BIG, "message too big"),
        (CloseCode::POLICY_VIOLATION, "policy violation"),
        (CloseCode::INTERNAL_ERROR, "internal error"),
        (CloseCode::GOING_AWAY, "going away"),
        (CloseCode::TRY_AGAIN_LATER, "try again later"),
        (CloseCode::MANDATORY_EXTENSION, "extension required"),
        (CloseCode::NORMAL, ""),
        (CloseCode(4000), ""),
    ] {
        assert_eq!(code.generic_reason(), reason, "{code}");
    }
}

#[test]
fn error_is_send_sync_static_and_small() {
    fn assert_traits<T: Send + Sync + 'static + std::error::Error>() {}
    assert_traits::<Error>();
    assert!(std::mem::size_of::<Error>() <= 3 * std::mem::size_of::<usize>());
}

#[test]
fn closed_ok_requires_a_complete_normal_handshake() {
    assert!(closed(Some(1000), Some(1000)).is_closed_ok());
    assert!(closed(Some(1001), Some(1000)).is_closed_ok());
    assert!(!closed(Some(1000), None).is_closed_ok(), "handshake incomplete");
    assert!(!closed(Some(1011), Some(1011)).is_closed_ok());
    let e = closed(Some(1001), Some(1001));
    let c = e.connection_closed().unwrap();
    assert_eq!(c.code(), CloseCode::GOING_AWAY);
    assert_eq!(c.reason(), "");
    assert_eq!(
        Error::closed(ConnectionClosed::abnormal()).to_string(),
        "connection closed with an error: no close frame received or sent"
    );
}

#[test]
fn source_chains_reach_the_leaf() {
    use std::error::Error as _;
    let e = Error::io(std::io::Error::other("boom"));
    let transport = e.source().expect("transport error is the source");
    assert!(transport.source().expect("io error is its source").to_string().contains("boom"));
    let e: Error = InvalidMessage::Incomplete.into();
    assert!(e.source().is_some());
}

#[test]
fn display_never_leaks_credentials() {
    let secret = "s3cr3t-t0k3n";
    let errors: Vec<Error> = vec![
        InvalidHeader::bad_value("authorization", &format!("Bearer {secret}"), "scheme").into(),
        InvalidHeader::bad_format("cookie", &format!("sid={secret}"), 0).into(),
        InvalidHeader::bad_value("sec-websocket-protocol", secret, "unknown").into(),
        InvalidUri::new(&format!("wss://u:{secret}@h/p"), UriProblem::Port).into(),
        InvalidUri::new(&format!("wss://h/p?token={secret}"), UriProblem::Fragment).into(),
        ProxyError::invalid_proxy(&format!("http://u:{secret}@proxy:3128"), "x").into(),
        {
            let mut h = HeaderMap::new();
            h.insert("set-cookie", format!("sid={secret}").parse().unwrap());
            InvalidStatus::new(StatusCode::UNAUTHORIZED, &h, secret.as_bytes(), 1024).into()
        },
    ];
    for e in errors {
        assert!(!e.to_string().contains(secret), "Display leaks: {e}");
        assert!(!format!("{e:?}").contains(secret), "Debug leaks: {e:?}");
    }
}

#[test]
fn category_names_are_stable() {
    let all = [
        (Category::Closed, "closed"),
        (Category::Handshake, "handshake"),
        (Category::Security, "security"),
        (Category::Protocol, "protocol"),
        (Category::Policy, "policy"),
        (Category::Proxy, "proxy"),
        (Category::Uri, "uri"),
        (Category::Transport, "transport"),
        (Category::Timeout, "timeout"),
        (Category::State, "state"),
        (Category::Application, "application"),
    ];
    for (c, n) in all {
        assert_eq!(c.name(), n);
        assert_eq!(c.to_string(), n);
    }
}

/// A server's refusal is the one error with a status received, and it owes none.
#[test]
fn a_refusal_has_a_received_status_and_none_to_send() {
    for code in [400, 401, 403, 404, 408, 429, 500, 503] {
        let e = status(code);
        assert_eq!(e.received_status().map(|s| s.as_u16()), Some(code));
        assert_eq!(e.status_to_send(), None);
    }
    // A 101 that failed its checks: the server said 101; a server would owe 400 for such a
    // request, which is not what the server sent.
    let bad_accept: Error = InvalidHeader::missing("sec-websocket-accept").into();
    assert_eq!(bad_accept.received_status(), None);
    assert_eq!(bad_accept.status_to_send(), Some(StatusCode::BAD_REQUEST));
}
