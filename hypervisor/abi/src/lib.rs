//! The Xen guest ABI, written once for the hypervisor, dom0-tools and Keel's test guests.
//!
//! Only layouts and constants live here, no logic. Every structure's size and field offsets are asserted at
//! compile time against the public Xen headers (see `shared/docs/xen-abi.md`).
#![no_std]

pub mod cpuid;
pub mod domctl;
pub mod errno;
pub mod hypercall;
pub mod io;
pub mod shared_info;
pub mod start_info;
pub mod sysctl;

pub use bytemuck::{Pod, Zeroable};
pub use errno::Errno;

/// Keel reports itself as this Xen version (major, minor) to guests.
pub const XEN_VERSION: (u32, u32) = (4, 17);
/// `DOMID_SELF`.
pub const DOMID_SELF: u16 = 0x7ff0;
/// `DOMID_XEN`: the hypervisor itself, as the peer of an event channel or the owner of a frame.
pub const DOMID_XEN: u16 = 0x7ff2;
