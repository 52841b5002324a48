//! `domctl` (36): the toolstack's per-domain operations, Xen 4.17's interface (version 0x15). Privileged callers
//! only (-EPERM); a wrong interface version is -EACCES before anything else; a missing domain is -ESRCH except for
//! getdomaininfo, which answers with the first domain at or above the id asked for (4.17's semantics, which
//! xenstored relies on); an unknown command is -ENOSYS. The commands that build and run a guest from dom0
//! (createdomain, destroydomain, pause/unpause, setdomainhandle, settimeoffset, get/sethvmcontext) are in [`lifecycle`] and
//! [`hvmctx`]; shadow_op (log-dirty tracking for save and migration) is in [`shadow`].

use super::sysctl::{domain_info, privileged};
use super::{Action, Ctx, HResult};
use crate::domain::{self, Domain, Vcpu, VcpuState};
use alloc::sync::Arc;
use alloc::vec;
use core::sync::atomic::Ordering;
use keel_abi::domctl::{self as dc, cmd, sched_id, vcpuaffinity, XenDomctl, XenctlBitmap};
use keel_abi::hypercall::errno::*;
use keel_abi::Errno;

pub fn domctl(c: &mut Ctx) -> HResult {
    privileged(c)?;
    let arg = c.args[0];
    let mut d: XenDomctl = c.read(arg)?;
    if d.interface_version != dc::INTERFACE_VERSION {
        return Err(EACCES);
    }
    if d.cmd == cmd::GETDOMAININFO {
        if d.domain >= keel_abi::DOMID_SELF {
            return Err(EINVAL);
        }
        let next = domain::all().into_iter().find(|x| x.id >= d.domain).ok_or(ESRCH)?;
        d.domain = next.id;
        d.set(&domain_info(&next));
        c.write(arg, &d)?;
        return Ok(Action::Return(0));
    }
    if d.cmd == cmd::CREATEDOMAIN {
        lifecycle::create(c, arg, &mut d)?;
        return Ok(Action::Return(0));
    }
    let target = domain::get(d.domain).ok_or(ESRCH)?;
    // Commands whose whole request goes back to the caller, even on failure (as Xen copies it back).
    let copy_back = matches!(d.cmd, cmd::GETVCPUINFO | cmd::SCHEDULER_OP | cmd::SHADOW_OP);
    let r = match d.cmd {
        cmd::DESTROYDOMAIN => lifecycle::destroy(c, &target),
        cmd::PAUSEDOMAIN => lifecycle::pause(c, &target),
        cmd::UNPAUSEDOMAIN => lifecycle::unpause(c, &target),
        cmd::RESUMEDOMAIN => lifecycle::resume(c, &target),
        cmd::SETDOMAINHANDLE => lifecycle::set_handle(&target, &d),
        cmd::SETTIMEOFFSET => lifecycle::set_time_offset(&target, &d),
        cmd::GETHVMCONTEXT | cmd::GETHVMCONTEXT_PARTIAL | cmd::SETHVMCONTEXT if Arc::ptr_eq(&target, c.dom) => {
            Err(EINVAL)
        }
        cmd::GETHVMCONTEXT => {
            hvmctx::get(c, &target, &mut d)?;
            c.write(arg, &d)?;
            Ok(())
        }
        cmd::GETHVMCONTEXT_PARTIAL => {
            hvmctx::get_partial(c, &target, &mut d)?;
            c.write(arg, &d)?;
            Ok(())
        }
        cmd::SETHVMCONTEXT => hvmctx::set(c, &target, &d),
        cmd::GETVCPUINFO => vcpu_info(&target, &mut d),
        cmd::SETVCPUAFFINITY | cmd::GETVCPUAFFINITY => affinity(c, &target, &d),
        cmd::SCHEDULER_OP => scheduler(&target, &mut d),
        cmd::MAX_MEM => max_mem(&target, &d),
        cmd::SHADOW_OP => shadow::shadow_op(c, &target, &mut d),
        other => {
            log_unknown(other);
            Err(ENOSYS)
        }
    };
    if copy_back {
        c.write(arg, &d)?;
    }
    r.map(|()| Action::Return(0))
}

fn log_unknown(n: u32) {
    static SEEN: spin::Mutex<u128> = spin::Mutex::new(0);
    super::log_unimplemented("domctl", &SEEN, n);
}

/// vCPU `n` of a domain: -EINVAL past the domain's maximum, as Xen.
fn vcpu(dom: &Domain, n: u32) -> Result<&Arc<Vcpu>, Errno> {
    dom.vcpus.get(n as usize).ok_or(EINVAL)
}

/// `XEN_DOMCTL_getvcpuinfo`.
fn vcpu_info(dom: &Domain, d: &mut XenDomctl) -> Result<(), Errno> {
    let mut i: dc::GetVcpuInfo = d.get();
    let v = vcpu(dom, i.vcpu)?;
    let st = v.state();
    i.online = u8::from(!matches!(st, VcpuState::Offline | VcpuState::Dead));
    i.blocked = u8::from(st == VcpuState::Blocked);
    i.running = u8::from(st == VcpuState::Running);
    i.cpu_time = v.running_ns();
    let last = v.last_cpu.load(Ordering::Relaxed);
    i.cpu = if last == u32::MAX { v.sched.processor.load(Ordering::Relaxed) } else { last };
    d.set(&i);
    Ok(())
}

