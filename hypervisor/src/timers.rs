//! Guest timers: Xen's single-shot and periodic vCPU timers, the vLAPIC timer, and SCHEDOP_poll timeouts. The run
//! loop scans them on every pass and arms the CPU's timer for the nearest deadline.

use crate::domain::{self, evtchn, Vcpu};
use core::sync::atomic::{AtomicBool, Ordering};
use keel_abi::shared_info::virq;

/// Set when a vLAPIC timer was re-armed: the run loop scans deadlines again before its next guest entry.
static NEED_SCAN: AtomicBool = AtomicBool::new(false);

/// A vLAPIC timer was re-armed on this CPU: make the run loop look at deadlines again soon.
pub fn lapic_timer_changed() {
    NEED_SCAN.store(true, Ordering::Release);
}

/// Takes the "scan again" request.
pub fn scan_requested() -> bool {
    NEED_SCAN.swap(false, Ordering::AcqRel)
}

/// Fires expired guest timers and poll timeouts; returns the nearest future deadline.
pub fn run(now: u64) -> u64 {
    let mut next = u64::MAX;
    for d in domain::all() {
        if d.is_finished() {
            continue;
        }
        for v in &d.vcpus {
            let t = v.timer_deadline.load(Ordering::Acquire);
            if t != 0 {
                if t <= now {
                    if v.timer_deadline.compare_exchange(t, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                        evtchn::send_virq(&d, v, virq::TIMER);
                    }
                } else {
                    next = next.min(t);
                }
            }
            let period = v.periodic_period.load(Ordering::Acquire);
            if period != 0 {
                let due = v.periodic_next.load(Ordering::Acquire);
                if due <= now {
                    let mut n = due.saturating_add(period);
                    if n <= now {
                        n = now.saturating_add(period);
                    }
                    v.periodic_next.store(n, Ordering::Release);
                    evtchn::send_virq(&d, v, virq::TIMER);
                    next = next.min(n);
                } else {
                    next = next.min(due);
                }
            }
            let lt = v.lapic.lock().timer_deadline.load(Ordering::Acquire);
            if lt != 0 {
                if lt <= now {
                    let vec = v.lapic.lock().timer_expired(now);
                    if let Some(vec) = vec {
                        v.lapic.lock().set_irr(vec);
                        crate::sched::kick(v);
                    }
                    let again = v.lapic.lock().timer_deadline.load(Ordering::Acquire);
                    if again != 0 {
                        next = next.min(again);
                    }
                } else {
                    next = next.min(lt);
                }
            }
            let p = v.sched.poll_deadline.load(Ordering::Acquire);
            if p != 0 {
                if p <= now {
                    v.stop_polling();
                    crate::sched::kick(v);
                } else {
                    next = next.min(p);
                }
            }
        }
    }
    next
}

/// The nearest deadline among `v`'s own timers (its last hypercall may have re-armed them), or `u64::MAX`.
pub fn own_deadline(v: &Vcpu) -> u64 {
    [
        v.timer_deadline.load(Ordering::Acquire),
        v.lapic.lock().timer_deadline.load(Ordering::Acquire),
        if v.periodic_period.load(Ordering::Acquire) != 0 { v.periodic_next.load(Ordering::Acquire) } else { 0 },
    ]
    .into_iter()
    .filter(|&t| t != 0)
    .min()
    .unwrap_or(u64::MAX)
}
