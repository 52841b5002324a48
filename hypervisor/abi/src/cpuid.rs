//! The hypervisor CPUID leaves (Xen `xen/include/public/arch-x86/cpuid.h`).

/// First hypervisor leaf.
pub const BASE: u32 = 0x4000_0000;
/// Largest leaf Keel implements (base + 5, as Xen).
pub const MAX_LEAF: u32 = BASE + 5;
/// "XenVMMXenVMM" in EBX, ECX, EDX.
pub const SIGNATURE: [u32; 3] = [0x566e_6558, 0x6558_4d4d, 0x4d4d_566e];
/// MSR the guest writes the hypercall page's address to (leaf base+2 EBX).
pub const HYPERCALL_PAGE_MSR: u32 = 0x4000_0000;
/// Leaf base+4 EAX flags.
pub mod hvm_flags {
    /// Virtualized x2APIC accesses are available.
    pub const X2APIC_VIRT: u32 = 1 << 1;
    /// EBX holds the vCPU id.
    pub const VCPU_ID_PRESENT: u32 = 1 << 3;
    /// ECX holds the domain id.
    pub const DOMID_PRESENT: u32 = 1 << 4;
}
/// Bit 31 of CPUID.1:ECX: running under a hypervisor.
pub const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;

/// Size of one stub in the hypercall page.
pub const HYPERCALL_STUB_SIZE: usize = 32;
