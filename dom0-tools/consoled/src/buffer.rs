//! The output waiting for a guest's pty: bounded, because nobody may be reading the pty (Xen's `limit`). When more
//! arrives than fits, the oldest bytes are dropped (the log file, written as output arrives, still has them).

use std::collections::VecDeque;

/// Bytes a console keeps for its pty when the domain's `console/limit` does not say.
pub const DEFAULT_LIMIT: usize = 64 * 1024;
/// The most a domain's `console/limit` may ask for (the guest can write that node).
pub const MAX_LIMIT: usize = 1024 * 1024;
/// The least (one output ring's worth, so a pass never drops what it just took).
pub const MIN_LIMIT: usize = 2048;

/// A bounded byte queue that drops its oldest bytes.
#[derive(Debug)]
pub struct OutBuf {
    data: VecDeque<u8>,
    limit: usize,
    /// Bytes dropped so far because the queue was full.
    pub dropped: u64,
}

impl OutBuf {
    /// An empty queue of at most `limit` bytes (clamped to [`MIN_LIMIT`]..=[`MAX_LIMIT`]).
    pub fn new(limit: usize) -> Self {
        OutBuf { data: VecDeque::new(), limit: limit.clamp(MIN_LIMIT, MAX_LIMIT), dropped: 0 }
    }

    /// The bound.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes queued.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Queues `bytes`, dropping the oldest queued bytes (or the head of `bytes`) beyond the limit.
    pub fn push(&mut self, bytes: &[u8]) {
        let bytes = if bytes.len() > self.limit {
            self.dropped += (bytes.len() - self.limit) as u64;
            &bytes[bytes.len() - self.limit..]
        } else {
            bytes
        };
        let over = (self.data.len() + bytes.len()).saturating_sub(self.limit);
        if over > 0 {
            self.data.drain(..over);
            self.dropped += over as u64;
        }
        self.data.extend(bytes);
    }

    /// The oldest queued bytes, contiguous.
    pub fn front(&self) -> &[u8] {
        self.data.as_slices().0
    }

    /// Drops `n` bytes from the front (they were written).
    pub fn advance(&mut self, n: usize) {
        self.data.drain(..n.min(self.data.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_bytes_within_its_limit() {
        let mut b = OutBuf::new(4096);
        for i in 0..100u32 {
            b.push(&[i as u8; 100]);
        }
        assert_eq!(b.len(), 4096);
        assert_eq!(b.dropped, 10_000 - 4096);
        let mut all = Vec::new();
        while !b.is_empty() {
            let f = b.front().to_vec();
            b.advance(f.len());
            all.extend(f);
        }
        assert_eq!(all.len(), 4096);
        assert_eq!(*all.last().unwrap(), 99);
        assert_eq!(all[0], 59, "the oldest kept byte is from push 59 (10000 - 4096 = 5904)");
        // One push over the limit keeps its tail.
        b.push(&[7; 10_000]);
        assert_eq!(b.len(), 4096);
    }

    #[test]
    fn limits_are_clamped() {
        assert_eq!(OutBuf::new(0).limit(), MIN_LIMIT);
        assert_eq!(OutBuf::new(usize::MAX).limit(), MAX_LIMIT);
    }
}
