//! Memory management: physical frames, and (on hardware) the heap and Keel's page tables.

pub mod frame;

/// Size of a base page.
pub const PAGE_SIZE: u64 = 4096;

/// Rounds `v` down to a multiple of `align` (a power of two).
pub const fn align_down(v: u64, align: u64) -> u64 {
    v & !(align - 1)
}

/// Rounds `v` up to a multiple of `align` (a power of two), saturating at the top of the address space.
pub const fn align_up(v: u64, align: u64) -> u64 {
    match v.checked_add(align - 1) {
        Some(x) => x & !(align - 1),
        None => u64::MAX & !(align - 1),
    }
}
