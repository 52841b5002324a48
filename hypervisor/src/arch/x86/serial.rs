//! COM1 through `uart_16550`, configured from Xen's `com1=` option, and the console sink that writes to it.

use crate::cmdline::{ComConfig, Parity};
use uart_16550::backend::PioBackend;
use uart_16550::spec::registers::{Parity as UartParity, WordLength};
use uart_16550::{BaudRate, Config, Uart16550};

/// The port; only touched under the console lock (see [`crate::console`]), which is the sole caller of the sink.
static mut COM1: Option<Uart16550<PioBackend>> = None;

/// Programs the UART and registers it as the console output. Returns a description of the problem when the
/// port is absent or the settings are invalid (the console then stays in memory only).
pub fn init(cfg: &ComConfig) -> Result<(), &'static str> {
    // SAFETY: `io_base` names a 16550 Keel owns for its whole life (COM1 by default, or the `com1=` base); no
    // other code drives those eight ports.
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
        // SAFETY: under the console lock, the only place COM1 is accessed.
        unsafe { *core::ptr::addr_of_mut!(COM1) = Some(uart) };
    });
    crate::console::set_sink(write);
    Ok(())
}

fn write(bytes: &[u8]) {
    // SAFETY: the console calls its sink only with its lock held, so this is the only live reference.
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

/// Reads the bytes COM1 has received (polled; Keel does not route the UART interrupt).
pub fn read_available(buf: &mut [u8]) -> usize {
    crate::console::with_exclusive(|| {
        // SAFETY: under the console lock, the only place COM1 is accessed.
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
}
