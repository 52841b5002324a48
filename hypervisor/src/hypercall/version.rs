//! `xen_version`.

use super::{Action, Ctx, HResult};
use keel_abi::hypercall::{errno::*, xenver, XenCompileInfo, XenFeatureInfo, XenPlatformParameters};
use keel_abi::Zeroable;

/// XENFEAT submap 0 as Xen 4.17 builds it for a PVH guest (translated, not PV, no PIRQs): writable_page_tables
/// (0), auto_translated_physmap (2), hvm_callback_vector (8), hvm_safe_pvclock (9), memory_op_vnode_supported
/// (13) and not_direct_mapped (16): 0x00012305.
const FEATURES_SUBMAP0: u32 = 1 << 0 | 1 << 2 | 1 << 8 | 1 << 9 | 1 << 13 | 1 << 16;
/// XENFEAT_dom0 (11), which Xen adds for the hardware domain: a PVH dom0 reads 0x00012B05.
const FEATURE_DOM0: u32 = 1 << 11;

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
            fi.submap = FEATURES_SUBMAP0 | if c.dom.is_privileged() { FEATURE_DOM0 } else { 0 };
            c.write(arg, &fi)?;
            Ok(Action::Return(0))
        }
        xenver::COMPILE_INFO => {
            let mut ci = XenCompileInfo::zeroed();
            fill(&mut ci.compiler, env!("KEEL_RUSTC_VERSION"));
            fill(&mut ci.compile_by, "keel");
            c.write(arg, &ci)?;
            Ok(Action::Return(0))
        }
        xenver::CHANGESET => {
            // As Xen built outside a repository says.
            let mut s = [0u8; 64];
            fill(&mut s, "unavailable");
            c.write_bytes(arg, &s)?;
            Ok(Action::Return(0))
        }
        xenver::PLATFORM_PARAMETERS => {
            c.write(arg, &XenPlatformParameters { virt_start: keel_abi::hypercall::HYPERVISOR_VIRT_START })?;
            Ok(Action::Return(0))
        }
        xenver::GUEST_HANDLE => {
            // Keel keeps no domain handles (UUIDs) yet: all zero, as a domain created without one.
            c.write_bytes(arg, &[0u8; 16])?;
            Ok(Action::Return(0))
        }
        xenver::COMMANDLINE => {
            // Only the privileged may read it; others read "<denied>", as from Xen.
            let mut s = [0u8; 1024];
            fill(&mut s, if c.dom.is_privileged() { crate::cmdline::raw() } else { "<denied>" });
            c.write_bytes(arg, &s)?;
            Ok(Action::Return(0))
        }
        // Keel has no build id: -ENODATA, as Xen built without one.
        xenver::BUILD_ID => Err(ENODATA),
        // Xen wants a null argument here.
        xenver::PAGESIZE if arg != 0 => Err(EINVAL),
        xenver::PAGESIZE => Ok(Action::Return(4096)),
        _ => Err(ENOSYS),
    }
}

/// Copies `text` into a NUL-terminated fixed field, cut to fit.
fn fill(field: &mut [u8], text: &str) {
    let n = text.len().min(field.len().saturating_sub(1));
    field[..n].copy_from_slice(&text.as_bytes()[..n]);
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
        assert_eq!(get::<XenFeatureInfo>(&dom, ARG).submap, 0x0001_2305, "Xen 4.17's PVH domU set");
        dom.privileged.store(true, core::sync::atomic::Ordering::Release);
        put(&dom, ARG, &XenFeatureInfo { submap_idx: 0, submap: 0 });
        assert_eq!(call(xenver::GET_FEATURES, ARG), 0);
        assert_eq!(get::<XenFeatureInfo>(&dom, ARG).submap, 0x0001_2B05, "Xen 4.17's PVH dom0 set");
        assert_eq!(call(xenver::EXTRAVERSION, ARG), 0);
        assert_eq!(&get::<[u8; 8]>(&dom, ARG), b".0-keel\0");
        for cmd in [99, 1 << 32] {
            assert_eq!(call(cmd, ARG), ENOSYS.negated(), "cmd {cmd}");
        }
        crate::domain::destroy(&dom);
    }

    #[test]
    fn informational_sub_ops() {
        use core::sync::atomic::Ordering;
        let dom = testing::domain(1, 4);
        let call = |cmd: u64, arg: u64| testing::hypercall(&dom, 0, nr::XEN_VERSION, [cmd, arg, 0, 0, 0]);
        assert_eq!(call(xenver::COMPILE_INFO, ARG), 0);
        let ci: XenCompileInfo = get(&dom, ARG);
        assert!(ci.compiler.starts_with(b"rustc "), "{:?}", &ci.compiler[..16]);
        assert_eq!(&ci.compile_by[..5], b"keel\0");
        assert_eq!(call(xenver::PLATFORM_PARAMETERS, ARG), 0);
        assert_eq!(get::<u64>(&dom, ARG), 0xffff_8000_0000_0000);
        assert_eq!(call(xenver::CHANGESET, ARG), 0);
        assert_eq!(&get::<[u8; 12]>(&dom, ARG), b"unavailable\0");
        assert_eq!(call(xenver::BUILD_ID, ARG), ENODATA.negated());
        // The command line: "<denied>" for an unprivileged domain, Keel's own for the privileged one.
        assert_eq!(call(xenver::COMMANDLINE, ARG), 0);
        assert_eq!(&get::<[u8; 9]>(&dom, ARG), b"<denied>\0");
        dom.privileged.store(true, Ordering::Release);
        assert_eq!(call(xenver::COMMANDLINE, ARG), 0);
        assert_eq!(get::<u8>(&dom, ARG + crate::cmdline::raw().len() as u64), 0);
        assert_eq!(call(xenver::COMMANDLINE, 0x4000_0000), EFAULT.negated());
        crate::domain::destroy(&dom);
    }
}
