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
pub mod hvm;
pub mod mm;
