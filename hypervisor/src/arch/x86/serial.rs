//! COM1 through `uart_16550`, configured from Xen's `com1=` option, and the console sink that writes to it.

use crate::cmdline::{ComConfig, Parity};
use core::sync::atomic::{AtomicU16, Ordering};
use uart_16550::backend::PioBackend;
use uart_16550::spec::registers::{Parity as UartParity, WordLength};
use uart_16550::{BaudRate, Config, Uart16550};
use x86_64::instructions::port::Port;

/// The port; only touched under the console lock (see [`crate::console`]), which calls [`write`] from the lock
/// holder only and never re-enters it (a nested print goes to [`write_nested`]).
static mut COM1: Option<Uart16550<PioBackend>> = None;
/// COM1's I/O base once it is set up (0 before), for [`write_nested`].
static COM1_BASE: AtomicU16 = AtomicU16::new(0);

/// Programs the UART and registers it as the console output. Returns a description of the problem when the
/// port is absent or the settings are invalid (the console then stays in memory only).
pub fn init(cfg: &ComConfig) -> Result<(), &'static str> {
    // SAFETY: `io_base` names a 16550 Keel owns for its whole life (COM1 by default, or the `com1=` base); no
    // code outside this module drives those eight ports.
    let mut uart = unsafe { Uart16550::new_port(cfg.io_base) }.map_err(|_| "invalid I/O base")?;
    let mut config = Config::DEFAULT;
    if let Some(baud) = cfg.baud {
        config.baud_rate = match baud {
            115_200 => BaudRate::Baud115200,
            9600 => BaudRate::Baud9600,
            b => BaudRate::Custom(b),
        };
    } else {
        config.baud_rate = BaudRate::Baud115200;
    }
    config.data_bits = match cfg.data_bits {
        5 => WordLength::FiveBits,
        6 => WordLength::SixBits,
        7 => WordLength::SevenBits,
        _ => WordLength::EightBits,
    };
    config.parity = match cfg.parity {
        Parity::None => UartParity::Disabled,
        Parity::Odd => UartParity::Odd,
        Parity::Even => UartParity::Even,
        Parity::Mark => UartParity::Forced1,
        Parity::Space => UartParity::Forced0,
    };
    config.extra_stop_bits = cfg.stop_bits == 2;
    uart.init(config).map_err(|e| match e {
        uart_16550::InitError::DeviceNotPresent => "no UART at that port",
        uart_16550::InitError::InvalidBaudRate(_) => "baud rate not reachable with the UART clock",
        _ => "UART initialisation failed",
    })?;
    crate::console::with_exclusive(|| {
        // SAFETY: under the console lock, not nested (`with_exclusive` runs nothing for a nested caller): no other
        // reference to COM1 exists.
        unsafe { *core::ptr::addr_of_mut!(COM1) = Some(uart) };
    })
    .ok_or("the console is busy on this CPU")?;
    COM1_BASE.store(cfg.io_base, Ordering::Release);
    crate::console::set_output(crate::console::Output { write, write_nested });
    Ok(())
}

fn write(bytes: &[u8]) {
    // SAFETY: the console calls this only from the CPU holding its lock, and never re-enters it (a print from a
    // handler that interrupted this one goes to `write_nested`, which forms no reference to COM1); `read_available`
    // and `init` touch COM1 under the same lock. So this is the only live reference.
    if let Some(uart) = unsafe { (*core::ptr::addr_of_mut!(COM1)).as_mut() } {
        for &b in bytes {
            if b == b'\n' {
                uart.send_bytes_exact(b"\r\n");
            } else {
                uart.send_bytes_exact(&[b]);
            }
        }
    }
}

/// Transmit-holding register (offset 0) and line-status register (offset 5) with its "THR empty" bit.
const THR: u16 = 0;
const LSR: u16 = 5;
const LSR_THR_EMPTY: u8 = 1 << 5;
/// Polls of the line status before a byte is written anyway (a wedged UART must not hang a fault handler).
const THR_EMPTY_POLLS: u32 = 100_000;

/// Writes to COM1 with plain port I/O, keeping no state: the writer for a print that interrupted [`write`] on
/// the same CPU (the 16550's registers are as [`write`] left them between two of its port accesses).
fn write_nested(bytes: &[u8]) {
    let base = COM1_BASE.load(Ordering::Acquire);
    if base == 0 {
        return;
    }
    let put = |b: u8| {
        let mut lsr = Port::<u8>::new(base + LSR);
        let mut thr = Port::<u8>::new(base + THR);
        for _ in 0..THR_EMPTY_POLLS {
            // SAFETY: reading the line-status register of the UART Keel owns has no side effect on it.
            if unsafe { lsr.read() } & LSR_THR_EMPTY != 0 {
                break;
            }
        }
        // SAFETY: a byte into the transmit register of the UART Keel owns, set up by `init`.
        unsafe { thr.write(b) };
    };
    for &b in bytes {
        if b == b'\n' {
            put(b'\r');
        }
        put(b);
    }
}

/// Reads the bytes COM1 has received (polled; Keel does not route the UART interrupt). Nothing from a handler
/// that interrupted a print.
pub fn read_available(buf: &mut [u8]) -> usize {
    crate::console::with_exclusive(|| {
        // SAFETY: under the console lock, not nested (`with_exclusive` runs nothing for a nested caller), and
        // `write`, the other user, runs only under it too: the only live reference.
        match unsafe { (*core::ptr::addr_of_mut!(COM1)).as_mut() } {
            Some(uart) => {
                let mut n = 0;
                while n < buf.len() {
                    match uart.try_receive_byte() {
                        Ok(b) => {
                            buf[n] = b;
                            n += 1;
                        }
                        Err(_) => break,
                    }
                }
                n
            }
            None => 0,
        }
    })
    .unwrap_or(0)
}
