//! The hypercall page: installed through the MSR CPUID leaf 0x40000002 names, each 32-byte stub is
//! `mov eax, nr; vmmcall` (AMD) or `vmcall` (Intel) `; ret`, stub 23 (`iret`) is `ud2`, and a call through the
//! page works.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::sync::atomic::Ordering;
use keel_abi::cpuid::HYPERCALL_STUB_SIZE;
use keel_abi::hypercall::nr;
use xtf::hypercall;
use xtf::{ensure, failure};

xtf::guest!(test_main);

/// Stubs in the page.
const STUBS: usize = 4096 / HYPERCALL_STUB_SIZE;

fn test_main() -> xtf::TestResult {
    let page = hypercall::install_page();
    let byte = |i: usize| page[i].load(Ordering::Relaxed);
    let insn = hypercall::insn();
    xtf::println!("hypercall page at {:#x}, expecting {insn:?} stubs", page.as_ptr() as u64);

    for stub in 0..STUBS {
        let at = stub * HYPERCALL_STUB_SIZE;
        let got: [u8; 9] = core::array::from_fn(|i| byte(at + i));
        if stub == nr::IRET as usize {
            ensure!(got[..2] == [0x0f, 0x0b], "stub {stub} (iret) starts {:02x?}, want ud2 (0f 0b)", &got[..2]);
            continue;
        }
        let mut want = [0u8; 9];
        want[0] = 0xb8; // mov eax, imm32
        want[1..5].copy_from_slice(&(stub as u32).to_le_bytes());
        want[5..8].copy_from_slice(&insn.bytes());
        want[8] = 0xc3; // ret
        if got != want {
            return Err(failure!("stub {stub}: {got:02x?}, want {want:02x?}"));
        }
    }
    xtf::println!("all {STUBS} stubs as expected");

    // SAFETY: XENVER_version takes no buffer; the page is installed.
    let v = unsafe { hypercall::call_page(nr::XEN_VERSION, [0; 5]) };
    let (major, minor) = keel_abi::XEN_VERSION;
    ensure!(v == i64::from(major << 16 | minor), "xen_version through the page returned {v:#x}, want {major}.{minor}");
    xtf::println!("xen_version through the page: {}.{}", v >> 16, v & 0xffff);
    Ok(())
}
