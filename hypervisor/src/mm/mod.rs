//! Memory management: physical frames, and (on hardware) the heap and Keel's page tables.

pub mod frame;
pub mod p2m;

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

/// Allocates `pages` contiguous zeroed frames (below 4 GiB) and returns the first one's physical address.
pub fn alloc_contiguous_zeroed(pages: u64) -> Result<u64, OutOfFrames> {
    let p = with_frames(|a| a.alloc_contiguous(pages, PAGE_SIZE, 1 << 32)).ok_or(OutOfFrames)??;
    // SAFETY: the frames were just allocated (exclusively ours) and all RAM is identity-mapped.
    unsafe { core::ptr::write_bytes(p as *mut u8, 0, (pages * PAGE_SIZE) as usize) };
    Ok(p)
}

/// Returns a frame to the allocator; a bad free is reported, not ignored.
pub fn free_frame(paddr: u64) {
    if let Some(Err(e)) = with_frames(|a| a.free(paddr)) {
        crate::error!("frame allocator: bad free of {paddr:#x}: {e:?}");
    }
}

/// Free frames now.
pub fn free_frames() -> u64 {
    with_frames(|a| a.free_frames()).unwrap_or(0)
}

/// The frame source domains use for their nested page tables and RAM: the machine allocator.
pub struct MachineFrames;

impl p2m::FrameSource for MachineFrames {
    fn alloc(&mut self) -> Result<u64, OutOfFrames> {
        alloc_frame()
    }
    fn free(&mut self, paddr: u64) {
        free_frame(paddr)
    }
    fn table(&mut self, paddr: u64) -> &mut [u64; 512] {
        // SAFETY: the p2m only asks for tables it allocated from this source: page-aligned frames it owns,
        // identity-mapped.
        unsafe { &mut *(paddr as *mut [u64; 512]) }
    }
}
