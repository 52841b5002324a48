//! Guest physical memory: the physical-to-machine map of a domain, kept directly in the nested page-table format
//! of the CPU (AMD NPT entries are ordinary x86-64 entries; Intel EPT entries differ). The walk, the allocation
//! and the accounting are common; only the entry encoding comes from a [`PteFormat`].
//!
//! Four levels of 512 entries reach 48 bits of guest-physical address: a GPA at or above [`GPA_LIMIT`] is refused
//! by every entry point (map, lookup, unmap) instead of being truncated onto a lower one. The table frames a map
//! uses are counted and capped ([`P2m::set_table_limit`]), so that a guest cannot make Keel allocate page tables
//! without bound by mapping frames at scattered addresses.
//!
//! Log-dirty tracking (XEN_DOMCTL_shadow_op) write-protects the domain's writable RAM leaves and marks each such
//! leaf with [`LOG_DIRTY_BIT`], a software bit meaning "writable underneath": [`P2m::log_dirty_protect_all`],
//! [`P2m::log_dirty_unprotect`] (one page, on the guest's write fault; a protected 2 MiB leaf is split then),
//! [`P2m::log_dirty_reprotect`] (after a CLEAN) and [`P2m::log_dirty_restore_all`] (log-dirty off). Only leaves
//! the domain owns are ever protected: foreign, grant and Keel's own frames keep their rights.

use super::frame::OutOfFrames;
use super::PAGE_SIZE;

/// Access rights of a guest mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perms {
    /// Writes allowed.
    pub write: bool,
    /// Instruction fetches allowed.
    pub exec: bool,
}

impl Perms {
    /// Ordinary guest RAM.
    pub const RAM: Self = Self { write: true, exec: true };
}

/// Size of a leaf mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    /// 4 KiB.
    Size4K,
    /// 2 MiB.
    Size2M,
}

impl PageSize {
    /// Bytes covered.
    pub const fn bytes(self) -> u64 {
        match self {
            Self::Size4K => PAGE_SIZE,
            Self::Size2M => 2 << 20,
        }
    }
}

/// How a nested page-table entry is encoded.
pub trait PteFormat {
    /// An entry pointing at a next-level table.
    fn table(paddr: u64) -> u64;
    /// A leaf entry. `owned` marks frames the domain owns (freed on destroy).
    fn leaf(paddr: u64, perms: Perms, size: PageSize, owned: bool) -> u64;
    /// Whether the entry maps anything.
    fn present(e: u64) -> bool;
    /// Whether the entry (at levels 2 and 3) is a large leaf (bit 7 in both formats).
    fn is_large(e: u64) -> bool {
        e & (1 << 7) != 0
    }
    /// Whether the leaf's frames are owned by the domain (a bit both formats leave to software).
    fn owned(e: u64) -> bool {
        e & OWNED_BIT != 0
    }
    /// The physical address in the entry.
    fn addr(e: u64) -> u64 {
        e & ADDR_MASK
    }
    /// The rights of a leaf.
    fn perms(e: u64) -> Perms;
    /// The leaf `e` with writes allowed or not (bit 1 in both formats).
    fn with_write(e: u64, write: bool) -> u64 {
        if write {
            e | WRITE_BIT
        } else {
            e & !WRITE_BIT
        }
    }
    /// Whether a leaf is write-protected for log-dirty tracking only (see [`LOG_DIRTY_BIT`]).
    fn log_dirty(e: u64) -> bool {
        e & LOG_DIRTY_BIT != 0
    }
    /// The `k`th 4 KiB leaf of the 2 MiB leaf `e` split into 512: every flag (rights, memory type, ownership,
    /// [`LOG_DIRTY_BIT`]) kept, the large-page bit (bit 7: PAT in an NPT 4 KiB entry, ignored in EPT) cleared.
    fn small_of_large(e: u64, k: u64) -> u64 {
        let base = Self::addr(e) & !((2 << 20) - 1);
        (e & !ADDR_MASK & !(1 << 7)) | (base + k * PAGE_SIZE)
    }
}

/// Guest-physical addresses the 4-level nested page table reaches: `[0, GPA_LIMIT)` (48 bits).
pub const GPA_LIMIT: u64 = 1 << 48;

/// Table frames (the root included) that map `[0, bytes)` entirely with 4 KiB leaves: the most a range of RAM
/// starting at 0 can ever need, however many of its 2 MiB leaves are later split.
pub const fn tables_for(bytes: u64) -> u64 {
    1 + bytes.div_ceil(1 << 39) + bytes.div_ceil(1 << 30) + bytes.div_ceil(2 << 20)
}

