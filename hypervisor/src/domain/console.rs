//! Guest console output: per-domain line assembly and rate limiting.
//!
//! Keel prints guest text on its own console synchronously (the UART is polled), so a guest writing without end
//! would hold a CPU for as long as the UART needs for its text. Each domain other than the initial one (whose
//! output Xen, too, passes straight through) has a token bucket of bytes, refilled at [`RATE`] bytes per second up
//! to [`BURST`]; what goes beyond it is dropped and counted, and one "... N bytes of console output suppressed"
//! line says so when the domain may print again. A write then never costs the UART more than [`BURST`] bytes, and
//! a flooding domain gets about [`RATE`] bytes a second (a third of a 115200-baud UART).

use alloc::vec::Vec;

/// Bytes a second a domain may print, on average.
pub const RATE: u64 = 4 * 1024;

/// Bytes a domain may print at once after a quiet spell.
pub const BURST: u64 = 16 * 1024;

/// Longest line kept before it is printed anyway.
pub const MAX_LINE: usize = 256;

/// A token bucket of bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    rate: u64,
    burst: u64,
    tokens: u64,
    /// The time up to which refills have been counted.
    last_ns: u64,
    /// Bytes dropped since the last report.
    suppressed: u64,
}

impl Bucket {
    /// A full bucket of `burst` bytes refilled at `rate` bytes a second, at system time `now`.
    pub fn new(rate: u64, burst: u64, now: u64) -> Self {
        Self { rate, burst, tokens: burst, last_ns: now, suppressed: 0 }
    }

    fn refill(&mut self, now: u64) {
        if now <= self.last_ns || self.rate == 0 {
            return;
        }
        let elapsed = (now - self.last_ns) as u128;
        let added = (elapsed * self.rate as u128 / 1_000_000_000).min(u64::MAX as u128) as u64;
        if added == 0 {
            // Less than one byte's worth: keep the time counted so far, so frequent small writes still refill.
            return;
        }
        self.tokens = self.tokens.saturating_add(added);
        if self.tokens >= self.burst {
            self.tokens = self.burst;
            self.last_ns = now;
        } else {
            // Advance only by the time the whole bytes added stand for; the remainder counts towards the next.
            let used = (added as u128 * 1_000_000_000 / self.rate as u128) as u64;
            self.last_ns = self.last_ns.saturating_add(used);
        }
    }

    /// Asks to print `n` bytes at `now`. Returns how many of them may go out (a prefix; the rest are counted as
    /// suppressed) and, when some may, how many bytes were suppressed before this call (to be reported first;
    /// the count starts again).
    pub fn take(&mut self, now: u64, n: u64) -> (u64, Option<u64>) {
        self.refill(now);
        let ok = n.min(self.tokens);
        self.tokens -= ok;
        let earlier = if ok > 0 && self.suppressed > 0 { Some(core::mem::take(&mut self.suppressed)) } else { None };
        self.suppressed = self.suppressed.saturating_add(n - ok);
        (ok, earlier)
    }

    /// Bytes dropped and not yet reported.
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }
}

/// A domain's console state.
#[derive(Debug)]
pub struct Console {
    /// The line being assembled.
    pub line: Vec<u8>,
    /// The rate limit (unused for the initial domain).
    pub bucket: Bucket,
}

impl Console {
    /// Nothing printed yet, a full bucket at `now`.
    pub fn new(now: u64) -> Self {
        Self { line: Vec::new(), bucket: Bucket::new(RATE, BURST, now) }
    }

