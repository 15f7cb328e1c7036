//! Reading the head of an HTTP/1.1 message (start line and header fields) under limits, in
//! time linear in its size, then parsing it once.
//!
//! The head is read before anything is parsed so that a peer can never make this side buffer,
//! or scan, more than the limits allow: every limit is checked as the bytes arrive, and each
//! byte is examined once however the input is split (tungstenite's CVE-2023-43669 was a head
//! reader that rescanned the whole buffer on every read).

use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, Version,
};
use palisade_error::{Error, InvalidMessage, SecurityError};

/// Limits on the head of a handshake request (server side) or response (client side).
///
/// Lengths exclude the line's terminating CR LF. Each limit, when crossed, fails the handshake
/// with a [`SecurityError`]; on a server it maps to the status given below
/// ([`Error::status_to_send`]).
///
/// ```
/// use palisade_proto::handshake::HeadLimits;
///
/// let limits = HeadLimits::default().with_max_headers(32).with_max_head(8 * 1024);
/// assert_eq!(limits.max_headers, 32);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeadLimits {
    /// The longest request line (method, target, version) or status line, in bytes. Default
    /// 8 KiB. Crossing it raises [`SecurityError::RequestLineTooLong`] (414).
    pub max_start_line: usize,
    /// The longest header line (name, colon, value), in bytes. Default 8 KiB. Crossing it raises
    /// [`SecurityError::HeaderLineTooLong`] (431).
    pub max_header_line: usize,
    /// The most header lines. Default 64. Crossing it raises [`SecurityError::TooManyHeaders`]
    /// (431).
    pub max_headers: usize,
    /// The largest head, start line to the empty line included, in bytes. Default 16 KiB.
    /// Crossing it raises [`SecurityError::HeadTooLarge`] (431).
    pub max_head: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        Self {
            max_start_line: 8 * 1024,
            max_header_line: 8 * 1024,
            max_headers: 64,
            max_head: 16 * 1024,
        }
    }
}

impl HeadLimits {
    /// Sets [`HeadLimits::max_start_line`].
    pub fn with_max_start_line(mut self, bytes: usize) -> Self {
        self.max_start_line = bytes;
        self
    }

    /// Sets [`HeadLimits::max_header_line`].
    pub fn with_max_header_line(mut self, bytes: usize) -> Self {
        self.max_header_line = bytes;
        self
    }

    /// Sets [`HeadLimits::max_headers`].
    pub fn with_max_headers(mut self, count: usize) -> Self {
        self.max_headers = count;
        self
    }

    /// Sets [`HeadLimits::max_head`].
    pub fn with_max_head(mut self, bytes: usize) -> Self {
        self.max_head = bytes;
        self
    }
}

/// Finds the end of an HTTP head in a growing buffer, enforcing [`HeadLimits`] as it goes.
///
/// Call [`HeadReader::feed`] with the *whole* buffer accumulated so far each time more bytes
/// arrive. The reader remembers how far it has scanned and examines only the new bytes, so
/// reading a head costs time linear in its size however it is split.
///
/// Lines end with LF, optionally preceded by CR (RFC 7230 §3.5 lets a recipient accept a bare
/// LF; `httparse` does too). The head ends with the first empty line.
///
/// Once it has returned a head length or an error, the reader keeps returning it.
#[derive(Clone, Debug)]
pub struct HeadReader {
    limits: HeadLimits,
    /// How many bytes of the buffer have been examined.
    scanned: usize,
    /// Where the line being read starts.
    line_start: usize,
    /// Whether that line is the start line.
    in_start_line: bool,
    /// Header lines completed so far.
    headers: usize,
    state: ReadState,
    /// Bytes examined over the reader's life, to prove linearity in tests.
    #[cfg(test)]
    examined: usize,
}

#[derive(Clone, Debug)]
enum ReadState {
    Reading,
    Done(usize),
    Failed(Failure),
}

/// The errors a head reader can raise; kept so that they can be returned again.
#[derive(Clone, Debug)]
enum Failure {
    Security(SecurityError),
    Message(InvalidMessage),
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        match f {
            Failure::Security(e) => e.into(),
            Failure::Message(e) => e.into(),
        }
    }
}

