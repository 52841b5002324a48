//! `hvm_op`: HVM parameters (the event-channel callback vector, console and store rings). A guest reads and sets
//! its own within Xen's guest rules; a privileged caller (the toolstack building a domain) reads and sets any
//! parameter of another domain.

use super::{Action, Ctx, HResult};
use keel_abi::hypercall::errno::*;
use keel_abi::shared_info::{hvm_param, hvmop, XenHvmParam};

/// Xen 4.17's `HVM_NR_PARAMS`: indices at or above it are -EINVAL (Keel's table has room for more).
const XEN_NR_PARAMS: u32 = 39;

/// Parameters Xen no longer implements (PAE_ENABLED, DM_DOMAIN, the MEMORY_EVENT_* ones, NESTEDHVM,
/// BUFIOREQ_EVTCHN): -EINVAL to read or write.
const DEPRECATED: [u32; 10] = [4, 13, 20, 21, 22, 23, 24, 25, 26, 30];

/// Parameters a guest may read about itself (Xen's list: CALLBACK_IRQ, the store and console rings, VM86_TSS,
/// VM86_TSS_SIZED, ACPI_IOPORTS_LOCATION, VM_GENERATION_ID_ADDR, ALTP2M, X87_FIP_WIDTH); others are -EPERM.
const GUEST_READABLE: [u32; 11] = [
    hvm_param::CALLBACK_IRQ,
    hvm_param::STORE_PFN,
    hvm_param::STORE_EVTCHN,
    hvm_param::CONSOLE_PFN,
    hvm_param::CONSOLE_EVTCHN,
    15,
    19,
    34,
    35,
    36,
    37,
];

pub fn hvm_op(c: &mut Ctx) -> HResult {
    let (cmd, arg) = (c.args[0], c.args[1]);
    match cmd {
        hvmop::SET_PARAM | hvmop::GET_PARAM => {
            let mut p: XenHvmParam = c.read(arg)?;
            // Xen's order: the index, then the domain (-ESRCH if none, -EPERM if another), then the parameter.
            if p.index >= XEN_NR_PARAMS {
                return Err(EINVAL);
            }
            if p.domid != keel_abi::DOMID_SELF && p.domid != c.dom.id {
                let other = crate::domain::get(p.domid).ok_or(ESRCH)?;
                if !c.dom.is_privileged() {
                    return Err(EPERM);
                }
                if DEPRECATED.contains(&p.index) {
                    return Err(EINVAL);
                }
                if cmd == hvmop::SET_PARAM {
                    other.params.lock()[p.index as usize] = p.value;
                } else {
                    p.value = other.params.lock()[p.index as usize];
                    c.write(arg, &p)?;
                }
                return Ok(Action::Return(0));
            }
            if DEPRECATED.contains(&p.index) {
                return Err(EINVAL);
            }
            if cmd == hvmop::SET_PARAM {
                // Console and store parameters are set by the domain builder, not by the guest (Xen lets a guest
                // set the event-channel ones; Keel's own backends rely on them).
                if p.index != hvm_param::CALLBACK_IRQ {
                    return Err(EPERM);
                }
                let typ = p.value >> 56;
                if p.value != 0 && (typ != hvm_param::CALLBACK_TYPE_VECTOR || (p.value as u8) < 0x10) {
                    return Err(EINVAL);
                }
                c.dom.params.lock()[p.index as usize] = p.value;
            } else {
                if !GUEST_READABLE.contains(&p.index) {
                    return Err(EPERM);
                }
                p.value = c.dom.params.lock()[p.index as usize];
                c.write(arg, &p)?;
            }
            Ok(Action::Return(0))
        }
        _ => Err(ENOSYS),
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{self, get, put};
    use keel_abi::hypercall::{errno::*, nr};
    use keel_abi::shared_info::{hvm_param, hvmop, XenHvmParam};
    use keel_abi::DOMID_SELF;

    const ARG: u64 = 0x1000;

    fn param(dom: &alloc::sync::Arc<crate::domain::Domain>, cmd: u64, domid: u16, index: u32, value: u64) -> i64 {
        put(dom, ARG, &XenHvmParam { domid, pad: 0, index, value });
        testing::hypercall(dom, 0, nr::HVM_OP, [cmd, ARG, 0, 0, 0])
    }

    #[test]
    fn hvm_param_errors_follow_xen() {
        let dom = testing::domain(1, 4);
        let other = testing::domain(1, 4);
        for cmd in [hvmop::SET_PARAM, hvmop::GET_PARAM] {
            // The index is checked before the domain.
            assert_eq!(param(&dom, cmd, 0x7000, 39, 0), EINVAL.negated(), "cmd {cmd}");
            assert_eq!(param(&dom, cmd, DOMID_SELF, u32::MAX, 0), EINVAL.negated());
            assert_eq!(param(&dom, cmd, 0x7000, 0, 0), ESRCH.negated());
            assert_eq!(param(&dom, cmd, other.id, 0, 0), EPERM.negated());
            // Deprecated parameters (PAE_ENABLED, NESTEDHVM): -EINVAL.
            assert_eq!(param(&dom, cmd, DOMID_SELF, 4, 0), EINVAL.negated());
            assert_eq!(param(&dom, cmd, DOMID_SELF, 24, 0), EINVAL.negated());
            // Parameters a guest may not touch (IDENT_PT): -EPERM.
            assert_eq!(param(&dom, cmd, DOMID_SELF, 12, 0), EPERM.negated());
            assert_eq!(testing::hypercall(&dom, 0, nr::HVM_OP, [cmd, 0x4000_0000, 0, 0, 0]), EFAULT.negated());
        }
        assert_eq!(param(&dom, hvmop::SET_PARAM, DOMID_SELF, hvm_param::STORE_PFN, 5), EPERM.negated());
        assert_eq!(param(&dom, hvmop::SET_PARAM, DOMID_SELF, 0, 2 << 56 | 0x0f), EINVAL.negated(), "vector < 16");
        assert_eq!(param(&dom, hvmop::SET_PARAM, DOMID_SELF, 0, 1 << 56 | 0xf3), EINVAL.negated(), "not a vector");
        assert_eq!(param(&dom, hvmop::SET_PARAM, dom.id, 0, 2 << 56 | 0xf3), 0);
        assert_eq!(param(&dom, hvmop::GET_PARAM, DOMID_SELF, 0, 0), 0);
        assert_eq!(get::<XenHvmParam>(&dom, ARG).value, 2 << 56 | 0xf3);
        assert_eq!(param(&dom, hvmop::GET_PARAM, DOMID_SELF, hvm_param::CONSOLE_EVTCHN, 0), 0);
        for cmd in [2, 5, 99, 1 << 33] {
            assert_eq!(testing::hypercall(&dom, 0, nr::HVM_OP, [cmd, ARG, 0, 0, 0]), ENOSYS.negated(), "cmd {cmd}");
        }
        crate::domain::destroy(&dom);
        crate::domain::destroy(&other);
    }
}
