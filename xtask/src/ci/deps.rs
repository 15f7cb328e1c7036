//! The `deps` stage: which palisade crate may depend on which (STYLE.md §2), checked against
//! `cargo metadata` so that a wrong arrow fails CI instead of waiting for a reviewer.
//!
//! The rules are data, in [`RULES`]: one row per crate, including crates that do not exist yet;
//! a row whose crate is not in the workspace is skipped and reported as such. A workspace crate
//! without a row fails the stage, so a new crate cannot arrive without a decision about it.
//!
//! What is checked, for every workspace crate:
//!
//! - its normal and build dependencies on palisade crates are among [`Rule::uses`];
//! - its dev-dependencies on palisade crates are among [`Rule::uses`] and [`Rule::dev_uses`];
//! - with [`Rule::externals`] set, its normal dependencies outside palisade are among them;
//! - no crate in [`Rule::never`] is reachable through normal dependencies, directly or not.
//!
//! Dev-dependencies are looser in two ways, each for a reason. `never` does not apply to them:
//! the protocol core's benchmarks compare it with other WebSocket libraries that bring tokio
//! along, which costs nothing in the core itself. And `dev_uses` lets the macro crate's UI tests
//! use the facade, because the code the macros generate names `::palisade::__private` and only
//! compiles with it. Nothing else is loosened: in particular the server and the client do not
//! reach each other even in tests; tests that need both live in the facade (`crates/palisade/tests/`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::Value;

use super::Context;
use crate::cmd;

/// What one crate may depend on.
struct Rule {
    /// The crate's package name.
    krate: &'static str,
    /// The palisade crates it may depend on (normal and build dependencies).
    uses: &'static [&'static str],
    /// The palisade crates its dev-dependencies may add to `uses`.
    dev_uses: &'static [&'static str],
    /// When set, the only non-palisade crates it may depend on.
    externals: Option<&'static [&'static str]>,
    /// Crates that must not be among its normal dependencies, directly or transitively.
    never: &'static [&'static str],
}

const ERROR: &str = "palisade-error";
const PROTO: &str = "palisade-proto";
const CONN: &str = "palisade-conn";
const SERVER: &str = "palisade-server";
const CLIENT: &str = "palisade-client";
const JSON: &str = "palisade-json";
const BLOCKING: &str = "palisade-blocking";
const HYPER: &str = "palisade-hyper";
const MACROS: &str = "palisade-macros";
const ROOMS: &str = "palisade-rooms";
const REDIS: &str = "palisade-redis";
const FACADE: &str = "palisade";

/// The protocol core does no I/O, reads no clock and draws no random numbers (STYLE.md §2, §4):
/// these crates would let it.
const IO_CLOCK_RNG: &[&str] =
    &["tokio", "mio", "socket2", "async-std", "smol", "getrandom", "rand"];

