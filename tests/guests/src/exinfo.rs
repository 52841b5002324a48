//! Instructions that may fault, run so that the fault is recorded and execution resumes after them.
//!
//! Each helper's `asm!` puts an entry in the `.xtf_extable` section (guest.ld collects them): the address of
//! the instruction that may fault (or, for a trap such as `int3`, the address after it) and where to resume,
//! as 32-bit self-relative offsets. When an exception arrives at such an address, [`crate::traps::dispatch`]
//! records it for the vCPU and resumes; the helper returns it as `Err(Fault)`. (The exception frame goes on the
//! current stack, so none of these `asm!` blocks is `nostack`.)

use crate::{smp, traps, MAX_VCPUS};
use core::arch::asm;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

/// An exception a helper caught.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub vector: u8,
    /// The CPU's error code (0 for vectors without one).
    pub error_code: u32,
}

impl Fault {
    pub const DE: u8 = 0;
    pub const BP: u8 = 3;
    pub const UD: u8 = 6;
    pub const GP: u8 = 13;
    pub const PF: u8 = 14;
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (vector {}, error code {:#x})", traps::vector_name(self.vector), self.vector, self.error_code)
    }
}

/// `1 << 63 | vector << 32 | error code` per vCPU; 0 = nothing caught.
static CAUGHT: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];

/// Called by the trap dispatcher when it resumes at a fixup.
pub(crate) fn record(vector: u8, error_code: u32) {
    let v = 1 << 63 | u64::from(vector) << 32 | u64::from(error_code);
    CAUGHT[smp::vcpu_id() as usize].store(v, Ordering::Relaxed);
}

fn begin() {
    CAUGHT[smp::vcpu_id() as usize].store(0, Ordering::Relaxed);
}

fn end() -> Result<(), Fault> {
    match CAUGHT[smp::vcpu_id() as usize].swap(0, Ordering::Relaxed) {
        0 => Ok(()),
        v => Err(Fault { vector: (v >> 32) as u8, error_code: v as u32 }),
    }
}

/// One `.xtf_extable` entry.
#[repr(C)]
struct Entry {
    /// Faulting (or trapping) address, relative to this field.
    at: i32,
    /// Resume address, relative to this field.
    resume: i32,
}

/// Where to resume after an exception at `rip`, if a helper expects one there.
#[cfg(target_os = "none")]
pub(crate) fn fixup(rip: u64) -> Option<u64> {
    extern "C" {
        static __xtf_extable_start: Entry;
        static __xtf_extable_end: Entry;
    }
    let start = (&raw const __xtf_extable_start) as usize;
    let end = (&raw const __xtf_extable_end) as usize;
    let n = (end - start) / size_of::<Entry>();
    // SAFETY: guest.ld places the entries, all of this type, between the two symbols.
    let table = unsafe { core::slice::from_raw_parts(start as *const Entry, n) };
    table.iter().find_map(|e| {
        let at_field = &e.at as *const i32 as u64;
        let resume_field = &e.resume as *const i32 as u64;
        (at_field.wrapping_add(e.at as i64 as u64) == rip).then(|| resume_field.wrapping_add(e.resume as i64 as u64))
    })
}

/// Host builds have no table (and never take exceptions).
#[cfg(not(target_os = "none"))]
pub(crate) fn fixup(_rip: u64) -> Option<u64> {
    None
}

/// The `.xtf_extable` entry for labels `2` (may fault) and `3` (resume).
macro_rules! extable {
    () => {
        ".pushsection .xtf_extable, \"a\"\n.balign 4\n.long 2b - .\n.long 3b - .\n.popsection"
    };
}

/// `ud2`: always raises #UD.
pub fn ud2() -> Result<(), Fault> {
    begin();
    // SAFETY: the #UD resumes at label 3; nothing else happens.
    unsafe { asm!("2: ud2", "3:", extable!()) };
    end()
}

/// `int3`: raises #BP (a trap: the CPU reports the address after the instruction, so both labels are there).
pub fn int3() -> Result<(), Fault> {
    begin();
    // SAFETY: the #BP returns to the instruction after `int3`, which is both labels.
    unsafe { asm!("int3", "2:", "3:", extable!()) };
    end()
}

/// `rdmsr`.
pub fn rdmsr(msr: u32) -> Result<u64, Fault> {
    begin();
    let (lo, hi): (u32, u32);
    // SAFETY: reading an MSR changes nothing; a #GP resumes at label 3 (EAX/EDX then hold junk, discarded).
    unsafe { asm!("2: rdmsr", "3:", extable!(), in("ecx") msr, out("eax") lo, out("edx") hi) };
    end().map(|()| (u64::from(hi) << 32) | u64::from(lo))
}

/// `wrmsr`.
///
/// # Safety
/// As for [`crate::arch::wrmsr`] when the MSR exists: whatever it controls must stay consistent with what the
/// program assumes. An MSR that does not exist raises #GP, which is caught.
pub unsafe fn wrmsr(msr: u32, value: u64) -> Result<(), Fault> {
    begin();
    // SAFETY: the caller vouches for the MSR's effect; a #GP resumes at label 3.
    unsafe {
        asm!("2: wrmsr", "3:", extable!(), in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32)
    };
    end()
}

/// `in` of `size` (1, 2 or 4) bytes from `port`; a fault (none is expected at CPL 0) is returned.
pub fn inp(port: u16, size: u8) -> Result<u32, Fault> {
    begin();
    let v: u32;
    // SAFETY: port reads have no memory effects on the guest; a fault resumes at label 3. The test guests run
    // without devices, so no port read has a side effect they depend on.
    unsafe {
        match size {
            1 => asm!("xor eax, eax", "2: in al, dx", "3:", extable!(), in("dx") port, out("eax") v),
            2 => asm!("xor eax, eax", "2: in ax, dx", "3:", extable!(), in("dx") port, out("eax") v),
            _ => asm!("xor eax, eax", "2: in eax, dx", "3:", extable!(), in("dx") port, out("eax") v),
        }
    }
    end().map(|()| v)
}

/// `out` of `size` (1, 2 or 4) bytes of `value` to `port`.
///
/// # Safety
/// The port's device (if any) must tolerate the write.
pub unsafe fn outp(port: u16, size: u8, value: u32) -> Result<(), Fault> {
    begin();
    // SAFETY: the caller vouches for the port; a fault resumes at label 3.
    unsafe {
        match size {
            1 => asm!("2: out dx, al", "3:", extable!(), in("dx") port, in("eax") value),
            2 => asm!("2: out dx, ax", "3:", extable!(), in("dx") port, in("eax") value),
            _ => asm!("2: out dx, eax", "3:", extable!(), in("dx") port, in("eax") value),
        }
    }
    end()
}

/// A 64-bit load from `addr` (any address: unmapped, non-canonical...).
pub fn read_u64(addr: u64) -> Result<u64, Fault> {
    begin();
    let v: u64;
    // SAFETY: a load has no side effects on guest state beyond the read itself; a fault resumes at label 3.
    unsafe {
        asm!("2: mov {v}, qword ptr [{a}]", "3:", extable!(), a = in(reg) addr, v = out(reg) v,
             options(readonly))
    };
    end().map(|()| v)
}
