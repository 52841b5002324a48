//! `grant_table_op`: grant table v1 set-up (size, version). The frames themselves are mapped with
//! XENMEM_add_to_physmap (see `memory`).

use super::{Action, Ctx, HResult};
use keel_abi::hypercall::errno::*;
use keel_abi::shared_info::{gnttab, GnttabQuerySize, GnttabSetVersion};

pub fn grant_table_op(c: &mut Ctx) -> HResult {
    let (cmd, arg, count) = (c.args[0], c.args[1], c.args[2]);
    if count != 1 {
        return Err(EINVAL);
    }
    match cmd {
        gnttab::QUERY_SIZE => {
            let mut q: GnttabQuerySize = c.read(arg)?;
            if q.dom != keel_abi::DOMID_SELF && q.dom != c.dom.id {
                q.status = -3; // GNTST_bad_domain
            } else {
                q.nr_frames = c.dom.grant_frames.lock().len() as u32;
                q.max_nr_frames = gnttab::MAX_FRAMES;
                q.status = 0;
            }
            c.write(arg, &q)?;
            Ok(Action::Return(0))
        }
        gnttab::SET_VERSION => {
            let mut v: GnttabSetVersion = c.read(arg)?;
            if v.version != 1 {
                // Only the v1 layout is offered; the guest is told which one is in force.
                v.version = 1;
                c.write(arg, &v)?;
                return Err(EINVAL);
            }
            c.write(arg, &v)?;
            Ok(Action::Return(0))
        }
        gnttab::GET_VERSION => {
            let v = GnttabSetVersion { version: 1 };
            c.write(arg.wrapping_add(4), &v)?;
            Ok(Action::Return(0))
        }
        _ => Err(ENOSYS),
    }
}
