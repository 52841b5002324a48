//! The credit scheduler, in the manner of Xen's credit1: per-CPU run queues ordered BOOST > UNDER > OVER,
//! credits handed out every 30 ms in proportion to domain weight (and limited by cap), 30 ms time slices,
//! a boost for vCPUs waking from a block, stealing from other CPUs' queues when idle, hard affinity, and an idle
//! loop that halts the CPU. Guest timers (single-shot, periodic, poll timeouts) are checked here too.

use crate::arch::x86::percpu::{self, MAX_CPUS};
use crate::arch::x86::{apic, cpu, time};
use crate::domain::{self, evtchn, Domain, Vcpu, VcpuState};
use crate::vmexit::{self, Outcome};
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};
use keel_abi::shared_info::virq;
use spin::Mutex;

/// Time slice.
pub const TIMESLICE_NS: u64 = 30_000_000;
/// Accounting period.
pub const ACCOUNT_PERIOD_NS: u64 = 30_000_000;
/// Scheduler tick when nothing nearer is due.
pub const TICK_NS: u64 = 10_000_000;
/// IPI vector that makes a CPU look at its run queue again.
pub const KICK_VECTOR: u8 = 0xf1;
/// Default weight.
pub const DEFAULT_WEIGHT: u32 = 256;

/// Credit priorities, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Priority {
    /// Just woke from a block.
    Boost = 0,
    /// Has credit left.
    Under = 1,
    /// Used its share.
    Over = 2,
}

/// Per-vCPU scheduler state.
pub struct VcpuSched {
    priority: AtomicU8,
    /// Credit in ns of CPU time.
    credit: AtomicI64,
    /// In some run queue.
    queued: AtomicBool,
    /// Capped and out of credit: not to run until the next accounting.
    parked: AtomicBool,
    /// Gave up its CPU spinning on PAUSE: the other runnable vCPUs of its priority go first, once (as Xen's
    /// credit scheduler treats a yield).
    yielded: AtomicBool,
    /// CPU whose queue it belongs to.
    pub processor: AtomicU32,
    /// Hard affinity: bit n = may run on CPU n.
    pub affinity: AtomicU64,
    /// Poll timeout (system ns, 0 = none).
    pub poll_deadline: AtomicU64,
}

impl Default for VcpuSched {
    fn default() -> Self {
        Self::new()
    }
}

impl VcpuSched {
    /// A fresh vCPU: UNDER with no credit, any CPU.
    pub fn new() -> Self {
        Self {
            priority: AtomicU8::new(Priority::Under as u8),
            credit: AtomicI64::new(0),
            queued: AtomicBool::new(false),
            parked: AtomicBool::new(false),
            yielded: AtomicBool::new(false),
            processor: AtomicU32::new(0),
            affinity: AtomicU64::new(u64::MAX),
            poll_deadline: AtomicU64::new(0),
        }
    }

    fn priority(&self) -> Priority {
        match self.priority.load(Ordering::Relaxed) {
            0 => Priority::Boost,
            1 => Priority::Under,
            _ => Priority::Over,
        }
    }
}

struct RunQueue {
    q: Mutex<VecDeque<Arc<Vcpu>>>,
    idle: AtomicBool,
    /// The vCPU currently on this CPU, for preemption decisions.
    current_priority: AtomicU8,
}

static RUNQ: [RunQueue; MAX_CPUS] = [const {
    RunQueue { q: Mutex::new(VecDeque::new()), idle: AtomicBool::new(false), current_priority: AtomicU8::new(3) }
}; MAX_CPUS];
static ONLINE_CPUS: AtomicU32 = AtomicU32::new(1);
static LAST_ACCOUNT: AtomicU64 = AtomicU64::new(0);
/// Called when a domain's last vCPU stopped (test mode reporting).
static ON_DOMAIN_END: spin::Once<fn(&Arc<Domain>)> = spin::Once::new();

/// Records how many CPUs take part in scheduling.
pub fn set_online_cpus(n: u32) {
    ONLINE_CPUS.store(n, Ordering::Relaxed);
}

/// Registers the hook run after a domain has been destroyed.
pub fn on_domain_end(f: fn(&Arc<Domain>)) {
    ON_DOMAIN_END.call_once(|| f);
}

