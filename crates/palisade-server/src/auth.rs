//! Authentication after the upgrade, for clients that can only send credentials in a message.
//!
//! Browsers cannot set headers on a WebSocket handshake; besides cookies, query parameters and
//! subprotocol tokens, the remaining way is a first message carrying credentials. The rule that
//! makes it safe is a deadline: a connection that has not authenticated in time is closed, so
//! unauthenticated sockets cannot pile up.

use std::time::Duration;

use palisade_error::{CloseCode, Error, TimeoutPhase};

use palisade_conn::WebSocket;
use palisade_proto::Message;

/// Receives the first message, which must arrive within `deadline`. On time-out the connection
/// is closed with 1008 Policy Violation (reason "authentication timeout") and
/// [`Error::Timeout`] with [`TimeoutPhase::FirstMessage`] is returned.
pub async fn first_message(ws: &WebSocket, deadline: Duration) -> Result<Message, Error> {
    match tokio::time::timeout(deadline, ws.recv()).await {
        Ok(result) => result,
        Err(_) => {
            tracing::info!(?deadline, "no first message before the deadline; closing");
            // The cancelled `recv` left nothing half-read; close and report.
            let _ = ws.close(CloseCode::POLICY_VIOLATION, "authentication timeout").await;
            Err(Error::timeout(TimeoutPhase::FirstMessage))
        }
    }
}
