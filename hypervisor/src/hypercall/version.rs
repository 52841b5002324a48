//! `xen_version`.

use super::{Action, Ctx, HResult};
use keel_abi::hypercall::{errno::*, xenver, XenFeatureInfo};

/// XENFEAT bits offered to HVM/PVH guests: writable_page_tables (0), auto_translated_physmap (2),
/// hvm_callback_vector (8), hvm_safe_pvclock (9).
const FEATURES_SUBMAP0: u32 = 1 << 0 | 1 << 2 | 1 << 8 | 1 << 9;

pub fn xen_version(c: &mut Ctx) -> HResult {
    let (cmd, arg) = (c.args[0], c.args[1]);
    match cmd {
        xenver::VERSION => {
            let (maj, min) = keel_abi::XEN_VERSION;
            Ok(Action::Return(((maj << 16) | min) as u64))
        }
        xenver::EXTRAVERSION => {
            let mut s = [0u8; xenver::EXTRAVERSION_LEN];
            s[..7].copy_from_slice(b".0-keel");
            c.write_bytes(arg, &s)?;
            Ok(Action::Return(0))
        }
        xenver::CAPABILITIES => {
            let mut s = [0u8; 1024];
            let cap = b"hvm-3.0-x86_64";
            s[..cap.len()].copy_from_slice(cap);
            c.write_bytes(arg, &s)?;
            Ok(Action::Return(0))
        }
        xenver::GET_FEATURES => {
            let mut fi: XenFeatureInfo = c.read(arg)?;
            fi.submap = if fi.submap_idx == 0 { FEATURES_SUBMAP0 } else { 0 };
            c.write(arg, &fi)?;
            Ok(Action::Return(0))
        }
        xenver::PAGESIZE => Ok(Action::Return(4096)),
        _ => Err(ENOSYS),
    }
}
