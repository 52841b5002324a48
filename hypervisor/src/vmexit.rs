//! Vendor-neutral exit handling: the one dispatch point from [`Exit`] to the code that deals with it. Anything a
//! guest does wrong ends that guest through [`Domain::crash`], never the host.

use crate::domain::{self, evtchn, Domain, Vcpu, VcpuState};
use crate::hvm::vlapic::{self, IpiRequest, WriteEffect};
use crate::hvm::{decode, ioport, vector, Event, Exit, HwVcpu, InitState};
use crate::hypercall;
use crate::mm::heap::try_filled;
use alloc::format;
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use keel_abi::cpuid as xcpuid;

pub use crate::sched::Outcome;

/// Injects what is pending, by priority: an NMI, the event-channel upcall (directly, bypassing the vLAPIC, as
/// Xen does), then the highest deliverable vLAPIC interrupt. Asks for an interrupt window when the guest cannot
/// take one now.
pub fn deliver_events(dom: &Domain, v: &Vcpu, hw: &mut HwVcpu) {
    if v.nmi_pending.load(Ordering::Acquire) && hw.inject(Event::Nmi) {
        *v.last_injected.lock() = Some(Event::Nmi);
        v.nmi_pending.store(false, Ordering::Release);
        return;
    }
    let cb = dom.params.lock()[keel_abi::shared_info::hvm_param::CALLBACK_IRQ as usize];
    let upcall = cb >> 56 == keel_abi::shared_info::hvm_param::CALLBACK_TYPE_VECTOR && evtchn::upcall_pending(dom, v);
    let lapic_vec = if upcall { None } else { v.lapic.lock().pending() };
    let want = if upcall { Some(cb as u8) } else { lapic_vec };
    match want {
        None => {
            if v.window_requested.swap(false, Ordering::Relaxed) {
                hw.request_interrupt_window(false);
            }
        }
        Some(vec) if hw.interruptible() => {
            if hw.inject(Event::Interrupt(vec)) {
                *v.last_injected.lock() = Some(Event::Interrupt(vec));
                if lapic_vec.is_some() {
                    v.lapic.lock().accept(vec);
                }
                if v.window_requested.swap(false, Ordering::Relaxed) {
                    hw.request_interrupt_window(false);
                }
            }
        }
        Some(_) => {
            if !v.window_requested.swap(true, Ordering::Relaxed) {
                hw.request_interrupt_window(true);
            }
        }
    }
}

/// Whether the vCPU has an interrupt it would take (wakes it from HLT).
pub fn has_pending_interrupt(dom: &Domain, v: &Vcpu) -> bool {
    evtchn::upcall_pending(dom, v) || v.nmi_pending.load(Ordering::Acquire) || v.lapic.lock().pending().is_some()
}

/// After a triple fault: how the vCPU's page tables map its IDT (a fault delivering an event usually means the
/// IDT or the stack is not mapped), and the other vCPUs' CR3s, for the log.
fn log_idt_walk(dom: &Domain, v: &Vcpu, hw: &HwVcpu) {
    let p = hw.paging();
    let idtr = hw.idtr_base();
    let chain = {
        let mem = dom.mem.lock();
        crate::hvm::walk::long_mode_chain(p.cr3, idtr, |g| mem.read_val::<u64>(g).ok())
    };
    let mut text = alloc::string::String::new();
    for &(level, idx, e) in &chain {
        text.push_str(&format!(" L{level}[{idx}]={e:#x}"));
    }
    crate::error!("d{}v{} IDT {idtr:#x} through CR3 {:#x}:{text}", dom.id, v.id, p.cr3);
    // A last page fault inside the IDT page that the guest's tables map means the CPU failed to read a present
    // gate: the guest's page tables did not cause it. Keel has seen this only under QEMU TCG's nested SVM (see
    // docs/testing.md, "A QEMU defect").
    let cr2 = hw.cr2();
    let leaf_present = chain.last().is_some_and(|&(level, _, e)| e & 1 != 0 && (level == 1 || e & (1 << 7) != 0));
    if cr2 & !0xfff == idtr & !0xfff && leaf_present {
        crate::error!(
            "d{}v{}: its last page fault (CR2 {cr2:#x}) was on its IDT, which its page tables map: the CPU did not \
             read a present IDT",
            dom.id,
            v.id
        );
    }
    for o in dom.vcpus.iter().filter(|o| o.id != v.id) {
        crate::error!(
            "d{}v{}: state {:?}, last RIP {:#x}",
            dom.id,
            o.id,
            o.state(),
            o.last_rip.load(Ordering::Relaxed)
        );
    }
}

