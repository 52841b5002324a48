//! The PV console ring: `struct xencons_interface` (Xen `public/io/console.h`).

use core::mem::{offset_of, size_of};

/// Bytes in the input ring (backend → guest).
pub const IN_SIZE: u32 = 1024;
/// Bytes in the output ring (guest → backend).
pub const OUT_SIZE: u32 = 2048;

/// `struct xencons_interface`: one page shared by the guest and its console backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenconsInterface {
    /// Input ring (backend produces).
    pub r#in: [u8; IN_SIZE as usize],
    /// Output ring (guest produces).
    pub out: [u8; OUT_SIZE as usize],
    /// Input consumer index (guest).
    pub in_cons: u32,
    /// Input producer index (backend).
    pub in_prod: u32,
    /// Output consumer index (backend).
    pub out_cons: u32,
    /// Output producer index (guest).
    pub out_prod: u32,
}

/// Offset of `in[]`.
pub const IN: usize = offset_of!(XenconsInterface, r#in);
/// Offset of `out[]`.
pub const OUT: usize = offset_of!(XenconsInterface, out);
/// Offset of `in_cons`.
pub const IN_CONS: usize = offset_of!(XenconsInterface, in_cons);
/// Offset of `in_prod`.
pub const IN_PROD: usize = offset_of!(XenconsInterface, in_prod);
/// Offset of `out_cons`.
pub const OUT_CONS: usize = offset_of!(XenconsInterface, out_cons);
/// Offset of `out_prod`.
pub const OUT_PROD: usize = offset_of!(XenconsInterface, out_prod);

const _: () = {
    assert!(IN == 0);
    assert!(OUT == 1024);
    assert!(IN_CONS == 3072);
    assert!(IN_PROD == 3076);
    assert!(OUT_CONS == 3080);
    assert!(OUT_PROD == 3084);
    assert!(size_of::<XenconsInterface>() == 3088);
};
