//! `sysctl` (35): the toolstack's host-wide operations, Xen 4.17's interface (version 0x15). Only a privileged
//! domain may call it (-EPERM otherwise, as Xen's default XSM policy); a wrong interface version is -EACCES before
//! anything else; an unknown command is -ENOSYS. The request is copied back only on success.

use super::{Action, Ctx, HResult};
use crate::domain::{self, Domain};
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::Ordering;
use keel_abi::domctl::{sched_id, GetDomainInfo};
use keel_abi::hypercall::errno::*;
use keel_abi::sysctl::{self as sc, cmd, XenSysctl};
use keel_abi::Errno;

/// Keel's credit scheduler has no context-switch rate limit: 0, as Xen reports a disabled one.
pub const RATELIMIT_US: u32 = 0;

/// The checks every toolstack hypercall starts with.
pub fn privileged(c: &Ctx) -> Result<(), Errno> {
    if c.dom.is_privileged() {
        Ok(())
    } else {
        Err(EPERM)
    }
}

pub fn sysctl(c: &mut Ctx) -> HResult {
    privileged(c)?;
    let arg = c.args[0];
    let mut s: XenSysctl = c.read(arg)?;
    if s.interface_version != sc::INTERFACE_VERSION {
        return Err(EACCES);
    }
    match s.cmd {
        cmd::READCONSOLE => read_console(c, &mut s)?,
        cmd::PHYSINFO => s.set(&physinfo()),
        cmd::SCHED_ID => s.set(&sc::SchedId { sched_id: sched_id::CREDIT }),
        cmd::GETDOMAININFOLIST => domain_info_list(c, &mut s)?,
        cmd::GETCPUINFO => cpu_info(c, &mut s)?,
        cmd::CPUTOPOINFO => cpu_topology(c, &mut s)?,
        cmd::NUMAINFO => numa_info(c, &mut s)?,
        cmd::PCITOPOINFO => pci_topology(c, &mut s)?,
        cmd::CPUPOOL_OP => cpupool(c, &mut s)?,
        cmd::SCHEDULER_OP => scheduler(&mut s)?,
        other => {
            log_unknown(other);
            return Err(ENOSYS);
        }
    }
    c.write(arg, &s)?;
    Ok(Action::Return(0))
}

fn log_unknown(n: u32) {
    static SEEN: spin::Mutex<u128> = spin::Mutex::new(0);
    super::log_unimplemented("sysctl", &SEEN, n);
}

fn online_cpus() -> u32 {
    crate::sched::queues().online().max(1)
}

/// `XEN_SYSCTL_physinfo`: CPUs, memory, capabilities and feature words of this machine.
pub fn physinfo() -> sc::PhysInfo {
    let cpus = online_cpus();
    let leaf = |l: u32, s: u32| {
        #[cfg(target_arch = "x86_64")]
        {
            let r = core::arch::x86_64::__cpuid_count(l, s);
            (r.eax, r.ebx, r.ecx, r.edx)
        }
    };
    let (_, _, c1, d1) = leaf(1, 0);
    let (_, b7, c7, _) = leaf(7, 0);
    let (_, _, ce1, de1) = leaf(0x8000_0001, 0);
    let (ad1, _, _, _) = leaf(0xd, 1);
    let (_, _, _, de7) = leaf(0x8000_0007, 0);
    let total = crate::mm::total_frames();
    sc::PhysInfo {
        threads_per_core: 1,
        cores_per_socket: cpus,
        nr_cpus: cpus,
        max_cpu_id: cpus - 1,
        nr_nodes: 1,
        max_node_id: 0,
        cpu_khz: (crate::arch::x86::time::tsc_hz() / 1000) as u32,
        capabilities: sc::physcap::HVM | sc::physcap::HAP | sc::physcap::GNTTAB_V1,
        arch_capabilities: 0,
        pad: 0,
        total_pages: total,
        free_pages: crate::mm::free_frames(),
        scrub_pages: 0,
        outstanding_pages: 0,
        max_mfn: total.saturating_sub(1),
        hw_cap: [d1, c1, de1, ce1, ad1, b7, c7, de7],
    }
}

