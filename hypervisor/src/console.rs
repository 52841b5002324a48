//! Keel's console: every line is prefixed `(KEEL) `, filtered by `loglvl=`, kept in an in-memory ring (what
//! `xm dmesg` will read) and written to the registered output (COM1).
//!
//! The console lock is re-entrant per CPU, so a CPU that faults while printing can still print its dump.

use crate::cmdline::LogLevel;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, AtomicU8, Ordering};

/// Size of the log ring in bytes.
pub const RING_SIZE: usize = 64 * 1024;

/// A byte ring that keeps the newest `N` bytes written to it.
pub struct LogRing<const N: usize> {
    buf: [u8; N],
    /// Total bytes ever written; the write position is `written % N`.
    written: u64,
}

impl<const N: usize> Default for LogRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> LogRing<N> {
    /// An empty ring.
    pub const fn new() -> Self {
        Self { buf: [0; N], written: 0 }
    }

    /// Appends bytes, overwriting the oldest ones once full.
    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.buf[(self.written % N as u64) as usize] = b;
            self.written += 1;
        }
    }

    /// Total bytes ever written (including those overwritten since).
    pub fn total_written(&self) -> u64 {
        self.written
    }

    /// The retained bytes, oldest first, as at most two slices.
    pub fn slices(&self) -> (&[u8], &[u8]) {
        let kept = core::cmp::min(self.written, N as u64) as usize;
        let start = ((self.written - kept as u64) % N as u64) as usize;
        if start + kept <= N {
            (&self.buf[start..start + kept], &[])
        } else {
            (&self.buf[start..], &self.buf[..start + kept - N])
        }
    }

    /// Copies the retained bytes, oldest first, into `out`; returns how many were copied. When the ring has
    /// wrapped, the copy starts at the first complete line.
    pub fn read(&self, out: &mut [u8]) -> usize {
        let (a, b) = self.slices();
        let mut bytes = a.iter().chain(b.iter()).copied();
        if self.written > N as u64 {
            // Drop the partial first line.
            for c in bytes.by_ref() {
                if c == b'\n' {
                    break;
                }
            }
        }
        let mut n = 0;
        for (o, c) in out.iter_mut().zip(bytes) {
            *o = c;
            n += 1;
        }
        n
    }
}

/// Where console output goes (COM1 once it is set up).
pub type Sink = fn(&[u8]);

struct State {
    ring: LogRing<RING_SIZE>,
    sink: Option<Sink>,
}

static mut STATE: State = State { ring: LogRing::new(), sink: None };
const NO_OWNER: u32 = u32::MAX;
static OWNER: AtomicU32 = AtomicU32::new(NO_OWNER);
static THRESHOLD: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);
static CPU_ID: spin::Once<fn() -> u32> = spin::Once::new();

