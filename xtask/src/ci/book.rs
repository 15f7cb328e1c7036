//! The `book` stage: the mdBook in `docs/` builds, and every listing it includes comes from a
//! file by an `// ANCHOR:` marker (STYLE.md §6).
//!
//! Listings live in files that cargo compiles (examples, tests), so the build and clippy stages
//! already check that the code shown compiles. What this stage adds is that every
//! `{{#include FILE:NAME}}` finds its file and both of its markers — mdbook logs an error but
//! exits 0 when the file is missing, and renders an empty listing without a word when a marker
//! is — and that no include uses line numbers, which silently go stale when the file changes.
//! It also checks that the Conformance chapter has every section of the Autobahn suite for
//! every side (`autobahn::conformance::check_sections`).

use std::path::Path;

use super::Context;
use crate::cmd;

/// Checks the includes, then builds the book.
pub(super) fn build(_: &mut Context) -> Result<(), String> {
    let src = cmd::root().join("docs/src");
    let mut problems = Vec::new();
    check_dir(&src, &mut problems)?;
    let conformance = cmd::root().join(crate::autobahn::conformance::CHAPTER);
    match std::fs::read_to_string(&conformance) {
        Ok(chapter) => {
            if let Err(e) = crate::autobahn::conformance::check_sections(&chapter) {
                problems.push(e);
            }
        }
        Err(e) => problems.push(format!("cannot read {}: {e}", conformance.display())),
    }
    if !problems.is_empty() {
        for problem in &problems {
            println!("  - {problem}");
        }
        return Err(format!("{} problem(s) in docs/src", problems.len()));
    }
    if !cmd::succeeds(&mut cmd::tool("mdbook", ["--version"])) {
        // `cargo xtask ci` must pass on a fresh machine by itself (the README's test command),
        // so the stage installs the pinned mdbook it needs, once.
        println!("  mdbook is missing: installing mdbook {MDBOOK_VERSION} (a few minutes, once)");
        cmd::run(&mut cmd::tool(
            "cargo",
            [
                "install",
                "--locked",
                "mdbook",
                "--version",
                MDBOOK_VERSION,
                "--no-default-features",
                "--features",
                "search",
            ],
        ))?;
    }
    cmd::run(&mut cmd::tool("mdbook", ["build", "docs"]))
}

/// The mdbook the book is built with; `.ci/run` installs the same version.
const MDBOOK_VERSION: &str = "0.5.4";

/// Checks every Markdown file under `dir`.
fn check_dir(dir: &Path, problems: &mut Vec<String>) -> Result<(), String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("cannot read {}: {e}", dir.display()))?.path();
        if path.is_dir() {
            check_dir(&path, problems)?;
        } else if path.extension().is_some_and(|ext| ext == "md") {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let base = path.parent().unwrap_or(dir);
            for include in includes(&text) {
                if let Err(problem) = check_include(base, include) {
                    problems
                        .push(format!("{}: {{{{#include {include}}}}}: {problem}", path.display()));
                }
            }
        }
    }
    Ok(())
}

/// The arguments of the `{{#include …}}` and `{{#rustdoc_include …}}` directives in `markdown`.
fn includes(markdown: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = markdown;
    while let Some(start) = rest.find("{{#") {
        rest = &rest[start + 3..];
        let Some(end) = rest.find("}}") else { break };
        let directive = &rest[..end];
        rest = &rest[end + 2..];
        for name in ["include ", "rustdoc_include "] {
            if let Some(argument) = directive.strip_prefix(name) {
                found.push(argument.trim());
            }
        }
    }
    found
}

/// Checks one include's `FILE[:ANCHOR]` argument, with FILE relative to `base`.
fn check_include(base: &Path, argument: &str) -> Result<(), String> {
    let (file, anchor) = match argument.split_once(':') {
        Some((file, anchor)) => (file, Some(anchor)),
        None => (argument, None),
    };
    let text = std::fs::read_to_string(base.join(file)).map_err(|e| format!("{file}: {e}"))?;
    let Some(anchor) = anchor else { return Ok(()) };
    if anchor.is_empty() || anchor.starts_with(|c: char| c.is_ascii_digit() || c == ':') {
        return Err("includes by line numbers; mark the listing with `// ANCHOR: name`".to_owned());
    }
    let has = |marker: &str| {
        text.lines().any(|line| {
            // `//` in Rust and JavaScript, `#` in Python and shell scripts.
            let line = line.trim_start();
            line.strip_prefix("//")
                .or_else(|| line.strip_prefix('#'))
                .and_then(|comment| comment.trim().strip_prefix(marker))
                .is_some_and(|name| name.trim() == anchor)
        })
    };
    match (has("ANCHOR:"), has("ANCHOR_END:")) {
        (true, true) => Ok(()),
        (false, _) => Err(format!("{file} has no `// ANCHOR: {anchor}`")),
        (true, false) => Err(format!("{file} has no `// ANCHOR_END: {anchor}`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_found_and_other_braces_ignored() {
        let md = "text {{#include ../a.rs:build}} and {{#title X}}\n\
                  ```rust\n{{#rustdoc_include b.rs}}\n```\n{{ not a directive }}";
        assert_eq!(includes(md), ["../a.rs:build", "b.rs"]);
    }

    #[test]
    fn anchors_must_exist_and_line_ranges_are_refused() {
        let dir = std::env::temp_dir().join(format!("xtask-book-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("listing.rs"),
            "// ANCHOR: whole\nfn a() {}\n    // ANCHOR: inner\nfn b() {}\n    // ANCHOR_END: inner\n\
             // ANCHOR: open\n// ANCHOR_END: whole\n",
        )
        .unwrap();
        assert_eq!(check_include(&dir, "listing.rs"), Ok(()));
        assert_eq!(check_include(&dir, "listing.rs:whole"), Ok(()));
        assert_eq!(check_include(&dir, "listing.rs:inner"), Ok(()));
        assert!(check_include(&dir, "listing.rs:open").unwrap_err().contains("ANCHOR_END: open"));
        assert!(check_include(&dir, "listing.rs:missing").unwrap_err().contains("no `// ANCHOR"));
        assert!(check_include(&dir, "listing.rs:2:3").unwrap_err().contains("line numbers"));
        assert!(check_include(&dir, "listing.rs::3").unwrap_err().contains("line numbers"));
        assert!(check_include(&dir, "nothing.rs:whole").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
