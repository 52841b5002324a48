//! `sched_op` and `set_timer_op`.

use super::{Action, Ctx, HResult};
use crate::domain::evtchn;
use core::sync::atomic::Ordering;
use keel_abi::hypercall::{errno::*, schedop, SchedShutdown, ShutdownReason};
use keel_abi::shared_info::SchedPoll;

pub fn sched_op(c: &mut Ctx) -> HResult {
    let (cmd, arg) = (c.args[0], c.args[1]);
    match cmd {
        schedop::YIELD => Ok(Action::Yield),
        schedop::BLOCK => {
            if evtchn::upcall_pending(c.dom, c.v) {
                Ok(Action::Return(0))
            } else {
                Ok(Action::Block)
            }
        }
        schedop::SHUTDOWN => {
            let s: SchedShutdown = c.read(arg)?;
            let reason = ShutdownReason::from_raw(s.reason).ok_or(EINVAL)?;
            if reason == ShutdownReason::Crash {
                c.dom.crash("the guest reported a crash (SCHEDOP_shutdown crash)");
            } else {
                c.dom.shutdown(reason);
            }
            Ok(Action::Stop)
        }
        schedop::POLL => {
            let p: SchedPoll = c.read(arg)?;
            poll(c, &p)
        }
        _ => Err(ENOSYS),
    }
}

/// Most ports one SCHEDOP_poll waits on (Xen's limit).
pub const MAX_POLL_PORTS: u32 = 128;

/// SCHEDOP_poll: returns at once if one of the ports is pending, else blocks until one is raised (masked or
/// not), the timeout passes (absolute system time; 0: none), or an event is delivered.
fn poll(c: &Ctx, p: &SchedPoll) -> HResult {
    if p.nr_ports > MAX_POLL_PORTS {
        return Err(EINVAL);
    }
    // One copy of the guest's array: the ports checked are the ports waited on, whatever the guest's other
    // vCPUs write there meanwhile.
    let mut buf = [0u32; MAX_POLL_PORTS as usize];
    let ports = &mut buf[..p.nr_ports as usize];
    c.read_bytes(p.ports, bytemuck::cast_slice_mut(ports))?;
    if ports.iter().any(|&port| evtchn::is_pending(c.dom, port)) {
        return Ok(Action::Return(0));
    }
    c.v.start_polling(ports);
    c.v.sched.poll_deadline.store(p.timeout, Ordering::Release);
    // An event raised while the wait was being set up must not be missed.
    if c.v.poll_satisfied(c.dom) {
        c.v.stop_polling();
        return Ok(Action::Return(0));
    }
    Ok(Action::Block)
}

/// How far ahead `set_timer_op` takes a deadline literally (2^50 ns, about 13 days, as Xen).
const SET_TIMER_MAX_AHEAD_NS: i64 = 1 << 50;

/// What Xen does instead with a deadline in the past of time 0 or further ahead than that: fire in 100 ms.
const SET_TIMER_FALLBACK_NS: u64 = 100_000_000;

/// The single-shot deadline `set_timer_op(timeout)` arms at system time `now` (0: stop the timer). A timeout
/// that is negative as a signed time or more than 2^50 ns ahead (Linux's jiffies arithmetic can wrap) fires in
/// 100 ms instead, as in Xen.
pub fn set_timer_deadline(timeout: u64, now: u64) -> u64 {
    let t = timeout as i64;
    if t == 0 {
        0
    } else if t < 0 || t.wrapping_sub(now as i64) >= SET_TIMER_MAX_AHEAD_NS {
        now.saturating_add(SET_TIMER_FALLBACK_NS)
    } else {
        timeout
    }
}

