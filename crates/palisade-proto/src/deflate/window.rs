//! What a direction with context takeover must remember between messages when its zlib stream
//! is not kept: the last bytes that went through it, as many as its LZ77 window holds.
//!
//! A raw deflate stream refers back at most a window's length (RFC 1951 §2), so those bytes are
//! all of the context the next message may use. A fresh zlib stream given them as its
//! dictionary continues where the old one stopped: the compressor finds the same repetitions,
//! and the inflater resolves the same back-references. The peer sees one continuous stream.

/// The last bytes of a stream, at most `2^bits` of them. It holds only what has passed so far,
/// so a connection that exchanged one 1 KiB message keeps 1 KiB, not a whole window.
///
/// Once full it is a ring, so that keeping it up costs a copy of each message and no more;
/// it is put in order only when a stream is rebuilt from it, which costs far more anyway.
#[derive(Debug)]
pub(super) struct History {
    bytes: Vec<u8>,
    /// Once `bytes` is full: where the oldest byte is.
    start: usize,
    limit: usize,
}

impl History {
    pub(super) fn new(bits: u8) -> Self {
        Self { bytes: Vec::new(), start: 0, limit: 1 << bits }
    }

    /// The bytes, oldest first.
    pub(super) fn as_slice(&mut self) -> &[u8] {
        if self.start != 0 {
            self.bytes.rotate_left(self.start);
            self.start = 0;
        }
        &self.bytes
    }

    pub(super) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Forgets everything: the next message starts a new stream.
    pub(super) fn clear(&mut self) {
        self.bytes = Vec::new();
        self.start = 0;
    }

    /// Appends `data`, keeping only the last `limit` bytes, in a buffer never larger than
    /// `limit` (`Vec`'s doubling could give it nearly twice that).
    pub(super) fn extend(&mut self, data: &[u8]) {
        let mut data = &data[data.len().saturating_sub(self.limit)..];
        if self.bytes.len() < self.limit {
            let take = data.len().min(self.limit - self.bytes.len());
            let needed = self.bytes.len() + take;
            if needed > self.bytes.capacity() {
                let target = (self.bytes.capacity() * 2).clamp(needed, self.limit);
                self.bytes.reserve_exact(target - self.bytes.len());
            }
            self.bytes.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        // Full: overwrite the oldest bytes, wrapping around.
        while !data.is_empty() {
            let run = data.len().min(self.limit - self.start);
            self.bytes[self.start..self.start + run].copy_from_slice(&data[..run]);
            self.start = (self.start + run) % self.limit;
            data = &data[run..];
        }
    }

    /// Heap bytes held.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.bytes.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_window_and_never_allocates_past_it() {
        let mut h = History::new(9);
        assert!(h.is_empty());
        h.extend(b"abc");
        assert_eq!(h.as_slice(), b"abc");
        assert!(h.capacity() < 512);
        let data: Vec<u8> = (0..=250u8).cycle().take(3000).collect();
        let mut all = b"abc".to_vec();
        // Every split, so that the ring wraps at every place.
        for (i, piece) in data.chunks(37).chain(data.chunks(300)).chain([&data[..]]).enumerate() {
            h.extend(piece);
            all.extend_from_slice(piece);
            if i % 3 == 0 {
                assert_eq!(h.as_slice(), &all[all.len().saturating_sub(512)..]);
            }
            assert!(h.capacity() <= 512);
        }
        assert_eq!(h.as_slice(), &all[all.len() - 512..]);
        assert_eq!(h.capacity(), 512);
        h.clear();
        assert!(h.is_empty());
        assert_eq!(h.capacity(), 0);
    }
}