impl HeadReader {
    /// A reader enforcing `limits`.
    pub fn new(limits: HeadLimits) -> Self {
        Self {
            limits,
            scanned: 0,
            line_start: 0,
            in_start_line: true,
            headers: 0,
            state: ReadState::Reading,
            #[cfg(test)]
            examined: 0,
        }
    }

    /// The limits this reader enforces.
    pub fn limits(&self) -> &HeadLimits {
        &self.limits
    }

    /// How many bytes of the buffer have been examined so far. Never decreases.
    pub fn scanned(&self) -> usize {
        self.scanned
    }

    /// Examines the bytes of `buf` not examined yet.
    ///
    /// `buf` is everything received so far: each call's buffer must start with the previous
    /// call's. Returns `Ok(Some(head_len))` once the head is complete — `buf[..head_len]` is the
    /// head, and any bytes after it belong to what follows (WebSocket frames) — or `Ok(None)`
    /// when more bytes are needed.
    ///
    /// # Errors
    ///
    /// - [`SecurityError::RequestLineTooLong`] (414): the start line is longer than
    ///   [`HeadLimits::max_start_line`].
    /// - [`SecurityError::HeaderLineTooLong`] (431): a header line is longer than
    ///   [`HeadLimits::max_header_line`].
    /// - [`SecurityError::TooManyHeaders`] (431): more than [`HeadLimits::max_headers`] header
    ///   lines.
    /// - [`SecurityError::HeadTooLarge`] (431): more than [`HeadLimits::max_head`] bytes without
    ///   the end of the head.
    /// - [`InvalidMessage::Malformed`] (400): the message starts with an empty line.
    ///
    /// In the errors, `len` is the length at which the limit was found crossed (the limit plus
    /// one), whatever the pieces the input arrived in.
    ///
    /// # Panics
    ///
    /// If `buf` is shorter than the part already examined: the caller must pass the
    /// accumulated buffer, not only the new bytes. This is a bug in the caller, never caused
    /// by peer input.
    pub fn feed(&mut self, buf: &[u8]) -> Result<Option<usize>, Error> {
        match &self.state {
            ReadState::Done(len) => return Ok(Some(*len)),
            ReadState::Failed(f) => return Err(f.clone().into()),
            ReadState::Reading => {}
        }
        assert!(
            buf.len() >= self.scanned,
            "HeadReader::feed takes the whole accumulated buffer, which cannot shrink"
        );
        match self.scan(buf) {
            Ok(found) => {
                if let Some(len) = found {
                    self.state = ReadState::Done(len);
                }
                Ok(found)
            }
            Err(f) => {
                self.state = ReadState::Failed(f.clone());
                Err(f.into())
            }
        }
    }

    /// Header lines counted so far (all of them once the head is complete).
    fn header_count(&self) -> usize {
        self.headers
    }

    fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, Failure> {
        loop {
            let max_line = if self.in_start_line {
                self.limits.max_start_line
            } else {
                self.limits.max_header_line
            };
            // Look no further than a line can legally extend (its content, CR, LF) and than
            // the head can extend: past either bound the verdict is already known.
            let line_cap = self.line_start.saturating_add(max_line).saturating_add(2);
            let end = buf.len().min(line_cap).min(self.limits.max_head);
            let window = buf.get(self.scanned..end).unwrap_or_default();
            match window.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    #[cfg(test)]
                    {
                        self.examined += i + 1;
                    }
                    let lf = self.scanned + i;
                    self.scanned = lf + 1;
                    let content_end =
                        if lf > self.line_start && buf[lf - 1] == b'\r' { lf - 1 } else { lf };
                    let len = content_end - self.line_start;
                    self.line_start = lf + 1;
                    if len > max_line {
                        return Err(self.line_too_long(max_line));
                    }
                    if len == 0 {
                        if self.in_start_line {
                            // RFC 7230 §3.5 tolerates empty lines before a request that
                            // follows another on the same connection; a handshake is the
                            // first message, so one here is not HTTP we expect.
                            return Err(Failure::Message(InvalidMessage::Malformed {
                                reason: "empty line before the start line",
                            }));
                        }
                        return Ok(Some(lf + 1));
                    }
                    if self.in_start_line {
                        self.in_start_line = false;
                    } else {
                        self.headers += 1;
                        if self.headers > self.limits.max_headers {
                            return Err(Failure::Security(SecurityError::TooManyHeaders {
                                max: self.limits.max_headers,
                            }));
                        }
                    }
                }
                None => {
                    #[cfg(test)]
                    {
                        self.examined += window.len();
                    }
                    self.scanned = end;
                    let seen = end - self.line_start;
                    // A trailing CR may be the first half of the line's CR LF.
                    let content = if seen > 0 && buf[end - 1] == b'\r' { seen - 1 } else { seen };
                    if content > max_line {
                        return Err(self.line_too_long(max_line));
                    }
                    if end == self.limits.max_head && buf.len() > end {
                        return Err(Failure::Security(SecurityError::HeadTooLarge {
                            len: end + 1,
                            max: self.limits.max_head,
                        }));
                    }
                    return Ok(None);
                }
            }
        }
    }

    /// The error for a line found longer than `max`. Its `len` is where the limit was found
    /// crossed (`max + 1`), so that the error does not depend on how the input was split.
    fn line_too_long(&self, max: usize) -> Failure {
        let len = max.saturating_add(1);
        Failure::Security(if self.in_start_line {
            SecurityError::RequestLineTooLong { len, max }
        } else {
            SecurityError::HeaderLineTooLong { len, max }
        })
    }
}

/// Reads the head at the start of `buf` under `limits` and parses it as a request.
///
/// Bytes after the head are ignored. The method and version are not judged here (that is
/// [`crate::handshake::UpgradeRequest::from_request`]'s job), so that the caller can answer
/// 405 or 505 precisely.
///
/// # Errors
///
/// The [`HeadReader::feed`] errors; [`InvalidMessage::Incomplete`] (400) if `buf` holds no
/// complete head; [`InvalidMessage::Malformed`] (400) if the head is not HTTP/1.x.
pub fn parse_request(buf: &[u8], limits: &HeadLimits) -> Result<Request<()>, Error> {
    let (head, count) = complete_head(buf, limits)?;
    let mut slots = vec![httparse::EMPTY_HEADER; count];
    let mut parsed = httparse::Request::new(&mut slots);
    check_complete(parsed.parse(head), limits)?;

    let method = parsed.method.unwrap_or_default();
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| malformed("invalid method"))?;
    let target = parsed.path.unwrap_or_default();
    // RFC 6455 §4.1 and RFC 7230 §5.3: a WebSocket request target is origin-form
    // ("/path?query") or absolute-form; authority-form and "*" name no resource.
    let uri = Uri::try_from(target).map_err(|_| malformed("invalid request target"))?;
    if !(target.starts_with('/') || (uri.scheme().is_some() && uri.authority().is_some())) {
        return Err(malformed("request target is not origin-form or absolute-form"));
    }
    let version = http_version(parsed.version)?;
    let headers = header_map(parsed.headers)?;

    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(request)
}

/// Reads the head at the start of `buf` under `limits` and parses it as a response.
///
/// Bytes after the head are ignored: after a 101 they are WebSocket frames, after another
/// status they are the start of the body. The status and version are not judged here (that
/// is [`crate::handshake::ClientHandshake::validate`]'s job).
///
/// # Errors
///
/// As [`parse_request`].
pub fn parse_response(buf: &[u8], limits: &HeadLimits) -> Result<Response<()>, Error> {
    let (head, count) = complete_head(buf, limits)?;
    let mut slots = vec![httparse::EMPTY_HEADER; count];
    let mut parsed = httparse::Response::new(&mut slots);
    check_complete(parsed.parse(head), limits)?;

    let status = StatusCode::from_u16(parsed.code.unwrap_or_default())
        .map_err(|_| malformed("invalid status code"))?;
    let version = http_version(parsed.version)?;
    let headers = header_map(parsed.headers)?;

    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(response)
}

