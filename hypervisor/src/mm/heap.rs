//! Keel's heap: a small static bootstrap region, then chunks of contiguous frames taken from the frame allocator
//! when an allocation does not fit, as Xen's heap grows from its page allocator.
//!
//! The heap is a list of up to [`MAX_REGIONS`] regions, each a `linked_list_allocator::Heap`, searched in order; a
//! free goes to the region that holds the pointer. A chunk that starts where a region ends extends that region
//! instead of taking a new slot. Chunks grow with the heap (an eighth of its size, at least the minimum chunk), so
//! 64 regions reach far beyond any machine's RAM.
//!
//! Running out is never a panic here: `alloc` returns null and logs why (the request, the heap's size, what the
//! frame allocator could not give). Rust turns a null from the global allocator into a panic only where the caller
//! used an infallible API (`Vec::push`, `vec![]`); code whose sizes a guest controls uses `try_reserve` instead.
//!
//! Lock order: the heap lock is never held while the chunk source (the frame allocator's lock) is called, so a
//! frame-allocator path that allocated would not deadlock against a growing heap. The frame allocator does not
//! allocate after boot (its bitmap is made once, in [`super::frame::FrameAllocator::new`]).

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{null_mut, NonNull};
use core::sync::atomic::{AtomicU64, Ordering};
use linked_list_allocator::Heap;

/// Most regions the heap keeps (the bootstrap region and the early region count).
pub const MAX_REGIONS: usize = 64;

/// The smallest chunk taken from the frame allocator on bare metal.
pub const MIN_CHUNK: usize = 2 << 20;

/// Alignment asked for first (so a chunk does not break up a 2 MiB run domains could map with a large page).
pub const CHUNK_ALIGN: usize = 2 << 20;

const PAGE: usize = super::PAGE_SIZE as usize;

/// Where the heap's memory comes from once its first regions are full.
pub trait ChunkSource {
    /// `bytes` (a multiple of 4 KiB) of contiguous, mapped memory aligned to `align`, owned by the heap from now
    /// on; its address, or `None` when there is none.
    fn take(&self, bytes: usize, align: usize) -> Option<usize>;
    /// Gives back a chunk [`take`](Self::take) returned and the heap could not use.
    fn give_back(&self, base: usize, bytes: usize);
    /// Bytes the source could still give (for messages).
    fn available(&self) -> u64;
}

/// The machine's frame allocator as a chunk source (nothing before it is installed).
pub struct MachineChunks;

impl ChunkSource for MachineChunks {
    fn take(&self, bytes: usize, align: usize) -> Option<usize> {
        let pages = bytes.div_ceil(PAGE) as u64;
        let p = super::with_frames(|a| a.alloc_contiguous(pages, align as u64, u64::MAX))?.ok()?;
        usize::try_from(p).ok()
    }
    fn give_back(&self, base: usize, bytes: usize) {
        for page in (base..base + bytes).step_by(PAGE) {
            super::free_frame(page as u64);
        }
    }
    fn available(&self) -> u64 {
        super::free_frames() * super::PAGE_SIZE
    }
}

/// Keel's global allocator on bare metal. `main.rs` gives it the bootstrap area and the early region; it grows
/// from the frame allocator once that is installed.
#[cfg(target_os = "none")]
#[global_allocator]
pub static HEAP: GrowingHeap<MachineChunks> = GrowingHeap::new(MachineChunks, MIN_CHUNK, CHUNK_ALIGN);

/// The global heap's figures.
#[cfg(target_os = "none")]
pub fn stats() -> Option<HeapStats> {
    Some(HEAP.stats())
}

/// The global heap's figures: none on the host, whose own allocator is the global one.
#[cfg(not(target_os = "none"))]
pub fn stats() -> Option<HeapStats> {
    None
}

/// Figures for the start-up log and the debug keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapStats {
    /// Bytes the heap manages, all regions together.
    pub size: usize,
    /// Bytes handed out now.
    pub used: usize,
    /// Regions in use.
    pub regions: usize,
    /// Bytes taken from the chunk source so far.
    pub grown: usize,
    /// Allocations that failed (returned null).
    pub failures: u64,
}