/// Handles one exit.
pub fn handle(dom: &Arc<Domain>, v: &Arc<Vcpu>, hw: &mut HwVcpu, exit: Exit) -> Outcome {
    match exit {
        Exit::Cpuid => {
            cpuid(dom, v, hw);
            step_over(dom, v, hw)
        }
        Exit::Hypercall => hypercall_exit(dom, v, hw),
        Exit::InvalidOpcode => invalid_opcode(dom, v, hw),
        Exit::Hlt => {
            if step_over(dom, v, hw) == Outcome::Stop {
                return Outcome::Stop;
            }
            if hw.rflags() & (1 << 9) == 0 {
                Outcome::Offline
            } else if has_pending_interrupt(dom, v) {
                Outcome::Continue
            } else {
                Outcome::Block
            }
        }
        // The exit comes before the PAUSE completes: step over it (a hint, nothing to emulate), or a CPU that
        // exits on every PAUSE would take the same exit forever; the spinning vCPU yields so that whatever it
        // waits for can run.
        Exit::Pause => match step_over(dom, v, hw) {
            Outcome::Continue => Outcome::YieldToOthers,
            stop => stop,
        },
        Exit::Msr { write } => msr(dom, v, hw, write),
        Exit::Io { port, size, input, string, rep } => io(dom, v, hw, port, size, input, string, rep),
        Exit::NestedPageFault { gpa, write, fetch } => {
            // Both backends decode their fault (SVM's NPF, VMX's EPT violation) into this exit. A write to a page
            // write-protected for log-dirty is logged and retried; so is one to a page made writable since.
            if write && !fetch && dom.log_dirty_fault(gpa) {
                return Outcome::Continue;
            }
            if !fetch && dom.owns_devices.load(Ordering::Acquire) {
                // Device memory (a BAR in the host map's holes): mapped 1:1 at its first access, then retried.
                let page = gpa & !0xfff;
                // An MSI-X table's page is never mapped: its accesses are emulated (`hvm::msix`).
                if dom.mmio_holes.lock().iter().any(|r| r.contains(&page)) && !ioport::is_msix_page(page) {
                    match dom.map_identity(page..page + 0x1000) {
                        Ok(()) => return Outcome::Continue,
                        // Another vCPU mapped it first.
                        Err(_) if dom.mem.lock().translate(page, false).is_ok() => return Outcome::Continue,
                        Err(e) => crate::warning!("d{}: device memory at {page:#x}: {e}", dom.id),
                    }
                }
                return emulated_mmio(dom, v, hw, gpa);
            }
            let kind = if fetch {
                "instruction fetch"
            } else if write {
                "write"
            } else {
                "read"
            };
            dom.crash(&format!(
                "{kind} of unmapped guest-physical memory at gpa {gpa:#x} (vCPU {}, RIP {:#x})",
                v.id,
                hw.rip()
            ));
            Outcome::Stop
        }
        Exit::TripleFault => {
            dom.crash(&format!(
                "triple fault (vCPU {}, RIP {:#x}, last injected {:?})",
                v.id,
                hw.rip(),
                *v.last_injected.lock()
            ));
            crate::error!("d{}v{} state: {}", dom.id, v.id, hw.describe());
            log_idt_walk(dom, v, hw);
            Outcome::Stop
        }
        Exit::ExternalInterrupt | Exit::Nmi | Exit::InterruptWindow | Exit::Init => Outcome::Continue,
        Exit::VirtInstruction => {
            hw.inject(Event::Exception { vector: vector::UD, error: None });
            Outcome::Continue
        }
        Exit::Exception { vector, error } => {
            dom.crash(&format!("unexpected exception {vector} (error {error:?}) at RIP {:#x}", hw.rip()));
            crate::error!("d{}v{} state: {}", dom.id, v.id, hw.describe());
            log_idt_walk(dom, v, hw);
            Outcome::Stop
        }
        Exit::InvalidState { detail } => {
            dom.crash(&format!("VM entry failed: invalid guest state ({detail:#x}) at RIP {:#x}", hw.rip()));
            Outcome::Stop
        }
        Exit::Unknown { code } => {
            dom.crash(&format!("unhandled exit {code:#x} at RIP {:#x}", hw.rip()));
            Outcome::Stop
        }
    }
}

