//! Hypercalls: decode the registers, route to one module per family, turn the result into RAX.
//! Each handler is decode → check → act and returns a Xen errno on failure; nothing a guest passes panics Keel.

mod console;
mod domctl;
mod event_channel;
mod grant_table;
mod hvm;
mod memory;
mod platform;
mod sched;
mod sysctl;
mod vcpu;
mod version;

use crate::domain::{self, Domain, Vcpu};
use crate::hvm::{HwVcpu, PagingState};
use crate::sched::Outcome;
use alloc::sync::Arc;
use keel_abi::hypercall::{errno::*, nr};
use keel_abi::Pod;

/// What a handler wants done besides returning a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Put this value in RAX and continue.
    Return(u64),
    /// Return 0 and block the vCPU.
    Block,
    /// Return 0 and yield the CPU.
    Yield,
    /// The domain is finished.
    Stop,
    /// Return 0 and take the calling vCPU down (VCPUOP_down of itself).
    Down,
}

/// A handler's result: an action, or an errno (the dispatcher returns it negated, once).
pub type HResult = Result<Action, Errno>;

/// The calling vCPU and its arguments.
pub struct Ctx<'a> {
    pub dom: &'a Arc<Domain>,
    pub v: &'a Arc<Vcpu>,
    /// The caller's paging state at the hypercall, for guest-linear pointers.
    pub paging: PagingState,
    pub args: [u64; 5],
}

impl Ctx<'_> {
    /// Copies a plain-old-data value from guest-linear memory, once: handlers check and use this local copy, never
    /// the guest's memory again (a guest's other vCPUs may change it in between).
    pub fn read<T: Pod>(&self, linear: u64) -> Result<T, Errno> {
        let mut v = T::zeroed();
        self.read_bytes(linear, bytemuck::bytes_of_mut(&mut v))?;
        Ok(v)
    }

    /// Copies bytes from guest-linear memory.
    pub fn read_bytes(&self, linear: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let mem = self.dom.mem.lock();
        domain::read_linear(&mem, &self.paging, linear, buf).map_err(|_| EFAULT)
    }

    /// Copies a value to guest-linear memory.
    pub fn write<T: Pod>(&self, linear: u64, v: &T) -> Result<(), Errno> {
        self.write_bytes(linear, bytemuck::bytes_of(v))
    }

    /// Copies bytes to guest-linear memory.
    pub fn write_bytes(&self, linear: u64, buf: &[u8]) -> Result<(), Errno> {
        let mem = self.dom.mem.lock();
        domain::write_linear(&mem, &self.paging, linear, buf).map_err(|_| EFAULT)
    }
}

/// Decodes and runs the hypercall in the vCPU's registers (64-bit ABI).
pub fn dispatch(dom: &Arc<Domain>, v: &Arc<Vcpu>, hw: &mut HwVcpu) -> Outcome {
    let g = *hw.gprs();
    let (rax, out) = call(dom, v, hw.paging(), g.rax, [g.rdi, g.rsi, g.rdx, g.r10, g.r8]);
    hw.gprs().rax = rax;
    out
}