/// Runs `f` with the console state locked. Re-entrant on the same CPU (an exception taken while printing).
fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> R {
    let me = CPU_ID.get().map_or(0, |id| id());
    let nested = OWNER.load(Ordering::Acquire) == me;
    if !nested {
        while OWNER.compare_exchange_weak(NO_OWNER, me, Ordering::Acquire, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
    }
    // SAFETY: OWNER grants one CPU at a time access to STATE; a nested call on the owning CPU interrupted the
    // outer one, which does not run again until the nested call returns, so no two live borrows are used at once.
    let r = f(unsafe { &mut *core::ptr::addr_of_mut!(STATE) });
    if !nested {
        OWNER.store(NO_OWNER, Ordering::Release);
    }
    r
}

/// Runs `f` while holding the console lock (for the output device's own set-up).
pub fn with_exclusive<R>(f: impl FnOnce() -> R) -> R {
    with_state(|_| f())
}

/// Registers the output device. Whatever the ring already holds is replayed to it.
pub fn set_sink(sink: Sink) {
    with_state(|s| {
        s.sink = Some(sink);
        let (a, b) = s.ring.slices();
        sink(a);
        sink(b);
    });
}

/// Tells the console how to find the current CPU's number (for the re-entrant lock).
pub fn set_cpu_id_fn(f: fn() -> u32) {
    CPU_ID.call_once(|| f);
}

/// Sets the `loglvl=` threshold.
pub fn set_level(level: LogLevel) {
    THRESHOLD.store(level as u8, Ordering::Relaxed);
}

/// Whether messages of `level` are printed.
pub fn enabled(level: LogLevel) -> bool {
    level as u8 <= THRESHOLD.load(Ordering::Relaxed)
}

/// Reads the log ring by free-running byte index, as Xen's `readconsole` does: from `index` when `incremental`
/// and it lies within what the ring still holds and at or past `consumed`, else from the oldest byte kept (or
/// `consumed`, if later). Returns where reading started and how many bytes were copied into `out`.
pub fn read_ring_from(consumed: u64, incremental: bool, index: u32, out: &mut [u8]) -> (u64, usize) {
    with_state(|s| {
        let written = s.ring.total_written();
        let oldest = written.saturating_sub(RING_SIZE as u64).max(consumed.min(written));
        // The caller's 32-bit index, placed in the ring's 64-bit count (the nearest value not after `written`).
        let wanted = (written & !0xffff_ffff) | index as u64;
        let wanted = if wanted > written { wanted.wrapping_sub(1 << 32) } else { wanted };
        let start = if incremental && (oldest..=written).contains(&wanted) { wanted } else { oldest };
        let (a, b) = s.ring.slices();
        let kept_from = written - (a.len() + b.len()) as u64;
        let skip = (start - kept_from) as usize;
        let n = a.iter().chain(b.iter()).skip(skip).zip(out.iter_mut()).map(|(x, o)| *o = *x).count();
        (start, n)
    })
}

/// Copies the log ring (oldest first) into `out`.
pub fn read_ring(out: &mut [u8]) -> usize {
    with_state(|s| s.ring.read(out))
}

/// A fixed line buffer that truncates instead of failing.
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if b == b'\n' {
                // Continuation lines carry the prefix too.
                self.push(b"\n(KEEL) ");
            } else {
                self.push(&[b]);
            }
        }
        Ok(())
    }
}

impl Line {
    fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.len < self.buf.len() - 1 {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
    }
}

/// Prints one message (one or more lines) at `level`.
pub fn log(level: LogLevel, args: fmt::Arguments) {
    if !enabled(level) {
        return;
    }
    let mut line = Line { buf: [0; 512], len: 0 };
    line.push(b"(KEEL) ");
    let _ = line.write_fmt(args);
    line.buf[line.len] = b'\n';
    line.len += 1;
    let bytes = &line.buf[..line.len];
    with_state(|s| {
        s.ring.push(bytes);
        if let Some(sink) = s.sink {
            sink(bytes);
        }
    });
}

/// Prints an informational line.
#[macro_export]
macro_rules! info {
    ($($arg:tt)*) => { $crate::console::log($crate::cmdline::LogLevel::Info, format_args!($($arg)*)) };
}
/// Prints a warning line.
#[macro_export]
macro_rules! warning {
    ($($arg:tt)*) => { $crate::console::log($crate::cmdline::LogLevel::Warning, format_args!($($arg)*)) };
}
/// Prints an error line.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::console::log($crate::cmdline::LogLevel::Error, format_args!($($arg)*)) };
}
/// Prints a debug line.
#[macro_export]
macro_rules! debug {
    ($($arg:tt)*) => { $crate::console::log($crate::cmdline::LogLevel::Debug, format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_everything_until_full() {
        let mut r = LogRing::<16>::new();
        r.push(b"abc\n");
        let mut out = [0u8; 32];
        let n = r.read(&mut out);
        assert_eq!(&out[..n], b"abc\n");
    }

    #[test]
    fn wrapped_ring_starts_at_a_whole_line() {
        let mut r = LogRing::<16>::new();
        r.push(b"first line\nsecond\nthird\n");
        let mut out = [0u8; 32];
        let n = r.read(&mut out);
        assert_eq!(&out[..n], b"second\nthird\n");
        assert_eq!(r.total_written(), 24);
    }

    #[test]
    fn log_lines_are_prefixed_and_ringed() {
        log(LogLevel::Info, format_args!("hello {}", 42));
        log(LogLevel::Debug, format_args!("hidden"));
        let mut out = [0u8; 256];
        let n = read_ring(&mut out);
        let text = core::str::from_utf8(&out[..n]).unwrap();
        assert!(text.contains("(KEEL) hello 42\n"));
        assert!(!text.contains("hidden"));
    }
}