fn cpu_allowed(v: &Vcpu, cpu: u32) -> bool {
    cpu < ONLINE_CPUS.load(Ordering::Relaxed) && v.sched.affinity.load(Ordering::Relaxed) & (1 << cpu) != 0
}

fn home_cpu(v: &Vcpu) -> u32 {
    let p = v.sched.processor.load(Ordering::Relaxed);
    if cpu_allowed(v, p) {
        return p;
    }
    (0..ONLINE_CPUS.load(Ordering::Relaxed)).find(|&c| cpu_allowed(v, c)).unwrap_or(0)
}

fn enqueue(v: &Arc<Vcpu>) {
    if v.sched.queued.swap(true, Ordering::AcqRel) {
        return;
    }
    let cpu = home_cpu(v);
    v.sched.processor.store(cpu, Ordering::Relaxed);
    RUNQ[cpu as usize].q.lock().push_back(v.clone());
    let rq = &RUNQ[cpu as usize];
    let prio = v.sched.priority() as u8;
    if cpu != percpu::current_index()
        && (rq.idle.load(Ordering::Acquire) || prio < rq.current_priority.load(Ordering::Relaxed))
    {
        apic::send_ipi(percpu::cpu(cpu as usize).apic_id.load(Ordering::Relaxed), apic::Ipi::Fixed(KICK_VECTOR));
    }
}

/// Makes a runnable vCPU eligible to run.
pub fn wake(v: &Arc<Vcpu>) {
    if v.state() == VcpuState::Runnable {
        enqueue(v);
    }
}

/// Something happened for `v` (an event, a timer, its domain ending): unblock it, or make the CPU running it
/// look again.
pub fn kick(v: &Arc<Vcpu>) {
    if v.transition(VcpuState::Blocked, VcpuState::Runnable) {
        if v.sched.priority() != Priority::Over {
            v.sched.priority.store(Priority::Boost as u8, Ordering::Relaxed);
        }
        enqueue(v);
    } else if v.state() == VcpuState::Dead && !v.sched.queued.load(Ordering::Acquire) {
        // Let a CPU reap it.
        v.sched.queued.store(true, Ordering::Release);
        let cpu = home_cpu(v);
        RUNQ[cpu as usize].q.lock().push_back(v.clone());
        if cpu != percpu::current_index() {
            apic::send_ipi(percpu::cpu(cpu as usize).apic_id.load(Ordering::Relaxed), apic::Ipi::Fixed(KICK_VECTOR));
        }
    } else if v.state() == VcpuState::Running {
        let cpu = v.sched.processor.load(Ordering::Relaxed);
        if cpu != percpu::current_index() {
            apic::send_ipi(percpu::cpu(cpu as usize).apic_id.load(Ordering::Relaxed), apic::Ipi::Fixed(KICK_VECTOR));
        }
    }
}

/// Drops queued references to a destroyed domain's vCPUs.
pub fn domain_destroyed(dom: &Arc<Domain>) {
    for rq in RUNQ.iter() {
        rq.q.lock().retain(|v| v.domid != dom.id);
    }
}

