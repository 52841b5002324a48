//! Hostile hypercalls: `calls=` (default CALLS) inline hypercalls with a pseudo-random number in 0..64 and random argument
//! registers. Every call must come back with a plausible result, and the registers outside the argument set
//! (RCX, R9, R11-R15) must survive it.
//!
//! Nothing may legitimately stop the guest, so: never sched_op (29: shutdown, poll, block), sched_op_compat
//! (6) or set_timer_op (15); half the time the first argument is a small sub-command (0..64), otherwise random;
//! all other argument registers have bits 31 and 63 set, so they are never a guest RAM address, a vCPU id
//! or a port, whatever the call reads them as.
#![cfg_attr(target_os = "none", no_std, no_main)]

use core::arch::asm;
use keel_abi::hypercall::{errno, nr};
use xtf::hypercall::{self, Insn};
use xtf::{ensure, failure};

xtf::guest!(test_main);

/// How many hypercalls by default (each one is a VM exit: about 0.03 ms under QEMU TCG, 0.2 ms under Bochs);
/// the module string's `guest.calls=N` changes it.
const CALLS: u64 = 1_000_000;
/// A progress line every this many calls.
const PROGRESS_EVERY: u64 = 100_000;
const SEED: u64 = 0x853c_49e6_748f_ea9b;
const EXCLUDED: [u64; 3] = [nr::SCHED_OP_COMPAT, nr::SET_TIMER_OP, nr::SCHED_OP];
/// Forced into argument registers 2-5: never RAM, a vCPU id or a port.
const HIGH_BITS: u64 = 1 << 63 | 1 << 31;
const CANARY: u64 = 0x5eed_cafe_f00d_0000;

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// One hypercall; returns RAX and whether every canary register came back intact.
fn hostile_call(insn: Insn, nr: u64, a: [u64; 5]) -> (i64, bool) {
    let rc: i64;
    let c: [u64; 7] = core::array::from_fn(|i| CANARY + i as u64);
    let mut out = c;
    // SAFETY: the number is never one that stops, blocks or re-times the guest, and no argument can name guest
    // RAM, a vCPU or a port (see the module docs), so the hypervisor can only fail the call. The canaries are
    // inputs and outputs so any change is seen rather than trusted away.
    unsafe {
        match insn {
            Insn::Vmmcall => asm!("vmmcall",
                inlateout("rax") nr => rc, inlateout("rdi") a[0] => _, inlateout("rsi") a[1] => _,
                inlateout("rdx") a[2] => _, inlateout("r10") a[3] => _, inlateout("r8") a[4] => _,
                inlateout("rcx") out[0], inlateout("r9") out[1], inlateout("r11") out[2],
                inlateout("r12") out[3], inlateout("r13") out[4], inlateout("r14") out[5],
                inlateout("r15") out[6], options(nostack)),
            Insn::Vmcall => asm!("vmcall",
                inlateout("rax") nr => rc, inlateout("rdi") a[0] => _, inlateout("rsi") a[1] => _,
                inlateout("rdx") a[2] => _, inlateout("r10") a[3] => _, inlateout("r8") a[4] => _,
                inlateout("rcx") out[0], inlateout("r9") out[1], inlateout("r11") out[2],
                inlateout("r12") out[3], inlateout("r13") out[4], inlateout("r14") out[5],
                inlateout("r15") out[6], options(nostack)),
        }
    }
    (rc, out == c)
}

fn test_main() -> xtf::TestResult {
    let insn = hypercall::insn();
    let calls = xtf::rt::arg_u64("calls", CALLS);
    let mut rng = Rng(SEED);
    let (mut ok, mut enosys, mut other_err) = (0u64, 0u64, 0u64);
    xtf::println!("{calls} hostile hypercalls by {insn:?}, seed {SEED:#x}");
    for i in 0..calls {
        let nr = loop {
            let n = rng.next() % 64;
            if !EXCLUDED.contains(&n) {
                break n;
            }
        };
        let r = rng.next();
        let cmd = if r & 1 == 0 { (r >> 1) % 64 } else { r | HIGH_BITS };
        let a = [cmd, rng.next() | HIGH_BITS, rng.next() | HIGH_BITS, rng.next() | HIGH_BITS, rng.next() | HIGH_BITS];
        let (rc, kept) = hostile_call(insn, nr, a);
        ensure!(kept, "call {i}: hypercall {nr} args {a:#x?} changed a register outside the argument set");
        if rc >= 0 {
            ok += 1;
        } else if rc == errno::ENOSYS.negated() {
            enosys += 1;
        } else if rc >= -4095 {
            other_err += 1;
        } else {
            return Err(failure!("call {i}: hypercall {nr} args {a:#x?} returned {rc:#x}, not an errno"));
        }
        if (i + 1) % PROGRESS_EVERY.min(calls.div_ceil(10)) == 0 {
            xtf::println!("{} calls done", i + 1);
        }
    }
    xtf::println!("{calls} calls returned: {ok} >= 0, {enosys} -ENOSYS, {other_err} other errors");
    Ok(())
}
