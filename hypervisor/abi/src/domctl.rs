//! `domctl` (hypercall 36): the toolstack's per-domain operations, Xen 4.17's layouts (interface version 0x15,
//! `xen/include/public/domctl.h`). The request is a 144-byte [`XenDomctl`]: a header and a 128-byte union whose
//! member depends on the command; each member is its own [`Pod`] struct, read from and written into the union with
//! [`XenDomctl::get`] and [`XenDomctl::set`].

use bytemuck::{Pod, Zeroable};
use core::mem::{offset_of, size_of};

/// `XEN_DOMCTL_INTERFACE_VERSION` of Xen 4.17. Any other value is refused with -EACCES.
pub const INTERFACE_VERSION: u32 = 0x15;

/// Command numbers (`XEN_DOMCTL_*`).
pub mod cmd {
    pub const CREATEDOMAIN: u32 = 1;
    pub const DESTROYDOMAIN: u32 = 2;
    pub const PAUSEDOMAIN: u32 = 3;
    pub const UNPAUSEDOMAIN: u32 = 4;
    pub const GETDOMAININFO: u32 = 5;
    pub const SETVCPUAFFINITY: u32 = 9;
    pub const SHADOW_OP: u32 = 10;
    pub const MAX_MEM: u32 = 11;
    pub const SETVCPUCONTEXT: u32 = 12;
    pub const GETVCPUCONTEXT: u32 = 13;
    pub const GETVCPUINFO: u32 = 14;
    pub const MAX_VCPUS: u32 = 15;
    pub const SCHEDULER_OP: u32 = 16;
    pub const SETDOMAINHANDLE: u32 = 17;
    pub const SETTIMEOFFSET: u32 = 24;
    /// `XEN_DOMCTL_resumedomain`: a domain shut down (a suspend the toolstack gives up) runs again.
    pub const RESUMEDOMAIN: u32 = 27;
    pub const GETVCPUAFFINITY: u32 = 25;
    pub const GETHVMCONTEXT: u32 = 33;
    pub const SETHVMCONTEXT: u32 = 34;
    pub const GETHVMCONTEXT_PARTIAL: u32 = 55;
    pub const GETTSCINFO: u32 = 59;
    pub const SETTSCINFO: u32 = 60;
    pub const SETNODEAFFINITY: u32 = 68;
    pub const GETNODEAFFINITY: u32 = 69;
    pub const GET_CPU_POLICY: u32 = 82;
    pub const SET_CPU_POLICY: u32 = 83;
    pub const GET_PAGING_MEMPOOL_SIZE: u32 = 85;
    pub const SET_PAGING_MEMPOOL_SIZE: u32 = 86;
}

/// `struct xen_domctl`: the header and the union (as bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct XenDomctl {
    pub cmd: u32,
    pub interface_version: u32,
    /// `domid_t`.
    pub domain: u16,
    /// Unused; libxc leaves stack garbage here (never checked).
    pub pad: [u16; 3],
    /// The command's member.
    pub u: [u8; 128],
}

impl XenDomctl {
    /// The union read as member `T` (its first `size_of::<T>()` bytes).
    pub fn get<T: Pod>(&self) -> T {
        bytemuck::pod_read_unaligned(&self.u[..size_of::<T>()])
    }

    /// Writes member `T` into the union (the rest is left as it was, as Xen copies the whole struct back).
    pub fn set<T: Pod>(&mut self, v: &T) {
        self.u[..size_of::<T>()].copy_from_slice(bytemuck::bytes_of(v));
    }
}

/// `XEN_DOMCTL_CDF_*`: createdomain flags.
pub mod cdf {
    pub const HVM: u32 = 1 << 0;
    pub const HAP: u32 = 1 << 1;
    pub const S3_INTEGRITY: u32 = 1 << 2;
    pub const OOS_OFF: u32 = 1 << 3;
    pub const XS_DOMAIN: u32 = 1 << 4;
    pub const IOMMU: u32 = 1 << 5;
    pub const NESTED_VIRT: u32 = 1 << 6;
    pub const VPMU: u32 = 1 << 7;
}