/// `XEN_SYSCTL_readconsole`: Keel's log ring through free-running indices, as Xen's conring: with `incremental`,
/// reading goes on from `index` when it lies within what the ring still holds (and past what `clear` consumed);
/// otherwise from the oldest byte kept. `clear` consumes what was read.
fn read_console(c: &Ctx, s: &mut XenSysctl) -> Result<(), Errno> {
    static CONSUMED: spin::Mutex<u64> = spin::Mutex::new(0);
    let mut r: sc::ReadConsole = s.get();
    let mut buf = Vec::new();
    buf.try_reserve_exact(r.count.min(64 * 1024) as usize).map_err(|_| ENOMEM)?;
    buf.resize(r.count.min(64 * 1024) as usize, 0);
    let mut consumed = CONSUMED.lock();
    let (start, n) = crate::console::read_ring_from(*consumed, r.incremental != 0, r.index, &mut buf);
    c.write_bytes(r.buffer, &buf[..n])?;
    if r.clear != 0 {
        *consumed = start + n as u64;
    }
    r.count = n as u32;
    r.index = (start + n as u64) as u32;
    s.set(&r);
    Ok(())
}

/// One domain in `getdomaininfo` form.
pub fn domain_info(d: &Domain) -> GetDomainInfo {
    use crate::domain::{DomainState, VcpuState};
    use keel_abi::domctl::{dominf, emu};
    let mut flags = dominf::HVM_GUEST | dominf::HAP;
    match d.state() {
        DomainState::Shutdown(r) => flags |= dominf::SHUTDOWN | (r as u32) << dominf::SHUTDOWN_SHIFT,
        DomainState::Crashed(_) => {
            flags |= dominf::SHUTDOWN | (keel_abi::hypercall::ShutdownReason::Crash as u32) << dominf::SHUTDOWN_SHIFT
        }
        DomainState::Paused => flags |= dominf::PAUSED,
        DomainState::Running => {}
    }
    if d.dying.load(Ordering::Acquire) {
        flags |= dominf::DYING;
    }
    if d.is_paused() {
        flags |= dominf::PAUSED;
    }
    let online: Vec<VcpuState> =
        d.vcpus.iter().map(|v| v.state()).filter(|s| !matches!(s, VcpuState::Offline | VcpuState::Dead)).collect();
    if online.contains(&VcpuState::Running) {
        flags |= dominf::RUNNING;
    }
    if !online.is_empty() && online.iter().all(|s| *s == VcpuState::Blocked) {
        flags |= dominf::BLOCKED;
    }
    let (tot_pages, max_pages) = {
        let m = d.mem.lock();
        (m.tot_pages, m.max_pages)
    };
    let gfn = d.shared_info_gfn.load(Ordering::Acquire);
    GetDomainInfo {
        domain: d.id,
        flags,
        tot_pages,
        max_pages,
        shared_info_frame: if gfn == u64::MAX { 0 } else { gfn },
        cpu_time: d.cpu_time_ns(),
        nr_online_vcpus: online.len() as u32,
        max_vcpu_id: (d.vcpus.len() as u32).wrapping_sub(1),
        handle: *d.handle.lock(),
        cpupool: 0,
        gpaddr_bits: 48,
        arch_config: keel_abi::domctl::ArchDomainConfig { emulation_flags: emu::LAPIC, misc_flags: 0 },
        ..Default::default()
    }
}

