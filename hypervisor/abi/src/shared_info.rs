//! `shared_info` and `vcpu_info` (Xen `xen/include/public/xen.h`, `arch-x86/xen.h`), and the HVM parameters and
//! memory/event-channel operations Keel implements.

use bytemuck::{Pod, Zeroable};

use core::mem::{offset_of, size_of};

/// `struct vcpu_time_info` (pvclock).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct VcpuTimeInfo {
    /// Odd while an update is in progress.
    pub version: u32,
    pub pad0: u32,
    /// TSC at the last update.
    pub tsc_timestamp: u64,
    /// System time (ns since boot) at `tsc_timestamp`.
    pub system_time: u64,
    /// TSC → ns multiplier (32.32 fixed point after the shift).
    pub tsc_to_system_mul: u32,
    /// Shift applied to the TSC delta before multiplying.
    pub tsc_shift: i8,
    /// `XEN_PVCLOCK_*` flags.
    pub flags: u8,
    pub pad1: [u8; 2],
}

/// `XEN_PVCLOCK_TSC_STABLE_BIT`.
pub const PVCLOCK_TSC_STABLE: u8 = 1 << 0;

/// `struct vcpu_info` (64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct VcpuInfo {
    pub evtchn_upcall_pending: u8,
    pub evtchn_upcall_mask: u8,
    pub pad: [u8; 6],
    pub evtchn_pending_sel: u64,
    /// `arch_vcpu_info`: cr2, pad.
    pub arch_cr2: u64,
    pub arch_pad: u64,
    pub time: VcpuTimeInfo,
}

/// vCPUs whose `vcpu_info` lives in `shared_info` until they register their own.
pub const LEGACY_VCPUS: usize = 32;
/// Byte offset of `evtchn_pending[64]` in `shared_info`.
pub const EVTCHN_PENDING_OFFSET: usize = 2048;
/// Byte offset of `evtchn_mask[64]`.
pub const EVTCHN_MASK_OFFSET: usize = 2560;
/// Byte offset of `wc_version`.
pub const WC_VERSION_OFFSET: usize = 3072;
/// Byte offset of `wc_sec`.
pub const WC_SEC_OFFSET: usize = 3076;
/// Byte offset of `wc_nsec`.
pub const WC_NSEC_OFFSET: usize = 3080;
/// Byte offset of `wc_sec_hi` (x86-64).
pub const WC_SEC_HI_OFFSET: usize = 3084;
/// Ports in the 2-level ABI.
pub const EVTCHN_2L_PORTS: u32 = 4096;

/// `struct vcpu_runstate_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct VcpuRunstateInfo {
    /// `RUNSTATE_*`.
    pub state: i32,
    pub pad: u32,
    /// System time the state was entered.
    pub state_entry_time: u64,
    /// ns spent in each state.
    pub time: [u64; 4],
}

/// Runstates.
pub mod runstate {
    pub const RUNNING: i32 = 0;
    pub const RUNNABLE: i32 = 1;
    pub const BLOCKED: i32 = 2;
    pub const OFFLINE: i32 = 3;
}

/// `struct vcpu_register_vcpu_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct VcpuRegisterVcpuInfo {
    /// Guest frame holding the area.
    pub mfn: u64,
    /// Offset in that frame.
    pub offset: u32,
    pub rsvd: u32,
}

/// `HVM_PARAM_*` indices.
pub mod hvm_param {
    pub const CALLBACK_IRQ: u32 = 0;
    pub const STORE_PFN: u32 = 1;
    pub const STORE_EVTCHN: u32 = 2;
    pub const CONSOLE_PFN: u32 = 17;
    pub const CONSOLE_EVTCHN: u32 = 18;
    /// Number of parameters.
    pub const NR: u32 = 64;
    /// CALLBACK_IRQ value type 2 (bits 56-63): a vector.
    pub const CALLBACK_TYPE_VECTOR: u64 = 2;
}

