//! Typed handlers: a to-do list whose protocol is one trait. `#[palisade::protocol]` turns it
//! into the server's dispatch, a pusher that can send only the declared pushes, a typed client,
//! and a description with JSON Schemas; `#[derive(ReplyError)]` gives each error its code.
//! The book's "Typed handlers" chapter shows its parts.
//!
//! Run the server, then the scripted client against it, or print the protocol's description:
//!
//! ```text
//! cargo run --release --example typed_todo -- --addr 127.0.0.1:9006
//! cargo run --release --example typed_todo -- --client ws://127.0.0.1:9006
//! cargo run --release --example typed_todo -- --describe
//! ```
//!
//! The server prints `listening on ws://ADDR` once it accepts connections and shuts down on
//! Ctrl-C. The client prints one line per step: each request's reply or typed error, and the
//! pushes it received. Any client of `palisade.json.v1` can speak to the server too, e.g.
//! `{"event":"todo.add","id":1,"data":{"title":"milk"}}`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::json::typed::{CallError, Context};
use palisade::json::{Invalid, SUBPROTOCOL, Validate};
use palisade::server::{Running, Server, State};
use palisade::{ReplyError, WebSocket};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// ANCHOR: payloads
/// A new item.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct NewItem {
    /// What to do: 1 to 200 characters.
    title: String,
}

impl Validate for NewItem {
    fn validate(&self) -> Result<(), Invalid> {
        let length = self.title.chars().count();
        if !(1..=200).contains(&length) {
            return Err(Invalid::single("title", "length", "a title has 1 to 200 characters"));
        }
        Ok(())
    }
}

/// An item of the list.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
struct Item {
    id: u64,
    title: String,
    done: bool,
}

/// Names an item.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct ItemId {
    id: u64,
}
// ANCHOR_END: payloads

// ANCHOR: errors
/// What can go wrong, and what each failure does on the wire.
#[derive(Debug, ReplyError)]
enum TodoError {
    /// An error reply `not_found`; its field travels as `details.id`.
    #[reply(code = "not_found", message = "no item has this id")]
    NotFound { id: u64 },
    /// An error reply `list_full`.
    #[reply(code = "list_full", message = "the list holds 100 items at most")]
    ListFull,
    /// The end of the connection: 4008, after too many requests that failed.
    #[close(code = 4008, reason = "too many failed requests")]
    TooManyFailures,
}
// ANCHOR_END: errors

// ANCHOR: protocol
/// A to-do list shared by every client.
#[palisade::protocol]
trait Todo {
    /// Adds an item and replies with it.
    #[request("todo.add", validate)]
    async fn add(&mut self, cx: &Context<TodoPush>, payload: NewItem) -> Result<Item, TodoError>;

    /// Marks an item done.
    #[request("todo.done")]
    async fn done(&mut self, cx: &Context<TodoPush>, payload: ItemId) -> Result<Item, TodoError>;

    /// Removes the items that are done; answered with nothing.
    #[event("todo.clear_done")]
    async fn clear_done(&mut self, cx: &Context<TodoPush>, payload: ());

    /// The whole list, after each change.
    #[push("todo.list")]
    fn list(payload: Vec<Item>);

    /// Sends the list as it is when a client connects.
    #[on_connect]
    async fn connected(&mut self, cx: &Context<TodoPush>) -> Result<(), TodoError>;
}
// ANCHOR_END: protocol

// ANCHOR: impl
/// The list every connection shares.
#[derive(Clone, Debug, Default)]
struct List(Arc<Mutex<Vec<Item>>>);

/// One connection's value: the shared list, and this client's failures.
struct Session {
    list: List,
    failures: u32,
}

impl Session {
    fn items(&self) -> std::sync::MutexGuard<'_, Vec<Item>> {
        // A poisoned lock means a handler panicked mid-change; the list is still usable.
        self.list.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts a failed request; the tenth ends the connection instead.
    fn failed(&mut self, error: TodoError) -> TodoError {
        self.failures += 1;
        if self.failures >= 10 { TodoError::TooManyFailures } else { error }
    }

    async fn push_list(&self, cx: &Context<TodoPush>) {
        let items = self.items().clone();
        // A closed connection cannot be told; its loop ends on its own.
        let _ = cx.push().list(&items).await;
    }
}

impl Todo for Session {
    async fn add(&mut self, cx: &Context<TodoPush>, new: NewItem) -> Result<Item, TodoError> {
        let item = {
            let mut items = self.items();
            if items.len() >= 100 {
                drop(items);
                return Err(self.failed(TodoError::ListFull));
            }
            let id = items.iter().map(|i| i.id + 1).max().unwrap_or(1);
            let item = Item { id, title: new.title, done: false };
            items.push(item.clone());
            item
        };
        self.push_list(cx).await;
        Ok(item)
    }

