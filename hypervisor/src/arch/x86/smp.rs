//! Starting the application processors: INIT-SIPI-SIPI into a real-mode trampoline that climbs to long mode.

use super::apic::{self, Ipi};
use super::percpu::{self, CpuState, MAX_CPUS};
use super::time;
use core::sync::atomic::{AtomicU64, Ordering};

/// Physical address the trampoline is copied to (SIPI vector 8).
pub const TRAMPOLINE_PADDR: u64 = 0x8000;
const AP_STACK_SIZE: usize = 64 * 1024;

/// The trampoline blob and the offsets of its data block (from `boot/ap_trampoline.S`).
pub struct Trampoline {
    /// The code and data to copy to [`TRAMPOLINE_PADDR`].
    pub image: &'static [u8],
    /// Offset of the 32-bit CR3 slot.
    pub cr3: usize,
    /// Offset of the stack-top slot.
    pub stack: usize,
    /// Offset of the entry-point slot.
    pub entry: usize,
    /// Offset of the argument slot (passed in RDI).
    pub arg: usize,
    /// Offset of the "started" flag the AP sets.
    pub started: usize,
}

/// Entry point of an AP in Rust: receives its CPU index.
pub type ApEntry = extern "C" fn(u64) -> !;

fn slot(off: usize) -> &'static AtomicU64 {
    // SAFETY: the trampoline page at TRAMPOLINE_PADDR is reserved for this purpose, identity-mapped, and each
    // slot is an 8-byte aligned u64 inside the copied image; APs and the BSP only touch it atomically.
    unsafe { &*((TRAMPOLINE_PADDR as usize + off) as *const AtomicU64) }
}

/// Starts every enabled CPU in `apic_ids` other than the boot CPU, one at a time, waiting for each to report
/// itself online. Returns the number of CPUs online afterwards (boot CPU included).
pub fn start_aps(t: &Trampoline, apic_ids: &[u32], cr3: u64, entry: ApEntry, limit: usize) -> usize {
    // SAFETY: the first megabyte is never handed out by the frame allocator, and nothing else lives at
    // TRAMPOLINE_PADDR; the image is smaller than the 28 KiB up to 0xF000.
    unsafe {
        core::ptr::copy_nonoverlapping(t.image.as_ptr(), TRAMPOLINE_PADDR as *mut u8, t.image.len());
    }
    let bsp = apic::id();
    let mut online = 1;
    for &id in apic_ids.iter().filter(|&&id| id != bsp) {
        if online >= limit.min(MAX_CPUS) {
            crate::info!("Not starting CPU with APIC id {id}: limit of {} CPUs reached", limit.min(MAX_CPUS));
            continue;
        }
        let index = online;
        let stack: &'static mut [u8] =
            alloc::boxed::Box::leak(alloc::vec![percpu::STACK_FILL; AP_STACK_SIZE].into_boxed_slice());
        let top = (stack.as_ptr() as u64 + AP_STACK_SIZE as u64) & !15;
        percpu::cpu(index).set_stack(stack.as_ptr() as u64, AP_STACK_SIZE as u64);
        slot(t.cr3).store(cr3, Ordering::SeqCst);
        slot(t.stack).store(top, Ordering::SeqCst);
        slot(t.entry).store(entry as usize as u64, Ordering::SeqCst);
        slot(t.arg).store(index as u64, Ordering::SeqCst);
        slot(t.started).store(0, Ordering::SeqCst);
        percpu::cpu(index).apic_id.store(id, Ordering::Relaxed);

        apic::send_ipi(id, Ipi::Init);
        time::delay_us(10_000);
        let sipi = Ipi::Startup((TRAMPOLINE_PADDR >> 12) as u8);
        apic::send_ipi(id, sipi);
        time::delay_us(200);
        if slot(t.started).load(Ordering::SeqCst) == 0 {
            apic::send_ipi(id, sipi);
        }
        // Wait up to one second (emulators are slow) for the AP to come online.
        let deadline = time::now_ns() + 1_000_000_000;
        while percpu::cpu(index).state() != CpuState::Online && time::now_ns() < deadline {
            core::hint::spin_loop();
        }
        if percpu::cpu(index).state() == CpuState::Online {
            online += 1;
        } else {
            crate::error!(
                "CPU with APIC id {id} did not come up (trampoline {})",
                if slot(t.started).load(Ordering::SeqCst) != 0 { "entered" } else { "never entered" }
            );
        }
    }
    online
}
