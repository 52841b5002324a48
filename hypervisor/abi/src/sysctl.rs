//! `sysctl` (hypercall 35): the toolstack's host-wide operations, Xen 4.17's layouts (interface version 0x15,
//! `xen/include/public/sysctl.h`). The request is a 136-byte [`XenSysctl`]: a header and a 128-byte union whose
//! member depends on the command, read and written with [`XenSysctl::get`] and [`XenSysctl::set`].

use bytemuck::{Pod, Zeroable};
use core::mem::{offset_of, size_of};

pub use crate::domctl::XenctlBitmap;

/// `XEN_SYSCTL_INTERFACE_VERSION` of Xen 4.17. Any other value is refused with -EACCES.
pub const INTERFACE_VERSION: u32 = 0x15;

/// Command numbers (`XEN_SYSCTL_*`).
pub mod cmd {
    pub const READCONSOLE: u32 = 1;
    pub const TBUF_OP: u32 = 2;
    pub const PHYSINFO: u32 = 3;
    pub const SCHED_ID: u32 = 4;
    pub const PERFC_OP: u32 = 5;
    pub const GETDOMAININFOLIST: u32 = 6;
    pub const DEBUG_KEYS: u32 = 7;
    pub const GETCPUINFO: u32 = 8;
    pub const AVAILHEAP: u32 = 9;
    pub const GET_PMSTAT: u32 = 10;
    pub const CPU_HOTPLUG: u32 = 11;
    pub const PM_OP: u32 = 12;
    pub const PAGE_OFFLINE_OP: u32 = 14;
    pub const LOCKPROF_OP: u32 = 15;
    pub const CPUTOPOINFO: u32 = 16;
    pub const NUMAINFO: u32 = 17;
    pub const CPUPOOL_OP: u32 = 18;
    pub const SCHEDULER_OP: u32 = 19;
    pub const COVERAGE_OP: u32 = 20;
    pub const PSR_CMT_OP: u32 = 21;
    pub const PCITOPOINFO: u32 = 22;
    pub const PSR_ALLOC: u32 = 23;
    pub const GET_CPU_LEVELLING_CAPS: u32 = 25;
    pub const GET_CPU_FEATURESET: u32 = 26;
    pub const LIVEPATCH_OP: u32 = 27;
    pub const GET_CPU_POLICY: u32 = 29;
}

/// `struct xen_sysctl`: the header and the union (as bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct XenSysctl {
    pub cmd: u32,
    pub interface_version: u32,
    /// The command's member.
    pub u: [u8; 128],
}

impl XenSysctl {
    /// The union read as member `T` (its first `size_of::<T>()` bytes).
    pub fn get<T: Pod>(&self) -> T {
        bytemuck::pod_read_unaligned(&self.u[..size_of::<T>()])
    }

    /// Writes member `T` into the union.
    pub fn set<T: Pod>(&mut self, v: &T) {
        self.u[..size_of::<T>()].copy_from_slice(bytemuck::bytes_of(v));
    }
}

/// `struct xen_sysctl_readconsole`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ReadConsole {
    /// Non-zero: consume what is read.
    pub clear: u8,
    /// Non-zero: continue from `index`.
    pub incremental: u8,
    pub pad: [u8; 2],
    /// IN/OUT: where reading (went on / goes on), a free-running count of the ring's bytes.
    pub index: u32,
    /// Guest handle of the buffer.
    pub buffer: u64,
    /// IN: the buffer's size; OUT: bytes read.
    pub count: u32,
    pub pad2: u32,
}

/// `XEN_SYSCTL_PHYSCAP_*`.
pub mod physcap {
    pub const HVM: u32 = 1 << 0;
    pub const PV: u32 = 1 << 1;
    pub const DIRECTIO: u32 = 1 << 2;
    pub const HAP: u32 = 1 << 3;
    pub const SHADOW: u32 = 1 << 4;
    pub const IOMMU_HAP_PT_SHARE: u32 = 1 << 5;
    pub const VMTRACE: u32 = 1 << 6;
    pub const VPMU: u32 = 1 << 7;
    pub const GNTTAB_V1: u32 = 1 << 8;
    pub const GNTTAB_V2: u32 = 1 << 9;
}

/// `struct xen_sysctl_physinfo`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PhysInfo {
    pub threads_per_core: u32,
    pub cores_per_socket: u32,
    /// Online CPUs.
    pub nr_cpus: u32,
    pub max_cpu_id: u32,
    pub nr_nodes: u32,
    pub max_node_id: u32,
    pub cpu_khz: u32,
    /// [`physcap`] bits.
    pub capabilities: u32,
    pub arch_capabilities: u32,
    pub pad: u32,
    pub total_pages: u64,
    pub free_pages: u64,
    pub scrub_pages: u64,
    pub outstanding_pages: u64,
    pub max_mfn: u64,
    /// Xen's featureset words 0–7.
    pub hw_cap: [u32; 8],
}

/// `struct xen_sysctl_sched_id`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SchedId {
    pub sched_id: u32,
}

/// `struct xen_sysctl_getdomaininfolist`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GetDomainInfoList {
    /// `domid_t`.
    pub first_domain: u16,
    pub pad: u16,
    pub max_domains: u32,
    /// Guest handle of an array of `domctl::GetDomainInfo`.
    pub buffer: u64,
    /// OUT.
    pub num_domains: u32,
    pub pad2: u32,
}