/// `XEN_X86_EMU_*`: emulated devices of an x86 domain.
pub mod emu {
    pub const LAPIC: u32 = 1 << 0;
    pub const HPET: u32 = 1 << 1;
    pub const PM: u32 = 1 << 2;
    pub const RTC: u32 = 1 << 3;
    pub const IOAPIC: u32 = 1 << 4;
    pub const PIC: u32 = 1 << 5;
    pub const VGA: u32 = 1 << 6;
    pub const IOMMU: u32 = 1 << 7;
    pub const PIT: u32 = 1 << 8;
    pub const USE_PIRQ: u32 = 1 << 9;
    pub const VPCI: u32 = 1 << 10;
}

/// `struct xen_arch_domainconfig` (x86).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ArchDomainConfig {
    pub emulation_flags: u32,
    pub misc_flags: u32,
}

/// `struct xen_domctl_createdomain`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CreateDomain {
    pub ssidref: u32,
    pub handle: [u8; 16],
    /// [`cdf`] bits.
    pub flags: u32,
    pub iommu_opts: u32,
    pub max_vcpus: u32,
    pub max_evtchn_port: u32,
    pub max_grant_frames: i32,
    pub max_maptrack_frames: i32,
    /// Bits 0–3: the highest grant-table version allowed.
    pub grant_opts: u32,
    pub vmtrace_size: u32,
    pub cpupool_id: u32,
    pub arch: ArchDomainConfig,
}

/// `XEN_DOMINF_*`: getdomaininfo flags.
pub mod dominf {
    pub const DYING: u32 = 1 << 0;
    pub const HVM_GUEST: u32 = 1 << 1;
    pub const SHUTDOWN: u32 = 1 << 2;
    pub const PAUSED: u32 = 1 << 3;
    pub const BLOCKED: u32 = 1 << 4;
    pub const RUNNING: u32 = 1 << 5;
    pub const DEBUGGED: u32 = 1 << 6;
    pub const XS_DOMAIN: u32 = 1 << 7;
    pub const HAP: u32 = 1 << 8;
    /// The shutdown code sits in bits 16–23 (`XEN_DOMINF_shutdownshift`).
    pub const SHUTDOWN_SHIFT: u32 = 16;
    pub const SHUTDOWN_MASK: u32 = 0xff;
}

/// `struct xen_domctl_getdomaininfo` (also the element of sysctl getdomaininfolist's buffer).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GetDomainInfo {
    pub domain: u16,
    pub pad1: u16,
    /// [`dominf`] bits.
    pub flags: u32,
    pub tot_pages: u64,
    pub max_pages: u64,
    pub outstanding_pages: u64,
    pub shr_pages: u64,
    pub paged_pages: u64,
    /// GFN of shared_info.
    pub shared_info_frame: u64,
    /// Running time of all vCPUs, ns.
    pub cpu_time: u64,
    pub nr_online_vcpus: u32,
    /// Highest vCPU id (u32::MAX: none).
    pub max_vcpu_id: u32,
    pub ssidref: u32,
    pub handle: [u8; 16],
    pub cpupool: u32,
    pub gpaddr_bits: u8,
    pub pad2: [u8; 7],
    pub arch_config: ArchDomainConfig,
}

/// `struct xen_domctl_getvcpuinfo`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GetVcpuInfo {
    /// IN.
    pub vcpu: u32,
    pub online: u8,
    pub blocked: u8,
    pub running: u8,
    pub pad: u8,
    /// Running time, ns.
    pub cpu_time: u64,
    /// The physical CPU it runs on or last ran on.
    pub cpu: u32,
    pub pad2: u32,
}

/// `struct xenctl_bitmap`: a guest handle to a bitmap and its length in bits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct XenctlBitmap {
    /// Guest-linear address of the bytes (0: none).
    pub bitmap: u64,
    pub nr_bits: u32,
    pub pad: u32,
}

/// `XEN_VCPUAFFINITY_*`.
pub mod vcpuaffinity {
    pub const HARD: u32 = 1 << 0;
    pub const SOFT: u32 = 1 << 1;
    pub const FORCE: u32 = 1 << 2;
}

