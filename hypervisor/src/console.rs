//! Keel's console: every line is prefixed `(KEEL) `, filtered by `loglvl=`, kept in an in-memory ring (what
//! `xm dmesg` will read) and written to the registered output (COM1).
//!
//! A CPU that faults while printing can still print its dump: the handler's lines go straight to the device's
//! stateless nested writer (they skip the ring), never through a second reference to the state or the device.

use crate::cmdline::LogLevel;
use core::cell::UnsafeCell;
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

/// The output device: its writer, and a stateless writer for output that arrives while the first is busy.
#[derive(Clone, Copy)]
pub struct Output {
    /// The device's writer; called only by the CPU holding the console lock, never re-entered.
    pub write: Sink,
    /// A writer that keeps no state of its own (raw port I/O): what a nested print on the CPU that holds the
    /// lock (an exception or NMI taken while printing) goes to, since `write` is then in the middle of a call.
    pub write_nested: Sink,
}

struct State {
    ring: LogRing<RING_SIZE>,
    out: Option<Output>,
}

/// `owner` when no CPU holds the lock; a holder is stored as its CPU number + 1, so that the whole `Console`
/// starts as zeroes (in .bss, not 64 KiB of .data in the image).
const NO_OWNER: u32 = 0;

/// The console's state behind a per-CPU lock. A CPU that finds the lock already its own (it was interrupted
/// while printing, and the handler prints) never touches the state: it gets `None` and takes the nested path, so
/// at most one `&mut State` exists at any time.
pub struct Console {
    state: UnsafeCell<State>,
    owner: AtomicU32,
    /// Set once with the output; read without the lock by the nested path.
    nested_out: spin::Once<Sink>,
}

// SAFETY: `state` is reached only through `with_state`, which hands out its `&mut` to the one CPU whose number + 1
// `owner` holds, and to no nested caller on that CPU; everything else is atomic or `spin::Once`.
unsafe impl Sync for Console {}

impl Console {
    /// An empty console with no output.
    pub const fn new() -> Self {
        Console {
            state: UnsafeCell::new(State { ring: LogRing::new(), out: None }),
            owner: AtomicU32::new(NO_OWNER),
            nested_out: spin::Once::new(),
        }
    }

    /// Runs `f` with the state locked by CPU `cpu`; `None` (and `f` not run) when `cpu` already holds the lock, i.e.
    /// this is a print from an exception or NMI handler that interrupted the holder.
    fn with_state<R>(&self, cpu: u32, f: impl FnOnce(&mut State) -> R) -> Option<R> {
        let me = cpu.wrapping_add(1);
        if self.owner.load(Ordering::Acquire) == me {
            return None;
        }
        while self.owner.compare_exchange_weak(NO_OWNER, me, Ordering::Acquire, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
        // SAFETY: `owner` is `me` from the exchange above to the store below, so no other CPU is in here; a nested
        // call on this CPU returns `None` above without touching `state`. This is the only `&mut State`.
        let r = f(unsafe { &mut *self.state.get() });
        self.owner.store(NO_OWNER, Ordering::Release);
        Some(r)
    }

    /// Appends a message to the ring and writes it out; a nested message goes to the nested writer only.
    fn emit(&self, me: u32, bytes: &[u8]) {
        let done = self.with_state(me, |s| {
            s.ring.push(bytes);
            if let Some(out) = s.out {
                (out.write)(bytes);
            }
        });
        if done.is_none() {
            if let Some(write_nested) = self.nested_out.get() {
                write_nested(bytes);
            }
        }
    }

    /// Registers the output; whatever the ring already holds is replayed to it. False when called nested.
    fn set_output(&self, me: u32, out: Output) -> bool {
        self.nested_out.call_once(|| out.write_nested);
        self.with_state(me, |s| {
            s.out = Some(out);
            let (a, b) = s.ring.slices();
            (out.write)(a);
            (out.write)(b);
        })
        .is_some()
    }
}

impl Default for Console {
    fn default() -> Self {
        Self::new()
    }
}

static CONSOLE: Console = Console::new();
static THRESHOLD: AtomicU8 = AtomicU8::new(LogLevel::Info as u8);
static CPU_ID: spin::Once<fn() -> u32> = spin::Once::new();

fn this_cpu() -> u32 {
    CPU_ID.get().map_or(0, |id| id())
}

/// Runs `f` while holding the console lock (for the output device's own set-up and input), or returns `None`
/// without running it when this CPU already holds the lock (a handler that interrupted a print).
pub fn with_exclusive<R>(f: impl FnOnce() -> R) -> Option<R> {
    CONSOLE.with_state(this_cpu(), |_| f())
}

/// Writes the hardware domain's console output to the device as it is (no prefix, not kept in Keel's ring), as Xen
/// does with dom0's `console_io` writes: dom0's console is the machine's console.
pub fn write_raw(bytes: &[u8]) {
    let done = CONSOLE.with_state(this_cpu(), |s| {
        if let Some(out) = s.out {
            (out.write)(bytes);
        }
    });
    if done.is_none() {
        if let Some(write_nested) = CONSOLE.nested_out.get() {
            write_nested(bytes);
        }
    }
}

/// Serial input waiting for the hardware domain (`CONSOLEIO_read`), as Xen's serial receive ring: bytes beyond its
/// size are dropped.
static INPUT: spin::Mutex<InputRing> = spin::Mutex::new(InputRing::new());

/// Bytes of serial input kept for the hardware domain.
pub const INPUT_SIZE: usize = 4096;

/// A FIFO of at most [`INPUT_SIZE`] bytes.
pub struct InputRing {
    buf: [u8; INPUT_SIZE],
    head: usize,
    len: usize,
}

impl InputRing {
    /// Empty.
    pub const fn new() -> Self {
        InputRing { buf: [0; INPUT_SIZE], head: 0, len: 0 }
    }

