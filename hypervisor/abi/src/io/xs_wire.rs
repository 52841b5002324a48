//! The xenstore wire protocol: message header, message types and limits (Xen `public/io/xs_wire.h`).

use core::mem::size_of;

/// `XS_CONTROL` (formerly `XS_DEBUG`).
pub const XS_CONTROL: u32 = 0;
/// `XS_DIRECTORY`.
pub const XS_DIRECTORY: u32 = 1;
/// `XS_READ`.
pub const XS_READ: u32 = 2;
/// `XS_GET_PERMS`.
pub const XS_GET_PERMS: u32 = 3;
/// `XS_WATCH`.
pub const XS_WATCH: u32 = 4;
/// `XS_UNWATCH`.
pub const XS_UNWATCH: u32 = 5;
/// `XS_TRANSACTION_START`.
pub const XS_TRANSACTION_START: u32 = 6;
/// `XS_TRANSACTION_END`.
pub const XS_TRANSACTION_END: u32 = 7;
/// `XS_INTRODUCE`.
pub const XS_INTRODUCE: u32 = 8;
/// `XS_RELEASE`.
pub const XS_RELEASE: u32 = 9;
/// `XS_GET_DOMAIN_PATH`.
pub const XS_GET_DOMAIN_PATH: u32 = 10;
/// `XS_WRITE`.
pub const XS_WRITE: u32 = 11;
/// `XS_MKDIR`.
pub const XS_MKDIR: u32 = 12;
/// `XS_RM`.
pub const XS_RM: u32 = 13;
/// `XS_SET_PERMS`.
pub const XS_SET_PERMS: u32 = 14;
/// `XS_WATCH_EVENT`.
pub const XS_WATCH_EVENT: u32 = 15;
/// `XS_ERROR`.
pub const XS_ERROR: u32 = 16;
/// `XS_IS_DOMAIN_INTRODUCED`.
pub const XS_IS_DOMAIN_INTRODUCED: u32 = 17;
/// `XS_RESUME`.
pub const XS_RESUME: u32 = 18;
/// `XS_SET_TARGET`.
pub const XS_SET_TARGET: u32 = 19;
/// `XS_RESET_WATCHES`.
pub const XS_RESET_WATCHES: u32 = 21;
/// `XS_DIRECTORY_PART`.
pub const XS_DIRECTORY_PART: u32 = 22;

/// `XENSTORE_PAYLOAD_MAX`: the longest payload a message may carry.
pub const XENSTORE_PAYLOAD_MAX: u32 = 4096;
/// `XENSTORE_ABS_PATH_MAX`.
pub const XENSTORE_ABS_PATH_MAX: usize = 3072;
/// `XENSTORE_REL_PATH_MAX`.
pub const XENSTORE_REL_PATH_MAX: usize = 2048;

/// `struct xsd_sockmsg`: the header in front of every request, reply and event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XsdSockmsg {
    /// `XS_*`.
    pub typ: u32,
    /// Request identifier, echoed in the reply.
    pub req_id: u32,
    /// Transaction id (0 outside a transaction).
    pub tx_id: u32,
    /// Length of the payload that follows.
    pub len: u32,
}

/// Bytes in the header.
pub const HEADER_SIZE: usize = size_of::<XsdSockmsg>();

impl XsdSockmsg {
    /// Decodes a little-endian header.
    pub fn from_bytes(b: &[u8; HEADER_SIZE]) -> Self {
        let w = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Self { typ: w(0), req_id: w(4), tx_id: w(8), len: w(12) }
    }

    /// Encodes it little-endian.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut out = [0u8; HEADER_SIZE];
        for (i, x) in [self.typ, self.req_id, self.tx_id, self.len].into_iter().enumerate() {
            out[4 * i..4 * i + 4].copy_from_slice(&x.to_le_bytes());
        }
        out
    }
}

const _: () = assert!(HEADER_SIZE == 16);