    async fn done(
        &mut self,
        cx: &Context<TodoPush>,
        ItemId { id }: ItemId,
    ) -> Result<Item, TodoError> {
        let found = self.items().iter_mut().find(|i| i.id == id).map(|item| {
            item.done = true;
            item.clone()
        });
        let Some(item) = found else { return Err(self.failed(TodoError::NotFound { id })) };
        self.push_list(cx).await;
        Ok(item)
    }

    async fn clear_done(&mut self, cx: &Context<TodoPush>, (): ()) {
        self.items().retain(|item| !item.done);
        self.push_list(cx).await;
    }

    async fn connected(&mut self, cx: &Context<TodoPush>) -> Result<(), TodoError> {
        self.push_list(cx).await;
        Ok(())
    }
}
// ANCHOR_END: impl

// ANCHOR: client
/// A scripted client: typed requests, typed errors, pushes. Returns what it saw, a line per
/// step.
pub(crate) async fn client(url: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let connector = palisade::client::Client::new().with_subprotocols([SUBPROTOCOL]);
    let ws = connector.connect(url).await?.into_socket();
    let (todo, mut pushes) = TodoClient::new(ws);
    let todo = todo.with_timeout(Duration::from_secs(5));
    let mut seen = Vec::new();

    let milk = todo.add(&NewItem { title: "buy milk".into() }).await?;
    seen.push(format!("added #{} {:?}", milk.id, milk.title));
    match todo.add(&NewItem { title: String::new() }).await {
        // Refused before the handler ran: a built-in code, with the field's path.
        Err(CallError::Refused(reply)) => seen.push(format!("refused: {reply}")),
        other => return Err(format!("an empty title: {other:?}").into()),
    }
    match todo.done(&ItemId { id: 999 }).await {
        // One of the protocol's errors, with its details decoded.
        Err(CallError::Rejected(TodoError::NotFound { id })) => seen.push(format!("no item #{id}")),
        other => return Err(format!("an unknown id: {other:?}").into()),
    }
    let done = todo.done(&ItemId { id: milk.id }).await?;
    seen.push(format!("done #{} {}", done.id, done.done));
    todo.clear_done(&()).await?;
    // The list as it was at connect, then after each change: 4 pushes.
    for _ in 0..4 {
        let TodoPushed::List(items) = pushes.recv().await?;
        seen.push(format!("list: {} item(s)", items.len()));
    }
    todo.close().await?;
    Ok(seen)
}
// ANCHOR_END: client

/// Starts the server on `addr`.
pub(crate) async fn serve(addr: &str) -> std::io::Result<Running> {
    // ANCHOR: server
    let server = Server::builder()
        .route("/", |ws: WebSocket, State(list): State<List>| async move {
            Session { list, failures: 0 }.serve(ws).await
        })
        .with_subprotocols([SUBPROTOCOL])
        .with_state(List::default())
        .build();
    // ANCHOR_END: server
    server.bind(addr).await
}

#[path = "common/args.rs"]
mod args;

const USAGE: &str = "\
usage: typed_todo [--addr HOST:PORT | --client URL | --describe]

A to-do list whose protocol is one trait with #[palisade::protocol].

  --addr HOST:PORT   serve it here (default 127.0.0.1:9006)
  --client URL       run the scripted typed client against a server at URL
  --describe         print the protocol's description (tags, JSON Schemas, errors) as JSON
  -h, --help         print this and exit
";

enum Mode {
    Serve(String),
    Client(String),
    Describe,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut mode = Mode::Serve("127.0.0.1:9006".to_owned());
    let mut args = args::Args::new("typed_todo", USAGE);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => mode = Mode::Serve(args.value("--addr")),
            "--client" => mode = Mode::Client(args.value("--client")),
            "--describe" => mode = Mode::Describe,
            other => args.unknown(other),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let addr = match mode {
        // ANCHOR: describe
        Mode::Describe => {
            let description = TodoProtocol::describe();
            println!("{}", serde_json::to_string_pretty(&description)?);
            return Ok(());
        }
        // ANCHOR_END: describe
        Mode::Client(url) => {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            for line in runtime.block_on(client(&url))? {
                println!("{line}");
            }
            return Ok(());
        }
        Mode::Serve(addr) => addr,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let running = serve(&addr).await?;
        println!("listening on ws://{}", running.local_addr());
        tokio::signal::ctrl_c().await?;
        running.shutdown(Duration::from_secs(5)).await;
        Ok(())
    })
}
