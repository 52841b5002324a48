//! domctl through the real dispatcher.

use super::*;
use crate::testing::{self, get, put};
use keel_abi::hypercall::nr;
use keel_abi::Zeroable;

const ARG: u64 = 0x1000;
const BUF: u64 = 0x10000;

fn req(cmd: u32, domain: u16) -> XenDomctl {
    let mut d = XenDomctl::zeroed();
    d.cmd = cmd;
    d.domain = domain;
    d.interface_version = dc::INTERFACE_VERSION;
    d
}

fn call(dom: &Arc<Domain>, d: &XenDomctl) -> (i64, XenDomctl) {
    put(dom, ARG, d);
    let r = testing::hypercall(dom, 0, nr::DOMCTL, [ARG, 0, 0, 0, 0]);
    (r, get(dom, ARG))
}

fn privileged_domain() -> Arc<Domain> {
    let d = testing::domain(2, 4);
    d.privileged.store(true, Ordering::Release);
    d
}

#[test]
fn unprivileged_domains_get_eperm_for_every_command() {
    let dom = testing::domain(1, 4);
    for cmd in 0..100 {
        assert_eq!(call(&dom, &req(cmd, dom.id)).0, EPERM.negated(), "domctl {cmd}");
    }
    domain::destroy(&dom);
}

#[test]
fn version_missing_domains_and_unknown_commands() {
    let dom = privileged_domain();
    let mut d = req(cmd::GETVCPUINFO, dom.id);
    d.interface_version = 0x16;
    assert_eq!(call(&dom, &d).0, EACCES.negated());
    assert_eq!(call(&dom, &req(cmd::GETVCPUINFO, 0x7fe0)).0, ESRCH.negated());
    assert_eq!(call(&dom, &req(200, dom.id)).0, ENOSYS.negated());
    assert_eq!(call(&dom, &req(cmd::GETDOMAININFO, keel_abi::DOMID_SELF)).0, EINVAL.negated());
    domain::destroy(&dom);
}

#[test]
fn getdomaininfo_answers_the_first_domain_at_or_above() {
    let dom = privileged_domain();
    let (r, out) = call(&dom, &req(cmd::GETDOMAININFO, dom.id));
    assert_eq!((r, out.domain), (0, dom.id));
    assert_eq!(out.get::<dc::GetDomainInfo>().tot_pages, 1024);
    let other = testing::domain(1, 4);
    // Asking for an id between the two gets the next one.
    let (r, out) = call(&dom, &req(cmd::GETDOMAININFO, dom.id + 1));
    assert_eq!(r, 0);
    assert!(out.domain > dom.id && out.domain <= other.id);
    assert_eq!(call(&dom, &req(cmd::GETDOMAININFO, 0x7fef)).0, ESRCH.negated());
    domain::destroy(&other);
    domain::destroy(&dom);
}

#[test]
fn vcpu_info_and_affinity() {
    let dom = privileged_domain();
    let mut d = req(cmd::GETVCPUINFO, dom.id);
    d.set(&dc::GetVcpuInfo { vcpu: 1, ..Default::default() });
    let (r, out) = call(&dom, &d);
    assert_eq!(r, 0);
    let i: dc::GetVcpuInfo = out.get();
    assert_eq!((i.vcpu, i.online, i.running), (1, 0, 0));
    d.set(&dc::GetVcpuInfo { vcpu: 2, ..Default::default() });
    assert_eq!(call(&dom, &d).0, EINVAL.negated(), "past max_vcpus");

    // Pin vCPU 1 to CPU 0: the scheduler's hard affinity changes and the effective map comes back.
    put(&dom, BUF, &0x01u8);
    let bitmap = |at: u64| dc::XenctlBitmap { bitmap: at, nr_bits: 8, pad: 0 };
    let mut d = req(cmd::SETVCPUAFFINITY, dom.id);
    d.set(&dc::VcpuAffinity { vcpu: 1, flags: vcpuaffinity::HARD, cpumap_hard: bitmap(BUF), ..Default::default() });
    assert_eq!(call(&dom, &d).0, 0);
    assert_eq!(dom.vcpus[1].sched.affinity.load(Ordering::Relaxed), 1);
    put(&dom, BUF, &0xffu8);
    let mut d = req(cmd::GETVCPUAFFINITY, dom.id);
    d.set(&dc::VcpuAffinity {
        vcpu: 1,
        flags: vcpuaffinity::HARD | vcpuaffinity::SOFT,
        cpumap_hard: bitmap(BUF),
        cpumap_soft: bitmap(BUF + 8),
    });
    assert_eq!(call(&dom, &d).0, 0);
    assert_eq!(get::<u8>(&dom, BUF), 1);
    // No map named, or a null bitmap to set: -EINVAL.
    let mut d = req(cmd::SETVCPUAFFINITY, dom.id);
    d.set(&dc::VcpuAffinity { vcpu: 1, flags: 0, ..Default::default() });
    assert_eq!(call(&dom, &d).0, EINVAL.negated());
    d.set(&dc::VcpuAffinity { vcpu: 1, flags: vcpuaffinity::HARD, ..Default::default() });
    assert_eq!(call(&dom, &d).0, EINVAL.negated());
    domain::destroy(&dom);
}