/// Software bit 11 (ignored by the MMU in both NPT and EPT entries): the frame belongs to the domain.
pub const OWNED_BIT: u64 = 1 << 11;
/// Software bit 52 of a leaf: write access was taken away for log-dirty tracking, and the page is writable
/// underneath (a write fault gives it back and marks the page dirty; log-dirty off gives every such page back).
/// Bit 52 is free in both formats whatever the CPU enables: AMD leaves bits 52-58 of a long-mode entry to software
/// (59-62 may become a protection key), and EPT ignores bits 52-56 of every entry (57, 58, 60, 61 and 63 take a
/// meaning under optional controls); it is also clear of the address, which ends at bit 51.
pub const LOG_DIRTY_BIT: u64 = 1 << 52;
/// The write permission, bit 1 in both formats.
const WRITE_BIT: u64 = 1 << 1;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// AMD NPT: long-mode page-table entries; nested walks are user accesses, so U/S is always set.
pub enum Npt {}

impl PteFormat for Npt {
    fn table(paddr: u64) -> u64 {
        paddr | 0b111 // present, writable, user
    }
    fn leaf(paddr: u64, perms: Perms, size: PageSize, owned: bool) -> u64 {
        let mut e = paddr | 0b101; // present, user
        if perms.write {
            e |= 0b10;
        }
        if !perms.exec {
            e |= 1 << 63;
        }
        if size == PageSize::Size2M {
            e |= 1 << 7;
        }
        if owned {
            e |= OWNED_BIT;
        }
        e
    }
    fn present(e: u64) -> bool {
        e & 1 != 0
    }
    fn perms(e: u64) -> Perms {
        Perms { write: e & 0b10 != 0, exec: e & (1 << 63) == 0 }
    }
}

/// Intel EPT entries (read/write/execute bits 0-2, memory type WB in bits 3-5 of leaves).
pub enum Ept {}

impl PteFormat for Ept {
    fn table(paddr: u64) -> u64 {
        paddr | 0b111
    }
    fn leaf(paddr: u64, perms: Perms, size: PageSize, owned: bool) -> u64 {
        let mut e = paddr | 0b1 | (6 << 3); // readable, write-back
        if perms.write {
            e |= 0b10;
        }
        if perms.exec {
            e |= 0b100;
        }
        if size == PageSize::Size2M {
            e |= 1 << 7;
        }
        if owned {
            e |= OWNED_BIT;
        }
        e
    }
    fn present(e: u64) -> bool {
        e & 0b111 != 0
    }
    fn perms(e: u64) -> Perms {
        Perms { write: e & 0b10 != 0, exec: e & 0b100 != 0 }
    }
}

/// Where the p2m gets and returns frames, and how it reaches their contents.
pub trait FrameSource {
    /// A zeroed frame.
    fn alloc(&mut self) -> Result<u64, OutOfFrames>;
    /// Returns a frame.
    fn free(&mut self, paddr: u64);
    /// The table at `paddr`.
    fn table(&mut self, paddr: u64) -> &mut [u64; 512];
}

/// What [`P2m::unmap_4k`] removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unmapped {
    /// The host frame.
    pub hpa: u64,
    /// Whether the domain owned it.
    pub owned: bool,
}

/// A leaf as [`P2m::leaf`] finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// Host address of the guest-physical address looked up (the frame plus the offset into the leaf).
    pub hpa: u64,
    /// The rights the hardware sees.
    pub perms: Perms,
    /// The leaf's size.
    pub size: PageSize,
    /// The domain owns the frame.
    pub owned: bool,
    /// Write-protected for log-dirty tracking only ([`LOG_DIRTY_BIT`]): writable underneath.
    pub log_dirty: bool,
}

/// What [`P2m::log_dirty_unprotect`] made writable again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unprotected {
    /// Nothing: the leaf there is not protected for log-dirty (or nothing is mapped).
    Nothing,
    /// The one 4 KiB page (a 2 MiB leaf is split first, its other 511 pages staying protected).
    Page,
    /// The whole 2 MiB leaf, whose 512 pages start at this guest-physical address: no table frame was left to
    /// split it, so all of them count as dirtied.
    Large(u64),
}

/// Why a mapping failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// No frame for a page table.
    OutOfFrames,
    /// Something is mapped there already.
    Busy,
    /// Not aligned to the page size.
    Unaligned,
    /// The guest-physical address lies beyond [`GPA_LIMIT`].
    OutOfRange,
    /// The map already uses as many table frames as it may.
    TableLimit,
}

/// A domain's nested page table.
pub struct P2m<F: PteFormat> {
    root: u64,
    /// Table frames in use (for accounting).
    tables: u64,
    /// Most table frames the map may use.
    table_limit: u64,
    _f: core::marker::PhantomData<F>,
}

fn index(gpa: u64, level: u32) -> usize {
    ((gpa >> (12 + 9 * (level - 1))) & 511) as usize
}

impl<F: PteFormat> P2m<F> {
    /// An empty map.
    pub fn new(src: &mut impl FrameSource) -> Result<Self, OutOfFrames> {
        Ok(Self { root: src.alloc()?, tables: 1, table_limit: u64::MAX, _f: core::marker::PhantomData })
    }

    /// A map with no tables at all (what is left once a domain's map has been destroyed).
    pub fn detached() -> Self {
        Self { root: 0, tables: 0, table_limit: 0, _f: core::marker::PhantomData }
    }

