//! The machine's interrupt lines, forwarded to the hardware domain (issue 15, interrupts). When dom0 unmasks a pin
//! of its emulated IO-APIC (`hvm::vioapic`), Keel programs the same GSI's physical pin (`arch::x86::ioapic`) to raise
//! Keel's vector `GSI_VECTOR_BASE + gsi` on the boot CPU, with dom0's trigger mode and polarity; masking it masks
//! the physical pin.
//!
//! The interrupt handler only records the GSI as pending (a level-triggered pin is masked until dom0's EOI) and
//! acknowledges the local APIC: it takes no lock but the IO-APIC's, which is only ever held with interrupts off,
//! so it cannot deadlock with the code it interrupted. The boot CPU
//! then hands pending GSIs to dom0 between guest entries and on every scheduler pass ([`drain`]): the vector dom0
//! programmed goes into the IRR of the vCPU its entry names, which is kicked. Dom0's EOI of that vector unmasks a
//! level-triggered pin again ([`eoi`]), as the IO-APIC's EOI broadcast would.

use crate::arch::x86::{apic, ioapic, trap};
use core::sync::atomic::{AtomicU64, Ordering};

/// Keel's vector for GSI 0; GSI n raises `GSI_VECTOR_BASE + n`.
pub const GSI_VECTOR_BASE: u8 = 0x40;
/// GSIs Keel forwards: vectors 0x40-0x9f.
pub const MAX_GSIS: u32 = 0x60;

/// Marks a routed GSI in [`ROUTES`]: bit 40, reserved in a redirection entry (bits 56-63 are its destination).
const VALID: u64 = 1 << 40;
const WORDS: usize = MAX_GSIS.div_ceil(64) as usize;

/// Per GSI: `VALID` and dom0's redirection entry (vector, trigger, destination), or 0 when masked.
static ROUTES: [AtomicU64; MAX_GSIS as usize] = [const { AtomicU64::new(0) }; MAX_GSIS as usize];
/// GSIs raised and not yet handed to dom0.
static PENDING: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];
/// Level-triggered GSIs handed to dom0 and masked until its EOI.
static IN_SERVICE: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];
/// The entry last logged per GSI.
static LOGGED: [AtomicU64; MAX_GSIS as usize] = [const { AtomicU64::new(0) }; MAX_GSIS as usize];
/// Interrupts taken per GSI (the first few deliveries are logged).
static COUNTS: [AtomicU64; MAX_GSIS as usize] = [const { AtomicU64::new(0) }; MAX_GSIS as usize];

fn bit(set: &[AtomicU64; WORDS], gsi: u32, on: bool) -> bool {
    let (w, b) = ((gsi / 64) as usize, 1u64 << (gsi % 64));
    let old = if on { set[w].fetch_or(b, Ordering::AcqRel) } else { set[w].fetch_and(!b, Ordering::AcqRel) };
    old & b != 0
}

/// Keel's vectors for MSI and MSI-X: one per PCI function dom0 enables MSI on (`hvm::vpci`) and one per MSI-X
/// entry it unmasks (`hvm::msix`), 0xa0-0xdf.
pub const MSI_VECTOR_BASE: u8 = 0xa0;
/// Messages Keel forwards at once.
pub const MAX_MSI: usize = 0x40;
/// Per MSI vector: what holds it (see [`owner`]; 0 = free).
static MSI_OWNER: [AtomicU64; MAX_MSI] = [const { AtomicU64::new(0) }; MAX_MSI];
/// Per MSI vector: `VALID`, dom0's vector (bits 7:0) and destination APIC id (bits 15:8), or 0 while off.
static MSI_ROUTES: [AtomicU64; MAX_MSI] = [const { AtomicU64::new(0) }; MAX_MSI];
/// Per MSI vector: the route last logged.
static MSI_LOGGED: [AtomicU64; MAX_MSI] = [const { AtomicU64::new(0) }; MAX_MSI];
/// MSI vectors raised and not yet handed to dom0.
static MSI_PENDING: AtomicU64 = AtomicU64::new(0);

/// Installs the handlers (once, at boot).
pub fn init() {
    for gsi in 0..MAX_GSIS {
        trap::register_handler(GSI_VECTOR_BASE + gsi as u8, interrupt);
    }
    for i in 0..MAX_MSI {
        trap::register_handler(MSI_VECTOR_BASE + i as u8, message);
    }
}

