//! Intercepted instructions with prefixes are stepped over whole: CPUID, RDMSR, WRMSR, IN and the hypercall
//! instructions, each encoded with operand-size (`66`), segment-override (`2e`, `3e`) and REX prefixes, give the
//! hypervisor's results and the guest continues at the very next instruction (a marker `mov` right after each
//! must run). Keel once assumed CPUID and RDMSR/WRMSR were 2 bytes long and VMCALL/VMMCALL 3 where SVM does not
//! report the next RIP (QEMU's TCG lacks NRIP save), which resumed a prefixed one in the middle of its opcode.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::arch::asm;
use keel_abi::cpuid::{BASE, MAX_LEAF, SIGNATURE};
use keel_abi::hypercall::{nr, xenver};
use xtf::arch::{rdmsr, wrmsr};
use xtf::ensure;
use xtf::hypercall::{self, Insn};

xtf::guest!(test_main);

/// What the `mov` right after each probed instruction puts in R11.
const MARK: u32 = 0x600d_600d;
/// MTRR PhysBase0: Keel keeps what the guest writes and reads it back, and intercepts it on both vendors.
const MSR_MTRR_PHYSBASE0: u32 = 0x200;
/// A port nothing answers: Keel reads all ones from it.
const NO_DEVICE_PORT: u16 = 0x1234;

/// CPUID leaf `leaf` through the encoding `$bytes` (a `.byte` list); `(eax, ebx, ecx, edx, r11)`.
macro_rules! cpuid_as {
    ($bytes:literal, $leaf:expr) => {{
        let (a, b, c, d, mark): (u32, u64, u32, u32, u32);
        // SAFETY: CPUID (whatever its prefixes) only writes EAX, EBX, ECX and EDX; RBX, which LLVM reserves, is
        // saved in a scratch register and swapped back, and R11 is declared.
        unsafe {
            asm!(
                "xor r11d, r11d",
                "mov {b}, rbx",
                concat!(".byte ", $bytes),
                "mov r11d, {mark}",
                "xchg {b}, rbx",
                b = out(reg) b,
                mark = const MARK,
                inout("eax") $leaf => a,
                inout("ecx") 0u32 => c,
                out("edx") d,
                out("r11d") mark,
                options(nomem, nostack),
            )
        };
        (a, b as u32, c, d, mark)
    }};
}

/// RDMSR of `msr` through the encoding `$bytes`; `(value, r11)`.
macro_rules! rdmsr_as {
    ($bytes:literal, $msr:expr) => {{
        let (lo, hi, mark): (u32, u32, u32);
        // SAFETY: the MSR exists for this guest (Keel emulates it); RDMSR writes only EAX and EDX, R11 is declared.
        unsafe {
            asm!(
                "xor r11d, r11d",
                concat!(".byte ", $bytes),
                "mov r11d, {mark}",
                mark = const MARK,
                in("ecx") $msr,
                out("eax") lo,
                out("edx") hi,
                out("r11d") mark,
                options(nomem, nostack),
            )
        };
        ((u64::from(hi) << 32) | u64::from(lo), mark)
    }};
}

/// WRMSR of `value` to `msr` through the encoding `$bytes`; R11 afterwards.
macro_rules! wrmsr_as {
    ($bytes:literal, $msr:expr, $value:expr) => {{
        let mark: u32;
        let value: u64 = $value;
        // SAFETY: the MSR is one Keel only stores (an MTRR base nothing else here uses); R11 is declared.
        unsafe {
            asm!(
                "xor r11d, r11d",
                concat!(".byte ", $bytes),
                "mov r11d, {mark}",
                mark = const MARK,
                in("ecx") $msr,
                in("eax") value as u32,
                in("edx") (value >> 32) as u32,
                out("r11d") mark,
                options(nostack),
            )
        };
        mark
    }};
}

/// `xen_version(XENVER_version)` through the encoding `$bytes` of a hypercall instruction; `(result, r11)`.
macro_rules! xen_version_as {
    ($bytes:literal) => {{
        let (rc, mark): (i64, u32);
        // SAFETY: XENVER_version takes no buffer; the five argument registers are clobbered as for any hypercall,
        // R11 is declared.
        unsafe {
            asm!(
                "xor r11d, r11d",
                concat!(".byte ", $bytes),
                "mov r11d, {mark}",
                mark = const MARK,
                inlateout("rax") nr::XEN_VERSION => rc,
                inlateout("rdi") xenver::VERSION => _,
                inlateout("rsi") 0u64 => _,
                inlateout("rdx") 0u64 => _,
                inlateout("r10") 0u64 => _,
                inlateout("r8") 0u64 => _,
                out("r11d") mark,
                options(nostack),
            )
        };
        (rc, mark)
    }};
}

fn check_mark(what: &str, mark: u32) -> xtf::TestResult {
    ensure!(
        mark == MARK,
        "{what}: the instruction after it did not run as encoded (R11 {mark:#x}, want {MARK:#x}): RIP resumed at the \
         wrong byte"
    );
    Ok(())
}