    /// Caps the table frames the map may use (the root included); a mapping or split that needs more fails with
    /// [`MapError::TableLimit`].
    pub fn set_table_limit(&mut self, frames: u64) {
        self.table_limit = frames;
    }

    /// The cap set with [`Self::set_table_limit`].
    pub fn table_limit(&self) -> u64 {
        self.table_limit
    }

    /// A new, zeroed table frame, counted against the limit.
    fn alloc_table(&mut self, src: &mut impl FrameSource) -> Result<u64, MapError> {
        if self.tables >= self.table_limit {
            return Err(MapError::TableLimit);
        }
        let t = src.alloc().map_err(|_| MapError::OutOfFrames)?;
        self.tables += 1;
        Ok(t)
    }

    /// Physical address of the top-level table (nCR3 / EPTP base).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Table frames used.
    pub fn table_frames(&self) -> u64 {
        self.tables
    }

    /// Maps `gpa` to `hpa` with a leaf of `size`.
    pub fn map(
        &mut self,
        src: &mut impl FrameSource,
        gpa: u64,
        hpa: u64,
        size: PageSize,
        perms: Perms,
        owned: bool,
    ) -> Result<(), MapError> {
        if !gpa.is_multiple_of(size.bytes()) || !hpa.is_multiple_of(size.bytes()) {
            return Err(MapError::Unaligned);
        }
        if gpa >= GPA_LIMIT || self.root == 0 {
            return Err(MapError::OutOfRange);
        }
        let leaf_level = if size == PageSize::Size2M { 2 } else { 1 };
        let mut table = self.root;
        for level in (leaf_level + 1..=4).rev() {
            let i = index(gpa, level);
            let e = src.table(table)[i];
            if !F::present(e) {
                let t = self.alloc_table(src)?;
                src.table(table)[i] = F::table(t);
                table = t;
            } else if F::is_large(e) && level <= 3 {
                return Err(MapError::Busy);
            } else {
                table = F::addr(e);
            }
        }
        let i = index(gpa, leaf_level);
        let slot = &mut src.table(table)[i];
        if F::present(*slot) {
            return Err(MapError::Busy);
        }
        *slot = F::leaf(hpa, perms, size, owned);
        Ok(())
    }

    /// The table holding the leaf that maps `gpa`, the leaf's index in it and its size; None where nothing is
    /// mapped (or `gpa` is beyond the map's reach).
    fn find_leaf(&self, src: &mut impl FrameSource, gpa: u64) -> Option<(u64, usize, PageSize)> {
        if gpa >= GPA_LIMIT || self.root == 0 {
            return None;
        }
        let mut table = self.root;
        for level in (1..=4).rev() {
            let i = index(gpa, level);
            let e = src.table(table)[i];
            if !F::present(e) {
                return None;
            }
            if level == 1 {
                return Some((table, i, PageSize::Size4K));
            }
            if level == 2 && F::is_large(e) {
                return Some((table, i, PageSize::Size2M));
            }
            table = F::addr(e);
        }
        None
    }

    /// The leaf mapping `gpa`, if any.
    pub fn leaf(&self, src: &mut impl FrameSource, gpa: u64) -> Option<Leaf> {
        let (table, i, size) = self.find_leaf(src, gpa)?;
        let e = src.table(table)[i];
        Some(Leaf {
            hpa: F::addr(e) + (gpa & (size.bytes() - 1)),
            perms: F::perms(e),
            size,
            owned: F::owned(e),
            log_dirty: F::log_dirty(e),
        })
    }

    /// Translates a guest-physical address.
    pub fn lookup(&self, src: &mut impl FrameSource, gpa: u64) -> Option<(u64, Perms)> {
        self.leaf(src, gpa).map(|l| (l.hpa, l.perms))
    }

    /// Log-dirty on: takes write access away from every writable leaf the domain owns, marking it with
    /// [`LOG_DIRTY_BIT`]. 2 MiB leaves stay whole (a write fault splits one). Returns the 4 KiB pages protected.
    /// The caller flushes every vCPU's cached translations before relying on it.
    pub fn log_dirty_protect_all(&mut self, src: &mut impl FrameSource) -> u64 {
        self.for_each_leaf(src, |e, pages| {
            (F::owned(e) && F::perms(e).write).then(|| (F::with_write(e, false) | LOG_DIRTY_BIT, pages))
        })
    }

    /// Log-dirty off: gives write access back to every leaf [`Self::log_dirty_protect_all`] (or
    /// [`Self::log_dirty_reprotect`]) took it from. Split leaves stay split. Returns the 4 KiB pages restored.
    pub fn log_dirty_restore_all(&mut self, src: &mut impl FrameSource) -> u64 {
        self.for_each_leaf(src, |e, pages| F::log_dirty(e).then(|| (F::with_write(e, true) & !LOG_DIRTY_BIT, pages)))
    }