/// Takes the best vCPU this CPU may run: from its own queue, or stolen from another when it has nothing better
/// than OVER.
fn pick(cpu: u32) -> Option<Arc<Vcpu>> {
    // Best priority first; among equals, one that did not just yield (Xen's credit1 puts a yielding vCPU behind
    // the others of its priority), then the one with the most credit left (the one furthest behind its share),
    // which keeps shares proportional to weight even with coarse time slices.
    let take_best = |q: &mut VecDeque<Arc<Vcpu>>, max: Priority| -> Option<Arc<Vcpu>> {
        let mut best: Option<(usize, (Priority, bool, i64))> = None;
        for (i, v) in q.iter().enumerate() {
            let dead = v.state() == VcpuState::Dead;
            if !cpu_allowed(v, cpu) || (v.sched.parked.load(Ordering::Relaxed) && !dead) {
                continue;
            }
            let p = if dead { Priority::Boost } else { v.sched.priority() };
            let key = (p, v.sched.yielded.load(Ordering::Relaxed) && !dead, -v.sched.credit.load(Ordering::Relaxed));
            if p <= max && best.is_none_or(|(_, b)| key < b) {
                best = Some((i, key));
            }
        }
        best.and_then(|(i, _)| q.remove(i))
    };
    let local = take_best(&mut RUNQ[cpu as usize].q.lock(), Priority::Over);
    if let Some(v) = &local {
        if v.sched.priority() != Priority::Over {
            return local;
        }
    }
    // Work stealing: a BOOST or UNDER vCPU elsewhere beats a local OVER one; with nothing local at all, any
    // runnable vCPU elsewhere is better than idling.
    let steal_max = if local.is_none() { Priority::Over } else { Priority::Under };
    let n = ONLINE_CPUS.load(Ordering::Relaxed);
    for other in (1..n).map(|d| (cpu + d) % n) {
        if let Some(mut q) = RUNQ[other as usize].q.try_lock() {
            if let Some(v) = take_best(&mut q, steal_max) {
                drop(q);
                if let Some(l) = local {
                    RUNQ[cpu as usize].q.lock().push_back(l);
                }
                return Some(v);
            }
        }
    }
    local
}

/// Hands out credits (every accounting period, on CPU 0).
fn account(now: u64) {
    let last = LAST_ACCOUNT.load(Ordering::Relaxed);
    if now < last + ACCOUNT_PERIOD_NS
        || LAST_ACCOUNT.compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed).is_err()
    {
        return;
    }
    let doms = domain::all();
    let active = |d: &Domain| {
        d.vcpus.iter().filter(|v| matches!(v.state(), VcpuState::Runnable | VcpuState::Running)).count() as i64
    };
    let total_weight: u64 =
        doms.iter().filter(|d| active(d) > 0).map(|d| d.weight.load(Ordering::Relaxed) as u64).sum();
    if total_weight == 0 {
        return;
    }
    let period = ACCOUNT_PERIOD_NS as i64;
    // Hand out exactly the CPU time that elapsed since the last accounting (it runs a little late at times).
    let elapsed = if last == 0 { period } else { ((now - last) as i64).min(2 * period) };
    let total = elapsed * ONLINE_CPUS.load(Ordering::Relaxed) as i64;
    for d in &doms {
        let n = active(d);
        if n == 0 {
            continue;
        }
        let mut share = total * d.weight.load(Ordering::Relaxed) as i64 / total_weight as i64;
        let cap = d.cap.load(Ordering::Relaxed) as i64;
        if cap > 0 {
            share = share.min(elapsed * cap / 100);
        }
        let per_vcpu = share / n;
        for v in d.vcpus.iter().filter(|v| matches!(v.state(), VcpuState::Runnable | VcpuState::Running)) {
            // Debt is kept for a few periods so that a vCPU that overran pays it back; surplus is capped at two periods
            // so that an idle vCPU cannot hoard credit.
            let c = (v.sched.credit.load(Ordering::Relaxed) + per_vcpu).clamp(-3 * period, 2 * period);
            v.sched.credit.store(c, Ordering::Relaxed);
            let pri = if c > 0 { Priority::Under } else { Priority::Over };
            if v.sched.priority() != Priority::Boost || pri == Priority::Over {
                v.sched.priority.store(pri as u8, Ordering::Relaxed);
            }
            let parked = cap > 0 && c <= 0;
            v.sched.parked.store(parked, Ordering::Relaxed);
        }
    }
}