/// The complete head at the start of `buf`, checked against `limits`, and its header count.
fn complete_head<'a>(buf: &'a [u8], limits: &HeadLimits) -> Result<(&'a [u8], usize), Error> {
    let mut reader = HeadReader::new(*limits);
    match reader.feed(buf)? {
        Some(len) => Ok((&buf[..len], reader.header_count())),
        None => Err(InvalidMessage::Incomplete.into()),
    }
}

fn check_complete(
    result: Result<httparse::Status<usize>, httparse::Error>,
    limits: &HeadLimits,
) -> Result<(), Error> {
    match result {
        Ok(httparse::Status::Complete(_)) => Ok(()),
        // The head reader found the empty line, so the parser disagreeing is a malformed head
        // (a line it cannot split, for instance).
        Ok(httparse::Status::Partial) => Err(malformed("the head does not parse as HTTP/1.1")),
        Err(httparse::Error::TooManyHeaders) => {
            Err(SecurityError::TooManyHeaders { max: limits.max_headers }.into())
        }
        Err(e) => Err(malformed(match e {
            httparse::Error::HeaderName => "invalid header name",
            httparse::Error::HeaderValue => "invalid header value",
            httparse::Error::NewLine => "invalid line ending",
            httparse::Error::Status => "invalid status",
            httparse::Error::Token => "invalid token in the start line",
            httparse::Error::Version => "invalid HTTP version",
            httparse::Error::TooManyHeaders => "too many headers",
        })),
    }
}

fn http_version(minor: Option<u8>) -> Result<Version, Error> {
    match minor {
        Some(0) => Ok(Version::HTTP_10),
        Some(1) => Ok(Version::HTTP_11),
        _ => Err(malformed("invalid HTTP version")),
    }
}