/// `hvm_op` sub-commands.
pub mod hvmop {
    pub const SET_PARAM: u64 = 0;
    pub const GET_PARAM: u64 = 1;
}

/// `struct xen_hvm_param`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct XenHvmParam {
    pub domid: u16,
    pub pad: u16,
    pub index: u32,
    pub value: u64,
}

/// `memory_op` sub-commands.
pub mod xenmem {
    pub const INCREASE_RESERVATION: u64 = 0;
    pub const DECREASE_RESERVATION: u64 = 1;
    /// `XENMEM_current_reservation` and `XENMEM_maximum_reservation`: a domain's tot_pages and max_pages (the
    /// argument points at a `domid_t`).
    pub const CURRENT_RESERVATION: u64 = 3;
    pub const MAXIMUM_RESERVATION: u64 = 4;
    pub const POPULATE_PHYSMAP: u64 = 6;
    pub const ADD_TO_PHYSMAP: u64 = 7;
    pub const MEMORY_MAP: u64 = 9;
    pub const SET_MEMORY_MAP: u64 = 13;
    pub const REMOVE_FROM_PHYSMAP: u64 = 15;
    pub const ADD_TO_PHYSMAP_BATCH: u64 = 23;
    pub const ACQUIRE_RESOURCE: u64 = 28;
    /// The low bits of a memory_op command are the sub-op; the rest is a continuation's start extent.
    pub const CMD_MASK: u64 = 0x3f;
    pub const EXTENT_SHIFT: u32 = 6;
    /// `XENMAPSPACE_shared_info`.
    pub const SPACE_SHARED_INFO: u32 = 0;
    /// `XENMAPSPACE_grant_table`.
    pub const SPACE_GRANT_TABLE: u32 = 1;
    /// `XENMAPSPACE_gmfn_range` (refused by the batch call).
    pub const SPACE_GMFN_RANGE: u32 = 3;
    /// `XENMAPSPACE_gmfn_foreign`.
    pub const SPACE_GMFN_FOREIGN: u32 = 4;
    /// `XENMAPSPACE_dev_mmio`.
    pub const SPACE_DEV_MMIO: u32 = 5;
    /// `XENMEMF_address_bits(x)` lives in the low byte of `xen_memory_reservation.mem_flags`.
    pub const MEMF_ADDRESS_BITS_MASK: u32 = 0xff;
    /// `XENMEMF_populate_on_demand`.
    pub const MEMF_POPULATE_ON_DEMAND: u32 = 1 << 16;
    /// `XENMEM_resource_*` types of XENMEM_acquire_resource.
    pub const RESOURCE_IOREQ_SERVER: u16 = 0;
    pub const RESOURCE_GRANT_TABLE: u16 = 1;
    pub const RESOURCE_VMTRACE_BUF: u16 = 2;
    /// `XENMEM_resource_grant_table_id_*`.
    pub const RESOURCE_GRANT_TABLE_SHARED: u32 = 0;
    pub const RESOURCE_GRANT_TABLE_STATUS: u32 = 1;
}

/// `struct xen_add_to_physmap_batch` (Linux: `xen_add_to_physmap_range`). Guest handles are addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct XenAddToPhysmapBatch {
    pub domid: u16,
    pub space: u16,
    pub size: u16,
    /// `u.foreign_domid` for gmfn_foreign, `u.res0` (0) for the other spaces.
    pub foreign_domid: u16,
    /// `xen_ulong_t idxs[size]`.
    pub idxs: u64,
    /// `xen_pfn_t gpfns[size]`.
    pub gpfns: u64,
    /// `int errs[size]` (out).
    pub errs: u64,
}

/// `struct xen_remove_from_physmap`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct XenRemoveFromPhysmap {
    pub domid: u16,
    pub pad: [u16; 3],
    pub gpfn: u64,
}