/// `struct xen_domctl_vcpuaffinity` (setvcpuaffinity and getvcpuaffinity).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct VcpuAffinity {
    pub vcpu: u32,
    /// [`vcpuaffinity`] bits.
    pub flags: u32,
    pub cpumap_hard: XenctlBitmap,
    pub cpumap_soft: XenctlBitmap,
}

/// `struct xen_domctl_nodeaffinity`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NodeAffinity {
    pub nodemap: XenctlBitmap,
}

/// Scheduler ids (`XEN_SCHEDULER_*`).
pub mod sched_id {
    pub const CREDIT: u32 = 5;
    pub const CREDIT2: u32 = 6;
    pub const ARINC653: u32 = 7;
    pub const RTDS: u32 = 8;
    pub const NULL: u32 = 9;
}

/// `XEN_DOMCTL_SCHEDOP_*`.
pub mod schedop {
    pub const PUTINFO: u32 = 0;
    pub const GETINFO: u32 = 1;
    pub const PUTVCPUINFO: u32 = 2;
    pub const GETVCPUINFO: u32 = 3;
}

/// `struct xen_domctl_scheduler_op` with its credit member (`struct xen_domctl_sched_credit`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SchedulerOp {
    pub sched_id: u32,
    /// [`schedop`].
    pub cmd: u32,
    /// Credit: weight (putinfo: 0 leaves it unchanged).
    pub weight: u16,
    /// Credit: cap in percent of one CPU (putinfo: 0xffff leaves it unchanged).
    pub cap: u16,
    pub rest: [u32; 3],
}

/// `struct xen_domctl_max_mem`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct MaxMem {
    pub max_memkb: u64,
}

/// `struct xen_domctl_max_vcpus`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct MaxVcpus {
    pub max: u32,
}

/// `struct xen_domctl_setdomainhandle`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SetDomainHandle {
    pub handle: [u8; 16],
}

/// `struct xen_domctl_settimeoffset`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SetTimeOffset {
    pub time_offset_seconds: i64,
}

/// `struct xen_domctl_hvmcontext`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct HvmContext {
    pub size: u32,
    pub pad: u32,
    /// Guest handle of the buffer (0: ask for the size).
    pub buffer: u64,
}

/// `struct xen_domctl_hvmcontext_partial`: one record's payload (no descriptor) of type `typ`, for vCPU `instance`
/// where the record is per vCPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct HvmContextPartial {
    pub typ: u32,
    pub instance: u32,
    /// In: the buffer's size; out: the record's length.
    pub bufsz: u64,
    /// Guest handle of the buffer (0: ask for the length).
    pub buffer: u64,
}

/// HVM save records (`xen/include/public/hvm/save.h`, `arch-x86/hvm/save.h`): a stream of records, each a
/// [`SaveDescriptor`] followed by `length` payload bytes, no padding between records, ending with [`hvm_save::END`].
pub mod hvm_save {
    pub const END: u16 = 0;
    pub const HEADER: u16 = 1;
    pub const CPU: u16 = 2;
    pub const LAPIC: u16 = 5;
    pub const LAPIC_REGS: u16 = 6;
    pub const MTRR: u16 = 14;
    /// The highest record type Xen 4.17 defines (`HVM_SAVE_CODE_MAX`).
    pub const CODE_MAX: u16 = 20;
    /// `HVM_FILE_MAGIC` and `HVM_FILE_VERSION` of the header record.
    pub const MAGIC: u32 = 0x5438_1286;
    pub const VERSION: u32 = 1;
    /// `XEN_X86_FPU_INITIALISED` in [`super::HvmHwCpu::flags`].
    pub const FPU_INITIALISED: u32 = 1;
}

/// `struct hvm_save_descriptor`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SaveDescriptor {
    /// [`hvm_save`] code.
    pub typecode: u16,
    /// vCPU number for per-vCPU records, 0 otherwise.
    pub instance: u16,
    /// Payload bytes after this descriptor.
    pub length: u32,
}