/// Runs hypercall `number` with `args` for vCPU `v` whose paging state is `paging`; returns RAX (the result, or
/// the negated errno) and what the scheduler does next. Host unit tests drive this directly.
pub fn call(dom: &Arc<Domain>, v: &Arc<Vcpu>, paging: PagingState, number: u64, args: [u64; 5]) -> (u64, Outcome) {
    v.last_hypercall.store(number << 32 | (args[0] & 0xffff_ffff), core::sync::atomic::Ordering::Relaxed);
    let mut ctx = Ctx { dom, v, paging, args };
    let r = match number {
        nr::XEN_VERSION => version::xen_version(&mut ctx),
        nr::CONSOLE_IO => console::console_io(&mut ctx),
        nr::SCHED_OP => sched::sched_op(&mut ctx),
        nr::SET_TIMER_OP => sched::set_timer_op(&mut ctx),
        nr::VCPU_OP => vcpu::vcpu_op(&mut ctx),
        nr::MEMORY_OP => memory::memory_op(&mut ctx),
        nr::HVM_OP => hvm::hvm_op(&mut ctx),
        nr::EVENT_CHANNEL_OP => event_channel::event_channel_op(&mut ctx),
        nr::GRANT_TABLE_OP => grant_table::grant_table_op(&mut ctx),
        nr::PLATFORM_OP => platform::platform_op(&mut ctx),
        nr::SYSCTL => sysctl::sysctl(&mut ctx),
        nr::DOMCTL => domctl::domctl(&mut ctx),
        nr::MULTICALL => return multicall(&ctx),
        // Xen without XSM (its x86 default) has no xsm_op: `xl list` asks it for each domain's label and takes
        // -ENOSYS as "no label"; -EACCES would print "XSM operation failed!" per domain.
        nr::XSM_OP => Err(ENOSYS),
        _ => Err(ENOSYS),
    };
    match r {
        Ok(Action::Return(x)) => (x, Outcome::Continue),
        Ok(Action::Block) => (0, Outcome::Block),
        Ok(Action::Yield) => (0, Outcome::Yield),
        Ok(Action::Stop) => (0, Outcome::Stop),
        Ok(Action::Down) => (0, Outcome::Offline),
        Err(e) => (e.to_return(), Outcome::Continue),
    }
}

/// The most entries one `multicall` runs. Linux batches at most 32 and libxc sends one (each `xc_memory_op` goes
/// through a one-entry multicall, to read back a full `long`); Xen preempts a long batch with a continuation,
/// which Keel has not, so the bound keeps a guest from holding its CPU for long.
pub const MULTICALL_MAX: u64 = 256;

/// `multicall` (13): runs each entry of the caller's list (`args[0]`, `args[1]` entries) as the hypercall it
/// names, writing its return value into the entry's `result`; returns 0 once all have run, -EFAULT when an
/// entry cannot be read or written, -EINVAL for more than [`MULTICALL_MAX`] entries. An entry that is itself a
/// multicall gets -EINVAL (Xen forbids re-entry). An entry that blocks or yields takes effect after the batch (on
/// Xen, after a continuation runs the rest); one that ends the domain ends the batch.
fn multicall(c: &Ctx) -> (u64, Outcome) {
    use keel_abi::hypercall::MulticallEntry;
    let (list, n) = (c.args[0], c.args[1] & 0xffff_ffff);
    if n > MULTICALL_MAX {
        return (EINVAL.to_return(), Outcome::Continue);
    }
    let size = core::mem::size_of::<MulticallEntry>() as u64;
    let mut outcome = Outcome::Continue;
    for i in 0..n {
        let Some(at) = list.checked_add(i * size) else { return (EFAULT.to_return(), outcome) };
        let e: MulticallEntry = match c.read(at) {
            Ok(e) => e,
            Err(err) => return (err.to_return(), outcome),
        };
        let (result, o) = if e.op == nr::MULTICALL {
            (EINVAL.to_return(), Outcome::Continue)
        } else {
            call(c.dom, c.v, c.paging, e.op, [e.args[0], e.args[1], e.args[2], e.args[3], e.args[4]])
        };
        if let Err(err) = c.write(at + 8, &result) {
            return (err.to_return(), outcome);
        }
        if o != Outcome::Continue && outcome != Outcome::Stop {
            outcome = o;
        }
        if o == Outcome::Stop {
            break;
        }
    }
    (0, outcome)
}

/// Says once per command number (per family) that Keel does not implement a toolstack command (-ENOSYS).
fn log_unimplemented(family: &str, seen: &spin::Mutex<u128>, n: u32) {
    let mut seen = seen.lock();
    let bit = 1u128 << (n % 128);
    if *seen & bit == 0 {
        *seen |= bit;
        crate::info!("{family} {n} is not implemented (-ENOSYS)");
    }
}

