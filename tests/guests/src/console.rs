//! The guest console: `console_io(CONSOLEIO_write)` under Xen, port 0xE9 (QEMU's debugcon, which Keel also
//! forwards) when that hypercall says -ENOSYS or when there is no Xen at all.
//!
//! Each `print!` is formatted into a buffer and written with as few hypercalls as possible (one per 256 bytes),
//! under a lock so that lines from different vCPUs do not interleave. The lock is re-entrant per vCPU, so an
//! exception or event handler that prints while its vCPU holds it does not deadlock.

use crate::{arch, hypercall, smp, xen};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use keel_abi::hypercall::errno;

/// The port QEMU's debugcon and Keel listen on.
pub const DEBUGCON_PORT: u16 = 0xe9;

static NO_CONSOLE_IO: AtomicBool = AtomicBool::new(false);
const NO_OWNER: u32 = u32::MAX;
static OWNER: AtomicU32 = AtomicU32::new(NO_OWNER);

/// Writes bytes to the console as they are.
pub fn write_bytes(bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    if xen::under_xen() && !NO_CONSOLE_IO.load(Ordering::Relaxed) {
        let rc = hypercall::console_write(bytes);
        if rc >= 0 {
            return;
        }
        if rc == errno::ENOSYS.negated() {
            NO_CONSOLE_IO.store(true, Ordering::Relaxed);
        }
        // Any other error: this text still goes out through the port.
    }
    for &b in bytes {
        // SAFETY: port 0xE9 is QEMU's debug console (or nothing): writes have no other effect.
        unsafe { arch::outb(DEBUGCON_PORT, b) };
    }
}

/// Runs `f` holding the console lock (re-entrant on the same vCPU).
fn locked<R>(f: impl FnOnce() -> R) -> R {
    let me = smp::vcpu_id();
    let nested = OWNER.load(Ordering::Acquire) == me;
    if !nested {
        while OWNER.compare_exchange_weak(NO_OWNER, me, Ordering::Acquire, Ordering::Relaxed).is_err() {
            core::hint::spin_loop();
        }
    }
    let r = f();
    if !nested {
        OWNER.store(NO_OWNER, Ordering::Release);
    }
    r
}

/// A 256-byte buffer that writes itself out when full.
struct Buffered {
    buf: [u8; 256],
    len: usize,
}

impl Buffered {
    fn flush(&mut self) {
        write_bytes(&self.buf[..self.len]);
        self.len = 0;
    }
}

impl Write for Buffered {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.as_bytes().chunks(self.buf.len()) {
            if self.len + chunk.len() > self.buf.len() {
                self.flush();
            }
            self.buf[self.len..self.len + chunk.len()].copy_from_slice(chunk);
            self.len += chunk.len();
        }
        Ok(())
    }
}

/// Backs [`print!`](crate::print) and [`println!`](crate::println).
pub fn print(args: fmt::Arguments) {
    locked(|| {
        let mut out = Buffered { buf: [0; 256], len: 0 };
        let _ = out.write_fmt(args);
        out.flush();
    });
}
