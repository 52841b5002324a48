//! The per-CPU loop: ask the scheduler for a vCPU, run it until its slice, credit or work ends (handling its exits
//! through `vmexit`), hand it back, and halt when there is nothing to run. Guest timers are scanned here
//! (`crate::timers`), CPU 0 runs the registered pollers (serial input, backend rings) between guest entries, and
//! finished domains are reaped here.

use crate::arch::x86::percpu;
use crate::arch::x86::{apic, cpu, time};
use crate::domain::{self, Domain, Vcpu, VcpuState};
use crate::sched::{self, Entity, Outcome, RunState, Share, VcpuSched};
use crate::{timers, vmexit};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::Any;
use core::sync::atomic::Ordering;

impl Entity for Vcpu {
    fn sched(&self) -> &VcpuSched {
        &self.sched
    }

    fn run_state(&self) -> RunState {
        match self.state() {
            VcpuState::Runnable => RunState::Runnable,
            VcpuState::Running => RunState::Running,
            VcpuState::Blocked => RunState::Blocked,
            VcpuState::Offline => RunState::Offline,
            VcpuState::Dead => RunState::Dead,
        }
    }

    fn unblock(&self) -> bool {
        self.transition(VcpuState::Blocked, VcpuState::Runnable)
    }

    fn owner(&self) -> u16 {
        self.domid
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

impl sched::DomainId for Domain {
    fn domain_id(&self) -> u16 {
        self.id
    }
}

impl sched::DomainId for Arc<Domain> {
    fn domain_id(&self) -> u16 {
        self.id
    }
}

/// Called when a domain's last vCPU stopped and it was destroyed (the machine's power policy, test reporting).
static ON_DOMAIN_END: spin::Once<fn(&Arc<Domain>)> = spin::Once::new();
/// Run by CPU 0 on every pass and between guest entries (serial input, backend rings).
static POLLERS: spin::RwLock<Vec<fn()>> = spin::RwLock::new(Vec::new());

/// Registers the hook run after a domain has been destroyed.
pub fn on_domain_end(f: fn(&Arc<Domain>)) {
    ON_DOMAIN_END.call_once(|| f);
}

/// Registers a poller CPU 0 runs on every scheduler pass and between guest entries (a poller must not register
/// another).
pub fn add_poller(f: fn()) {
    let mut p = POLLERS.write();
    if !p.iter().any(|&g| core::ptr::fn_addr_eq(g, f)) {
        p.push(f);
    }
}

fn run_pollers() {
    for f in POLLERS.read().iter() {
        f();
    }
}

/// Hands out credits (every accounting period, on CPU 0).
fn account(now: u64) {
    let Some(elapsed) = sched::account_due(now) else { return };
    let doms = domain::all();
    let shares: Vec<Share> = doms
        .iter()
        .map(|d| Share {
            weight: d.weight.load(Ordering::Relaxed),
            cap: d.cap.load(Ordering::Relaxed),
            vcpus: d
                .vcpus
                .iter()
                .filter(|v| matches!(v.state(), VcpuState::Runnable | VcpuState::Running))
                .map(|v| &v.sched)
                .collect(),
        })
        .collect();
    let cpus = sched::queues().guest_cpus();
    sched::hand_out(elapsed, cpus, &shares);
}

/// CPU 0's housekeeping between guest entries.
fn cpu0_duties(now: u64) {
    account(now);
    run_pollers();
}

/// Programs this CPU's timer for the nearer of `deadline` and the next tick.
fn arm_timer(now: u64, deadline: u64) {
    let delta = deadline.saturating_sub(now).clamp(20_000, sched::TICK_NS);
    apic::timer_oneshot_ns(delta);
}

/// The scheduler loop of one CPU; never returns.
pub fn cpu_loop() -> ! {
    let cpu = percpu::current_index();
    let queues = sched::queues();
    loop {
        let me = percpu::this();
        if me.fault_request.swap(false, Ordering::AcqRel) {
            crate::selftest_fault();
        }
        let now = time::now_ns();
        if cpu == 0 {
            cpu0_duties(now);
        }
        let next_timer = timers::run(now);
        match queues.pick(cpu) {
            Some(item) => {
                if let Ok(v) = item.into_any().downcast::<Vcpu>() {
                    run_vcpu(cpu, &v, next_timer);
                }
            }
            None => {
                queues.go_idle(cpu);
                cpu::disable_interrupts();
                if queues.is_empty(cpu) {
                    arm_timer(time::now_ns(), next_timer);
                    cpu::enable_interrupts_and_halt();
                } else {
                    cpu::enable_interrupts();
                }
            }
        }
    }
}

fn reap(v: &Arc<Vcpu>) {
    if let Some(d) = v.domain.upgrade() {
        if d.is_finished() && d.destroyed_when_stopped() && domain::all_vcpus_stopped(&d) {
            let cpu_ms = d.cpu_time_ns() / 1_000_000;
            let exits: u64 = d.vcpus.iter().map(|v| v.exits.load(Ordering::Relaxed)).sum();
            if domain::destroy(&d) {
                crate::info!("domain {} ({}) exits {}", d.id, d.name, exits);
                crate::info!("domain {} ({}) cpu time {} ms", d.id, d.name, cpu_ms);
                if let Some(f) = ON_DOMAIN_END.get() {
                    f(&d);
                }
            }
        }
    }
}

fn run_vcpu(cpu: u32, v: &Arc<Vcpu>, next_timer: u64) {
    if v.state() == VcpuState::Dead {
        reap(v);
        return;
    }
    let Some(dom) = v.domain.upgrade() else {
        return;
    };
    if dom.hold_if_paused(v) {
        return;
    }
    if !v.transition(VcpuState::Runnable, VcpuState::Running) {
        return;
    }
    // Whatever it was polling for, it runs now.
    v.stop_polling();
    let mut guard = v.hw.lock();
    let Some(hw) = guard.as_mut() else {
        v.set_state(VcpuState::Offline);
        return;
    };
    let queues = sched::queues();
    queues.running(cpu, &**v);
    // All vCPUs share one ASID: flush when this CPU last ran another vCPU, or this vCPU last ran elsewhere.
    let moved = v.last_cpu.swap(cpu, Ordering::Relaxed) != cpu;
    let switched = percpu::this().last_vcpu_swap(Arc::as_ptr(v) as u64);
    if moved || switched {
        hw.flush_tlb();
    }
    hw.load();
    // The FPU still holds this vCPU's registers when nothing else ran here since and it ran nowhere else (Keel itself
    // uses no FPU or SSE), so FXRSTOR is needed only then. Besides the time, this spares QEMU TCG's nested SVM a
    // racy update of CPU 0's state on every FXRSTOR (docs/testing.md, "A QEMU defect").
    if moved || switched {
        v.fpu.lock().restore();
    }
    let start = time::now_ns();
    // Credit is burnt as the vCPU runs (not only when it stops), so that accounting sees the truth.
    let mut debited = start;
    let burn = |debited: &mut u64, now: u64| {
        v.sched.burn(now.saturating_sub(*debited));
        *debited = now;
    };
    let slice_end = start + sched::timeslice_ns();
    let mut next_timer = next_timer;
    let outcome = loop {
        let now = time::now_ns();
        domain::pvclock::update(&dom, v);
        vmexit::deliver_events(&dom, v, hw);
        next_timer = next_timer.min(timers::own_deadline(v));
        // Wake up when the slice ends, a guest timer is due, or this vCPU's credit runs out (so that a waiting
        // UNDER vCPU gets its turn on time).
        burn(&mut debited, now);
        let credit_left = v.sched.credit();
        let credit_end = if credit_left > 0 { now + credit_left as u64 } else { u64::MAX };
        arm_timer(now, slice_end.min(next_timer).min(credit_end));
        // Before the flush check below (see `Vcpu::ack_flush`): frames waiting for this vCPU's flush may go.
        v.ack_flush(&dom);
        if v.tlb_flush_pending.swap(false, Ordering::AcqRel) {
            hw.flush_tlb();
        }
        let exit = hw.run();
        v.exits.fetch_add(1, Ordering::Relaxed);
        v.last_rip.store(hw.rip(), Ordering::Relaxed);
        *v.last_exit.lock() = Some(exit);
        let out = vmexit::handle(&dom, v, hw, exit);
        if cpu == 0 {
            // Device interrupts arrive on the boot CPU: hand them to dom0 now, not at the end of the slice.
            domain::irq::drain();
        }
        if !matches!(out, Outcome::Continue) {
            break out;
        }
        let now = time::now_ns();
        if v.state() == VcpuState::Dead {
            break Outcome::Stop;
        }
        // Taken down from another vCPU (VCPUOP_down): it stays as it is until VCPUOP_up.
        if v.state() == VcpuState::Offline {
            break Outcome::Stop;
        }
        if dom.is_paused() {
            break Outcome::Yield;
        }
        if now >= next_timer || timers::scan_requested() {
            next_timer = timers::run(now);
        }
        // Out of credit mid-slice: an UNDER or BOOST vCPU waiting anywhere it may run takes over.
        burn(&mut debited, now);
        if now >= slice_end || queues.higher_priority_waiting(cpu, v.sched.effective_priority()) {
            break Outcome::Yield;
        }
        if cpu == 0 {
            cpu0_duties(now);
        }
    };
    v.fpu.lock().save();
    hw.unload();
    burn(&mut debited, time::now_ns());
    v.sched.descheduled(dom.cap.load(Ordering::Relaxed) > 0);
    drop(guard);
    match outcome {
        Outcome::Continue | Outcome::Yield | Outcome::YieldToOthers => {
            v.sched.set_yielded(matches!(outcome, Outcome::YieldToOthers));
            if v.transition(VcpuState::Running, VcpuState::Runnable) {
                sched::requeue(v);
            }
        }
        Outcome::Block => {
            if v.transition(VcpuState::Running, VcpuState::Blocked)
                && (vmexit::has_pending_interrupt(&dom, v) || poll_satisfied(&dom, v))
            {
                sched::kick(v);
            }
        }
        Outcome::Offline => {
            v.transition(VcpuState::Running, VcpuState::Offline);
            if dom.vcpus.iter().all(|x| matches!(x.state(), VcpuState::Offline | VcpuState::Dead)) {
                // Every vCPU halted with interrupts off: Xen treats this as a power-off.
                dom.shutdown(keel_abi::hypercall::ShutdownReason::Poweroff);
            }
        }
        Outcome::Stop => {}
    }
    if v.state() == VcpuState::Dead || dom.is_finished() {
        if v.state() != VcpuState::Dead {
            v.set_state(VcpuState::Dead);
        }
        reap(v);
    }
}

fn poll_satisfied(dom: &Domain, v: &Vcpu) -> bool {
    v.poll_satisfied(dom)
}