/// Moves the guest past the instruction that exited (it has been emulated): to the next RIP the hardware
/// reported, or else past the instruction decoded at RIP, prefixes included. `Continue`, or `Stop` with the
/// domain crashed when the instruction cannot be read back or decoded (its code was unmapped or rewritten by
/// another vCPU since the exit).
fn step_over(dom: &Domain, v: &Vcpu, hw: &mut HwVcpu) -> Outcome {
    if let Some(next) = hw.next_rip() {
        hw.advance_to(next);
        return Outcome::Continue;
    }
    let cs = hw.code_segment();
    let rip = hw.rip();
    let (buf, n) = fetch_at_rip(dom, hw);
    match decode::insn_len(&buf[..n], cs.bitness) {
        Some(len) => {
            hw.advance_to(cs.advance(rip, len));
            Outcome::Continue
        }
        None => {
            dom.crash(&format!(
                "vCPU {}: cannot decode the instruction at RIP {rip:#x} to step over it (bytes {:02x?})",
                v.id,
                &buf[..n]
            ));
            Outcome::Stop
        }
    }
}

fn hypercall_exit(dom: &Arc<Domain>, v: &Arc<Vcpu>, hw: &mut HwVcpu) -> Outcome {
    if step_over(dom, v, hw) == Outcome::Stop {
        return Outcome::Stop;
    }
    if hw.paging().cpl != 0 {
        hw.gprs().rax = keel_abi::Errno::EPERM.to_return();
        return Outcome::Continue;
    }
    hypercall::dispatch(dom, v, hw)
}