/// `struct hvm_save_header` (record 1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SaveHeader {
    pub magic: u32,
    pub version: u32,
    pub changeset: u64,
    /// CPUID.1.EAX of the saving machine.
    pub cpuid: u32,
    pub gtsc_khz: u32,
}

/// `struct hvm_hw_cpu` (record 2, one per vCPU): the architectural state of a vCPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct HvmHwCpu {
    pub fpu_regs: [u8; 512],
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub r8_r15: [u64; 8],
    pub rip: u64,
    pub rflags: u64,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    /// dr0–dr3.
    pub dr: [u64; 4],
    pub dr6: u64,
    pub dr7: u64,
    /// Selectors, in the order cs, ds, es, fs, gs, ss, tr, ldtr.
    pub sel: [u32; 8],
    /// Limits: cs, ds, es, fs, gs, ss, tr, ldtr, idtr, gdtr.
    pub limit: [u32; 10],
    /// Bases, same order as the limits.
    pub base: [u64; 10],
    /// Attributes in the packed form (type 0-3, S 4, DPL 5-6, P 7, AVL 8, L 9, D/B 10, G 11): cs, ds, es, fs, gs,
    /// ss, tr, ldtr.
    pub arbytes: [u32; 8],
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub shadow_gs: u64,
    pub msr_flags: u64,
    pub msr_lstar: u64,
    pub msr_star: u64,
    pub msr_cstar: u64,
    pub msr_syscall_mask: u64,
    pub msr_efer: u64,
    pub msr_tsc_aux: u64,
    pub tsc: u64,
    pub pending_event: u32,
    pub error_code: u32,
    /// [`hvm_save::FPU_INITIALISED`].
    pub flags: u32,
    pub pad0: u32,
}

impl HvmHwCpu {
    /// The PVH entry state as Xen's toolstack writes it for a boot vCPU (libxenguest's vcpu_hvm): 32-bit flat
    /// protected mode, paging off (CR0 = PE|ET), CS 0xc9b, DS/ES/SS 0xc93, TR 0x8b with limit 0x67, EIP =
    /// `entry`, EBX = `start_info`.
    pub fn pvh_entry(entry: u32, start_info: u32) -> Self {
        let mut c = Self::zeroed();
        c.rip = entry as u64;
        c.rbx = start_info as u64;
        c.rflags = 2;
        c.cr0 = 0x11;
        for s in [seg::CS, seg::DS, seg::ES, seg::SS] {
            c.limit[s] = u32::MAX;
            c.arbytes[s] = if s == seg::CS { 0xc9b } else { 0xc93 };
        }
        c.limit[seg::TR] = 0x67;
        c.arbytes[seg::TR] = 0x8b;
        c
    }
}

/// Indices into [`HvmHwCpu::sel`], `limit`, `base` and `arbytes`.
pub mod seg {
    pub const CS: usize = 0;
    pub const DS: usize = 1;
    pub const ES: usize = 2;
    pub const FS: usize = 3;
    pub const GS: usize = 4;
    pub const SS: usize = 5;
    pub const TR: usize = 6;
    pub const LDTR: usize = 7;
    pub const IDTR: usize = 8;
    pub const GDTR: usize = 9;
}

/// `struct hvm_hw_lapic` (record 5, one per vCPU): the APIC base MSR, whether the APIC is disabled, the timer's
/// divisor and the TSC-deadline MSR.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct HvmHwLapic {
    pub apic_base_msr: u64,
    /// [`lapic::SW_DISABLED`] | [`lapic::HW_DISABLED`].
    pub disabled: u32,
    pub timer_divisor: u32,
    pub tdt_msr: u64,
}

/// `struct hvm_hw_lapic_regs` (record 6, one per vCPU): the APIC's register page as xAPIC MMIO lays it out
/// (register at offset `0x10 * index`, the x2APIC MSR being `0x800 + index`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct HvmHwLapicRegs {
    pub data: [u8; 1024],
}

