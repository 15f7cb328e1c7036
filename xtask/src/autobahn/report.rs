//! Reading wstest's reports and judging them against `autobahn/expected.json`.
//!
//! wstest writes `index.json` into its output directory — per agent, per case, a `behavior` (how
//! the data exchange went) and a `behaviorClose` (how the closing went) — and one
//! `AGENT_case_N_N_N.json` per case with the details: what was `expected`, what was `received`,
//! the close code, whether the close was clean.
//!
//! A case passes when both are `OK`. Anything else fails the run unless the case is listed in
//! the expected-results file with a reason — NON-STRICT and INFORMATIONAL included, since a
//! listed reason is the only record of why we accept them — or it is UNIMPLEMENTED in a section
//! that the quick run leaves out ([`super::HEAVY`]). A listed case that now passes is reported as
//! stale: a warning, so the file gets cleaned up, not a failure.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use serde_json::Value;

/// The expected-results file, relative to the workspace root.
pub(super) const EXPECTED: &str = "autobahn/expected.json";

/// A test case's id, such as `6.4.3`, ordered number by number (so `1.1.10` follows `1.1.9`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CaseId {
    text: String,
    numbers: Vec<u32>,
}

impl CaseId {
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let numbers = text
            .split('.')
            .map(str::parse)
            .collect::<Result<Vec<u32>, _>>()
            .map_err(|_| format!("`{text}` is not a test case id such as 6.4.3"))?;
        Ok(Self { text: text.to_owned(), numbers })
    }

    /// The top-level section, `6` for `6.4.3`.
    pub(super) fn section(&self) -> u32 {
        self.numbers[0]
    }

    pub(super) fn as_str(&self) -> &str {
        &self.text
    }
}

impl Ord for CaseId {
    fn cmp(&self, other: &Self) -> Ordering {
        self.numbers.cmp(&other.numbers)
    }
}

impl PartialOrd for CaseId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for CaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One case's line in `index.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Outcome {
    pub(super) behavior: String,
    pub(super) behavior_close: String,
    /// The per-case report's file name, in the same directory.
    pub(super) report_file: Option<String>,
}

impl Outcome {
    fn passed(&self) -> bool {
        self.behavior == "OK" && self.behavior_close == "OK"
    }
}

/// The cases of one agent in `index.json`.
pub(super) fn read_index(dir: &Path, agent: &str) -> Result<BTreeMap<CaseId, Outcome>, String> {
    let path = dir.join("index.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!("cannot read {}: {e} (wstest writes it when the run ends)", path.display())
    })?;
    let index: Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    parse_index(&index, agent).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse_index(index: &Value, agent: &str) -> Result<BTreeMap<CaseId, Outcome>, String> {
    let Some(cases) = index.get(agent).and_then(Value::as_object) else {
        let agents: Vec<&String> =
            index.as_object().map(|o| o.keys().collect()).unwrap_or_default();
        return Err(format!("no results for agent `{agent}` (agents: {agents:?})"));
    };
    let mut outcomes = BTreeMap::new();
    for (id, case) in cases {
        let field = |name: &str| {
            case[name].as_str().map(str::to_owned).ok_or_else(|| format!("case {id} has no {name}"))
        };
        let outcome = Outcome {
            behavior: field("behavior")?,
            behavior_close: field("behaviorClose")?,
            report_file: case["reportfile"].as_str().map(str::to_owned),
        };
        outcomes.insert(CaseId::parse(id)?, outcome);
    }
    Ok(outcomes)
}

/// The case ids wstest said it would run: its output has a line `Cases = ['1.1.1', '1.1.2', …]`.
pub(super) fn planned_cases(wstest_output: &str) -> Option<Vec<CaseId>> {
    let list = wstest_output.lines().find_map(|line| line.strip_prefix("Cases = ["))?;
    // Python's repr: quoted strings, every other piece between quotes is an id.
    list.split(['\'', '"']).skip(1).step_by(2).map(|id| CaseId::parse(id).ok()).collect()
}

/// What `autobahn/expected.json` allows, for one side: case id → reason.
pub(super) type Allowed = BTreeMap<String, String>;

