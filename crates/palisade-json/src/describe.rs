//! A machine-readable description of a typed protocol: every message's tag, direction, JSON
//! Schema (by `schemars`), reply, and the error codes and close codes it may end with.
//!
//! `#[palisade::protocol]` builds one for each protocol (`{Trait}Protocol::describe()`); a
//! server can serve it as JSON (`GET /protocol.json`) so that a JavaScript client, a test or
//! the book reads the protocol instead of guessing it.

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

/// A whole protocol.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ProtocolDescription {
    /// The protocol's name (the trait's).
    pub name: String,
    /// The subprotocol the envelope is negotiated under ([`crate::SUBPROTOCOL`]).
    pub subprotocol: &'static str,
    /// The messages, in the order of their declaration.
    pub messages: Vec<MessageDescription>,
}

impl ProtocolDescription {
    /// A protocol named `name` without messages yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), subprotocol: crate::SUBPROTOCOL, messages: Vec::new() }
    }

    /// With one more message.
    pub fn with_message(mut self, message: MessageDescription) -> Self {
        self.messages.push(message);
        self
    }

    /// The message with this tag and kind.
    pub fn message(&self, kind: MessageKind, tag: &str) -> Option<&MessageDescription> {
        self.messages.iter().find(|m| m.kind == kind && m.tag == tag)
    }
}

/// Who sends a message, and whether it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum MessageKind {
    /// Client to server, answered with a reply or an error reply.
    Request,
    /// Client to server, not answered (sent as a request, it is acknowledged with `null`).
    Event,
    /// Server to client.
    Push,
}

/// One message of a protocol.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct MessageDescription {
    /// The envelope's `event`.
    pub tag: String,
    /// Its direction and kind.
    pub kind: MessageKind,
    /// The documentation written on it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub doc: Option<String>,
    /// The JSON Schema of its `data`.
    pub payload: Value,
    /// The JSON Schema of the `data` of its ok reply (requests only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<Value>,
    /// Whether its payload is checked by [`crate::Validate`] (a failure is `validation_failed`).
    pub validated: bool,
    /// The application's errors it may end with.
    pub errors: Vec<ErrorDescription>,
}

impl MessageDescription {
    /// A request from the client, with its reply and errors.
    pub fn request<T: JsonSchema, R: JsonSchema, E: DescribeErrors>(tag: &str) -> Self {
        Self::of::<T>(tag, MessageKind::Request)
            .with_reply(schema::<R>())
            .with_errors(E::describe_errors())
    }

    /// An event from the client, with the errors its handler may report.
    pub fn event<T: JsonSchema, E: DescribeErrors>(tag: &str) -> Self {
        Self::of::<T>(tag, MessageKind::Event).with_errors(E::describe_errors())
    }

    /// A push from the server.
    pub fn push<T: JsonSchema>(tag: &str) -> Self {
        Self::of::<T>(tag, MessageKind::Push)
    }

    fn of<T: JsonSchema>(tag: &str, kind: MessageKind) -> Self {
        Self {
            tag: tag.to_owned(),
            kind,
            doc: None,
            payload: schema::<T>(),
            reply: None,
            validated: false,
            errors: Vec::new(),
        }
    }

    fn with_reply(mut self, reply: Value) -> Self {
        self.reply = Some(reply);
        self
    }

    /// With these errors (instead of those of the error type it was described with): for a
    /// message answered by hand, whose errors are values rather than a type's variants.
    pub fn with_errors(mut self, errors: Vec<ErrorDescription>) -> Self {
        self.errors = errors;
        self
    }

    /// With documentation (empty text is none).
    pub fn with_doc(mut self, doc: &str) -> Self {
        let doc = doc.trim();
        self.doc = (!doc.is_empty()).then(|| doc.to_owned());
        self
    }

    /// Marks its payload as validated.
    pub fn validated(mut self) -> Self {
        self.validated = true;
        self
    }
}

/// One error of an application's error type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorDescription {
    /// An error reply with this code; the connection goes on.
    Reply {
        /// The reply's `code`.
        code: String,
        /// Its `message`.
        message: String,
        /// The names of the `details` keys it carries (a variant's fields).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        details: Vec<String>,
    },
    /// The reply `internal`: the cause stays on the server.
    Internal,
    /// The end of the connection with this close frame.
    Close {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
}

/// An error type that can list what it does on the wire: generated by
/// `#[derive(palisade::ReplyError)]`.
pub trait DescribeErrors {
    /// One entry per variant, in declaration order (duplicates removed).
    fn describe_errors() -> Vec<ErrorDescription>;
}

/// [`crate::ErrorReply`] may carry any code: nothing to list.
impl DescribeErrors for crate::ErrorReply {
    fn describe_errors() -> Vec<ErrorDescription> {
        Vec::new()
    }
}

impl DescribeErrors for std::convert::Infallible {
    fn describe_errors() -> Vec<ErrorDescription> {
        Vec::new()
    }
}

/// The JSON Schema of `T`, self-contained (its definitions inside it).
pub fn schema<T: JsonSchema>() -> Value {
    let schema = schemars::SchemaGenerator::default().into_root_schema_for::<T>();
    schema.to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(JsonSchema)]
    #[allow(dead_code)]
    struct Join {
        room: String,
    }

    #[test]
    fn a_request_is_described_with_its_schemas() {
        let message = MessageDescription::request::<Join, u32, crate::ErrorReply>("room.join")
            .with_doc("  Joins a room. ");
        assert_eq!(message.doc.as_deref(), Some("Joins a room."));
        assert_eq!(message.payload["properties"]["room"]["type"], "string");
        assert_eq!(message.reply.as_ref().map(|r| &r["type"]), Some(&Value::from("integer")));
        let json = serde_json::to_value(ProtocolDescription::new("Chat").with_message(message))
            .expect("descriptions serialise");
        assert_eq!(json["subprotocol"], crate::SUBPROTOCOL);
        assert_eq!(json["messages"][0]["kind"], "request");
    }
}
