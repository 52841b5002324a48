//! The IDT, the assembly entry stubs for all 256 vectors, and the dispatcher.
//!
//! Exceptions are fatal to the CPU that takes them: it prints a full dump (CPU, vector, error code, RIP, RSP,
//! CR2 and every register) and stops, while the other CPUs carry on. Interrupt vectors go to handlers
//! registered with [`register_handler`].

use super::gdt::{IstSlot, KERNEL_CS};
use super::{cpu, percpu};
use core::sync::atomic::{AtomicUsize, Ordering};

// Each stub is 16 bytes: [push 0 (no error code)], push vector, jmp to the common path, which saves the general
// registers, calls `keel_trap_dispatch(&mut TrapFrame)` and returns with iretq.
core::arch::global_asm!(
    r#"
    .section .text.traps, "ax"
    .balign 16
    .global keel_trap_stubs
keel_trap_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    .if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    pushq $0
    .endif
    pushq $vec
    jmp keel_trap_common
    .set vec, vec + 1
    .endr

keel_trap_common:
    pushq %r15
    pushq %r14
    pushq %r13
    pushq %r12
    pushq %r11
    pushq %r10
    pushq %r9
    pushq %r8
    pushq %rbp
    pushq %rdi
    pushq %rsi
    pushq %rdx
    pushq %rcx
    pushq %rbx
    pushq %rax
    movq %rsp, %rdi
    cld
    call keel_trap_dispatch
    popq %rax
    popq %rbx
    popq %rcx
    popq %rdx
    popq %rsi
    popq %rdi
    popq %rbp
    popq %r8
    popq %r9
    popq %r10
    popq %r11
    popq %r12
    popq %r13
    popq %r14
    popq %r15
    addq $16, %rsp
    iretq
    .text
"#,
    options(att_syntax)
);

extern "C" {
    static keel_trap_stubs: [u8; 256 * 16];
}

/// The registers saved on entry, in stack order.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    /// Vector number pushed by the stub.
    pub vector: u64,
    /// Error code (0 for vectors without one).
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Architectural exception vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Exception {
    DivideError = 0,
    Debug = 1,
    Nmi = 2,
    Breakpoint = 3,
    Overflow = 4,
    BoundRange = 5,
    InvalidOpcode = 6,
    DeviceNotAvailable = 7,
    DoubleFault = 8,
    InvalidTss = 10,
    SegmentNotPresent = 11,
    StackFault = 12,
    GeneralProtection = 13,
    PageFault = 14,
    X87 = 16,
    AlignmentCheck = 17,
    MachineCheck = 18,
    Simd = 19,
    Virtualization = 20,
    ControlProtection = 21,
    Hypervisor = 28,
    VmmCommunication = 29,
    Security = 30,
}

impl Exception {
    /// Xen-style mnemonic for a vector below 32.
    pub fn mnemonic(vector: u8) -> &'static str {
        match vector {
            0 => "#DE",
            1 => "#DB",
            2 => "NMI",
            3 => "#BP",
            4 => "#OF",
            5 => "#BR",
            6 => "#UD",
            7 => "#NM",
            8 => "#DF",
            10 => "#TS",
            11 => "#NP",
            12 => "#SS",
            13 => "#GP",
            14 => "#PF",
            16 => "#MF",
            17 => "#AC",
            18 => "#MC",
            19 => "#XM",
            20 => "#VE",
            21 => "#CP",
            28 => "#HV",
            29 => "#VC",
            30 => "#SX",
            _ => "reserved",
        }
    }
}

/// One IDT gate descriptor (64-bit interrupt gate).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

const _: () = assert!(core::mem::size_of::<Gate>() == 16);

/// Present, DPL 0, 64-bit interrupt gate (interrupts masked on entry).
const GATE_INTERRUPT: u8 = 0x8e;

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static mut IDT: Idt =
    Idt([Gate { offset_low: 0, selector: 0, ist: 0, type_attr: 0, offset_mid: 0, offset_high: 0, reserved: 0 }; 256]);

/// Interrupt handlers by vector (0 = none).
static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];

/// An interrupt handler. It must acknowledge the interrupt (EOI) itself when needed.
pub type Handler = fn(&mut TrapFrame);

/// Routes `vector` (32..=255) to `handler`.
pub fn register_handler(vector: u8, handler: Handler) {
    assert!(vector >= 32, "vectors below 32 are exceptions");
    HANDLERS[vector as usize].store(handler as usize, Ordering::Release);
}

/// Set once the IDT is filled; `init_idt` fills it only while this is unset.
static IDT_FILLED: spin::Once<()> = spin::Once::new();

/// Fills the IDT (on the boot CPU, before any CPU loads it); later calls do nothing.
pub fn init_idt() {
    IDT_FILLED.call_once(fill_idt);
}

