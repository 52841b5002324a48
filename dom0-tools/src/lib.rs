//! Keel dom0 toolstack library.
//!
//! [`xm`] is the `xm` command (its command table, dispatch and handlers);
//! the other modules parse and validate the values its arguments carry.

pub mod cpus;
pub mod create_vars;
pub mod domain;
pub mod host;
pub mod mem;
pub mod relocd;
pub mod sched;
pub mod sysrq;
pub mod xm;
