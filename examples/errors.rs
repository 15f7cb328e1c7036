//! What palisade's errors give an application's error handler. Run it from the workspace root:
//!
//! ```text
//! cargo run --release --example errors
//! ```
//!
//! It builds the errors a client meets most — the server refusing the handshake with 401 and a
//! JSON body, a protocol violation, a keepalive timeout, the server going away — and prints for
//! each what a handler reads off it: the category, the close code sent to the peer, the HTTP
//! status, whether to reconnect and when. Look at how one function handles every error through
//! `category()` and `is_retryable()` without matching variants, and how matching the variant
//! reaches the details (the 401's JSON body, the close frames). Then it shows that `Display`
//! keeps credentials out of logs, and the two ways to build a close frame.
//!
//! The book's chapter "Errors and close codes" shows these listings.

use std::time::Duration;

use palisade::error::{
    ConnectionClosed, HandshakeError, InvalidHeader, InvalidStatus, InvalidUri, ProtocolError,
    TimeoutPhase, UriProblem,
};
use palisade::http::{HeaderMap, HeaderValue, StatusCode, header};
use palisade::{Category, CloseCode, CloseFrame, Error};

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: errors

What an error handler reads off palisade's errors: category, close code, HTTP status,
whether and when to retry; then how `Display` keeps credentials out of logs.

  -h, --help   print this and exit
";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    args::Args::none("errors", USAGE);
    let errors = [
        ("the server refused the handshake", refused_with_401()),
        ("the server broke the protocol", ProtocolError::MaskedServerFrame.into()),
        ("the server stopped answering pings", Error::timeout(TimeoutPhase::Keepalive)),
        ("the server is shutting down", going_away()?),
    ];
    for (what, err) in &errors {
        println!("{what}:");
        handle(err, 0);
        println!();
    }
    secrets();
    println!();
    close_frames()?;
    Ok(())
}

// ANCHOR: invalid_status
/// The error a client returns when the server answers the upgrade with 401 and a JSON body.
fn refused_with_401() -> Error {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"chat\""));
    // A credential: dropped before the error stores the headers.
    headers.insert(header::SET_COOKIE, HeaderValue::from_static("session=8c1f0e6a"));
    let body = br#"{"error":"token_expired","detail":"log in again"}"#;
    // The client keeps at most its configured limit of the body (here 4 KiB).
    InvalidStatus::new(StatusCode::UNAUTHORIZED, &headers, body, 4096).into()
}
// ANCHOR_END: invalid_status

// ANCHOR: going_away
/// The error every call returns after the server closed with 1001 and we answered.
fn going_away() -> Result<Error, palisade::error::CloseFrameError> {
    let theirs = CloseFrame::new(CloseCode::GOING_AWAY, "server shutting down")?;
    let ours = CloseFrame::from_code(CloseCode::GOING_AWAY)?;
    Ok(Error::closed(ConnectionClosed {
        received: Some(theirs),
        sent: Some(ours),
        received_then_sent: Some(true),
    }))
}
// ANCHOR_END: going_away

// ANCHOR: handle
/// What an error handler reads off any error, without knowing its variant.
fn handle(err: &Error, attempt: u32) {
    println!("  log [{}]: {err}", severity(err));
    println!("  category:    {}", err.category());
    match err.close_code() {
        Some(code) => println!("  close code:  {code}, sent to the peer"),
        None => println!("  close code:  none, no close frame is owed"),
    }
    match (err.status_to_send(), err.received_status()) {
        (Some(status), _) => println!("  HTTP status: {status}, owed to the peer"),
        (None, Some(status)) => println!("  HTTP status: {status}, received from the server"),
        (None, None) => println!("  HTTP status: none, not a handshake error"),
    }
    println!("  retryable:   {}", if err.is_retryable() { "yes" } else { "no" });
    match next_step(err, attempt) {
        Next::Reconnect { after } => println!("  next:        reconnect in {after:?}"),
        Next::GiveUp => println!("  next:        give up"),
    }
    if let Some(detail) = detail(err) {
        println!("  detail:      {detail}");
    }
}

