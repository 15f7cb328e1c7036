//! Reconnecting: exponential backoff with full jitter, `Retry-After`, and retries only for
//! failures that retrying can fix.

use std::fmt;
use std::time::Duration;

use palisade_error::{Error, HandshakeError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::client::{Client, Connected};
use crate::url::WsUrl;

/// How long to wait between connection attempts: exponential backoff with full jitter (AWS
/// Architecture Blog, "Exponential Backoff And Jitter"): before retry `n` (from 0), a delay
/// drawn uniformly from `[0, min(max, initial × factorⁿ)]`.
///
/// Defaults: initial 0.5 s, factor 2, max 30 s; `Retry-After` honoured up to 10 minutes.
///
/// ```
/// use std::time::Duration;
/// use palisade_client::Backoff;
///
/// let backoff = Backoff::default().with_initial(Duration::from_millis(100)).with_max(Duration::from_secs(5));
/// assert_eq!(backoff.ceiling(0), Duration::from_millis(100));
/// assert_eq!(backoff.ceiling(3), Duration::from_millis(800));
/// assert_eq!(backoff.ceiling(30), Duration::from_secs(5));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Backoff {
    /// The ceiling of the first delay. Default 0.5 s.
    pub initial: Duration,
    /// What each failure multiplies the ceiling by. Default 2.
    pub factor: f64,
    /// The largest ceiling. Default 30 s.
    pub max: Duration,
    /// The longest `Retry-After` (of a 429 or 503) obeyed; a longer one is cut to this.
    /// Default 10 minutes.
    pub max_retry_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            factor: 2.0,
            max: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// Sets [`Backoff::initial`].
    pub fn with_initial(mut self, initial: Duration) -> Self {
        self.initial = initial;
        self
    }

    /// Sets [`Backoff::factor`] (values below 1 count as 1).
    pub fn with_factor(mut self, factor: f64) -> Self {
        self.factor = factor;
        self
    }

    /// Sets [`Backoff::max`].
    pub fn with_max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// Sets [`Backoff::max_retry_after`].
    pub fn with_max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// The largest delay before retry `retry` (counted from 0): `min(max, initial ×
    /// factor^retry)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = if self.factor.is_finite() { self.factor.max(1.0) } else { 1.0 };
        let exp = i32::try_from(retry).unwrap_or(i32::MAX);
        let secs = self.initial.as_secs_f64() * factor.powi(exp);
        if secs.is_finite() && secs < self.max.as_secs_f64() {
            Duration::from_secs_f64(secs)
        } else {
            self.max
        }
    }

    /// The delay before retry `retry`: uniform in `[0, ceiling(retry)]`.
    pub(crate) fn delay(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(retry);
        // 53 random bits make a uniform f64 in [0, 1].
        let unit = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ceiling.mul_f64(unit)
    }

    /// The delay a refusal asks for: `Retry-After` seconds on a 429 or 503, bounded by
    /// [`Backoff::max_retry_after`].
    pub(crate) fn retry_after(&self, err: &Error) -> Option<Duration> {
        let Error::Handshake(h) = err else { return None };
        let HandshakeError::InvalidStatus(status) = &**h else { return None };
        if !matches!(status.status().as_u16(), 429 | 503) {
            return None;
        }
        Some(Duration::from_secs(status.retry_after()?).min(self.max_retry_after))
    }
}

/// What a [`Reconnecting`] client tells its [`Reconnecting::with_on_attempt`] callback after
/// each attempt.
#[derive(Debug)]
#[non_exhaustive]
pub struct Attempt<'a> {
    /// The attempt's number, from 1, over the client's life.
    pub number: u64,
    /// `Ok` when connected, or why the attempt failed.
    pub result: Result<(), &'a Error>,
    /// When the attempt failed: the wait before the next one, or `None` when there will be
    /// none (the failure is not retryable, or the attempt limit is reached).
    pub retry_in: Option<Duration>,
}

