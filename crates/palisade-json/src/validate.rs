//! Rules a payload must follow beyond its shape.

use std::borrow::Cow;

use serde_json::json;

use crate::code::{ErrorCode, ErrorReply, Outcome, ReplyError};

/// A payload's rules beyond its shape (a length, a range, a format), checked after decoding
/// by the validated receive ([`crate::JsonSocket::recv_validated`]). A failure is answered
/// with `validation_failed` and counts as a strike.
///
/// With the `garde` feature, every `garde::Validate` type whose context is `Default` is
/// `Validate`. (garde rather than `validator`: validator's derive puts the field's value into
/// every error it raises, which an error reply must never carry back to the peer, while
/// garde's messages state the rule only; garde's report is a flat list of structured paths,
/// mapped to `data.…` in one walk; and garde has no default features, where validator 0.20
/// always brings `regex`, `url` and `idna`.)
pub trait Validate {
    /// Checks the rules.
    fn validate(&self) -> Result<(), Invalid>;
}

/// The rules a payload broke.
#[derive(Clone, Debug, Default, PartialEq, Eq, thiserror::Error)]
#[error("{} validation rule(s) broken", violations.len())]
pub struct Invalid {
    violations: Vec<Violation>,
}

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    path: String,
    rule: Cow<'static, str>,
    message: Cow<'static, str>,
}

impl Violation {
    /// The field's path inside `data` (`text`, `items[2].name`; empty for `data` itself).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The rule's name (`length`, `range` …).
    pub fn rule(&self) -> &str {
        &self.rule
    }

    /// What the rule says, for humans. Written by the application (or the validation library),
    /// so it must not quote the value.
    pub fn message(&self) -> &str {
        &self.message
    }

    fn wire_path(&self) -> String {
        match self.path.as_str() {
            "" => "data".to_owned(),
            p if p.starts_with('[') => format!("data{p}"),
            p => format!("data.{p}"),
        }
    }
}

impl Invalid {
    /// No violation yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// One violation.
    pub fn single(
        path: impl Into<String>,
        rule: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        let mut invalid = Self::new();
        invalid.push(path, rule, message);
        invalid
    }

    /// Adds a violation of `rule` at `path` (relative to `data`).
    pub fn push(
        &mut self,
        path: impl Into<String>,
        rule: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) {
        self.violations.push(Violation {
            path: path.into(),
            rule: rule.into(),
            message: message.into(),
        });
    }

    /// The violations, in the order found.
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }

    /// `Ok` when there is no violation: for building one up field by field.
    pub fn into_result(self) -> Result<(), Self> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }

    /// The `validation_failed` reply: the first violation's path and rule, and every
    /// violation under `details.violations`.
    pub fn to_reply(&self) -> ErrorReply {
        let mut reply = ErrorReply::generic(ErrorCode::ValidationFailed);
        if let Some(first) = self.violations.first() {
            reply = ErrorReply::with_code(
                ErrorCode::ValidationFailed,
                format!("the data failed validation: {}", first.message),
            )
            .with_path(first.wire_path());
        }
        let violations: Vec<_> = self
            .violations
            .iter()
            .map(|v| json!({"path": v.wire_path(), "rule": v.rule, "message": v.message}))
            .collect();
        reply.with_details(json!({ "violations": violations }))
    }
}

impl ReplyError for Invalid {
    fn outcome(&self) -> Outcome {
        Outcome::Reply(self.to_reply())
    }
}

#[cfg(feature = "garde")]
impl<T> Validate for T
where
    T: garde::Validate,
    T::Context: Default,
{
    fn validate(&self) -> Result<(), Invalid> {
        let report = match garde::Validate::validate(self) {
            Ok(()) => return Ok(()),
            Err(report) => report,
        };
        let mut invalid = Invalid::new();
        for (path, error) in report.iter() {
            // garde names no rule in its reports; its messages are fixed texts per rule
            // ("length is lower than 3") that do not quote the value.
            invalid.push(path.to_string(), "garde", error.message().to_owned());
        }
        invalid.into_result()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn reply_states_the_first_violation_and_lists_all() {
        let mut invalid = Invalid::new();
        invalid.push("text", "length", "at most 10 characters");
        invalid.push("tags[1]", "pattern", "lower-case letters only");
        invalid.push("", "custom", "empty message");
        let reply = invalid.to_reply();
        assert_eq!(reply.code(), &ErrorCode::ValidationFailed);
        assert_eq!(reply.path(), Some("data.text"));
        assert_eq!(reply.message(), "the data failed validation: at most 10 characters");
        assert_eq!(
            reply.details().unwrap()["violations"],
            json!([
                {"path": "data.text", "rule": "length", "message": "at most 10 characters"},
                {"path": "data.tags[1]", "rule": "pattern", "message": "lower-case letters only"},
                {"path": "data", "rule": "custom", "message": "empty message"},
            ])
        );
        assert_eq!(Invalid::new().into_result(), Ok(()));
    }

    #[cfg(feature = "garde")]
    #[test]
    fn garde_reports_become_data_paths() {
        #[derive(garde::Validate)]
        struct Inner {
            #[garde(range(min = 1, max = 5))]
            n: u8,
        }
        #[derive(garde::Validate)]
        struct Outer {
            #[garde(length(min = 3))]
            name: String,
            #[garde(dive)]
            items: Vec<Inner>,
        }
        let ok = Outer { name: "abc".into(), items: vec![Inner { n: 2 }] };
        assert_eq!(Validate::validate(&ok), Ok(()));
        let bad = Outer { name: "zq".into(), items: vec![Inner { n: 2 }, Inner { n: 9 }] };
        let invalid = Validate::validate(&bad).unwrap_err();
        let mut paths: Vec<_> = invalid.violations().iter().map(Violation::wire_path).collect();
        paths.sort();
        assert_eq!(paths, ["data.items[1].n", "data.name"]);
        // garde's messages describe the rule, not the value.
        let reply = serde_json::to_string(&invalid.to_reply()).unwrap();
        assert!(!reply.contains("zq") && !reply.contains('9'), "{reply}");
    }
}