fn fill_idt() {
    // Only the address of the stub table (defined in the global_asm block above) is taken.
    let base = core::ptr::addr_of!(keel_trap_stubs) as u64;
    // SAFETY: runs once (`IDT_FILLED`), and `load_idt` refuses to load the IDT before that has finished, so no
    // CPU reads it meanwhile; nothing else writes it.
    let idt = unsafe { &mut *core::ptr::addr_of_mut!(IDT) };
    for (v, gate) in idt.0.iter_mut().enumerate() {
        let addr = base + v as u64 * 16;
        let ist = match v {
            2 => IstSlot::Nmi as u8,
            8 => IstSlot::DoubleFault as u8,
            18 => IstSlot::MachineCheck as u8,
            _ => 0,
        };
        *gate = Gate {
            offset_low: addr as u16,
            selector: KERNEL_CS,
            ist,
            type_attr: GATE_INTERRUPT,
            offset_mid: (addr >> 16) as u16,
            offset_high: (addr >> 32) as u32,
            reserved: 0,
        };
    }
}

/// Loads the IDT on this CPU (after `init_idt`).
pub fn load_idt() {
    assert!(IDT_FILLED.is_completed(), "load_idt before init_idt");
    #[repr(C, packed)]
    struct Idtr {
        limit: u16,
        base: u64,
    }
    let idtr = Idtr { limit: (core::mem::size_of::<Idt>() - 1) as u16, base: core::ptr::addr_of!(IDT) as u64 };
    // SAFETY: the IDT is static, filled by `init_idt` (asserted above) and never written again; its gates point at
    // the stubs above.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &idtr, options(readonly, nostack, preserves_flags)) };
}

#[no_mangle]
extern "C" fn keel_trap_dispatch(frame: &mut TrapFrame) {
    let vector = frame.vector as u8;
    if vector < 32 {
        fatal_exception(frame);
    }
    let h = HANDLERS[vector as usize].load(Ordering::Acquire);
    if h != 0 {
        // SAFETY: only `register_handler` stores into HANDLERS, and it stores valid `Handler` fn pointers.
        let handler: Handler = unsafe { core::mem::transmute::<usize, Handler>(h) };
        handler(frame);
    } else {
        crate::warning!("CPU{}: unexpected interrupt vector {:#x}", percpu::current_index(), vector);
        super::apic::eoi();
    }
}

/// Decodes a page-fault error code.
pub fn describe_pf_error(e: u64) -> alloc::string::String {
    use alloc::string::String;
    let mut s = String::new();
    s.push_str(if e & 1 != 0 { "protection violation" } else { "not present" });
    s.push_str(if e & 2 != 0 { ", write" } else { ", read" });
    if e & 16 != 0 {
        s.push_str(", instruction fetch");
    }
    s.push_str(if e & 4 != 0 { ", user" } else { ", supervisor" });
    if e & 8 != 0 {
        s.push_str(", reserved bit set");
    }
    s
}

fn fatal_exception(f: &TrapFrame) -> ! {
    let me = percpu::this();
    let n = me.index.load(Ordering::Relaxed);
    let v = f.vector as u8;
    crate::error!("*** CPU{} EXCEPTION {} (vector {}) error={:#018x} ***", n, Exception::mnemonic(v), v, f.error);
    if v == Exception::PageFault as u8 {
        crate::error!("page fault: {}", describe_pf_error(f.error));
    }
    crate::error!("RIP={:#018x} CS={:#06x} RFLAGS={:#018x}", f.rip, f.cs, f.rflags);
    crate::error!("RSP={:#018x} SS={:#06x} CR2={:#018x}", f.rsp, f.ss, cpu::read_cr2());
    crate::error!("CR0={:#018x} CR3={:#018x} CR4={:#018x}", cpu::read_cr0(), cpu::read_cr3(), cpu::read_cr4());
    crate::error!("RAX={:#018x} RBX={:#018x} RCX={:#018x} RDX={:#018x}", f.rax, f.rbx, f.rcx, f.rdx);
    crate::error!("RSI={:#018x} RDI={:#018x} RBP={:#018x} R8 ={:#018x}", f.rsi, f.rdi, f.rbp, f.r8);
    crate::error!("R9 ={:#018x} R10={:#018x} R11={:#018x} R12={:#018x}", f.r9, f.r10, f.r11, f.r12);
    crate::error!("R13={:#018x} R14={:#018x} R15={:#018x}", f.r13, f.r14, f.r15);
    crate::error!("CPU{} halted after fatal exception", n);
    me.set_state(percpu::CpuState::Dead);
    cpu::halt_forever()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_fault_error_codes() {
        assert_eq!(describe_pf_error(0), "not present, read, supervisor");
        assert_eq!(describe_pf_error(0b10111), "protection violation, write, instruction fetch, user");
    }

    #[test]
    fn mnemonics() {
        assert_eq!(Exception::mnemonic(Exception::PageFault as u8), "#PF");
        assert_eq!(Exception::mnemonic(Exception::DoubleFault as u8), "#DF");
        assert_eq!(Exception::mnemonic(15), "reserved");
    }
}
