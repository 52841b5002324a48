//! Hypercall numbers, sub-operations and error numbers (Xen `xen/include/public/xen.h` and friends).
//!
//! 64-bit calling convention: RAX = number; arguments in RDI, RSI, RDX, R10, R8; result in RAX as a negative
//! errno on failure.

use bytemuck::{Pod, Zeroable};

/// Hypercall numbers (`__HYPERVISOR_*`).
pub mod nr {
    pub const SET_TRAP_TABLE: u64 = 0;
    pub const MMU_UPDATE: u64 = 1;
    pub const SET_GDT: u64 = 2;
    pub const STACK_SWITCH: u64 = 3;
    pub const SET_CALLBACKS: u64 = 4;
    pub const FPU_TASKSWITCH: u64 = 5;
    pub const SCHED_OP_COMPAT: u64 = 6;
    pub const PLATFORM_OP: u64 = 7;
    pub const SET_DEBUGREG: u64 = 8;
    pub const GET_DEBUGREG: u64 = 9;
    pub const UPDATE_DESCRIPTOR: u64 = 10;
    pub const MEMORY_OP: u64 = 12;
    pub const MULTICALL: u64 = 13;
    pub const UPDATE_VA_MAPPING: u64 = 14;
    pub const SET_TIMER_OP: u64 = 15;
    pub const EVENT_CHANNEL_OP_COMPAT: u64 = 16;
    pub const XEN_VERSION: u64 = 17;
    pub const CONSOLE_IO: u64 = 18;
    pub const PHYSDEV_OP_COMPAT: u64 = 19;
    pub const GRANT_TABLE_OP: u64 = 20;
    pub const VM_ASSIST: u64 = 21;
    pub const UPDATE_VA_MAPPING_OTHERDOMAIN: u64 = 22;
    /// `iret`: the hypercall-page stub for it is `ud2` for HVM guests.
    pub const IRET: u64 = 23;
    pub const VCPU_OP: u64 = 24;
    pub const SET_SEGMENT_BASE: u64 = 25;
    pub const MMUEXT_OP: u64 = 26;
    pub const XSM_OP: u64 = 27;
    pub const NMI_OP: u64 = 28;
    pub const SCHED_OP: u64 = 29;
    pub const CALLBACK_OP: u64 = 30;
    pub const XENOPROF_OP: u64 = 31;
    pub const EVENT_CHANNEL_OP: u64 = 32;
    pub const PHYSDEV_OP: u64 = 33;
    pub const HVM_OP: u64 = 34;
    pub const SYSCTL: u64 = 35;
    pub const DOMCTL: u64 = 36;
    pub const KEXEC_OP: u64 = 37;
    pub const ARGO_OP: u64 = 39;
    pub const XENPMU_OP: u64 = 40;
    pub const DM_OP: u64 = 41;
    pub const HYPFS_OP: u64 = 42;
}

/// Xen errno values, as [`crate::Errno`] constants (kept here so that `use hypercall::errno::*` reads as before).
pub mod errno {
    pub use crate::errno::consts::*;
    pub use crate::errno::Errno;
}

/// `xen_version` sub-commands (`XENVER_*`).
pub mod xenver {
    pub const VERSION: u64 = 0;
    pub const EXTRAVERSION: u64 = 1;
    pub const COMPILE_INFO: u64 = 2;
    pub const CAPABILITIES: u64 = 3;
    pub const CHANGESET: u64 = 4;
    pub const PLATFORM_PARAMETERS: u64 = 5;
    pub const GET_FEATURES: u64 = 6;
    pub const PAGESIZE: u64 = 7;
    pub const GUEST_HANDLE: u64 = 8;
    pub const COMMANDLINE: u64 = 9;
    pub const BUILD_ID: u64 = 10;
    /// `xen_extraversion_t` length.
    pub const EXTRAVERSION_LEN: usize = 16;
}

/// `sched_op` sub-commands (`SCHEDOP_*`).
pub mod schedop {
    pub const YIELD: u64 = 0;
    pub const BLOCK: u64 = 1;
    pub const SHUTDOWN: u64 = 2;
    pub const POLL: u64 = 3;
    pub const REMOTE_SHUTDOWN: u64 = 4;
    pub const SHUTDOWN_CODE: u64 = 5;
    pub const WATCHDOG: u64 = 6;
}

/// Shutdown reasons (`SHUTDOWN_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ShutdownReason {
    Poweroff = 0,
    Reboot = 1,
    Suspend = 2,
    Crash = 3,
    Watchdog = 4,
    SoftReset = 5,
}

