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
            // One submap exists (XENFEAT_NR_SUBMAPS is 1): Xen says -EINVAL for any other index.
            if fi.submap_idx != 0 {
                return Err(EINVAL);
            }
            fi.submap = FEATURES_SUBMAP0;
            c.write(arg, &fi)?;
            Ok(Action::Return(0))
        }
        // Xen wants a null argument here.
        xenver::PAGESIZE if arg != 0 => Err(EINVAL),
        xenver::PAGESIZE => Ok(Action::Return(4096)),
        _ => Err(ENOSYS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, get, put};
    use keel_abi::hypercall::nr;

    const ARG: u64 = 0x1000;

    #[test]
    fn xen_version_errors_follow_xen() {
        let dom = testing::domain(1, 4);
        let call = |cmd: u64, arg: u64| testing::hypercall(&dom, 0, nr::XEN_VERSION, [cmd, arg, 0, 0, 0]);
        assert_eq!(call(xenver::VERSION, 0), 4 << 16 | 17);
        assert_eq!(call(xenver::PAGESIZE, 0), 4096);
        assert_eq!(call(xenver::PAGESIZE, ARG), EINVAL.negated(), "Xen wants a null handle");
        for cmd in [xenver::EXTRAVERSION, xenver::CAPABILITIES, xenver::GET_FEATURES] {
            assert_eq!(call(cmd, 0x4000_0000), EFAULT.negated(), "cmd {cmd}");
        }
        put(&dom, ARG, &XenFeatureInfo { submap_idx: 1, submap: 0 });
        assert_eq!(call(xenver::GET_FEATURES, ARG), EINVAL.negated());
        put(&dom, ARG, &XenFeatureInfo { submap_idx: 0, submap: 0 });
        assert_eq!(call(xenver::GET_FEATURES, ARG), 0);
        assert_eq!(get::<XenFeatureInfo>(&dom, ARG).submap, FEATURES_SUBMAP0);
        assert_eq!(call(xenver::EXTRAVERSION, ARG), 0);
        assert_eq!(&get::<[u8; 8]>(&dom, ARG), b".0-keel\0");
        for cmd in [99, 1 << 32] {
            assert_eq!(call(cmd, ARG), ENOSYS.negated(), "cmd {cmd}");
        }
        crate::domain::destroy(&dom);
    }
}
