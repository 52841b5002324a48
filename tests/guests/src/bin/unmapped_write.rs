//! A write to guest-physical memory beyond the domain's RAM crashes the domain, and Keel names the address.
//! Listed with `expect=crash`; the harness looks for `gpa 0xdead0000` in the crash line.
#![cfg_attr(target_os = "none", no_std, no_main)]

xtf::guest!(test_main);

/// Far beyond any test guest's RAM, and not a device Keel emulates. Identity-mapped by the runtime.
const UNMAPPED_GPA: u64 = 0xdead_0000;

fn test_main() -> xtf::TestResult {
    xtf::println!("writing to gpa {UNMAPPED_GPA:#x}: this domain must crash");
    // SAFETY: deliberately writes outside RAM; the hypervisor must stop the domain here.
    unsafe { core::ptr::write_volatile(UNMAPPED_GPA as *mut u32, 0x5a5a_5a5a) };
    // SAFETY: as above; reading back shows whether the write went anywhere.
    let back = unsafe { core::ptr::read_volatile(UNMAPPED_GPA as *const u32) };
    Err(xtf::failure!("the write to {UNMAPPED_GPA:#x} returned (reads back {back:#x})"))
}