/// Fills the hypercall page the guest asked for with `mov eax, nr; vmmcall|vmcall; ret` stubs (`ud2` for
/// `iret`, which HVM guests must not use).
pub fn install_page(dom: &Domain, msr_value: u64) -> Result<(), &'static str> {
    if msr_value & 0xfff != 0 {
        return Err("only page index 0 exists");
    }
    let vmmcall = crate::arch::x86::cpu::identify().vendor == crate::arch::x86::cpu::Vendor::Amd;
    let page = build_page(vmmcall);
    dom.mem.lock().write(msr_value & !0xfff, &page).map_err(|_| "not guest RAM")
}

/// The bytes of a hypercall page.
pub fn build_page(vmmcall: bool) -> [u8; 4096] {
    let mut page = [0xccu8; 4096]; // int3 padding
    for n in 0..(4096 / keel_abi::cpuid::HYPERCALL_STUB_SIZE) {
        let s = &mut page[n * 32..n * 32 + 32];
        if n as u64 == nr::IRET {
            s[0] = 0x0f;
            s[1] = 0x0b; // ud2
            continue;
        }
        s[0] = 0xb8; // mov eax, imm32
        s[1..5].copy_from_slice(&(n as u32).to_le_bytes());
        s[5..8].copy_from_slice(if vmmcall { &[0x0f, 0x01, 0xd9] } else { &[0x0f, 0x01, 0xc1] });
        s[8] = 0xc3; // ret
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing;
    use keel_abi::hypercall::MulticallEntry;

    /// libxc reads `xl info`'s sharing counters through one-entry multicalls of memory_op: multicall used to be
    /// -ENOSYS as a whole. Each entry runs and gets its own result; a nested multicall is refused.
    #[test]
    fn multicall_runs_each_entry_and_writes_its_result() {
        let dom = testing::domain(1, 4);
        let entry = |op: u64, args: [u64; 6]| MulticallEntry { op, result: 0xdead, args };
        let list = [
            entry(nr::XEN_VERSION, [keel_abi::hypercall::xenver::VERSION, 0, 0, 0, 0, 0]),
            entry(nr::MULTICALL, [0x1000, 1, 0, 0, 0, 0]),
            entry(nr::XEN_VERSION, [keel_abi::hypercall::xenver::PAGESIZE, 0, 0, 0, 0, 0]),
            entry(999, [0; 6]),
        ];
        testing::put(&dom, 0x1000, &list);
        assert_eq!(testing::hypercall(&dom, 0, nr::MULTICALL, [0x1000, 4, 0, 0, 0]), 0);
        let out: [MulticallEntry; 4] = testing::get(&dom, 0x1000);
        let (maj, min) = keel_abi::XEN_VERSION;
        assert_eq!(out[0].result, (maj << 16 | min) as u64);
        assert_eq!(out[1].result as i64, EINVAL.negated());
        assert_eq!(out[2].result, 4096);
        assert_eq!(out[3].result as i64, ENOSYS.negated());
        assert_eq!(out[0].args, list[0].args, "only the result is written");
        // Too many entries, or a list outside the guest's memory.
        assert_eq!(testing::hypercall(&dom, 0, nr::MULTICALL, [0x1000, MULTICALL_MAX + 1, 0, 0, 0]), EINVAL.negated());
        assert_eq!(testing::hypercall(&dom, 0, nr::MULTICALL, [0x1000_0000, 1, 0, 0, 0]), EFAULT.negated());
        // No XSM: xsm_op is -ENOSYS, which `xl list` takes as "no label".
        assert_eq!(testing::hypercall(&dom, 0, nr::XSM_OP, [5, 0x1000, 0, 0, 0]), ENOSYS.negated());
        crate::domain::destroy(&dom);
    }

    #[test]
    fn hypercall_page_layout() {
        let p = build_page(true);
        assert_eq!(&p[17 * 32..17 * 32 + 9], &[0xb8, 17, 0, 0, 0, 0x0f, 0x01, 0xd9, 0xc3]);
        assert_eq!(&p[23 * 32..23 * 32 + 2], &[0x0f, 0x0b]);
        let p = build_page(false);
        assert_eq!(&p[5..8], &[0x0f, 0x01, 0xc1]);
    }
}
