//! The vendor-neutral reasons a guest stopped running. Both backends decode their exit information into this.

/// Why the guest exited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// CPUID.
    Cpuid,
    /// RDMSR (`write` false) or WRMSR.
    Msr { write: bool },
    /// Port I/O.
    Io { port: u16, size: u8, input: bool, string: bool, rep: bool },
    /// HLT.
    Hlt,
    /// The guest spun on PAUSE past the pause filter (SVM) or the PAUSE-loop window (VMX).
    Pause,
    /// VMMCALL/VMCALL: a hypercall.
    Hypercall,
    /// #UD raised in the guest (VMCALL on AMD, VMMCALL on Intel, or a real invalid opcode).
    InvalidOpcode,
    /// Another intercepted guest exception.
    Exception { vector: u8, error: Option<u32> },
    /// A nested page fault (NPF / EPT violation) at a guest-physical address.
    NestedPageFault { gpa: u64, write: bool, fetch: bool },
    /// INIT signal.
    Init,
    /// The guest triple-faulted (shutdown).
    TripleFault,
    /// A physical interrupt arrived (it is handled by the host once the exit is complete).
    ExternalInterrupt,
    /// A physical NMI.
    Nmi,
    /// The guest can now accept an interrupt.
    InterruptWindow,
    /// A virtualization instruction the guest may not use (VMRUN, VMLOAD, VMSAVE, STGI, CLGI, SKINIT, …).
    VirtInstruction,
    /// Entry failed: the guest state is invalid (backend-specific detail).
    InvalidState { detail: u64 },
    /// An exit Keel does not handle.
    Unknown { code: u64 },
}