fn header_map(parsed: &[httparse::Header<'_>]) -> Result<HeaderMap, Error> {
    let mut headers = HeaderMap::with_capacity(parsed.len());
    for header in parsed {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| malformed("invalid header name"))?;
        let value =
            HeaderValue::from_bytes(header.value).map_err(|_| malformed("invalid header value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

fn malformed(reason: &'static str) -> Error {
    InvalidMessage::Malformed { reason }.into()
}

#[cfg(test)]
mod tests {
    use palisade_error::HandshakeError;
    use proptest::prelude::*;

    use super::*;

    const REQUEST: &[u8] =
        b"GET /chat?room=1 HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\r\n";

    fn security(err: Error) -> SecurityError {
        match err {
            Error::Handshake(h) => match *h {
                HandshakeError::Security(s) => s,
                other => panic!("not a security error: {other:?}"),
            },
            other => panic!("not a handshake error: {other:?}"),
        }
    }

    fn message(err: Error) -> InvalidMessage {
        match err {
            Error::Handshake(h) => match *h {
                HandshakeError::InvalidMessage(m) => m,
                other => panic!("not an invalid message: {other:?}"),
            },
            other => panic!("not a handshake error: {other:?}"),
        }
    }

    fn read_whole(buf: &[u8], limits: HeadLimits) -> Result<Option<usize>, Error> {
        HeadReader::new(limits).feed(buf)
    }

    /// A head with a start line of `start` bytes and header lines of the given lengths.
    fn head(start: usize, header_lines: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let prefix = b"GET /";
        let suffix = b" HTTP/1.1";
        assert!(start >= prefix.len() + suffix.len());
        out.extend_from_slice(prefix);
        out.resize(start - suffix.len(), b'a');
        out.extend_from_slice(suffix);
        out.extend_from_slice(b"\r\n");
        for (i, &len) in header_lines.iter().enumerate() {
            let name = format!("x-h{i}: ");
            assert!(len >= name.len());
            out.extend_from_slice(name.as_bytes());
            out.resize(out.len() + len - name.len(), b'v');
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    #[test]
    fn defaults_match_the_documentation() {
        let l = HeadLimits::default();
        assert_eq!(
            (l.max_start_line, l.max_header_line, l.max_headers, l.max_head),
            (8192, 8192, 64, 16384)
        );
        let l =
            l.with_max_start_line(1).with_max_header_line(2).with_max_headers(3).with_max_head(4);
        assert_eq!((l.max_start_line, l.max_header_line, l.max_headers, l.max_head), (1, 2, 3, 4));
    }

    #[test]
    fn finds_the_end_of_the_head_and_ignores_what_follows() {
        let mut buf = REQUEST.to_vec();
        assert_eq!(read_whole(&buf, HeadLimits::default()).unwrap(), Some(REQUEST.len()));
        buf.extend_from_slice(b"\x81\x05hello");
        assert_eq!(read_whole(&buf, HeadLimits::default()).unwrap(), Some(REQUEST.len()));
        let req = parse_request(&buf, &HeadLimits::default()).unwrap();
        assert_eq!(req.uri(), "/chat?room=1");
        assert_eq!(req.headers()["host"], "example.com");
    }

    #[test]
    fn needs_more_until_the_empty_line() {
        for cut in 0..REQUEST.len() {
            assert_eq!(read_whole(&REQUEST[..cut], HeadLimits::default()).unwrap(), None, "{cut}");
        }
    }

    #[test]
    fn accepts_bare_lf_line_endings() {
        // RFC 7230 §3.5: a recipient MAY accept a bare LF.
        let head = b"GET / HTTP/1.1\nHost: a\n\n";
        assert_eq!(read_whole(head, HeadLimits::default()).unwrap(), Some(head.len()));
        assert_eq!(parse_request(head, &HeadLimits::default()).unwrap().headers()["host"], "a");
    }

    #[test]
    fn rejects_an_empty_line_before_the_start_line() {
        let err = read_whole(b"\r\nGET / HTTP/1.1\r\n\r\n", HeadLimits::default()).unwrap_err();
        assert_eq!(err.status_to_send(), Some(StatusCode::BAD_REQUEST));
        assert!(matches!(message(err), InvalidMessage::Malformed { .. }));
    }

    // RFC 7230 §3.1.1: a server answers an over-long request line with 414.
    #[test]
    fn start_line_limit_met_exactly_and_crossed_by_one() {
        let limits = HeadLimits::default().with_max_start_line(100);
        let ok = head(100, &[10]);
        assert_eq!(read_whole(&ok, limits).unwrap(), Some(ok.len()));
        let long = head(101, &[10]);
        let err = read_whole(&long, limits).unwrap_err();
        assert_eq!(err.status_to_send(), Some(StatusCode::URI_TOO_LONG));
        assert_eq!(security(err), SecurityError::RequestLineTooLong { len: 101, max: 100 });
    }

    #[test]
    fn start_line_limit_is_enforced_before_the_line_ends() {
        let limits = HeadLimits::default().with_max_start_line(100);
        // 101 bytes without a line end: already too long, unless the last is a CR.
        let mut buf = vec![b'a'; 101];
        assert_eq!(
            security(read_whole(&buf, limits).unwrap_err()),
            SecurityError::RequestLineTooLong { len: 101, max: 100 }
        );
        buf[100] = b'\r';
        assert_eq!(read_whole(&buf, limits).unwrap(), None);
        buf.push(b'x');
        assert!(matches!(
            security(read_whole(&buf, limits).unwrap_err()),
            SecurityError::RequestLineTooLong { .. }
        ));
    }

    // RFC 6585 §5: 431 for header fields too large.
    #[test]
    fn header_line_limit_met_exactly_and_crossed_by_one() {
        let limits = HeadLimits::default().with_max_header_line(50);
        let ok = head(20, &[10, 50, 10]);
        assert_eq!(read_whole(&ok, limits).unwrap(), Some(ok.len()));
        let long = head(20, &[10, 51, 10]);
        let err = read_whole(&long, limits).unwrap_err();
        assert_eq!(err.status_to_send(), Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
        assert_eq!(security(err), SecurityError::HeaderLineTooLong { len: 51, max: 50 });
        // With bare LF endings too.
        let bare = String::from_utf8(long).unwrap().replace("\r\n", "\n");
        assert!(matches!(
            security(read_whole(bare.as_bytes(), limits).unwrap_err()),
            SecurityError::HeaderLineTooLong { len: 51, .. }
        ));
    }

    #[test]
    fn header_count_limit_met_exactly_and_crossed_by_one() {
        let limits = HeadLimits::default().with_max_headers(5);
        let ok = head(20, &[10; 5]);
        assert_eq!(read_whole(&ok, limits).unwrap(), Some(ok.len()));
        assert_eq!(parse_request(&ok, &limits).unwrap().headers().len(), 5);
        let err = read_whole(&head(20, &[10; 6]), limits).unwrap_err();
        assert_eq!(err.status_to_send(), Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
        assert_eq!(security(err), SecurityError::TooManyHeaders { max: 5 });
        let err = parse_request(&head(20, &[10; 6]), &limits).unwrap_err();
        assert_eq!(security(err), SecurityError::TooManyHeaders { max: 5 });
    }

    #[test]
    fn head_size_limit_met_exactly_and_crossed_by_one() {
        let ok = head(100, &[100, 100, 100]);
        let limits = HeadLimits::default().with_max_head(ok.len());
        assert_eq!(read_whole(&ok, limits).unwrap(), Some(ok.len()));
        let big = head(101, &[100, 100, 100]);
        let err = read_whole(&big, limits).unwrap_err();
        assert_eq!(err.status_to_send(), Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
        assert_eq!(security(err), SecurityError::HeadTooLarge { len: ok.len() + 1, max: ok.len() });
        // Fed one byte at a time, the verdict comes with the first byte over the limit.
        let mut reader = HeadReader::new(limits);
        for n in 1..=ok.len() {
            assert_eq!(reader.feed(&big[..n]).unwrap(), None);
        }
        assert!(reader.feed(&big[..ok.len() + 1]).is_err());
    }

    #[test]
    fn default_limits_accept_a_head_of_exactly_16_kib() {
        let lines = [8000, 8000];
        let mut h = head(16 * 1024 - 2 * 8002 - 4, &lines);
        assert_eq!(h.len(), 16 * 1024);
        assert_eq!(read_whole(&h, HeadLimits::default()).unwrap(), Some(h.len()));
        h.insert(5, b'a');
        assert!(matches!(
            security(read_whole(&h, HeadLimits::default()).unwrap_err()),
            SecurityError::HeadTooLarge { .. }
        ));
    }

    #[test]
    fn errors_and_results_are_sticky() {
        let mut reader = HeadReader::new(HeadLimits::default());
        assert_eq!(reader.feed(REQUEST).unwrap(), Some(REQUEST.len()));
        assert_eq!(reader.feed(REQUEST).unwrap(), Some(REQUEST.len()));
        let mut reader = HeadReader::new(HeadLimits::default().with_max_start_line(3));
        assert!(reader.feed(b"GET / HTTP/1.1\r\n").is_err());
        assert!(reader.feed(b"GET / HTTP/1.1\r\n\r\n").is_err());
    }

    #[test]
    #[should_panic(expected = "cannot shrink")]
    fn a_shrinking_buffer_is_a_caller_bug() {
        let mut reader = HeadReader::new(HeadLimits::default());
        let _ = reader.feed(b"GET / HT");
        let _ = reader.feed(b"GET");
    }

    #[test]
    fn scanning_is_linear_for_a_16_kib_head_fed_one_byte_at_a_time() {
        let h = head(8000, &[8000, 300]);
        assert!(h.len() > 16_000 && h.len() <= 16 * 1024);
        let mut reader = HeadReader::new(HeadLimits::default());
        let mut last = 0;
        for n in 1..h.len() {
            assert_eq!(reader.feed(&h[..n]).unwrap(), None);
            assert!(reader.scanned() >= last, "the scan position moved backwards");
            last = reader.scanned();
        }
        assert_eq!(reader.feed(&h).unwrap(), Some(h.len()));
        // Every byte was examined exactly once.
        assert_eq!(reader.examined, h.len());
    }

    #[test]
    fn parse_request_reports_incomplete_and_malformed_heads() {
        let limits = HeadLimits::default();
        assert_eq!(
            message(parse_request(b"GET / HTTP/1.1\r\n", &limits).unwrap_err()),
            InvalidMessage::Incomplete
        );
        for bad in [
            &b"GET / HTTP/1.1\r\nbad header\r\n\r\n"[..],
            b"GET / HTTP/2.0\r\n\r\n",
            b"GET  HTTP/1.1\r\n\r\n",
            b"GET * HTTP/1.1\r\n\r\n",
            b"GET example.com:80 HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n",
            b"G\x01T / HTTP/1.1\r\n\r\n",
        ] {
            let err = parse_request(bad, &limits).unwrap_err();
            assert_eq!(err.status_to_send(), Some(StatusCode::BAD_REQUEST), "{bad:?}");
            assert!(matches!(message(err), InvalidMessage::Malformed { .. }), "{bad:?}");
        }
    }

    #[test]
    fn parse_request_keeps_method_version_and_repeated_headers() {
        let head = b"POST ws://example.com/x HTTP/1.0\r\nA: 1\r\na: 2\r\n\r\n";
        let req = parse_request(head, &HeadLimits::default()).unwrap();
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.version(), Version::HTTP_10);
        assert_eq!(req.uri(), "ws://example.com/x");
        let values: Vec<_> = req.headers().get_all("a").iter().collect();
        assert_eq!(values, ["1", "2"]);
    }

    #[test]
    fn parse_response_reads_status_and_headers() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nframes";
        let resp = parse_response(head, &HeadLimits::default()).unwrap();
        assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(resp.headers()["upgrade"], "websocket");
        let err = parse_response(b"HTTP/1.1 99 x\r\n\r\n", &HeadLimits::default()).unwrap_err();
        assert!(matches!(message(err), InvalidMessage::Malformed { .. }));
        let err = parse_response(b"HTTP/1.1 1000 x\r\n\r\n", &HeadLimits::default()).unwrap_err();
        assert!(matches!(message(err), InvalidMessage::Malformed { .. }));
    }

    proptest! {
        #[test]
        fn fed_in_pieces_equals_fed_whole(
            buf in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..300),
                Just(REQUEST.to_vec()),
                Just(head(60, &[30, 40, 20])),
            ],
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
            small in any::<bool>(),
        ) {
            let limits = if small {
                HeadLimits::default().with_max_start_line(40).with_max_header_line(30).with_max_headers(2).with_max_head(100)
            } else {
                HeadLimits::default()
            };
            let whole = read_whole(&buf, limits).map_err(|e| e.to_string());
            let mut ends: Vec<usize> = cuts.iter().map(|i| i.index(buf.len() + 1)).collect();
            ends.push(buf.len());
            ends.sort_unstable();
            let mut reader = HeadReader::new(limits);
            let mut pieces = Ok(None);
            for end in ends {
                pieces = reader.feed(&buf[..end]).map_err(|e| e.to_string());
                if !matches!(pieces, Ok(None)) {
                    break;
                }
            }
            prop_assert_eq!(pieces, whole);
        }

        #[test]
        fn one_byte_at_a_time_equals_whole(buf in proptest::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a'), Just(b':'), any::<u8>()], 0..200)
        ) {
            let limits = HeadLimits::default().with_max_start_line(30).with_max_header_line(20).with_max_headers(3).with_max_head(120);
            let whole = read_whole(&buf, limits).map_err(|e| e.to_string());
            let mut reader = HeadReader::new(limits);
            let mut last = Ok(None);
            for n in 0..=buf.len() {
                last = reader.feed(&buf[..n]).map_err(|e| e.to_string());
                if !matches!(last, Ok(None)) {
                    break;
                }
            }
            prop_assert_eq!(last, whole);
        }

        #[test]
        fn random_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_request(&buf, &HeadLimits::default());
            let _ = parse_response(&buf, &HeadLimits::default());
        }
    }
}
