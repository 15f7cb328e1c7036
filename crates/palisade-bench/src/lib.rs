//! Macro benchmarks for palisade, run by `cargo xtask bench`.
//!
//! The crate holds bench-only code and is never published:
//!
//! - [`load`]: the load generator behind the `palisade-load` binary. It drives any echo server at
//!   `ws://ADDR/` with C connections, S-byte binary messages and W messages in flight per
//!   connection, and reports round trips/s, MB/s, p50/p99 latency, errors and its own CPU use.
//! - [`idle`]: opens N idle connections and reads the server's resident memory before and after.
//! - [`deflate`]: compressible text and permessage-deflate frames for compressed runs.
//! - [`handshake`]: the few lines of RFC 6455 §4 the generator and the fastwebsockets peer need.
//! - [`report`]: turns the results of a run into the `benchmarks.md` chapter and its SVG charts.
//! - [`peer`]: the argument parsing and accept loop of the two peer echo servers.
//! - [`procfs`]: resident memory and CPU time of a process, from `/proc`.
//! - [`fanout`]: the fan-out load generator behind the `palisade-fanout` binary: N members in
//!   one room and a publisher, at a fixed rate or flat out; deliveries/s, the servers' CPU per
//!   delivery, delivery latency, messages lost.
//! - [`fanout_peer`]: what the hand-written fan-out servers `fanout-tungstenite` and
//!   `fanout-fastwebsockets` share (a registry of per-member queues, naive and expert writers).
//! - [`soak`]: the soak generator behind `palisade-load soak` and `cargo xtask soak`: echo and
//!   room broadcast at once over many connections for a long time, every message numbered and
//!   checked (lost, duplicated, reordered), the server's memory at the start and the end.
//!
//! The peer echo servers, `echo-tungstenite` and `echo-fastwebsockets`, are binaries of this
//! crate with the shape of palisade's `examples/echo.rs`.

pub mod deflate;
pub mod fanout;
pub mod fanout_peer;
pub mod handshake;
pub mod idle;
pub mod load;
pub mod peer;
pub mod procfs;
pub mod report;
pub mod soak;