    /// Appends `bytes` (already allowed by the bucket), calling `emit` with each complete line (a newline ends
    /// one, so does reaching [`MAX_LINE`]); carriage returns at the end of a line and NUL bytes are dropped.
    pub fn push(&mut self, bytes: &[u8], mut emit: impl FnMut(&str)) {
        for &b in bytes {
            if b == b'\n' || self.line.len() >= MAX_LINE {
                let text = alloc::string::String::from_utf8_lossy(&self.line).into_owned();
                self.line.clear();
                emit(text.trim_end_matches('\r'));
            } else if b != 0 {
                self.line.push(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::{String, ToString};

    const S: u64 = 1_000_000_000;

    #[test]
    fn bucket_allows_a_burst_then_the_rate() {
        let mut b = Bucket::new(1000, 4000, 0);
        assert_eq!(b.take(0, 3000), (3000, None));
        assert_eq!(b.take(0, 3000), (1000, None), "only the rest of the burst");
        assert_eq!(b.suppressed(), 2000);
        assert_eq!(b.take(0, 10), (0, None), "nothing left: nothing reported yet");
        assert_eq!(b.take(S / 2, 3000), (500, Some(2010)), "half a second refills 500 bytes");
        assert_eq!(b.take(100 * S, 10_000), (4000, Some(2500)), "never more than the burst");
        assert_eq!(b.suppressed(), 6000);
    }

    /// Writes a byte at a time (OUT to port 0xE9) far more often than one byte's refill time still get the rate.
    #[test]
    fn frequent_small_writes_still_refill() {
        let mut b = Bucket::new(1000, 10, 0);
        assert_eq!(b.take(0, 10), (10, None));
        let mut out = 0;
        // One write every 100 µs for 2 s: a byte's worth of time is 1 ms.
        for i in 1..=20_000u64 {
            out += b.take(i * 100_000, 1).0;
        }
        assert!((1999..=2001).contains(&out), "{out} bytes in 2 s at 1000 B/s");
    }

    /// A flood costs the UART at most the burst plus the rate, however it is cut into writes.
    #[test]
    fn a_flood_is_bounded() {
        let mut b = Bucket::new(RATE, BURST, 0);
        let mut out = 0;
        for i in 0..10_000u64 {
            // 16 KiB per call, a call every 100 µs for a second.
            out += b.take(i * 100_000, 16 * 1024).0;
        }
        assert!(out <= BURST + RATE, "{out} bytes let through");
        assert!(out >= BURST + RATE - 2);
        assert_eq!(b.take(0, 0), (0, None));
        let reported_on_the_way = 10_000 * 16 * 1024 - out - b.suppressed();
        assert!(reported_on_the_way > 0 && b.suppressed() > 0);
    }

    #[test]
    fn huge_times_do_not_overflow() {
        let mut b = Bucket::new(u64::MAX, u64::MAX, 0);
        assert_eq!(b.take(0, u64::MAX), (u64::MAX, None));
        assert_eq!(b.take(u64::MAX, 5), (5, None));
        let mut b = Bucket::new(RATE, BURST, u64::MAX);
        assert_eq!(b.take(0, 1), (1, None), "time going backwards neither refills nor panics");
    }

    #[test]
    fn lines_are_assembled() {
        let mut c = Console::new(0);
        let mut lines: Vec<String> = Vec::new();
        c.push(b"Test res", |l| lines.push(l.to_string()));
        assert!(lines.is_empty());
        c.push(b"ult: SUCCESS\r\nnext\0 line\n", |l| lines.push(l.to_string()));
        assert_eq!(lines, ["Test result: SUCCESS", "next line"]);
        lines.clear();
        c.push(&[b'x'; 300], |l| lines.push(l.to_string()));
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), MAX_LINE);
    }

    /// Defect 9: a domain that floods its console gets no more than its burst through (the host clock does not
    /// advance in host tests, so nothing refills), and what it writes after that is dropped, "Test result:" lines
    /// included; a domain that prints normally is untouched.
    #[test]
    fn console_write_drops_a_flood() {
        let dom = crate::testing::domain(1, 4);
        dom.console_write(b"Test result: FIRST\n");
        assert_eq!(dom.test_result.lock().as_deref(), Some("FIRST"));
        let line = [b'x'; MAX_LINE];
        let mut sent = 0;
        while sent < BURST as usize * 2 {
            dom.console_write(&line);
            sent += line.len();
        }
        dom.console_write(b"\nTest result: LATER\n");
        assert_eq!(dom.test_result.lock().as_deref(), Some("FIRST"), "output beyond the burst went out");
        assert_eq!(dom.console.lock().bucket.suppressed(), 19 + sent as u64 + 20 - BURST);
        crate::domain::destroy(&dom);
    }
}
