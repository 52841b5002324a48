//! The block-device ring: `struct blkif_request`/`blkif_response` (Xen `public/io/blkif.h`) in a shared ring
//! page (`public/io/ring.h`, `DEFINE_RING_TYPES`), x86_64 layout (the "x86_64-abi" protocol).

use bytemuck::{Pod, Zeroable};
use core::mem::{offset_of, size_of};

/// `BLKIF_OP_READ`: the backend writes the guest's granted pages.
pub const OP_READ: u8 = 0;
/// `BLKIF_OP_WRITE`: the backend reads them.
pub const OP_WRITE: u8 = 1;
/// `BLKIF_OP_WRITE_BARRIER`.
pub const OP_WRITE_BARRIER: u8 = 2;
/// `BLKIF_OP_FLUSH_DISKCACHE`.
pub const OP_FLUSH_DISKCACHE: u8 = 3;
/// `BLKIF_OP_DISCARD`.
pub const OP_DISCARD: u8 = 5;
/// `BLKIF_OP_INDIRECT`.
pub const OP_INDIRECT: u8 = 6;

/// `BLKIF_MAX_SEGMENTS_PER_REQUEST`.
pub const MAX_SEGMENTS_PER_REQUEST: usize = 11;
/// Sectors are 512 bytes whatever the disk's (`first_sect`, `last_sect` and `sector_number` count them).
pub const SECTOR_SIZE: u64 = 512;

/// `BLKIF_RSP_EOPNOTSUPP`.
pub const RSP_EOPNOTSUPP: i16 = -2;
/// `BLKIF_RSP_ERROR`.
pub const RSP_ERROR: i16 = -1;
/// `BLKIF_RSP_OKAY`.
pub const RSP_OKAY: i16 = 0;

/// `struct blkif_request_segment`: one granted page and the sectors in it (inclusive).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct BlkifRequestSegment {
    /// Grant reference of the page.
    pub gref: u32,
    /// First 512-byte sector of the page to transfer.
    pub first_sect: u8,
    /// Last one (inclusive).
    pub last_sect: u8,
    pub pad: u16,
}

/// `struct blkif_request` (read and write).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct BlkifRequest {
    /// `BLKIF_OP_*`.
    pub operation: u8,
    pub nr_segments: u8,
    /// The virtual device (`blkif_vdev_t`).
    pub handle: u16,
    pub pad: u32,
    /// Echoed in the response.
    pub id: u64,
    /// First sector on the disk.
    pub sector_number: u64,
    pub seg: [BlkifRequestSegment; MAX_SEGMENTS_PER_REQUEST],
}

/// `struct blkif_response`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct BlkifResponse {
    /// The request's `id`.
    pub id: u64,
    /// The request's `operation`.
    pub operation: u8,
    pub pad0: u8,
    /// `BLKIF_RSP_*`.
    pub status: i16,
    pub pad1: u32,
}

/// The head of a shared ring page (`struct NAME_sring` before `ring[]`): free-running indexes, never masked.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub struct SringHeader {
    /// Requests produced (frontend).
    pub req_prod: u32,
    /// The backend wants a notification when `req_prod` passes this.
    pub req_event: u32,
    /// Responses produced (backend).
    pub rsp_prod: u32,
    /// The frontend wants a notification when `rsp_prod` passes this.
    pub rsp_event: u32,
    /// `pvt` (4 bytes) and `__pad[44]`.
    pub pad: [u32; 12],
}

/// Offset of `ring[]` in the page.
pub const RING_OFFSET: usize = size_of::<SringHeader>();
/// Offset of `req_prod`.
pub const REQ_PROD: usize = offset_of!(SringHeader, req_prod);
/// Offset of `req_event`.
pub const REQ_EVENT: usize = offset_of!(SringHeader, req_event);
/// Offset of `rsp_prod`.
pub const RSP_PROD: usize = offset_of!(SringHeader, rsp_prod);
/// Offset of `rsp_event`.
pub const RSP_EVENT: usize = offset_of!(SringHeader, rsp_event);
/// Bytes of one ring slot (`union blkif_sring_entry`: the larger of request and response).
pub const ENTRY_SIZE: usize = size_of::<BlkifRequest>();
/// Slots in a one-page ring (`__RING_SIZE`: the entries that fit, rounded down to a power of two).
pub const RING_SIZE_1PAGE: u32 = {
    let fit = (4096 - RING_OFFSET) / ENTRY_SIZE;
    1 << (usize::BITS - 1 - fit.leading_zeros())
};

const _: () = {
    assert!(size_of::<BlkifRequestSegment>() == 8);
    assert!(offset_of!(BlkifRequest, handle) == 2);
    assert!(offset_of!(BlkifRequest, id) == 8);
    assert!(offset_of!(BlkifRequest, sector_number) == 16);
    assert!(offset_of!(BlkifRequest, seg) == 24);
    assert!(size_of::<BlkifRequest>() == 112);
    assert!(offset_of!(BlkifResponse, operation) == 8);
    assert!(offset_of!(BlkifResponse, status) == 10);
    assert!(size_of::<BlkifResponse>() == 16);
    assert!(RING_OFFSET == 64);
    assert!(RSP_EVENT == 12);
    assert!(RING_SIZE_1PAGE == 32);
};