struct Regions {
    heaps: [Heap; MAX_REGIONS],
    /// `[start, end)` of each region as given (the allocator may round its own bottom up).
    spans: [(usize, usize); MAX_REGIONS],
    count: usize,
    grown: usize,
}

impl Regions {
    fn size(&self) -> usize {
        self.spans[..self.count].iter().map(|(s, e)| e - s).sum()
    }

    fn alloc(&mut self, layout: Layout) -> Option<NonNull<u8>> {
        self.heaps[..self.count].iter_mut().find_map(|h| h.allocate_first_fit(layout).ok())
    }

    /// Adds `[base, base + size)`: extends the region that ends at `base`, or takes a new slot. False when every
    /// slot is taken.
    ///
    /// # Safety
    /// The memory is mapped, unused by anything else and stays the heap's for good.
    unsafe fn add(&mut self, base: usize, size: usize) -> bool {
        if let Some(i) = self.spans[..self.count].iter().position(|&(_, e)| e == base) {
            // SAFETY: the new memory starts right where region `i` ends and is the heap's (the caller's promise).
            unsafe { self.heaps[i].extend(size) };
            self.spans[i].1 += size;
            return true;
        }
        if self.count == MAX_REGIONS {
            return false;
        }
        // SAFETY: as promised by the caller; the slot is unused (index `count`).
        unsafe { self.heaps[self.count].init(base as *mut u8, size) };
        self.spans[self.count] = (base, base + size);
        self.count += 1;
        true
    }
}

/// The growing heap; Keel's global allocator on bare metal.
pub struct GrowingHeap<S> {
    regions: spin::Mutex<Regions>,
    source: S,
    min_chunk: usize,
    chunk_align: usize,
    failures: AtomicU64,
    bad_frees: AtomicU64,
}

/// How many bytes to ask the source for so that `layout` fits in a fresh region, the heap being `size` bytes now:
/// the request with room for its alignment and the allocator's bookkeeping, at least `min_chunk` and an eighth of
/// the heap, in whole pages. `None` when that overflows.
pub fn chunk_size(layout: Layout, size: usize, min_chunk: usize) -> Option<usize> {
    let need = layout.size().checked_add(layout.align())?.checked_add(64)?;
    let want = need.max(min_chunk).max(size / 8);
    want.checked_add(PAGE - 1).map(|w| w & !(PAGE - 1))
}

impl<S: ChunkSource> GrowingHeap<S> {
    /// An empty heap over `source`, growing by at least `min_chunk` bytes at a time, in whole `chunk_align`
    /// (a power of two, at least 4 KiB) aligned runs where the source has them.
    pub const fn new(source: S, min_chunk: usize, chunk_align: usize) -> Self {
        Self {
            regions: spin::Mutex::new(Regions {
                heaps: [const { Heap::empty() }; MAX_REGIONS],
                spans: [(0, 0); MAX_REGIONS],
                count: 0,
                grown: 0,
            }),
            source,
            min_chunk,
            chunk_align,
            failures: AtomicU64::new(0),
            bad_frees: AtomicU64::new(0),
        }
    }

    /// Gives the heap `[base, base + size)` (the bootstrap area, the early region). False when every region slot
    /// is taken.
    ///
    /// # Safety
    /// The memory is mapped, at least 64 bytes, used by nothing else, and the heap's for the rest of the program.
    pub unsafe fn add_region(&self, base: *mut u8, size: usize) -> bool {
        // SAFETY: forwarded from the caller.
        unsafe { self.regions.lock().add(base as usize, size) }
    }

    /// The heap's figures now.
    pub fn stats(&self) -> HeapStats {
        let r = self.regions.lock();
        HeapStats {
            size: r.size(),
            used: r.heaps[..r.count].iter().map(Heap::used).sum(),
            regions: r.count,
            grown: r.grown,
            failures: self.failures.load(Ordering::Relaxed),
        }
    }

    /// Frees that named no region (a bug elsewhere in Keel; the memory is leaked, not corrupted).
    pub fn bad_frees(&self) -> u64 {
        self.bad_frees.load(Ordering::Relaxed)
    }