    /// Rewrites every present leaf `e` (of `pages` 4 KiB pages) to what `f` returns, if anything; sums the pages
    /// `f` reported for the leaves it changed.
    fn for_each_leaf(&mut self, src: &mut impl FrameSource, mut f: impl FnMut(u64, u64) -> Option<(u64, u64)>) -> u64 {
        fn walk<F: PteFormat>(
            src: &mut impl FrameSource,
            table: u64,
            level: u32,
            f: &mut impl FnMut(u64, u64) -> Option<(u64, u64)>,
        ) -> u64 {
            let mut n = 0;
            for i in 0..512 {
                let e = src.table(table)[i];
                if !F::present(e) {
                    continue;
                }
                if level == 1 || (level == 2 && F::is_large(e)) {
                    let pages = if level == 1 { 1 } else { 512 };
                    if let Some((new, counted)) = f(e, pages) {
                        src.table(table)[i] = new;
                        n += counted;
                    }
                } else {
                    n += walk::<F>(src, F::addr(e), level - 1, f);
                }
            }
            n
        }
        if self.root == 0 {
            return 0;
        }
        walk::<F>(src, self.root, 4, &mut f)
    }

    /// A guest write faulted at `gpa`: if the leaf there is protected for log-dirty, makes the page writable
    /// again. A protected 2 MiB leaf is split into 512 protected 4 KiB leaves first and only the page written is
    /// given back; when no table frame is left for the split (the table cap), the whole 2 MiB leaf is given back
    /// instead and the caller counts all of its pages dirty. No flush is needed: rights only grow.
    pub fn log_dirty_unprotect(&mut self, src: &mut impl FrameSource, gpa: u64) -> Unprotected {
        let Some((table, i, size)) = self.find_leaf(src, gpa) else { return Unprotected::Nothing };
        let e = src.table(table)[i];
        if !F::log_dirty(e) {
            return Unprotected::Nothing;
        }
        let writable = F::with_write(e, true) & !LOG_DIRTY_BIT;
        if size == PageSize::Size4K {
            src.table(table)[i] = writable;
            return Unprotected::Page;
        }
        match self.alloc_table(src) {
            Ok(t) => {
                for k in 0..512u64 {
                    src.table(t)[k as usize] = F::small_of_large(e, k);
                }
                let j = index(gpa, 1);
                src.table(t)[j] = F::with_write(src.table(t)[j], true) & !LOG_DIRTY_BIT;
                src.table(table)[i] = F::table(t);
                Unprotected::Page
            }
            Err(_) => {
                src.table(table)[i] = writable;
                Unprotected::Large(gpa & !((2 << 20) - 1))
            }
        }
    }

    /// After a log-dirty CLEAN: takes write access away again from the owned leaf at `gpa` (the whole leaf, if it
    /// is a 2 MiB one), if it is writable. Returns whether it changed anything. The caller flushes every vCPU's
    /// cached translations before relying on it.
    pub fn log_dirty_reprotect(&mut self, src: &mut impl FrameSource, gpa: u64) -> bool {
        let Some((table, i, _)) = self.find_leaf(src, gpa) else { return false };
        let e = src.table(table)[i];
        if !F::owned(e) || !F::perms(e).write {
            return false;
        }
        src.table(table)[i] = F::with_write(e, false) | LOG_DIRTY_BIT;
        true
    }

    /// Removes the 4 KiB mapping at `gpa`, splitting a 2 MiB leaf that covers it into 4 KiB leaves first.
    /// Returns what was mapped there (`None`: nothing, or `gpa` is beyond the map's reach); fails only when a
    /// split needs a table frame it cannot have.
    pub fn unmap_4k(&mut self, src: &mut impl FrameSource, gpa: u64) -> Result<Option<Unmapped>, MapError> {
        if gpa >= GPA_LIMIT || self.root == 0 {
            return Ok(None);
        }
        let mut table = self.root;
        for level in (2..=4).rev() {
            let i = index(gpa, level);
            let e = src.table(table)[i];
            if !F::present(e) {
                return Ok(None);
            }
            if level == 2 && F::is_large(e) {
                // Split: a new table of 512 leaves with the same rights, ownership and log-dirty state.
                let t = self.alloc_table(src)?;
                for k in 0..512u64 {
                    src.table(t)[k as usize] = F::small_of_large(e, k);
                }
                src.table(table)[i] = F::table(t);
                table = t;
                break;
            }
            table = F::addr(e);
        }
        let slot = &mut src.table(table)[index(gpa, 1)];
        let e = *slot;
        if !F::present(e) {
            return Ok(None);
        }
        *slot = 0;
        Ok(Some(Unmapped { hpa: F::addr(e), owned: F::owned(e) }))
    }

