//! Exceptions reach the guest's own IDT and the guest resumes: #UD from `ud2`, #BP from `int3`, #GP(0) from a
//! non-canonical load, and #GP(0) from RDMSR of an MSR that does not exist (which the hypervisor intercepts
//! and must reflect as #GP).
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

fn test_main() -> xtf::TestResult {
    expect("ud2", exinfo::ud2(), Fault::UD, 0)?;
    expect("int3", exinfo::int3(), Fault::BP, 0)?;
    expect("load from non-canonical 0x8000000000000000", exinfo::read_u64(NON_CANONICAL), Fault::GP, 0)?;
    expect("rdmsr 0xdeadbeef", exinfo::rdmsr(BOGUS_MSR), Fault::GP, 0)?;
    // And the same again: handling one exception must not break the next.
    expect("ud2 again", exinfo::ud2(), Fault::UD, 0)?;
    Ok(())
}
