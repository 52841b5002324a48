//! DMA remapping for the hardware domain (issue 15): Intel VT-d units, found in the host's DMAR table, translate
//! every device's DMA through a second-level page table that mirrors dom0's physical map. Dom0's own RAM, the
//! firmware ranges the DMAR reserves for devices (RMRR) and every frame dom0 maps from another domain (a grant or
//! a foreign map) are there at dom0's guest-physical address; nothing else is, so a device dom0 drives reaches
//! exactly what dom0 reaches, and a DMA anywhere else (Keel, another domain's page) is blocked by the unit and
//! logged. Facts from Intel's VT-d specification (register offsets, root and context entries, second-level
//! entries), as QEMU's `intel-iommu` implements them.
//!
//! - Legacy (not scalable) mode: one root table whose 256 buses all point at one context table, whose 256
//!   entries all name dom0's table (domain id 1) with 3 or 4 levels (39- or 48-bit input addresses, as the units
//!   support).
//! - Register-based invalidation: a global context-cache flush once, and a global IOTLB flush after every
//!   mapping dom0 loses (and after each new one on units that cache not-present entries), before the frame can
//!   be freed or reused.
//! - Faults: each unit's fault event raises [`FAULT_VECTOR`] on the boot CPU; the handler only notes it, and the
//!   boot CPU's poller ([`report_faults`]) reads and clears the fault recording registers and logs each fault
//!   (the device, the address, read or write, the reason).

use crate::mm::p2m::{MapError, P2m, PageSize, Perms, PteFormat};
use crate::mm::MachineFrames;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::{Mutex, Once};

/// Keel's vector for the units' fault events (below the timer's 0xf0, above the MSI vectors 0xa0-0xdf).
pub const FAULT_VECTOR: u8 = 0xe8;
/// The domain id the units tag dom0's translations with (0 is reserved when a unit caches not-present entries).
const DOM0_DID: u64 = 1;

/// Register offsets.
mod reg {
    pub const VER: u64 = 0x00;
    pub const CAP: u64 = 0x08;
    pub const ECAP: u64 = 0x10;
    pub const GCMD: u64 = 0x18;
    pub const GSTS: u64 = 0x1c;
    pub const RTADDR: u64 = 0x20;
    pub const CCMD: u64 = 0x28;
    pub const FSTS: u64 = 0x34;
    pub const FECTL: u64 = 0x38;
    pub const FEDATA: u64 = 0x3c;
    pub const FEADDR: u64 = 0x40;
    pub const FEUADDR: u64 = 0x44;
}

/// GCMD/GSTS bits.
const TE: u32 = 1 << 31;
const SRTP: u32 = 1 << 30;
/// GSTS bits that stay set (translation, queued invalidation, interrupt remapping, compatibility format): a GCMD
/// write must repeat them.
const PERSISTENT: u32 = TE | (1 << 26) | (1 << 25) | (1 << 23);
/// CCMD: invalidate (bit 63), global granularity (bits 62:61 = 1).
const CCMD_GLOBAL: u64 = (1 << 63) | (1 << 61);
/// IOTLB register: invalidate (bit 63), global granularity (bits 61:60 = 1), drain reads and writes (49, 48).
const IOTLB_GLOBAL: u64 = (1 << 63) | (1 << 60) | (1 << 49) | (1 << 48);
/// Fault recording register, high half: fault (bit 63), type (bit 62: set for a read).
const FRCD_F: u64 = 1 << 63;
const FRCD_READ: u64 = 1 << 62;
/// FSTS: primary pending fault (1), fault overflow (0).
const FSTS_PPF: u32 = 1 << 1;
const FSTS_PFO: u32 = 1;
/// Polls of a register before a unit counts as not answering.
const SPINS: u32 = 1 << 24;

/// VT-d second-level entries: read (bit 0), write (bit 1), superpage (bit 7), the address in bits 12 up. Bit 11
/// (snoop) is reserved in legacy mode, so Keel's "owned" software bit is never set here: the mirror owns nothing.
pub enum Vtd {}