/// `struct xen_mem_acquire_resource`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct XenMemAcquireResource {
    pub domid: u16,
    pub typ: u16,
    pub id: u32,
    /// In: frames to map (0 with a null `frame_list`: ask for the size); out: the size.
    pub nr_frames: u32,
    pub pad: u32,
    /// First frame of the resource.
    pub frame: u64,
    /// `xen_pfn_t frame_list[nr_frames]`: for a translated caller, its GFNs to map the frames at.
    pub frame_list: u64,
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<XenAddToPhysmapBatch>() == 32);
    assert!(offset_of!(XenAddToPhysmapBatch, foreign_domid) == 6);
    assert!(offset_of!(XenAddToPhysmapBatch, errs) == 24);
    assert!(size_of::<XenRemoveFromPhysmap>() == 16);
    assert!(offset_of!(XenRemoveFromPhysmap, gpfn) == 8);
    assert!(size_of::<XenMemAcquireResource>() == 32);
    assert!(offset_of!(XenMemAcquireResource, nr_frames) == 8);
    assert!(offset_of!(XenMemAcquireResource, frame) == 16);
    assert!(offset_of!(XenMemAcquireResource, frame_list) == 24);
    assert!(size_of::<GnttabMapGrantRef>() == 32);
    assert!(offset_of!(GnttabMapGrantRef, status) == 18);
    assert!(offset_of!(GnttabMapGrantRef, dev_bus_addr) == 24);
    assert!(size_of::<GnttabUnmapGrantRef>() == 24);
    assert!(size_of::<GnttabCopyPtr>() == 16 && size_of::<GnttabCopy>() == 40);
    assert!(offset_of!(GnttabCopy, dest) == 16 && offset_of!(GnttabCopy, len) == 32);
    assert!(offset_of!(GnttabCopy, status) == 36);
    assert!(offset_of!(GnttabUnmapGrantRef, handle) == 16);
    assert!(offset_of!(GnttabUnmapGrantRef, status) == 20);
};

/// `struct xen_add_to_physmap`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct XenAddToPhysmap {
    pub domid: u16,
    pub size: u16,
    pub space: u32,
    pub idx: u64,
    pub gpfn: u64,
}

/// `event_channel_op` commands and structures.
pub mod evtchnop {
    pub const BIND_INTERDOMAIN: u64 = 0;
    pub const BIND_VIRQ: u64 = 1;
    pub const BIND_PIRQ: u64 = 2;
    pub const CLOSE: u64 = 3;
    pub const SEND: u64 = 4;
    pub const STATUS: u64 = 5;
    pub const ALLOC_UNBOUND: u64 = 6;
    pub const BIND_IPI: u64 = 7;
    pub const BIND_VCPU: u64 = 8;
    pub const UNMASK: u64 = 9;
    pub const RESET: u64 = 10;
    pub const INIT_CONTROL: u64 = 11;
}

/// `struct evtchn_bind_virq`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct EvtchnBindVirq {
    pub virq: u32,
    pub vcpu: u32,
    pub port: u32,
}

/// `struct evtchn_bind_ipi`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct EvtchnBindIpi {
    pub vcpu: u32,
    pub port: u32,
}

/// `struct evtchn_bind_vcpu`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct EvtchnBindVcpu {
    pub port: u32,
    pub vcpu: u32,
}

/// `struct evtchn_alloc_unbound`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct EvtchnAllocUnbound {
    pub dom: u16,
    pub remote_dom: u16,
    pub port: u32,
}

/// `struct evtchn_status`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct EvtchnStatus {
    pub dom: u16,
    pub pad: u16,
    pub port: u32,
    pub status: u32,
    pub vcpu: u32,
    /// Union: unbound.dom / interdomain {dom u16, port u32} / pirq / virq.
    pub u: [u32; 2],
}

/// `EVTCHNSTAT_*`.
pub mod evtchnstat {
    pub const CLOSED: u32 = 0;
    pub const UNBOUND: u32 = 1;
    pub const INTERDOMAIN: u32 = 2;
    pub const PIRQ: u32 = 3;
    pub const VIRQ: u32 = 4;
    pub const IPI: u32 = 5;
}