/// Reads the expected-results file: `{"server": {"6.4.3": "reason"}, "client": {}}`, plus an
/// optional `"about"` string for the humans reading it.
pub(super) fn read_expected(path: &Path) -> Result<(Allowed, Allowed), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    parse_expected(&value).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse_expected(value: &Value) -> Result<(Allowed, Allowed), String> {
    let object = value.as_object().ok_or("the top level must be an object")?;
    if let Some(key) = object.keys().find(|k| !matches!(k.as_str(), "server" | "client" | "about"))
    {
        return Err(format!("unknown key `{key}`: the keys are server, client and about"));
    }
    let side = |name: &str| -> Result<Allowed, String> {
        let Some(cases) = object.get(name) else { return Ok(Allowed::new()) };
        let cases = cases.as_object().ok_or(format!("`{name}` must map case ids to reasons"))?;
        let mut allowed = Allowed::new();
        for (id, reason) in cases {
            CaseId::parse(id).map_err(|e| format!("{name}: {e}"))?;
            match reason.as_str().map(str::trim) {
                Some(reason) if !reason.is_empty() => {
                    allowed.insert(id.clone(), reason.to_owned());
                }
                _ => return Err(format!("{name}: case {id} needs a reason (a non-empty string)")),
            }
        }
        Ok(allowed)
    };
    Ok((side("server")?, side("client")?))
}

/// The judgement of one run.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Verdict {
    /// Cases that passed.
    pub(super) passed: usize,
    /// Cases that did not pass but are allowed: case, behaviour, why.
    pub(super) accepted: Vec<(CaseId, String, String)>,
    /// Cases that did not pass and are not allowed.
    pub(super) unexpected: Vec<CaseId>,
    /// Cases wstest planned that have no result (the peer crashed, or the run was cut short).
    pub(super) missing: Vec<CaseId>,
    /// Allowed cases that ran and passed: their entry in the expected file is no longer needed.
    pub(super) stale: Vec<CaseId>,
}

/// Judges `outcomes` against `allowed`. `excluded` tells whether a case is one the quick run
/// leaves out, where UNIMPLEMENTED is what we expect.
pub(super) fn judge(
    planned: &[CaseId],
    outcomes: &BTreeMap<CaseId, Outcome>,
    allowed: &Allowed,
    excluded: impl Fn(&CaseId) -> bool,
) -> Verdict {
    let mut verdict = Verdict::default();
    for (id, outcome) in outcomes {
        let reason = allowed.get(id.as_str());
        let behaviour = format!("{}/{}", outcome.behavior, outcome.behavior_close);
        if outcome.passed() {
            verdict.passed += 1;
            if reason.is_some() {
                verdict.stale.push(id.clone());
            }
        } else if let Some(reason) = reason {
            verdict.accepted.push((id.clone(), behaviour, reason.clone()));
        } else if outcome.behavior == "UNIMPLEMENTED" && excluded(id) {
            let reason = "a case the quick run leaves out (HEAVY in xtask/src/autobahn.rs)";
            verdict.accepted.push((id.clone(), behaviour, reason.to_owned()));
        } else {
            verdict.unexpected.push(id.clone());
        }
    }
    verdict.missing = planned.iter().filter(|id| !outcomes.contains_key(id)).cloned().collect();
    verdict
}

/// The behaviours in the order the table shows them; others that turn up are added after.
const BEHAVIOURS: &[&str] = &["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"];

/// Prints the count of each behaviour per section, plus the cases whose closing went wrong.
pub(super) fn print_table(outcomes: &BTreeMap<CaseId, Outcome>) {
    let mut columns: Vec<&str> = BEHAVIOURS.to_vec();
    for outcome in outcomes.values() {
        if !columns.contains(&outcome.behavior.as_str()) {
            columns.push(&outcome.behavior);
        }
    }
    let sections: BTreeSet<u32> = outcomes.keys().map(CaseId::section).collect();
    let mut header = format!("  {:>7}  {:>5}", "section", "cases");
    for column in &columns {
        header.push_str(&format!("  {column:>w$}", w = column.len().max(3)));
    }
    header.push_str("  close-not-OK");
    println!("{header}");
    let row = |label: String, outcomes: Vec<&Outcome>| {
        let mut line = format!("  {label:>7}  {:>5}", outcomes.len());
        for column in &columns {
            let count = outcomes.iter().filter(|o| o.behavior == *column).count();
            line.push_str(&format!("  {count:>w$}", w = column.len().max(3)));
        }
        let bad_close = outcomes
            .iter()
            .filter(|o| !matches!(o.behavior_close.as_str(), "OK" | "INFORMATIONAL"))
            .count();
        line.push_str(&format!("  {bad_close:>12}"));
        println!("{line}");
    };
    for section in sections {
        let in_section = outcomes.iter().filter(|(id, _)| id.section() == section);
        row(section.to_string(), in_section.map(|(_, o)| o).collect());
    }
    row("total".to_owned(), outcomes.values().collect());
}

