//! The physical frame allocator: a bitmap over every 4 KiB frame up to the top of usable RAM.
//!
//! Frames start out "used"; the firmware's usable ranges are then released and the ranges Keel must never hand
//! out (its own image, the boot modules, the boot information, the first megabyte) are reserved again. Freeing a
//! frame that is not allocated is an error, not a silent corruption.

use super::{align_down, align_up, PAGE_SIZE};
use alloc::vec;
use alloc::vec::Vec;

/// No frame satisfies the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfFrames;

/// A frame given back was not an allocated frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FreeError {
    /// The address is not 4 KiB-aligned.
    Unaligned(u64),
    /// The address lies beyond the managed range.
    OutOfRange(u64),
    /// The frame is already free.
    DoubleFree(u64),
}

/// A bitmap frame allocator (bit set = frame free).
pub struct FrameAllocator {
    bits: Vec<u64>,
    frames: u64,
    free: u64,
    /// Word index where the next search starts.
    hint: usize,
}

impl FrameAllocator {
    /// An allocator for frames below `top` (exclusive), all initially in use.
    pub fn new(top: u64) -> Self {
        let frames = align_up(top, PAGE_SIZE) / PAGE_SIZE;
        Self { bits: vec![0; frames.div_ceil(64) as usize], frames, free: 0, hint: 0 }
    }

    fn set(&mut self, frame: u64, free: bool) {
        let (w, b) = ((frame / 64) as usize, frame % 64);
        let was = self.bits[w] & (1 << b) != 0;
        if free && !was {
            self.bits[w] |= 1 << b;
            self.free += 1;
        } else if !free && was {
            self.bits[w] &= !(1 << b);
            self.free -= 1;
        }
    }

    fn is_free(&self, frame: u64) -> bool {
        self.bits[(frame / 64) as usize] & (1 << (frame % 64)) != 0
    }

    /// Marks the whole frames inside `[start, end)` free.
    pub fn add_free_range(&mut self, start: u64, end: u64) {
        let s = align_up(start, PAGE_SIZE) / PAGE_SIZE;
        let e = core::cmp::min(align_down(end, PAGE_SIZE) / PAGE_SIZE, self.frames);
        for f in s..e {
            self.set(f, true);
        }
    }

    /// Marks every frame touching `[start, end)` used.
    pub fn reserve_range(&mut self, start: u64, end: u64) {
        let s = start / PAGE_SIZE;
        let e = core::cmp::min(align_up(end, PAGE_SIZE) / PAGE_SIZE, self.frames);
        for f in s..e {
            self.set(f, false);
        }
        self.hint = 0;
    }

    /// Number of free frames.
    pub fn free_frames(&self) -> u64 {
        self.free
    }

    /// Number of managed frames (free or not).
    pub fn total_frames(&self) -> u64 {
        self.frames
    }

    /// Allocates one frame; returns its physical address.
    pub fn alloc(&mut self) -> Result<u64, OutOfFrames> {
        let n = self.bits.len();
        for i in 0..n {
            let w = (self.hint + i) % n;
            if self.bits[w] != 0 {
                let frame = w as u64 * 64 + self.bits[w].trailing_zeros() as u64;
                self.set(frame, false);
                self.hint = w;
                return Ok(frame * PAGE_SIZE);
            }
        }
        Err(OutOfFrames)
    }

    /// Allocates `count` contiguous frames whose first address is a multiple of `align` bytes and whose last
    /// byte lies below `limit`.
    pub fn alloc_contiguous(&mut self, count: u64, align: u64, limit: u64) -> Result<u64, OutOfFrames> {
        if count == 0 {
            return Err(OutOfFrames);
        }
        let step = core::cmp::max(align, PAGE_SIZE) / PAGE_SIZE;
        let last = core::cmp::min(self.frames, limit / PAGE_SIZE);
        let mut f = 0;
        while f + count <= last {
            match (f..f + count).find(|&x| !self.is_free(x)) {
                None => {
                    for x in f..f + count {
                        self.set(x, false);
                    }
                    return Ok(f * PAGE_SIZE);
                }
                Some(busy) => f = align_up((busy + 1) * PAGE_SIZE, step * PAGE_SIZE) / PAGE_SIZE,
            }
        }
        Err(OutOfFrames)
    }

    /// Takes the lowest `count` free frames at or above `from`, returned as address ranges in ascending order
    /// (fewer if fewer are free): the initial domain's RAM when it is mapped 1:1.
    pub fn claim_lowest(&mut self, from: u64, count: u64) -> Vec<core::ops::Range<u64>> {
        let mut out: Vec<core::ops::Range<u64>> = Vec::new();
        let mut left = count;
        let mut w = (from / PAGE_SIZE / 64) as usize;
        while left > 0 && w < self.bits.len() {
            let mut word = self.bits[w];
            if w == (from / PAGE_SIZE / 64) as usize {
                word &= !0u64 << (from / PAGE_SIZE % 64);
            }
            while word != 0 && left > 0 {
                let frame = w as u64 * 64 + u64::from(word.trailing_zeros());
                word &= word - 1;
                self.set(frame, false);
                left -= 1;
                let at = frame * PAGE_SIZE;
                match out.last_mut() {
                    Some(r) if r.end == at => r.end += PAGE_SIZE,
                    _ => out.push(at..at + PAGE_SIZE),
                }
            }
            w += 1;
        }
        self.hint = 0;
        out
    }