/// An access of the hardware domain to memory its p2m does not map: its IO-APICs' windows go to their models,
/// the pages of MSI-X tables to `hvm::msix` (through `ioport::msix_access`), anything else reads all-ones and
/// drops writes (Xen's answer where no device model claims an access). The instruction at RIP is decoded and
/// carried out, and RIP steps past it; one Keel cannot carry out crashes the domain with its bytes.
fn emulated_mmio(dom: &Arc<Domain>, v: &Vcpu, hw: &mut HwVcpu, gpa: u64) -> Outcome {
    let mut ioapics = dom.vioapics.lock();
    let mut ioapic = ioapics.iter_mut().find(|a| a.covers(gpa));
    let msix = ioapic.is_none() && ioport::is_msix_page(gpa & !0xfff);
    if ioapic.is_none() && !msix {
        // Memory nothing claims (HPET, which Keel keeps; a BAR not mapped): reads all-ones, writes dropped, as
        // Xen completes an access no device model serves. The first pages touched are logged.
        static LOGGED: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);
        if LOGGED.fetch_add(1, Ordering::Relaxed) < 32 {
            crate::info!("d{}v{}: unclaimed MMIO at gpa {gpa:#x} (RIP {:#x}): all-ones", dom.id, v.id, hw.rip());
        }
    }
    let offset = ioapic.as_ref().map_or(0, |a| gpa - a.base);
    let cs = hw.code_segment();
    let rip = hw.rip();
    let (buf, n) = fetch_at_rip(dom, hw);
    let Some((insn, len)) = decode::mmio_insn(&buf[..n], cs.bitness) else {
        drop(ioapics);
        dom.crash(&format!(
            "vCPU {}: MMIO access at gpa {gpa:#x} by an instruction Keel does not emulate (RIP {rip:#x}, bytes \
             {:02x?})",
            v.id,
            &buf[..n]
        ));
        return Outcome::Stop;
    };
    let uses_rsp = match insn {
        decode::MmioInsn::Load { dst: r, .. } | decode::MmioInsn::Store { src: decode::StoreSrc::Reg(r), .. } => {
            r.number == 4 && !r.high8
        }
        decode::MmioInsn::Store { .. } => false,
    };
    if uses_rsp {
        drop(ioapics);
        dom.crash(&format!("vCPU {}: MMIO access through RSP at RIP {rip:#x}", v.id));
        return Outcome::Stop;
    }
    let g = hw.gprs();
    match insn {
        decode::MmioInsn::Load { dst, size } => {
            let mask = u64::MAX >> (64 - 8 * u32::from(size));
            let value = if msix {
                // An access Keel cannot split (unaligned) reads all-ones.
                ioport::msix_access(gpa, size, None, crate::domain::irq::msix_vector).map_or(mask, |(v, _)| v & mask)
            } else {
                let word = ioapic.as_ref().map_or(u32::MAX, |a| a.read(offset & !3));
                u64::from(word >> (8 * (offset & 3))) & mask
            };
            let Some(r) = g.by_number(dst.number) else { return Outcome::Stop };
            *r = match (dst.size, dst.high8) {
                (1, true) => (*r & !0xff00) | (value & 0xff) << 8,
                (1, false) => (*r & !0xff) | value,
                (2, _) => (*r & !0xffff) | value,
                _ => value, // 32-bit destinations clear the upper half; 64-bit ones take it all
            };
        }
        decode::MmioInsn::Store { src, size } => {
            let value = match src {
                decode::StoreSrc::Imm(v) => v,
                decode::StoreSrc::Reg(r) => {
                    let Some(x) = g.by_number(r.number) else { return Outcome::Stop };
                    if r.high8 {
                        *x >> 8 & 0xff
                    } else {
                        *x
                    }
                }
            };
            if msix {
                let value = value & (u64::MAX >> (64 - 8 * u32::from(size)));
                let changes = ioport::msix_access(gpa, size, Some(value), crate::domain::irq::msix_vector);
                for c in changes.map(|(_, c)| c).unwrap_or_default() {
                    crate::domain::irq::msix_changed(c);
                }
            }
            // IOREGSEL and IOWIN take 32-bit writes; a narrower one writes its bytes into the register's low end.
            if let Some(a) = ioapic.as_mut() {
                if let Some((pin, entry)) = a.write(offset & !3, value as u32) {
                    crate::domain::irq::entry_written(a.gsi_base + pin as u32, entry);
                }
            }
        }
    }
    drop(ioapics);
    hw.advance_to(cs.advance(rip, len));
    Outcome::Continue
}

/// Up to [`decode::MAX_INSN_LEN`] bytes at the guest's CS:RIP and how many could be read: the whole window, or
/// (when the page after the instruction's is not mapped) up to the end of its page, or none.
fn fetch_at_rip(dom: &Domain, hw: &HwVcpu) -> ([u8; decode::MAX_INSN_LEN], usize) {
    let linear = hw.code_segment().linear(hw.rip());
    let mut buf = [0u8; decode::MAX_INSN_LEN];
    let to_page_end = (0x1000 - (linear & 0xfff)) as usize;
    let n = if fetch_linear(dom, hw, linear, &mut buf) {
        buf.len()
    } else if to_page_end < buf.len() && fetch_linear(dom, hw, linear, &mut buf[..to_page_end]) {
        to_page_end
    } else {
        0
    };
    (buf, n)
}

