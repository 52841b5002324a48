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

// ---- Building a guest from dom0 (createdomain, populate, memory map, params, ports, hvmcontext, unpause) ----

use crate::hvm::InitState;
use crate::mm::host_frames;
use keel_abi::domctl::{cdf, dominf, emu, hvm_save, CreateDomain, HvmContext, SaveDescriptor, SaveHeader};
use keel_abi::shared_info::{
    evtchnop, evtchnstat, hvm_param, hvmop, virq, xenmem, EvtchnAllocUnbound, EvtchnBindVirq, EvtchnStatus,
    XenForeignMemoryMap, XenHvmParam, XenMemoryMap, XenMemoryReservation,
};

/// A privileged domain under id 0 (VIRQ_DOM_EXC goes to domain 0), waiting while another test holds the id.
fn dom0() -> Arc<Domain> {
    let cfg = || domain::DomainConfig {
        name: "Domain-0".into(),
        vcpus: 1,
        memory: 4 << 20,
        weight: crate::sched::DEFAULT_WEIGHT,
        cap: 0,
        expect_crash: false,
        limits: crate::domain::Limits::DEFAULT,
    };
    for _ in 0..1000 {
        if let Ok(d) = domain::create_with_id(0, cfg(), &testing::support()) {
            d.privileged.store(true, Ordering::Release);
            return d;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("domain id 0 stayed in use");
}

/// libxl's request for a PVH guest with `vcpus` vCPUs.
fn pvh(vcpus: u32) -> CreateDomain {
    CreateDomain {
        flags: cdf::HVM | cdf::HAP,
        max_vcpus: vcpus,
        max_evtchn_port: 1023,
        max_grant_frames: 32,
        max_maptrack_frames: 1024,
        grant_opts: 1,
        arch: dc::ArchDomainConfig { emulation_flags: emu::LAPIC, misc_flags: 0 },
        handle: [7; 16],
        ..Default::default()
    }
}

fn create(d0: &Arc<Domain>, cfg: &CreateDomain, domid: u16) -> (i64, u16) {
    let mut d = req(cmd::CREATEDOMAIN, domid);
    d.set(cfg);
    let (r, out) = call(d0, &d);
    (r, out.domain)
}

fn simple(d0: &Arc<Domain>, c: u32, domid: u16) -> i64 {
    call(d0, &req(c, domid)).0
}

fn info(d0: &Arc<Domain>, domid: u16) -> dc::GetDomainInfo {
    let (r, out) = call(d0, &req(cmd::GETDOMAININFO, domid));
    assert_eq!((r, out.domain), (0, domid));
    out.get()
}

/// XENMEM_populate_physmap of `gfns` (extents of 2^order pages) into `domid`; the extents done.
fn populate(d0: &Arc<Domain>, domid: u16, gfns: &[u64], order: u32) -> i64 {
    for (i, g) in gfns.iter().enumerate() {
        put(d0, BUF + 8 * i as u64, g);
    }
    let r = XenMemoryReservation {
        extent_start: BUF,
        nr_extents: gfns.len() as u64,
        extent_order: order,
        domid,
        ..Default::default()
    };
    put(d0, ARG, &r);
    testing::hypercall(d0, 0, nr::MEMORY_OP, [xenmem::POPULATE_PHYSMAP, ARG, 0, 0, 0])
}

fn param(caller: &Arc<Domain>, c: u64, domid: u16, index: u32, value: u64) -> (i64, u64) {
    put(caller, ARG, &XenHvmParam { domid, pad: 0, index, value });
    let r = testing::hypercall(caller, 0, nr::HVM_OP, [c, ARG, 0, 0, 0]);
    (r, get::<XenHvmParam>(caller, ARG).value)
}

fn hvmctx(d0: &Arc<Domain>, c: u32, domid: u16, bytes: Option<&[u8]>, size: u32) -> (i64, u32) {
    if let Some(b) = bytes {
        d0.mem.lock().write(BUF, b).unwrap();
    }
    let mut d = req(c, domid);
    d.set(&HvmContext { size, pad: 0, buffer: if size == 0 && bytes.is_none() { 0 } else { BUF } });
    let (r, out) = call(d0, &d);
    (r, out.get::<HvmContext>().size)
}

fn record<T: keel_abi::Pod>(out: &mut alloc::vec::Vec<u8>, typecode: u16, instance: u16, v: &T) {
    raw_record(out, typecode, instance, bytemuck::bytes_of(v));
}

fn raw_record(out: &mut alloc::vec::Vec<u8>, typecode: u16, instance: u16, b: &[u8]) {
    out.extend_from_slice(bytemuck::bytes_of(&SaveDescriptor { typecode, instance, length: b.len() as u32 }));
    out.extend_from_slice(b);
}

fn header() -> SaveHeader {
    SaveHeader { magic: hvm_save::MAGIC, version: hvm_save::VERSION, ..Default::default() }
}

/// libxenguest's boot-vCPU load: HEADER, CPU 0 in the PVH entry state, END.
fn boot_context(entry: u32, start_info: u32) -> alloc::vec::Vec<u8> {
    let mut s = alloc::vec::Vec::new();
    record(&mut s, hvm_save::HEADER, 0, &header());
    record(&mut s, hvm_save::CPU, 0, &hvmctx::pvh_record(entry, start_info));
    record(&mut s, hvm_save::END, 0, &[0u8; 0]);
    s
}

/// A PVH guest built entirely through the toolstack's hypercalls, as libxl and libxenguest do, then destroyed:
/// every frame it had returns.
#[test]
fn a_guest_is_built_through_hypercalls_and_destroyed_without_leaks() {
    let d0 = dom0();
    let (r, id) = create(&d0, &pvh(2), keel_abi::DOMID_INVALID);
    assert_eq!(r, 0);
    assert!(id > 0 && id < keel_abi::DOMID_FIRST_RESERVED, "id {id}");
    let guest = domain::get(id).expect("published");
    let i = info(&d0, id);
    assert_eq!(i.flags & 0xffff, dominf::HVM_GUEST | dominf::HAP | dominf::PAUSED);
    assert_eq!((i.tot_pages, i.max_pages, i.nr_online_vcpus, i.max_vcpu_id), (0, 0, 0, 1));
    assert_eq!(i.handle, [7; 16]);
    // settimeoffset moves the guest's wall clock (shared_info's wc_sec) by that many seconds.
    let wc = |d: &Domain| {
        let p = d.shared_info_ptr();
        // SAFETY: test read of two words inside the domain's shared_info page.
        unsafe {
            let lo = p.add(keel_abi::shared_info::WC_SEC_OFFSET).cast::<u32>().read_volatile();
            let hi = p.add(keel_abi::shared_info::WC_SEC_HI_OFFSET).cast::<u32>().read_volatile();
            u64::from(hi) << 32 | u64::from(lo)
        }
    };
    let before = wc(&guest);
    let mut t = req(cmd::SETTIMEOFFSET, id);
    t.set(&dc::SetTimeOffset { time_offset_seconds: 3600 });
    assert_eq!(call(&d0, &t).0, 0);
    assert_eq!(wc(&guest), before + 3600);
    let mut h = req(cmd::SETDOMAINHANDLE, id);
    h.set(&dc::SetDomainHandle { handle: [9; 16] });
    assert_eq!(call(&d0, &h).0, 0);
    assert_eq!(info(&d0, id).handle, [9; 16]);

    // Memory: max_mem, then populate up to it; one page more is refused.
    let mut m = req(cmd::MAX_MEM, id);
    m.set(&dc::MaxMem { max_memkb: 1024 });
    assert_eq!(call(&d0, &m).0, 0);
    let gfns: alloc::vec::Vec<u64> = (0..256).collect();
    assert_eq!(populate(&d0, id, &gfns, 0), 256);
    assert_eq!(populate(&d0, id, &[0x200], 0), 0, "beyond max_mem");
    assert_eq!(populate(&d0, id, &[0x10], 0), 0, "already populated");
    assert_eq!(info(&d0, id).tot_pages, 256);
    let ram: alloc::vec::Vec<u64> =
        gfns.iter().map(|g| guest.mem.lock().translate(g << 12, true).expect("populated")).collect();

    // The memory map: set by dom0, read by the guest.
    let e820: [u8; 20] = {
        let mut e = [0u8; 20];
        e[8..16].copy_from_slice(&(1u64 << 20).to_le_bytes());
        e[16] = 1;
        e
    };
    d0.mem.lock().write(BUF, &e820).unwrap();
    put(
        &d0,
        ARG,
        &XenForeignMemoryMap { domid: id, pad: [0; 3], map: XenMemoryMap { nr_entries: 1, pad: 0, buffer: BUF } },
    );
    assert_eq!(testing::hypercall(&d0, 0, nr::MEMORY_OP, [xenmem::SET_MEMORY_MAP, ARG, 0, 0, 0]), 0);
    put(&guest, ARG, &XenMemoryMap { nr_entries: 8, pad: 0, buffer: 0x3000 });
    assert_eq!(testing::hypercall(&guest, 0, nr::MEMORY_OP, [xenmem::MEMORY_MAP, ARG, 0, 0, 0]), 0);
    assert_eq!(get::<XenMemoryMap>(&guest, ARG).nr_entries, 1);
    assert_eq!(get::<[u8; 20]>(&guest, 0x3000), e820);

    // Parameters and ports: the store ring and its port, waiting for dom0.
    assert_eq!(param(&d0, hvmop::SET_PARAM, id, hvm_param::STORE_PFN, 0xfe).0, 0);
    assert_eq!(param(&d0, hvmop::GET_PARAM, id, hvm_param::STORE_PFN, 0), (0, 0xfe));
    assert_eq!(param(&guest, hvmop::GET_PARAM, keel_abi::DOMID_SELF, hvm_param::STORE_PFN, 0), (0, 0xfe));
    put(&d0, ARG, &EvtchnAllocUnbound { dom: id, remote_dom: 0, port: 0 });
    assert_eq!(testing::hypercall(&d0, 0, nr::EVENT_CHANNEL_OP, [evtchnop::ALLOC_UNBOUND, ARG, 0, 0, 0]), 0);
    let port = get::<EvtchnAllocUnbound>(&d0, ARG).port;
    put(&guest, ARG, &EvtchnStatus { dom: keel_abi::DOMID_SELF, port, ..Default::default() });
    assert_eq!(testing::hypercall(&guest, 0, nr::EVENT_CHANNEL_OP, [evtchnop::STATUS, ARG, 0, 0, 0]), 0);
    let s = get::<EvtchnStatus>(&guest, ARG);
    assert_eq!((s.status, s.u[0]), (evtchnstat::UNBOUND, 0));

    // The boot vCPU: libxenguest reads the context (size, then the records), then loads HEADER + CPU + END.
    let (r, size) = hvmctx(&d0, cmd::GETHVMCONTEXT, id, None, 0);
    assert_eq!(r, 0);
    assert_eq!(
        size as usize,
        8 + 24 + 2 * (8 + 24) + 2 * (8 + 1024) + 2 * (8 + 240) + 8,
        "HEADER, LAPIC, LAPIC_REGS, MTRR per vCPU, END"
    );
    assert_eq!(hvmctx(&d0, cmd::GETHVMCONTEXT, id, None, size - 1).0, ENOSPC.negated());
    assert_eq!(hvmctx(&d0, cmd::GETHVMCONTEXT, id, None, size), (0, size));
    let first: SaveDescriptor = get(&d0, BUF);
    assert_eq!((first.typecode, first.length), (hvm_save::HEADER, 24));
    assert_eq!(get::<SaveHeader>(&d0, BUF + 8).magic, hvm_save::MAGIC);
    let ctx = boot_context(0x10_0000, 0x9000);
    assert_eq!(hvmctx(&d0, cmd::SETHVMCONTEXT, id, Some(&ctx), ctx.len() as u32).0, 0);
    assert_eq!(*guest.vcpus[0].boot.lock(), Some(InitState::Pvh { entry: 0x10_0000, start_info: 0x9000 }));
    assert_eq!(*guest.vcpus[1].boot.lock(), None);
    assert!(!crate::domain::evtchn::is_masked(&guest, 5), "a build leaves the masks to the guest");
    assert_eq!(guest.vcpus[0].state(), VcpuState::Offline, "nothing runs while paused");

    // Unpause: the boot vCPU starts, the other stays down.
    assert_eq!(simple(&d0, cmd::UNPAUSEDOMAIN, id), 0);
    assert_eq!(guest.vcpus[0].state(), VcpuState::Runnable);
    assert_eq!(guest.vcpus[1].state(), VcpuState::Offline);
    assert_eq!(info(&d0, id).flags & dominf::PAUSED, 0);
    assert_eq!(simple(&d0, cmd::UNPAUSEDOMAIN, id), EINVAL.negated(), "not paused");
    assert_eq!(simple(&d0, cmd::PAUSEDOMAIN, id), 0);
    assert!(guest.hold_if_paused(&guest.vcpus[0]), "the run loop sets a paused domain's vCPU aside");
    assert_ne!(info(&d0, id).flags & dominf::PAUSED, 0);
    assert_eq!(simple(&d0, cmd::PAUSEDOMAIN, id), 0, "pauses nest");
    assert_eq!(simple(&d0, cmd::UNPAUSEDOMAIN, id), 0);
    assert!(guest.hold_if_paused(&guest.vcpus[0]), "still paused once");
    assert_eq!(simple(&d0, cmd::UNPAUSEDOMAIN, id), 0);
    assert!(!guest.hold_if_paused(&guest.vcpus[0]), "runs again after the last unpause");
    assert_eq!(simple(&d0, cmd::PAUSEDOMAIN, id), 0);
    assert_eq!(simple(&d0, cmd::PAUSEDOMAIN, d0.id), EINVAL.negated(), "pausing oneself");

    // Destroy: gone at once; every frame back once the last reference goes; a second destroy finds nothing.
    let shared_info = guest.shared_info;
    assert_eq!(simple(&d0, cmd::DESTROYDOMAIN, id), 0);
    assert!(domain::get(id).is_none());
    assert_eq!(simple(&d0, cmd::DESTROYDOMAIN, id), ESRCH.negated());
    assert!(guest.vcpus.iter().all(|v| v.state() == VcpuState::Dead));
    drop(guest);
    assert!(!host_frames::is_live(shared_info), "shared_info leaked");
    for f in ram {
        assert!(!host_frames::is_live(f), "RAM frame {f:#x} leaked");
    }
    domain::destroy(&d0);
}

#[test]
fn createdomain_refuses_what_keel_cannot_build() {
    let d0 = privileged_domain();
    let with = |f: &dyn Fn(&mut CreateDomain)| {
        let mut c = pvh(1);
        f(&mut c);
        create(&d0, &c, 0).0
    };
    assert_eq!(with(&|c| c.flags = 0), EINVAL.negated(), "PV");
    assert_eq!(with(&|c| c.flags = cdf::HVM), EINVAL.negated(), "no HAP");
    assert_eq!(with(&|c| c.flags |= 1 << 12), EINVAL.negated(), "unknown flag");
    assert_eq!(with(&|c| c.arch.emulation_flags = 0x7ff & !(1 << 9)), EOPNOTSUPP.negated(), "HVM with devices");
    assert_eq!(with(&|c| c.arch.emulation_flags = 0), EOPNOTSUPP.negated());
    assert_eq!(with(&|c| c.max_vcpus = 0), EINVAL.negated());
    assert_eq!(with(&|c| c.max_vcpus = 65), EINVAL.negated());
    assert_eq!(with(&|c| c.max_vcpus = u32::MAX), EINVAL.negated());
    assert_eq!(with(&|c| c.grant_opts = 2), EINVAL.negated(), "grant v2");
    assert_eq!(with(&|c| c.max_grant_frames = 1 << 20), EINVAL.negated());
    assert_eq!(with(&|c| c.vmtrace_size = 1 << 20), EINVAL.negated());
    assert_eq!(with(&|c| c.cpupool_id = 3), ENOENT.negated());
    // A requested id: granted when free, -EEXIST when taken.
    let (r, id) = create(&d0, &pvh(1), 0x7000);
    assert_eq!((r, id), (0, 0x7000));
    assert_eq!(create(&d0, &pvh(1), 0x7000).0, EEXIST.negated());
    assert_eq!(simple(&d0, cmd::DESTROYDOMAIN, id), 0);
    // A machine without nested paging cannot run one.
    let no_npt = crate::hvm::Support::Svm(crate::hvm::svm::Capabilities::default());
    let cfg = domain::DomainConfig {
        name: "x".into(),
        vcpus: 1,
        memory: 0,
        weight: 256,
        cap: 0,
        expect_crash: false,
        limits: crate::domain::Limits::DEFAULT,
    };
    assert_eq!(domain::create_empty(0, cfg, &no_npt).err(), Some(EOPNOTSUPP));
    // Unprivileged: -EPERM.
    let user = testing::domain(1, 4);
    let mut d = req(cmd::CREATEDOMAIN, 0);
    d.set(&pvh(1));
    assert_eq!(call(&user, &d).0, EPERM.negated());
    domain::destroy(&user);
    domain::destroy(&d0);
}

/// createdomain's event-channel and grant limits, taken as Xen's evtchn_init and grant_table_init take them
/// (a negative frame count: the default; no grant frame, or more than the defaults: -EINVAL), and held to:
/// a port above `max_evtchn_port` is never allocated (-ENOSPC).
#[test]
fn createdomain_limits_are_the_domains() {
    use crate::domain::Limits;
    let d0 = privileged_domain();
    let limits = |c: &CreateDomain| {
        let (r, id) = create(&d0, c, 0);
        assert_eq!(r, 0);
        let l = domain::get(id).unwrap().config.limits;
        assert_eq!(simple(&d0, cmd::DESTROYDOMAIN, id), 0);
        l
    };
    let l = |max_evtchn_port, max_grant_frames, max_maptrack_frames| Limits {
        max_evtchn_port,
        max_grant_frames,
        max_maptrack_frames,
    };
    assert_eq!(limits(&pvh(1)), l(1023, 32, 1024), "libxl's");
    let with = |e: u32, g: i32, m: i32| CreateDomain {
        max_evtchn_port: e,
        max_grant_frames: g,
        max_maptrack_frames: m,
        ..pvh(1)
    };
    assert_eq!(limits(&with(u32::MAX, -1, -1)), Limits::DEFAULT, "-1: Xen's defaults, as its dom0's");
    assert_eq!(limits(&with(0, -7, i32::MIN)), l(0, 64, 1024), "any negative frame count is the default");
    assert_eq!(limits(&with(5, 1, 0)), l(5, 1, 0), "no maptrack: the domain maps no grant");
    assert_eq!(limits(&with(1 << 31, 64, 1024)), l(i32::MAX as u32, 64, 1024), "the port capped at INT_MAX");
    for (g, m) in [(0, 1), (65, 1), (1, 1025), (1 << 20, 1)] {
        assert_eq!(create(&d0, &with(1023, g, m), 0).0, EINVAL.negated(), "{g} grant, {m} maptrack frames");
    }
    // Ports 1 and 2 of a domain limited to port 2; dom0 asks for a third.
    let (_, id) = create(&d0, &with(2, 1, 1), 0);
    let alloc = || {
        put(&d0, ARG, &EvtchnAllocUnbound { dom: id, remote_dom: 0, port: 0 });
        let r = testing::hypercall(&d0, 0, nr::EVENT_CHANNEL_OP, [evtchnop::ALLOC_UNBOUND, ARG, 0, 0, 0]);
        (r, get::<EvtchnAllocUnbound>(&d0, ARG).port)
    };
    assert_eq!(alloc(), (0, 1));
    assert_eq!(alloc(), (0, 2));
    assert_eq!(alloc().0, ENOSPC.negated());
    assert_eq!(simple(&d0, cmd::DESTROYDOMAIN, id), 0);
    domain::destroy(&d0);
}

#[test]
fn populate_and_memory_map_reject_hostile_input() {
    let d0 = privileged_domain();
    let (_, id) = create(&d0, &pvh(1), 0);
    let guest = domain::get(id).unwrap();
    guest.set_max_pages(1024);
    assert_eq!(populate(&d0, id, &[0], 19), 0, "order beyond 1 GiB");
    assert_eq!(populate(&d0, id, &[1], 9), 0, "misaligned 2 MiB extent");
    assert_eq!(populate(&d0, id, &[u64::MAX], 0), 0);
    assert_eq!(populate(&d0, id, &[1 << 40], 0), 0, "beyond the GPA window");
    assert_eq!(populate(&d0, id, &[0x400], 9), 1, "a 2 MiB extent");
    assert_eq!(populate(&d0, id, &[0x800], 9), 1);
    assert_eq!(populate(&d0, id, &[0xc00], 9), 0, "past max_mem (1024 pages)");
    assert_eq!(guest.mem.lock().tot_pages, 1024);
    // An extent list the caller cannot read stops the call.
    let r = XenMemoryReservation { extent_start: 0x4000_0000, nr_extents: u64::MAX, domid: id, ..Default::default() };
    put(&d0, ARG, &r);
    assert_eq!(testing::hypercall(&d0, 0, nr::MEMORY_OP, [xenmem::POPULATE_PHYSMAP, ARG, 0, 0, 0]), 0);
    assert_eq!(populate(&d0, 0x7fe0, &[0], 0), ESRCH.negated());
    let user = testing::domain(1, 4);
    put(&user, ARG, &XenMemoryReservation { extent_start: BUF, nr_extents: 1, domid: id, ..Default::default() });
    assert_eq!(testing::hypercall(&user, 0, nr::MEMORY_OP, [xenmem::POPULATE_PHYSMAP, ARG, 0, 0, 0]), EPERM.negated());
    put(
        &d0,
        ARG,
        &XenForeignMemoryMap { domid: id, pad: [0; 3], map: XenMemoryMap { nr_entries: 129, pad: 0, buffer: BUF } },
    );
    assert_eq!(testing::hypercall(&d0, 0, nr::MEMORY_OP, [xenmem::SET_MEMORY_MAP, ARG, 0, 0, 0]), EINVAL.negated());
    assert_eq!(param(&user, hvmop::SET_PARAM, id, hvm_param::STORE_PFN, 1).0, EPERM.negated());
    put(&user, ARG, &EvtchnAllocUnbound { dom: id, remote_dom: 0, port: 0 });
    assert_eq!(
        testing::hypercall(&user, 0, nr::EVENT_CHANNEL_OP, [evtchnop::ALLOC_UNBOUND, ARG, 0, 0, 0]),
        EPERM.negated()
    );
    domain::destroy(&user);
    assert_eq!(simple(&d0, cmd::DESTROYDOMAIN, id), 0);
    domain::destroy(&d0);
}

#[test]
fn sethvmcontext_takes_only_a_valid_pvh_start_state() {
    let d0 = privileged_domain();
    let (_, id) = create(&d0, &pvh(2), 0);
    let guest = domain::get(id).unwrap();
    let set = |bytes: &[u8]| hvmctx(&d0, cmd::SETHVMCONTEXT, id, Some(bytes), bytes.len() as u32).0;
    let mut bad_magic = boot_context(0x10_0000, 0x9000);
    bad_magic[8] ^= 1;
    assert_eq!(set(&bad_magic), EINVAL.negated());
    // Not the PVH entry, and not a state a vCPU can resume in: paging on without PE; EFER with SVME's neighbours;
    // LME and PG without LMA; a 64-bit CS outside long mode.
    let base = hvmctx::pvh_record(0x10_0000, 0x9000);
    let bad: [fn(&mut dc::HvmHwCpu); 4] = [
        |c| c.cr0 = 1 << 31,
        |c| {
            c.cr0 |= 1 << 31;
            c.msr_efer = 1 << 13;
        },
        |c| {
            c.cr0 |= 1 << 31;
            c.msr_efer = 1 << 8;
            c.cr4 = 1 << 5;
        },
        |c| c.arbytes[dc::seg::CS] = 0xa9b,
    ];
    for (i, f) in bad.iter().enumerate() {
        let mut cpu = base;
        f(&mut cpu);
        let mut s = alloc::vec::Vec::new();
        record(&mut s, hvm_save::HEADER, 0, &header());
        record(&mut s, hvm_save::CPU, 0, &cpu);
        record(&mut s, hvm_save::END, 0, &[0u8; 0]);
        assert_eq!(set(&s), EINVAL.negated(), "bad CPU record {i}");
    }
    // A LAPIC record of an xAPIC (x2APIC mode off), or of an armed TSC-deadline timer.
    for l in [
        dc::HvmHwLapic { apic_base_msr: 0xfee0_0000 | 1 << 11, ..Default::default() },
        dc::HvmHwLapic { apic_base_msr: 0xfee0_0000 | 3 << 10, tdt_msr: 5, ..Default::default() },
    ] {
        let mut s = alloc::vec::Vec::new();
        record(&mut s, hvm_save::HEADER, 0, &header());
        record(&mut s, hvm_save::LAPIC, 0, &l);
        record(&mut s, hvm_save::END, 0, &[0u8; 0]);
        assert_eq!(set(&s), EINVAL.negated(), "{l:?}");
    }
    // A PIC record (a device a PVH domain lacks), a vCPU beyond the domain, a truncated stream, no END.
    for (typ, inst, len) in [(3u16, 0u16, 8usize), (hvm_save::MTRR, 2, 240), (hvm_save::CPU, 0, 1000)] {
        let mut s = alloc::vec::Vec::new();
        record(&mut s, hvm_save::HEADER, 0, &header());
        raw_record(&mut s, typ, inst, &alloc::vec![0u8; len]);
        record(&mut s, hvm_save::END, 0, &[0u8; 0]);
        assert_eq!(set(&s), EINVAL.negated(), "type {typ} instance {inst}");
    }
    let good = boot_context(0x10_0000, 0x9000);
    assert_eq!(set(&good[..good.len() - 8]), EINVAL.negated(), "no END");
    assert_eq!(hvmctx(&d0, cmd::SETHVMCONTEXT, id, None, hvmctx::MAX_CONTEXT + 1).0, EINVAL.negated());
    assert_eq!(hvmctx(&d0, cmd::SETHVMCONTEXT, d0.id, Some(&good), good.len() as u32).0, EINVAL.negated(), "self");
    assert!(guest.vcpus.iter().all(|v| v.boot.lock().is_none()), "nothing applied");
    // An ignored per-vCPU record (TSC_ADJUST) next to a valid CPU record is fine; an MTRR record sets the MTRRs.
    let mut s = alloc::vec::Vec::new();
    record(&mut s, hvm_save::HEADER, 0, &header());
    record(&mut s, 19, 1, &[0u8; 8]);
    let mut mtrr: dc::HvmHwMtrr = keel_abi::Zeroable::zeroed();
    mtrr.msr_mtrr_def_type = 0x806;
    record(&mut s, hvm_save::MTRR, 1, &mtrr);
    record(&mut s, hvm_save::CPU, 1, &hvmctx::pvh_record(0x20_0000, 0x8000));
    record(&mut s, hvm_save::END, 0, &[0u8; 0]);
    assert_eq!(set(&s), 0);
    assert_eq!(*guest.vcpus[1].boot.lock(), Some(InitState::Pvh { entry: 0x20_0000, start_info: 0x8000 }));
    assert_eq!(guest.vcpus[1].msrs.lock().get(&0x2ff), Some(&0x806));
    assert_eq!(simple(&d0, cmd::DESTROYDOMAIN, id), 0);
    domain::destroy(&d0);
}

/// A saved vCPU (64-bit long mode) loads into a new domain as a restore: its CPU record is kept for the vCPU's
/// start (and reported as its state until then), its LAPIC_REGS set the local APIC, and a save of the new domain
/// gives back the same records.
#[test]
fn sethvmcontext_restores_a_saved_vcpu() {
    let d0 = privileged_domain();
    let (_, id) = create(&d0, &pvh(2), 0);
    let guest = domain::get(id).unwrap();
    let mut cpu = hvmctx::pvh_record(0, 0);
    cpu.cr0 = 0x8005_0033;
    cpu.cr3 = 0x1234_5000;
    cpu.cr4 = 0x0000_06f0;
    cpu.msr_efer = 1 | 1 << 8 | 1 << 10 | 1 << 11;
    cpu.arbytes[dc::seg::CS] = 0xa9b;
    cpu.rip = 0xffff_ffff_8100_0000;
    cpu.rax = 0;
    cpu.r8_r15[7] = 0x1515;
    cpu.msr_lstar = 0xffff_ffff_8180_0000;
    cpu.flags = hvm_save::FPU_INITIALISED;
    // The APIC: TPR 0x20, enabled (SVR 0x1ff), vector 0xec in service, the timer unmasked at vector 0xef.
    let mut regs = dc::HvmHwLapicRegs { data: [0; 1024] };
    let mut put32 = |off: usize, v: u32| regs.data[off..off + 4].copy_from_slice(&v.to_le_bytes());
    put32(0x80, 0x20);
    put32(0xf0, 0x1ff);
    put32(0x170, 1 << (0xec - 0xe0));
    put32(0x320, 0xef);
    let lapic = dc::HvmHwLapic { apic_base_msr: 0xfee0_0000 | 1 << 8 | 3 << 10, ..Default::default() };
    let mut s = alloc::vec::Vec::new();
    record(&mut s, hvm_save::HEADER, 0, &header());
    record(&mut s, hvm_save::CPU, 0, &cpu);
    record(&mut s, hvm_save::LAPIC, 0, &lapic);
    record(&mut s, hvm_save::LAPIC_REGS, 0, &regs);
    record(&mut s, hvm_save::END, 0, &[0u8; 0]);
    assert_eq!(hvmctx(&d0, cmd::SETHVMCONTEXT, id, Some(&s), s.len() as u32).0, 0);
    assert_eq!(*guest.vcpus[0].boot.lock(), Some(InitState::Restore(alloc::boxed::Box::new(cpu))));
    assert_eq!(*guest.vcpus[1].boot.lock(), None, "no record: down");
    assert!((0..4096).all(|p| crate::domain::evtchn::is_masked(&guest, p)), "a restore starts with every port masked");
    let apic = guest.vcpus[0].lapic.lock();
    assert_eq!(
        (apic.read(0x808, 0), apic.read(0x80f, 0), apic.read(0x817, 0)),
        (Some(0x20), Some(0x1ff), Some(1 << 12))
    );
    assert_eq!(apic.read(0x832, 0), Some(0xef));
    drop(apic);
    // Saved again before it starts: the same CPU record and APIC registers.
    assert_eq!(partial(&d0, id, u32::from(hvm_save::CPU), 0, BUF, 4096), (0, 1032));
    assert_eq!(get::<dc::HvmHwCpu>(&d0, BUF), cpu);
    assert_eq!(partial(&d0, id, u32::from(hvm_save::LAPIC_REGS), 0, BUF, 4096), (0, 1024));
    let back: dc::HvmHwLapicRegs = get(&d0, BUF);
    for off in [0x80, 0xf0, 0x170, 0x320] {
        assert_eq!(back.data[off..off + 4], regs.data[off..off + 4], "APIC register at {off:#x}");
    }
    assert_eq!(partial(&d0, id, u32::from(hvm_save::LAPIC), 0, BUF, 4096), (0, 24));
    assert_eq!(get::<dc::HvmHwLapic>(&d0, BUF).apic_base_msr, lapic.apic_base_msr);
    assert_eq!(simple(&d0, cmd::UNPAUSEDOMAIN, id), 0);
    assert_eq!(guest.vcpus[0].state(), VcpuState::Runnable);
    assert_eq!(guest.vcpus[1].state(), VcpuState::Offline);
    assert_eq!(simple(&d0, cmd::DESTROYDOMAIN, id), 0);
    domain::destroy(&d0);
}

fn partial(d0: &Arc<Domain>, domid: u16, typ: u32, instance: u32, buffer: u64, bufsz: u64) -> (i64, u64) {
    let mut d = req(cmd::GETHVMCONTEXT_PARTIAL, domid);
    d.set(&dc::HvmContextPartial { typ, instance, bufsz, buffer });
    let (r, out) = call(d0, &d);
    (r, out.get::<dc::HvmContextPartial>().bufsz)
}

/// gethvmcontext pauses the domain around the save as Xen does (and leaves the pause count as it was), reports
/// each vCPU that is up and none that is down; the partial call returns one record's payload.
#[test]
fn gethvmcontext_saves_a_paused_domain_and_the_partial_call_one_record() {
    let d0 = privileged_domain();
    let (_, id) = create(&d0, &pvh(2), 0);
    let guest = domain::get(id).unwrap();
    let ctx = boot_context(0x10_0000, 0x9000);
    assert_eq!(hvmctx(&d0, cmd::SETHVMCONTEXT, id, Some(&ctx), ctx.len() as u32).0, 0);
    assert_eq!(simple(&d0, cmd::UNPAUSEDOMAIN, id), 0);
    assert!(!guest.is_paused());

    // Running (unpaused): saved all the same, and still unpaused after.
    let (r, size) = hvmctx(&d0, cmd::GETHVMCONTEXT, id, None, 0);
    assert_eq!(r, 0);
    assert_eq!(
        size as usize,
        8 + 24 + (8 + 1032) + 2 * (8 + 24) + 2 * (8 + 1024) + 2 * (8 + 240) + 8,
        "HEADER, CPU of vCPU 0 only, 2 LAPIC, 2 LAPIC_REGS, 2 MTRR, END"
    );
    assert_eq!(hvmctx(&d0, cmd::GETHVMCONTEXT, id, None, size), (0, size));
    let cpu: SaveDescriptor = get(&d0, BUF + 32);
    assert_eq!((cpu.typecode, cpu.instance, cpu.length), (hvm_save::CPU, 0, 1032));
    let c: dc::HvmHwCpu = get(&d0, BUF + 40);
    assert_eq!((c.rip, c.rbx, c.cr0, c.arbytes[dc::seg::CS]), (0x10_0000, 0x9000, 0x11, 0xc9b));
    assert!(!guest.is_paused(), "the save's pause is dropped");

    // Paused by the toolstack: stays paused.
    assert_eq!(simple(&d0, cmd::PAUSEDOMAIN, id), 0);
    assert_eq!(hvmctx(&d0, cmd::GETHVMCONTEXT, id, None, size), (0, size));
    assert!(guest.is_paused());

    // One record: vCPU 0's CPU state; none for vCPU 1 (down) or vCPU 7 (none); other types are refused.
    assert_eq!(partial(&d0, id, 2, 0, 0, 0), (0, 1032), "a null buffer asks the length");
    assert_eq!(partial(&d0, id, 2, 0, BUF, 1031).0, ENOBUFS.negated());
    assert_eq!(partial(&d0, id, 2, 0, BUF, 4096), (0, 1032));
    assert_eq!(get::<dc::HvmHwCpu>(&d0, BUF).rip, 0x10_0000);
    assert_eq!(partial(&d0, id, 2, 1, BUF, 4096).0, ENOENT.negated(), "vCPU 1 is down");
    assert_eq!(partial(&d0, id, 2, 7, BUF, 4096).0, ENOENT.negated());
    assert_eq!(partial(&d0, id, u32::from(hvm_save::MTRR), 1, BUF, 4096), (0, 240));
    assert_eq!(partial(&d0, id, u32::from(hvm_save::LAPIC), 1, BUF, 4096), (0, 24));
    let l: dc::HvmHwLapic = get(&d0, BUF);
    assert_eq!(l.apic_base_msr, 0xfee0_0000 | 1 << 10 | 1 << 11, "x2APIC, enabled, not the BSP");
    assert_eq!(partial(&d0, id, u32::from(hvm_save::LAPIC_REGS), 0, BUF, 4096), (0, 1024));
    for typ in [0, 1, 3, 99] {
        assert_eq!(partial(&d0, id, typ, 0, BUF, 4096).0, EINVAL.negated(), "type {typ}");
    }
    assert_eq!(partial(&d0, d0.id, 2, 0, BUF, 4096).0, EINVAL.negated(), "self");

    // (-EBUSY, for a vCPU that stays on its CPU past the pause's bounded wait, needs a running clock: not here,
    // where the TSC is not calibrated and that wait would not end.)
    assert_eq!(simple(&d0, cmd::DESTROYDOMAIN, id), 0);
    domain::destroy(&d0);
}

/// A toolstack-built guest's SCHEDOP_shutdown marks it shut down with its reason and tells dom0 (VIRQ_DOM_EXC);
/// it stays until the toolstack destroys it, which tells dom0 again.
#[test]
fn a_shutdown_guest_stays_until_destroyed_and_dom0_hears_of_it() {
    let d0 = dom0();
    put(&d0, ARG, &EvtchnBindVirq { virq: virq::DOM_EXC, vcpu: 0, port: 0 });
    assert_eq!(testing::hypercall(&d0, 0, nr::EVENT_CHANNEL_OP, [evtchnop::BIND_VIRQ, ARG, 0, 0, 0]), 0);
    let exc = get::<EvtchnBindVirq>(&d0, ARG).port;
    let (_, id) = create(&d0, &pvh(1), 0);
    let guest = domain::get(id).unwrap();
    guest.set_max_pages(16);
    assert_eq!(populate(&d0, id, &[0], 0), 1);
    // The guest's console port, bound by dom0: closed with the guest, dom0's end waits again.
    put(&d0, ARG, &EvtchnAllocUnbound { dom: id, remote_dom: 0, port: 0 });
    assert_eq!(testing::hypercall(&d0, 0, nr::EVENT_CHANNEL_OP, [evtchnop::ALLOC_UNBOUND, ARG, 0, 0, 0]), 0);
    let gport = get::<EvtchnAllocUnbound>(&d0, ARG).port;
    put(
        &d0,
        ARG,
        &keel_abi::shared_info::EvtchnBindInterdomain { remote_dom: id, pad: 0, remote_port: gport, local_port: 0 },
    );
    assert_eq!(testing::hypercall(&d0, 0, nr::EVENT_CHANNEL_OP, [evtchnop::BIND_INTERDOMAIN, ARG, 0, 0, 0]), 0);
    let d0port = get::<keel_abi::shared_info::EvtchnBindInterdomain>(&d0, ARG).local_port;

    crate::domain::evtchn::clear_pending(&d0, exc);
    put(&guest, 0, &keel_abi::hypercall::SchedShutdown { reason: 0 });
    testing::hypercall(&guest, 0, nr::SCHED_OP, [keel_abi::hypercall::schedop::SHUTDOWN, 0, 0, 0, 0]);
    assert!(crate::domain::evtchn::is_pending(&d0, exc), "VIRQ_DOM_EXC on shutdown");
    let i = info(&d0, id);
    assert_ne!(i.flags & dominf::SHUTDOWN, 0);
    assert_eq!(i.flags >> dominf::SHUTDOWN_SHIFT & dominf::SHUTDOWN_MASK, 0, "poweroff");
    assert!(!guest.destroyed_when_stopped(), "the run loop leaves it to the toolstack");

    crate::domain::evtchn::clear_pending(&d0, exc);
    assert_eq!(simple(&d0, cmd::DESTROYDOMAIN, id), 0);
    assert!(crate::domain::evtchn::is_pending(&d0, exc), "VIRQ_DOM_EXC on destroy");
    let b = d0.evtchn.lock().get(d0port).unwrap().binding;
    assert_eq!(b, crate::domain::evtchn::Binding::Unbound { remote: id });
    domain::destroy(&d0);
}

/// XEN_DOMCTL_resumedomain: a guest that suspended runs again (a cancelled save or migration); a running or
/// crashed one is -EINVAL; a vCPU that never started stays down.
#[test]
fn a_suspended_guest_resumes() {
    let d0 = dom0();
    let (_, id) = create(&d0, &pvh(2), 0);
    let guest = domain::get(id).unwrap();
    guest.set_max_pages(16);
    assert_eq!(populate(&d0, id, &[0], 0), 1);
    assert_eq!(simple(&d0, cmd::RESUMEDOMAIN, id), EINVAL.negated(), "not shut down");
    put(&guest, 0, &keel_abi::hypercall::SchedShutdown { reason: 2 });
    testing::hypercall(&guest, 0, nr::SCHED_OP, [keel_abi::hypercall::schedop::SHUTDOWN, 0, 0, 0, 0]);
    let i = info(&d0, id);
    assert_ne!(i.flags & dominf::SHUTDOWN, 0);
    assert_eq!(i.flags >> dominf::SHUTDOWN_SHIFT & dominf::SHUTDOWN_MASK, 2, "suspend");
    assert_eq!(simple(&d0, cmd::RESUMEDOMAIN, d0.id), EINVAL.negated(), "self");
    assert_eq!(simple(&d0, cmd::RESUMEDOMAIN, id), 0);
    assert_eq!(info(&d0, id).flags & dominf::SHUTDOWN, 0, "running again");
    assert!(guest.vcpus.iter().all(|v| v.state() == crate::domain::VcpuState::Offline), "never started: down");
    assert_eq!(simple(&d0, cmd::RESUMEDOMAIN, id), EINVAL.negated(), "once");
    guest.crash("test");
    assert_eq!(simple(&d0, cmd::RESUMEDOMAIN, id), EINVAL.negated(), "crashed");
    assert_eq!(simple(&d0, cmd::DESTROYDOMAIN, id), 0);
    domain::destroy(&d0);
}

// ---- shadow_op: log-dirty tracking for save and live migration ----

use keel_abi::domctl::{shadow_mode, shadow_op as sop, ShadowOp};

/// A 4 MiB guest (1024 pages), with nested paging in EPT format when `ept`, NPT otherwise.
fn ld_guest(ept: bool) -> Arc<Domain> {
    if !ept {
        return testing::domain(2, 4);
    }
    let cfg = domain::DomainConfig {
        name: "ept".into(),
        vcpus: 2,
        memory: 4 << 20,
        weight: crate::sched::DEFAULT_WEIGHT,
        cap: 0,
        expect_crash: false,
        limits: crate::domain::Limits::DEFAULT,
    };
    let d = domain::create(cfg, &crate::hvm::Support::Vmx(Default::default())).expect("an EPT domain");
    assert!(matches!(d.mem.lock().p2m, crate::mm::p2m::GuestP2m::Ept(_)));
    d
}

/// XEN_DOMCTL_shadow_op from `caller` on `domid`: the result and the member as copied back.
fn shadow(caller: &Arc<Domain>, domid: u16, s: ShadowOp) -> (i64, ShadowOp) {
    let mut d = req(cmd::SHADOW_OP, domid);
    d.set(&s);
    let (r, out) = call(caller, &d);
    (r, out.get())
}

/// A CLEAN or PEEK of `pages` bits into the caller's buffer at BUF (its first 256 bytes filled with 0xee first).
fn bitmap_op(caller: &Arc<Domain>, domid: u16, op: u32, pages: u64, mode: u32) -> (i64, ShadowOp, [u8; 256]) {
    put(caller, BUF, &[0xeeu8; 256]);
    let (r, s) = shadow(caller, domid, ShadowOp { op, mode, dirty_bitmap: BUF, pages, ..Default::default() });
    (r, s, get(caller, BUF))
}

/// The dirty GFNs of a bitmap.
fn set_bits(bits: &[u8]) -> alloc::vec::Vec<u64> {
    (0..bits.len() as u64 * 8).filter(|&g| bits[(g / 8) as usize] & (1 << (g % 8)) != 0).collect()
}

/// The p2m's view of one guest page: (writable for the guest, protected for log-dirty).
fn page_state(guest: &Domain, gfn: u64) -> (bool, bool) {
    let l = guest.mem.lock().p2m.leaf(&mut crate::mm::MachineFrames, gfn << 12).expect("mapped");
    (l.perms.write, l.log_dirty)
}

/// The save loop's calls, on NPT and on EPT: enable write-protects all RAM; a guest write fault marks its page
/// and gives write access back; Keel's own writes into the guest mark pages without a fault; PEEK reports
/// without clearing; CLEAN reports, clears and protects again; OFF gives everything back.
fn log_dirty_round_trip(ept: bool) {
    let d0 = privileged_domain();
    let guest = ld_guest(ept);
    let id = guest.id;
    let (r, s) = shadow(&d0, id, ShadowOp { op: sop::ENABLE_LOGDIRTY, ..Default::default() });
    assert_eq!((r, s.op), (0, sop::ENABLE_LOGDIRTY), "the member comes back");
    assert!((0..1024).all(|g| page_state(&guest, g) == (false, true)), "every RAM page write-protected");
    assert_eq!(shadow(&d0, id, ShadowOp { op: sop::ENABLE_LOGDIRTY, ..Default::default() }).0, EINVAL.negated());

    // The guest writes GFN 5 (what vmexit does with the nested page fault): logged, writable again.
    assert!(guest.log_dirty_fault(0x5123));
    assert_eq!(page_state(&guest, 5), (true, false));
    assert!(guest.log_dirty_fault(0x5000), "a second vCPU's fault on the same page is retried");
    assert!(!guest.log_dirty_fault(0x400_0000), "beyond RAM: not log-dirty's, the guest is crashed");
    // Keel writes into GFN 7 (a hypercall's copy-out): logged, still protected.
    put(&guest, 0x7ff8, &0x1234_5678_9abc_def0_u64);
    assert_eq!(get::<u64>(&guest, 0x7ff8), 0x1234_5678_9abc_def0_u64);
    assert_eq!(page_state(&guest, 7), (false, true));

    // PEEK: the bits and the counts, twice the same; the buffer is written for `pages` bits only.
    for _ in 0..2 {
        let (r, s, bits) = bitmap_op(&d0, id, sop::PEEK, 1024, 0);
        assert_eq!(r, 0);
        assert_eq!(set_bits(&bits[..128]), [5, 7]);
        assert_eq!(&bits[128..], &[0xee; 128], "nothing beyond 1024 bits");
        assert_eq!((s.pages, s.fault_count, s.dirty_count), (1024, 1, 2));
    }
    // CLEAN: the same answer, then the pages are protected again and the next round starts empty.
    let (r, s, bits) = bitmap_op(&d0, id, sop::CLEAN, 1024, 0);
    assert_eq!((r, s.pages, s.fault_count, s.dirty_count), (0, 1024, 1, 2));
    assert_eq!(set_bits(&bits[..128]), [5, 7]);
    assert_eq!(page_state(&guest, 5), (false, true));
    let (r, s, bits) = bitmap_op(&d0, id, sop::PEEK, 1024, 0);
    assert_eq!((r, s.fault_count, s.dirty_count), (0, 0, 0));
    assert!(set_bits(&bits[..128]).is_empty());
    // The next write is caught again; the final round (guest suspended) also reports pinned frames.
    assert!(guest.log_dirty_fault(0x5000));
    guest.mem.lock().pin(9).expect("RAM");
    let (_, _, bits) = bitmap_op(&d0, id, sop::CLEAN, 1024, 0);
    assert_eq!(set_bits(&bits[..128]), [5, 9], "pinned: marked when pinned");
    let (r, _, bits) = bitmap_op(&d0, id, sop::CLEAN, 1024, shadow_mode::LOGDIRTY_FINAL);
    assert_eq!((r, set_bits(&bits[..128])), (0, alloc::vec![9]), "and again in the final round");
    guest.mem.lock().unpin(9);

    // OFF: every page writable again, the bitmap gone; again is fine; CLEAN now answers zeros, as Xen.
    assert!(guest.log_dirty_fault(0x6000));
    assert_eq!(shadow(&d0, id, ShadowOp { op: sop::OFF, ..Default::default() }).0, 0);
    assert!((0..1024).all(|g| page_state(&guest, g) == (true, false)), "every page writable again");
    assert!(!guest.mem.lock().log_dirty_enabled());
    assert_eq!(shadow(&d0, id, ShadowOp { op: sop::OFF, ..Default::default() }).0, 0);
    let (r, s, bits) = bitmap_op(&d0, id, sop::CLEAN, 1024, 0);
    assert_eq!((r, s.pages, s.dirty_count), (0, 1024, 0));
    assert!(set_bits(&bits[..128]).is_empty());
    // ENABLE with the LOG_DIRTY mode is the same as ENABLE_LOGDIRTY.
    let enable =
        ShadowOp { op: sop::ENABLE, mode: shadow_mode::LOG_DIRTY | shadow_mode::EXTERNAL, ..Default::default() };
    assert_eq!(shadow(&d0, id, enable).0, 0);
    assert_eq!(page_state(&guest, 5), (false, true));
    assert_eq!(shadow(&d0, id, ShadowOp { op: sop::OFF, ..Default::default() }).0, 0);
    domain::destroy(&guest);
    domain::destroy(&d0);
}

#[test]
fn log_dirty_round_trip_on_npt() {
    log_dirty_round_trip(false);
}

#[test]
fn log_dirty_round_trip_on_ept() {
    log_dirty_round_trip(true);
}

/// Xen's answers to bad requests: the caller itself, a missing or unprivileged one, unknown operations and modes,
/// a buffer that cannot be written (nothing cleared then), more bits than Xen's bitmap holds.
#[test]
fn shadow_op_errors_follow_xen() {
    let d0 = privileged_domain();
    let guest = ld_guest(false);
    let id = guest.id;
    let plain = |op: u32, mode: u32| ShadowOp { op, mode, ..Default::default() };
    let (r, s) = shadow(&d0, d0.id, plain(sop::ENABLE_LOGDIRTY, 0));
    assert_eq!((r, s.op), (EINVAL.negated(), sop::ENABLE_LOGDIRTY), "on itself; the member still comes back");
    assert!(!d0.mem.lock().log_dirty_enabled());
    assert_eq!(shadow(&d0, 0x7fe0, plain(sop::ENABLE_LOGDIRTY, 0)).0, ESRCH.negated());
    let user = testing::domain(1, 4);
    assert_eq!(shadow(&user, id, plain(sop::ENABLE_LOGDIRTY, 0)).0, EPERM.negated());
    for (op, mode) in [
        (sop::ENABLE, 0),
        (sop::ENABLE, shadow_mode::REFCOUNT | shadow_mode::TRANSLATE),
        (sop::ENABLE_TEST, 0),
        (sop::ENABLE_TRANSLATE, 0),
        (99, 0),
        (sop::CLEAN, 2),
        (sop::PEEK, shadow_mode::LOGDIRTY_FINAL | 0x100),
    ] {
        assert_eq!(shadow(&d0, id, plain(op, mode)).0, EINVAL.negated(), "op {op} mode {mode:#x}");
    }
    assert!(!guest.mem.lock().log_dirty_enabled(), "nothing enabled by a refused request");

    assert_eq!(shadow(&d0, id, plain(sop::ENABLE_LOGDIRTY, 0)).0, 0);
    assert!(guest.log_dirty_fault(0x3000));
    // A buffer outside the caller's memory: -EFAULT, and the bit is still there for the next try.
    let bad = ShadowOp { op: sop::CLEAN, dirty_bitmap: 0x7000_0000, pages: 1024, ..Default::default() };
    let (r, s) = shadow(&d0, id, bad);
    assert_eq!((r, s.dirty_count), (EFAULT.negated(), 1));
    let (r, _, bits) = bitmap_op(&d0, id, sop::PEEK, 1024, 0);
    assert_eq!((r, set_bits(&bits[..128])), (0, alloc::vec![3]));
    // A bit count that is no multiple of 8 writes whole bytes; a null buffer gives the stats only; more bits than
    // Xen's bitmap addresses come back as its size.
    let (r, s, bits) = bitmap_op(&d0, id, sop::PEEK, 13, 0);
    assert_eq!((r, s.pages, bits[0], bits[1], bits[2]), (0, 13, 0b1000, 0, 0xee));
    let (r, s) = shadow(&d0, id, ShadowOp { op: sop::PEEK, pages: 1 << 50, ..Default::default() });
    assert_eq!((r, s.pages, s.dirty_count), (0, 1 << 42, 1));
    // A CLEAN of fewer bits than are set reports and clears only those.
    assert!(guest.log_dirty_fault(0x14000));
    let (r, _, bits) = bitmap_op(&d0, id, sop::CLEAN, 13, 0);
    assert_eq!((r, bits[0], bits[1]), (0, 0b1000, 0));
    assert_eq!((page_state(&guest, 3), page_state(&guest, 20)), ((false, true), (true, false)));
    assert_eq!(set_bits(&bitmap_op(&d0, id, sop::PEEK, 1024, 0).2[..128]), [20]);
    assert!(guest.log_dirty_fault(0x3000));
    // A CLEAN with a null buffer cleans.
    let (r, _) = shadow(&d0, id, ShadowOp { op: sop::CLEAN, pages: 1024, ..Default::default() });
    assert_eq!(r, 0);
    assert_eq!((page_state(&guest, 3), page_state(&guest, 20)), ((false, true), (false, true)));
    assert!(set_bits(&bitmap_op(&d0, id, sop::PEEK, 1024, 0).2[..128]).is_empty());

    // A dying domain is left alone (0, nothing done), as Xen; a destroyed one is gone (-ESRCH).
    guest.dying.store(true, Ordering::Release);
    assert!(guest.log_dirty_fault(0x4000));
    assert_eq!(shadow(&d0, id, plain(sop::OFF, 0)).0, 0);
    assert!(guest.mem.lock().log_dirty_enabled(), "left alone");
    guest.dying.store(false, Ordering::Release);

    // The paging pool: Keel's cap on the p2m's table frames, in MiB rounded up; a set never goes below the tables
    // in use.
    let (r, s) = shadow(&d0, id, plain(sop::GET_ALLOCATION, 0));
    let limit = guest.mem.lock().p2m.table_limit();
    assert_eq!((r, u64::from(s.mb)), (0, limit.div_ceil(256)));
    let (r, s) = shadow(&d0, id, ShadowOp { op: sop::SET_ALLOCATION, mb: 8, ..Default::default() });
    assert_eq!((r, s.mb, guest.mem.lock().p2m.table_limit()), (0, 8, 2048));
    let (r, s) = shadow(&d0, id, ShadowOp { op: sop::SET_ALLOCATION, mb: 0, ..Default::default() });
    let used = guest.mem.lock().p2m.table_frames();
    assert_eq!((r, u64::from(s.mb), guest.mem.lock().p2m.table_limit()), (0, used.div_ceil(256), used));
    assert_eq!(shadow(&d0, id, ShadowOp { op: sop::SET_ALLOCATION, mb: 8, ..Default::default() }).0, 0);

    domain::destroy(&guest);
    assert_eq!(shadow(&d0, id, plain(sop::CLEAN, 0)).0, ESRCH.negated());
    domain::destroy(&user);
    domain::destroy(&d0);
}

/// RAM populated while log-dirty is on starts dirty (and writable); bits beyond the first 4 KiB piece of the
/// caller's bitmap land in the second piece.
#[test]
fn populated_pages_start_dirty() {
    let d0 = privileged_domain();
    let guest = ld_guest(false);
    let id = guest.id;
    guest.set_max_pages(2048);
    assert_eq!(shadow(&d0, id, ShadowOp { op: sop::ENABLE_LOGDIRTY, ..Default::default() }).0, 0);
    assert_eq!(populate(&d0, id, &[33_000], 0), 1);
    assert_eq!(page_state(&guest, 33_000), (true, false));
    put(&d0, BUF + 4096, &[0xeeu8; 48]);
    let pages = 33_100;
    let s = ShadowOp { op: sop::CLEAN, dirty_bitmap: BUF, pages, ..Default::default() };
    let (r, s) = shadow(&d0, id, s);
    assert_eq!((r, s.pages, s.dirty_count), (0, pages, 1));
    let second: [u8; 48] = get(&d0, BUF + 4096);
    assert_eq!(second[(33_000 - 32_768) / 8], 1 << ((33_000 - 32_768) % 8));
    assert_eq!(set_bits(&second[..42]), [33_000 - 32_768]);
    assert_eq!(&second[42..], &[0xee; 6], "(33100 - 32768) bits are 42 bytes");
    assert!(set_bits(&get::<[u8; 128]>(&d0, BUF)).is_empty());
    assert_eq!(page_state(&guest, 33_000), (false, true), "protected after the CLEAN");
    domain::destroy(&guest);
    domain::destroy(&d0);
}

/// A domain destroyed with log-dirty on, pages split and bits set: its bitmap goes with it (the domain itself is
/// freed), and so do its RAM and every p2m table.
#[test]
fn a_domain_destroyed_with_log_dirty_on_frees_its_bitmap() {
    let d0 = privileged_domain();
    let guest = ld_guest(true);
    let id = guest.id;
    assert_eq!(shadow(&d0, id, ShadowOp { op: sop::ENABLE_LOGDIRTY, ..Default::default() }).0, 0);
    for g in [1u64, 100, 1000] {
        assert!(guest.log_dirty_fault(g << 12));
    }
    assert!(guest.mem.lock().with_log(|l| l.is_some_and(|l| l.is_dirty(100) && l.bytes() > 0)));
    let ram: alloc::vec::Vec<u64> = (0..1024).map(|g| guest.mem.lock().translate(g << 12, false).unwrap()).collect();
    let root = guest.mem.lock().p2m.root();
    let weak = Arc::downgrade(&guest);
    assert_eq!(simple(&d0, cmd::DESTROYDOMAIN, id), 0);
    drop(guest);
    assert!(weak.upgrade().is_none(), "the domain, its memory and its dirty bitmap are freed");
    assert!(!host_frames::is_live(root), "p2m root leaked");
    assert!(ram.iter().all(|&f| !host_frames::is_live(f)), "RAM leaked");
    domain::destroy(&d0);
}