/// Values of the LAPIC records.
pub mod lapic {
    /// `VLAPIC_SW_DISABLED`: the spurious-vector register's enable bit is clear.
    pub const SW_DISABLED: u32 = 1;
    /// `VLAPIC_HW_DISABLED`: the APIC base MSR's enable bit is clear.
    pub const HW_DISABLED: u32 = 2;
    /// The APIC base MSR's bits: BSP, x2APIC mode, global enable; the default base address.
    pub const BASE_BSP: u64 = 1 << 8;
    pub const BASE_X2APIC: u64 = 1 << 10;
    pub const BASE_ENABLE: u64 = 1 << 11;
    pub const DEFAULT_BASE: u64 = 0xfee0_0000;
}

/// `struct hvm_hw_mtrr` (record 14, one per vCPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct HvmHwMtrr {
    pub msr_pat_cr: u64,
    /// Base/mask pairs of the 8 variable ranges.
    pub msr_mtrr_var: [u64; 16],
    pub msr_mtrr_fixed: [u64; 11],
    pub msr_mtrr_cap: u64,
    pub msr_mtrr_def_type: u64,
}

/// `struct xen_domctl_tsc_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct TscInfo {
    pub tsc_mode: u32,
    pub gtsc_khz: u32,
    pub incarnation: u32,
    pub pad: u32,
    pub elapsed_nsec: u64,
}

/// `XEN_DOMCTL_SHADOW_OP_*`: the operations of `XEN_DOMCTL_shadow_op` ([`ShadowOp::op`]).
pub mod shadow_op {
    /// Turn log-dirty (and, on Xen's shadow paging, shadow mode) off.
    pub const OFF: u32 = 0;
    /// Legacy: enable with no mode flags.
    pub const ENABLE_TEST: u32 = 1;
    /// Legacy: enable with [`super::shadow_mode::LOG_DIRTY`] (what libxenguest's save path uses).
    pub const ENABLE_LOGDIRTY: u32 = 2;
    /// Legacy and no longer supported by Xen (refcount + translate).
    pub const ENABLE_TRANSLATE: u32 = 3;
    /// Return the dirty bitmap and clear it for the next round.
    pub const CLEAN: u32 = 11;
    /// Return the dirty bitmap and leave it as it is.
    pub const PEEK: u32 = 12;
    /// Read the paging pool size, in MiB ([`super::ShadowOp::mb`]).
    pub const GET_ALLOCATION: u32 = 30;
    /// Set the paging pool size, in MiB.
    pub const SET_ALLOCATION: u32 = 31;
    /// Enable with the [`super::shadow_mode`] flags in [`super::ShadowOp::mode`].
    pub const ENABLE: u32 = 32;
}

/// `XEN_DOMCTL_SHADOW_ENABLE_*` (mode flags of [`shadow_op::ENABLE`]) and `XEN_DOMCTL_SHADOW_LOGDIRTY_*` (mode
/// flags of [`shadow_op::CLEAN`] and [`shadow_op::PEEK`]).
pub mod shadow_mode {
    /// ENABLE: shadow page tables are reference-counted.
    pub const REFCOUNT: u32 = 1 << 1;
    /// ENABLE: log pages in a bitmap as they are dirtied.
    pub const LOG_DIRTY: u32 = 1 << 2;
    /// ENABLE: the hypervisor translates GPFNs.
    pub const TRANSLATE: u32 = 1 << 3;
    /// ENABLE: the hypervisor takes no guest virtual address space.
    pub const EXTERNAL: u32 = 1 << 4;
    /// CLEAN/PEEK: the save's final round; pages the hypervisor keeps mapped writable are reported dirty too. Any
    /// other CLEAN/PEEK mode bit is -EINVAL.
    pub const LOGDIRTY_FINAL: u32 = 1 << 0;
}

