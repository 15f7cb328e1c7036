//! The rules checked at compile time, mirroring the ones palisade enforces at run time.

/// Why `tag` cannot name a message, if it cannot: 1 to 64 bytes, starting with a letter, of
/// ASCII letters, digits and `. _ - : /` (readable in logs, safe in a JavaScript switch).
pub(crate) fn tag(tag: &str) -> Option<String> {
    let bytes = tag.as_bytes();
    if bytes.is_empty() || bytes.len() > 64 {
        return Some(format!("a tag is 1 to 64 bytes long; this one is {}", bytes.len()));
    }
    if !bytes[0].is_ascii_alphabetic() {
        return Some("a tag starts with an ASCII letter".to_owned());
    }
    if let Some(bad) = tag.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-:/".contains(*c))) {
        return Some(format!(
            "a tag holds ASCII letters, digits and `. _ - : /` only, not {bad:?}"
        ));
    }
    None
}

/// palisade-json's built-in error codes, which an application may not use.
const BUILT_IN: [&str; 11] = [
    "malformed",
    "too_large",
    "too_deep",
    "invalid_envelope",
    "unknown_event",
    "invalid_payload",
    "validation_failed",
    "unknown_reply",
    "unsupported_data",
    "no_reply",
    "internal",
];

/// Why `code` cannot be an application's error code, if it cannot (palisade-json's `AppCode`).
pub(crate) fn app_code(code: &str) -> Option<String> {
    let bytes = code.as_bytes();
    let snake = (1..=64).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
    if !snake {
        return Some(
            "an error code is 1 to 64 bytes of snake_case: a lowercase letter, then lowercase \
             letters, digits and `_`"
                .to_owned(),
        );
    }
    if BUILT_IN.contains(&code) {
        return Some(format!(
            "`{code}` is one of palisade's built-in codes, which tell the peer that palisade \
             refused the message; choose a code of your own"
        ));
    }
    None
}

/// Why an application may not send close code `code`, if it may not (RFC 6455 §7.4; the
/// same classes as palisade-error's `CloseCode::is_sendable`).
pub(crate) fn close_code(code: u16) -> Option<String> {
    match code {
        1000..=1003 | 1007..=1014 | 3000..=4999 => None,
        1004 | 1005 | 1006 | 1015 => Some(format!(
            "close code {code} is reserved: it may never be sent in a close frame (RFC 6455 §7.4.1)"
        )),
        _ => Some(format!(
            "close code {code} may not be sent: use 1000–1003, 1007–1014, or 3000–4999 \
             (4000–4999 are for applications)"
        )),
    }
}

/// A close reason fits a control frame: at most 123 bytes (RFC 6455 §5.5).
pub(crate) fn close_reason(reason: &str) -> Option<String> {
    (reason.len() > 123).then(|| {
        format!("a close reason is at most 123 bytes (RFC 6455 §5.5); this one is {}", reason.len())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        for good in ["a", "room.join", "chat/send", "a-b_c:d", &"x".repeat(64)] {
            assert_eq!(tag(good), None, "{good}");
        }
        for bad in ["", "1a", ".a", "room join", "é", "a\"b", &"x".repeat(65)] {
            assert!(tag(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn codes() {
        assert_eq!(app_code("room_full"), None);
        for bad in ["", "Room", "2fa", "room-full", "internal", "no_reply"] {
            assert!(app_code(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn close_codes_match_the_registry_classes() {
        let sendable: Vec<u16> = (0..=u16::MAX).filter(|c| close_code(*c).is_none()).collect();
        assert_eq!(sendable.len(), 4 + 8 + 2000);
        for code in [1000, 1003, 1007, 1014, 3000, 4999] {
            assert!(sendable.contains(&code));
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert!(!sendable.contains(&code));
        }
        assert!(close_reason(&"r".repeat(123)).is_none());
        assert!(close_reason(&"r".repeat(124)).is_some());
    }
}