/// `XEN_SYSCTL_getdomaininfolist`: up to `max_domains` domains with ids from `first_domain` on, in id order; none
/// left is a success with 0 (how `xl list` ends its loop).
fn domain_info_list(c: &Ctx, s: &mut XenSysctl) -> Result<(), Errno> {
    let mut l: sc::GetDomainInfoList = s.get();
    let each = core::mem::size_of::<GetDomainInfo>() as u64;
    let mut n = 0u32;
    for d in domain::all().iter().filter(|d| d.id >= l.first_domain) {
        if n >= l.max_domains {
            break;
        }
        let at = l.buffer.checked_add(n as u64 * each).ok_or(EFAULT)?;
        c.write(at, &domain_info(d))?;
        n += 1;
    }
    l.num_domains = n;
    s.set(&l);
    Ok(())
}

/// `XEN_SYSCTL_getcpuinfo`: each CPU's idle time (Keel counts none yet: 0).
fn cpu_info(c: &Ctx, s: &mut XenSysctl) -> Result<(), Errno> {
    let mut g: sc::GetCpuInfo = s.get();
    let n = g.max_cpus.min(online_cpus());
    for i in 0..n as u64 {
        c.write(g.info.checked_add(i * 8).ok_or(EFAULT)?, &0u64)?;
    }
    g.nr_cpus = n;
    s.set(&g);
    Ok(())
}

/// `XEN_SYSCTL_cputopoinfo`: one core per CPU on socket 0, node 0; a null handle asks for the count.
fn cpu_topology(c: &Ctx, s: &mut XenSysctl) -> Result<(), Errno> {
    let mut t: sc::CpuTopoInfo = s.get();
    let cpus = online_cpus();
    if t.cputopo != 0 {
        for i in 0..t.num_cpus.min(cpus) {
            let e = sc::CpuTopo { core: i, socket: 0, node: 0 };
            c.write(t.cputopo.checked_add(i as u64 * 12).ok_or(EFAULT)?, &e)?;
        }
        for i in cpus..t.num_cpus.min(256) {
            let absent = sc::CpuTopo { core: u32::MAX, socket: u32::MAX, node: u32::MAX };
            c.write(t.cputopo.checked_add(i as u64 * 12).ok_or(EFAULT)?, &absent)?;
        }
    }
    t.num_cpus = cpus;
    s.set(&t);
    Ok(())
}

/// `XEN_SYSCTL_numainfo`: one node holding all memory, distance 10 to itself; null handles ask for the count.
fn numa_info(c: &Ctx, s: &mut XenSysctl) -> Result<(), Errno> {
    let mut n: sc::NumaInfo = s.get();
    if n.num_nodes >= 1 {
        if n.meminfo != 0 {
            let m = sc::MemInfo {
                memsize: crate::mm::total_frames() * crate::mm::PAGE_SIZE,
                memfree: crate::mm::free_frames() * crate::mm::PAGE_SIZE,
            };
            c.write(n.meminfo, &m)?;
        }
        if n.distance != 0 {
            c.write(n.distance, &10u32)?;
        }
    }
    n.num_nodes = 1;
    s.set(&n);
    Ok(())
}

/// Devices one `pcitopoinfo` call answers for; libxc calls again for the rest (Xen stops early when preempted).
pub const PCITOPO_BATCH: u32 = 256;

/// `XEN_SYSCTL_pcitopoinfo`: the NUMA node of each PCI device the caller lists (`xl info -n`). Keel has one
/// node and reads no ACPI proximity for devices, so each is on no known node (`XEN_INVALID_NODE_ID`), which is
/// what Xen answers on a machine without NUMA tables. Null handles are -EINVAL; `num_devs` comes back as the number
/// answered (at most [`PCITOPO_BATCH`]; 0 only when none were asked).
fn pci_topology(c: &Ctx, s: &mut XenSysctl) -> Result<(), Errno> {
    let mut t: sc::PciTopoInfo = s.get();
    if t.devs == 0 || t.nodes == 0 {
        return Err(EINVAL);
    }
    let n = t.num_devs.min(PCITOPO_BATCH);
    for i in 0..n as u64 {
        // Each `physdev_pci_device` (seg u16, bus u8, devfn u8) must be readable, as Xen copies it in.
        let _device: u32 = c.read(t.devs.checked_add(i * 4).ok_or(EFAULT)?)?;
        c.write(t.nodes.checked_add(i * 4).ok_or(EFAULT)?, &sc::INVALID_NODE_ID)?;
    }
    t.num_devs = n;
    s.set(&t);
    Ok(())
}

