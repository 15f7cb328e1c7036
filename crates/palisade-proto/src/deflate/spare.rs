//! Compressors kept per thread between messages, instead of per connection.
//!
//! A zlib-rs compressor is about 370 KiB whatever the window (its hash table alone is 128 KiB),
//! and setting one up clears most of it. Connections that do not keep theirs between messages
//! take one from here for each message and give it back after, so the memory this costs is
//! bounded per thread ([`SLOTS_PER_THREAD`]), not per connection.
//!
//! A compressor given back by a connection with context takeover stays tagged with it, as it
//! was left after the message: if the same connection comes back on the same thread before the
//! slot was taken by another, it continues its stream without rebuilding it from the window's
//! bytes (which costs about 2 ns per byte of window). Busy connections therefore compress as
//! fast as with a compressor of their own, while idle ones hold none. Any other compressor is
//! reset before it is handed out, so nothing of one connection's stream reaches another's.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::{Compress, Compression};

/// Compressors a thread keeps, at most (about 6 MiB).
const SLOTS_PER_THREAD: usize = 16;

/// Owner tags: unique per codec in the process.
static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

/// No connection's stream: a spare, reset before use.
const FREE: u64 = 0;

/// Where a connection with context takeover is in its stream: which codec, and how many
/// messages it has compressed. A compressor tagged with an older position is stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Position {
    pub(super) owner: u64,
    pub(super) messages: u64,
}

impl Position {
    pub(super) fn new() -> Self {
        Self { owner: NEXT_OWNER.fetch_add(1, Ordering::Relaxed), messages: 0 }
    }
}

struct Slot {
    /// [`FREE`], or the owner of the stream the compressor holds.
    owner: u64,
    messages: u64,
    level: u32,
    bits: u8,
    compress: Compress,
}

thread_local! {
    /// Least recently used first.
    static SLOTS: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// A compressor at `level` with a `bits` raw deflate window. With `at`, and when this thread
/// still holds that stream as it was left at that position, returns it and `true`: the caller
/// continues it. Otherwise returns a reset compressor and `false`.
pub(super) fn take(at: Option<Position>, level: Compression, bits: u8) -> (Compress, bool) {
    let fits = |s: &Slot| s.level == level.level() && s.bits == bits;
    let found = SLOTS
        .try_with(|slots| {
            let mut slots = slots.borrow_mut();
            if let Some(at) = at
                && let Some(i) = slots.iter().position(|s| s.owner == at.owner)
            {
                let slot = slots.remove(i);
                if slot.messages == at.messages && fits(&slot) {
                    return Some((slot.compress, true));
                }
                // Stale (the connection went on elsewhere): a spare like any other.
                if fits(&slot) {
                    return Some((slot.compress, false));
                }
            }
            if let Some(i) = slots.iter().position(|s| s.owner == FREE && fits(s)) {
                return Some((slots.remove(i).compress, false));
            }
            if slots.len() < SLOTS_PER_THREAD {
                return None;
            }
            // Full: the least recently used stream gives way; its owner will rebuild it.
            let i = slots.iter().position(fits)?;
            Some((slots.remove(i).compress, false))
        })
        .ok()
        .flatten();
    match found {
        Some((compress, true)) => (compress, true),
        Some((mut compress, false)) => {
            compress.reset();
            (compress, false)
        }
        None => (Compress::new_with_window_bits(level, false, bits), false),
    }
}

/// Keeps `compress` on this thread, tagged with `at` (the position after the message it
/// compressed) or free, dropping the least recently used compressor when there are enough.
pub(super) fn give_back(at: Option<Position>, level: Compression, bits: u8, compress: Compress) {
    let (owner, messages) = at.map_or((FREE, 0), |at| (at.owner, at.messages));
    // During thread teardown the slots are gone; the compressor is then simply dropped.
    let _ = SLOTS.try_with(|slots| {
        let mut slots = slots.borrow_mut();
        if slots.len() >= SLOTS_PER_THREAD {
            slots.remove(0);
        }
        slots.push(Slot { owner, messages, level: level.level(), bits, compress });
    });
}

/// The codec of `owner` is gone: its compressor on this thread, if any, becomes a spare.
pub(super) fn forget(owner: u64) {
    let _ = SLOTS.try_with(|slots| {
        if let Ok(mut slots) = slots.try_borrow_mut()
            && let Some(slot) = slots.iter_mut().find(|s| s.owner == owner)
        {
            slot.owner = FREE;
        }
    });
}
