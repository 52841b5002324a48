//! The guest-register half of the world switch, written once for both backends.
//!
//! SVM (`svm/vcpu.rs`) and VMX (`vmx/vcpu.rs`) each have their own entry and exit sequence (VMRUN with
//! VMLOAD/VMSAVE; VMLAUNCH/VMRESUME with a host RIP), but both load the guest's general-purpose registers from a
//! [`Gprs`](super::Gprs) before entering and store them back after the exit with RAX pointing at it. Those two
//! sequences are the fragments here; [`guest_entry_asm!`] assembles a backend's `global_asm!` around them and
//! passes every register's offset as a `const` operand taken from the struct with `offset_of!`, so the assembly
//! cannot drift from the struct's layout.
//!
//! In the backend's template, `{g_rax}` … `{g_r15}` are those offsets; [`load_guest_gprs!`] and
//! [`store_guest_gprs!`] expand to the fragments (RAX = `&mut Gprs`; RAX itself is left to the backend, since SVM
//! keeps the guest's RAX in the VMCB and VMX must use RAX as the base until the last load).

/// Loads RBX, RCX, RDX, RSI, RDI, RBP and R8–R15 from the [`Gprs`](super::Gprs) at RAX (AT&T syntax).
macro_rules! load_guest_gprs {
    () => {
        concat!(
            "movq {g_rbx}(%rax), %rbx\n",
            "movq {g_rcx}(%rax), %rcx\n",
            "movq {g_rdx}(%rax), %rdx\n",
            "movq {g_rsi}(%rax), %rsi\n",
            "movq {g_rdi}(%rax), %rdi\n",
            "movq {g_rbp}(%rax), %rbp\n",
            "movq {g_r8}(%rax), %r8\n",
            "movq {g_r9}(%rax), %r9\n",
            "movq {g_r10}(%rax), %r10\n",
            "movq {g_r11}(%rax), %r11\n",
            "movq {g_r12}(%rax), %r12\n",
            "movq {g_r13}(%rax), %r13\n",
            "movq {g_r14}(%rax), %r14\n",
            "movq {g_r15}(%rax), %r15\n",
        )
    };
}

/// Stores RBX, RCX, RDX, RSI, RDI, RBP and R8–R15 into the [`Gprs`](super::Gprs) at RAX (AT&T syntax).
macro_rules! store_guest_gprs {
    () => {
        concat!(
            "movq %rbx, {g_rbx}(%rax)\n",
            "movq %rcx, {g_rcx}(%rax)\n",
            "movq %rdx, {g_rdx}(%rax)\n",
            "movq %rsi, {g_rsi}(%rax)\n",
            "movq %rdi, {g_rdi}(%rax)\n",
            "movq %rbp, {g_rbp}(%rax)\n",
            "movq %r8, {g_r8}(%rax)\n",
            "movq %r9, {g_r9}(%rax)\n",
            "movq %r10, {g_r10}(%rax)\n",
            "movq %r11, {g_r11}(%rax)\n",
            "movq %r12, {g_r12}(%rax)\n",
            "movq %r13, {g_r13}(%rax)\n",
            "movq %r14, {g_r14}(%rax)\n",
            "movq %r15, {g_r15}(%rax)\n",
        )
    };
}

/// A backend's world-switch `global_asm!` (AT&T syntax) with the [`Gprs`](super::Gprs) offsets as operands
/// `g_rax` … `g_r15` (each template must use `{g_rax}` somewhere, as every operand must be used).
macro_rules! guest_entry_asm {
    ($($template:expr),+ $(,)?) => {
        core::arch::global_asm!(
            $($template),+,
            g_rax = const core::mem::offset_of!($crate::hvm::Gprs, rax),
            g_rbx = const core::mem::offset_of!($crate::hvm::Gprs, rbx),
            g_rcx = const core::mem::offset_of!($crate::hvm::Gprs, rcx),
            g_rdx = const core::mem::offset_of!($crate::hvm::Gprs, rdx),
            g_rsi = const core::mem::offset_of!($crate::hvm::Gprs, rsi),
            g_rdi = const core::mem::offset_of!($crate::hvm::Gprs, rdi),
            g_rbp = const core::mem::offset_of!($crate::hvm::Gprs, rbp),
            g_r8 = const core::mem::offset_of!($crate::hvm::Gprs, r8),
            g_r9 = const core::mem::offset_of!($crate::hvm::Gprs, r9),
            g_r10 = const core::mem::offset_of!($crate::hvm::Gprs, r10),
            g_r11 = const core::mem::offset_of!($crate::hvm::Gprs, r11),
            g_r12 = const core::mem::offset_of!($crate::hvm::Gprs, r12),
            g_r13 = const core::mem::offset_of!($crate::hvm::Gprs, r13),
            g_r14 = const core::mem::offset_of!($crate::hvm::Gprs, r14),
            g_r15 = const core::mem::offset_of!($crate::hvm::Gprs, r15),
            options(att_syntax)
        );
    };
}

pub(crate) use {guest_entry_asm, load_guest_gprs, store_guest_gprs};