/// `XEN_SYSCTL_cpupool_op`: Keel has one pool, 0, running the credit scheduler over every CPU.
fn cpupool(c: &Ctx, s: &mut XenSysctl) -> Result<(), Errno> {
    use sc::cpupool_op as op;
    let mut p: sc::CpupoolOp = s.get();
    match p.op {
        op::INFO => {
            // The first pool with an id at or above the one asked for; past the last, -ENOENT ends the caller's
            // loop.
            if p.cpupool_id != 0 && p.cpupool_id != op::PAR_ANY {
                return Err(ENOENT);
            }
            p.cpupool_id = 0;
            p.sched_id = sched_id::CREDIT;
            p.n_dom = domain::count() as u32;
            write_cpumap(c, &p.cpumap, online_cpus())?;
        }
        op::FREEINFO => write_cpumap(c, &p.cpumap, 0)?,
        op::CREATE | op::DESTROY | op::ADDCPU | op::RMCPU | op::MOVEDOMAIN => return Err(EOPNOTSUPP),
        _ => return Err(ENOSYS),
    }
    s.set(&p);
    Ok(())
}

/// Writes a CPU bitmap with the first `cpus` bits set into the caller's `xenctl_bitmap`, zero-filling the rest.
pub fn write_cpumap(c: &Ctx, map: &keel_abi::domctl::XenctlBitmap, cpus: u32) -> Result<(), Errno> {
    if map.bitmap == 0 {
        return Ok(());
    }
    let bytes = map.nr_bits.div_ceil(8) as usize;
    let mut b = vec![0u8; bytes.min(4096)];
    for i in 0..(cpus as usize).min(b.len() * 8) {
        b[i / 8] |= 1 << (i % 8);
    }
    c.write_bytes(map.bitmap, &b)
}

/// `XEN_SYSCTL_scheduler_op` for pool 0's credit scheduler: the time slice (the one Keel's run loop uses),
/// ratelimit and migration delay; `putinfo` checks ranges as Xen does and returns what applies.
fn scheduler(s: &mut XenSysctl) -> Result<(), Errno> {
    let mut o: sc::SchedulerOp = s.get();
    if o.cpupool_id != 0 {
        return Err(ESRCH);
    }
    if o.sched_id != sched_id::CREDIT {
        return Err(EINVAL);
    }
    match o.cmd {
        sc::schedop::GETINFO => {}
        sc::schedop::PUTINFO => {
            // Xen's credit limits: slice 1..=1000 ms; a rate limit of 0 or 100..=500000 us, not above the slice.
            if !(1..=1000).contains(&o.tslice_ms)
                || (o.ratelimit_us != 0 && !(100..=500_000).contains(&o.ratelimit_us))
                || o.ratelimit_us as u64 > o.tslice_ms as u64 * 1000
                || o.vcpu_migr_delay_us > 100_000
            {
                return Err(EINVAL);
            }
            // Keel's scheduler has neither a rate limit nor a migration delay to set.
            if o.ratelimit_us != RATELIMIT_US || o.vcpu_migr_delay_us != 0 {
                return Err(EOPNOTSUPP);
            }
            crate::sched::set_timeslice_ns(o.tslice_ms as u64 * 1_000_000);
        }
        _ => return Err(EINVAL),
    }
    o.tslice_ms = (crate::sched::timeslice_ns() / 1_000_000) as u32;
    o.ratelimit_us = RATELIMIT_US;
    o.vcpu_migr_delay_us = 0;
    s.set(&o);
    Ok(())
}

#[cfg(test)]
mod tests;
