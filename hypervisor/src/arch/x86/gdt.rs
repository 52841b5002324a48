//! Per-CPU GDT and TSS, with separate interrupt stacks (IST) for NMI, double fault and machine check so that
//! those are handled even when the kernel stack is broken.

use alloc::boxed::Box;
use x86_64::instructions::segmentation::{Segment, CS, DS, ES, SS};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::VirtAddr;

/// IST slot (1-based in the IDT, 0-based in the TSS) per critical exception.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum IstSlot {
    /// Non-maskable interrupt.
    Nmi = 1,
    /// Double fault.
    DoubleFault = 2,
    /// Machine check.
    MachineCheck = 3,
}

const IST_STACK_SIZE: usize = 16 * 1024;

/// Kernel code selector.
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data selector.
pub const KERNEL_DS: u16 = 0x10;
/// TSS selector.
pub const TSS_SEL: u16 = 0x18;

/// Linear bases of this CPU's GDT and IDT (for the VMX host state).
pub fn descriptor_table_bases() -> (u64, u64) {
    let gdt = x86_64::instructions::tables::sgdt();
    let idt = x86_64::instructions::tables::sidt();
    (gdt.base.as_u64(), idt.base.as_u64())
}

/// Builds and loads this CPU's GDT and TSS. The tables live as long as Keel (they are leaked on purpose).
pub fn init_this_cpu() {
    let tss: &'static mut TaskStateSegment = Box::leak(Box::new(TaskStateSegment::new()));
    for slot in [IstSlot::Nmi, IstSlot::DoubleFault, IstSlot::MachineCheck] {
        let stack: &'static mut [u8] = Box::leak(alloc::vec![0u8; IST_STACK_SIZE].into_boxed_slice());
        let top = VirtAddr::from_ptr(stack.as_ptr()) + IST_STACK_SIZE as u64;
        tss.interrupt_stack_table[slot as usize - 1] = top.align_down(16u64);
    }
    let tss: &'static TaskStateSegment = tss;
    super::percpu::this().set_tss_base(tss as *const TaskStateSegment as u64);
    let gdt: &'static mut GlobalDescriptorTable = Box::leak(Box::new(GlobalDescriptorTable::new()));
    let code = gdt.append(Descriptor::kernel_code_segment());
    let data = gdt.append(Descriptor::kernel_data_segment());
    let tss_sel = gdt.append(Descriptor::tss_segment(tss));
    debug_assert_eq!((code.0, data.0), (KERNEL_CS, KERNEL_DS));
    let gdt: &'static GlobalDescriptorTable = gdt;
    gdt.load();
    // SAFETY: the selectors index descriptors of the GDT just loaded (which lives forever), and the TSS
    // descriptor is not yet marked busy.
    unsafe {
        CS::set_reg(code);
        DS::set_reg(data);
        ES::set_reg(data);
        SS::set_reg(data);
        load_tss(tss_sel);
    }
    let _: SegmentSelector = tss_sel;
}
