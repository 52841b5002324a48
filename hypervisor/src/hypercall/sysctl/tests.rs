//! sysctl through the real dispatcher, from a privileged and an unprivileged test domain.

use super::*;
use crate::testing::{self, get, put};
use keel_abi::hypercall::nr;
use keel_abi::Zeroable;

const ARG: u64 = 0x1000;
const BUF: u64 = 0x10000;

fn req(cmd: u32) -> XenSysctl {
    let mut s = XenSysctl::zeroed();
    s.cmd = cmd;
    s.interface_version = sc::INTERFACE_VERSION;
    s
}

fn call(dom: &alloc::sync::Arc<Domain>, s: &XenSysctl) -> (i64, XenSysctl) {
    put(dom, ARG, s);
    let r = testing::hypercall(dom, 0, nr::SYSCTL, [ARG, 0, 0, 0, 0]);
    (r, get(dom, ARG))
}

fn privileged_domain() -> alloc::sync::Arc<Domain> {
    let d = testing::domain(2, 4);
    d.privileged.store(true, Ordering::Release);
    d
}

#[test]
fn unprivileged_domains_get_eperm_for_every_command() {
    let dom = testing::domain(1, 4);
    for cmd in 0..64 {
        assert_eq!(call(&dom, &req(cmd)).0, EPERM.negated(), "sysctl {cmd}");
    }
    domain::destroy(&dom);
}

#[test]
fn version_and_unknown_commands() {
    let dom = privileged_domain();
    let mut s = req(cmd::PHYSINFO);
    s.interface_version = 0x14;
    assert_eq!(call(&dom, &s).0, EACCES.negated());
    assert_eq!(call(&dom, &req(2)).0, ENOSYS.negated());
    assert_eq!(call(&dom, &req(99)).0, ENOSYS.negated());
    assert_eq!(testing::hypercall(&dom, 0, nr::SYSCTL, [0x4000_0000, 0, 0, 0, 0]), EFAULT.negated());
    domain::destroy(&dom);
}

#[test]
fn physinfo_and_sched_id() {
    let dom = privileged_domain();
    let (r, s) = call(&dom, &req(cmd::PHYSINFO));
    assert_eq!(r, 0);
    let p: sc::PhysInfo = s.get();
    assert!(p.nr_cpus >= 1 && p.max_cpu_id == p.nr_cpus - 1);
    assert_eq!(p.capabilities & sc::physcap::HVM, sc::physcap::HVM);
    assert_eq!(p.nr_nodes, 1);
    let (r, s) = call(&dom, &req(cmd::SCHED_ID));
    assert_eq!((r, s.get::<sc::SchedId>().sched_id), (0, sched_id::CREDIT));
    domain::destroy(&dom);
}

#[test]
fn domain_list_is_in_id_order_and_ends_with_zero() {
    let dom = privileged_domain();
    let other = testing::domain(3, 4);
    let mut s = req(cmd::GETDOMAININFOLIST);
    s.set(&sc::GetDomainInfoList { first_domain: dom.id, max_domains: 64, buffer: BUF, ..Default::default() });
    let (r, out) = call(&dom, &s);
    assert_eq!(r, 0);
    let n = out.get::<sc::GetDomainInfoList>().num_domains as u64;
    let infos: alloc::vec::Vec<GetDomainInfo> = (0..n).map(|i| get(&dom, BUF + i * 112)).collect();
    assert!(infos.windows(2).all(|w| w[0].domain < w[1].domain), "ascending ids");
    let me = infos.iter().find(|i| i.domain == dom.id).expect("the caller is listed");
    assert_eq!(me.tot_pages, 1024);
    assert_eq!(me.max_vcpu_id, 1);
    assert_eq!(me.nr_online_vcpus, 0, "test vCPUs never started");
    let o = infos.iter().find(|i| i.domain == other.id).expect("the other domain is listed");
    assert_eq!(o.max_vcpu_id, 2);
    // Past the last domain: success with none, how `xl list` ends its loop.
    s.set(&sc::GetDomainInfoList { first_domain: 0x7fef, max_domains: 64, buffer: BUF, ..Default::default() });
    let (r, out) = call(&dom, &s);
    assert_eq!((r, out.get::<sc::GetDomainInfoList>().num_domains), (0, 0));
    // A buffer that runs off guest RAM.
    s.set(&sc::GetDomainInfoList { first_domain: 0, max_domains: 64, buffer: (4 << 20) - 8, ..Default::default() });
    assert_eq!(call(&dom, &s).0, EFAULT.negated());
    domain::destroy(&other);
    domain::destroy(&dom);
}

