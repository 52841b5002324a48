//! The initial domain: built at boot from the first two boot modules (kernel, initrd) exactly as Xen does from
//! its GRUB stanza, sized by `dom0_mem=` and `dom0_max_vcpus=`, with Keel serving its PV console and xenstore
//! and tying the machine's life to it.
//!
//! - `builder`: kernel load, guest-physical layout, start_info;
//! - `console`: the PV console ring Keel serves for dom0;
//! - `store`: the xenstore ring, answered by Keel's built-in store (`crate::xenstore`);
//! - `input`: serial input, the Ctrl-A ×3 switch and Keel's debug keys;
//! - `power`: dom0's power-off or reboot is the machine's.

pub mod builder;
pub mod console;
pub mod input;
pub mod power;
pub mod store;

pub use builder::build;

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// A ring Keel serves for dom0: the GFN of its page and dom0's end of its event channel.
pub(crate) struct RingSlot {
    gfn: AtomicU64,
    port: AtomicU32,
}

impl RingSlot {
    pub(crate) const fn new() -> Self {
        Self { gfn: AtomicU64::new(u64::MAX), port: AtomicU32::new(0) }
    }

    pub(crate) fn set(&self, gfn: u64, port: u32) {
        self.port.store(port, Ordering::Release);
        self.gfn.store(gfn, Ordering::Release);
    }

    /// The ring page's GFN, once set up.
    pub(crate) fn gfn(&self) -> Option<u64> {
        Some(self.gfn.load(Ordering::Acquire)).filter(|&g| g != u64::MAX)
    }

    pub(crate) fn port(&self) -> u32 {
        self.port.load(Ordering::Acquire)
    }
}
