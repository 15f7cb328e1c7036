//! What a peer's message may cost before it is parsed: its size and its nesting depth.

/// Limits checked on every incoming frame before it is parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The largest frame accepted, in bytes; larger ones are answered with `too_large` without
    /// being parsed. Default 64 KiB. The connection's own `max_message_size` still applies
    /// first (and closes with 1009).
    pub max_size: usize,
    /// The deepest nesting of arrays and objects accepted, the envelope's object counting as
    /// one level; deeper frames are answered with `too_deep`. Default 32. serde_json refuses
    /// more than 128 levels whatever this says (as `malformed`).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_size: 64 * 1024, max_depth: 32 }
    }
}

impl Limits {
    /// With a size limit in bytes.
    pub fn with_max_size(mut self, bytes: usize) -> Self {
        self.max_size = bytes;
        self
    }

    /// With a depth limit.
    pub fn with_max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth;
        self
    }
}

/// Whether JSON text nests arrays and objects deeper than `max`, found in one pass over the
/// bytes without recursion, so that no parser ever sees a deeper input. Brackets inside
/// strings do not count (escaped quotes do not end a string). The text need not be valid:
/// whatever this does not catch, the parser does.
pub(crate) fn json_deeper_than(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'"' => {
                // Inside a string only `"` and `\` matter: skip to the next of them at memchr's
                // speed (text is most of a typical message; byte by byte, this scan cost more
                // than parsing).
                at += 1;
                loop {
                    match memchr::memchr2(b'"', b'\\', &bytes[at..]) {
                        // Unterminated: the parser's to report.
                        None => return false,
                        Some(i) if bytes[at + i] == b'\\' => at += i + 2,
                        Some(i) => {
                            at += i + 1;
                            break;
                        }
                    }
                    if at >= bytes.len() {
                        return false;
                    }
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            // Unbalanced closers are the parser's to report.
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        at += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_arrays_and_objects() {
        assert!(!json_deeper_than(b"{}", 1));
        assert!(json_deeper_than(b"[{}]", 1));
        assert!(!json_deeper_than(b"[{}]", 2));
        assert!(!json_deeper_than(br#"{"a":[1,{"b":2}],"c":{}}"#, 3));
        assert!(json_deeper_than(br#"{"a":[1,{"b":2}],"c":{}}"#, 2));
        // Siblings do not add up.
        assert!(!json_deeper_than(b"[[],[],[],[]]", 2));
        assert!(!json_deeper_than(b"1", 0));
        assert!(json_deeper_than(b"[]", 0));
    }

    #[test]
    fn brackets_in_strings_do_not_count() {
        assert!(!json_deeper_than(br#"{"a":"[[[[{{{{"}"#, 1));
        assert!(!json_deeper_than(br#"{"[[[[":"]]]]"}"#, 1));
    }

    #[test]
    fn escaped_quotes_do_not_end_strings() {
        // The string is `\"[[[[` — still a string after the escaped quote.
        assert!(!json_deeper_than(br#"{"a":"\"[[[["}"#, 1));
        // An escaped backslash ends the escape: the quote after it closes the string, so the
        // brackets that follow count.
        assert!(json_deeper_than(br#"{"a":"\\",[[1]]}"#, 2));
        assert!(!json_deeper_than(br#"{"a":"\\",[[1]]}"#, 3));
        // `\\\"` is an escaped backslash then an escaped quote: still inside.
        assert!(!json_deeper_than(br#"{"a":"\\\"[[["}"#, 1));
        // Unicode escapes are plain characters here.
        assert!(!json_deeper_than(br#"{"a":"\u005b\u005b"}"#, 1));
    }

    #[test]
    fn a_hundred_thousand_levels_are_refused_without_recursion() {
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        assert!(json_deeper_than(deep.as_bytes(), 32));
        let deep = r#"{"a":"#.repeat(100_000);
        assert!(json_deeper_than(deep.as_bytes(), 32));
        // Inside a string, the same bytes are harmless.
        let flat = format!(r#"{{"a":"{}"}}"#, "[".repeat(100_000));
        assert!(!json_deeper_than(flat.as_bytes(), 1));
    }

    #[test]
    fn unbalanced_closers_do_not_hide_depth() {
        assert!(json_deeper_than(b"]]]]]][[[", 2));
    }

    /// The scan byte by byte, as the rule reads: the reference the fast scan is held to.
    fn plain_deeper_than(bytes: &[u8], max: usize) -> bool {
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        for &b in bytes {
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max {
                        return true;
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        false
    }

    proptest::proptest! {
        /// The memchr scan agrees with the plain one on any mix of the bytes that matter,
        /// at every limit, including strings cut off after a backslash.
        #[test]
        fn the_fast_scan_equals_the_plain_one(
            bytes in proptest::collection::vec(
                proptest::sample::select(vec![b'"', b'\\', b'[', b']', b'{', b'}', b'a', b',']),
                0..200,
            ),
            max in 0usize..8,
        ) {
            proptest::prop_assert_eq!(json_deeper_than(&bytes, max), plain_deeper_than(&bytes, max));
        }
    }
}
