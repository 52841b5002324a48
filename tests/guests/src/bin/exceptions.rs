//! Exceptions reach the guest's own IDT and the guest resumes: #UD from `ud2`, #BP from `int3`, #GP(0) from a
//! non-canonical load, and #GP(0) from RDMSR of an MSR that does not exist (which the hypervisor intercepts
//! and must reflect as #GP). Invalid EFER writes (reserved bits, SVME, clearing LME with paging on) are #GP(0)
//! too, never a failed VM entry, and leave EFER as it was. (PAT is not intercepted on SVM, and QEMU's TCG does
//! not check PAT types, so the PAT check is unit-tested only.) And the
//! hypervisor honours the guest's page protections: a hypercall asked to write its result into a read-only
//! mapping (CR0.WP is on) fails with -EFAULT and leaves the memory alone.
#![cfg_attr(target_os = "none", no_std, no_main)]

use keel_abi::hypercall::{nr, vcpuop};
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
const EFER_LME: u64 = 1 << 8;
const EFER_SVME: u64 = 1 << 12;

fn msr_writes() -> xtf::TestResult {
    let efer = exinfo::rdmsr(EFER).map_err(|f| failure!("rdmsr EFER: {f}"))?;
    // SAFETY: each value is refused (the point of the test), or, for the write-backs, the current value.
    unsafe {
        expect("wrmsr EFER with reserved bit 1", exinfo::wrmsr(EFER, efer | 1 << 1), Fault::GP, 0)?;
        expect("wrmsr EFER with reserved bit 63", exinfo::wrmsr(EFER, efer | 1 << 63), Fault::GP, 0)?;
        expect("wrmsr EFER with SVME", exinfo::wrmsr(EFER, efer | EFER_SVME), Fault::GP, 0)?;
        expect("wrmsr EFER clearing LME with paging on", exinfo::wrmsr(EFER, efer & !EFER_LME), Fault::GP, 0)?;
        exinfo::wrmsr(EFER, efer).map_err(|f| failure!("wrmsr EFER {efer:#x} (unchanged): {f}"))?;
    }
    let now = exinfo::rdmsr(EFER);
    if now != Ok(efer) {
        return Err(failure!("EFER {now:x?} after the refused writes, want {efer:#x}"));
    }
    xtf::println!("EFER {efer:#x} unchanged by the refused writes");
    Ok(())
}

/// A 2 MiB page of guest RAM (32 MiB) that nothing else uses, identity-mapped by the runtime's page tables.
const SCRATCH: u64 = 0x0100_0000;
const PTE_W: u64 = 1 << 1;
const EFAULT: i64 = 14;

/// The page-directory entry that maps `addr` (the runtime maps the low 4 GiB with 2 MiB pages, identity).
fn pde(addr: u64) -> *mut u64 {
    const ADDR: u64 = 0x000f_ffff_ffff_f000;
    let cr3: u64;
    // SAFETY: reading CR3 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr3", out(reg) cr3, options(nomem, nostack)) };
    // SAFETY: the tables are identity-mapped guest RAM, built by entry.S: PML4[0] -> PDPT -> page directories.
    unsafe {
        let pdpt = *((cr3 & ADDR) as *const u64) & ADDR;
        let pd = *((pdpt + ((addr >> 30) & 511) * 8) as *const u64) & ADDR;
        (pd + ((addr >> 21) & 511) * 8) as *mut u64
    }
}

fn set_writable(addr: u64, writable: bool) {
    let e = pde(addr);
    // SAFETY: `e` is the live entry for `addr`, which only this test uses; the TLB entry is dropped after.
    unsafe {
        let v = e.read_volatile();
        e.write_volatile(if writable { v | PTE_W } else { v & !PTE_W });
        core::arch::asm!("invlpg [{}]", in(reg) addr, options(nostack));
    }
}

fn get_runstate_into(addr: u64) -> i64 {
    // SAFETY: VCPUOP_get_runstate_info writes a `struct vcpu_runstate_info` (48 bytes) at `addr`, scratch memory.
    unsafe { xtf::hypercall::call(nr::VCPU_OP, [vcpuop::GET_RUNSTATE_INFO, 0, addr, 0, 0]) }
}

fn read_only_hypercall_output() -> xtf::TestResult {
    let buf = SCRATCH as *mut u8;
    // SAFETY: SCRATCH..SCRATCH+64 is unused guest RAM, mapped writable now.
    unsafe { core::ptr::write_bytes(buf, 0xa5, 64) };
    set_writable(SCRATCH, false);
    let rc = get_runstate_into(SCRATCH);
    set_writable(SCRATCH, true);
    // SAFETY: as above.
    let untouched = (0..64).all(|i| unsafe { buf.add(i).read_volatile() } == 0xa5);
    if rc != -EFAULT || !untouched {
        return Err(failure!(
            "get_runstate_info into a read-only mapping returned {rc} (want -EFAULT) and the memory was {}",
            if untouched { "left alone" } else { "written" }
        ));
    }
    // Writable again: the same call succeeds and fills it in.
    let rc = get_runstate_into(SCRATCH);
    // SAFETY: as above.
    let state = unsafe { (buf as *const u32).read_volatile() };
    if rc != 0 || state != 0 {
        return Err(failure!("get_runstate_info into a writable mapping: rc {rc}, state {state} (want 0, running)"));
    }
    xtf::println!("hypercall output into a read-only mapping: -EFAULT, memory untouched");
    Ok(())
}

fn test_main() -> xtf::TestResult {
    expect("ud2", exinfo::ud2(), Fault::UD, 0)?;
    expect("int3", exinfo::int3(), Fault::BP, 0)?;
    expect("load from non-canonical 0x8000000000000000", exinfo::read_u64(NON_CANONICAL), Fault::GP, 0)?;
    expect("rdmsr 0xdeadbeef", exinfo::rdmsr(BOGUS_MSR), Fault::GP, 0)?;
    msr_writes()?;
    read_only_hypercall_output()?;
    // And the same again: handling one exception must not break the next.
    expect("ud2 again", exinfo::ud2(), Fault::UD, 0)?;
    Ok(())
}
