//! Typed handlers (`#[palisade::protocol]`) on a real server, talked to over TCP by the
//! generated client and by a hand-written JSON socket: dispatch by tag, replies, typed error
//! replies with their details, validation, closes chosen by an error, hooks, pushes, and the
//! protocol's description.

use std::time::Duration;

use palisade::json::typed::{CallError, Context};
use palisade::json::{Incoming, Invalid, JsonSocket, SUBPROTOCOL, Validate};
use palisade::server::{Server, State};
use palisade::{CloseCode, Error, ReplyError, WebSocket};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::mpsc;

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Operands {
    a: i32,
    b: i32,
}

impl Validate for Operands {
    fn validate(&self) -> Result<(), Invalid> {
        if self.b == 0 {
            return Err(Invalid::single("b", "nonzero", "the divisor must not be zero"));
        }
        Ok(())
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Sum {
    sum: i32,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Note {
    text: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Noted {
    text: String,
    count: u32,
}

#[derive(Debug, PartialEq, ReplyError)]
enum CalcError {
    #[reply(code = "overflow", message = "the result does not fit in 32 bits")]
    Overflow,
    #[reply(code = "no_such_user", message = "no such user")]
    NoSuchUser { name: String },
    #[close(code = 4003, reason = "banned")]
    Banned,
    #[internal]
    Storage(String),
}

/// A calculator with notes.
#[palisade::protocol]
trait Calc {
    /// Adds two numbers.
    #[request("calc.add")]
    async fn add(&mut self, payload: Operands) -> Result<Sum, CalcError>;

    /// Divides; the divisor is checked before the handler runs.
    #[request("calc.divide", validate)]
    async fn divide(&mut self, payload: Operands) -> Result<Sum, CalcError>;

    #[request("user.find")]
    async fn find(&mut self, payload: String) -> Result<(), CalcError>;

    #[request("admin.ban")]
    async fn ban(&mut self, payload: ()) -> Result<(), CalcError>;

    #[request("storage.read")]
    async fn read(&mut self, payload: ()) -> Result<(), CalcError>;

    /// Takes a note; the server pushes it back with a count.
    #[event("note")]
    async fn note(&mut self, cx: &Context<CalcPush>, payload: Note);

    /// A note pushed back.
    #[push("noted")]
    fn noted(payload: Noted);

    /// Sent once a connection opens.
    #[push("welcome")]
    fn welcome(payload: String);

    #[on_connect]
    async fn connected(&mut self, cx: &Context<CalcPush>) -> Result<(), CalcError>;

    #[on_disconnect]
    async fn disconnected(&mut self, ending: &Error);
}

/// One connection's state.
struct Session {
    notes: u32,
    refuse: bool,
    ended: mpsc::UnboundedSender<String>,
}

impl Calc for Session {
    async fn add(&mut self, Operands { a, b }: Operands) -> Result<Sum, CalcError> {
        a.checked_add(b).map(|sum| Sum { sum }).ok_or(CalcError::Overflow)
    }

    async fn divide(&mut self, Operands { a, b }: Operands) -> Result<Sum, CalcError> {
        Ok(Sum { sum: a / b })
    }

    async fn find(&mut self, name: String) -> Result<(), CalcError> {
        Err(CalcError::NoSuchUser { name })
    }

    async fn ban(&mut self, (): ()) -> Result<(), CalcError> {
        Err(CalcError::Banned)
    }

    async fn read(&mut self, (): ()) -> Result<(), CalcError> {
        Err(CalcError::Storage("disk /dev/sda1 failed".into()))
    }

    async fn note(&mut self, cx: &Context<CalcPush>, note: Note) {
        self.notes += 1;
        let noted = Noted { text: note.text, count: self.notes };
        // The connection may be closing: nothing to do about a failed push then.
        let _ = cx.push().noted(&noted).await;
    }

    async fn connected(&mut self, cx: &Context<CalcPush>) -> Result<(), CalcError> {
        if self.refuse {
            return Err(CalcError::Banned);
        }
        cx.push().welcome(&"hello".to_owned()).await.map_err(|e| CalcError::Storage(e.to_string()))
    }

    async fn disconnected(&mut self, ending: &Error) {
        let code = ending
            .connection_closed()
            .and_then(|c| c.received.as_ref().or(c.sent.as_ref()).map(|f| f.code()));
        let _ = self.ended.send(format!("{:?}", code.map(CloseCode::as_u16)));
    }
}

struct Fixture {
    running: palisade::server::Running,
    ended: mpsc::UnboundedReceiver<String>,
}

async fn start() -> Fixture {
    let (tx, ended) = mpsc::unbounded_channel();
    let running = Server::builder()
        .route(
            "/calc",
            |ws: WebSocket, State(ended): State<mpsc::UnboundedSender<String>>| async move {
                Session { notes: 0, refuse: false, ended }.serve(ws).await
            },
        )
        .route(
            "/refused",
            |ws: WebSocket, State(ended): State<mpsc::UnboundedSender<String>>| async move {
                Session { notes: 0, refuse: true, ended }.serve(ws).await
            },
        )
        .with_subprotocols([SUBPROTOCOL])
        .with_state(tx)
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    Fixture { running, ended }
}

async fn connect(fixture: &Fixture, path: &str) -> WebSocket {
    let url = format!("ws://{}{path}", fixture.running.local_addr());
    let client = palisade::client::Client::new().with_subprotocols([SUBPROTOCOL]);
    client.connect(&url).await.unwrap().into_socket()
}

async fn within<T>(what: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), what).await.expect("in time")
}

#[tokio::test]
async fn requests_are_answered_with_replies_and_typed_errors() {
    let fixture = start().await;
    let (client, mut pushes) = CalcClient::new(connect(&fixture, "/calc").await);
    assert!(matches!(within(pushes.recv()).await.unwrap(), CalcPushed::Welcome(w) if w == "hello"));

    assert_eq!(within(client.add(&Operands { a: 2, b: 3 })).await.unwrap(), Sum { sum: 5 });
    match within(client.add(&Operands { a: i32::MAX, b: 1 })).await {
        Err(CallError::Rejected(CalcError::Overflow)) => {}
        other => panic!("{other:?}"),
    }
    // A variant's fields travel as the reply's details and come back typed.
    match within(client.find(&"zoe".to_owned())).await {
        Err(CallError::Rejected(CalcError::NoSuchUser { name })) => assert_eq!(name, "zoe"),
        other => panic!("{other:?}"),
    }
    // Validation runs before the handler: a built-in code, with the path.
    match within(client.divide(&Operands { a: 1, b: 0 })).await {
        Err(CallError::Refused(reply)) => {
            assert_eq!(reply.code().as_str(), "validation_failed");
            assert_eq!(reply.path(), Some("data.b"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(within(client.divide(&Operands { a: 9, b: 3 })).await.unwrap(), Sum { sum: 3 });
    // An internal error says nothing of its cause.
    match within(client.read(&())).await {
        Err(CallError::Refused(reply)) => {
            assert_eq!(reply.code().as_str(), "internal");
            assert!(!reply.to_string().contains("sda1"), "{reply}");
        }
        other => panic!("{other:?}"),
    }

    // Events run in order; the server pushes only what the protocol declares.
    for text in ["a", "b", "c"] {
        within(client.note(&Note { text: text.into() })).await.unwrap();
    }
    for (count, text) in [(1, "a"), (2, "b"), (3, "c")] {
        match within(pushes.recv()).await.unwrap() {
            CalcPushed::Noted(noted) => assert_eq!(noted, Noted { text: text.into(), count }),
            other => panic!("{other:?}"),
        }
    }

    within(client.close()).await.unwrap();
    assert!(matches!(within(pushes.recv()).await, Err(Error::ConnectionClosedOk(_))));
    let mut fixture = fixture;
    assert_eq!(within(fixture.ended.recv()).await.unwrap(), "Some(1000)");
}

#[tokio::test]
async fn an_error_that_closes_ends_the_connection_with_its_code() {
    let mut fixture = start().await;
    let (client, mut pushes) = CalcClient::new(connect(&fixture, "/calc").await);
    within(pushes.recv()).await.unwrap();
    match within(client.ban(&())).await {
        Err(CallError::Closed(error)) => {
            let closed = error.connection_closed().expect("a closed connection");
            let frame = closed.received.as_ref().expect("the server's close frame");
            assert_eq!((frame.code(), frame.reason()), (CloseCode(4003), "banned"));
        }
        other => panic!("{other:?}"),
    }
    assert!(within(pushes.recv()).await.is_err());
    assert_eq!(within(fixture.ended.recv()).await.unwrap(), "Some(4003)");
}

#[tokio::test]
async fn a_connect_hook_that_refuses_closes_before_any_message() {
    let mut fixture = start().await;
    let (_client, mut pushes) = CalcClient::new(connect(&fixture, "/refused").await);
    let error = within(pushes.recv()).await.unwrap_err();
    let frame = error.connection_closed().and_then(|c| c.received.clone()).expect("a close frame");
    assert_eq!(frame.code(), CloseCode(4003));
    // The disconnect hook does not run for a connection the connect hook refused.
    assert!(fixture.ended.try_recv().is_err());
}

/// What a client that is not the generated one sees: the envelope of palisade-json.
#[tokio::test]
async fn the_wire_is_palisade_json_and_bad_messages_keep_the_connection() {
    let fixture = start().await;
    let mut socket = JsonSocket::new(connect(&fixture, "/calc").await);
    let sender = socket.sender();
    let welcome: Incoming<Value> = within(socket.recv()).await.unwrap();
    assert_eq!(*welcome.message(), json!({"event": "welcome", "data": "hello"}));

    // An unknown tag, a payload of the wrong shape: error replies, and the connection stays.
    for (event, data, code) in [
        ("calc.sub", json!({"a": 1, "b": 2}), "unknown_event"),
        ("calc.add", json!({"a": "one", "b": 2}), "invalid_payload"),
    ] {
        let reply = palisade::json::while_receiving(
            &mut socket,
            sender.request::<Value, _>(event, &data),
            |_: Incoming<Value>| {},
        )
        .await;
        match reply {
            Ok(Err(palisade::json::RequestError::Rejected(reply))) => {
                assert_eq!(reply.code().as_str(), code)
            }
            other => panic!("{event}: {other:?}"),
        }
    }
    // An event's tag sent as a request is acknowledged with `null` once handled.
    let ack = palisade::json::while_receiving(
        &mut socket,
        sender.request::<Value, _>("note", &json!({"text": "x"})),
        |_: Incoming<Value>| {},
    )
    .await;
    assert_eq!(ack.unwrap().unwrap(), Value::Null);
    let reply = palisade::json::while_receiving(
        &mut socket,
        sender.request::<Value, _>("calc.add", &json!({"a": 1, "b": 2})),
        |_: Incoming<Value>| {},
    )
    .await;
    assert_eq!(reply.unwrap().unwrap(), json!({"sum": 3}));
}

#[test]
fn the_description_lists_every_message_with_its_schema_and_errors() {
    use palisade::json::describe::{ErrorDescription, MessageKind};
    let description = CalcProtocol::describe();
    assert_eq!(description.name, "Calc");
    assert_eq!(description.subprotocol, SUBPROTOCOL);
    let tags: Vec<_> = description.messages.iter().map(|m| (m.kind, m.tag.as_str())).collect();
    assert_eq!(
        tags,
        [
            (MessageKind::Request, "calc.add"),
            (MessageKind::Request, "calc.divide"),
            (MessageKind::Request, "user.find"),
            (MessageKind::Request, "admin.ban"),
            (MessageKind::Request, "storage.read"),
            (MessageKind::Event, "note"),
            (MessageKind::Push, "noted"),
            (MessageKind::Push, "welcome"),
        ]
    );
    let add = description.message(MessageKind::Request, "calc.add").unwrap();
    assert_eq!(add.doc.as_deref(), Some("Adds two numbers."));
    assert_eq!(add.payload["properties"]["a"]["type"], "integer");
    assert_eq!(add.reply.as_ref().unwrap()["properties"]["sum"]["type"], "integer");
    assert!(!add.validated);
    assert!(description.message(MessageKind::Request, "calc.divide").unwrap().validated);
    assert_eq!(
        add.errors,
        [
            ErrorDescription::Reply {
                code: "overflow".into(),
                message: "the result does not fit in 32 bits".into(),
                details: vec![]
            },
            ErrorDescription::Reply {
                code: "no_such_user".into(),
                message: "no such user".into(),
                details: vec!["name".into()]
            },
            ErrorDescription::Close { code: 4003, reason: "banned".into() },
            ErrorDescription::Internal,
        ]
    );
    let json = serde_json::to_value(&description).unwrap();
    assert_eq!(json["messages"][6]["kind"], "push");
    assert_eq!(
        json["messages"][0]["errors"][2],
        json!({"kind": "close", "code": 4003, "reason": "banned"})
    );
}
