//! The xenstore ring page: `struct xenstore_domain_interface` (Xen `public/io/xs_wire.h`).

use core::mem::{offset_of, size_of};

/// `XENSTORE_RING_SIZE`: bytes in each of the request and response rings.
pub const RING_SIZE: u32 = 1024;

/// `struct xenstore_domain_interface`: one page shared by a guest and xenstored.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenstoreDomainInterface {
    /// Requests (guest produces).
    pub req: [u8; RING_SIZE as usize],
    /// Responses and watch events (server produces).
    pub rsp: [u8; RING_SIZE as usize],
    /// Request consumer index (server).
    pub req_cons: u32,
    /// Request producer index (guest).
    pub req_prod: u32,
    /// Response consumer index (guest).
    pub rsp_cons: u32,
    /// Response producer index (server).
    pub rsp_prod: u32,
    /// `XENSTORE_SERVER_FEATURE_*` the server supports.
    pub server_features: u32,
    /// `XENSTORE_CONNECTED` / `XENSTORE_RECONNECT`.
    pub connection: u32,
    /// `XENSTORE_ERROR_*`: why the server stopped serving the ring.
    pub error: u32,
}

/// Offset of `req[]`.
pub const REQ: usize = offset_of!(XenstoreDomainInterface, req);
/// Offset of `rsp[]`.
pub const RSP: usize = offset_of!(XenstoreDomainInterface, rsp);
/// Offset of `req_cons`.
pub const REQ_CONS: usize = offset_of!(XenstoreDomainInterface, req_cons);
/// Offset of `req_prod`.
pub const REQ_PROD: usize = offset_of!(XenstoreDomainInterface, req_prod);
/// Offset of `rsp_cons`.
pub const RSP_CONS: usize = offset_of!(XenstoreDomainInterface, rsp_cons);
/// Offset of `rsp_prod`.
pub const RSP_PROD: usize = offset_of!(XenstoreDomainInterface, rsp_prod);
/// Offset of `server_features`.
pub const SERVER_FEATURES: usize = offset_of!(XenstoreDomainInterface, server_features);
/// Offset of `connection`.
pub const CONNECTION: usize = offset_of!(XenstoreDomainInterface, connection);
/// Offset of `error`.
pub const ERROR: usize = offset_of!(XenstoreDomainInterface, error);

/// `XENSTORE_SERVER_FEATURE_RECONNECTION`.
pub const SERVER_FEATURE_RECONNECTION: u32 = 1;
/// `XENSTORE_SERVER_FEATURE_ERROR`: the server reports why it stopped in `error`.
pub const SERVER_FEATURE_ERROR: u32 = 2;

/// `XENSTORE_ERROR_NONE`.
pub const ERROR_NONE: u32 = 0;
/// `XENSTORE_ERROR_COMM`: communication problem.
pub const ERROR_COMM: u32 = 1;
/// `XENSTORE_ERROR_RINGIDX`: invalid ring index.
pub const ERROR_RINGIDX: u32 = 2;
/// `XENSTORE_ERROR_PROTO`: protocol violation (payload too long).
pub const ERROR_PROTO: u32 = 3;

const _: () = {
    assert!(REQ == 0);
    assert!(RSP == 1024);
    assert!(REQ_CONS == 2048);
    assert!(REQ_PROD == 2052);
    assert!(RSP_CONS == 2056);
    assert!(RSP_PROD == 2060);
    assert!(SERVER_FEATURES == 2064);
    assert!(CONNECTION == 2068);
    assert!(ERROR == 2072);
    assert!(size_of::<XenstoreDomainInterface>() == 2076);
};