/// Guest memory at a linear address, through the vCPU's page tables.
fn fetch_linear(dom: &Domain, hw: &HwVcpu, linear: u64, buf: &mut [u8]) -> bool {
    let mem = dom.mem.lock();
    domain::read_linear(&mem, &hw.paging(), linear, buf).is_ok()
}

/// #UD: the "other vendor's" hypercall instruction is accepted (Linux may pick either); anything else is the
/// guest's own #UD and goes back to it.
fn invalid_opcode(dom: &Arc<Domain>, v: &Arc<Vcpu>, hw: &mut HwVcpu) -> Outcome {
    let (buf, n) = fetch_at_rip(dom, hw);
    let insn = &buf[..n];
    let cs = hw.code_segment();
    if let Some(len) = decode::hypercall_len(insn, cs.bitness) {
        // No hardware next-RIP for a #UD: step over the VMCALL/VMMCALL as decoded, prefixes included.
        hw.advance_to(cs.advance(hw.rip(), len));
        if hw.paging().cpl != 0 {
            hw.gprs().rax = keel_abi::Errno::EPERM.to_return();
            return Outcome::Continue;
        }
        return hypercall::dispatch(dom, v, hw);
    }
    crate::debug!("d{}v{}: #UD at RIP {:#x} (bytes {:02x?}), reflected", dom.id, v.id, hw.rip(), insn);
    hw.inject(Event::Exception { vector: vector::UD, error: None });
    Outcome::Continue
}

