//! `futures` `Stream` and `Sink` implementations, so connections compose with the ecosystem.
//!
//! The stream yields `Ok(message)` for each data message, ends (`None`) after a normal close
//! handshake, and yields the error once after any other ending before it ends.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_sink::Sink;
use palisade_error::Error;
use palisade_proto::message::Message;

use crate::socket::{ReadHalf, WebSocket, WriteHalf};

macro_rules! impl_stream {
    ($ty:ident) => {
        impl Stream for $ty {
            type Item = Result<Message, Error>;

            fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
                self.shared().poll_stream(cx)
            }
        }
    };
}

macro_rules! impl_sink {
    ($ty:ident) => {
        impl Sink<Message> for $ty {
            type Error = Error;

            fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
                self.shared().poll_sink_ready(cx)
            }

            fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
                self.shared().start_send(item)
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
                self.shared().poll_sink_flush(cx)
            }

            fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
                self.shared().poll_sink_close(cx)
            }
        }
    };
}

impl_stream!(WebSocket);
impl_stream!(ReadHalf);
impl_sink!(WebSocket);
impl_sink!(WriteHalf);
