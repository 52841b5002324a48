//! Keel, a type-1 hypervisor speaking the Xen guest ABI.
//!
//! The library holds every module; `main.rs` only lists the start-up steps. Modules that touch hardware build
//! for the host too (so `cargo test` and clippy see them), but only run on bare metal.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

extern crate alloc;

pub mod arch;
pub mod bootinfo;
pub mod cmdline;
pub mod console;
pub mod dom0;
pub mod domain;
pub mod hvm;
pub mod hypercall;
pub mod iommu;
pub mod loader;
pub mod mm;
pub mod run;
pub mod sched;
#[cfg(test)]
pub mod testing;
pub mod timers;
pub mod vmexit;
pub mod xtf;

/// Address the `selftest=pagefault` CPU reads: beyond every mapping Keel makes.
pub const SELFTEST_FAULT_ADDR: u64 = 0x7fff_dead_0000;

/// `selftest=pagefault`: this CPU reads an unmapped address on purpose; its exception handler stops it.
pub fn selftest_fault() {
    let cpu = arch::x86::percpu::current_index();
    info!("selftest: CPU{cpu} touching unmapped address {SELFTEST_FAULT_ADDR:#x}");
    // SAFETY: deliberately faulting: the address is unmapped, the read raises #PF and the handler halts this
    // CPU; no memory is accessed.
    let v = unsafe { core::ptr::read_volatile(SELFTEST_FAULT_ADDR as *const u64) };
    error!("selftest: read of an unmapped address returned {v:#x}");
}