/// VIRQ numbers.
pub mod virq {
    pub const TIMER: u32 = 0;
    pub const DEBUG: u32 = 1;
    pub const CONSOLE: u32 = 2;
    pub const DOM_EXC: u32 = 3;
    pub const XENOPROF: u32 = 7;
    pub const XENPMU: u32 = 13;
    /// Number of VIRQs.
    pub const NR: u32 = 24;
}

/// `struct sched_poll`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SchedPoll {
    /// Guest pointer to an array of ports.
    pub ports: u64,
    pub nr_ports: u32,
    pub pad: u32,
    /// Absolute system time; 0 = none.
    pub timeout: u64,
}

const _: () = {
    assert!(size_of::<VcpuTimeInfo>() == 32);
    assert!(offset_of!(VcpuTimeInfo, tsc_timestamp) == 8);
    assert!(offset_of!(VcpuTimeInfo, system_time) == 16);
    assert!(offset_of!(VcpuTimeInfo, tsc_to_system_mul) == 24);
    assert!(offset_of!(VcpuTimeInfo, tsc_shift) == 28);
    assert!(offset_of!(VcpuTimeInfo, flags) == 29);
    assert!(size_of::<VcpuInfo>() == 64);
    assert!(offset_of!(VcpuInfo, evtchn_upcall_mask) == 1);
    assert!(offset_of!(VcpuInfo, evtchn_pending_sel) == 8);
    assert!(offset_of!(VcpuInfo, time) == 32);
    assert!(size_of::<VcpuRunstateInfo>() == 48);
    assert!(offset_of!(VcpuRunstateInfo, state_entry_time) == 8);
    assert!(offset_of!(VcpuRunstateInfo, time) == 16);
    assert!(size_of::<VcpuRegisterVcpuInfo>() == 16);
    assert!(size_of::<XenHvmParam>() == 16);
    assert!(offset_of!(XenHvmParam, index) == 4);
    assert!(offset_of!(XenHvmParam, value) == 8);
    assert!(size_of::<XenAddToPhysmap>() == 24);
    assert!(offset_of!(XenAddToPhysmap, space) == 4);
    assert!(offset_of!(XenAddToPhysmap, idx) == 8);
    assert!(offset_of!(XenAddToPhysmap, gpfn) == 16);
    assert!(size_of::<EvtchnBindVirq>() == 12);
    assert!(size_of::<EvtchnBindIpi>() == 8);
    assert!(size_of::<EvtchnAllocUnbound>() == 8);
    assert!(size_of::<EvtchnStatus>() == 24);
    assert!(offset_of!(EvtchnStatus, status) == 8);
    assert!(offset_of!(EvtchnStatus, u) == 16);
    assert!(size_of::<SchedPoll>() == 24);
    assert!(offset_of!(SchedPoll, timeout) == 16);
};

/// `grant_table_op` commands and structures (grant table v1 set-up).
pub mod gnttab {
    pub const MAP_GRANT_REF: u64 = 0;
    pub const UNMAP_GRANT_REF: u64 = 1;
    pub const SETUP_TABLE: u64 = 2;
    pub const DUMP_TABLE: u64 = 3;
    pub const COPY: u64 = 5;
    pub const QUERY_SIZE: u64 = 6;
    pub const SET_VERSION: u64 = 8;
    pub const GET_STATUS_FRAMES: u64 = 9;
    pub const GET_VERSION: u64 = 10;
    pub const SWAP_GRANT_REF: u64 = 11;
    /// `INVALID_M2P_ENTRY` (all ones): what GNTTABOP_setup_table reports, for a translated domain, for a table
    /// frame mapped at no GFN.
    pub const INVALID_GFN: u64 = u64::MAX;
    /// `GNTCOPY_source_gref`: the copy's source is a grant reference (else a frame of the caller's).
    pub const COPY_SOURCE_GREF: u16 = 1 << 0;
    /// `GNTCOPY_dest_gref`: the same for the destination.
    pub const COPY_DEST_GREF: u16 = 1 << 1;
    /// Grant frames a domain may have (Xen's default `max_grant_frames`).
    pub const MAX_FRAMES: u32 = 64;
}