/// STYLE.md §2 as data.
const RULES: &[Rule] = &[
    Rule {
        krate: ERROR,
        uses: &[],
        dev_uses: &[],
        externals: Some(&["thiserror", "http"]),
        never: &[],
    },
    Rule { krate: PROTO, uses: &[ERROR], dev_uses: &[], externals: None, never: IO_CLOCK_RNG },
    Rule { krate: CONN, uses: &[PROTO, ERROR], dev_uses: &[], externals: None, never: &[] },
    // Server and client share the connection and never depend on each other.
    Rule { krate: SERVER, uses: &[CONN, PROTO, ERROR], dev_uses: &[], externals: None, never: &[] },
    Rule { krate: CLIENT, uses: &[CONN, PROTO, ERROR], dev_uses: &[], externals: None, never: &[] },
    // `conn` is an optional dependency of `json`: the message types work without a runtime.
    // Its end-to-end tests run a real server and a real client against each other.
    Rule {
        krate: JSON,
        uses: &[PROTO, ERROR, CONN],
        dev_uses: &[SERVER, CLIENT],
        externals: None,
        never: &[],
    },
    // The blocking API: the same core driven by std's sockets, with no async runtime in its tree
    // (STYLE.md §2), so that a program that wants threads pulls in no reactor.
    Rule {
        krate: BLOCKING,
        uses: &[PROTO, ERROR],
        dev_uses: &[],
        externals: None,
        never: &["tokio", "mio", "async-std", "smol"],
    },
    // The mounts on hyper and axum (STYLE.md §2: "an axum/hyper mount sits on server"): they
    // carry requests to the server's decision and upgraded streams to its connections, so the
    // protocol and the policies stay in the server.
    Rule { krate: HYPER, uses: &[SERVER, ERROR], dev_uses: &[], externals: None, never: &[] },
    // Rooms sit on the JSON layer; `proto` only for the `Message` type a broadcast shares.
    // Their end-to-end tests run a real server and real clients.
    Rule {
        krate: ROOMS,
        uses: &[CONN, ERROR, JSON, PROTO],
        dev_uses: &[SERVER, CLIENT],
        externals: None,
        never: &[],
    },
    // The Redis backend of the rooms; its tests run two servers and clients on each.
    Rule {
        krate: REDIS,
        uses: &[ROOMS, ERROR, JSON, PROTO],
        dev_uses: &[SERVER, CLIENT, CONN],
        externals: None,
        never: &[],
    },
    // Generated code names `::palisade::__private::…`, which the UI tests need to compile.
    Rule { krate: MACROS, uses: &[], dev_uses: &[FACADE], externals: None, never: &[] },
    Rule {
        krate: FACADE,
        uses: &[ERROR, PROTO, CONN, SERVER, CLIENT, JSON, MACROS, BLOCKING, HYPER, ROOMS, REDIS],
        // Itself, with the non-default features its examples need (`blocking`), so that
        // `cargo run --example blocking_echo` works without `--features`.
        dev_uses: &[FACADE],
        externals: None,
        never: &[],
    },
    // The tooling builds even while the crates it checks do not.
    Rule { krate: "xtask", uses: &[], dev_uses: &[], externals: None, never: &[] },
    // The benchmarks drive palisade's echo example as a separate process, like the peers' servers.
    Rule { krate: "palisade-bench", uses: &[], dev_uses: &[], externals: None, never: &[] },
];

/// Runs the check.
pub(super) fn check(_: &mut Context) -> Result<(), String> {
    let stdout =
        cmd::stdout(&mut cmd::cargo(["metadata", "--format-version", "1", "--all-features"]))?;
    let metadata: Value = serde_json::from_slice(&stdout)
        .map_err(|e| format!("cargo metadata printed something that is not JSON: {e}"))?;
    let violations = evaluate(&Workspace::new(&metadata)?, RULES);
    if violations.is_empty() {
        return Ok(());
    }
    for violation in &violations {
        println!("  - {violation}");
    }
    Err(format!("{} dependency rule(s) of STYLE.md §2 broken", violations.len()))
}

/// Applies `rules` to `workspace`, printing one line per rule, and returns the violations.
fn evaluate(workspace: &Workspace, rules: &[Rule]) -> Vec<String> {
    let mut violations = Vec::new();
    for krate in workspace.members.keys() {
        if !rules.iter().any(|rule| rule.krate == krate) {
            violations
                .push(format!("{krate}: has no dependency rule; add one to xtask/src/ci/deps.rs"));
        }
    }
    for rule in rules {
        let Some(member) = workspace.members.get(rule.krate) else {
            println!("  {:17} not in the workspace yet, skipped", rule.krate);
            continue;
        };
        let before = violations.len();
        for dependency in &member.declared {
            violations.extend(rule.refuses(dependency, workspace));
        }
        for forbidden in rule.never {
            if let Some(path) = workspace.path(&member.id, forbidden) {
                violations
                    .push(format!("{}: must never depend on {forbidden}: {path}", rule.krate));
            }
        }
        let verdict = if violations.len() == before { "ok" } else { "BREAKS THE RULES" };
        println!("  {:17} {verdict}", rule.krate);
    }
    violations
}

impl Rule {
    /// Why `dependency`, declared by this rule's crate, is not allowed, if it is not.
    fn refuses(&self, dependency: &Declared, workspace: &Workspace) -> Option<String> {
        let name = dependency.name.as_str();
        let kind = if dependency.dev { "dev-dependency" } else { "dependency" };
        if workspace.members.contains_key(name) {
            let allowed =
                self.uses.contains(&name) || (dependency.dev && self.dev_uses.contains(&name));
            return (!allowed).then(|| format!("{}: may not have {name} as a {kind}", self.krate));
        }
        let externals = self.externals?;
        (!dependency.dev && !externals.contains(&name)).then(|| {
            format!(
                "{}: may depend only on {} outside palisade, not on {name}",
                self.krate,
                externals.join(", ")
            )
        })
    }
}

