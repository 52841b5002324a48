//! The IDT: every vector goes through a stub in src/entry.S to [`dispatch`], which delivers event-channel
//! upcalls, resumes after faults that a fixup entry expects ([`crate::exinfo`]), and crashes the guest with a
//! description of anything else.

use crate::{arch, evtchn, exinfo, CALLBACK_VECTOR};
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

/// What `xtf_trap_common` saved, lowest address first.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    /// The CPU's error code, or 0 for vectors without one.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(size_of::<TrapFrame>() == 22 * 8);

/// 256 gates of 16 bytes, built by vCPU 0 and loaded by every vCPU.
#[repr(C, align(16))]
struct Idt([AtomicU64; 512]);

static IDT: Idt = Idt([const { AtomicU64::new(0) }; 512]);
/// Stub spacing in src/entry.S.
const STUB_SIZE: u64 = 16;
/// The 64-bit code selector in src/entry.S's GDT.
const CODE_SELECTOR: u64 = 0x08;
/// Present, DPL 0, 64-bit interrupt gate (IF is cleared on entry).
const INTERRUPT_GATE: u64 = 0x8e;

/// Fills the IDT (vCPU 0, once).
#[cfg(target_os = "none")]
pub(crate) fn init() {
    extern "C" {
        static xtf_trap_stubs: u8;
    }
    let stubs = (&raw const xtf_trap_stubs) as u64;
    for v in 0..256 {
        let addr = stubs + v as u64 * STUB_SIZE;
        let low = (addr & 0xffff) | (CODE_SELECTOR << 16) | (INTERRUPT_GATE << 40) | (((addr >> 16) & 0xffff) << 48);
        IDT.0[2 * v].store(low, Ordering::Relaxed);
        IDT.0[2 * v + 1].store(addr >> 32, Ordering::Relaxed);
    }
}

/// Loads the IDT on the calling vCPU.
pub(crate) fn load() {
    // SAFETY: every gate points at a stub in src/entry.S (vCPU 0 filled them before anyone loads the table).
    unsafe { arch::lidt(IDT.0.as_ptr() as u64, (size_of::<Idt>() - 1) as u16) };
}

/// Exception names for messages.
pub fn vector_name(v: u8) -> &'static str {
    const NAMES: [&str; 32] = [
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#CSO", "#TS", "#NP", "#SS", "#GP", "#PF",
        "#15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23", "#24", "#25", "#26", "#27", "#HV", "#VC", "#SX",
        "#31",
    ];
    NAMES.get(v as usize).copied().unwrap_or("interrupt")
}

/// A test's handler for vectors nothing else expects (a `fn(u8) -> bool`, null = none).
static STRAY: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Lets `handler(vector)` take the vectors that would otherwise crash the guest (interrupts a test provokes on
/// purpose: IPIs, NMIs, stray timer vectors). It returns whether it took the vector; `None` removes it. The
/// handler runs with interrupts off and must not fault.
pub fn set_stray_handler(handler: Option<fn(u8) -> bool>) {
    STRAY.store(handler.map_or(core::ptr::null_mut(), |h| h as *mut ()), Ordering::Release);
}

/// Called by `xtf_trap_common` for every vector.
pub(crate) extern "C" fn dispatch(frame: &mut TrapFrame) {
    let vector = frame.vector as u8;
    if vector == CALLBACK_VECTOR {
        evtchn::upcall();
        return;
    }
    if vector < 32 {
        if let Some(resume) = exinfo::fixup(frame.rip) {
            exinfo::record(vector, frame.error_code as u32);
            frame.rip = resume;
            return;
        }
    }
    let stray = STRAY.load(Ordering::Acquire);
    if !stray.is_null() {
        // SAFETY: `set_stray_handler` is the only writer and stores a `fn(u8) -> bool`.
        let f: fn(u8) -> bool = unsafe { core::mem::transmute::<*mut (), fn(u8) -> bool>(stray) };
        if f(vector) {
            return;
        }
    }
    let cr2 = if vector == 14 { arch::cr2() } else { 0 };
    panic!(
        "unexpected {} (vector {vector}) error code {:#x} at rip {:#x} rsp {:#x} cr2 {cr2:#x}",
        vector_name(vector),
        frame.error_code,
        frame.rip,
        frame.rsp
    );
}
