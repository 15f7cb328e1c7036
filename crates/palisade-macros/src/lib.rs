//! # palisade-macros
//!
//! One definition of an application protocol over palisade's JSON envelope, and everything
//! derived from it: the server's dispatch, a typed pusher, a typed client, and a
//! machine-readable description. Use it through the facade (`palisade::protocol`,
//! `palisade::ReplyError`, feature `macros`); the book's *Typed handlers* chapter walks
//! through it.
//!
//! ```ignore
//! #[palisade::protocol]
//! pub trait Chat {
//!     /// Joins a room.
//!     #[request("room.join")]
//!     async fn join(&mut self, cx: &Context<ChatPush>, payload: Join) -> Result<Joined, ChatError>;
//!
//!     #[event("typing")]
//!     async fn typing(&mut self, cx: &Context<ChatPush>, payload: Typing);
//!
//!     /// A message said in a room.
//!     #[push("said")]
//!     fn said(payload: Said);
//! }
//! ```
//!
//! ## Architecture invariants
//!
//! - **Every misuse is a compile error at the offending span** that says what to do instead;
//!   nothing is silently ignored. Each kind of mistake has a fixture under `tests/ui/fail`.
//! - **Generated code names only `::palisade::__private::…`** (and the user's own items), so it
//!   compiles wherever the facade is a dependency, whatever else is in scope.
//! - **No palisade crate is a dependency**: the rules the macros check at compile time (tags,
//!   application codes, close codes that may be sent) mirror palisade-json's and
//!   palisade-error's, and the facade's tests hold them to those at run time.
//! - What the macros emit reads like hand-written code under `cargo expand`: one `match` over
//!   the tags, one method per message, no hidden state.

mod check;
mod protocol;
mod reply_error;

use proc_macro::TokenStream;

/// Defines an application protocol on a trait: each method is a message, named by its tag.
///
/// - `#[request("tag")]` (`#[request("tag", validate)]` to check the payload's
///   `palisade::json::Validate` rules first): `async fn name(&mut self, cx: &Context<{Trait}Push>,
///   payload: P) -> Result<Reply, E>` where `E: ReplyError`. The context argument is optional.
/// - `#[event("tag")]` (or `validate`): `async fn name(&mut self, cx, payload: P)` returning
///   `()` or `Result<(), E>`.
/// - `#[push("tag")]`: `fn name(payload: P);` — a message the server sends.
/// - `#[on_connect]`: `async fn name(&mut self, cx)` returning `()` or `Result<(), E>`; an error
///   refuses the connection. `#[on_disconnect]`: `async fn name(&mut self, cx, ending: &Error)`.
///
/// Generates, beside the trait: `{Trait}Push` (the server's typed pusher), `{Trait}Client` and
/// `{Trait}Pushed` (the typed client and its pushes), `{Trait}Protocol::describe()` (tags and
/// JSON Schemas), and the provided methods `serve(ws)` / `serve_socket(socket)` on the trait.
#[proc_macro_attribute]
pub fn protocol(attr: TokenStream, item: TokenStream) -> TokenStream {
    protocol::expand(attr.into(), item.into()).unwrap_or_else(syn::Error::into_compile_error).into()
}

/// Derives `ReplyError` (what each variant does to a request), `FromReply` (how a typed client
/// recognises it) and `DescribeErrors` for an application's error enum. Each variant has one
/// of:
///
/// - `#[reply(code = "snake_case", message = "…")]`: an error reply; the connection goes on.
///   The variant's fields travel as the reply's `details` (they must be `Serialize` and
///   `Deserialize`).
/// - `#[close(code = 4000, reason = "…")]`: the connection ends with this close frame.
/// - `#[internal]`: the reply `internal`; the error itself stays in the server's log.
#[proc_macro_derive(ReplyError, attributes(reply, close, internal))]
pub fn derive_reply_error(item: TokenStream) -> TokenStream {
    reply_error::expand(item.into()).unwrap_or_else(syn::Error::into_compile_error).into()
}
