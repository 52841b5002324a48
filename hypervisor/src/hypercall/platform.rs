//! `platform_op` (7): firmware and physical-platform operations of the hardware domain. Privileged callers only
//! (-EPERM, as Xen's default XSM policy); the interface version must be Xen's `XENPF_INTERFACE_VERSION`
//! (-EACCES otherwise). Keel implements none of the operations yet: each is -ENOSYS, which Linux as a PVH dom0
//! tolerates for every call it makes (firmware_info then means "not EFI").

use super::sysctl::privileged;
use super::{Ctx, HResult};
use keel_abi::hypercall::errno::*;

/// `XENPF_INTERFACE_VERSION`.
pub const INTERFACE_VERSION: u32 = 0x0300_0001;

pub fn platform_op(c: &mut Ctx) -> HResult {
    privileged(c)?;
    // The header: cmd u32 @0, interface_version u32 @4.
    let head: [u32; 2] = c.read(c.args[0])?;
    if head[1] != INTERFACE_VERSION {
        return Err(EACCES);
    }
    Err(ENOSYS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, put};
    use core::sync::atomic::Ordering;
    use keel_abi::hypercall::nr;

    #[test]
    fn privilege_then_version_then_enosys() {
        let dom = testing::domain(1, 4);
        for cmd in 0..100u32 {
            put(&dom, 0x1000, &[cmd, INTERFACE_VERSION]);
            assert_eq!(testing::hypercall(&dom, 0, nr::PLATFORM_OP, [0x1000, 0, 0, 0, 0]), EPERM.negated());
        }
        dom.privileged.store(true, Ordering::Release);
        put(&dom, 0x1000, &[50u32, 1]);
        assert_eq!(testing::hypercall(&dom, 0, nr::PLATFORM_OP, [0x1000, 0, 0, 0, 0]), EACCES.negated());
        put(&dom, 0x1000, &[50u32, INTERFACE_VERSION]);
        assert_eq!(testing::hypercall(&dom, 0, nr::PLATFORM_OP, [0x1000, 0, 0, 0, 0]), ENOSYS.negated());
        crate::domain::destroy(&dom);
    }
}