/// Reads a caller's CPU bitmap (bits past Keel's 64 CPUs are ignored).
fn read_cpumap(c: &Ctx, map: &XenctlBitmap) -> Result<u64, Errno> {
    if map.bitmap == 0 {
        return Err(EINVAL);
    }
    let bytes = (map.nr_bits.div_ceil(8) as usize).min(8);
    let mut b = [0u8; 8];
    c.read_bytes(map.bitmap, &mut b[..bytes])?;
    let mut m = u64::from_le_bytes(b);
    if map.nr_bits < 64 {
        m &= (1u64 << map.nr_bits) - 1;
    }
    Ok(m)
}

/// Writes a CPU mask into the caller's bitmap, zero-filling the rest of it.
fn write_cpumap(c: &Ctx, map: &XenctlBitmap, mask: u64) -> Result<(), Errno> {
    if map.bitmap == 0 {
        return Ok(());
    }
    let bytes = (map.nr_bits.div_ceil(8) as usize).min(4096);
    let mut b = vec![0u8; bytes];
    for (i, byte) in b.iter_mut().take(8).enumerate() {
        *byte = (mask >> (i * 8)) as u8;
    }
    c.write_bytes(map.bitmap, &b)
}

fn online_mask() -> u64 {
    let n = crate::sched::queues().online();
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// `XEN_DOMCTL_setvcpuaffinity` / `getvcpuaffinity`: hard affinity is what the scheduler honours; soft affinity
/// is kept and reported. As in Xen, naming no map, or naming one with a null bitmap, is -EINVAL (get included). A
/// set writes back the effective maps (hard ∩ online CPUs; soft ∩ online ∩ hard); a get reads the maps as they
/// were set, cut to the CPUs that exist (so `xl vcpu-list` shows a vCPU pinned to CPU 0 as `0 / all`, not
/// `0 / 0`).
fn affinity(c: &Ctx, dom: &Domain, d: &XenDomctl) -> Result<(), Errno> {
    let a: dc::VcpuAffinity = d.get();
    let v = vcpu(dom, a.vcpu)?;
    let (hard_f, soft_f) = (a.flags & vcpuaffinity::HARD != 0, a.flags & vcpuaffinity::SOFT != 0);
    if (!hard_f && !soft_f) || (hard_f && a.cpumap_hard.bitmap == 0) || (soft_f && a.cpumap_soft.bitmap == 0) {
        return Err(EINVAL);
    }
    let online = online_mask();
    if d.cmd == cmd::SETVCPUAFFINITY {
        let hard = if hard_f { read_cpumap(c, &a.cpumap_hard)? } else { v.sched.affinity.load(Ordering::Relaxed) };
        let soft = if soft_f { read_cpumap(c, &a.cpumap_soft)? } else { v.sched.soft_affinity.load(Ordering::Relaxed) };
        if hard_f && hard & online == 0 {
            return Err(EINVAL);
        }
        if hard_f {
            v.sched.affinity.store(hard, Ordering::Release);
            // Off a CPU it may no longer use: the scheduler moves it at its next pick.
            crate::sched::kick(v);
        }
        if soft_f {
            v.sched.soft_affinity.store(soft, Ordering::Release);
        }
    }
    let (hard, soft) = reported_affinity(
        v.sched.affinity.load(Ordering::Relaxed),
        v.sched.soft_affinity.load(Ordering::Relaxed),
        online,
        d.cmd == cmd::SETVCPUAFFINITY,
    );
    if hard_f {
        write_cpumap(c, &a.cpumap_hard, hard)?;
    }
    if soft_f {
        write_cpumap(c, &a.cpumap_soft, soft)?;
    }
    Ok(())
}

/// The (hard, soft) maps affinity calls write back: after a set, what the scheduler will use (hard ∩ online;
/// soft ∩ online ∩ hard); for a get, the affinities as they were set, within the CPUs that exist (as Xen: a vCPU
/// pinned with `xl vcpu-pin d v 0` still reports its soft affinity as `all`).
fn reported_affinity(hard: u64, soft: u64, online: u64, set: bool) -> (u64, u64) {
    if set {
        (hard & online, soft & online & hard)
    } else {
        (hard & online, soft & online)
    }
}

/// `XEN_DOMCTL_scheduler_op` for the credit scheduler: weight 1..=65535 (putinfo 0 keeps it), cap in percent
/// (putinfo 0xffff keeps it; 0 is no cap).
fn scheduler(dom: &Domain, d: &mut XenDomctl) -> Result<(), Errno> {
    let mut o: dc::SchedulerOp = d.get();
    if o.sched_id != sched_id::CREDIT {
        return Err(EINVAL);
    }
    match o.cmd {
        dc::schedop::GETINFO => {}
        dc::schedop::PUTINFO => {
            if o.weight != 0 {
                dom.weight.store(o.weight as u32, Ordering::Relaxed);
            }
            if o.cap != 0xffff {
                dom.cap.store(o.cap as u32, Ordering::Relaxed);
            }
        }
        dc::schedop::PUTVCPUINFO | dc::schedop::GETVCPUINFO => return Err(EINVAL),
        _ => return Err(EINVAL),
    }
    o.weight = dom.weight.load(Ordering::Relaxed).min(u16::MAX as u32) as u16;
    o.cap = dom.cap.load(Ordering::Relaxed).min(u16::MAX as u32 - 1) as u16;
    d.set(&o);
    Ok(())
}

/// `XEN_DOMCTL_max_mem`: the most memory the domain may hold, in KiB. As in Xen it may be set below what the
/// domain holds: it then gets no more until it is back under.
fn max_mem(dom: &Domain, d: &XenDomctl) -> Result<(), Errno> {
    let m: dc::MaxMem = d.get();
    dom.set_max_pages(m.max_memkb >> 2);
    Ok(())
}

pub mod hvmctx;
pub mod lifecycle;
pub mod shadow;
#[cfg(test)]
mod tests;