    /// Takes the `count` frames from `paddr` if every one is free (all or nothing); whether it did.
    pub fn claim_range(&mut self, paddr: u64, count: u64) -> bool {
        let f = paddr / PAGE_SIZE;
        if !paddr.is_multiple_of(PAGE_SIZE) || f.saturating_add(count) > self.frames {
            return false;
        }
        if (f..f + count).any(|x| !self.is_free(x)) {
            return false;
        }
        for x in f..f + count {
            self.set(x, false);
        }
        true
    }

    /// Gives a frame back.
    pub fn free(&mut self, paddr: u64) -> Result<(), FreeError> {
        if !paddr.is_multiple_of(PAGE_SIZE) {
            return Err(FreeError::Unaligned(paddr));
        }
        let f = paddr / PAGE_SIZE;
        if f >= self.frames {
            return Err(FreeError::OutOfRange(paddr));
        }
        if self.is_free(f) {
            return Err(FreeError::DoubleFree(paddr));
        }
        self.set(f, true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc_with_holes() -> FrameAllocator {
        let mut a = FrameAllocator::new(0x100_0000); // 16 MiB
        a.add_free_range(0, 0x9fc00); // conventional memory, partial last frame dropped
        a.add_free_range(0x10_0000, 0x100_0000);
        a.reserve_range(0, 0x10_0000); // the first megabyte
        a.reserve_range(0x20_0000, 0x30_0123); // "image", partial frame at the end included
        a.reserve_range(0x80_0000, 0x80_0001); // a one-byte "module"
        a
    }

    #[test]
    fn reserved_ranges_are_never_handed_out() {
        let mut a = alloc_with_holes();
        let expected = (0x100_0000 - 0x10_0000) / 4096 - (0x101) - 1;
        assert_eq!(a.free_frames(), expected);
        let mut got = Vec::new();
        while let Ok(f) = a.alloc() {
            got.push(f);
        }
        assert_eq!(got.len() as u64, expected);
        for f in got {
            assert!(f >= 0x10_0000, "{f:#x} in the first MiB");
            assert!(!(0x20_0000..0x30_1000).contains(&f), "{f:#x} in the image");
            assert_ne!(f, 0x80_0000);
        }
    }

    #[test]
    fn exhaustion_is_an_error() {
        let mut a = FrameAllocator::new(0x4000);
        a.add_free_range(0, 0x4000);
        for _ in 0..4 {
            a.alloc().unwrap();
        }
        assert_eq!(a.alloc(), Err(OutOfFrames));
        assert_eq!(a.alloc_contiguous(1, 4096, u64::MAX), Err(OutOfFrames));
    }

    #[test]
    fn alloc_free_round_trip() {
        let mut a = alloc_with_holes();
        let before = a.free_frames();
        let frames: Vec<u64> = (0..100).map(|_| a.alloc().unwrap()).collect();
        assert_eq!(a.free_frames(), before - 100);
        for f in &frames {
            a.free(*f).unwrap();
        }
        assert_eq!(a.free_frames(), before);
        assert_eq!(a.free(frames[0]), Err(FreeError::DoubleFree(frames[0])));
        assert_eq!(a.free(0x123), Err(FreeError::Unaligned(0x123)));
        assert_eq!(a.free(0x1_0000_0000), Err(FreeError::OutOfRange(0x1_0000_0000)));
    }

    #[test]
    fn contiguous_aligned_and_below_limit() {
        let mut a = alloc_with_holes();
        let p = a.alloc_contiguous(512, 0x20_0000, u64::MAX).unwrap();
        assert_eq!(p % 0x20_0000, 0);
        assert!(p >= 0x40_0000, "must skip the reserved image at 2 MiB: {p:#x}");
        let low = a.alloc_contiguous(1, 4096, 0x20_0000).unwrap();
        assert!((0x10_0000..0x20_0000).contains(&low));
        assert_eq!(a.alloc_contiguous(0x1000, 4096, u64::MAX), Err(OutOfFrames));
    }

    #[test]
    fn claim_lowest_takes_runs_in_address_order() {
        let mut a = alloc_with_holes();
        let before = a.free_frames();
        let got = a.claim_lowest(0x10_0000, 0x100 + 0x100 + 3);
        assert_eq!(got, [0x10_0000..0x20_0000, 0x30_1000..0x40_4000], "runs, adjacent frames joined");
        assert_eq!(a.free_frames(), before - 0x203);
        assert!(!a.is_free(0x10_0000 / PAGE_SIZE) && a.is_free(0x40_4000 / PAGE_SIZE));
        // Asking more than is free takes what there is.
        let rest = a.claim_lowest(0, u64::MAX);
        assert_eq!(rest.iter().map(|r| (r.end - r.start) / PAGE_SIZE).sum::<u64>(), before - 0x203);
        assert_eq!(a.free_frames(), 0);
    }

    #[test]
    fn claim_range_is_all_or_nothing() {
        let mut a = alloc_with_holes();
        let before = a.free_frames();
        assert!(!a.claim_range(0x1f_f000, 2), "crosses into the image");
        assert!(!a.claim_range(0x10_0800, 1), "unaligned");
        assert!(!a.claim_range(0xfff_f000, 2), "past the end");
        assert_eq!(a.free_frames(), before);
        assert!(a.claim_range(0x40_0000, 512));
        assert!(!a.claim_range(0x40_0000, 1), "taken");
        assert_eq!(a.free_frames(), before - 512);
    }
}