/// `GTF_*` flags of a v1 grant entry (`grant_entry_v1.flags`).
pub mod gtf {
    /// `GTF_invalid`: the entry grants nothing.
    pub const INVALID: u16 = 0;
    /// `GTF_permit_access`: `domid` may map `frame`.
    pub const PERMIT_ACCESS: u16 = 1;
    /// `GTF_readonly`: only read-only mappings.
    pub const READONLY: u16 = 1 << 2;
    /// `GTF_reading`: the hypervisor's mark while the frame is mapped.
    pub const READING: u16 = 1 << 3;
    /// `GTF_writing`: the same, for a writable mapping.
    pub const WRITING: u16 = 1 << 4;
    /// The entry's type bits (`GTF_type_mask`).
    pub const TYPE_MASK: u16 = 3;
    /// `GTF_sub_page` (v2 only: never mappable through a v1 table).
    pub const SUB_PAGE: u16 = 1 << 8;
}

/// `struct grant_entry_v1`: one entry of a v1 grant table, written by the granting guest.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GrantEntryV1 {
    /// `GTF_*`; written last when granting.
    pub flags: u16,
    /// The domain allowed to map the frame.
    pub domid: u16,
    /// The frame (a GFN for an auto-translated granter).
    pub frame: u32,
}

/// Grant references the toolstack keeps (`GNTTAB_NR_RESERVED_ENTRIES`: the console's and xenstore's).
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;

const _: () = assert!(size_of::<GrantEntryV1>() == 8 && offset_of!(GrantEntryV1, frame) == 4);

/// `struct gnttab_query_size`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GnttabQuerySize {
    pub dom: u16,
    pub pad: u16,
    pub nr_frames: u32,
    pub max_nr_frames: u32,
    pub status: i16,
    pub pad2: u16,
}

/// `struct gnttab_setup_table`: GNTTABOP_setup_table's op (only `status` is written back).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GnttabSetupTable {
    /// In: the domain (`DOMID_SELF`, or another one for a privileged caller).
    pub dom: u16,
    pub pad: u16,
    /// In: frames the table is to have at least, and entries of `frame_list` to fill.
    pub nr_frames: u32,
    /// Out: `GNTST_*`.
    pub status: i16,
    pub pad2: [u16; 3],
    /// In: guest pointer to `nr_frames` `xen_pfn_t`s, each filled with the frame's number (for a translated
    /// domain, the GFN it is mapped at, or [`gnttab::INVALID_GFN`]).
    pub frame_list: u64,
}

/// `struct gnttab_swap_grant_ref`: GNTTABOP_swap_grant_ref's op.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GnttabSwapGrantRef {
    /// In: the caller's two grant references.
    pub ref_a: u32,
    pub ref_b: u32,
    /// Out: `GNTST_*`.
    pub status: i16,
    pub pad: u16,
}

/// `struct gnttab_map_grant_ref`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GnttabMapGrantRef {
    /// In: for an auto-translated caller, the guest-physical address to map the frame at.
    pub host_addr: u64,
    /// In: `GNTMAP_*`.
    pub flags: u32,
    /// In: the grant reference.
    pub gref: u32,
    /// In: the granting domain.
    pub dom: u16,
    /// Out: `GNTST_*`.
    pub status: i16,
    /// Out: the handle to unmap with.
    pub handle: u32,
    /// Out: the frame's machine address.
    pub dev_bus_addr: u64,
}

/// `struct gnttab_unmap_grant_ref`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GnttabUnmapGrantRef {
    pub host_addr: u64,
    pub dev_bus_addr: u64,
    pub handle: u32,
    /// Out: `GNTST_*`.
    pub status: i16,
    pub pad: u16,
}

