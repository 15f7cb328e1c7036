//! A protocol with every kind of message, hooks, a derived error, and its generated client.

use palisade::json::typed::Context;
use palisade::{Error, ReplyError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Join {
    room: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Joined {
    members: u32,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Said {
    text: String,
}

#[derive(Debug, ReplyError)]
pub enum ChatError {
    #[reply(code = "room_full", message = "the room is full")]
    RoomFull,
    #[reply(code = "no_such_user", message = "no such user")]
    NoSuchUser { name: String },
    #[close(code = 4003, reason = "banned")]
    Banned,
    #[internal]
    Storage(std::io::Error),
}

/// A chat.
#[palisade::protocol]
pub trait Chat {
    /// Joins a room.
    #[request("room.join")]
    async fn join(&mut self, cx: &Context<ChatPush>, payload: Join) -> Result<Joined, ChatError>;

    #[event("typing")]
    async fn typing(&mut self, payload: ());

    #[event("leave")]
    async fn leave(&mut self, cx: &Context<ChatPush>, payload: Join) -> Result<(), ChatError> {
        let _ = (cx, payload);
        Ok(())
    }

    /// Someone said something.
    #[push("said")]
    fn said(payload: Said);

    #[on_connect]
    async fn hello(&mut self, cx: &Context<ChatPush>) -> Result<(), ChatError>;

    #[on_disconnect]
    async fn bye(&mut self, ending: &Error);
}

struct Session;

impl Chat for Session {
    async fn join(&mut self, cx: &Context<ChatPush>, payload: Join) -> Result<Joined, ChatError> {
        cx.push().said(&Said { text: payload.room }).await.map_err(|_| ChatError::RoomFull)?;
        Ok(Joined { members: 1 })
    }

    async fn typing(&mut self, _: ()) {}

    async fn hello(&mut self, _: &Context<ChatPush>) -> Result<(), ChatError> {
        Ok(())
    }

    async fn bye(&mut self, _: &Error) {}
}

fn spawnable(ws: palisade::WebSocket) {
    let _ = tokio::spawn(Session.serve(ws));
}

async fn client(ws: palisade::WebSocket) {
    let (client, mut pushes) = ChatClient::new(ws);
    let _: Result<Joined, palisade::json::typed::CallError<ChatError>> =
        client.join(&Join { room: "a".into() }).await;
    let _: Result<(), Error> = client.typing(&()).await;
    let _: Result<ChatPushed, Error> = pushes.recv().await;
    let _ = ChatProtocol::describe();
}

fn main() {
    let _ = (spawnable, client);
}