/// `struct xen_domctl_shadow_op` (with its stats): [`shadow_op`] in `op`, [`shadow_mode`] flags in `mode`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ShadowOp {
    pub op: u32,
    pub mode: u32,
    /// GET/SET_ALLOCATION: the paging pool in MiB.
    pub mb: u32,
    pub pad: u32,
    /// CLEAN/PEEK: the caller's buffer for the bitmap (a guest handle; 0 = none, only the stats are wanted).
    pub dirty_bitmap: u64,
    /// CLEAN/PEEK: bits wanted (in), bits written (out).
    pub pages: u64,
    /// `stats.fault_count`.
    pub fault_count: u32,
    /// `stats.dirty_count`.
    pub dirty_count: u32,
}

/// `struct xen_domctl_paging_mempool`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct PagingMempool {
    pub size: u64,
}

/// `struct xen_cpuid_leaf`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CpuidLeaf {
    pub leaf: u32,
    /// u32::MAX: the leaf has no subleaves.
    pub subleaf: u32,
    pub a: u32,
    pub b: u32,
    pub c: u32,
    pub d: u32,
}

/// `struct xen_msr_entry`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct MsrEntry {
    pub idx: u32,
    pub flags: u32,
    pub val: u64,
}

/// `struct xen_domctl_cpu_policy`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CpuPolicy {
    pub nr_leaves: u32,
    pub nr_msrs: u32,
    pub leaves: u64,
    pub msrs: u64,
    pub err_leaf: u32,
    pub err_subleaf: u32,
    pub err_msr: u32,
    pub pad: u32,
}

