//! Xen ELF note types (`XEN_ELFNOTE_*`, Xen `xen/include/public/elfnote.h`): the notes of name "Xen" in a
//! kernel image's `.note.Xen` section that tell a loader how to start it.

/// The name every Xen note carries (`"Xen\0"`).
pub const NAME: &[u8] = b"Xen";

/// `XEN_ELFNOTE_INFO`.
pub const INFO: u32 = 0;
/// `XEN_ELFNOTE_ENTRY`: the PV entry point (virtual).
pub const ENTRY: u32 = 1;
/// `XEN_ELFNOTE_HYPERCALL_PAGE`.
pub const HYPERCALL_PAGE: u32 = 2;
/// `XEN_ELFNOTE_VIRT_BASE`.
pub const VIRT_BASE: u32 = 3;
/// `XEN_ELFNOTE_PADDR_OFFSET`.
pub const PADDR_OFFSET: u32 = 4;
/// `XEN_ELFNOTE_XEN_VERSION`.
pub const XEN_VERSION: u32 = 5;
/// `XEN_ELFNOTE_GUEST_OS`.
pub const GUEST_OS: u32 = 6;
/// `XEN_ELFNOTE_GUEST_VERSION`.
pub const GUEST_VERSION: u32 = 7;
/// `XEN_ELFNOTE_LOADER`.
pub const LOADER: u32 = 8;
/// `XEN_ELFNOTE_PAE_MODE`.
pub const PAE_MODE: u32 = 9;
/// `XEN_ELFNOTE_FEATURES`.
pub const FEATURES: u32 = 10;
/// `XEN_ELFNOTE_BSD_SYMTAB`.
pub const BSD_SYMTAB: u32 = 11;
/// `XEN_ELFNOTE_HV_START_LOW`.
pub const HV_START_LOW: u32 = 12;
/// `XEN_ELFNOTE_L1_MFN_VALID`.
pub const L1_MFN_VALID: u32 = 13;
/// `XEN_ELFNOTE_SUSPEND_CANCEL`.
pub const SUSPEND_CANCEL: u32 = 14;
/// `XEN_ELFNOTE_INIT_P2M`.
pub const INIT_P2M: u32 = 15;
/// `XEN_ELFNOTE_MOD_START_PFN`.
pub const MOD_START_PFN: u32 = 16;
/// `XEN_ELFNOTE_SUPPORTED_FEATURES`.
pub const SUPPORTED_FEATURES: u32 = 17;
/// `XEN_ELFNOTE_PHYS32_ENTRY`: the PVH entry point, a 32-bit physical address entered in protected mode with
/// paging off (the only note Keel's loader needs, and the one Keel and its test guests carry).
pub const PHYS32_ENTRY: u32 = 18;
