//! `console_io`: guest output to Keel's console (Keel lets every domain write, as a debug build of Xen does).

use super::{Action, Ctx, HResult};
use keel_abi::hypercall::{consoleio, errno::*};

/// Largest write taken in one call.
const MAX_WRITE: u64 = 16 * 1024;

pub fn console_io(c: &mut Ctx) -> HResult {
    let (cmd, count, buf) = (c.args[0], c.args[1], c.args[2]);
    match cmd {
        consoleio::WRITE => {
            let n = count.min(MAX_WRITE) as usize;
            let mut data = crate::mm::heap::try_filled(n, 0).map_err(|_| ENOMEM)?;
            c.read_bytes(buf, &mut data)?;
            c.dom.console_write(&data);
            Ok(Action::Return(0))
        }
        consoleio::READ => Ok(Action::Return(0)),
        _ => Err(EINVAL),
    }
}
