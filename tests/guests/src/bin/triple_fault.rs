//! A triple fault crashes the domain (and only it): load an empty IDT, then `int3`. The #BP cannot be
//! delivered (#GP), nor can that (#DF), so the vCPU shuts down. Listed with `expect=crash`.
#![cfg_attr(target_os = "none", no_std, no_main)]

xtf::guest!(test_main);

fn test_main() -> xtf::TestResult {
    xtf::println!("loading an empty IDT, then int3: this domain must crash");
    // SAFETY: deliberately unusable: the next exception must escalate to a triple fault.
    unsafe { xtf::arch::lidt(0, 0) };
    // SAFETY: raises #BP with no IDT; nothing after it should run.
    unsafe { core::arch::asm!("int3") };
    Err(xtf::failure!("int3 with an empty IDT returned"))
}