/// Prints what the per-case report says about a case that failed.
pub(super) fn print_failure(dir: &Path, id: &CaseId, outcome: &Outcome) {
    println!("  {id}: behavior {}, close {}", outcome.behavior, outcome.behavior_close);
    let Some(file) = &outcome.report_file else { return };
    let path = dir.join(file);
    let report: Value = match std::fs::read_to_string(&path).map(|t| serde_json::from_str(&t)) {
        Ok(Ok(report)) => report,
        _ => return println!("      ({} cannot be read)", path.display()),
    };
    for line in describe(&report) {
        println!("      {line}");
    }
}

/// The lines [`print_failure`] shows for a per-case report.
fn describe(report: &Value) -> Vec<String> {
    let text = |name: &str| report[name].as_str().unwrap_or("?").to_owned();
    let mut lines = vec![
        format!("description: {}", shorten(&plain(&text("description")), 160)),
        format!("result: {}", text("result")),
        format!("expected: {}", shorten(&report["expected"].to_string(), 300)),
        format!("received: {}", shorten(&report["received"].to_string(), 300)),
        format!("close: {}", text("resultClose")),
    ];
    let expected_close = &report["expectedClose"];
    lines.push(format!(
        "close detail: wasClean={} remoteCloseCode={} (expected one of {}) \
         closedByMe={} (expected {}), droppedByMe={}",
        report["wasClean"],
        report["remoteCloseCode"],
        expected_close["closeCode"],
        report["closedByMe"],
        expected_close["closedByMe"],
        report["droppedByMe"],
    ));
    if let Some(reason) = report["wasNotCleanReason"].as_str() {
        lines.push(format!("not clean because: {reason}"));
    }
    lines
}