/// `struct xen_sysctl_getcpuinfo`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GetCpuInfo {
    pub max_cpus: u32,
    pub pad: u32,
    /// Guest handle of an array of `{ idletime: u64 }`.
    pub info: u64,
    pub nr_cpus: u32,
    pub pad2: u32,
}

/// `struct xen_sysctl_cputopo`: one CPU's place (u32::MAX ×3 for an absent CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CpuTopo {
    pub core: u32,
    pub socket: u32,
    pub node: u32,
}

/// `struct xen_sysctl_cputopoinfo`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CpuTopoInfo {
    /// IN: entries the buffer holds; OUT: CPUs.
    pub num_cpus: u32,
    pub pad: u32,
    /// Guest handle of a [`CpuTopo`] array (0: ask for the count).
    pub cputopo: u64,
}

/// `struct xen_sysctl_meminfo`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct MemInfo {
    pub memsize: u64,
    pub memfree: u64,
}

/// `struct xen_sysctl_numainfo`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NumaInfo {
    pub num_nodes: u32,
    pub pad: u32,
    /// Guest handle of a [`MemInfo`] array.
    pub meminfo: u64,
    /// Guest handle of a u32 distance matrix.
    pub distance: u64,
}

/// `XEN_SYSCTL_CPUPOOL_OP_*`.
pub mod cpupool_op {
    pub const CREATE: u32 = 1;
    pub const DESTROY: u32 = 2;
    pub const INFO: u32 = 3;
    pub const ADDCPU: u32 = 4;
    pub const RMCPU: u32 = 5;
    pub const MOVEDOMAIN: u32 = 6;
    pub const FREEINFO: u32 = 7;
    /// `XEN_SYSCTL_CPUPOOL_PAR_ANY`.
    pub const PAR_ANY: u32 = u32::MAX;
}

/// `struct xen_sysctl_cpupool_op`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CpupoolOp {
    pub op: u32,
    pub cpupool_id: u32,
    pub sched_id: u32,
    pub domid: u32,
    pub cpu: u32,
    pub n_dom: u32,
    pub cpumap: XenctlBitmap,
}

/// `struct xen_sysctl_scheduler_op` with its credit member (`struct xen_sysctl_credit_schedule`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SchedulerOp {
    pub cpupool_id: u32,
    pub sched_id: u32,
    /// `XEN_SYSCTL_SCHEDOP_putinfo` 0 / `getinfo` 1.
    pub cmd: u32,
    pub pad: u32,
    pub tslice_ms: u32,
    pub ratelimit_us: u32,
    pub vcpu_migr_delay_us: u32,
    pub pad2: u32,
}

/// `XEN_SYSCTL_SCHEDOP_*`.
pub mod schedop {
    pub const PUTINFO: u32 = 0;
    pub const GETINFO: u32 = 1;
}

/// `XEN_INVALID_NODE_ID`: a device (or CPU) on no known NUMA node, as `pcitopoinfo` reports it.
pub const INVALID_NODE_ID: u32 = !0;
/// `XEN_INVALID_DEV`: `pcitopoinfo`'s answer for a device the hypervisor does not know.
pub const INVALID_DEV: u32 = INVALID_NODE_ID - 1;

/// `struct xen_sysctl_pcitopoinfo`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PciTopoInfo {
    pub num_devs: u32,
    pub pad: u32,
    pub devs: u64,
    pub nodes: u64,
}

/// `struct xen_sysctl_cpu_featureset`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CpuFeatureset {
    pub index: u32,
    pub nr_features: u32,
    pub features: u64,
}

const _: () = {
    assert!(size_of::<XenSysctl>() == 136);
    assert!(offset_of!(XenSysctl, u) == 8);
    assert!(size_of::<ReadConsole>() == 24);
    assert!(offset_of!(ReadConsole, index) == 4);
    assert!(offset_of!(ReadConsole, buffer) == 8);
    assert!(offset_of!(ReadConsole, count) == 16);
    assert!(size_of::<PhysInfo>() == 112);
    assert!(offset_of!(PhysInfo, cpu_khz) == 24);
    assert!(offset_of!(PhysInfo, capabilities) == 28);
    assert!(offset_of!(PhysInfo, total_pages) == 40);
    assert!(offset_of!(PhysInfo, free_pages) == 48);
    assert!(offset_of!(PhysInfo, outstanding_pages) == 64);
    assert!(offset_of!(PhysInfo, max_mfn) == 72);
    assert!(offset_of!(PhysInfo, hw_cap) == 80);
    assert!(size_of::<GetDomainInfoList>() == 24);
    assert!(offset_of!(GetDomainInfoList, max_domains) == 4);
    assert!(offset_of!(GetDomainInfoList, buffer) == 8);
    assert!(offset_of!(GetDomainInfoList, num_domains) == 16);
    assert!(size_of::<GetCpuInfo>() == 24);
    assert!(offset_of!(GetCpuInfo, nr_cpus) == 16);
    assert!(size_of::<CpuTopo>() == 12);
    assert!(size_of::<CpuTopoInfo>() == 16);
    assert!(size_of::<NumaInfo>() == 24);
    assert!(size_of::<CpupoolOp>() == 40);
    assert!(offset_of!(CpupoolOp, n_dom) == 20);
    assert!(offset_of!(CpupoolOp, cpumap) == 24);
    assert!(size_of::<SchedulerOp>() == 32);
    assert!(offset_of!(SchedulerOp, tslice_ms) == 16);
    assert!(offset_of!(SchedulerOp, vcpu_migr_delay_us) == 24);
    assert!(size_of::<PciTopoInfo>() == 24);
    assert!(size_of::<CpuFeatureset>() == 16);
};