/// A dependency as a crate's manifest declares it.
struct Declared {
    /// The package name (not a `package =` rename).
    name: String,
    /// Whether it is a dev-dependency; build dependencies count as normal ones.
    dev: bool,
}

/// A workspace crate.
struct Member {
    /// Its package id, the key into the resolved graph.
    id: String,
    /// The dependencies its manifest declares, of every kind and target, optional ones included.
    declared: Vec<Declared>,
}

/// What the check needs from `cargo metadata`.
struct Workspace {
    /// The workspace crates by package name.
    members: BTreeMap<String, Member>,
    /// Package id to package name, for every package in the resolved graph.
    names: BTreeMap<String, String>,
    /// Package id to the ids of its normal dependencies, as resolved with all features on.
    edges: BTreeMap<String, Vec<String>>,
}

impl Workspace {
    fn new(metadata: &Value) -> Result<Self, String> {
        let missing = |what: &str| format!("cargo metadata's output has no {what}");
        let packages = metadata["packages"].as_array().ok_or_else(|| missing("packages"))?;
        let names: BTreeMap<String, String> = packages
            .iter()
            .filter_map(|p| Some((p["id"].as_str()?.to_owned(), p["name"].as_str()?.to_owned())))
            .collect();

        let mut members = BTreeMap::new();
        let ids = metadata["workspace_members"].as_array().ok_or_else(|| missing("members"))?;
        for id in ids.iter().filter_map(Value::as_str) {
            let package = packages
                .iter()
                .find(|p| p["id"].as_str() == Some(id))
                .ok_or_else(|| missing("package for a workspace member"))?;
            let declared = package["dependencies"].as_array().into_iter().flatten();
            let declared = declared
                .filter_map(|d| {
                    let name = d["name"].as_str()?.to_owned();
                    Some(Declared { name, dev: d["kind"].as_str() == Some("dev") })
                })
                .collect();
            let name = names.get(id).ok_or_else(|| missing("name for a workspace member"))?;
            members.insert(name.clone(), Member { id: id.to_owned(), declared });
        }

        let mut edges = BTreeMap::new();
        let nodes = metadata["resolve"]["nodes"].as_array().ok_or_else(|| missing("resolve"))?;
        for node in nodes {
            let Some(id) = node["id"].as_str() else { continue };
            let normal = node["deps"].as_array().into_iter().flatten().filter(|dep| {
                // A `null` kind is a normal dependency; dev and build dependencies are not
                // linked into the crate.
                dep["dep_kinds"].as_array().into_iter().flatten().any(|k| k["kind"].is_null())
            });
            let targets = normal.filter_map(|dep| dep["pkg"].as_str().map(str::to_owned));
            edges.insert(id.to_owned(), targets.collect());
        }
        Ok(Self { members, names, edges })
    }

