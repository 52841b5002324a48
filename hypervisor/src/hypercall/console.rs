//! `console_io`: guest output to Keel's console (Keel lets every domain write, as a debug build of Xen does;
//! `Domain::console_write` rate-limits it). The hardware domain's console is the machine's: its output goes to the
//! serial line as it is, and it reads the serial input queued for it (signalled with `VIRQ_CONSOLE`).

use super::{Action, Ctx, HResult};
use keel_abi::hypercall::{consoleio, errno::*};

/// Largest write taken in one call.
const MAX_WRITE: u64 = 16 * 1024;

pub fn console_io(c: &mut Ctx) -> HResult {
    // Xen takes the command and the count as 32-bit values.
    let (cmd, count, buf) = (c.args[0] as u32 as u64, c.args[1] as u32 as u64, c.args[2]);
    match cmd {
        consoleio::WRITE => {
            let n = count.min(MAX_WRITE) as usize;
            let mut data = crate::mm::heap::try_filled(n, 0).map_err(|_| ENOMEM)?;
            c.read_bytes(buf, &mut data)?;
            if c.dom.is_privileged() {
                crate::console::write_raw(&data);
            } else {
                c.dom.console_write(&data);
            }
            Ok(Action::Return(0))
        }
        // Serial input, for the hardware domain only: the bytes read.
        consoleio::READ if c.dom.is_privileged() => {
            let mut data = [0u8; 256];
            let n = crate::console::take_input(&mut data[..(count as usize).min(256)]);
            // A bad buffer loses what was taken, as on Xen.
            c.write_bytes(buf, &data[..n])?;
            Ok(Action::Return(n as u64))
        }
        // No input for other guests: zero bytes read.
        consoleio::READ => Ok(Action::Return(0)),
        _ => Err(ENOSYS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, put};
    use keel_abi::hypercall::nr;

    #[test]
    fn console_io_errors_and_writes() {
        let dom = testing::domain(1, 4);
        let call =
            |cmd: u64, count: u64, buf: u64| testing::hypercall(&dom, 0, nr::CONSOLE_IO, [cmd, count, buf, 0, 0]);
        assert_eq!(call(2, 0, 0), ENOSYS.negated());
        assert_eq!(call(99, 0, 0), ENOSYS.negated());
        assert_eq!(call(consoleio::WRITE, 5, 0x4000_0000), EFAULT.negated());
        assert_eq!(call(consoleio::WRITE, 8, (4 << 20) - 4), EFAULT.negated(), "runs off the end of RAM");
        assert_eq!(call(consoleio::READ, 16, 0x1000), 0, "no input for guests");
        put(&dom, 0x1000, b"partial line");
        // Xen takes the count as 32 bits: the high half is ignored.
        assert_eq!(call(consoleio::WRITE, 1 << 32 | 7, 0x1000), 0);
        assert_eq!(dom.console.lock().line, b"partial");
        crate::domain::destroy(&dom);
    }
}
