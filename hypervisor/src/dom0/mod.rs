//! The initial domain: built at boot from the first two boot modules (kernel, initrd) exactly as Xen does from
//! its GRUB stanza, sized by `dom0_mem=` and `dom0_max_vcpus=`, with Keel serving its console and tying the
//! machine's life to it. As on Xen, the store is dom0's own: Linux's XS_LOCAL xenbus (no HVM_PARAM_STORE_* for the
//! initial domain) talks to dom0's xenstored (dom0-tools/xenstore) over a page and a loopback event channel inside
//! dom0.
//!
//! - `builder`: kernel load, guest-physical layout, start_info;
//! - `console`: the PV console ring Keel serves for dom0;
//! - `input`: serial input, the Ctrl-A ×3 switch and Keel's debug keys;
//! - `power`: dom0's power-off or reboot is the machine's.

pub mod builder;
pub mod console;
pub mod input;
pub mod power;

pub use builder::build;
