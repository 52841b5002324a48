//! Shared-ring protocols between a guest and its backends (Xen `xen/include/public/io/`).

pub mod blkif;
pub mod console;
pub mod netif;
pub mod xenbus;
pub mod xenstore;
pub mod xs_wire;