/// One side of a `struct gnttab_copy`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GnttabCopyPtr {
    /// A grant reference (low 32 bits) with the side's `GNTCOPY_*_gref` flag, else a frame (GFN) of the caller's.
    pub u: u64,
    /// The granting domain, or `DOMID_SELF` for a frame.
    pub domid: u16,
    /// Byte offset in the frame.
    pub offset: u16,
    pub pad: u32,
}

/// `struct gnttab_copy`: GNTTABOP_copy's op.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GnttabCopy {
    pub source: GnttabCopyPtr,
    pub dest: GnttabCopyPtr,
    /// Bytes to copy (within one frame on each side).
    pub len: u16,
    /// `GNTCOPY_*`.
    pub flags: u16,
    /// Out: `GNTST_*`.
    pub status: i16,
    pub pad: u16,
}

/// `struct gnttab_set_version` / `gnttab_get_version` (version in/out).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct GnttabSetVersion {
    pub version: u32,
}

/// `struct xen_memory_map`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct XenMemoryMap {
    /// In: capacity of the buffer in entries; out: entries written.
    pub nr_entries: u32,
    pub pad: u32,
    /// Guest pointer to 20-byte packed E820 entries.
    pub buffer: u64,
}

/// `struct xen_memory_reservation` (increase_reservation, decrease_reservation, populate_physmap).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct XenMemoryReservation {
    /// Guest pointer to `nr_extents` GFNs (xen_pfn_t); for increase_reservation it may be null.
    pub extent_start: u64,
    pub nr_extents: u64,
    /// Each extent is 2^extent_order pages.
    pub extent_order: u32,
    /// `XENMEMF_*` (NUMA node, address bits): Keel has one node and no address limit.
    pub mem_flags: u32,
    pub domid: u16,
    pub pad: [u16; 3],
}

/// `struct xen_foreign_memory_map` (XENMEM_set_memory_map): a domain's E820 map, set by the toolstack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct XenForeignMemoryMap {
    pub domid: u16,
    pub pad: [u16; 3],
    pub map: XenMemoryMap,
}

/// `struct evtchn_bind_interdomain`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct EvtchnBindInterdomain {
    pub remote_dom: u16,
    pub pad: u16,
    pub remote_port: u32,
    pub local_port: u32,
}

const _: () = {
    assert!(size_of::<GnttabQuerySize>() == 16);
    assert!(size_of::<GnttabSetupTable>() == 24);
    assert!(offset_of!(GnttabSetupTable, nr_frames) == 4);
    assert!(offset_of!(GnttabSetupTable, status) == 8);
    assert!(offset_of!(GnttabSetupTable, frame_list) == 16);
    assert!(size_of::<GnttabSwapGrantRef>() == 12);
    assert!(offset_of!(GnttabSwapGrantRef, ref_b) == 4);
    assert!(offset_of!(GnttabSwapGrantRef, status) == 8);
    assert!(offset_of!(GnttabQuerySize, nr_frames) == 4);
    assert!(offset_of!(GnttabQuerySize, max_nr_frames) == 8);
    assert!(offset_of!(GnttabQuerySize, status) == 12);
    assert!(size_of::<XenMemoryMap>() == 16);
    assert!(offset_of!(XenMemoryMap, buffer) == 8);
    assert!(size_of::<XenMemoryReservation>() == 32);
    assert!(offset_of!(XenMemoryReservation, nr_extents) == 8);
    assert!(offset_of!(XenMemoryReservation, extent_order) == 16);
    assert!(offset_of!(XenMemoryReservation, mem_flags) == 20);
    assert!(offset_of!(XenMemoryReservation, domid) == 24);
    assert!(size_of::<XenForeignMemoryMap>() == 24);
    assert!(offset_of!(XenForeignMemoryMap, map) == 8);
    assert!(size_of::<EvtchnBindInterdomain>() == 12);
    assert!(offset_of!(EvtchnBindInterdomain, remote_port) == 4);
    assert!(offset_of!(EvtchnBindInterdomain, local_port) == 8);
};
