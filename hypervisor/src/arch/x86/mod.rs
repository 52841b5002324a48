//! x86-64: CPU registers and instructions, descriptor tables, traps, the local APIC, timers, host ACPI, SMP
//! start-up, Keel's page tables and power control.

pub mod acpi;
pub mod apic;
pub mod cpu;
pub mod fpu;
pub mod gdt;
pub mod ioapic;
pub mod paging;
pub mod percpu;
pub mod power;
pub mod rtc;
pub mod serial;
pub mod smp;
pub mod time;
pub mod trap;