type OnAttempt = Box<dyn FnMut(&Attempt<'_>) + Send>;

/// The outage a [`Reconnecting`] client rode through before its current connection, from
/// [`Reconnecting::gap`].
///
/// The client keeps no copy of what was sent: messages written to the old connection that the
/// server never answered are the application's to count and send again (numbering them, as an
/// acknowledged protocol does, tells which). The gap says how long that window was open and
/// what it took to close it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Gap {
    /// Which reconnection this was: 1 for the first connection after the initial one.
    pub reconnection: u64,
    /// From the call of `next()` that followed the previous connection (when the application
    /// had seen it end) to the opening of the current one: the time without a connection,
    /// as far as the application could tell.
    pub down_for: Duration,
    /// Attempts that failed in that time.
    pub failed_attempts: u64,
}

/// A client that connects again when connecting fails or the connection ends.
///
/// ```no_run
/// use palisade_client::Client;
///
/// # async fn run() {
/// let mut reconnecting = Client::new().reconnecting("wss://example.com/feed");
/// while let Some(conn) = reconnecting.next().await {
///     let ended = loop {
///         match conn.recv().await {
///             Ok(message) => println!("{message:?}"),
///             Err(end) => break end,
///         }
///     };
///     // A retryable end (1001, 1006 …): `next()` connects again; otherwise it returns None.
///     reconnecting.connection_ended(ended);
/// }
/// // An end or a failure that retrying cannot fix (1000, 1008, a 401, a bad URL …).
/// eprintln!("giving up: {:?}", reconnecting.last_error());
/// # }
/// ```
///
/// Each `next()` connects, retrying failed attempts after [`Backoff`] delays, until it
/// succeeds (`Some`) or a failure is not worth retrying (`None`):
///
/// - only errors with [`Error::is_retryable`] are retried: I/O errors, timeouts, 408, 429 and
///   5xx answers; a 401, an invalid URL, a TLS or protocol failure stop at once;
/// - a 429 or 503 with `Retry-After: <seconds>` waits that long instead of the backoff;
/// - headers from [`Client::with_headers_fn`] are produced afresh for each attempt;
/// - each attempt is logged (`tracing`, target `palisade_client`) with its number and, when
///   it failed, the reason and the wait; the callback of [`Reconnecting::with_on_attempt`]
///   sees the same;
/// - it notices by itself how the connection it returned last ended (the close frames
///   exchanged, as [`Error::closed`] classifies them): an end that reconnecting cannot fix (a
///   normal 1000 close, a 1008 policy close, a protocol error) makes the next `next()` return
///   `None`; a 1001, 1011, 1013 or a dropped TCP connection is reconnected.
///   [`Reconnecting::connection_ended`] tells it the precise error instead (a connection
///   dropped without being closed or read to its end says nothing by itself, and is
///   reconnected);
/// - a connection that stayed up for [`STABLE_AFTER`] resets the backoff; one that ended
///   sooner counts as a failure, so a server that accepts and drops at once is retried ever
///   more slowly instead of being hammered.
pub struct Reconnecting {
    client: Client,
    url: String,
    backoff: Backoff,
    max_attempts: Option<u64>,
    on_attempt: Option<OnAttempt>,
    rng: StdRng,
    attempts: u64,
    /// Failed attempts since the last success: the backoff's exponent.
    failures: u32,
    connected_before: bool,
    /// When the last successful connection opened.
    connected_at: Option<tokio::time::Instant>,
    last_error: Option<Error>,
    finished: bool,
    /// The connection `next()` returned last, to see how it ended.
    last_connection: Option<palisade_conn::Sender>,
    /// [`Reconnecting::connection_ended`] was told about the last connection.
    told: bool,
    /// Connections opened after the first one.
    reconnections: u64,
    /// The outage before the current connection, when it is not the first.
    gap: Option<Gap>,
}

/// How long a connection must stay up for its end to reset the backoff.
pub const STABLE_AFTER: Duration = Duration::from_secs(30);

impl fmt::Debug for Reconnecting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reconnecting")
            .field("url", &palisade_error::redact::uri(&self.url))
            .field("backoff", &self.backoff)
            .field("max_attempts", &self.max_attempts)
            .field("attempts", &self.attempts)
            .field("failures", &self.failures)
            .field("last_error", &self.last_error)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A reconnecting client for `url`: see [`Reconnecting`]. (Here rather than in
    /// `client.rs`, so that the client does not depend on the reconnection built on it.)
    pub fn reconnecting(&self, url: impl Into<String>) -> Reconnecting {
        Reconnecting::new(self.clone(), url.into())
    }
}

