//! 2-level event channels: the callback vector, binding, and the upcall handler that scans `shared_info`.
//!
//! Keel sets `vcpu_info.evtchn_upcall_pending` and injects [`CALLBACK_VECTOR`] when a port bound to the vCPU is
//! pending and unmasked. The handler clears `upcall_pending`, takes `evtchn_pending_sel`, and for each pending,
//! unmasked port clears its pending bit and calls the handler registered for it.

use crate::hypercall::{self, Errno};
use crate::{smp, xen, CALLBACK_VECTOR};
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use keel_abi::shared_info::{evtchnop, hvm_param};

/// Ports that can have a handler.
pub const MAX_PORTS: u32 = 64;

static HANDLERS: [AtomicPtr<()>; MAX_PORTS as usize] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_PORTS as usize];
/// Events delivered to a port without a handler.
static UNHANDLED: AtomicU64 = AtomicU64::new(0);
/// Upcalls taken.
static UPCALLS: AtomicU64 = AtomicU64::new(0);

/// Asks for events through [`CALLBACK_VECTOR`] (`HVM_PARAM_CALLBACK_IRQ` = 2 << 56 | vector) and maps
/// `shared_info`, which the handler reads.
pub fn enable_upcalls() -> Result<(), Errno> {
    xen::shared_info()?;
    hypercall::set_hvm_param(
        hvm_param::CALLBACK_IRQ,
        hvm_param::CALLBACK_TYPE_VECTOR << 56 | u64::from(CALLBACK_VECTOR),
    )
}

/// Binds `virq` on `vcpu`; returns the port.
pub fn bind_virq(virq: u32, vcpu: u32) -> Result<u32, Errno> {
    hypercall::evtchn_bind_virq(virq, vcpu)
}

/// Calls `handler(port)` from the upcall whenever `port` fires (interrupts are off while it runs).
pub fn set_handler(port: u32, handler: fn(u32)) {
    assert!(port < MAX_PORTS, "port {port} is beyond the handler table");
    HANDLERS[port as usize].store(handler as *mut (), Ordering::Release);
}

/// Unmasks `port` through the hypervisor (EVTCHNOP_unmask), which clears the mask bit and delivers the event if
/// it is pending. (Clearing the bit here first would lose a pending event: the hypervisor re-raises only what it
/// finds masked.)
pub fn unmask(port: u32) -> Result<(), Errno> {
    xen::shared_info()?;
    hypercall::evtchn_port_op(evtchnop::UNMASK, port)
}

/// Masks `port` (locally; no hypercall is needed).
pub fn mask(port: u32) -> Result<(), Errno> {
    let si = xen::shared_info()?;
    si.evtchn_mask(port as usize / 64).fetch_or(1 << (port % 64), Ordering::AcqRel);
    Ok(())
}

/// EVTCHNOP_send.
pub fn send(port: u32) -> Result<(), Errno> {
    hypercall::evtchn_port_op(evtchnop::SEND, port)
}

/// Sends `count` notifications on `port` back to back (a hostile guest's flood of its backend) and prints
/// `hostile: flood N notifications in MS ms, R refused`.
pub fn flood(port: u32, count: u32) {
    let t0 = crate::time::xen_system_time_ns();
    let refused = (0..count).filter(|_| send(port).is_err()).count();
    let ms = (crate::time::xen_system_time_ns() - t0) / crate::time::MS;
    crate::println!("hostile: flood {count} notifications in {ms} ms, {refused} refused");
}

/// EVTCHNOP_close, and forgets the handler.
pub fn close(port: u32) -> Result<(), Errno> {
    if port < MAX_PORTS {
        HANDLERS[port as usize].store(core::ptr::null_mut(), Ordering::Release);
    }
    hypercall::evtchn_port_op(evtchnop::CLOSE, port)
}

/// Events that arrived on ports without a handler.
pub fn unhandled() -> u64 {
    UNHANDLED.load(Ordering::Relaxed)
}

/// Upcalls taken so far.
pub fn upcalls() -> u64 {
    UPCALLS.load(Ordering::Relaxed)
}

/// The [`CALLBACK_VECTOR`] handler.
pub(crate) fn upcall() {
    UPCALLS.fetch_add(1, Ordering::Relaxed);
    let Some(si) = xen::shared_info_if_mapped() else {
        UNHANDLED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let vcpu = smp::vcpu_id();
    // Clear first: an event raised while we scan sets it again and is taken on the next upcall.
    si.upcall_pending(vcpu).store(0, Ordering::SeqCst);
    let mut sel = si.pending_sel(vcpu).swap(0, Ordering::AcqRel);
    while sel != 0 {
        let word = sel.trailing_zeros() as usize;
        sel &= sel - 1;
        let mut ready = si.evtchn_pending(word).load(Ordering::Acquire) & !si.evtchn_mask(word).load(Ordering::Acquire);
        while ready != 0 {
            let bit = ready.trailing_zeros();
            ready &= ready - 1;
            si.evtchn_pending(word).fetch_and(!(1 << bit), Ordering::AcqRel);
            let port = word as u32 * 64 + bit;
            let handler = HANDLERS.get(port as usize).map_or(core::ptr::null_mut(), |h| h.load(Ordering::Acquire));
            if handler.is_null() {
                UNHANDLED.fetch_add(1, Ordering::Relaxed);
            } else {
                // SAFETY: `set_handler` is the only writer and stores a `fn(u32)`.
                let f: fn(u32) = unsafe { core::mem::transmute::<*mut (), fn(u32)>(handler) };
                f(port);
            }
        }
    }
}

/// Sleeps (SCHEDOP_poll) until `port` is pending or Xen system time reaches `deadline_ns`, for a guest that takes
/// no upcalls; clears the pending bit. Returns whether the port was pending.
pub fn poll(port: u32, deadline_ns: u64) -> Result<bool, Errno> {
    let si = xen::shared_info()?;
    let (word, bit) = (port as usize / 64, 1u64 << (port % 64));
    if si.evtchn_pending(word).load(Ordering::Acquire) & bit == 0 {
        hypercall::sched_poll(&[port], deadline_ns);
    }
    Ok(si.evtchn_pending(word).fetch_and(!bit, Ordering::AcqRel) & bit != 0)
}
