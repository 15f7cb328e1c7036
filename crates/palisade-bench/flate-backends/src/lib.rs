//! What the `backends` bench compresses, and which backend this build uses.
//!
//! flate2 links exactly one backend per build, chosen by a feature; this package is built once
//! per backend (`./run.sh`) and each build measures the same messages.

#[cfg(not(any(feature = "zlib-rs", feature = "zlib-ng", feature = "miniz")))]
compile_error!("choose the flate2 backend: --features zlib-rs, zlib-ng or miniz");

/// The backend this build measures, as the bench group name.
pub const BACKEND: &str = if cfg!(feature = "zlib-ng") {
    "zlib-ng"
} else if cfg!(feature = "zlib-rs") {
    "zlib-rs"
} else {
    "miniz"
};

/// Whether `Compress::new_with_window_bits` exists in this build: only the zlib-family
/// backends let the window be chosen, and permessage-deflate's `*_max_window_bits` needs it.
pub const WINDOW_BITS: bool = cfg!(any(feature = "zlib-rs", feature = "zlib-ng"));

/// `count` distinct messages of exactly `size` bytes of JSON-like chat events, picked from a
/// small vocabulary by a fixed xorshift sequence: every build and run gets the same bytes.
pub fn json_messages(size: usize, count: usize) -> Vec<Vec<u8>> {
    const USERS: [&str; 8] = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"];
    const ROOMS: [&str; 4] = ["general", "random", "support", "release-planning"];
    const EVENTS: [&str; 4] = ["message", "typing", "presence", "reaction"];
    const WORDS: [&str; 24] = [
        "the", "build", "is", "green", "again", "after", "merging", "deploy", "tonight", "review",
        "please", "latency", "looks", "fine", "on", "staging", "ship", "it", "thanks", "for",
        "checking", "logs", "broken", "fixed",
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut pick = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let (mut id, mut ts) = (100_000u64, 1_763_760_000_000u64);
    (0..count)
        .map(|_| {
            let mut text = String::with_capacity(size + 256);
            text.push('[');
            while text.len() < size {
                id += 1 + pick(3) as u64;
                ts += pick(5_000) as u64;
                let words: Vec<&str> =
                    (0..3 + pick(10)).map(|_| WORDS[pick(WORDS.len())]).collect();
                text.push_str(&format!(
                    "{{\"id\":{id},\"ts\":{ts},\"user\":\"{}\",\"room\":\"{}\",\"event\":\"{}\",\
                     \"text\":\"{}\",\"seen\":{}}},",
                    USERS[pick(USERS.len())],
                    ROOMS[pick(ROOMS.len())],
                    EVENTS[pick(EVENTS.len())],
                    words.join(" "),
                    pick(2) == 1,
                ));
            }
            text.truncate(size);
            text.into_bytes()
        })
        .collect()
}