/// The text of a description in wstest's HTML: tags dropped, whitespace runs made one space.
fn plain(html: &str) -> String {
    let mut text = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                text.push(' ');
            }
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` cut to `max` characters, with an ellipsis when something was cut.
fn shorten(text: &str, max: usize) -> String {
    let text = text.trim();
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn id(text: &str) -> CaseId {
        CaseId::parse(text).unwrap()
    }

    fn outcome(behavior: &str, behavior_close: &str) -> Outcome {
        Outcome {
            behavior: behavior.to_owned(),
            behavior_close: behavior_close.to_owned(),
            report_file: None,
        }
    }

    #[test]
    fn case_ids_sort_number_by_number() {
        let mut ids = [id("1.1.10"), id("10.1.1"), id("1.1.9"), id("2.1"), id("1.2.1")];
        ids.sort();
        let texts: Vec<&str> = ids.iter().map(CaseId::as_str).collect();
        assert_eq!(texts, ["1.1.9", "1.1.10", "1.2.1", "2.1", "10.1.1"]);
        assert_eq!(id("12.1.3").section(), 12);
        assert!(CaseId::parse("6.x").is_err());
        assert!(CaseId::parse("").is_err());
    }

    #[test]
    fn the_planned_cases_are_read_from_wstest_output() {
        let output = "Ok, will run 3 test cases against 1 servers\n\
                      Cases = ['1.1.1', '1.1.2', u'10.1.1']\n\
                      Servers = [u'ws://127.0.0.1:9001']\n";
        let planned = planned_cases(output).unwrap();
        assert_eq!(planned, [id("1.1.1"), id("1.1.2"), id("10.1.1")]);
        assert_eq!(planned_cases("Cases = []\n"), Some(vec![]));
        assert_eq!(planned_cases("no such line\n"), None);
    }

    #[test]
    fn the_index_is_read_for_one_agent() {
        let index = json!({"palisade": {
            "1.1.1": {"behavior": "OK", "behaviorClose": "OK", "reportfile": "p_1_1_1.json"},
            "6.4.3": {"behavior": "NON-STRICT", "behaviorClose": "OK"},
        }});
        let outcomes = parse_index(&index, "palisade").unwrap();
        assert_eq!(outcomes[&id("1.1.1")].report_file.as_deref(), Some("p_1_1_1.json"));
        assert_eq!(outcomes[&id("6.4.3")], outcome("NON-STRICT", "OK"));
        let error = parse_index(&index, "other").unwrap_err();
        assert!(error.contains("palisade"), "{error}");
        let broken = json!({"palisade": {"1.1.1": {"behavior": "OK"}}});
        assert!(parse_index(&broken, "palisade").is_err());
    }

    #[test]
    fn the_expected_file_needs_a_reason_per_case() {
        let (server, client) = parse_expected(&json!({
            "about": "why these fail",
            "server": {"6.4.3": "fail-fast UTF-8 is not done yet"},
        }))
        .unwrap();
        assert_eq!(server["6.4.3"], "fail-fast UTF-8 is not done yet");
        assert!(client.is_empty());
        assert!(parse_expected(&json!({"server": {"6.4.3": ""}})).is_err());
        assert!(parse_expected(&json!({"server": {"6.4.3": 1}})).is_err());
        assert!(parse_expected(&json!({"server": {"six": "x"}})).is_err());
        assert!(parse_expected(&json!({"servers": {}})).is_err());
        assert!(parse_expected(&json!([])).is_err());
    }

    #[test]
    fn the_committed_expected_file_parses() {
        read_expected(&crate::cmd::root().join(EXPECTED)).unwrap();
    }

    #[test]
    fn only_ok_ok_passes_and_anything_else_needs_a_reason() {
        let outcomes: BTreeMap<CaseId, Outcome> = [
            ("1.1.1", outcome("OK", "OK")),
            ("3.2", outcome("NON-STRICT", "OK")),
            ("5.1", outcome("OK", "WRONG CODE")),
            ("6.4.3", outcome("NON-STRICT", "OK")),
            ("7.1.6", outcome("INFORMATIONAL", "INFORMATIONAL")),
            ("7.5.1", outcome("OK", "OK")),
            ("12.1.1", outcome("UNIMPLEMENTED", "OK")),
            ("2.1", outcome("UNIMPLEMENTED", "OK")),
        ]
        .into_iter()
        .map(|(i, o)| (id(i), o))
        .collect();
        let allowed: Allowed =
            [("6.4.3", "slow UTF-8"), ("7.1.6", "informational"), ("7.5.1", "old")]
                .into_iter()
                .map(|(i, r)| (i.to_owned(), r.to_owned()))
                .collect();
        let mut planned: Vec<CaseId> = outcomes.keys().cloned().collect();
        planned.push(id("9.1.1"));
        let verdict = judge(&planned, &outcomes, &allowed, |id| id.section() == 12);
        assert_eq!(verdict.passed, 2);
        let accepted: Vec<&str> = verdict.accepted.iter().map(|(id, _, _)| id.as_str()).collect();
        assert_eq!(accepted, ["6.4.3", "7.1.6", "12.1.1"]);
        assert_eq!(verdict.accepted[0].1, "NON-STRICT/OK");
        assert_eq!(verdict.unexpected, [id("2.1"), id("3.2"), id("5.1")]);
        assert_eq!(verdict.missing, [id("9.1.1")]);
        assert_eq!(verdict.stale, [id("7.5.1")]);
    }

    #[test]
    fn a_clean_run_with_a_stale_entry_does_not_fail() {
        let outcomes: BTreeMap<CaseId, Outcome> = [(id("1.1.1"), outcome("OK", "OK"))].into();
        let allowed: Allowed = [("1.1.1".to_owned(), "was broken".to_owned())].into();
        let verdict = judge(&[id("1.1.1")], &outcomes, &allowed, |_| false);
        assert_eq!(verdict.stale, [id("1.1.1")]);
        assert!(verdict.unexpected.is_empty() && verdict.missing.is_empty());
    }

    #[test]
    fn a_failure_is_described_from_its_report() {
        let report = json!({
            "description": "Send a <b>text</b> message\nwith invalid UTF-8.<br>",
            "result": "Actual events differ from any expected.",
            "expected": {"OK": []},
            "received": [["message", "x".repeat(1000), false]],
            "resultClose": "The close code should have been 1007 or empty",
            "expectedClose": {"closeCode": [1007], "closedByMe": false},
            "wasClean": true,
            "remoteCloseCode": 1002,
            "closedByMe": false,
            "droppedByMe": false,
            "wasNotCleanReason": null,
        });
        let lines = describe(&report);
        assert_eq!(lines[0], "description: Send a text message with invalid UTF-8.");
        assert!(lines[3].ends_with('…') && lines[3].chars().count() < 320, "{}", lines[3]);
        assert!(lines[5].contains("remoteCloseCode=1002 (expected one of [1007])"), "{}", lines[5]);
        assert_eq!(lines.len(), 6);
    }
}
