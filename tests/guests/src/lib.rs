//! `xtf`: the runtime of Keel's XTF-style test guests.
//!
//! One tiny PVH guest per behaviour (src/bin/), each ending with exactly one `Test result: SUCCESS|SKIP|ERROR|
//! FAILURE` line and a `SCHEDOP_shutdown`, in the manner of Xen's XTF. A guest is linked at 1 MiB (guest.ld) and
//! entered through its Xen PVH note; src/entry.S takes every vCPU to long mode on its own stack, identity-mapping
//! the first 4 GiB, and [`rt`] then runs the test's `main` on vCPU 0 and parks the others until a test hands
//! them work ([`smp::start_aps`]).
//!
//! A guest file is:
//! ```ignore
//! #![cfg_attr(target_os = "none", no_std, no_main)]
//! xtf::guest!(test_main);
//!
//! fn test_main() -> xtf::TestResult {
//!     xtf::ensure!(1 + 1 == 2, "arithmetic is broken");
//!     Ok(())
//! }
//! ```
//! On the host the same file builds as a no-op program, so `cargo clippy --workspace --all-targets` checks it.
//!
//! Outside Xen (QEMU's `-kernel` PVH loader, no hypervisor leaves) the runtime prints through port 0xE9 and
//! reports SKIP; it then ends QEMU through isa-debug-exit (port 0xf4) with the value [`rt::debug_exit_value`]
//! gives (QEMU exits with `value << 1 | 1`).
#![cfg_attr(target_os = "none", no_std)]
// On the host the runtime is only type-checked (guests run on Keel); the bare-metal clippy run in
// `cargo xtask lint` is the one that sees what is really used.
#![cfg_attr(not(target_os = "none"), allow(dead_code, unused_imports))]

pub mod arch;
pub mod console;
pub mod evtchn;
pub mod exinfo;
pub mod gnttab;
pub mod hypercall;
mod result;
pub mod rt;
pub mod smp;
pub mod time;
pub mod traps;
pub mod xen;
pub mod xenstore;

pub use hypercall::Errno;
pub use result::{Msg, Outcome, TestResult};

/// vCPUs a guest can run (each has a stack); higher-numbered ones are parked at entry.
pub const MAX_VCPUS: usize = 8;
/// Stack bytes per vCPU.
pub const STACK_SIZE: usize = 0x8000;
/// The event-channel upcall vector (Linux's `HYPERVISOR_CALLBACK_VECTOR`).
pub const CALLBACK_VECTOR: u8 = 0xf3;

/// Declares a guest: `xtf::guest!(test_main)` with `fn test_main() -> xtf::TestResult`.
///
/// On bare metal it defines the entry the runtime calls on vCPU 0; on the host, a `main` that does nothing.
#[macro_export]
macro_rules! guest {
    ($main:path) => {
        #[cfg(target_os = "none")]
        #[no_mangle]
        extern "C" fn xtf_guest_main() -> ! {
            $crate::rt::run(env!("CARGO_BIN_NAME"), $main)
        }

        /// Test guests run only on Keel; on the host this binary does nothing.
        #[cfg(not(target_os = "none"))]
        fn main() {
            // Naming the test keeps it type-checked (and clippy-checked) on the host.
            let _: fn() -> $crate::TestResult = $main;
        }
    };
}

/// Prints to the guest console (Xen `console_io`, or port 0xE9).
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

/// Prints a line to the guest console (Xen `console_io`, or port 0xE9).
#[macro_export]
macro_rules! println {
    () => { $crate::console::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}

/// An [`Outcome::Failure`] with a formatted message: the behaviour under test is wrong.
#[macro_export]
macro_rules! failure {
    ($($arg:tt)*) => { $crate::Outcome::Failure($crate::Msg::new(format_args!($($arg)*))) };
}

/// An [`Outcome::Error`] with a formatted message: the test could not do its job.
#[macro_export]
macro_rules! error {
    ($($arg:tt)*) => { $crate::Outcome::Error($crate::Msg::new(format_args!($($arg)*))) };
}

/// An [`Outcome::Skip`] with a formatted message: the test does not apply here.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => { $crate::Outcome::Skip($crate::Msg::new(format_args!($($arg)*))) };
}

/// Reports a check that a known hypervisor defect makes fail: `known_defect!("tag", "format", args...)`
/// (see [`rt::known_defect`]); the test goes on.
#[macro_export]
macro_rules! known_defect {
    ($tag:expr, $($arg:tt)*) => { $crate::rt::known_defect($tag, format_args!($($arg)*)) };
}

/// Returns a [`failure!`] from the enclosing test function unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err($crate::failure!($($arg)*));
        }
    };
}