fn message(frame: &mut trap::TrapFrame) {
    let i = frame.vector as u8 - MSI_VECTOR_BASE;
    MSI_PENDING.fetch_or(1 << i, Ordering::AcqRel);
    apic::eoi();
}

/// The key of a message source in [`MSI_OWNER`]: function `bdf`'s MSI (`entry` `None`) or its MSI-X entry.
fn owner(bdf: u16, entry: Option<u16>) -> u64 {
    u64::from(bdf) + 1 + (entry.map_or(0, |e| u64::from(e) + 1) << 16)
}

/// The boot CPU's APIC id and Keel's vector for the messages of PCI function `bdf` (the same each time it asks),
/// or `None` when every MSI vector is taken.
pub fn msi_vector(bdf: u16) -> Option<(u8, u8)> {
    vector_for(owner(bdf, None))
}

/// [`msi_vector`] for entry `entry` of function `bdf`'s MSI-X table.
pub fn msix_vector(bdf: u16, entry: u16) -> Option<(u8, u8)> {
    vector_for(owner(bdf, Some(entry)))
}

fn vector_for(owner: u64) -> Option<(u8, u8)> {
    let slot = MSI_OWNER.iter().position(|o| o.load(Ordering::Acquire) == owner).or_else(|| {
        MSI_OWNER.iter().position(|o| o.compare_exchange(0, owner, Ordering::AcqRel, Ordering::Acquire).is_ok())
    })?;
    let apic_id = crate::arch::x86::percpu::cpu(0).apic_id.load(Ordering::Relaxed) as u8;
    Some((apic_id, MSI_VECTOR_BASE + slot as u8))
}

/// Dom0 unmasked an MSI-X entry, or moved it while unmasked: its messages follow (`hvm::msix` has programmed
/// Keel's message into the device's entry).
pub fn msix_changed(c: crate::hvm::msix::MsixChange) {
    if c.vector >= 0x10 {
        let route = VALID | u64::from(c.vector) | u64::from(c.dest) << 8;
        set_message_route(c.bdf, Some(c.entry), route);
    }
}

/// Dom0 turned MSI on or off for a function, or moved it: messages follow (`hvm::vpci` has reprogrammed it).
pub fn msi_changed(change: crate::hvm::vpci::MsiChange) {
    use crate::hvm::vpci::MsiChange;
    let (bdf, route) = match change {
        // Linux rewrites the message piece by piece while MSI is on: a half-written one (vector 0-15, which no
        // interrupt may use) routes nothing until the rest comes.
        MsiChange::Enabled { bdf, vector, dest } if vector >= 0x10 => {
            (bdf, VALID | u64::from(vector) | u64::from(dest) << 8)
        }
        MsiChange::Enabled { bdf, .. } | MsiChange::Disabled { bdf } => (bdf, 0),
    };
    set_message_route(bdf, None, route);
}

/// Routes the messages of function `bdf`'s MSI (`entry` `None`) or MSI-X entry to `route` (0: nowhere), if Keel
/// gave it a vector; logged when the destination changes, not on each rewrite of the same message.
fn set_message_route(bdf: u16, entry: Option<u16>, route: u64) {
    let key = owner(bdf, entry);
    let Some(i) = MSI_OWNER.iter().position(|o| o.load(Ordering::Acquire) == key) else { return };
    MSI_ROUTES[i].store(route, Ordering::Release);
    if route != 0 && route != MSI_LOGGED[i].swap(route, Ordering::Relaxed) {
        let source = match entry {
            Some(e) => alloc::format!("MSI-X entry {e}"),
            None => "MSI".into(),
        };
        crate::info!(
            "PCI {:02x}:{:02x}.{}: {source} forwarded to dom0 as vector {:#x} (Keel's {:#x})",
            bdf >> 8,
            bdf >> 3 & 0x1f,
            bdf & 7,
            route as u8,
            MSI_VECTOR_BASE + i as u8
        );
    }
}

fn interrupt(frame: &mut trap::TrapFrame) {
    let gsi = u32::from(frame.vector as u8 - GSI_VECTOR_BASE);
    if gsi < MAX_GSIS {
        COUNTS[gsi as usize].fetch_add(1, Ordering::Relaxed);
        if ROUTES[gsi as usize].load(Ordering::Acquire) & ioapic::LEVEL != 0 {
            ioapic::set_masked(gsi, true);
            bit(&IN_SERVICE, gsi, true);
        }
        bit(&PENDING, gsi, true);
    }
    apic::eoi();
}