/// A log level from the category alone.
fn severity(err: &Error) -> &'static str {
    match err.category() {
        // The end of a connection, not a failure.
        Category::Closed => "info",
        // The network and the peer misbehave now and then; worth counting, not paging.
        Category::Transport | Category::Timeout | Category::Protocol | Category::Handshake => {
            "warn"
        }
        // Security, Uri, Proxy, Policy, State: refusals, configuration, bugs in the caller.
        _ => "error",
    }
}
// ANCHOR_END: handle

// ANCHOR: retry
/// What a reconnecting client does after an error ended an attempt to connect.
enum Next {
    /// Connect again after this delay.
    Reconnect { after: Duration },
    /// Stop: the same request would fail the same way.
    GiveUp,
}

/// The next step after `err` ended attempt number `attempt` (the first is 0).
fn next_step(err: &Error, attempt: u32) -> Next {
    if !err.is_retryable() {
        return Next::GiveUp;
    }
    // A 429 or 503 may say how long to wait; otherwise back off exponentially, capped.
    let backoff = Duration::from_millis(250 * 2u64.pow(attempt.min(7)));
    let after = retry_after(err).map_or(backoff, Duration::from_secs);
    Next::Reconnect { after }
}
// ANCHOR_END: retry

// ANCHOR: detail
/// The server's `Retry-After`, when it refused the handshake with one.
fn retry_after(err: &Error) -> Option<u64> {
    match err {
        Error::Handshake(handshake) => match &**handshake {
            HandshakeError::InvalidStatus(refusal) => refusal.retry_after(),
            _ => None,
        },
        _ => None,
    }
}

/// What only the variant tells: the body of a refused handshake, the close frames exchanged.
fn detail(err: &Error) -> Option<String> {
    match err {
        Error::Handshake(handshake) => match &**handshake {
            HandshakeError::InvalidStatus(refusal) => Some(format!(
                "the server sent {} bytes of {}: {}",
                refusal.body().len(),
                refusal.headers().get(header::CONTENT_TYPE)?.to_str().ok()?,
                refusal.body_text()?,
            )),
            _ => None,
        },
        Error::ConnectionClosedOk(closed) | Error::ConnectionClosedError(closed) => Some(format!(
            "code {}, reason {:?}, the peer closed first: {}",
            closed.code(),
            closed.reason(),
            closed.received_then_sent == Some(true),
        )),
        _ => None,
    }
}
// ANCHOR_END: detail

// ANCHOR: secrets
/// `Display` and `Debug` are safe to log: credentials are removed when the error is built.
fn secrets() {
    let uri = InvalidUri::new(
        "ws://alice:hunter2@chat.example/live?token=eyJhbGciOi#x",
        UriProblem::Fragment,
    );
    let header = InvalidHeader::bad_format("authorization", "Bearer eyJhbGciOi", 6);
    println!("logged: {}", Error::from(uri));
    println!("logged: {}", Error::from(header));
}
// ANCHOR_END: secrets

// ANCHOR: close_frames
/// The two ways to build a close frame; neither panics, neither can produce an invalid frame.
fn close_frames() -> Result<(), palisade::error::CloseFrameError> {
    let reason = "é".repeat(100); // 200 bytes; a close reason holds at most 123.

    // `new` refuses a reason that does not fit.
    if let Err(e) = CloseFrame::new(CloseCode::POLICY_VIOLATION, reason.clone()) {
        println!("CloseFrame::new:       {e}");
    }

    // `truncated` cuts it at a character boundary instead.
    let frame = CloseFrame::truncated(CloseCode::POLICY_VIOLATION, &reason)?;
    println!("CloseFrame::truncated: {} bytes of reason kept", frame.reason().len());

    // Both refuse a code that may never be sent, such as 1006.
    if let Err(e) = CloseFrame::truncated(CloseCode::ABNORMAL, "") {
        println!("CloseFrame::truncated: {e}");
    }
    Ok(())
}
// ANCHOR_END: close_frames