impl Reconnecting {
    fn new(client: Client, url: String) -> Self {
        Self {
            client,
            url,
            backoff: Backoff::default(),
            max_attempts: None,
            on_attempt: None,
            rng: StdRng::from_rng(&mut rand::rng()),
            attempts: 0,
            failures: 0,
            connected_before: false,
            connected_at: None,
            last_error: None,
            finished: false,
            last_connection: None,
            told: false,
            reconnections: 0,
            gap: None,
        }
    }

    /// Sets the backoff.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Stops after this many consecutive failed attempts (`None`, the default: never). A
    /// connection that stays up for [`STABLE_AFTER`] starts the count again.
    pub fn with_max_attempts(mut self, max: Option<u64>) -> Self {
        self.max_attempts = max;
        self
    }

    /// Calls `f` after each attempt, with its outcome (for metrics, or to show "reconnecting
    /// in 2 s").
    pub fn with_on_attempt(mut self, f: impl FnMut(&Attempt<'_>) + Send + 'static) -> Self {
        self.on_attempt = Some(Box::new(f));
        self
    }

    /// Reports how the connection `next()` returned has ended (the error its `recv` gave).
    /// If retrying cannot help ([`Error::is_retryable`] is false: a 1000 or 1008 close, a
    /// protocol error …), the next `next()` returns `None` and [`Reconnecting::last_error`]
    /// is this error.
    pub fn connection_ended(&mut self, end: Error) {
        self.told = true;
        if !end.is_retryable() {
            tracing::info!(url = %palisade_error::redact::uri(&self.url), error = %end, "not reconnecting: the connection ended for good");
            self.finished = true;
        }
        self.last_error = Some(end);
    }

    /// The last attempt's failure: after `next()` returned `None`, why it gave up.
    pub fn last_error(&self) -> Option<&Error> {
        self.last_error.as_ref()
    }

    /// Takes the last failure out.
    pub fn take_error(&mut self) -> Option<Error> {
        self.last_error.take()
    }

    /// How many attempts have been made.
    pub fn attempts(&self) -> u64 {
        self.attempts
    }

    /// The outage before the connection `next()` returned last: `None` while that is the
    /// first connection. See [`Gap`].
    pub fn gap(&self) -> Option<Gap> {
        self.gap
    }

    /// Connects, retrying as described on the type. `None` once a failure is not retryable
    /// or the attempt limit is reached ([`Reconnecting::last_error`] says which); every later
    /// call returns `None` too.
    pub async fn next(&mut self) -> Option<Connected> {
        if let Some(last) = self.last_connection.take()
            && !self.told
            && last.is_closed()
        {
            self.connection_ended(Error::closed(last.close_info()));
        }
        self.told = false;
        if self.finished {
            return None;
        }
        let url = match WsUrl::parse(&self.url) {
            Ok(url) => url,
            Err(err) => {
                tracing::warn!(url = %palisade_error::redact::uri(&self.url), error = %err, "not reconnecting: invalid URL");
                self.last_error = Some(err);
                self.finished = true;
                return None;
            }
        };
        let down_since = tokio::time::Instant::now();
        let mut failed_attempts = 0u64;
        let mut delay = if self.connected_before {
            // A connection that ended soon after opening is as good as a failed attempt.
            let stable = self.connected_at.is_some_and(|t| t.elapsed() >= STABLE_AFTER);
            if stable {
                self.failures = 0;
            } else {
                self.failures = self.failures.saturating_add(1);
            }
            self.backoff.delay(self.failures, &mut self.rng)
        } else {
            Duration::ZERO
        };
        loop {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            self.attempts += 1;
            let number = self.attempts;
            match &self.last_error {
                Some(reason) => {
                    tracing::info!(url = %url, attempt = number, %reason, "reconnecting")
                }
                None if self.connected_before => {
                    tracing::info!(url = %url, attempt = number, "reconnecting after the connection ended")
                }
                None => tracing::info!(url = %url, attempt = number, "connecting"),
            }
            match self.client.connect_url(url.clone()).await {
                Ok(connected) => {
                    if self.connected_before {
                        self.reconnections += 1;
                        let gap = Gap {
                            reconnection: self.reconnections,
                            down_for: down_since.elapsed(),
                            failed_attempts,
                        };
                        tracing::info!(url = %url, reconnection = gap.reconnection, down_for = ?gap.down_for, failed_attempts, "reconnected");
                        self.gap = Some(gap);
                    }
                    self.connected_before = true;
                    self.connected_at = Some(tokio::time::Instant::now());
                    self.last_error = None;
                    tracing::info!(url = %url, attempt = number, "connected");
                    self.notify(&Attempt { number, result: Ok(()), retry_in: None });
                    self.last_connection = Some(connected.sender());
                    return Some(connected);
                }
                Err(err) => {
                    failed_attempts += 1;
                    let consecutive = u64::from(self.failures) + 1;
                    let limit_reached = self.max_attempts.is_some_and(|max| consecutive >= max);
                    let retry_in = if !err.is_retryable() || limit_reached {
                        None
                    } else {
                        let d = self
                            .backoff
                            .retry_after(&err)
                            .unwrap_or_else(|| self.backoff.delay(self.failures, &mut self.rng));
                        Some(d)
                    };
                    self.failures = self.failures.saturating_add(1);
                    self.notify(&Attempt { number, result: Err(&err), retry_in });
                    match retry_in {
                        Some(d) => {
                            tracing::warn!(url = %url, attempt = number, error = %err, retry_in = ?d, "connection attempt failed");
                            delay = d;
                            self.last_error = Some(err);
                        }
                        None => {
                            let why = if limit_reached && err.is_retryable() {
                                "attempt limit reached"
                            } else {
                                "not retryable"
                            };
                            tracing::warn!(url = %url, attempt = number, error = %err, "giving up: {why}");
                            self.last_error = Some(err);
                            self.finished = true;
                            return None;
                        }
                    }
                }
            }
        }
    }

    fn notify(&mut self, attempt: &Attempt<'_>) {
        if let Some(f) = &mut self.on_attempt {
            f(attempt);
        }
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, StatusCode};
    use palisade_error::InvalidStatus;

    use super::*;

    #[test]
    fn ceilings_grow_then_cap() {
        let b = Backoff::default();
        let ceilings: Vec<f64> = (0..8).map(|n| b.ceiling(n).as_secs_f64()).collect();
        assert_eq!(ceilings, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]);
        assert_eq!(b.ceiling(u32::MAX), b.max);
        assert_eq!(b.with_factor(f64::NAN).ceiling(5), b.initial);
        assert_eq!(b.with_factor(0.1).ceiling(5), b.initial);
    }