    /// The shortest chain of normal dependencies from package `from` to a package named `to`,
    /// written `a → b → to`, if there is one.
    fn path(&self, from: &str, to: &str) -> Option<String> {
        let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
        let mut seen = BTreeSet::from([from]);
        let mut queue = VecDeque::from([from]);
        while let Some(id) = queue.pop_front() {
            if self.names.get(id).is_some_and(|name| name == to) {
                let mut chain = vec![id];
                let mut at = id;
                while let Some(&up) = parent.get(at) {
                    chain.push(up);
                    at = up;
                }
                let chain: Vec<&str> = chain
                    .iter()
                    .rev()
                    .map(|id| self.names.get(*id).map_or(*id, String::as_str))
                    .collect();
                return Some(chain.join(" → "));
            }
            for next in self.edges.get(id).into_iter().flatten() {
                if seen.insert(next.as_str()) {
                    parent.insert(next.as_str(), id);
                    queue.push_back(next.as_str());
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Packages as `(name, [(dependency, kind)])`, `kind` as cargo metadata writes it.
    type Crates<'a> = &'a [(&'a str, &'a [(&'a str, Option<&'a str>)])];

    /// Metadata in which `crates` are the resolved packages and `members` the workspace.
    fn metadata(members: &[&str], crates: Crates<'_>) -> Value {
        let packages: Vec<Value> = crates
            .iter()
            .map(|(name, deps)| {
                let deps: Vec<Value> =
                    deps.iter().map(|(d, kind)| json!({ "name": d, "kind": kind })).collect();
                json!({ "id": format!("{name}-id"), "name": name, "dependencies": deps })
            })
            .collect();
        let nodes: Vec<Value> = crates
            .iter()
            .map(|(name, deps)| {
                let deps: Vec<Value> = deps
                    .iter()
                    .map(|(d, kind)| json!({ "pkg": format!("{d}-id"), "dep_kinds": [{ "kind": kind }] }))
                    .collect();
                json!({ "id": format!("{name}-id"), "deps": deps })
            })
            .collect();
        let members: Vec<String> = members.iter().map(|m| format!("{m}-id")).collect();
        json!({ "packages": packages, "workspace_members": members, "resolve": { "nodes": nodes } })
    }

    fn violations(members: &[&str], crates: Crates<'_>) -> Vec<String> {
        evaluate(&Workspace::new(&metadata(members, crates)).unwrap(), RULES)
    }

    #[test]
    fn the_layering_of_today_passes_and_missing_crates_are_skipped() {
        let found = violations(
            &[ERROR, PROTO, FACADE, "xtask"],
            &[
                (ERROR, &[("thiserror", None), ("http", None)]),
                (PROTO, &[(ERROR, None), ("bytes", None), ("fastwebsockets", Some("dev"))]),
                ("fastwebsockets", &[("tokio", None)]),
                (FACADE, &[(ERROR, None), (PROTO, None)]),
                ("xtask", &[("serde_json", None)]),
                ("thiserror", &[]),
                ("http", &[]),
                ("bytes", &[]),
                ("tokio", &[]),
                ("serde_json", &[]),
            ],
        );
        assert_eq!(found, Vec::<String>::new());
    }

    #[test]
    fn server_and_client_never_meet_even_in_tests() {
        let found = violations(
            &[SERVER, CLIENT],
            &[(SERVER, &[(CLIENT, Some("dev"))]), (CLIENT, &[(SERVER, None)])],
        );
        assert_eq!(
            found,
            [
                "palisade-server: may not have palisade-client as a dev-dependency",
                "palisade-client: may not have palisade-server as a dependency",
            ]
        );
    }

    #[test]
    fn macros_may_use_the_facade_only_in_tests() {
        let ok =
            violations(&[MACROS, FACADE], &[(MACROS, &[(FACADE, Some("dev"))]), (FACADE, &[])]);
        assert!(ok.is_empty(), "{ok:?}");
        let bad = violations(&[MACROS, FACADE], &[(MACROS, &[(FACADE, None)]), (FACADE, &[])]);
        assert_eq!(bad, ["palisade-macros: may not have palisade as a dependency"]);
    }

    #[test]
    fn error_crate_may_use_only_std_thiserror_and_http() {
        let found = violations(
            &[ERROR],
            &[(ERROR, &[("http", None), ("serde", None)]), ("http", &[]), ("serde", &[])],
        );
        assert_eq!(
            found,
            ["palisade-error: may depend only on thiserror, http outside palisade, not on serde"]
        );
    }

    #[test]
    fn tokio_reached_through_a_normal_dependency_is_found_with_its_path() {
        let found = violations(
            &[PROTO, ERROR],
            &[
                (PROTO, &[(ERROR, None), ("helper", Some("build")), ("netlib", None)]),
                (ERROR, &[]),
                ("helper", &[]),
                ("netlib", &[("tokio", None)]),
                ("tokio", &[]),
            ],
        );
        assert_eq!(
            found,
            ["palisade-proto: must never depend on tokio: palisade-proto → netlib → tokio"]
        );
    }

    #[test]
    fn a_crate_without_a_rule_fails() {
        let found = violations(&["palisade-extra"], &[("palisade-extra", &[])]);
        assert_eq!(
            found,
            ["palisade-extra: has no dependency rule; add one to xtask/src/ci/deps.rs"]
        );
    }
}