    /// Frees every owned frame and every table; returns the number of owned 4 KiB frames freed.
    pub fn destroy(self, src: &mut impl FrameSource) -> u64 {
        if self.root == 0 {
            return 0;
        }
        fn walk<F: PteFormat>(src: &mut impl FrameSource, table: u64, level: u32) -> u64 {
            let mut freed = 0;
            for i in 0..512 {
                let e = src.table(table)[i];
                if !F::present(e) {
                    continue;
                }
                if level == 1 || (level == 2 && F::is_large(e)) {
                    if F::owned(e) {
                        let n = if level == 1 { 1 } else { 512 };
                        for k in 0..n {
                            src.free(F::addr(e) + k * PAGE_SIZE);
                        }
                        freed += n;
                    }
                } else {
                    freed += walk::<F>(src, F::addr(e), level - 1);
                }
            }
            src.free(table);
            freed
        }
        walk::<F>(src, self.root, 4)
    }
}

/// A domain's p2m in whichever format its vendor's nested paging uses (chosen when the domain is built).
pub enum GuestP2m {
    /// AMD nested page tables.
    Npt(P2m<Npt>),
    /// Intel extended page tables.
    Ept(P2m<Ept>),
}

macro_rules! each {
    ($self:expr, $p:ident => $e:expr) => {
        match $self {
            GuestP2m::Npt($p) => $e,
            GuestP2m::Ept($p) => $e,
        }
    };
}

impl GuestP2m {
    /// An empty map in EPT format when `ept`, NPT format otherwise.
    pub fn new(src: &mut impl FrameSource, ept: bool) -> Result<Self, OutOfFrames> {
        Ok(if ept { Self::Ept(P2m::new(src)?) } else { Self::Npt(P2m::new(src)?) })
    }

    /// A map without tables (what is left after `destroy`).
    pub fn detached() -> Self {
        Self::Npt(P2m::detached())
    }

    /// Physical address of the top-level table.
    pub fn root(&self) -> u64 {
        each!(self, p => p.root())
    }

    /// Table frames used.
    pub fn table_frames(&self) -> u64 {
        each!(self, p => p.table_frames())
    }

    /// See [`P2m::set_table_limit`].
    pub fn set_table_limit(&mut self, frames: u64) {
        each!(self, p => p.set_table_limit(frames))
    }

    /// See [`P2m::table_limit`].
    pub fn table_limit(&self) -> u64 {
        each!(self, p => p.table_limit())
    }

    /// See [`P2m::map`].
    pub fn map(
        &mut self,
        src: &mut impl FrameSource,
        gpa: u64,
        hpa: u64,
        size: PageSize,
        perms: Perms,
        owned: bool,
    ) -> Result<(), MapError> {
        each!(self, p => p.map(src, gpa, hpa, size, perms, owned))
    }

    /// See [`P2m::lookup`].
    pub fn lookup(&self, src: &mut impl FrameSource, gpa: u64) -> Option<(u64, Perms)> {
        each!(self, p => p.lookup(src, gpa))
    }

    /// See [`P2m::leaf`].
    pub fn leaf(&self, src: &mut impl FrameSource, gpa: u64) -> Option<Leaf> {
        each!(self, p => p.leaf(src, gpa))
    }

    /// See [`P2m::log_dirty_protect_all`].
    pub fn log_dirty_protect_all(&mut self, src: &mut impl FrameSource) -> u64 {
        each!(self, p => p.log_dirty_protect_all(src))
    }

    /// See [`P2m::log_dirty_restore_all`].
    pub fn log_dirty_restore_all(&mut self, src: &mut impl FrameSource) -> u64 {
        each!(self, p => p.log_dirty_restore_all(src))
    }

    /// See [`P2m::log_dirty_unprotect`].
    pub fn log_dirty_unprotect(&mut self, src: &mut impl FrameSource, gpa: u64) -> Unprotected {
        each!(self, p => p.log_dirty_unprotect(src, gpa))
    }

    /// See [`P2m::log_dirty_reprotect`].
    pub fn log_dirty_reprotect(&mut self, src: &mut impl FrameSource, gpa: u64) -> bool {
        each!(self, p => p.log_dirty_reprotect(src, gpa))
    }

    /// See [`P2m::unmap_4k`].
    pub fn unmap_4k(&mut self, src: &mut impl FrameSource, gpa: u64) -> Result<Option<Unmapped>, MapError> {
        each!(self, p => p.unmap_4k(src, gpa))
    }

