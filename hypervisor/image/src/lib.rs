//! Guest images for Keel's PVH domain builders, one crate for both of them: the hypervisor's dom0 builder
//! (`hypervisor/src/dom0/builder.rs`, `hypervisor/src/xtf.rs`) and dom0-tools' domain builder (`keel-builder`).
//!
//! Nothing here knows about a domain, a p2m or a hypercall: it turns bytes into placements and placements back
//! into bytes.
//! - [`kernel`]: a kernel image (a bzImage with an xz, gzip or zstd payload, or an ELF `vmlinux` of either ELF
//!   class with the PVH note) becomes an entry point and the segments to place: (guest-physical address, bytes,
//!   zero fill).
//! - [`start_info`]: `hvm_start_info` (v1) with its module list, command lines and memory map, as the bytes of
//!   the area at a given guest-physical address.
//! - [`acpi`]: RSDP, XSDT, FADT, MADT and DSDT for `n` vCPUs, as bytes at a given guest-physical address.
//! - [`host_acpi`]: the initial domain's view of the host's ACPI tables: a new RSDP, XSDT and MADT over the
//!   host tables it may see.
//! - [`host_map`]: that domain's physical map in the host's e820 shape.
//!
//! A malformed, truncated or hostile image is an error that names the problem: nothing here panics on bad input,
//! and every allocation is bounded by the caller or by a constant ([`bzimage::MAX_UNPACKED`]).

#![no_std]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod acpi;
pub mod bzimage;
pub mod elf;
pub mod host_acpi;
pub mod host_map;
pub mod kernel;
pub mod start_info;

use alloc::string::String;
use core::fmt;

/// Why an image could not be parsed, placed or described: one line naming the problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageError(pub String);

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn err<T>(s: impl Into<String>) -> Result<T, ImageError> {
    Err(ImageError(s.into()))
}

/// 4 KiB: the page size of every layout here.
pub const PAGE_SIZE: u64 = 4096;
