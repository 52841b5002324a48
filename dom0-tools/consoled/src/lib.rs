//! Keel's `xenconsoled`: dom0's console backend for guest domains, as Xen's (tools/console/daemon). Each guest's
//! console ring (`struct xencons_interface`) is connected to a pty whose path is published as
//! `/local/domain/N/console/tty` for `xm console`, and with `--log=guest` copied to
//! `/var/log/xen/console/guest-NAME.log`.
//!
//! [`ring`] is the ring logic on a page trait (unit-tested on memory), [`buffer`] the bounded pty queue, [`pty`]
//! the pty pair, [`daemon`] the watches and the poll loop over a [`daemon::Platform`] (the hypervisor's domains,
//! mappings and event channels; the host test supplies a fake one).

pub mod buffer;
pub mod daemon;
pub mod pty;
pub mod ring;
pub mod selfcheck;
