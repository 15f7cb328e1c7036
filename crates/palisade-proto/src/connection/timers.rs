//! Time: keepalive pings, the pong deadline, the idle limit and the close timeout, fired by
//! [`Connection::handle_timeout`] and announced by [`Connection::poll_timeout`].

use std::time::Instant;

use palisade_error::{Error, State, TimeoutPhase};

use super::Connection;
use crate::frame::OpCode;

impl Connection {
    // ----- time -----

    /// Tells the connection the time and fires the timers due: keepalive pings, the pong
    /// deadline (fails with 1011), the idle limit (closes with 1001) and the close timeout.
    /// Errors are reported by the next [`Connection::poll_event`].
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if let Some(deadline) = self.close_deadline
            && now >= deadline
        {
            // The peer did not finish the close handshake in time: give up on it.
            self.close_deadline = None;
            self.state = State::Closed;
            self.transport_close = true;
            self.discard_input = true;
            if self.pending_error.is_none() && self.close_received.is_none() {
                self.pending_error = Some(Error::timeout(TimeoutPhase::Close));
            }
            return;
        }
        if self.state != State::Open {
            return;
        }
        if let (Some((sent_at, _)), Some(timeout)) =
            (self.ping_outstanding, self.config.ping_timeout)
            && now >= sent_at + timeout
        {
            let err = self.fail(Error::timeout(TimeoutPhase::Keepalive));
            self.pending_error = Some(err);
            return;
        }
        if let Some(idle) = self.config.idle_timeout
            && now >= self.last_activity + idle
        {
            let err = self.fail(Error::timeout(TimeoutPhase::Idle));
            self.pending_error = Some(err);
            return;
        }
        if let (Some(at), Some(interval)) = (self.next_ping, self.config.ping_interval)
            && now >= at
        {
            self.next_ping = Some(now + interval);
            if self.ping_outstanding.is_none() {
                self.ping_counter = self.ping_counter.wrapping_add(1);
                let payload = self.ping_counter.to_be_bytes();
                self.queue_frame(OpCode::Ping, 0, &payload);
                self.ping_outstanding = Some((now, payload));
            }
        }
    }

    /// Tells the connection the time without firing any timer: for a driver about to queue a
    /// data message or start the close handshake between two wake-ups, so that the close
    /// deadline and the idle limit count from `now` rather than from the last
    /// [`Connection::handle_timeout`], which may be long past on a quiet connection. Time never
    /// goes back: a `now` earlier than the connection's is ignored. Timers that have come due
    /// fire at the next `handle_timeout`.
    pub fn advance_time(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
    }

    /// Tells the connection that its owner has stopped reading for now (its queue of received
    /// messages is full and nobody takes them). The peer may well have answered our ping, or be
    /// sending, with its bytes unread in the transport: the deadlines that wait on its data (the
    /// pong deadline, the idle limit) start again from `now` rather than fail a peer that is
    /// not at fault. The outstanding ping is forgotten (its pong, when read, is unsolicited);
    /// keepalive pings go on being sent. Call it before [`Connection::handle_timeout`] on every
    /// wake-up while reading is held back.
    pub fn hold_input(&mut self, now: Instant) {
        self.now = now;
        if self.state != State::Open {
            return;
        }
        self.ping_outstanding = None;
        self.last_activity = now;
    }

    /// The next instant at which [`Connection::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state == State::Closed {
            return self.close_deadline;
        }
        let pong_deadline =
            self.ping_outstanding.and_then(|(sent, _)| self.config.ping_timeout.map(|t| sent + t));
        let idle = self
            .config
            .idle_timeout
            .filter(|_| self.state == State::Open)
            .map(|t| self.last_activity + t);
        let next_ping = self.next_ping.filter(|_| self.state == State::Open);
        [self.close_deadline, pong_deadline, idle, next_ping].into_iter().flatten().min()
    }
}
