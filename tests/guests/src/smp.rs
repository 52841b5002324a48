//! vCPUs: which one is running, how many the domain has, and handing work to the others.
//!
//! Keel starts every vCPU of a test guest at the PVH entry. vCPU 0 runs the test; each other vCPU ("AP") waits
//! until the runtime is set up, checks in, and then waits for [`start_aps`] to give it a function. When that
//! returns the AP sleeps for good with interrupts enabled (so it uses no CPU time).

use crate::hypercall::{self, Errno};
use crate::{arch, time, MAX_VCPUS, STACK_SIZE};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};

/// One stack per vCPU; src/entry.S points each vCPU's RSP at the top of its own.
#[repr(C, align(16))]
pub(crate) struct Stacks(pub(crate) [[u8; STACK_SIZE]; MAX_VCPUS]);

/// Written only by the vCPUs' own pushes (never through Rust references).
pub(crate) static mut STACKS: Stacks = Stacks([[0; STACK_SIZE]; MAX_VCPUS]);

/// The calling vCPU's id, from which stack it runs on (exception handlers run on the same stack).
pub fn vcpu_id() -> u32 {
    let base = (&raw const STACKS) as usize;
    let sp = &base as *const usize as usize;
    let id = sp.wrapping_sub(base) / STACK_SIZE;
    // Off every stack: only possible in host builds, which never run guest code.
    id.min(MAX_VCPUS - 1) as u32
}

/// Set by vCPU 0 once the IDT and the hypercall instruction are ready.
pub(crate) static RUNTIME_READY: AtomicBool = AtomicBool::new(false);
/// APs that reached the runtime.
static ONLINE: AtomicU32 = AtomicU32::new(0);
/// APs that returned from the function [`start_aps`] gave them.
static DONE: AtomicU32 = AtomicU32::new(0);
/// The function for the APs (a `fn(u32)`), null until [`start_aps`].
static AP_FN: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Where each AP goes after entering long mode.
pub(crate) fn ap_main(id: u32) -> ! {
    while !RUNTIME_READY.load(Ordering::Acquire) {
        core::hint::spin_loop();
    }
    crate::traps::load();
    ONLINE.fetch_add(1, Ordering::AcqRel);
    let f = loop {
        let f = AP_FN.load(Ordering::Acquire);
        if !f.is_null() {
            break f;
        }
        core::hint::spin_loop();
    };
    // SAFETY: `start_aps` is the only writer of AP_FN and stores a `fn(u32)`.
    let f: fn(u32) = unsafe { core::mem::transmute::<*mut (), fn(u32)>(f) };
    f(id);
    DONE.fetch_add(1, Ordering::AcqRel);
    loop {
        arch::sti_hlt();
    }
}

/// The domain's vCPU count: the ids for which `VCPUOP_get_runstate_info` succeeds (Xen answers -ENOENT past
/// the last one). Capped at [`MAX_VCPUS`].
pub fn vcpu_count() -> Result<u32, Errno> {
    hypercall::runstate_info(0)?;
    let mut n = 1;
    while (n as usize) < MAX_VCPUS && hypercall::runstate_info(n).is_ok() {
        n += 1;
    }
    Ok(n)
}

/// APs that have reached the runtime so far.
pub fn aps_online() -> u32 {
    ONLINE.load(Ordering::Acquire)
}

/// Gives every AP `f` (called with the AP's id), now or whenever it arrives. Call once.
pub fn start_aps(f: fn(u32)) {
    let p = f as *mut ();
    assert!(
        AP_FN.compare_exchange(core::ptr::null_mut(), p, Ordering::AcqRel, Ordering::Acquire).is_ok(),
        "start_aps called twice"
    );
}

/// Waits until `aps` APs have returned from the function [`start_aps`] gave them, for at most `timeout_ns` of
/// system time. On timeout, returns how many had.
pub fn wait_aps(aps: u32, timeout_ns: u64) -> Result<(), u32> {
    let give_up = time::xen_system_time_ns() + timeout_ns;
    loop {
        let done = DONE.load(Ordering::Acquire);
        if done >= aps {
            return Ok(());
        }
        if time::xen_system_time_ns() > give_up {
            return Err(done);
        }
        // Let the APs have this CPU if the hypervisor runs more vCPUs than it has CPUs.
        hypercall::sched_yield();
    }
}
