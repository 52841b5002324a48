//! PVH start of day: `struct hvm_start_info` and the tables it points at
//! (Xen `xen/include/public/arch-x86/hvm/start_info.h`).

use bytemuck::{Pod, Zeroable};

use core::mem::{offset_of, size_of};

/// `XEN_HVM_START_MAGIC_VALUE`.
pub const HVM_START_MAGIC: u32 = 0x336e_c578;

/// `SIF_PRIVILEGED`: the domain may use privileged hypercalls.
pub const SIF_PRIVILEGED: u32 = 1 << 0;
/// `SIF_INITDOMAIN`: the domain is the initial (control) domain.
pub const SIF_INITDOMAIN: u32 = 1 << 1;

/// `struct hvm_start_info`, handed to a PVH kernel in %ebx.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct HvmStartInfo {
    /// [`HVM_START_MAGIC`].
    pub magic: u32,
    /// 0, or 1 when the memory map fields are valid.
    pub version: u32,
    /// `SIF_*` flags.
    pub flags: u32,
    /// Entries in the module list; the first is the initrd.
    pub nr_modules: u32,
    /// Physical address of an array of [`HvmModlistEntry`].
    pub modlist_paddr: u64,
    /// Physical address of the NUL-terminated command line, or 0.
    pub cmdline_paddr: u64,
    /// Physical address of the ACPI RSDP, or 0.
    pub rsdp_paddr: u64,
    /// (v1) Physical address of an array of [`HvmMemmapEntry`].
    pub memmap_paddr: u64,
    /// (v1) Entries in the memory map.
    pub memmap_entries: u32,
    /// Must be zero.
    pub reserved: u32,
}

/// `struct hvm_modlist_entry`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct HvmModlistEntry {
    /// Physical address of the module.
    pub paddr: u64,
    /// Size in bytes.
    pub size: u64,
    /// Physical address of the module's NUL-terminated command line, or 0.
    pub cmdline_paddr: u64,
    /// Must be zero.
    pub reserved: u64,
}

/// `struct hvm_memmap_table_entry`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct HvmMemmapEntry {
    /// Base address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// One of the `HVM_MEMMAP_TYPE_*` values (E820 numbering).
    pub typ: u32,
    /// Must be zero.
    pub reserved: u32,
}

/// Usable RAM.
pub const HVM_MEMMAP_TYPE_RAM: u32 = 1;
/// Reserved.
pub const HVM_MEMMAP_TYPE_RESERVED: u32 = 2;
/// ACPI tables, reclaimable.
pub const HVM_MEMMAP_TYPE_ACPI: u32 = 3;
/// ACPI non-volatile storage.
pub const HVM_MEMMAP_TYPE_NVS: u32 = 4;
/// Unusable (bad) memory.
pub const HVM_MEMMAP_TYPE_UNUSABLE: u32 = 5;
/// Disabled.
pub const HVM_MEMMAP_TYPE_DISABLED: u32 = 6;
/// Persistent memory.
pub const HVM_MEMMAP_TYPE_PMEM: u32 = 7;

const _: () = {
    assert!(size_of::<HvmStartInfo>() == 56);
    assert!(offset_of!(HvmStartInfo, magic) == 0);
    assert!(offset_of!(HvmStartInfo, version) == 4);
    assert!(offset_of!(HvmStartInfo, flags) == 8);
    assert!(offset_of!(HvmStartInfo, nr_modules) == 12);
    assert!(offset_of!(HvmStartInfo, modlist_paddr) == 16);
    assert!(offset_of!(HvmStartInfo, cmdline_paddr) == 24);
    assert!(offset_of!(HvmStartInfo, rsdp_paddr) == 32);
    assert!(offset_of!(HvmStartInfo, memmap_paddr) == 40);
    assert!(offset_of!(HvmStartInfo, memmap_entries) == 48);
    assert!(offset_of!(HvmStartInfo, reserved) == 52);
    assert!(size_of::<HvmModlistEntry>() == 32);
    assert!(offset_of!(HvmModlistEntry, paddr) == 0);
    assert!(offset_of!(HvmModlistEntry, size) == 8);
    assert!(offset_of!(HvmModlistEntry, cmdline_paddr) == 16);
    assert!(size_of::<HvmMemmapEntry>() == 24);
    assert!(offset_of!(HvmMemmapEntry, addr) == 0);
    assert!(offset_of!(HvmMemmapEntry, size) == 8);
    assert!(offset_of!(HvmMemmapEntry, typ) == 16);
};
