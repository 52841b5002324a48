//! `hvm_op`: HVM parameters (the event-channel callback vector, console and store rings).

use super::{Action, Ctx, HResult};
use keel_abi::hypercall::errno::*;
use keel_abi::shared_info::{hvm_param, hvmop, XenHvmParam};

pub fn hvm_op(c: &mut Ctx) -> HResult {
    let (cmd, arg) = (c.args[0], c.args[1]);
    match cmd {
        hvmop::SET_PARAM | hvmop::GET_PARAM => {
            let mut p: XenHvmParam = c.read(arg)?;
            if p.domid != keel_abi::DOMID_SELF && p.domid != c.dom.id {
                return Err(EPERM);
            }
            if p.index >= hvm_param::NR {
                return Err(EINVAL);
            }
            if cmd == hvmop::SET_PARAM {
                if p.index != hvm_param::CALLBACK_IRQ {
                    // Console and store parameters are set by the domain builder, not by the guest.
                    return Err(EPERM);
                }
                let typ = p.value >> 56;
                if p.value != 0 && (typ != hvm_param::CALLBACK_TYPE_VECTOR || (p.value as u8) < 0x10) {
                    return Err(EINVAL);
                }
                c.dom.params.lock()[p.index as usize] = p.value;
            } else {
                p.value = c.dom.params.lock()[p.index as usize];
                c.write(arg, &p)?;
            }
            Ok(Action::Return(0))
        }
        _ => Err(ENOSYS),
    }
}
