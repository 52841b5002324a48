//! Memory management: physical frames, and (on hardware) the heap and Keel's page tables.

pub mod frame;
pub mod heap;
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
    #[cfg(test)]
    if FRAMES.lock().is_none() {
        return host_frames::alloc();
    }
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

/// References held on frames by mappings outside their owner (a foreign or grant mapping in another domain's
/// p2m): the count, and whether the owner has freed the frame meanwhile. A frame freed while referenced is
/// returned to the allocator only when its last reference goes, so a mapping never outlives its frame.
static FRAME_REFS: spin::Mutex<alloc::collections::BTreeMap<u64, (u32, bool)>> =
    spin::Mutex::new(alloc::collections::BTreeMap::new());

/// Takes a reference on frame `paddr` (see [`FRAME_REFS`]).
pub fn get_frame_ref(paddr: u64) {
    FRAME_REFS.lock().entry(paddr).or_insert((0, false)).0 += 1;
}

/// Drops a reference taken with [`get_frame_ref`]; frees the frame if its owner freed it meanwhile.
pub fn put_frame_ref(paddr: u64) {
    let free = {
        let mut refs = FRAME_REFS.lock();
        let Some(e) = refs.get_mut(&paddr) else {
            crate::error!("frame {paddr:#x}: reference dropped that was never taken");
            return;
        };
        e.0 -= 1;
        if e.0 > 0 {
            return;
        }
        refs.remove(&paddr).is_some_and(|(_, freed)| freed)
    };
    if free {
        free_frame(paddr);
    }
}

/// References held on frame `paddr` now.
pub fn frame_refs(paddr: u64) -> u32 {
    FRAME_REFS.lock().get(&paddr).map_or(0, |e| e.0)
}

/// Returns a frame to the allocator (later, if others still reference it: see [`get_frame_ref`]); a bad free is
/// reported, not ignored.
pub fn free_frame(paddr: u64) {
    {
        let mut refs = FRAME_REFS.lock();
        if let Some(e) = refs.get_mut(&paddr) {
            e.1 = true;
            return;
        }
    }
    #[cfg(test)]
    if host_frames::free(paddr) {
        return;
    }
    if let Some(Err(e)) = with_frames(|a| a.free(paddr)) {
        crate::error!("frame allocator: bad free of {paddr:#x}: {e:?}");
    }
}

/// Frames of usable RAM the allocator manages (free or in use).
pub fn total_frames() -> u64 {
    with_frames(|a| a.total_frames()).unwrap_or(0)
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

/// Host unit tests: frames are page-aligned allocations of the host's heap, whose addresses stand in for physical
/// ones (the pointer is the address, as under Keel's identity map), so domains, their p2m and guest RAM can be built
/// and driven by the real hypercall code. [`host_frames::live`] counts what is allocated, for leak checks.
#[cfg(test)]
pub mod host_frames {
    extern crate std;
    use super::{OutOfFrames, PAGE_SIZE};
    use std::alloc::{alloc_zeroed, dealloc, Layout};
    use std::collections::BTreeSet;
    use std::sync::Mutex;

    static LIVE: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());

    fn layout() -> Layout {
        Layout::from_size_align(PAGE_SIZE as usize, PAGE_SIZE as usize).expect("page layout")
    }

    /// A zeroed host page.
    pub fn alloc() -> Result<u64, OutOfFrames> {
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc_zeroed(layout()) } as u64;
        if p == 0 {
            return Err(OutOfFrames);
        }
        LIVE.lock().expect("host frames").insert(p);
        Ok(p)
    }

    /// Frees a page [`alloc`] gave; false if it did not come from here.
    pub fn free(paddr: u64) -> bool {
        if !LIVE.lock().expect("host frames").remove(&paddr) {
            return false;
        }
        // SAFETY: `paddr` came from `alloc` with this layout and was still live (removed from the set just now).
        unsafe { dealloc(paddr as *mut u8, layout()) };
        true
    }

    /// Whether `paddr` is a live host frame.
    pub fn is_live(paddr: u64) -> bool {
        LIVE.lock().expect("host frames").contains(&paddr)
    }

    /// How many host frames are allocated now (all tests of the process together).
    pub fn live() -> usize {
        LIVE.lock().expect("host frames").len()
    }
}

#[cfg(test)]
mod tests {
    use super::host_frames;

    /// A frame its owner frees while others reference it goes back to the allocator with the last reference;
    /// one nobody references is freed at once, and a reference dropped that was never taken changes nothing.
    #[test]
    fn a_referenced_frame_is_freed_with_its_last_reference() {
        let f = super::alloc_frame().expect("a frame");
        super::get_frame_ref(f);
        super::get_frame_ref(f);
        assert_eq!(super::frame_refs(f), 2);
        super::free_frame(f);
        assert!(host_frames::is_live(f), "freed while referenced");
        super::put_frame_ref(f);
        assert!(host_frames::is_live(f), "freed with a reference left");
        super::put_frame_ref(f);
        assert!(!host_frames::is_live(f), "not freed with the last reference");
        assert_eq!(super::frame_refs(f), 0);
        // Referenced and released before any free: the owner's free is immediate.
        let g = super::alloc_frame().expect("a frame");
        super::get_frame_ref(g);
        super::put_frame_ref(g);
        assert!(host_frames::is_live(g), "a reference going must not free a frame its owner still has");
        super::put_frame_ref(g);
        assert!(host_frames::is_live(g));
        super::free_frame(g);
        assert!(!host_frames::is_live(g));
    }
}