    /// Takes a chunk that fits `layout` from the source and adds it. The heap lock is not held while the source
    /// runs.
    fn grow(&self, layout: Layout) -> bool {
        let size = self.regions.lock().size();
        let Some(bytes) = chunk_size(layout, size, self.min_chunk) else {
            return false;
        };
        // Whole aligned runs first; on a fragmented machine, any run of pages that fits.
        let align = self.chunk_align;
        let aligned = bytes.checked_add(align - 1).map(|b| b & !(align - 1));
        let got = aligned
            .and_then(|b| self.source.take(b, align).map(|p| (p, b)))
            .or_else(|| self.source.take(bytes, PAGE).map(|p| (p, bytes)));
        let Some((base, bytes)) = got else {
            return false;
        };
        let mut r = self.regions.lock();
        // SAFETY: the source gave this chunk to the heap, mapped and unused.
        if unsafe { r.add(base, bytes) } {
            r.grown += bytes;
            true
        } else {
            drop(r);
            self.source.give_back(base, bytes);
            false
        }
    }

    /// Says why an allocation failed (rate-limited: a guest may cause many).
    fn report_failure(&self, layout: Layout) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n > 8 && !n.is_power_of_two() {
            return;
        }
        let s = self.stats();
        crate::error!(
            "heap exhausted: {} bytes (align {}) requested; heap {} KiB in {} region(s), {} KiB used; \
             {} KiB left to grow from; failure #{}",
            layout.size(),
            layout.align(),
            s.size >> 10,
            s.regions,
            s.used >> 10,
            self.source.available() >> 10,
            n
        );
    }
}

// SAFETY: every region holds memory only this heap hands out; a pointer is returned to the region whose span holds
// it, under the same lock that allocated it, so no block is handed out twice.
unsafe impl<S: ChunkSource> GlobalAlloc for GrowingHeap<S> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(p) = self.regions.lock().alloc(layout) {
            return p.as_ptr();
        }
        if self.grow(layout) {
            if let Some(p) = self.regions.lock().alloc(layout) {
                return p.as_ptr();
            }
        }
        self.report_failure(layout);
        null_mut()
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(nn) = NonNull::new(ptr) else {
            return;
        };
        let mut r = self.regions.lock();
        let a = ptr as usize;
        let count = r.count;
        match r.spans[..count].iter().position(|&(s, e)| (s..e).contains(&a)) {
            // SAFETY: `ptr` lies in region `i`, and only region `i` hands out pointers in its span; GlobalAlloc's
            // caller promises it came from `alloc` with this layout.
            Some(i) => unsafe { r.heaps[i].deallocate(nn, layout) },
            None => {
                drop(r);
                self.bad_frees.fetch_add(1, Ordering::Relaxed);
                crate::error!("heap: free of {a:#x} ({} bytes), which no heap region holds", layout.size());
            }
        }
    }
}

/// `len` bytes of `fill`, or an error when the heap cannot give them: for buffers whose size a guest chooses, so
/// that running out is an errno for the guest instead of Rust's allocation-failure panic.
pub fn try_filled(len: usize, fill: u8) -> Result<alloc::vec::Vec<u8>, alloc::collections::TryReserveError> {
    let mut v = alloc::vec::Vec::new();
    v.try_reserve_exact(len)?;
    v.resize(len, fill);
    Ok(v)
}

/// Holds `count` buffers of `piece` bytes at once, each filled with its own pattern and checked after all are
/// allocated, then frees them: the bytes held, or the first allocation that failed (for `selftest=heap`).
pub fn exercise(count: usize, piece: usize) -> Result<usize, &'static str> {
    let mut held = alloc::vec::Vec::new();
    held.try_reserve_exact(count).map_err(|_| "no room for the list")?;
    for i in 0..count {
        held.push(try_filled(piece, i as u8).map_err(|_| "a buffer could not be allocated")?);
    }
    if held.iter().enumerate().any(|(i, b)| b.iter().any(|&x| x != i as u8)) {
        return Err("a buffer was overwritten");
    }
    Ok(held.iter().map(|b| b.len()).sum())
}