/// Dom0 wrote redirection entry `entry` for `gsi`: the physical pin follows it.
pub fn entry_written(gsi: u32, entry: u64) {
    if gsi >= MAX_GSIS {
        crate::warning!("dom0 routes GSI {gsi}, beyond the {MAX_GSIS} Keel forwards: left masked");
        return;
    }
    let vector = entry & 0xff;
    if entry & ioapic::MASKED != 0 || vector < 0x10 {
        ROUTES[gsi as usize].store(0, Ordering::Release);
        ioapic::route(gsi, ioapic::MASKED);
        bit(&IN_SERVICE, gsi, false);
        return;
    }
    ROUTES[gsi as usize].store(VALID | entry, Ordering::Release);
    let physical = u64::from(GSI_VECTOR_BASE + gsi as u8)
        | (entry & (ioapic::LEVEL | ioapic::ACTIVE_LOW))
        | u64::from(crate::arch::x86::percpu::cpu(0).apic_id.load(Ordering::Relaxed)) << 56;
    // Logged when dom0 routes it anew (not when it unmasks it again, which Linux does on every level interrupt).
    if ioapic::route(gsi, physical) && LOGGED[gsi as usize].swap(entry, Ordering::Relaxed) != entry {
        crate::info!(
            "GSI {gsi}: {} active {}, forwarded to dom0 as vector {vector:#x}",
            if entry & ioapic::LEVEL != 0 { "level" } else { "edge" },
            if entry & ioapic::ACTIVE_LOW != 0 { "low" } else { "high" },
        );
    }
}

/// Hands the pending GSIs to dom0 (the boot CPU calls it between guest entries and on each scheduler pass).
pub fn drain() {
    if PENDING.iter().all(|w| w.load(Ordering::Relaxed) == 0) && MSI_PENDING.load(Ordering::Relaxed) == 0 {
        return;
    }
    let Some(dom0) = super::get(0).filter(|d| d.owns_devices.load(Ordering::Acquire)) else { return };
    let mut msi = MSI_PENDING.swap(0, Ordering::AcqRel);
    while msi != 0 {
        let i = msi.trailing_zeros() as usize;
        msi &= msi - 1;
        let route = MSI_ROUTES[i].load(Ordering::Acquire);
        if route & VALID != 0 {
            let v = dom0.vcpus.get(usize::from((route >> 8) as u8)).unwrap_or(&dom0.vcpus[0]);
            v.lapic.lock().set_irr(route as u8);
            crate::sched::kick(v);
        }
    }
    for (w, word) in PENDING.iter().enumerate() {
        let mut bits = word.swap(0, Ordering::AcqRel);
        while bits != 0 {
            let gsi = w as u32 * 64 + bits.trailing_zeros();
            bits &= bits - 1;
            let route = ROUTES[gsi as usize].load(Ordering::Acquire);
            if route & VALID == 0 {
                continue;
            }
            // Physical destination: the vCPU with that APIC id (Keel's are the vCPU ids); anything else goes to
            // vCPU 0.
            let dest = ((route >> 56) & 0xff) as usize;
            let logical = route & (1 << 11) != 0;
            let v = if logical { None } else { dom0.vcpus.get(dest) }.unwrap_or(&dom0.vcpus[0]);
            if route & ioapic::LEVEL != 0 {
                v.lapic.lock().set_irr_level(route as u8);
            } else {
                v.lapic.lock().set_irr(route as u8);
            }
            crate::sched::kick(v);
            let n = COUNTS[gsi as usize].load(Ordering::Relaxed);
            if n <= 3 {
                crate::debug!("GSI {gsi}: interrupt {n} to d0v{} as vector {:#x}", v.id, route as u8);
            }
        }
    }
}

/// Dom0's vLAPIC took an EOI for `vector`: its level-triggered pins with that vector are unmasked again.
pub fn eoi(vector: u8) {
    for (w, word) in IN_SERVICE.iter().enumerate() {
        let mut bits = word.load(Ordering::Acquire);
        while bits != 0 {
            let gsi = w as u32 * 64 + bits.trailing_zeros();
            bits &= bits - 1;
            let route = ROUTES[gsi as usize].load(Ordering::Acquire);
            if route & VALID != 0 && route as u8 == vector && bit(&IN_SERVICE, gsi, false) {
                ioapic::set_masked(gsi, false);
            }
        }
    }
}