#[test]
fn cpupool_has_pool_zero_only() {
    let dom = privileged_domain();
    let mut s = req(cmd::CPUPOOL_OP);
    s.set(&sc::CpupoolOp {
        op: sc::cpupool_op::INFO,
        cpumap: keel_abi::domctl::XenctlBitmap { bitmap: BUF, nr_bits: 8, pad: 0 },
        ..Default::default()
    });
    let (r, out) = call(&dom, &s);
    assert_eq!(r, 0);
    let p: sc::CpupoolOp = out.get();
    assert_eq!((p.cpupool_id, p.sched_id), (0, sched_id::CREDIT));
    assert_eq!(get::<u8>(&dom, BUF), 1, "one online CPU in the host tests");
    s.set(&sc::CpupoolOp { op: sc::cpupool_op::INFO, cpupool_id: 1, ..Default::default() });
    assert_eq!(call(&dom, &s).0, ENOENT.negated(), "the end of the pool list");
    domain::destroy(&dom);
}

#[test]
fn credit_globals() {
    let dom = privileged_domain();
    let mut s = req(cmd::SCHEDULER_OP);
    s.set(&sc::SchedulerOp { sched_id: sched_id::CREDIT, cmd: sc::schedop::GETINFO, ..Default::default() });
    let (r, out) = call(&dom, &s);
    assert_eq!(r, 0);
    assert_eq!(out.get::<sc::SchedulerOp>().tslice_ms, (crate::sched::timeslice_ns() / 1_000_000) as u32);
    s.set(&sc::SchedulerOp { sched_id: 6, cmd: sc::schedop::GETINFO, ..Default::default() });
    assert_eq!(call(&dom, &s).0, EINVAL.negated(), "not the pool's scheduler");
    s.set(&sc::SchedulerOp {
        sched_id: sched_id::CREDIT,
        cmd: sc::schedop::PUTINFO,
        tslice_ms: 0,
        ..Default::default()
    });
    assert_eq!(call(&dom, &s).0, EINVAL.negated(), "slice out of range");
    domain::destroy(&dom);
}

#[test]
fn readconsole_reads_on_from_its_index() {
    let dom = privileged_domain();
    crate::info!("sysctl test marker one");
    let mut s = req(cmd::READCONSOLE);
    s.set(&sc::ReadConsole { incremental: 1, buffer: BUF, count: 64 * 1024, ..Default::default() });
    let (r, out) = call(&dom, &s);
    assert_eq!(r, 0);
    let rc: sc::ReadConsole = out.get();
    let mut text = alloc::vec![0u8; rc.count as usize];
    dom.mem.lock().read(BUF, &mut text).unwrap();
    assert!(String::from_utf8_lossy(&text).contains("sysctl test marker one"));
    // From the returned index on, only what came after.
    crate::info!("sysctl test marker two");
    s.set(&sc::ReadConsole { incremental: 1, index: rc.index, buffer: BUF, count: 64 * 1024, ..Default::default() });
    let (_, out) = call(&dom, &s);
    let rc2: sc::ReadConsole = out.get();
    let mut text = alloc::vec![0u8; rc2.count as usize];
    dom.mem.lock().read(BUF, &mut text).unwrap();
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("sysctl test marker two") && !text.contains("marker one"), "{text}");
    domain::destroy(&dom);
}

/// `xl info -n` asks the node of each PCI device dom0 lists (libxl_get_pci_topology): Keel answered -ENOSYS, which
/// makes xl print "libxl_get_pci_topology failed." when dom0 has PCI devices. Each device is on no known node (as
/// Xen without NUMA tables says); long lists go in batches.
#[test]
fn pcitopoinfo_answers_each_device() {
    let dom = privileged_domain();
    let mut s = req(cmd::PCITOPOINFO);
    s.set(&sc::PciTopoInfo { num_devs: 3, pad: 0, devs: BUF, nodes: BUF + 0x100 });
    put(&dom, BUF + 0x100, &[7u32; 4]);
    let (r, out) = call(&dom, &s);
    assert_eq!(r, 0);
    assert_eq!(out.get::<sc::PciTopoInfo>().num_devs, 3);
    assert_eq!(get::<[u32; 4]>(&dom, BUF + 0x100), [sc::INVALID_NODE_ID, sc::INVALID_NODE_ID, sc::INVALID_NODE_ID, 7]);
    s.set(&sc::PciTopoInfo { num_devs: 1000, pad: 0, devs: BUF, nodes: BUF + 0x1000 });
    let (r, out) = call(&dom, &s);
    assert_eq!((r, out.get::<sc::PciTopoInfo>().num_devs), (0, PCITOPO_BATCH));
    s.set(&sc::PciTopoInfo { num_devs: 1, pad: 0, devs: 0, nodes: BUF });
    assert_eq!(call(&dom, &s).0, EINVAL.negated());
    s.set(&sc::PciTopoInfo { num_devs: 1, pad: 0, devs: BUF, nodes: 0x1000_0000 });
    assert_eq!(call(&dom, &s).0, EFAULT.negated());
    domain::destroy(&dom);
}
