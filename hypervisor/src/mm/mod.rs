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
        None => !(align - 1),
    }
}

use frame::{FrameAllocator, OutOfFrames};

/// The machine's frame allocator, installed once during boot.
static FRAMES: spin::Mutex<Option<FrameAllocator>> = spin::Mutex::new(None);

/// Installs the frame allocator.
pub fn install_frames(a: FrameAllocator) {
    *FRAMES.lock() = Some(a);
}

/// Runs `f` on the frame allocator.
pub fn with_frames<R>(f: impl FnOnce(&mut FrameAllocator) -> R) -> Option<R> {
    FRAMES.lock().as_mut().map(f)
}

/// Allocates one zeroed frame (identity-mapped) and returns its physical address.
pub fn alloc_frame() -> Result<u64, OutOfFrames> {
    let p = with_frames(|a| a.alloc()).ok_or(OutOfFrames)??;
    // SAFETY: the frame was just allocated (exclusively ours) and all RAM is identity-mapped.
    unsafe { core::ptr::write_bytes(p as *mut u8, 0, PAGE_SIZE as usize) };
    Ok(p)
}