/// Fires expired guest timers and poll timeouts; returns the nearest future deadline.
fn run_timers(now: u64) -> u64 {
    let mut next = u64::MAX;
    for d in domain::all() {
        if d.is_finished() {
            continue;
        }
        for v in &d.vcpus {
            let t = v.timer_deadline.load(Ordering::Acquire);
            if t != 0 {
                if t <= now {
                    if v.timer_deadline.compare_exchange(t, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                        evtchn::send_virq(&d, v, virq::TIMER);
                    }
                } else {
                    next = next.min(t);
                }
            }
            let period = v.periodic_period.load(Ordering::Acquire);
            if period != 0 {
                let due = v.periodic_next.load(Ordering::Acquire);
                if due <= now {
                    let mut n = due + period;
                    if n <= now {
                        n = now + period;
                    }
                    v.periodic_next.store(n, Ordering::Release);
                    evtchn::send_virq(&d, v, virq::TIMER);
                    next = next.min(n);
                } else {
                    next = next.min(due);
                }
            }
            let lt = v.lapic.lock().timer_deadline.load(Ordering::Acquire);
            if lt != 0 {
                if lt <= now {
                    let vec = v.lapic.lock().timer_expired(now);
                    if let Some(vec) = vec {
                        v.lapic.lock().set_irr(vec);
                        kick(v);
                    }
                    let again = v.lapic.lock().timer_deadline.load(Ordering::Acquire);
                    if again != 0 {
                        next = next.min(again);
                    }
                } else {
                    next = next.min(lt);
                }
            }
            let p = v.sched.poll_deadline.load(Ordering::Acquire);
            if p != 0 {
                if p <= now {
                    v.stop_polling();
                    kick(v);
                } else {
                    next = next.min(p);
                }
            }
        }
    }
    next
}

/// Programs this CPU's timer for the nearer of `deadline` and the next tick.
fn arm_timer(now: u64, deadline: u64) {
    let delta = deadline.saturating_sub(now).clamp(20_000, TICK_NS);
    apic::timer_oneshot_ns(delta);
}