const _: () = {
    assert!(size_of::<XenDomctl>() == 144);
    assert!(offset_of!(XenDomctl, domain) == 8);
    assert!(offset_of!(XenDomctl, u) == 16);
    assert!(size_of::<CreateDomain>() == 64);
    assert!(offset_of!(CreateDomain, flags) == 20);
    assert!(offset_of!(CreateDomain, max_vcpus) == 28);
    assert!(offset_of!(CreateDomain, grant_opts) == 44);
    assert!(offset_of!(CreateDomain, cpupool_id) == 52);
    assert!(offset_of!(CreateDomain, arch) == 56);
    assert!(size_of::<GetDomainInfo>() == 112);
    assert!(offset_of!(GetDomainInfo, flags) == 4);
    assert!(offset_of!(GetDomainInfo, tot_pages) == 8);
    assert!(offset_of!(GetDomainInfo, shared_info_frame) == 48);
    assert!(offset_of!(GetDomainInfo, cpu_time) == 56);
    assert!(offset_of!(GetDomainInfo, nr_online_vcpus) == 64);
    assert!(offset_of!(GetDomainInfo, max_vcpu_id) == 68);
    assert!(offset_of!(GetDomainInfo, ssidref) == 72);
    assert!(offset_of!(GetDomainInfo, handle) == 76);
    assert!(offset_of!(GetDomainInfo, cpupool) == 92);
    assert!(offset_of!(GetDomainInfo, gpaddr_bits) == 96);
    assert!(offset_of!(GetDomainInfo, arch_config) == 104);
    assert!(size_of::<GetVcpuInfo>() == 24);
    assert!(offset_of!(GetVcpuInfo, online) == 4);
    assert!(offset_of!(GetVcpuInfo, cpu_time) == 8);
    assert!(offset_of!(GetVcpuInfo, cpu) == 16);
    assert!(size_of::<XenctlBitmap>() == 16);
    assert!(size_of::<VcpuAffinity>() == 40);
    assert!(offset_of!(VcpuAffinity, cpumap_hard) == 8);
    assert!(offset_of!(VcpuAffinity, cpumap_soft) == 24);
    assert!(size_of::<SchedulerOp>() == 24);
    assert!(offset_of!(SchedulerOp, weight) == 8);
    assert!(offset_of!(SchedulerOp, cap) == 10);
    assert!(size_of::<HvmContext>() == 16);
    assert!(offset_of!(HvmContext, buffer) == 8);
    assert!(size_of::<HvmContextPartial>() == 24);
    assert!(offset_of!(HvmContextPartial, bufsz) == 8);
    assert!(offset_of!(HvmContextPartial, buffer) == 16);
    assert!(size_of::<SaveDescriptor>() == 8);
    assert!(size_of::<SaveHeader>() == 24);
    assert!(offset_of!(SaveHeader, cpuid) == 16);
    assert!(size_of::<HvmHwCpu>() == 1032);
    assert!(offset_of!(HvmHwCpu, rax) == 512);
    assert!(offset_of!(HvmHwCpu, rbx) == 520);
    assert!(offset_of!(HvmHwCpu, rip) == 640);
    assert!(offset_of!(HvmHwCpu, cr0) == 656);
    assert!(offset_of!(HvmHwCpu, dr) == 688);
    assert!(offset_of!(HvmHwCpu, dr6) == 720);
    assert!(offset_of!(HvmHwCpu, sysenter_esp) == 928);
    assert!(offset_of!(HvmHwCpu, sysenter_eip) == 936);
    assert!(offset_of!(HvmHwCpu, msr_flags) == 952);
    assert!(offset_of!(HvmHwCpu, msr_star) == 968);
    assert!(offset_of!(HvmHwCpu, msr_cstar) == 976);
    assert!(offset_of!(HvmHwCpu, msr_syscall_mask) == 984);
    assert!(offset_of!(HvmHwCpu, msr_tsc_aux) == 1000);
    assert!(offset_of!(HvmHwCpu, error_code) == 1020);
    assert!(offset_of!(HvmHwCpu, sel) == 736);
    assert!(offset_of!(HvmHwCpu, limit) == 768);
    assert!(offset_of!(HvmHwCpu, base) == 808);
    assert!(offset_of!(HvmHwCpu, arbytes) == 888);
    assert!(offset_of!(HvmHwCpu, sysenter_cs) == 920);
    assert!(offset_of!(HvmHwCpu, shadow_gs) == 944);
    assert!(offset_of!(HvmHwCpu, msr_lstar) == 960);
    assert!(offset_of!(HvmHwCpu, msr_efer) == 992);
    assert!(offset_of!(HvmHwCpu, tsc) == 1008);
    assert!(offset_of!(HvmHwCpu, pending_event) == 1016);
    assert!(offset_of!(HvmHwCpu, flags) == 1024);
    assert!(size_of::<HvmHwLapic>() == 24);
    assert!(offset_of!(HvmHwLapic, tdt_msr) == 16);
    assert!(size_of::<HvmHwLapicRegs>() == 1024);
    assert!(size_of::<HvmHwMtrr>() == 240);
    assert!(offset_of!(HvmHwMtrr, msr_mtrr_fixed) == 136);
    assert!(offset_of!(HvmHwMtrr, msr_mtrr_cap) == 224);
    assert!(offset_of!(HvmHwMtrr, msr_mtrr_def_type) == 232);
    assert!(size_of::<TscInfo>() == 24);
    assert!(offset_of!(TscInfo, elapsed_nsec) == 16);
    assert!(size_of::<ShadowOp>() == 40);
    assert!(offset_of!(ShadowOp, dirty_bitmap) == 16);
    assert!(offset_of!(ShadowOp, pages) == 24);
    assert!(offset_of!(ShadowOp, fault_count) == 32);
    assert!(size_of::<CpuidLeaf>() == 24);
    assert!(size_of::<MsrEntry>() == 16);
    assert!(size_of::<CpuPolicy>() == 40);
    assert!(offset_of!(CpuPolicy, err_leaf) == 24);
    assert!(offset_of!(CpuPolicy, err_msr) == 32);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_members_round_trip() {
        let mut d = XenDomctl::zeroed();
        let info = GetDomainInfo { domain: 7, tot_pages: 1024, max_vcpu_id: u32::MAX, ..Default::default() };
        d.set(&info);
        assert_eq!(d.get::<GetDomainInfo>(), info);
        assert_eq!(&d.u[0..2], &[7, 0]);
        assert_eq!(&d.u[68..72], &[0xff; 4]);
        let s = SchedulerOp { sched_id: sched_id::CREDIT, cmd: schedop::GETINFO, weight: 512, cap: 0, rest: [0; 3] };
        d.set(&s);
        assert_eq!(d.get::<SchedulerOp>().weight, 512);
    }
}