impl PteFormat for Vtd {
    fn table(paddr: u64) -> u64 {
        paddr | 0b11
    }
    fn leaf(paddr: u64, perms: Perms, size: PageSize, _owned: bool) -> u64 {
        let mut e = paddr | 1;
        if perms.write {
            e |= 0b10;
        }
        if size == PageSize::Size2M {
            e |= 1 << 7;
        }
        e
    }
    fn present(e: u64) -> bool {
        e & 0b11 != 0
    }
    fn perms(e: u64) -> Perms {
        Perms { write: e & 0b10 != 0, exec: true }
    }
}

/// One VT-d unit.
struct Unit {
    /// Register window (physical = Keel's virtual, in the uncached 3-4 GiB hole).
    base: u64,
    cap: u64,
    ecap: u64,
    /// Serializes command and invalidation sequences.
    lock: Mutex<()>,
}

impl Unit {
    fn read32(&self, off: u64) -> u32 {
        // SAFETY: `base` is a unit's register window from the DMAR, in the 3-4 GiB hole Keel maps uncached
        // (checked in `init`), and `off` one of its 32-bit registers.
        unsafe { core::ptr::read_volatile((self.base + off) as *const u32) }
    }
    fn write32(&self, off: u64, v: u32) {
        // SAFETY: as in `read32`.
        unsafe { core::ptr::write_volatile((self.base + off) as *mut u32, v) }
    }
    fn read64(&self, off: u64) -> u64 {
        // SAFETY: as in `read32`, for a 64-bit register (8-byte aligned).
        unsafe { core::ptr::read_volatile((self.base + off) as *const u64) }
    }
    fn write64(&self, off: u64, v: u64) {
        // SAFETY: as in `read64`.
        unsafe { core::ptr::write_volatile((self.base + off) as *mut u64, v) }
    }

    /// Offset of the IOTLB invalidation register (ECAP's IRO field, in 16-byte units, plus 8).
    fn iotlb(&self) -> u64 {
        ((self.ecap >> 8) & 0x3ff) * 16 + 8
    }
    /// Offset of the first fault recording register (CAP's FRO field, in 16-byte units) and their number.
    fn frcd(&self) -> (u64, u64) {
        (((self.cap >> 24) & 0x3ff) * 16, ((self.cap >> 40) & 0xff) + 1)
    }
    /// Second-level page-walk levels supported: bit 1 of SAGAW is 3 levels (39 bits), bit 2 four (48 bits).
    fn supports(&self, levels: u32) -> bool {
        (self.cap >> 8) & (1 << (levels - 2)) != 0
    }
    /// Whether the unit snoops the CPU's caches when it walks tables (ECAP.C).
    fn coherent(&self) -> bool {
        self.ecap & 1 != 0
    }
    /// Whether the unit may cache not-present entries (CAP.CM): then new mappings need a flush too.
    fn caches_misses(&self) -> bool {
        self.cap & (1 << 7) != 0
    }

