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
            if p.nr_ports == 0 || p.nr_ports > 128 {
                return Err(EINVAL);
            }
            let mut mask = 0u64;
            let mut single = u32::MAX;
            for i in 0..p.nr_ports as u64 {
                let port: u32 = c.read(p.ports.wrapping_add(i * 4))?;
                if evtchn::is_pending(c.dom, port) {
                    return Ok(Action::Return(0));
                }
                if port < 64 {
                    mask |= 1 << port;
                } else {
                    single = port;
                }
            }
            c.v.poll_mask.store(mask, Ordering::Release);
            c.v.poll_port.store(single, Ordering::Release);
            c.v.sched.poll_deadline.store(p.timeout, Ordering::Release);
            // An event that arrived while the ports were being read must not be missed.
            for i in 0..p.nr_ports as u64 {
                let port: u32 = c.read(p.ports.wrapping_add(i * 4))?;
                if evtchn::is_pending(c.dom, port) {
                    c.v.stop_polling();
                    return Ok(Action::Return(0));
                }
            }
            Ok(Action::Block)
        }
        _ => Err(ENOSYS),
    }
}

pub fn set_timer_op(c: &mut Ctx) -> HResult {
    c.v.timer_deadline.store(c.args[0], Ordering::Release);
    Ok(Action::Return(0))
}
