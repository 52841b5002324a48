//! Guest physical memory: the physical-to-machine map of a domain, kept directly in the nested page-table format
//! of the CPU (AMD NPT entries are ordinary x86-64 entries; Intel EPT entries differ). The walk, the allocation
//! and the accounting are common; only the entry encoding comes from a [`PteFormat`].
//!
//! Four levels of 512 entries reach 48 bits of guest-physical address: a GPA at or above [`GPA_LIMIT`] is refused
//! by every entry point (map, lookup, unmap) instead of being truncated onto a lower one. The table frames a map
//! uses are counted and capped ([`P2m::set_table_limit`]), so that a guest cannot make Keel allocate page tables
//! without bound by mapping frames at scattered addresses.

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

    /// Translates a guest-physical address.
    pub fn lookup(&self, src: &mut impl FrameSource, gpa: u64) -> Option<(u64, Perms)> {
        if gpa >= GPA_LIMIT || self.root == 0 {
            return None;
        }
        let mut table = self.root;
        for level in (1..=4).rev() {
            let e = src.table(table)[index(gpa, level)];
            if !F::present(e) {
                return None;
            }
            if level == 1 || (level == 2 && F::is_large(e)) {
                let size = if level == 1 { PAGE_SIZE } else { 2 << 20 };
                return Some((F::addr(e) + (gpa & (size - 1)), F::perms(e)));
            }
            table = F::addr(e);
        }
        None
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
                // Split: a new table of 512 leaves with the same rights and ownership.
                let t = self.alloc_table(src)?;
                let (base, perms, owned) = (F::addr(e) & !((2 << 20) - 1), F::perms(e), F::owned(e));
                for k in 0..512u64 {
                    src.table(t)[k as usize] = F::leaf(base + k * PAGE_SIZE, perms, PageSize::Size4K, owned);
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