impl ShutdownReason {
    /// Decodes a guest-supplied reason.
    pub fn from_raw(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Poweroff,
            1 => Self::Reboot,
            2 => Self::Suspend,
            3 => Self::Crash,
            4 => Self::Watchdog,
            5 => Self::SoftReset,
            _ => return None,
        })
    }

    /// The word Xen's tools print.
    pub fn name(self) -> &'static str {
        match self {
            Self::Poweroff => "poweroff",
            Self::Reboot => "reboot",
            Self::Suspend => "suspend",
            Self::Crash => "crash",
            Self::Watchdog => "watchdog",
            Self::SoftReset => "soft_reset",
        }
    }
}

/// `console_io` commands.
pub mod consoleio {
    pub const WRITE: u64 = 0;
    pub const READ: u64 = 1;
}

/// `vcpu_op` commands (`VCPUOP_*`).
pub mod vcpuop {
    pub const INITIALISE: u64 = 0;
    pub const UP: u64 = 1;
    pub const DOWN: u64 = 2;
    pub const IS_UP: u64 = 3;
    pub const GET_RUNSTATE_INFO: u64 = 4;
    pub const REGISTER_RUNSTATE_MEMORY_AREA: u64 = 5;
    pub const SET_PERIODIC_TIMER: u64 = 6;
    pub const STOP_PERIODIC_TIMER: u64 = 7;
    pub const SET_SINGLESHOT_TIMER: u64 = 8;
    pub const STOP_SINGLESHOT_TIMER: u64 = 9;
    pub const REGISTER_VCPU_INFO: u64 = 10;
    pub const SEND_NMI: u64 = 11;
    pub const GET_PHYSID: u64 = 12;
    pub const REGISTER_VCPU_TIME_MEMORY_AREA: u64 = 13;
    /// `VCPU_SSHOTTMR_future`: fail with -ETIME if the deadline has passed.
    pub const SSHOTTMR_FUTURE: u32 = 1;
}

/// `struct vcpu_set_singleshot_timer`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct VcpuSetSingleshotTimer {
    /// Absolute Xen system time in ns.
    pub timeout_abs_ns: u64,
    /// `VCPU_SSHOTTMR_*`.
    pub flags: u32,
    /// Padding.
    pub pad: u32,
}

/// `struct multicall_entry` (`xen.h`): one hypercall of a `multicall` batch; the hypervisor writes its return
/// value into `result`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct MulticallEntry {
    pub op: u64,
    pub result: u64,
    pub args: [u64; 6],
}

/// `struct vcpu_set_periodic_timer`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct VcpuSetPeriodicTimer {
    /// Period in ns.
    pub period_ns: u64,
}

/// `struct sched_shutdown`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SchedShutdown {
    /// A [`ShutdownReason`] value.
    pub reason: u32,
}

/// `xen_compile_info_t` (`XENVER_compile_info`): NUL-terminated strings.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct XenCompileInfo {
    pub compiler: [u8; 64],
    pub compile_by: [u8; 16],
    pub compile_domain: [u8; 32],
    pub compile_date: [u8; 32],
}

/// `xen_platform_parameters_t` (`XENVER_platform_parameters`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct XenPlatformParameters {
    /// Where the hypervisor's own address range starts in a PV guest's view (x86_64:
    /// [`HYPERVISOR_VIRT_START`]).
    pub virt_start: u64,
}

/// `HYPERVISOR_VIRT_START` of x86_64 Xen, as `XENVER_platform_parameters` reports it.
pub const HYPERVISOR_VIRT_START: u64 = 0xffff_8000_0000_0000;

/// `struct xen_feature_info`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct XenFeatureInfo {
    /// Which 32-bit word of the feature map.
    pub submap_idx: u32,
    /// The word (out).
    pub submap: u32,
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<MulticallEntry>() == 64);
    assert!(offset_of!(MulticallEntry, result) == 8);
    assert!(offset_of!(MulticallEntry, args) == 16);
    assert!(size_of::<VcpuSetSingleshotTimer>() == 16);
    assert!(offset_of!(VcpuSetSingleshotTimer, flags) == 8);
    assert!(size_of::<VcpuSetPeriodicTimer>() == 8);
    assert!(size_of::<SchedShutdown>() == 4);
    assert!(size_of::<XenFeatureInfo>() == 8);
    assert!(size_of::<XenCompileInfo>() == 144);
    assert!(offset_of!(XenCompileInfo, compile_by) == 64);
    assert!(offset_of!(XenCompileInfo, compile_domain) == 80);
    assert!(offset_of!(XenCompileInfo, compile_date) == 112);
    assert!(size_of::<XenPlatformParameters>() == 8);
    assert!(offset_of!(XenFeatureInfo, submap) == 4);
};