#[test]
fn getvcpuaffinity_reports_soft_affinity_as_set() {
    // Hard pinned to CPU 0 of two, soft left at every CPU: a get answers soft = both CPUs (xl vcpu-list's
    // "0 / all", as on Xen); a set writes back the soft map the scheduler uses, within the hard one.
    assert_eq!(reported_affinity(0b01, u64::MAX, 0b11, false), (0b01, 0b11));
    assert_eq!(reported_affinity(0b01, u64::MAX, 0b11, true), (0b01, 0b01));
    assert_eq!(reported_affinity(u64::MAX, 0b10, 0b11, false), (0b11, 0b10));
}

#[test]
fn credit_weight_and_cap() {
    let dom = privileged_domain();
    let op = |cmd: u32, weight: u16, cap: u16| {
        let mut d = req(cmd::SCHEDULER_OP, dom.id);
        d.set(&dc::SchedulerOp { sched_id: sched_id::CREDIT, cmd, weight, cap, rest: [0; 3] });
        let (r, out) = call(&dom, &d);
        (r, out.get::<dc::SchedulerOp>())
    };
    assert_eq!(op(dc::schedop::PUTINFO, 512, 0xffff).0, 0);
    let (r, got) = op(dc::schedop::GETINFO, 0, 0);
    assert_eq!((r, got.weight, got.cap), (0, 512, 0));
    assert_eq!(op(dc::schedop::PUTINFO, 0, 50).0, 0);
    let (_, got) = op(dc::schedop::GETINFO, 0, 0);
    assert_eq!((got.weight, got.cap), (512, 50), "weight 0 keeps the weight");
    assert_eq!(dom.weight.load(Ordering::Relaxed), 512);
    let mut d = req(cmd::SCHEDULER_OP, dom.id);
    d.set(&dc::SchedulerOp { sched_id: 6, cmd: dc::schedop::GETINFO, ..Default::default() });
    assert_eq!(call(&dom, &d).0, EINVAL.negated());
    domain::destroy(&dom);
}

#[test]
fn max_mem_sets_the_limit() {
    let dom = privileged_domain();
    let mut d = req(cmd::MAX_MEM, dom.id);
    d.set(&dc::MaxMem { max_memkb: 8192 });
    assert_eq!(call(&dom, &d).0, 0);
    assert_eq!(dom.mem.lock().max_pages, 2048);
    domain::destroy(&dom);
}

/// `xl vcpu-pin 0 1 0` sets only the hard map; `xl vcpu-list` then reads both maps and must see the soft one as it
/// was set (all CPUs), not cut down to the hard one: Xen's get returns the maps as set (it used to come back as
/// the hard map). A get naming a map with a null bitmap is -EINVAL, as a set (it used to succeed silently).
#[test]
fn get_affinity_reads_the_maps_as_set() {
    let dom = privileged_domain();
    let bitmap = |at: u64| dc::XenctlBitmap { bitmap: at, nr_bits: 8, pad: 0 };
    put(&dom, BUF, &0x01u8);
    let mut d = req(cmd::SETVCPUAFFINITY, dom.id);
    d.set(&dc::VcpuAffinity { vcpu: 1, flags: vcpuaffinity::HARD, cpumap_hard: bitmap(BUF), ..Default::default() });
    assert_eq!(call(&dom, &d).0, 0);
    put(&dom, BUF, &0u64);
    let mut d = req(cmd::GETVCPUAFFINITY, dom.id);
    d.set(&dc::VcpuAffinity {
        vcpu: 1,
        flags: vcpuaffinity::HARD | vcpuaffinity::SOFT,
        cpumap_hard: bitmap(BUF),
        cpumap_soft: bitmap(BUF + 8),
    });
    assert_eq!(call(&dom, &d).0, 0);
    let online = online_mask() as u8;
    assert_eq!((get::<u8>(&dom, BUF), get::<u8>(&dom, BUF + 8)), (1, online), "hard 0, soft every CPU");
    // With two CPUs online (the host tests have one): a get reports soft as set, a set soft ∩ hard.
    assert_eq!(reported_affinity(0b01, u64::MAX, 0b11, false), (0b01, 0b11));
    assert_eq!(reported_affinity(0b01, u64::MAX, 0b11, true), (0b01, 0b01));
    // Setting the soft map alone writes back soft ∩ online ∩ hard, and keeps the soft map as set.
    put(&dom, BUF + 8, &0xffu8);
    let mut d = req(cmd::SETVCPUAFFINITY, dom.id);
    d.set(&dc::VcpuAffinity { vcpu: 1, flags: vcpuaffinity::SOFT, cpumap_soft: bitmap(BUF + 8), ..Default::default() });
    assert_eq!(call(&dom, &d).0, 0);
    assert_eq!(get::<u8>(&dom, BUF + 8), 1);
    assert_eq!(dom.vcpus[1].sched.soft_affinity.load(Ordering::Relaxed) & 0xff, 0xff);
    let mut d = req(cmd::GETVCPUAFFINITY, dom.id);
    d.set(&dc::VcpuAffinity { vcpu: 1, flags: vcpuaffinity::SOFT, ..Default::default() });
    assert_eq!(call(&dom, &d).0, EINVAL.negated(), "a get naming a null bitmap");
    domain::destroy(&dom);
}