    #[test]
    fn full_jitter_stays_within_the_ceiling_and_spreads() {
        let b = Backoff::default();
        let mut rng = StdRng::seed_from_u64(7);
        for retry in 0..10 {
            let mut seen = Vec::new();
            for _ in 0..200 {
                let d = b.delay(retry, &mut rng);
                assert!(d <= b.ceiling(retry));
                seen.push(d);
            }
            // Spread over the range, not clustered at one end.
            let low = seen.iter().filter(|d| **d < b.ceiling(retry) / 2).count();
            assert!((40..160).contains(&low), "{retry}: {low}");
        }
    }

    fn refusal(status: u16, retry_after: Option<&str>) -> Error {
        let mut headers = HeaderMap::new();
        if let Some(v) = retry_after {
            headers.insert("retry-after", v.parse().unwrap());
        }
        InvalidStatus::new(StatusCode::from_u16(status).unwrap(), &headers, b"", 0).into()
    }

    #[test]
    fn retry_after_applies_to_429_and_503_only() {
        let b = Backoff::default();
        assert_eq!(b.retry_after(&refusal(503, Some("7"))), Some(Duration::from_secs(7)));
        assert_eq!(b.retry_after(&refusal(429, Some("3"))), Some(Duration::from_secs(3)));
        assert_eq!(b.retry_after(&refusal(429, Some("99999"))), Some(b.max_retry_after));
        assert_eq!(b.retry_after(&refusal(500, Some("7"))), None);
        assert_eq!(b.retry_after(&refusal(503, None)), None);
        assert_eq!(b.retry_after(&refusal(503, Some("Wed, 21 Oct 2015 07:28:00 GMT"))), None);
    }
}