    /// Appends what fits; returns how many bytes were taken.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(INPUT_SIZE - self.len);
        for &b in &bytes[..n] {
            self.buf[(self.head + self.len) % INPUT_SIZE] = b;
            self.len += 1;
        }
        n
    }

    /// Moves up to `out.len()` bytes out, oldest first; returns how many.
    pub fn take(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len);
        for o in out.iter_mut().take(n) {
            *o = self.buf[self.head];
            self.head = (self.head + 1) % INPUT_SIZE;
            self.len -= 1;
        }
        n
    }
}

impl Default for InputRing {
    fn default() -> Self {
        Self::new()
    }
}

/// Queues serial input for the hardware domain; returns how many bytes fitted.
pub fn push_input(bytes: &[u8]) -> usize {
    INPUT.lock().push(bytes)
}

/// Takes queued serial input (`CONSOLEIO_read`).
pub fn take_input(out: &mut [u8]) -> usize {
    INPUT.lock().take(out)
}

/// Registers the output device. Whatever the ring already holds is replayed to it.
pub fn set_output(out: Output) {
    CONSOLE.set_output(this_cpu(), out);
}

/// Tells the console how to find the current CPU's number (for the lock).
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
/// `consumed`, if later). Returns where reading started and how many bytes were copied into `out` (nothing from a
/// handler that interrupted a print).
pub fn read_ring_from(consumed: u64, incremental: bool, index: u32, out: &mut [u8]) -> (u64, usize) {
    CONSOLE
        .with_state(this_cpu(), |s| {
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
        .unwrap_or((consumed, 0))
}

/// Copies the log ring (oldest first) into `out` (nothing from a handler that interrupted a print).
pub fn read_ring(out: &mut [u8]) -> usize {
    CONSOLE.with_state(this_cpu(), |s| s.ring.read(out)).unwrap_or(0)
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
    CONSOLE.emit(this_cpu(), &line.buf[..line.len]);
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

    /// A device that counts how deep its writer is entered and keeps what each writer got.
    mod device {
        use core::sync::atomic::{AtomicU32, Ordering};
        use std::sync::Mutex;

        pub static DEPTH: AtomicU32 = AtomicU32::new(0);
        pub static MAX_DEPTH: AtomicU32 = AtomicU32::new(0);
        pub static WRITTEN: Mutex<Vec<u8>> = Mutex::new(Vec::new());
        pub static NESTED: Mutex<Vec<u8>> = Mutex::new(Vec::new());

        /// The writer; on the word "fault" it prints from "inside" itself, as an exception handler would.
        pub fn write(bytes: &[u8]) {
            let depth = DEPTH.fetch_add(1, Ordering::SeqCst) + 1;
            MAX_DEPTH.fetch_max(depth, Ordering::SeqCst);
            WRITTEN.lock().unwrap().extend_from_slice(bytes);
            if bytes.windows(5).any(|w| w == b"fault") {
                super::CONSOLE_UNDER_TEST.emit(7, b"handler's dump\n");
            }
            DEPTH.fetch_sub(1, Ordering::SeqCst);
        }

        pub fn write_nested(bytes: &[u8]) {
            NESTED.lock().unwrap().extend_from_slice(bytes);
        }
    }

    static CONSOLE_UNDER_TEST: Console = Console::new();

    /// A print from a handler that interrupted a print on the same CPU never re-enters the device's writer
    /// (which would hold two `&mut` to it) nor the state: it goes to the nested writer.
    #[test]
    fn nested_print_goes_to_the_nested_writer() {
        let c = &CONSOLE_UNDER_TEST;
        c.emit(7, b"early\n");
        assert!(c.set_output(7, Output { write: device::write, write_nested: device::write_nested }));
        c.emit(7, b"a fault while printing\n");
        c.emit(7, b"after\n");
        assert_eq!(device::MAX_DEPTH.load(Ordering::SeqCst), 1, "the device writer was re-entered");
        assert_eq!(&device::WRITTEN.lock().unwrap()[..], b"early\na fault while printing\nafter\n");
        assert_eq!(&device::NESTED.lock().unwrap()[..], b"handler's dump\n");
        let mut out = [0u8; 128];
        let n = c.with_state(7, |s| s.ring.read(&mut out)).unwrap();
        assert_eq!(&out[..n], b"early\na fault while printing\nafter\n");
        // The lock is free again, for any CPU.
        assert_eq!(c.with_state(3, |_| 1), Some(1));
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