fn native_cpuid(leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// The CPUID view of a guest: Xen's hypervisor leaves, the host's leaves with virtualization-related features
/// filtered.
pub fn cpuid_values(dom: &Domain, v: &Vcpu, leaf: u32, sub: u32) -> (u32, u32, u32, u32) {
    if (xcpuid::BASE..xcpuid::BASE + 0x1_0000).contains(&leaf) {
        let s = xcpuid::SIGNATURE;
        return match leaf {
            xcpuid::BASE => (xcpuid::MAX_LEAF, s[0], s[1], s[2]),
            l if l == xcpuid::BASE + 1 => ((keel_abi::XEN_VERSION.0 << 16) | keel_abi::XEN_VERSION.1, 0, 0, 0),
            l if l == xcpuid::BASE + 2 => (1, xcpuid::HYPERCALL_PAGE_MSR, 0, 0),
            l if l == xcpuid::BASE + 4 => {
                (xcpuid::hvm_flags::VCPU_ID_PRESENT | xcpuid::hvm_flags::DOMID_PRESENT, v.id, dom.id as u32, 0)
            }
            _ => (0, 0, 0, 0),
        };
    }
    let (mut a, mut b, mut c, mut d) = native_cpuid(leaf, sub);
    let (rdtscp, invpcid) = crate::hvm::support().map_or((false, false), |s| s.guest_rdtscp_invpcid());
    match leaf {
        1 => {
            c |= xcpuid::LEAF1_ECX_HYPERVISOR;
            c &= !(1 << 5 | 1 << 3 | 1 << 26 | 1 << 27); // VMX, MONITOR, XSAVE, OSXSAVE
            c |= 1 << 21; // x2APIC: the vLAPIC is x2APIC-only
            b = (b & 0x00ff_ffff) | (v.id << 24);
            b = (b & 0xff00_ffff) | ((dom.vcpus.len() as u32 & 0xff) << 16);
            d |= 1 << 28; // HTT: the logical-processor count in EBX is valid
            d &= !(1 << 7 | 1 << 14); // MCE, MCA: no virtual machine-check architecture
        }
        0xb | 0xd | 0x1f => (a, b, c, d) = (0, 0, 0, 0),
        7 if sub == 0 && !invpcid => b &= !(1 << 10),
        0x8000_0001 => {
            c &= !(1 << 2); // SVM
            if !rdtscp {
                d &= !(1 << 27);
            }
        }
        // Invariant TSC: every vCPU reads the host's synchronised TSC, which the pvclock is built on.
        0x8000_0007 => d |= 1 << 8,
        0x8000_000a => (a, b, c, d) = (0, 0, 0, 0),
        _ => {}
    }
    (a, b, c, d)
}

fn cpuid(dom: &Domain, v: &Vcpu, hw: &mut HwVcpu) {
    let g = hw.gprs();
    let (a, b, c, d) = cpuid_values(dom, v, g.rax as u32, g.rcx as u32);
    g.rax = a as u64;
    g.rbx = b as u64;
    g.rcx = c as u64;
    g.rdx = d as u64;
}

const MSR_TSC: u32 = 0x10;
const MSR_APIC_BASE: u32 = 0x1b;
const MSR_MTRR_CAP: u32 = 0xfe;
const MSR_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
/// E (bit 11) set, default memory type 6 (write-back).
const MTRR_DEF_TYPE_WB_ENABLED: u64 = 1 << 11 | 6;
const MSR_AMD_SYSCFG: u32 = 0xc001_0010;

fn msr(dom: &Arc<Domain>, v: &Arc<Vcpu>, hw: &mut HwVcpu, write: bool) -> Outcome {
    let (index, value) = {
        let g = hw.gprs();
        (g.rcx as u32, (g.rdx << 32) | (g.rax & 0xffff_ffff))
    };
    let ok = if write {
        write_msr(dom, v, hw, index, value)
    } else {
        match read_msr(v, hw, index) {
            Some(val) => {
                let g = hw.gprs();
                g.rax = val & 0xffff_ffff;
                g.rdx = val >> 32;
                true
            }
            None => false,
        }
    };
    if ok {
        step_over(dom, v, hw)
    } else {
        hw.inject(Event::Exception { vector: vector::GP, error: Some(0) });
        Outcome::Continue
    }
}

fn read_msr(v: &Vcpu, hw: &HwVcpu, index: u32) -> Option<u64> {
    if let Some(x) = hw.read_msr(index) {
        return Some(x);
    }
    match index {
        vlapic::MSR_FIRST..=vlapic::MSR_LAST => v.lapic.lock().read(index, crate::arch::x86::time::now_ns()),
        MSR_TSC => Some(crate::arch::x86::cpu::rdtsc()),
        // Enabled, in x2APIC mode from reset (as firmware would leave it), BSP flag on vCPU 0.
        MSR_APIC_BASE => Some(0xfee0_0000 | 1 << 11 | 1 << 10 | if v.id == 0 { 1 << 8 } else { 0 }),
        MSR_MTRR_CAP => Some(0x508), // 8 variable ranges, fixed ranges, write-combining
        MSR_MISC_ENABLE => Some(1),
        // MTRRs: enabled, default type write-back, nothing else set until the guest writes it (Linux keeps PAT
        // only when MTRRs are on).
        MSR_MTRR_DEF_TYPE => Some(v.msrs.lock().get(&index).copied().unwrap_or(MTRR_DEF_TYPE_WB_ENABLED)),
        0x200..=0x2ff => Some(v.msrs.lock().get(&index).copied().unwrap_or(0)),
        MSR_AMD_SYSCFG => Some(0),
        xcpuid::HYPERCALL_PAGE_MSR => Some(0),
        _ => None,
    }
}

fn write_msr(dom: &Arc<Domain>, v: &Arc<Vcpu>, hw: &mut HwVcpu, index: u32, value: u64) -> bool {
    if hw.write_msr(index, value) {
        return true;
    }
    match index {
        vlapic::MSR_FIRST..=vlapic::MSR_LAST => {
            let effect = v.lapic.lock().write(index, value, crate::arch::x86::time::now_ns());
            match effect {
                WriteEffect::Fault => false,
                WriteEffect::None => true,
                WriteEffect::Eoi(vector) => {
                    if dom.owns_devices.load(Ordering::Acquire) {
                        crate::domain::irq::eoi(vector);
                    }
                    true
                }
                WriteEffect::Timer => {
                    crate::timers::lapic_timer_changed();
                    true
                }
                WriteEffect::Ipi(req) => {
                    send_ipi(dom, v, req);
                    true
                }
            }
        }
        xcpuid::HYPERCALL_PAGE_MSR => match hypercall::install_page(dom, value) {
            Ok(()) => true,
            Err(e) => {
                crate::warning!("d{}: hypercall page at {value:#x} refused: {e}", dom.id);
                false
            }
        },
        MSR_TSC | MSR_APIC_BASE | MSR_MISC_ENABLE | MSR_AMD_SYSCFG => true,
        0x200..=0x2ff => {
            v.msrs.lock().insert(index, value);
            true
        }
        _ => false,
    }
}

/// The debug console port (Bochs/QEMU convention, and Xen's HVM debug port).
const DEBUG_PORT: u16 = 0xe9;

#[allow(clippy::too_many_arguments)]
fn io(
    dom: &Arc<Domain>,
    v: &Vcpu,
    hw: &mut HwVcpu,
    port: u16,
    size: u8,
    input: bool,
    string: bool,
    rep: bool,
) -> Outcome {
    // The hardware domain's ports (but the debug port) reach the hardware (`hvm::ioport`).
    let passthrough = dom.owns_devices.load(Ordering::Acquire) && port != DEBUG_PORT;
    if string {
        // INS/OUTS: only the debug port is given data (and the hardware domain's ports); everything else is dropped
        // or reads all-ones.
        let count = if rep { hw.gprs().rcx & 0xffff_ffff } else { 1 }.min(4096);
        let reg = if input { hw.gprs().rdi } else { hw.gprs().rsi };
        let len = count * size as u64;
        // RFLAGS.DF set: the string runs downwards (the buffer is then the `len` bytes ending at `reg`).
        let down = hw.rflags() & (1 << 10) != 0;
        let base = if down { reg.wrapping_sub(len.saturating_sub(size as u64)) } else { reg };
        // A buffer the heap cannot give drops the data, as for any other port.
        if passthrough {
            // The hardware domain's string I/O reaches the port element by element (ATA PIO uses REP INSW).
            if let Ok(mut buf) = try_filled(len as usize, 0) {
                let step = size as usize;
                if input {
                    for chunk in buf.chunks_mut(step) {
                        let v = hardware_access(dom, port, size, true, 0).unwrap_or(u32::MAX);
                        chunk.copy_from_slice(&v.to_le_bytes()[..step]);
                    }
                    if down {
                        reverse_elements(&mut buf, step);
                    }
                    let mem = dom.mem.lock();
                    let _ = domain::write_linear(&mem, &hw.paging(), base, &buf);
                } else {
                    let ok = {
                        let mem = dom.mem.lock();
                        domain::read_linear(&mem, &hw.paging(), base, &mut buf).is_ok()
                    };
                    if ok {
                        if down {
                            reverse_elements(&mut buf, step);
                        }
                        for chunk in buf.chunks(step) {
                            let mut v = [0u8; 4];
                            v[..step].copy_from_slice(chunk);
                            hardware_access(dom, port, size, false, u32::from_le_bytes(v));
                        }
                    }
                }
            }
        } else if !input && port == DEBUG_PORT {
            if let Ok(mut buf) = try_filled(len as usize, 0) {
                let ok = {
                    let mem = dom.mem.lock();
                    domain::read_linear(&mem, &hw.paging(), base, &mut buf).is_ok()
                };
                if ok {
                    if down {
                        // Elements went out from the highest address down.
                        buf.reverse();
                    }
                    dom.console_write(&buf);
                }
            }
        } else if input {
            if let Ok(buf) = try_filled(len as usize, 0xff) {
                let mem = dom.mem.lock();
                let _ = domain::write_linear(&mem, &hw.paging(), base, &buf);
            }
        }
        let g = hw.gprs();
        let step = |r: u64| if down { r.wrapping_sub(len) } else { r.wrapping_add(len) };
        if input {
            g.rdi = step(g.rdi);
        } else {
            g.rsi = step(g.rsi);
        }
        if rep {
            g.rcx = 0;
        }
    } else if input || passthrough {
        let g = hw.gprs();
        let mask: u64 = match size {
            1 => 0xff,
            2 => 0xffff,
            _ => 0xffff_ffff,
        };
        // The hardware domain's port reaches the hardware; any other port of any domain reads all-ones.
        let value = if passthrough {
            hardware_access(dom, port, size, input, (g.rax & mask) as u32)
        } else {
            Some(mask as u32)
        };
        if let Some(value) = value {
            // A 32-bit input zero-extends into RAX, as `in eax` does; narrower ones keep RAX's upper bytes.
            g.rax = if size == 4 { u64::from(value) } else { (g.rax & !mask) | u64::from(value) };
        }
    } else if port == DEBUG_PORT {
        let b = hw.gprs().rax as u8;
        dom.console_write(&[b]);
    }
    step_over(dom, v, hw)
}

/// A port access of the hardware domain (`hvm::ioport`), with MSI changes handed to the interrupt routing and
/// the pages of MSI-X tables it revealed taken out of the domain's map (it had mapped them if it touched the BAR
/// before Keel saw the table).
fn hardware_access(dom: &Domain, port: u16, size: u8, input: bool, value: u32) -> Option<u32> {
    let (read, msi) = ioport::hardware_access(port, size, input, value, domain::irq::msi_vector);
    if let Some(change) = msi {
        domain::irq::msi_changed(change);
    }
    for r in ioport::take_new_msix_pages() {
        for page in (r.start..r.end).step_by(0x1000) {
            if dom.mem.lock().translate(page, false).is_ok() {
                let _ = dom.remove_from_physmap(page >> 12);
            }
        }
    }
    read
}

/// Reverses the order of the `step`-byte elements of `buf` (a string instruction run with RFLAGS.DF set).
fn reverse_elements(buf: &mut [u8], step: usize) {
    let n = buf.len() / step;
    for i in 0..n / 2 {
        for b in 0..step {
            buf.swap(i * step + b, (n - 1 - i) * step + b);
        }
    }
}

/// Delivers an IPI a vCPU sent through its vLAPIC.
fn send_ipi(dom: &Arc<Domain>, from: &Arc<Vcpu>, req: IpiRequest) {
    let dest = match req {
        IpiRequest::Fixed { dest, .. }
        | IpiRequest::Nmi { dest }
        | IpiRequest::Init { dest }
        | IpiRequest::Startup { dest, .. } => dest,
    };
    for t in dom.vcpus.iter().filter(|t| dest.includes(t.id, from.id)) {
        match req {
            IpiRequest::Fixed { vector, .. } => {
                t.lapic.lock().set_irr(vector);
                crate::sched::kick(t);
            }
            IpiRequest::Nmi { .. } => {
                t.nmi_pending.store(true, Ordering::Release);
                crate::sched::kick(t);
            }
            IpiRequest::Init { .. } => {
                // A vCPU never started, or one its OS took down (halted with interrupts off, as Linux's
                // play_dead leaves a CPU it offlined), waits for a SIPI; INIT to a running vCPU is ignored.
                if t.id != from.id && t.hw.try_lock().is_some_and(|h| h.is_none() || t.state() == VcpuState::Offline) {
                    t.wait_for_sipi.store(true, Ordering::Release);
                }
            }
            IpiRequest::Startup { vector, .. } => {
                if t.wait_for_sipi.swap(false, Ordering::AcqRel) {
                    if let Some(support) = crate::hvm::machine() {
                        if let Err(e) = domain::start_vcpu(t, &support, InitState::Sipi { vector }) {
                            crate::warning!("d{}: cannot start vCPU {}: {}", dom.id, t.id, e.0);
                        }
                    }
                }
            }
        }
    }
}
