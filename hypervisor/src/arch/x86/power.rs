//! Power-off and reboot: ACPI first, then the legacy fallbacks (0xCF9, the keyboard controller, a triple fault).

use super::acpi::PowerInfo;
use super::{cpu, time};

static POWER: spin::Once<PowerInfo> = spin::Once::new();

const SLP_EN: u16 = 1 << 13;
const SCI_EN: u16 = 1;

/// Records what the FADT and DSDT said.
pub fn init(info: PowerInfo) {
    POWER.call_once(|| info);
}

/// Powers the machine off. Returns only if every method failed.
pub fn power_off() {
    super::percpu::log_stack_use();
    crate::info!("Powering off");
    cpu::disable_interrupts();
    if let Some(p) = POWER.get() {
        if let (Some(port), Some((typ_a, typ_b))) = (p.pm1a_cnt, p.s5) {
            // SAFETY: PM1a/PM1b control and the SMI command port are the FADT's fixed hardware registers; writing
            // SLP_TYP|SLP_EN is the architected S5 request, and nothing else in Keel uses these ports.
            unsafe {
                if let Some((smi, enable)) = p.acpi_enable {
                    if inw(port) & SCI_EN == 0 {
                        cpu::outb(smi, enable);
                        time::delay_us(10_000);
                    }
                }
                cpu::outw(port, (typ_a as u16) << 10 | SLP_EN);
                if let Some(b) = p.pm1b_cnt {
                    cpu::outw(b, (typ_b as u16) << 10 | SLP_EN);
                }
            }
            time::delay_us(100_000);
        }
    }
    crate::error!("ACPI power-off failed; halting");
}

/// Reboots the machine; never returns.
pub fn reboot() -> ! {
    super::percpu::log_stack_use();
    crate::info!("Rebooting");
    cpu::disable_interrupts();
    if let Some((port, value)) = POWER.get().and_then(|p| p.reset) {
        // SAFETY: the FADT's reset register with its reset value: the architected reset request.
        unsafe { cpu::outb(port, value) };
        time::delay_us(50_000);
    }
    // SAFETY: 0xCF9 is the PCI reset control register on PC chipsets; 0x02 then 0x06 requests a hard reset.
    unsafe {
        cpu::outb(0xcf9, 0x02);
        time::delay_us(10);
        cpu::outb(0xcf9, 0x06);
    }
    time::delay_us(50_000);
    // SAFETY: 0x64 is the 8042 keyboard controller; command 0xFE pulses the CPU reset line.
    unsafe { cpu::outb(0x64, 0xfe) };
    time::delay_us(50_000);
    // Last resort: a triple fault through an empty IDT.
    #[repr(C, packed)]
    struct Idtr {
        limit: u16,
        base: u64,
    }
    let empty = Idtr { limit: 0, base: 0 };
    // SAFETY: deliberately resets the CPU; nothing runs after this.
    unsafe { core::arch::asm!("lidt [{}]", "int3", in(reg) &empty, options(noreturn)) }
}

/// Reads a 16-bit I/O port.
///
/// # Safety
/// As for [`cpu::inb`].
unsafe fn inw(port: u16) -> u16 {
    let v: u16;
    // SAFETY: forwarded to the caller.
    unsafe { core::arch::asm!("in ax, dx", out("ax") v, in("dx") port, options(nomem, nostack, preserves_flags)) };
    v
}

/// Ends an emulator run with a failure status through QEMU's isa-debug-exit device (port 0xf4); on real
/// hardware nothing listens there and Keel halts.
pub fn debug_exit(code: u8) -> ! {
    crate::info!("Exiting with status {code}");
    // SAFETY: port 0xf4 is unused on PCs; under QEMU's isa-debug-exit it ends the emulator.
    unsafe { cpu::outb(0xf4, code) };
    cpu::halt_forever()
}