    /// See [`P2m::destroy`].
    pub fn destroy(self, src: &mut impl FrameSource) -> u64 {
        each!(self, p => p.destroy(src))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::boxed::Box;
    use alloc::collections::BTreeMap;

    /// Frames as heap boxes keyed by fake physical addresses.
    #[derive(Default)]
    struct Fake {
        next: u64,
        live: BTreeMap<u64, Box<[u64; 512]>>,
        data_frames: u64,
    }

    impl FrameSource for Fake {
        fn alloc(&mut self) -> Result<u64, OutOfFrames> {
            self.next += PAGE_SIZE;
            self.live.insert(self.next, Box::new([0; 512]));
            Ok(self.next)
        }
        fn free(&mut self, paddr: u64) {
            if self.live.remove(&paddr).is_none() {
                self.data_frames -= 1;
            }
        }
        fn table(&mut self, paddr: u64) -> &mut [u64; 512] {
            self.live.get_mut(&paddr).expect("not a table")
        }
    }

    #[test]
    fn map_lookup_destroy() {
        let mut f = Fake::default();
        let mut p = P2m::<Npt>::new(&mut f).unwrap();
        f.data_frames = 1 + 512;
        p.map(&mut f, 0x1000, 0x7_7000_0000, PageSize::Size4K, Perms::RAM, true).unwrap();
        p.map(&mut f, 0x20_0000, 0x8_0000_0000, PageSize::Size2M, Perms::RAM, true).unwrap();
        p.map(&mut f, 0xfee0_0000, 0xfee0_0000, PageSize::Size4K, Perms { write: true, exec: false }, false).unwrap();
        assert_eq!(p.lookup(&mut f, 0x1234), Some((0x7_7000_0234, Perms::RAM)));
        assert_eq!(p.lookup(&mut f, 0x2f_ffff).map(|x| x.0), Some(0x8_000f_ffff));
        assert_eq!(p.lookup(&mut f, 0x5000), None);
        assert!(!p.lookup(&mut f, 0xfee0_0000).unwrap().1.exec);
        assert_eq!(p.map(&mut f, 0x1000, 0x9000, PageSize::Size4K, Perms::RAM, true), Err(MapError::Busy));
        assert_eq!(p.map(&mut f, 0x20_1000, 0x9000, PageSize::Size4K, Perms::RAM, true), Err(MapError::Busy));
        assert_eq!(p.map(&mut f, 0x1000, 0x9000, PageSize::Size2M, Perms::RAM, true), Err(MapError::Unaligned));
        // Unmapping inside the 2 MiB page splits it; the other 511 frames stay mapped and owned.
        let u = p.unmap_4k(&mut f, 0x20_3000).unwrap().unwrap();
        assert_eq!(u, Unmapped { hpa: 0x8_0000_3000, owned: true });
        assert_eq!(p.lookup(&mut f, 0x20_3000), None);
        assert_eq!(p.lookup(&mut f, 0x20_4000).map(|x| x.0), Some(0x8_0000_4000));
        f.data_frames -= 1; // the caller frees what unmap_4k returned
        let freed = p.destroy(&mut f);
        assert_eq!(freed, 512);
        assert!(f.live.is_empty(), "every table freed");
        assert_eq!(f.data_frames, 0, "every owned frame freed once");
    }

    /// Bits 48-51 of a GPA used to be dropped by the index computation, so GFN 1<<36 aliased GFN 0.
    #[test]
    fn gpas_beyond_48_bits_are_refused_not_aliased() {
        let mut f = Fake::default();
        let mut p = P2m::<Ept>::new(&mut f).unwrap();
        p.map(&mut f, 0, 0x5000, PageSize::Size4K, Perms::RAM, false).unwrap();
        assert_eq!(p.lookup(&mut f, GPA_LIMIT), None, "GFN 1<<36 must not read GFN 0");
        assert_eq!(p.lookup(&mut f, GPA_LIMIT | 0x123), None);
        assert_eq!(p.lookup(&mut f, !0xfff), None);
        assert_eq!(p.map(&mut f, GPA_LIMIT, 0x6000, PageSize::Size4K, Perms::RAM, false), Err(MapError::OutOfRange));
        assert_eq!(p.map(&mut f, 1 << 51, 0x6000, PageSize::Size4K, Perms::RAM, false), Err(MapError::OutOfRange));
        assert_eq!(p.unmap_4k(&mut f, GPA_LIMIT), Ok(None));
        assert_eq!(p.lookup(&mut f, 0), Some((0x5000, Perms::RAM)), "GFN 0 untouched");
        // The highest reachable frame works.
        p.map(&mut f, GPA_LIMIT - PAGE_SIZE, 0x7000, PageSize::Size4K, Perms::RAM, false).unwrap();
        assert_eq!(p.lookup(&mut f, GPA_LIMIT - 1).map(|x| x.0), Some(0x7fff));
        p.destroy(&mut f);
        assert!(f.live.is_empty());
    }

    /// Table frames are counted and capped: mappings at scattered addresses stop with `TableLimit`, and a split
    /// that would need one more table fails without changing the map.
    #[test]
    fn table_frames_are_capped() {
        let mut f = Fake::default();
        let mut p = P2m::<Npt>::new(&mut f).unwrap();
        p.set_table_limit(10);
        let mut mapped = 0;
        for i in 1..100u64 {
            match p.map(&mut f, i << 30, 0x1000, PageSize::Size4K, Perms::RAM, false) {
                Ok(()) => mapped += 1,
                Err(e) => {
                    assert_eq!(e, MapError::TableLimit);
                    break;
                }
            }
        }
        // Root + L3, then an L2 and an L1 per GiB: 4 regions fit in 10 frames.
        assert_eq!(mapped, 4);
        assert_eq!(p.table_frames(), 10);
        assert_eq!(f.live.len(), 10, "no table allocated past the cap");
        // Inside an existing region, no table is needed.
        p.map(&mut f, (1 << 30) + 0x1000, 0x2000, PageSize::Size4K, Perms::RAM, false).unwrap();
        // Splitting a 2 MiB leaf needs a table: refused at the cap, the leaf is still there.
        p.set_table_limit(u64::MAX);
        f.data_frames = 512;
        p.map(&mut f, 0x20_0000, 0x8_0000_0000, PageSize::Size2M, Perms::RAM, true).unwrap();
        p.set_table_limit(p.table_frames());
        assert_eq!(p.unmap_4k(&mut f, 0x20_1000), Err(MapError::TableLimit));
        assert_eq!(p.lookup(&mut f, 0x20_1000).map(|x| x.0), Some(0x8_0000_1000));
        assert_eq!(p.destroy(&mut f), 512);
        assert!(f.live.is_empty());
        assert_eq!(tables_for(4 << 20), 1 + 1 + 1 + 2);
        assert_eq!(tables_for(0), 1);
    }

    /// Log-dirty in one format: protection of owned writable leaves only, a write fault giving back one page (a
    /// 2 MiB leaf split around it), re-protection after a CLEAN, and everything given back at the end.
    fn log_dirty_cycle<F: PteFormat>() {
        let mut f = Fake::default();
        let mut p = P2m::<F>::new(&mut f).unwrap();
        f.data_frames = 2 + 512;
        let ro = Perms { write: false, exec: true };
        p.map(&mut f, 0x1000, 0x7_0000_1000, PageSize::Size4K, Perms::RAM, true).unwrap();
        p.map(&mut f, 0x2000, 0x7_0000_2000, PageSize::Size4K, ro, true).unwrap();
        p.map(&mut f, 0x20_0000, 0x8_0000_0000, PageSize::Size2M, Perms::RAM, true).unwrap();
        // Not the domain's: a grant or foreign frame, and Keel's shared_info.
        p.map(&mut f, 0x9000, 0x5_0000_9000, PageSize::Size4K, Perms::RAM, false).unwrap();
        let tables = p.table_frames();

        assert_eq!(p.log_dirty_protect_all(&mut f), 1 + 512);
        let leaf = |p: &P2m<F>, f: &mut Fake, gpa| p.leaf(f, gpa).unwrap();
        for gpa in [0x1000, 0x20_0000, 0x3f_f000] {
            let l = leaf(&p, &mut f, gpa);
            assert!(!l.perms.write && l.log_dirty && l.owned, "{gpa:#x}: {l:?}");
            assert!(l.perms.exec, "only write access is taken");
        }
        assert_eq!(leaf(&p, &mut f, 0x20_5123).hpa, 0x8_0000_5123, "the mapping itself is unchanged");
        assert!(!leaf(&p, &mut f, 0x2000).log_dirty, "a read-only page is not the log's");
        assert!(leaf(&p, &mut f, 0x9000).perms.write, "frames the domain does not own keep their rights");
        assert_eq!(p.table_frames(), tables, "nothing is split up front");

        // Write faults: a 4 KiB page comes back; inside a 2 MiB leaf, one page comes back after a split.
        assert_eq!(p.log_dirty_unprotect(&mut f, 0x1000), Unprotected::Page);
        assert!(leaf(&p, &mut f, 0x1000).perms.write && !leaf(&p, &mut f, 0x1000).log_dirty);
        assert_eq!(p.log_dirty_unprotect(&mut f, 0x1000), Unprotected::Nothing, "a second fault finds it writable");
        assert_eq!(p.log_dirty_unprotect(&mut f, 0x2000), Unprotected::Nothing);
        assert_eq!(p.log_dirty_unprotect(&mut f, 0x9000), Unprotected::Nothing);
        assert_eq!(p.log_dirty_unprotect(&mut f, 0x7000), Unprotected::Nothing, "nothing mapped");
        assert_eq!(p.log_dirty_unprotect(&mut f, 0x20_3abc), Unprotected::Page);
        assert_eq!(p.table_frames(), tables + 1, "the 2 MiB leaf was split");
        let l = leaf(&p, &mut f, 0x20_3000);
        assert_eq!((l.size, l.perms.write, l.log_dirty, l.hpa), (PageSize::Size4K, true, false, 0x8_0000_3000));
        for gpa in [0x20_0000, 0x20_2000, 0x20_4000, 0x3f_f000] {
            let l = leaf(&p, &mut f, gpa);
            assert!(!l.perms.write && l.log_dirty && l.owned && l.perms.exec, "{gpa:#x}: {l:?}");
            assert_eq!(l.hpa, 0x8_0000_0000 + (gpa - 0x20_0000));
        }

        // CLEAN: the dirtied pages are protected again; others are left alone.
        assert!(p.log_dirty_reprotect(&mut f, 0x20_3000));
        assert!(p.log_dirty_reprotect(&mut f, 0x1000));
        assert!(!p.log_dirty_reprotect(&mut f, 0x1000), "already protected");
        assert!(!p.log_dirty_reprotect(&mut f, 0x9000), "not the domain's");
        assert!(!p.log_dirty_reprotect(&mut f, 0x2000), "read-only");
        assert!(leaf(&p, &mut f, 0x20_3000).log_dirty && leaf(&p, &mut f, 0x1000).log_dirty);

        // Unmapping inside a protected 2 MiB region keeps the neighbours protected (the split copies the bit).
        p.map(&mut f, 0x40_0000, 0x9_0000_0000, PageSize::Size2M, Perms::RAM, true).unwrap();
        p.log_dirty_reprotect(&mut f, 0x40_0000);
        f.data_frames += 512;
        assert_eq!(p.unmap_4k(&mut f, 0x40_1000).unwrap().unwrap().hpa, 0x9_0000_1000);
        f.data_frames -= 1;
        assert!(leaf(&p, &mut f, 0x40_2000).log_dirty && !leaf(&p, &mut f, 0x40_2000).perms.write);

        // Off: every protected page is writable again, nothing else changes.
        assert_eq!(p.log_dirty_restore_all(&mut f), 1 + 512 + 511);
        for gpa in [0x1000, 0x20_0000, 0x20_3000, 0x3f_f000, 0x40_2000] {
            let l = leaf(&p, &mut f, gpa);
            assert!(l.perms.write && !l.log_dirty && l.owned, "{gpa:#x}: {l:?}");
        }
        assert!(!leaf(&p, &mut f, 0x2000).perms.write, "read-only stays read-only");
        assert_eq!(p.log_dirty_restore_all(&mut f), 0);
        assert_eq!(p.destroy(&mut f), 2 + 512 + 511);
        assert!(f.live.is_empty(), "every table freed, the split ones too");
        assert_eq!(f.data_frames, 0, "every owned frame freed once");
    }

    #[test]
    fn log_dirty_on_npt() {
        log_dirty_cycle::<Npt>();
    }

    #[test]
    fn log_dirty_on_ept() {
        log_dirty_cycle::<Ept>();
    }

    /// A write fault in a protected 2 MiB leaf when the table cap leaves no frame for the split: the whole leaf is
    /// given back (for the caller to count all 512 pages dirty), and a CLEAN protects it whole again.
    #[test]
    fn log_dirty_without_a_table_for_the_split_gives_back_the_whole_leaf() {
        let mut f = Fake::default();
        let mut p = P2m::<Ept>::new(&mut f).unwrap();
        f.data_frames = 512;
        p.map(&mut f, 0x20_0000, 0x8_0000_0000, PageSize::Size2M, Perms::RAM, true).unwrap();
        p.set_table_limit(p.table_frames());
        assert_eq!(p.log_dirty_protect_all(&mut f), 512);
        assert_eq!(p.log_dirty_unprotect(&mut f, 0x21_2345), Unprotected::Large(0x20_0000));
        let l = p.leaf(&mut f, 0x3f_f000).unwrap();
        assert_eq!((l.size, l.perms.write, l.log_dirty), (PageSize::Size2M, true, false));
        assert!(p.log_dirty_reprotect(&mut f, 0x20_0000));
        assert!(!p.leaf(&mut f, 0x3f_f000).unwrap().perms.write);
        assert_eq!(p.log_dirty_restore_all(&mut f), 512);
        assert_eq!(p.destroy(&mut f), 512);
        assert!(f.live.is_empty());
    }

    /// The log-dirty bit is one both formats' MMUs ignore, clear of the address, the ownership bit and the rights.
    #[test]
    fn log_dirty_bit_is_software_only() {
        assert_eq!(LOG_DIRTY_BIT & (ADDR_MASK | OWNED_BIT | (1 << 63) | 0xfff), 0);
        let n = Npt::with_write(Npt::leaf(0x1000, Perms::RAM, PageSize::Size4K, true), false) | LOG_DIRTY_BIT;
        assert_eq!((Npt::addr(n), Npt::perms(n), Npt::present(n)), (0x1000, Perms { write: false, exec: true }, true));
        let e = Ept::with_write(Ept::leaf(0x20_0000, Perms::RAM, PageSize::Size2M, true), false) | LOG_DIRTY_BIT;
        let small = Ept::small_of_large(e, 3);
        assert_eq!(Ept::addr(small), 0x20_3000);
        assert!(!Ept::is_large(small) && Ept::log_dirty(small) && Ept::owned(small) && !Ept::perms(small).write);
        assert_eq!(small & 0b111_1000, 6 << 3, "memory type kept");
    }

    #[test]
    fn ept_and_npt_encodings() {
        let n = Npt::leaf(0x1000, Perms { write: false, exec: false }, PageSize::Size4K, false);
        assert_eq!(n & 0b111, 0b101);
        assert!(n & (1 << 63) != 0);
        let e = Ept::leaf(0x20_0000, Perms::RAM, PageSize::Size2M, true);
        assert_eq!(e & 0xff, 0b1011_0111);
        assert!(Ept::owned(e) && Ept::is_large(e));
        assert_eq!(Ept::perms(e), Perms::RAM);
    }
}
