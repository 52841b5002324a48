//! The network rings: `struct netif_tx_request`/`netif_tx_response` and `struct netif_rx_request`/
//! `netif_rx_response` (Xen `public/io/netif.h`), each ring in its own shared page (`public/io/ring.h`; the page's
//! head is [`super::blkif::SringHeader`]).

use bytemuck::{Pod, Zeroable};
use core::mem::{offset_of, size_of};

/// `NETTXF_csum_blank`: the packet's checksum is not filled in yet.
pub const TXF_CSUM_BLANK: u16 = 1 << 0;
/// `NETTXF_data_validated`.
pub const TXF_DATA_VALIDATED: u16 = 1 << 1;
/// `NETTXF_more_data`: the packet goes on in the next request.
pub const TXF_MORE_DATA: u16 = 1 << 2;
/// `NETTXF_extra_info`: an extra-info slot follows.
pub const TXF_EXTRA_INFO: u16 = 1 << 3;

/// `NETIF_RSP_DROPPED`.
pub const RSP_DROPPED: i16 = -2;
/// `NETIF_RSP_ERROR`.
pub const RSP_ERROR: i16 = -1;
/// `NETIF_RSP_OKAY`.
pub const RSP_OKAY: i16 = 0;
/// `NETIF_RSP_NULL`: the slot of an extra-info request.
pub const RSP_NULL: i16 = 1;

/// Linux netback's `XEN_NETBK_LEGACY_SLOTS_MAX`: the slots one packet may take without the frontend saying more.
pub const LEGACY_SLOTS_MAX: usize = 18;

/// `struct netif_tx_request`: one slot of a packet the frontend sends.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NetifTxRequest {
    /// Grant reference of the page holding the data.
    pub gref: u32,
    /// Offset of the data in the page.
    pub offset: u16,
    /// `NETTXF_*`.
    pub flags: u16,
    /// Echoed in the response.
    pub id: u16,
    /// The first slot: the whole packet's size; the others: this slot's.
    pub size: u16,
}

/// `struct netif_tx_response`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NetifTxResponse {
    pub id: u16,
    /// `NETIF_RSP_*`.
    pub status: i16,
}

/// `struct netif_rx_request`: a granted page the backend may fill with a received packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NetifRxRequest {
    pub id: u16,
    pub pad: u16,
    pub gref: u32,
}

/// `struct netif_rx_response`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NetifRxResponse {
    pub id: u16,
    /// Where in the page the data starts.
    pub offset: u16,
    /// `NETRXF_*`.
    pub flags: u16,
    /// The bytes received (positive) or `NETIF_RSP_*` (negative).
    pub status: i16,
}

/// Bytes of one tx ring slot (the union of request, response and `netif_extra_info`: the request is largest).
pub const TX_ENTRY_SIZE: usize = size_of::<NetifTxRequest>();
/// Bytes of one rx ring slot.
pub const RX_ENTRY_SIZE: usize = size_of::<NetifRxRequest>();

/// Slots in a one-page ring whose slots are `entry` bytes (`__RING_SIZE`).
const fn ring_size(entry: usize) -> u32 {
    let fit = (4096 - super::blkif::RING_OFFSET) / entry;
    1 << (usize::BITS - 1 - fit.leading_zeros())
}

/// `NET_TX_RING_SIZE` for a one-page ring.
pub const TX_RING_SIZE: u32 = ring_size(TX_ENTRY_SIZE);
/// `NET_RX_RING_SIZE` for a one-page ring.
pub const RX_RING_SIZE: u32 = ring_size(RX_ENTRY_SIZE);

const _: () = {
    assert!(offset_of!(NetifTxRequest, offset) == 4);
    assert!(offset_of!(NetifTxRequest, flags) == 6);
    assert!(offset_of!(NetifTxRequest, id) == 8);
    assert!(offset_of!(NetifTxRequest, size) == 10);
    assert!(size_of::<NetifTxRequest>() == 12);
    assert!(size_of::<NetifTxResponse>() == 4);
    assert!(offset_of!(NetifRxRequest, gref) == 4);
    assert!(size_of::<NetifRxRequest>() == 8);
    assert!(offset_of!(NetifRxResponse, status) == 6);
    assert!(size_of::<NetifRxResponse>() == 8);
    assert!(TX_RING_SIZE == 256);
    assert!(RX_RING_SIZE == 256);
};