pub fn set_timer_op(c: &mut Ctx) -> HResult {
    let deadline = set_timer_deadline(c.args[0], crate::arch::x86::time::now_ns());
    c.v.timer_deadline.store(deadline, Ordering::Release);
    Ok(Action::Return(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Domain;
    use crate::testing::{self, put};
    use crate::vmexit::Outcome;
    use alloc::sync::Arc;
    use keel_abi::hypercall::{nr, vcpuop, VcpuSetPeriodicTimer, VcpuSetSingleshotTimer};
    use keel_abi::shared_info::EVTCHN_2L_PORTS;

    const ARG: u64 = 0x1000;
    const PORTS: u64 = 0x2000;
    const BAD: u64 = 0x4000_0000;

    fn call(dom: &Arc<Domain>, vcpu: usize, number: u64, args: [u64; 5]) -> (i64, Outcome) {
        let (rax, out) = crate::hypercall::call(dom, &dom.vcpus[vcpu], testing::flat(), number, args);
        (rax as i64, out)
    }

    fn poll(dom: &Arc<Domain>, ports: &[u32], timeout: u64) -> (i64, Outcome) {
        for (i, p) in ports.iter().enumerate() {
            put(dom, PORTS + 4 * i as u64, p);
        }
        put(dom, ARG, &SchedPoll { ports: PORTS, nr_ports: ports.len() as u32, pad: 0, timeout });
        call(dom, 0, nr::SCHED_OP, [schedop::POLL, ARG, 0, 0, 0])
    }

    /// Defect 12 (poll part): the vCPU waits on every port it named, not only the last one at or above 64.
    #[test]
    fn poll_waits_on_every_port() {
        let dom = testing::domain(1, 4);
        let v = &dom.vcpus[0];
        assert_eq!(poll(&dom, &[70, 90], 0), (0, Outcome::Block));
        assert!(v.polls(70) && v.polls(90), "both ports polled");
        assert!(!v.polls(71) && !v.polls(6));
        evtchn::set_pending(&dom, 70);
        assert!(!v.polls(70) && !v.polls(90), "raising one port ends the poll");
        assert_eq!(v.sched.poll_deadline.load(Ordering::Acquire), 0);
        // A port already pending: no wait at all.
        assert_eq!(poll(&dom, &[5, 70], 1234), (0, Outcome::Continue));
        assert!(!v.polls(5));
        // Low and high ports together, with a timeout.
        assert_eq!(poll(&dom, &[3, 64, 4095, 200], 99), (0, Outcome::Block));
        assert!(v.polls(3) && v.polls(64) && v.polls(4095) && v.polls(200));
        assert_eq!(v.sched.poll_deadline.load(Ordering::Acquire), 99);
        assert!(!v.poll_satisfied(&dom));
        evtchn::set_pending(&dom, 4095);
        assert!(!v.polls(3) && !v.polls(200));
        crate::domain::destroy(&dom);
    }

    #[test]
    fn poll_errors() {
        let dom = testing::domain(1, 4);
        put(&dom, ARG, &SchedPoll { ports: PORTS, nr_ports: MAX_POLL_PORTS + 1, pad: 0, timeout: 0 });
        assert_eq!(call(&dom, 0, nr::SCHED_OP, [schedop::POLL, ARG, 0, 0, 0]).0, EINVAL.negated());
        assert_eq!(call(&dom, 0, nr::SCHED_OP, [schedop::POLL, BAD, 0, 0, 0]).0, EFAULT.negated());
        put(&dom, ARG, &SchedPoll { ports: BAD, nr_ports: 2, pad: 0, timeout: 0 });
        assert_eq!(call(&dom, 0, nr::SCHED_OP, [schedop::POLL, ARG, 0, 0, 0]).0, EFAULT.negated());
        // The port array running off the end of RAM.
        put(&dom, ARG, &SchedPoll { ports: (4 << 20) - 4, nr_ports: 2, pad: 0, timeout: 0 });
        assert_eq!(call(&dom, 0, nr::SCHED_OP, [schedop::POLL, ARG, 0, 0, 0]).0, EFAULT.negated());
        assert!(!dom.vcpus[0].polls(0), "nothing left polled after a failed poll");
        // Xen accepts 128 ports, and none (a wait for an event or the timeout); numbers beyond the ABI's range
        // are never raised.
        let many: alloc::vec::Vec<u32> = (0..MAX_POLL_PORTS).map(|i| 1000 + i * 7).collect();
        assert_eq!(poll(&dom, &many, 0), (0, Outcome::Block));
        assert!(many.iter().all(|&p| dom.vcpus[0].polls(p)));
        dom.vcpus[0].stop_polling();
        assert_eq!(poll(&dom, &[], 5), (0, Outcome::Block));
        assert_eq!(poll(&dom, &[EVTCHN_2L_PORTS, u32::MAX], 0), (0, Outcome::Block));
        dom.vcpus[0].stop_polling();
        crate::domain::destroy(&dom);
    }

    #[test]
    fn sched_op_errors() {
        let dom = testing::domain(1, 4);
        for cmd in [schedop::REMOTE_SHUTDOWN, schedop::SHUTDOWN_CODE, schedop::WATCHDOG, 99, 1 << 40] {
            assert_eq!(call(&dom, 0, nr::SCHED_OP, [cmd, ARG, 0, 0, 0]).0, ENOSYS.negated(), "cmd {cmd}");
        }
        assert_eq!(call(&dom, 0, nr::SCHED_OP, [schedop::SHUTDOWN, BAD, 0, 0, 0]).0, EFAULT.negated());
        put(&dom, ARG, &99u32);
        assert_eq!(call(&dom, 0, nr::SCHED_OP, [schedop::SHUTDOWN, ARG, 0, 0, 0]).0, EINVAL.negated());
        assert!(!dom.is_finished());
        assert_eq!(call(&dom, 0, nr::SCHED_OP, [schedop::YIELD, 0, 0, 0, 0]), (0, Outcome::Yield));
        crate::domain::destroy(&dom);
    }

    #[test]
    fn set_timer_op_follows_xen() {
        const MS: u64 = 1_000_000;
        assert_eq!(set_timer_deadline(0, 500), 0, "0 stops the timer");
        assert_eq!(set_timer_deadline(1000, 500), 1000);
        assert_eq!(set_timer_deadline(10, 500), 10, "a past deadline fires at once");
        assert_eq!(set_timer_deadline(500 + (1 << 50) - 1, 500), 500 + (1 << 50) - 1);
        assert_eq!(set_timer_deadline(500 + (1 << 50), 500), 500 + 100 * MS, "over 2^50 ns ahead: 100 ms");
        assert_eq!(set_timer_deadline(u64::MAX, 500), 500 + 100 * MS, "negative: 100 ms");
        assert_eq!(set_timer_deadline(1 << 63, 500), 500 + 100 * MS);
        let dom = testing::domain(1, 4);
        assert_eq!(call(&dom, 0, nr::SET_TIMER_OP, [u64::MAX, 0, 0, 0, 0]).0, 0);
        let d = dom.vcpus[0].timer_deadline.load(Ordering::Acquire);
        assert!(d >= 100 * MS && d != u64::MAX, "deadline {d}");
        crate::domain::destroy(&dom);
    }

    fn vcpu_op(dom: &Arc<Domain>, caller: usize, cmd: u64, id: u64, arg: u64) -> i64 {
        call(dom, caller, nr::VCPU_OP, [cmd, id, arg, 0, 0]).0
    }

    /// Defect 8 (guest timers): a huge period is refused as Xen refuses it, so the next expiry never wraps to
    /// "due now".
    #[test]
    fn periodic_timer_limits() {
        let dom = testing::domain(2, 4);
        let v = &dom.vcpus[1];
        for bad in [0, 999_999, crate::hypercall::vcpu::STIME_DELTA_MAX + 1, u64::MAX / 2, u64::MAX] {
            put(&dom, ARG, &VcpuSetPeriodicTimer { period_ns: bad });
            assert_eq!(vcpu_op(&dom, 0, vcpuop::SET_PERIODIC_TIMER, 1, ARG), EINVAL.negated(), "period {bad}");
            assert_eq!(v.periodic_period.load(Ordering::Acquire), 0);
        }
        let max = crate::hypercall::vcpu::STIME_DELTA_MAX;
        put(&dom, ARG, &VcpuSetPeriodicTimer { period_ns: max });
        assert_eq!(vcpu_op(&dom, 0, vcpuop::SET_PERIODIC_TIMER, 1, ARG), 0, "another vCPU's periodic timer");
        let next = v.periodic_next.load(Ordering::Acquire);
        assert!(next >= max, "next expiry {next} must be far away");
        put(&dom, ARG, &VcpuSetPeriodicTimer { period_ns: 1_000_000 });
        assert_eq!(vcpu_op(&dom, 0, vcpuop::SET_PERIODIC_TIMER, 0, ARG), 0);
        assert_eq!(vcpu_op(&dom, 0, vcpuop::STOP_PERIODIC_TIMER, 1, 0), 0);
        assert_eq!(v.periodic_period.load(Ordering::Acquire), 0);
        assert_eq!(vcpu_op(&dom, 0, vcpuop::SET_PERIODIC_TIMER, 0, BAD), EFAULT.negated());
        crate::domain::destroy(&dom);
    }

    /// VCPUOP_down stops another vCPU where it is (VCPUOP_is_up then says 0); VCPUOP_up of a vCPU that never
    /// started is -EINVAL, as Xen's for one not initialised. (Up again after down needs a hardware context: the
    /// save/restore check in QEMU covers it, as Linux's resume takes its other vCPUs down and up.)
    #[test]
    fn vcpu_down_and_up() {
        let dom = testing::domain(2, 4);
        let v = &dom.vcpus[1];
        v.set_state(crate::domain::VcpuState::Runnable);
        assert_eq!(vcpu_op(&dom, 0, vcpuop::IS_UP, 1, 0), 1);
        assert_eq!(vcpu_op(&dom, 0, vcpuop::DOWN, 1, 0), 0);
        assert_eq!(v.state(), crate::domain::VcpuState::Offline);
        assert_eq!(vcpu_op(&dom, 0, vcpuop::IS_UP, 1, 0), 0);
        assert_eq!(vcpu_op(&dom, 0, vcpuop::DOWN, 1, 0), 0, "down again: nothing to do");
        assert_eq!(vcpu_op(&dom, 0, vcpuop::UP, 1, 0), EINVAL.negated(), "no context: never started");
        assert_eq!(vcpu_op(&dom, 0, vcpuop::DOWN, 2, 0), ENOENT.negated());
        crate::domain::destroy(&dom);
    }

    #[test]
    fn vcpu_op_timer_errors() {
        let dom = testing::domain(2, 4);
        // vCPU ids: -ENOENT for one the domain lacks, whatever the command.
        for cmd in [vcpuop::SET_PERIODIC_TIMER, vcpuop::SET_SINGLESHOT_TIMER, vcpuop::IS_UP, 99] {
            assert_eq!(vcpu_op(&dom, 0, cmd, 2, ARG), ENOENT.negated(), "cmd {cmd}");
            assert_eq!(vcpu_op(&dom, 0, cmd, u64::MAX, ARG), ENOENT.negated(), "cmd {cmd}");
        }
        assert_eq!(vcpu_op(&dom, 0, 99, 0, ARG), ENOSYS.negated());
        // Single-shot timers are the caller's own only.
        put(&dom, ARG, &VcpuSetSingleshotTimer { timeout_abs_ns: 5, flags: 0, pad: 0 });
        assert_eq!(vcpu_op(&dom, 0, vcpuop::SET_SINGLESHOT_TIMER, 1, ARG), EINVAL.negated());
        assert_eq!(vcpu_op(&dom, 0, vcpuop::STOP_SINGLESHOT_TIMER, 1, 0), EINVAL.negated());
        assert_eq!(vcpu_op(&dom, 1, vcpuop::SET_SINGLESHOT_TIMER, 1, BAD), EFAULT.negated());
        assert_eq!(vcpu_op(&dom, 1, vcpuop::SET_SINGLESHOT_TIMER, 1, ARG), 0);
        assert_eq!(dom.vcpus[1].timer_deadline.load(Ordering::Acquire), 5);
        // A deadline with bit 63 set is in the past of a signed clock: it fires at once, not never.
        put(&dom, ARG, &VcpuSetSingleshotTimer { timeout_abs_ns: u64::MAX, flags: 0, pad: 0 });
        assert_eq!(vcpu_op(&dom, 1, vcpuop::SET_SINGLESHOT_TIMER, 1, ARG), 0);
        assert_eq!(dom.vcpus[1].timer_deadline.load(Ordering::Acquire), 1);
        assert_eq!(vcpu_op(&dom, 1, vcpuop::STOP_SINGLESHOT_TIMER, 1, 0), 0);
        assert_eq!(dom.vcpus[1].timer_deadline.load(Ordering::Acquire), 0);
        crate::domain::destroy(&dom);
    }
}
