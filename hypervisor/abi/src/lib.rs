//! The Xen guest ABI, written once for the hypervisor, dom0-tools and Keel's test guests.
//!
//! Only layouts and constants live here, no logic. Every structure's size and field offsets are asserted at
//! compile time against the public Xen headers (see `shared/docs/xen-abi.md`).
#![no_std]

pub mod cpuid;
pub mod domctl;
pub mod elfnote;
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
/// A domain id (Xen's `domid_t`): 16 bits wide everywhere in the ABI.
pub type DomId = u16;
/// The first domain id reserved for special domains (`DOMID_FIRST_RESERVED`): real domains have ids below it.
pub const DOMID_FIRST_RESERVED: u16 = 0x7ff0;
/// `DOMID_SELF`: the calling domain.
pub const DOMID_SELF: u16 = 0x7ff0;
/// `DOMID_IO`: owner of I/O memory pages.
pub const DOMID_IO: u16 = 0x7ff1;
/// `DOMID_XEN`: the hypervisor itself (owner of its pages, peer of its event channels).
pub const DOMID_XEN: u16 = 0x7ff2;
/// `DOMID_COW`: owner of shared copy-on-write pages.
pub const DOMID_COW: u16 = 0x7ff3;
/// `DOMID_INVALID`: no domain.
pub const DOMID_INVALID: u16 = 0x7ff4;
/// `DOMID_IDLE`: the idle domain.
pub const DOMID_IDLE: u16 = 0x7fff;
