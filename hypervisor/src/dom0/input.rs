//! Serial input: to dom0's console, or (after Ctrl-A three times) to Keel's own debug keys.

use crate::domain;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

/// Serial input focus, switched by three Ctrl-A in a row.
static INPUT_TO_KEEL: AtomicBool = AtomicBool::new(false);
static CTRL_A_RUN: AtomicU32 = AtomicU32::new(0);

/// Hands serial input to the switch (CPU 0 polls COM1 between guest entries and on every pass).
pub fn poll_serial() {
    let mut buf = [0u8; 64];
    let n = crate::arch::x86::serial::read_available(&mut buf);
    if n > 0 {
        serial_input(&buf[..n]);
    }
}

/// Feeds serial input: Ctrl-A ×3 toggles between the initial domain and Keel's own key handler.
pub fn serial_input(bytes: &[u8]) {
    let mut to_guest = Vec::new();
    for &b in bytes {
        if b == 0x01 {
            if CTRL_A_RUN.fetch_add(1, Ordering::Relaxed) + 1 == 3 {
                CTRL_A_RUN.store(0, Ordering::Relaxed);
                let keel = !INPUT_TO_KEEL.fetch_xor(true, Ordering::AcqRel);
                crate::info!(
                    "*** Serial input to {} (type 'CTRL-a' three times to switch input)",
                    if keel { "Keel" } else { "DOM0" }
                );
            }
            continue;
        }
        // Ctrl-A presses that did not reach three are passed on.
        for _ in 0..CTRL_A_RUN.swap(0, Ordering::Relaxed) {
            if !INPUT_TO_KEEL.load(Ordering::Acquire) {
                to_guest.push(0x01);
            }
        }
        if INPUT_TO_KEEL.load(Ordering::Acquire) {
            keel_key(b);
        } else {
            to_guest.push(b);
        }
    }
    if !to_guest.is_empty() {
        super::console::input(&to_guest);
    }
}

/// Keel's own debug keys.
fn keel_key(b: u8) {
    match b {
        b'h' => crate::info!("'h' help, 'q' domains and heap, 'r' run queues, 'v' vCPUs, 'c' dom0 rings"),
        b'v' => {
            for d in domain::all() {
                for v in &d.vcpus {
                    crate::info!(
                        "d{}v{}: {:?} exits {} last {:?} at RIP {:#x}, last hypercall {:#x}",
                        d.id,
                        v.id,
                        v.state(),
                        v.exits.load(Ordering::Relaxed),
                        *v.last_exit.lock(),
                        v.last_rip.load(Ordering::Relaxed),
                        v.last_hypercall.load(Ordering::Relaxed)
                    );
                }
            }
        }
        b'q' => {
            for d in domain::all() {
                crate::info!(
                    "d{} ({}): {:?}, {} vCPUs, {} KiB, cpu {} ms",
                    d.id,
                    d.name,
                    d.state(),
                    d.vcpus.len(),
                    d.mem.lock().tot_pages * 4,
                    d.cpu_time_ns() / 1_000_000
                );
            }
            crate::info!("heap: {:?}", crate::mm::heap::stats());
        }
        b'r' => crate::info!("run queue lengths: {:?}", crate::sched::queue_lengths()),
        b'c' => {
            if let Some(line) = super::console::describe() {
                crate::info!("{line}");
            }
        }
        _ => {}
    }
}