/// The scheduler loop of one CPU; never returns.
pub fn cpu_loop() -> ! {
    let cpu = percpu::current_index();
    loop {
        let me = percpu::this();
        if me.fault_request.swap(false, Ordering::AcqRel) {
            crate::selftest_fault();
        }
        let now = time::now_ns();
        if cpu == 0 {
            account(now);
            poll_serial();
        }
        let next_timer = run_timers(now);
        match pick(cpu) {
            Some(v) => {
                RUNQ[cpu as usize].idle.store(false, Ordering::Release);
                v.sched.queued.store(false, Ordering::Release);
                v.sched.yielded.store(false, Ordering::Relaxed);
                run_vcpu(cpu, &v, next_timer);
            }
            None => {
                let rq = &RUNQ[cpu as usize];
                rq.idle.store(true, Ordering::Release);
                rq.current_priority.store(3, Ordering::Relaxed);
                cpu::disable_interrupts();
                if rq.q.lock().is_empty() {
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
        if d.is_finished() && domain::all_vcpus_stopped(&d) {
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
    v.sched.processor.store(cpu, Ordering::Relaxed);
    RUNQ[cpu as usize].current_priority.store(v.sched.priority() as u8, Ordering::Relaxed);
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
        v.sched.credit.fetch_sub((now - *debited) as i64, Ordering::Relaxed);
        *debited = now;
    };
    let slice_end = start + TIMESLICE_NS;
    let mut next_timer = next_timer;
    let outcome = loop {
        let now = time::now_ns();
        domain::pvclock::update(&dom, v);
        vmexit::deliver_events(&dom, v, hw);
        // This vCPU's own timers may have been re-armed by its last hypercall.
        for t in [
            v.timer_deadline.load(Ordering::Acquire),
            v.lapic.lock().timer_deadline.load(Ordering::Acquire),
            if v.periodic_period.load(Ordering::Acquire) != 0 { v.periodic_next.load(Ordering::Acquire) } else { 0 },
        ] {
            if t != 0 {
                next_timer = next_timer.min(t);
            }
        }
        // Wake up when the slice ends, a guest timer is due, or this vCPU's credit runs out (so that a waiting
        // UNDER vCPU gets its turn on time).
        burn(&mut debited, now);
        let credit_left = v.sched.credit.load(Ordering::Relaxed);
        let credit_end = if credit_left > 0 { now + credit_left as u64 } else { u64::MAX };
        arm_timer(now, slice_end.min(next_timer).min(credit_end));
        v.ack_flush(&dom);
        if v.tlb_flush_pending.swap(false, Ordering::AcqRel) {
            hw.flush_tlb();
        }
        let exit = hw.run();
        v.exits.fetch_add(1, Ordering::Relaxed);
        v.last_rip.store(hw.rip(), Ordering::Relaxed);
        *v.last_exit.lock() = Some(exit);
        let out = vmexit::handle(&dom, v, hw, exit);
        if !matches!(out, Outcome::Continue) {
            break out;
        }
        let now = time::now_ns();
        if v.state() == VcpuState::Dead {
            break Outcome::Stop;
        }
        if now >= next_timer || NEED_TIMER_SCAN.swap(false, Ordering::AcqRel) {
            next_timer = run_timers(now);
        }
        // Out of credit mid-slice: an UNDER or BOOST vCPU waiting anywhere it may run takes over.
        burn(&mut debited, now);
        let credit_now = v.sched.credit.load(Ordering::Relaxed);
        let mine = if credit_now <= 0 { Priority::Over } else { v.sched.priority() };
        if now >= slice_end || higher_priority_waiting(cpu, mine) {
            break Outcome::Yield;
        }
        if cpu == 0 {
            account(now);
            poll_serial();
        }
    };
    v.fpu.lock().save();
    hw.unload();
    burn(&mut debited, time::now_ns());
    if v.sched.priority() == Priority::Boost {
        v.sched.priority.store(Priority::Under as u8, Ordering::Relaxed);
    }
    if v.sched.credit.load(Ordering::Relaxed) <= 0 {
        v.sched.priority.store(Priority::Over as u8, Ordering::Relaxed);
        if dom.cap.load(Ordering::Relaxed) > 0 {
            v.sched.parked.store(true, Ordering::Relaxed);
        }
    }
    drop(guard);
    match outcome {
        Outcome::Continue | Outcome::Yield | Outcome::YieldToOthers => {
            v.sched.yielded.store(matches!(outcome, Outcome::YieldToOthers), Ordering::Relaxed);
            if v.transition(VcpuState::Running, VcpuState::Runnable) {
                enqueue(v);
            }
        }
        Outcome::Block => {
            if v.transition(VcpuState::Running, VcpuState::Blocked)
                && (vmexit::has_pending_interrupt(&dom, v) || poll_satisfied(&dom, v))
            {
                kick(v);
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
    let mask = v.poll_mask.load(Ordering::Acquire);
    let single = v.poll_port.load(Ordering::Acquire);
    (mask != 0 && (0..64).any(|p| mask & (1 << p) != 0 && evtchn::is_pending(dom, p)))
        || (single != u32::MAX && evtchn::is_pending(dom, single))
}

fn higher_priority_waiting(cpu: u32, mine: Priority) -> bool {
    let better = |o: &Arc<Vcpu>| !o.sched.parked.load(Ordering::Relaxed) && o.sched.priority() < mine;
    if RUNQ[cpu as usize].q.try_lock().is_some_and(|q| q.iter().any(better)) {
        return true;
    }
    if mine != Priority::Over {
        return false;
    }
    let n = ONLINE_CPUS.load(Ordering::Relaxed);
    (1..n).map(|d| (cpu + d) % n).any(|other| {
        RUNQ[other as usize].q.try_lock().is_some_and(|q| q.iter().any(|o| better(o) && cpu_allowed(o, cpu)))
    })
}

/// A vLAPIC timer was re-armed on this CPU: make the scheduler look at deadlines again soon.
pub fn lapic_timer_changed() {
    NEED_TIMER_SCAN.store(true, Ordering::Release);
}

static NEED_TIMER_SCAN: AtomicBool = AtomicBool::new(false);

/// Sets up the kick IPI handler (once).
pub fn init() {
    crate::arch::x86::trap::register_handler(KICK_VECTOR, |_| apic::eoi());
}

/// Snapshot of run-queue lengths (for logs).
pub fn queue_lengths() -> Vec<usize> {
    (0..ONLINE_CPUS.load(Ordering::Relaxed) as usize).map(|c| RUNQ[c].q.lock().len()).collect()
}

/// Hands serial input to the console switch (CPU 0 polls COM1 between guest entries and on every tick).
fn poll_serial() {
    let mut buf = [0u8; 64];
    let n = crate::arch::x86::serial::read_available(&mut buf);
    if n > 0 {
        crate::dom0::serial_input(&buf[..n]);
    }
    crate::dom0::poll_backends();
}