/// The highest `align`-aligned start of `size` bytes that lie inside one of the `usable` ranges, below `limit`, and
/// touch none of the `reserved` ones: where the early heap region goes before the frame allocator exists.
pub fn find_free_range(
    usable: &[(u64, u64)],
    reserved: &[(u64, u64)],
    size: u64,
    align: u64,
    limit: u64,
) -> Option<u64> {
    let mut best: Option<u64> = None;
    for &(s, e) in usable {
        let mut end = e.min(limit);
        while let Some(start) = end.checked_sub(size).map(|x| super::align_down(x, align)) {
            if start < s {
                break;
            }
            let stop = start + size;
            let blocking = reserved.iter().filter(|&&(rs, re)| rs < stop && start < re).map(|&(rs, _)| rs).min();
            match blocking {
                None => {
                    best = best.max(Some(start));
                    break;
                }
                // Retry below the lowest range in the way (the end strictly decreases).
                Some(rs) => end = rs,
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::alloc::{alloc_zeroed, Layout};
    use std::sync::Mutex;
    use std::vec::Vec;

    /// Leaks an aligned host buffer (the heap keeps its memory for good).
    fn leak(bytes: usize, align: usize) -> usize {
        let l = Layout::from_size_align(bytes, align).unwrap();
        // SAFETY: non-zero size.
        let p = unsafe { alloc_zeroed(l) };
        assert!(!p.is_null());
        p as usize
    }

    /// A source over one host buffer, handed out front to back (so chunks are adjacent unless `gap` pages are
    /// skipped between them), that stops after `budget` bytes.
    struct Arena {
        next: Mutex<usize>,
        end: usize,
        gap: usize,
        /// Larger alignments are refused (a fragmented machine).
        max_align: usize,
        budget: Mutex<usize>,
        taken: Mutex<Vec<(usize, usize)>>,
        returned: Mutex<Vec<(usize, usize)>>,
    }

    impl Arena {
        fn new(bytes: usize, gap: usize, budget: usize) -> Self {
            let base = leak(bytes, CHUNK_ALIGN);
            Self {
                next: Mutex::new(base),
                end: base + bytes,
                gap,
                max_align: CHUNK_ALIGN,
                budget: Mutex::new(budget),
                taken: Mutex::new(Vec::new()),
                returned: Mutex::new(Vec::new()),
            }
        }
    }

    impl ChunkSource for Arena {
        fn take(&self, bytes: usize, align: usize) -> Option<usize> {
            let mut budget = self.budget.lock().unwrap();
            let mut next = self.next.lock().unwrap();
            let start = next.next_multiple_of(align);
            if bytes > *budget || start + bytes > self.end || align > self.max_align {
                return None;
            }
            *budget -= bytes;
            *next = start + bytes + self.gap;
            self.taken.lock().unwrap().push((start, bytes));
            Some(start)
        }
        fn give_back(&self, base: usize, bytes: usize) {
            self.returned.lock().unwrap().push((base, bytes));
        }
        fn available(&self) -> u64 {
            *self.budget.lock().unwrap() as u64
        }
    }

    const KB: usize = 1024;

    fn heap(source: Arena, boot: usize) -> GrowingHeap<Arena> {
        let h = GrowingHeap::new(source, 64 * KB, 64 * KB);
        // SAFETY: a leaked host buffer (a page longer, so no later buffer can adjoin the region), the heap's for
        // good.
        assert!(unsafe { h.add_region(leak(boot + 4096, 4096) as *mut u8, boot) });
        h
    }

    fn page() -> Layout {
        Layout::from_size_align(4096, 8).unwrap()
    }

    #[test]
    fn grows_from_the_source_when_the_bootstrap_region_is_full() {
        let h = heap(Arena::new(8 << 20, 0, usize::MAX), 16 * KB);
        // SAFETY: valid layouts; the pointers are checked and freed with the same layout.
        let ptrs: Vec<*mut u8> = (0..64).map(|_| unsafe { h.alloc(page()) }).collect();
        assert!(ptrs.iter().all(|p| !p.is_null()));
        let s = h.stats();
        assert!(s.size >= 64 * 4096 && s.grown > 0, "{s:?}");
        assert_eq!(s.used, 64 * 4096);
        // Adjacent chunks extend one region: the bootstrap region plus one.
        assert_eq!(s.regions, 2);
        assert_eq!(h.source.taken.lock().unwrap().len(), s.grown / (64 * KB));
        for p in ptrs {
            // SAFETY: allocated above with this layout.
            unsafe { h.dealloc(p, page()) };
        }
        assert_eq!(h.stats().used, 0);
        assert_eq!(h.bad_frees(), 0);
    }

    #[test]
    fn frees_go_to_the_region_that_holds_the_pointer() {
        // A gap between chunks: each chunk is its own region.
        let h = heap(Arena::new(8 << 20, 4096, usize::MAX), 8 * KB);
        let big = Layout::from_size_align(48 * KB, 8).unwrap();
        // SAFETY: valid layouts, freed below with the same ones.
        let (a, b, c) = unsafe { (h.alloc(page()), h.alloc(big), h.alloc(big)) };
        assert!(!a.is_null() && !b.is_null() && !c.is_null());
        let s = h.stats();
        assert_eq!(s.regions, 3, "{s:?}");
        let taken = h.source.taken.lock().unwrap().clone();
        let holds = |p: *mut u8| taken.iter().position(|&(s, n)| (s..s + n).contains(&(p as usize)));
        assert_eq!((holds(a), holds(b), holds(c)), (None, Some(0), Some(1)));
        // SAFETY: allocated above with these layouts.
        unsafe { h.dealloc(c, big) };
        assert_eq!(h.stats().used, 4096 + 48 * KB);
        // SAFETY: as above.
        unsafe { h.dealloc(b, big) };
        // SAFETY: as above.
        unsafe { h.dealloc(a, page()) };
        assert_eq!(h.stats().used, 0);
        // The freed space is reused: no new chunk.
        // SAFETY: valid layout.
        let d = unsafe { h.alloc(big) };
        assert!(!d.is_null());
        assert_eq!(h.source.taken.lock().unwrap().len(), 2);
        assert_eq!(h.bad_frees(), 0);
    }

    #[test]
    fn a_failing_source_makes_alloc_return_null_not_panic() {
        let h = heap(Arena::new(1 << 20, 0, 0), 16 * KB);
        // SAFETY: valid layout.
        let p = unsafe { h.alloc(Layout::from_size_align(64 * KB, 8).unwrap()) };
        assert!(p.is_null());
        assert_eq!(h.stats().failures, 1);
        // What fits still works afterwards.
        // SAFETY: valid layout.
        let q = unsafe { h.alloc(page()) };
        assert!(!q.is_null());
        // A huge request (the size a guest could name) fails cleanly too, without overflow.
        // SAFETY: valid layout.
        let r = unsafe { h.alloc(Layout::from_size_align(isize::MAX as usize - 64, 8).unwrap()) };
        assert!(r.is_null());
        assert_eq!(h.stats().failures, 2);
    }

    #[test]
    fn large_and_aligned_requests_get_a_chunk_that_fits() {
        let h = heap(Arena::new(8 << 20, 0, usize::MAX), 16 * KB);
        let l = Layout::from_size_align(300 * KB, 64 * KB).unwrap();
        // SAFETY: valid layout.
        let p = unsafe { h.alloc(l) };
        assert!(!p.is_null());
        assert_eq!(p as usize % (64 * KB), 0);
        // SAFETY: allocated above with `l`.
        unsafe { h.dealloc(p, l) };
    }

    #[test]
    fn a_chunk_that_no_slot_can_take_goes_back() {
        let h = heap(Arena::new(1 << 20, 0, usize::MAX), 4 * KB);
        for _ in 1..MAX_REGIONS {
            // SAFETY: leaked host buffers with a page between them (not adjacent), the heap's for good.
            assert!(unsafe { h.add_region(leak(8 * KB, 4096) as *mut u8, 4 * KB) });
        }
        assert_eq!(h.stats().regions, MAX_REGIONS);
        // SAFETY: as above.
        assert!(!unsafe { h.add_region(leak(8 * KB, 4096) as *mut u8, 4 * KB) });
        // SAFETY: valid layout.
        let p = unsafe { h.alloc(Layout::from_size_align(16 * KB, 8).unwrap()) };
        assert!(p.is_null());
        let taken = h.source.taken.lock().unwrap().clone();
        assert_eq!(*h.source.returned.lock().unwrap(), taken);
        assert_eq!(h.stats().grown, 0);
    }

    #[test]
    fn a_fragmented_source_still_gives_an_unaligned_chunk() {
        let mut a = Arena::new(8 << 20, 0, usize::MAX);
        a.max_align = 4096;
        let h = heap(a, 4 * KB);
        let l = Layout::from_size_align(100 * KB, 8).unwrap();
        // SAFETY: valid layout.
        let p = unsafe { h.alloc(l) };
        assert!(!p.is_null());
        // The exact need in pages, not rounded up to the 64 KiB alignment asked for first.
        assert_eq!(h.source.taken.lock().unwrap()[0].1, chunk_size(l, 4 * KB, 64 * KB).unwrap());
        assert_eq!(h.stats().grown, 104 * KB);
    }

    #[test]
    fn a_foreign_free_is_counted_not_applied() {
        let h = heap(Arena::new(1 << 20, 0, 0), 16 * KB);
        let mut x = 0u64;
        // SAFETY: the pointer is outside every region, so the heap does not touch it.
        unsafe { h.dealloc(core::ptr::addr_of_mut!(x).cast(), Layout::new::<u64>()) };
        assert_eq!(h.bad_frees(), 1);
        assert_eq!(x, 0);
    }

    #[test]
    fn exercise_holds_what_it_asked_for() {
        assert_eq!(exercise(3, 1000), Ok(3000));
    }

    #[test]
    fn try_filled_fails_as_a_value() {
        assert_eq!(try_filled(3, 0xff).unwrap(), [0xff; 3]);
        assert!(try_filled(isize::MAX as usize, 0).is_err());
    }

    #[test]
    fn chunks_grow_with_the_heap() {
        let l = Layout::from_size_align(16, 8).unwrap();
        assert_eq!(chunk_size(l, 0, MIN_CHUNK), Some(MIN_CHUNK));
        assert_eq!(chunk_size(l, 64 << 20, MIN_CHUNK), Some(8 << 20));
        let big = Layout::from_size_align(5 << 20, 4096).unwrap();
        assert_eq!(chunk_size(big, 0, MIN_CHUNK), Some((5 << 20) + 8192));
        // The largest layout there is: no overflow.
        let huge = Layout::from_size_align(isize::MAX as usize - 7, 8).unwrap();
        assert_eq!(chunk_size(huge, 0, MIN_CHUNK), Some((isize::MAX as usize + 65).next_multiple_of(4096)));
    }

    #[test]
    fn the_early_region_avoids_reserved_ranges() {
        let usable = [(0, 0x9f000), (0x10_0000, 0x8000_0000)];
        let reserved = [(0, 0x10_0000), (0x20_0000, 0x40_0000), (0x7f00_0000, 0x7f80_0000)];
        // The top of RAM.
        assert_eq!(find_free_range(&usable, &reserved, 0x10_0000, 4096, u64::MAX), Some(0x7ff0_0000));
        // Below a limit that cuts into a reserved range: under it.
        assert_eq!(find_free_range(&usable, &reserved, 0x10_0000, 4096, 0x7f40_0000), Some(0x7ef0_0000));
        // Too big to fit anywhere.
        assert_eq!(find_free_range(&usable, &reserved, 0x8000_0000, 4096, u64::MAX), None);
        // Only the hole between reserved ranges fits.
        let tight = [(0x10_0000, 0x50_0000)];
        assert_eq!(find_free_range(&tight, &reserved, 0x10_0000, 4096, u64::MAX), Some(0x40_0000));
        assert_eq!(find_free_range(&tight, &reserved, 0x18_0000, 4096, u64::MAX), None);
    }
}
