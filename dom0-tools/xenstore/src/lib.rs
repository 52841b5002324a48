//! Keel's xenstore: the store Xen's guests and tools share, as dom0's `xenstored` serves it.
//!
//! - [`wire`]: the message header and types of Xen's xenstore protocol (`docs/misc/xenstore.txt`,
//!   `public/io/xs_wire.h`), an incremental decoder that never trusts a length, and the reply payload shapes.
//! - [`path`]: path syntax and canonical (absolute) form.
//! - [`perms`]: Xen's permission lists (`n0 r5 w7 b9`: the first entry names the owner and everyone's default).
//! - [`store`]: the tree, connections with their watches and transactions, quotas, and [`store::Store::handle`],
//!   which turns one request into its reply plus the watch events and effects it causes.
//!
//! - [`server`]: the transports: dom0's Unix socket (`/run/xenstored/socket`) and domains' rings, both handing every
//!   request to the one [`store::Store`]; [`ring`]: the ring logic (pieces, wrap-around, bounds, protocol errors);
//!   [`local`]: dom0's own ring (Linux's XS_LOCAL page and port, `/dev/xen/evtchn`); [`client`]: the client side,
//!   used by the `xenstore-*` commands.
//!
//! The store itself is plain data and logic, without I/O, so every message type, permission rule, transaction
//! conflict and quota is unit-tested; the transports are tested over real sockets and in-memory rings, with hostile clients too.

pub mod client;
pub mod domain;
pub mod local;
pub mod path;
pub mod perms;
pub mod ring;
pub mod server;
pub mod store;
pub mod wire;

use std::fmt;

/// The errors xenstore reports, by the names its wire protocol sends (`xsd_errors` in `xs_wire.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XsError {
    Einval,
    Eacces,
    Eexist,
    Eisdir,
    Enoent,
    Enomem,
    Enospc,
    Eio,
    Enotempty,
    Enosys,
    Erofs,
    Ebusy,
    Eagain,
    Eisconn,
    E2big,
    Eperm,
}

impl XsError {
    /// The name sent in an `XS_ERROR` reply.
    pub fn name(self) -> &'static str {
        match self {
            Self::Einval => "EINVAL",
            Self::Eacces => "EACCES",
            Self::Eexist => "EEXIST",
            Self::Eisdir => "EISDIR",
            Self::Enoent => "ENOENT",
            Self::Enomem => "ENOMEM",
            Self::Enospc => "ENOSPC",
            Self::Eio => "EIO",
            Self::Enotempty => "ENOTEMPTY",
            Self::Enosys => "ENOSYS",
            Self::Erofs => "EROFS",
            Self::Ebusy => "EBUSY",
            Self::Eagain => "EAGAIN",
            Self::Eisconn => "EISCONN",
            Self::E2big => "E2BIG",
            Self::Eperm => "EPERM",
        }
    }

    /// Parses a name from an `XS_ERROR` payload (clients).
    pub fn from_name(s: &str) -> Option<Self> {
        const ALL: [XsError; 16] = [
            XsError::Einval,
            XsError::Eacces,
            XsError::Eexist,
            XsError::Eisdir,
            XsError::Enoent,
            XsError::Enomem,
            XsError::Enospc,
            XsError::Eio,
            XsError::Enotempty,
            XsError::Enosys,
            XsError::Erofs,
            XsError::Ebusy,
            XsError::Eagain,
            XsError::Eisconn,
            XsError::E2big,
            XsError::Eperm,
        ];
        ALL.into_iter().find(|e| e.name() == s)
    }
}

impl fmt::Display for XsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for XsError {}