    /// Waits until `done` holds of register `off` (32-bit).
    fn wait32(&self, off: u64, done: impl Fn(u32) -> bool) -> Result<(), String> {
        for _ in 0..SPINS {
            if done(self.read32(off)) {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(alloc::format!("VT-d unit at {:#x}: register {off:#x} did not settle", self.base))
    }

    fn wait64_clear(&self, off: u64, bit: u64) -> Result<(), String> {
        for _ in 0..SPINS {
            if self.read64(off) & bit == 0 {
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(alloc::format!("VT-d unit at {:#x}: register {off:#x} did not complete", self.base))
    }

    /// A global command: `bit` together with the enables already on; waits for its status bit.
    fn command(&self, bit: u32) -> Result<(), String> {
        let on = self.read32(reg::GSTS) & PERSISTENT;
        self.write32(reg::GCMD, on | bit);
        self.wait32(reg::GSTS, |s| s & bit != 0)
    }

    /// Global IOTLB invalidation, waited for.
    fn flush_iotlb(&self) -> Result<(), String> {
        let _g = self.lock.lock();
        self.write64(self.iotlb(), IOTLB_GLOBAL);
        self.wait64_clear(self.iotlb(), 1 << 63)
    }
}

static UNITS: Once<Vec<Unit>> = Once::new();
/// The context table every bus's root entry names (0 until [`enable`]).
static CONTEXT: AtomicU64 = AtomicU64::new(0);
/// A unit raised its fault event since the last [`report_faults`].
static FAULT_EVENT: AtomicBool = AtomicBool::new(false);
/// Faults logged so far.
static FAULTS: AtomicU64 = AtomicU64::new(0);
/// Faults logged one by one; later ones are counted, and every 1024th logged.
const FAULTS_SHOWN: u64 = 32;

/// Takes the VT-d units the host's DMAR lists: each must be in segment 0 with its registers in the uncached
/// 3-4 GiB hole, and all must share a page-walk depth. Nothing is enabled yet ([`enable`] does that). Returns the
/// depth (3 or 4 levels).
pub fn init(dmar: &keel_image::host_acpi::Dmar) -> Result<u32, String> {
    if dmar.units.is_empty() {
        return Err("the DMAR lists no VT-d unit".into());
    }
    let mut units = Vec::new();
    for d in &dmar.units {
        if d.segment != 0 || !(0xc000_0000..0xffff_f000).contains(&d.base) || d.base & 0xfff != 0 {
            return Err(alloc::format!("VT-d unit at {:#x} (segment {}): not one Keel can drive", d.base, d.segment));
        }
        let mut u = Unit { base: d.base, cap: 0, ecap: 0, lock: Mutex::new(()) };
        u.cap = u.read64(reg::CAP);
        u.ecap = u.read64(reg::ECAP);
        let ver = u.read32(reg::VER);
        crate::info!(
            "IOMMU: VT-d {}.{} unit at {:#x}{}: cap {:#x} ecap {:#x}",
            (ver >> 4) & 0xf,
            ver & 0xf,
            d.base,
            if d.include_all { " (every device)" } else { "" },
            u.cap,
            u.ecap
        );
        units.push(u);
    }
    let levels = [4, 3]
        .into_iter()
        .find(|&l| units.iter().all(|u| u.supports(l)))
        .ok_or("the VT-d units share no 3- or 4-level page walk")?;
    UNITS.call_once(|| units);
    crate::arch::x86::trap::register_handler(FAULT_VECTOR, fault_event);
    Ok(levels)
}

/// Points every unit's every device at the second-level table `slptptr` (`levels` deep, domain id 1), routes
/// fault events to the boot CPU (APIC id `bsp_apic_id`) and turns translation on.
pub fn enable(slptptr: u64, levels: u32, bsp_apic_id: u32) -> Result<(), String> {
    let units = UNITS.get().ok_or("no VT-d unit")?;
    let root = crate::mm::alloc_frame().map_err(|_| "no frame for the root table")?;
    let context = crate::mm::alloc_frame().map_err(|_| "no frame for the context table")?;
    // SAFETY: both frames were just allocated for Keel alone, are page-aligned and identity-mapped; each is
    // 256 entries of 16 bytes (two u64s).
    let (root_t, ctx_t) = unsafe { (&mut *(root as *mut [u64; 512]), &mut *(context as *mut [u64; 512])) };
    for bus in 0..256 {
        root_t[2 * bus] = context | 1; // present
        root_t[2 * bus + 1] = 0;
    }
    for devfn in 0..256 {
        // Present, faults reported, translation type 0 (untranslated requests through the table).
        ctx_t[2 * devfn] = slptptr | 1;
        // Address width: 1 for 3 levels, 2 for 4; the domain id in bits 23:8.
        ctx_t[2 * devfn + 1] = u64::from(levels - 2) | (DOM0_DID << 8);
    }
    sync_tables();
    CONTEXT.store(context, Ordering::Release);
    for u in units {
        u.write64(reg::RTADDR, root);
        u.command(SRTP)?;
        {
            let _g = u.lock.lock();
            u.write64(reg::CCMD, CCMD_GLOBAL);
            u.wait64_clear(reg::CCMD, 1 << 63)?;
        }
        u.flush_iotlb()?;
        // Fault events: a fixed interrupt, Keel's vector, to the boot CPU in physical mode; then unmasked.
        u.write32(reg::FEDATA, u32::from(FAULT_VECTOR));
        u.write32(reg::FEADDR, 0xfee0_0000 | (bsp_apic_id & 0xff) << 12);
        u.write32(reg::FEUADDR, 0);
        u.write32(reg::FECTL, 0);
        u.command(TE)?;
        crate::info!(
            "IOMMU: unit at {:#x} translates every device's DMA through dom0's map ({levels} levels, faults to \
             vector {FAULT_VECTOR:#x})",
            u.base
        );
    }
    Ok(())
}

/// Blocks every device's DMA (the domain that drove them is going away): every context entry is cleared and the
/// units' caches flushed, so any later DMA faults.
pub fn block_all() {
    let context = CONTEXT.load(Ordering::Acquire);
    if context == 0 {
        return;
    }
    // SAFETY: `enable` allocated this frame for the context table and never frees it; only this function and
    // `enable` write it.
    unsafe { core::ptr::write_bytes(context as *mut u8, 0, 4096) };
    sync_tables();
    for u in UNITS.get().map(Vec::as_slice).unwrap_or_default() {
        let _g = u.lock.lock();
        u.write64(reg::CCMD, CCMD_GLOBAL);
        let done = u.wait64_clear(reg::CCMD, 1 << 63);
        drop(_g);
        if let Err(e) = done.and_then(|()| u.flush_iotlb()) {
            crate::error!("IOMMU: {e}");
        }
    }
    crate::warning!("IOMMU: every device's DMA is blocked now");
}

/// Makes table updates visible to units that do not snoop the caches (Keel does not track single entries).
fn sync_tables() {
    if UNITS.get().is_some_and(|us| us.iter().any(|u| !u.coherent())) {
        // SAFETY: WBINVD writes back and invalidates the caches; it has no memory operands and Keel runs at
        // ring 0.
        unsafe { core::arch::asm!("wbinvd", options(nostack, preserves_flags)) };
    }
}

/// After a mapping went away (or, on units that cache misses, came): every unit's IOTLB is flushed, so no DMA
/// uses the old translation once this returns.
fn flush(new_mapping: bool) {
    sync_tables();
    for u in UNITS.get().map(Vec::as_slice).unwrap_or_default() {
        if new_mapping && !u.caches_misses() {
            continue;
        }
        if let Err(e) = u.flush_iotlb() {
            crate::error!("IOMMU: {e}");
        }
    }
}

fn fault_event(_: &mut crate::arch::x86::trap::TrapFrame) {
    FAULT_EVENT.store(true, Ordering::Release);
    crate::arch::x86::apic::eoi();
}

/// The boot CPU's poller: logs and clears every recorded fault after a fault event.
pub fn report_faults() {
    if !FAULT_EVENT.swap(false, Ordering::AcqRel) {
        return;
    }
    for u in UNITS.get().map(Vec::as_slice).unwrap_or_default() {
        let _g = u.lock.lock();
        let (first, count) = u.frcd();
        for i in 0..count {
            let at = first + 16 * i;
            let hi = u.read64(at + 8);
            if hi & FRCD_F == 0 {
                continue;
            }
            let addr = u.read64(at) & !0xfff;
            // Clear it (F is write-1-to-clear, in the top byte of the high half).
            u.write32(at + 12, (FRCD_F >> 32) as u32);
            let n = FAULTS.fetch_add(1, Ordering::Relaxed) + 1;
            if n <= FAULTS_SHOWN || n.is_multiple_of(1024) {
                let sid = hi & 0xffff;
                crate::warning!(
                    "IOMMU: DMA fault {n}: device {:02x}:{:02x}.{} {} at {addr:#x} blocked (reason {:#x}: {})",
                    sid >> 8,
                    (sid >> 3) & 0x1f,
                    sid & 7,
                    if hi & FRCD_READ != 0 { "read" } else { "write" },
                    (hi >> 32) & 0xff,
                    reason((hi >> 32) as u8)
                );
            }
        }
        let fsts = u.read32(reg::FSTS);
        if fsts & (FSTS_PFO | FSTS_PPF) != 0 {
            u.write32(reg::FSTS, fsts & FSTS_PFO);
        }
    }
}

/// What a VT-d fault reason code means.
fn reason(code: u8) -> &'static str {
    match code {
        1 => "no root entry",
        2 => "no context entry",
        3 => "bad context entry",
        4 => "address beyond the table's reach",
        5 => "no write access: not mapped, or read-only",
        6 => "no read access: not mapped",
        7 => "bad table entry",
        _ => "other",
    }
}

/// The units' view of a domain's physical map: a second-level table kept equal to the p2m's RAM, grant and
/// foreign entries (its owner calls [`Mirror::map`] and [`Mirror::unmap_4k`] with every change). Its leaves are
/// all 4 KiB, so taking one page away never needs a table frame and cannot fail (dom0's 512 MiB cost 1 MiB of
/// tables).
pub struct Mirror {
    table: P2m<Vtd>,
    levels: u32,
}

impl Mirror {
    /// An empty table for `levels`-deep walks.
    pub fn new(levels: u32) -> Result<Self, String> {
        let table = P2m::new(&mut MachineFrames).map_err(|_| "no frame for the IOMMU's table")?;
        Ok(Self { table, levels })
    }

    /// Addresses the units' walk reaches.
    fn reach(&self) -> u64 {
        1 << (12 + 9 * self.levels)
    }

    /// The table the units walk: the 4-level root, or for 3 levels the table of its first 512 GiB.
    pub fn slptptr(&self) -> Result<u64, String> {
        if self.levels == 4 {
            return Ok(self.table.root());
        }
        let first = crate::mm::p2m::FrameSource::table(&mut MachineFrames, self.table.root())[0];
        (first & 0b11 != 0).then_some(first & 0x000f_ffff_ffff_f000).ok_or_else(|| "the IOMMU's table is empty".into())
    }

    /// Enters `bytes` at `gpa` → `hpa` (page-aligned), writable when `write`, without flushing.
    fn insert(&mut self, gpa: u64, hpa: u64, bytes: u64, write: bool) {
        if gpa.saturating_add(bytes) > self.reach() {
            crate::warning!("IOMMU: dom0's gpa {gpa:#x} is beyond the units' reach: devices cannot use it");
            return;
        }
        let perms = Perms { write, exec: true };
        for off in (0..bytes).step_by(4096) {
            match self.table.map(&mut MachineFrames, gpa + off, hpa + off, PageSize::Size4K, perms, false) {
                Ok(()) | Err(MapError::Busy) => {}
                Err(e) => {
                    crate::warning!("IOMMU: cannot map dom0's gpa {:#x} for devices: {e:?}", gpa + off);
                    return;
                }
            }
        }
    }

    /// Lets devices reach `hpa` at `gpa` (`size`), writable when `write`.
    pub fn map(&mut self, gpa: u64, hpa: u64, size: PageSize, write: bool) {
        self.insert(gpa, hpa, size.bytes(), write);
        flush(true);
    }

    /// [`Self::map`] of many ranges (gpa, hpa, bytes, write) with one flush.
    pub fn map_all(&mut self, ranges: impl IntoIterator<Item = (u64, u64, u64, bool)>) {
        for (gpa, hpa, bytes, write) in ranges {
            self.insert(gpa, hpa, bytes, write);
        }
        flush(true);
    }

    /// What a device reaches at `gpa`: the host address and whether it may write.
    #[cfg(test)]
    pub fn lookup(&self, gpa: u64) -> Option<(u64, bool)> {
        self.table.lookup(&mut MachineFrames, gpa).map(|(hpa, p)| (hpa, p.write))
    }

    /// Frees the table (after [`block_all`]: no unit walks it any more).
    pub fn destroy(self) {
        self.table.destroy(&mut MachineFrames);
    }

    /// Takes `gpa`'s page away from devices; once this returns, no DMA reaches the frame through it.
    pub fn unmap_4k(&mut self, gpa: u64) {
        if gpa >= self.reach() {
            return;
        }
        match self.table.unmap_4k(&mut MachineFrames, gpa) {
            Ok(Some(_)) => flush(false),
            Ok(None) => {}
            // Only a split needs a frame, and the mirror has no large leaf to split.
            Err(e) => crate::error!("IOMMU: cannot unmap dom0's gpa {gpa:#x} for devices: {e:?}"),
        }
    }
}