fn cpuid_probes() -> xtf::TestResult {
    let want = (MAX_LEAF, SIGNATURE[0], SIGNATURE[1], SIGNATURE[2]);
    for (what, (a, b, c, d, mark)) in [
        ("cpuid", cpuid_as!("0x0f, 0xa2", BASE)),
        ("66 cpuid", cpuid_as!("0x66, 0x0f, 0xa2", BASE)),
        ("2e cpuid", cpuid_as!("0x2e, 0x0f, 0xa2", BASE)),
        ("48 cpuid (REX.W)", cpuid_as!("0x48, 0x0f, 0xa2", BASE)),
        ("66 2e 3e 41 cpuid", cpuid_as!("0x66, 0x2e, 0x3e, 0x41, 0x0f, 0xa2", BASE)),
    ] {
        check_mark(what, mark)?;
        ensure!((a, b, c, d) == want, "{what} of leaf {BASE:#x}: {a:#x} {b:#x} {c:#x} {d:#x}, want {want:#x?}");
        xtf::println!("{what}: leaf {BASE:#x} right, resumed after it");
    }
    Ok(())
}

fn msr_probes() -> xtf::TestResult {
    let msr = MSR_MTRR_PHYSBASE0;
    let first = 0x0000_0001_2345_6006;
    // SAFETY: Keel emulates the MTRR bases for its guests; this guest uses no MTRRs.
    unsafe { wrmsr(msr, first) };
    for (what, (value, mark)) in [
        ("2e rdmsr", rdmsr_as!("0x2e, 0x0f, 0x32", msr)),
        ("66 rdmsr", rdmsr_as!("0x66, 0x0f, 0x32", msr)),
        ("66 41 rdmsr", rdmsr_as!("0x66, 0x41, 0x0f, 0x32", msr)),
    ] {
        check_mark(what, mark)?;
        ensure!(value == first, "{what} of MSR {msr:#x}: {value:#x}, want {first:#x}");
        xtf::println!("{what}: {value:#x}, resumed after it");
    }
    for (what, mark) in [
        ("3e wrmsr", wrmsr_as!("0x3e, 0x0f, 0x30", msr, first + 0x1000)),
        ("48 wrmsr (REX.W)", wrmsr_as!("0x48, 0x0f, 0x30", msr, first + 0x2000)),
        ("66 2e 48 wrmsr", wrmsr_as!("0x66, 0x2e, 0x48, 0x0f, 0x30", msr, first + 0x3000)),
    ] {
        check_mark(what, mark)?;
    }
    // SAFETY: as above.
    let last = unsafe { rdmsr(msr) };
    ensure!(last == first + 0x3000, "after the prefixed WRMSRs MSR {msr:#x} is {last:#x}, want {:#x}", first + 0x3000);
    xtf::println!("3e / 48 / 66 2e 48 wrmsr: each resumed after it, MSR {msr:#x} = {last:#x}");
    // SAFETY: as above; the MTRR base goes back to its reset value.
    unsafe { wrmsr(msr, 0) };
    Ok(())
}

fn io_probe() -> xtf::TestResult {
    let before: u64 = 0x1111_2222_3333_4444;
    let (after, mark): (u64, u32);
    // SAFETY: IN from a port no device decodes; it writes only AX (16-bit with the 66 prefix); R11 is declared.
    unsafe {
        asm!(
            "xor r11d, r11d",
            ".byte 0x2e, 0x66, 0xed", // cs: in ax, dx
            "mov r11d, {mark}",
            mark = const MARK,
            in("dx") NO_DEVICE_PORT,
            inout("rax") before => after,
            out("r11d") mark,
            options(nomem, nostack),
        )
    };
    check_mark("2e 66 in ax, dx", mark)?;
    let want = before | 0xffff;
    ensure!(after == want, "2e 66 in ax, dx from port {NO_DEVICE_PORT:#x}: RAX {after:#x}, want {want:#x}");
    xtf::println!("2e 66 in ax, dx: RAX {after:#x}, resumed after it");
    Ok(())
}

fn hypercall_probes() -> xtf::TestResult {
    let (major, minor) = keel_abi::XEN_VERSION;
    let want = i64::from(major << 16 | minor);
    // This vendor's instruction exits as a hypercall; on AMD Intel's VMCALL raises #UD, which Keel also takes.
    let probes = match hypercall::insn() {
        Insn::Vmmcall => [
            ("2e vmmcall", xen_version_as!("0x2e, 0x0f, 0x01, 0xd9")),
            ("3e 48 vmcall (#UD on AMD)", xen_version_as!("0x3e, 0x48, 0x0f, 0x01, 0xc1")),
        ],
        Insn::Vmcall => [
            ("2e vmcall", xen_version_as!("0x2e, 0x0f, 0x01, 0xc1")),
            ("3e 48 vmcall", xen_version_as!("0x3e, 0x48, 0x0f, 0x01, 0xc1")),
        ],
    };
    for (what, (rc, mark)) in probes {
        check_mark(what, mark)?;
        ensure!(rc == want, "xen_version by {what}: {rc:#x}, want {want:#x}");
        xtf::println!("{what}: xen_version {}.{}, resumed after it", rc >> 16, rc & 0xffff);
    }
    Ok(())
}

fn test_main() -> xtf::TestResult {
    cpuid_probes()?;
    msr_probes()?;
    io_probe()?;
    hypercall_probes()
}
