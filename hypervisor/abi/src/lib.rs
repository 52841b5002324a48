//! The Xen guest ABI, written once for the hypervisor and for dom0-tools.
//!
//! Only layouts and constants live here, no logic. Every structure's size and field offsets are asserted at
//! compile time against the public Xen headers (see `shared/docs/xen-abi.md`).
#![no_std]

pub mod start_info;
