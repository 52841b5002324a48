//! Exceptions reach the guest's own IDT and the guest resumes: #UD from `ud2`, #BP from `int3`, #GP(0) from a
//! non-canonical load, and #GP(0) from RDMSR of an MSR that does not exist (which the hypervisor intercepts
//! and must reflect as #GP). Invalid EFER and PAT writes (reserved bits, SVME, clearing LME with paging on, a
//! reserved memory type) are #GP(0) too, never a failed VM entry, and leave the MSR as it was.
#![cfg_attr(target_os = "none", no_std, no_main)]

use xtf::exinfo::{self, Fault};
use xtf::failure;

xtf::guest!(test_main);

/// An MSR index no CPU or hypervisor defines (outside every SVM MSR-permission-map range: always intercepted).
const BOGUS_MSR: u32 = 0xdead_beef;
const NON_CANONICAL: u64 = 0x8000_0000_0000_0000;

fn expect<T: core::fmt::Debug>(what: &str, got: Result<T, Fault>, vector: u8, error_code: u32) -> xtf::TestResult {
    match got {
        Err(f) if f.vector == vector && f.error_code == error_code => {
            xtf::println!("{what}: {f}, resumed");
            Ok(())
        }
        Err(f) => Err(failure!("{what}: {f}, want vector {vector} error code {error_code:#x}")),
        Ok(v) => Err(failure!("{what}: no exception (result {v:?})")),
    }
}

const EFER: u32 = 0xc000_0080;
const PAT: u32 = 0x277;
const EFER_LME: u64 = 1 << 8;
const EFER_SVME: u64 = 1 << 12;

fn msr_writes() -> xtf::TestResult {
    let efer = exinfo::rdmsr(EFER).map_err(|f| failure!("rdmsr EFER: {f}"))?;
    let pat = exinfo::rdmsr(PAT).map_err(|f| failure!("rdmsr PAT: {f}"))?;
    // SAFETY: each value is refused (the point of the test), or, for the write-backs, the current value.
    unsafe {
        expect("wrmsr EFER with reserved bit 1", exinfo::wrmsr(EFER, efer | 1 << 1), Fault::GP, 0)?;
        expect("wrmsr EFER with reserved bit 63", exinfo::wrmsr(EFER, efer | 1 << 63), Fault::GP, 0)?;
        expect("wrmsr EFER with SVME", exinfo::wrmsr(EFER, efer | EFER_SVME), Fault::GP, 0)?;
        expect("wrmsr EFER clearing LME with paging on", exinfo::wrmsr(EFER, efer & !EFER_LME), Fault::GP, 0)?;
        expect("wrmsr PAT with reserved type 2", exinfo::wrmsr(PAT, (pat & !0xff) | 2), Fault::GP, 0)?;
        exinfo::wrmsr(EFER, efer).map_err(|f| failure!("wrmsr EFER {efer:#x} (unchanged): {f}"))?;
        exinfo::wrmsr(PAT, pat).map_err(|f| failure!("wrmsr PAT {pat:#x} (unchanged): {f}"))?;
    }
    let (efer_now, pat_now) = (exinfo::rdmsr(EFER), exinfo::rdmsr(PAT));
    if efer_now != Ok(efer) || pat_now != Ok(pat) {
        return Err(failure!("EFER {efer_now:x?} / PAT {pat_now:x?} after refused writes, want {efer:#x} / {pat:#x}"));
    }
    xtf::println!("EFER {efer:#x} and PAT {pat:#x} unchanged by the refused writes");
    Ok(())
}

fn test_main() -> xtf::TestResult {
    expect("ud2", exinfo::ud2(), Fault::UD, 0)?;
    expect("int3", exinfo::int3(), Fault::BP, 0)?;
    expect("load from non-canonical 0x8000000000000000", exinfo::read_u64(NON_CANONICAL), Fault::GP, 0)?;
    expect("rdmsr 0xdeadbeef", exinfo::rdmsr(BOGUS_MSR), Fault::GP, 0)?;
    msr_writes()?;
    // And the same again: handling one exception must not break the next.
    expect("ud2 again", exinfo::ud2(), Fault::UD, 0)?;
    Ok(())
}
