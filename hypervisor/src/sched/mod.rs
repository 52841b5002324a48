//! The credit scheduler, in the manner of Xen's credit1: per-CPU run queues ordered BOOST > UNDER > OVER,
//! credits handed out every 30 ms in proportion to domain weight (and limited by cap), 30 ms time slices,
//! a boost for vCPUs waking from a block, stealing from other CPUs' queues when idle, hard affinity, and yields.
//!
//! It picks and accounts, nothing else: it knows a vCPU only through [`Entity`] and a domain only through the
//! weights and caps handed to [`hand_out`]. Running a vCPU, guest timers, serial polling and the backends live above
//! it (`crate::run`, `crate::timers`, `crate::dom0`) and call in. The policy lives on [`Queues`] and
//! [`VcpuSched`], which take the CPU and the time as parameters (host unit tests drive them); the statics and the
//! kick IPI are the thin layer at the end of this file.

use crate::arch::x86::percpu::MAX_CPUS;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::any::Any;
use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};
use spin::Mutex;

#[cfg(test)]
mod tests;

/// Time slice.
pub const TIMESLICE_NS: u64 = 30_000_000;

static TIMESLICE: AtomicU64 = AtomicU64::new(TIMESLICE_NS);

/// The time slice in force (`xl sched-credit -s -t` sets it).
pub fn timeslice_ns() -> u64 {
    TIMESLICE.load(Ordering::Relaxed)
}

/// Sets the time slice (callers check the range).
pub fn set_timeslice_ns(ns: u64) {
    TIMESLICE.store(ns, Ordering::Relaxed);
}
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

/// `current_priority` of a CPU that runs nothing: anything beats it.
const IDLE_PRIORITY: u8 = 3;

/// What the vCPU asks of the scheduler after an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Enter the guest again.
    Continue,
    /// Give up the CPU, stay runnable.
    Yield,
    /// Give up the CPU to the other runnable vCPUs of the same priority first (a PAUSE loop), stay runnable.
    YieldToOthers,
    /// Block until an event or timer.
    Block,
    /// The vCPU went offline (HLT with interrupts off).
    Offline,
    /// The domain is finished.
    Stop,
}

/// The life state of a vCPU as far as the scheduler cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Waiting for a CPU.
    Runnable,
    /// On a CPU.
    Running,
    /// Waiting for an event or a timer.
    Blocked,
    /// Not started, or taken down by the guest.
    Offline,
    /// Its domain is gone or going: a CPU must take it off the queues (the run loop reaps it).
    Dead,
}

/// A schedulable thing (a vCPU): what the policy reads of it.
pub trait Entity: Send + Sync + 'static {
    /// Its scheduler state.
    fn sched(&self) -> &VcpuSched;
    /// Its life state.
    fn run_state(&self) -> RunState;
    /// Moves it from Blocked to Runnable; false when it was not blocked.
    fn unblock(&self) -> bool;
    /// The domain it belongs to.
    fn owner(&self) -> u16;
    /// Back to the concrete type (the run loop's vCPU).
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

/// A domain, as far as [`domain_destroyed`] cares.
pub trait DomainId {
    /// Its domain id.
    fn domain_id(&self) -> u16;
}

/// What the run queues hold.
pub type Item = Arc<dyn Entity>;

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
    /// Soft affinity (preferred CPUs), kept for the toolstack; the scheduler honours hard affinity only.
    pub soft_affinity: AtomicU64,
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
            soft_affinity: AtomicU64::new(u64::MAX),
            poll_deadline: AtomicU64::new(0),
        }
    }

    /// Its credit priority now.
    pub fn priority(&self) -> Priority {
        match self.priority.load(Ordering::Relaxed) {
            0 => Priority::Boost,
            1 => Priority::Under,
            _ => Priority::Over,
        }
    }

    fn set_priority(&self, p: Priority) {
        self.priority.store(p as u8, Ordering::Relaxed);
    }

    /// Credit left, in ns.
    pub fn credit(&self) -> i64 {
        self.credit.load(Ordering::Relaxed)
    }

    /// Charges `ns` of CPU time it used (credit is burnt as the vCPU runs, so that accounting sees the truth).
    pub fn burn(&self, ns: u64) {
        self.credit.fetch_sub(i64::try_from(ns).unwrap_or(i64::MAX), Ordering::Relaxed);
    }

    /// Parked: capped and out of credit until the next accounting.
    pub fn is_parked(&self) -> bool {
        self.parked.load(Ordering::Relaxed)
    }

    /// The priority it competes with now: OVER once its credit is gone, even mid-slice.
    pub fn effective_priority(&self) -> Priority {
        if self.credit() <= 0 {
            Priority::Over
        } else {
            self.priority()
        }
    }

    /// It woke from a block: BOOST unless it used up its share (as credit1).
    fn boost(&self) {
        if self.priority() != Priority::Over {
            self.set_priority(Priority::Boost);
        }
    }

    /// It came off a CPU: the boost is spent; out of credit it is OVER, and parked when its domain is capped.
    pub fn descheduled(&self, capped: bool) {
        if self.priority() == Priority::Boost {
            self.set_priority(Priority::Under);
        }
        if self.credit() <= 0 {
            self.set_priority(Priority::Over);
            if capped {
                self.parked.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Marks whether it gave up its CPU to its peers (a PAUSE loop), before it is queued again.
    pub fn set_yielded(&self, yielded: bool) {
        self.yielded.store(yielded, Ordering::Relaxed);
    }
}

/// One domain's claim at an accounting: its weight, its cap (percent of one CPU, 0 = none) and the scheduler state
/// of its active (runnable or running) vCPUs.
pub struct Share<'a> {
    /// Weight (relative).
    pub weight: u32,
    /// Cap in percent of one CPU; 0 = uncapped.
    pub cap: u32,
    /// Its active vCPUs.
    pub vcpus: Vec<&'a VcpuSched>,
}

/// Hands out `elapsed` ns of each of `cpus` CPUs among the active domains by weight, limited by cap, split evenly
/// among each domain's active vCPUs; sets priorities and parks capped vCPUs that are out of credit.
pub fn hand_out(elapsed: i64, cpus: u32, shares: &[Share]) {
    let period = ACCOUNT_PERIOD_NS as i64;
    let active = |s: &&Share| !s.vcpus.is_empty();
    let total_weight: i64 = shares.iter().filter(active).map(|s| s.weight as i64).sum();
    if total_weight == 0 {
        return;
    }
    let total = elapsed.saturating_mul(cpus as i64);
    for s in shares.iter().filter(active) {
        let mut share = (total as i128 * s.weight as i128 / total_weight as i128) as i64;
        let capped = s.cap > 0;
        if capped {
            share = share.min(elapsed.saturating_mul(s.cap as i64) / 100);
        }
        let per_vcpu = share / s.vcpus.len() as i64;
        for v in &s.vcpus {
            // Debt is kept for a few periods so that a vCPU that overran pays it back; surplus is capped at two
            // periods so that an idle vCPU cannot hoard credit.
            let c = v.credit().saturating_add(per_vcpu).clamp(-3 * period, 2 * period);
            v.credit.store(c, Ordering::Relaxed);
            let pri = if c > 0 { Priority::Under } else { Priority::Over };
            if v.priority() != Priority::Boost || pri == Priority::Over {
                v.set_priority(pri);
            }
            v.parked.store(capped && c <= 0, Ordering::Relaxed);
        }
    }
}

/// When the last accounting ran.
pub struct AccountClock {
    last: AtomicU64,
}

impl Default for AccountClock {
    fn default() -> Self {
        Self::new()
    }
}

impl AccountClock {
    /// Never ran.
    pub const fn new() -> Self {
        Self { last: AtomicU64::new(0) }
    }

    /// Claims the accounting due at `now`: the CPU time (ns per CPU) to hand out, or None when not due yet or
    /// another CPU claimed it. It hands out exactly the time that elapsed (it runs a little late at times), at
    /// most two periods.
    pub fn due(&self, now: u64) -> Option<i64> {
        let last = self.last.load(Ordering::Relaxed);
        if now < last.saturating_add(ACCOUNT_PERIOD_NS)
            || self.last.compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed).is_err()
        {
            return None;
        }
        let period = ACCOUNT_PERIOD_NS as i64;
        Some(if last == 0 { period } else { i64::try_from(now - last).unwrap_or(i64::MAX).min(2 * period) })
    }
}

struct RunQueue {
    q: Mutex<VecDeque<Item>>,
    idle: AtomicBool,
    /// Priority of the vCPU on this CPU, for preemption decisions.
    current_priority: AtomicU8,
}

/// The per-CPU run queues. Methods take the CPU they act for (`here` = the calling CPU) and return the CPU to kick
/// (with an IPI) when that CPU should look at its queue again; the caller sends it.
pub struct Queues {
    rq: [RunQueue; MAX_CPUS],
    online: AtomicU32,
    /// CPUs that run no guest vCPUs (bit n: CPU n; `cpu0-guests=off`).
    no_guests: AtomicU64,
}

impl Default for Queues {
    fn default() -> Self {
        Self::new()
    }
}

impl Queues {
    /// Empty queues, one CPU online.
    pub const fn new() -> Self {
        Self {
            rq: [const {
                RunQueue {
                    q: Mutex::new(VecDeque::new()),
                    idle: AtomicBool::new(false),
                    current_priority: AtomicU8::new(IDLE_PRIORITY),
                }
            }; MAX_CPUS],
            online: AtomicU32::new(1),
            no_guests: AtomicU64::new(0),
        }
    }

    /// Keeps guest vCPUs off CPU 0 (`cpu0-guests=off`), when another CPU is there to run them; returns whether it
    /// does. A vCPU whose hard affinity names only CPU 0 then runs on the others.
    pub fn keep_guests_off_cpu0(&self) -> bool {
        let on = self.online() > 1;
        self.no_guests.store(u64::from(on), Ordering::Relaxed);
        on
    }

    /// How many CPUs run guests (what the credit accounting hands out).
    pub fn guest_cpus(&self) -> u32 {
        self.online() - (self.no_guests.load(Ordering::Relaxed) & ((1u64 << self.online().min(63)) - 1)).count_ones()
    }

    /// Sets how many CPUs take part.
    pub fn set_online(&self, n: u32) {
        self.online.store(n.clamp(1, MAX_CPUS as u32), Ordering::Relaxed);
    }

    /// How many CPUs take part.
    pub fn online(&self) -> u32 {
        self.online.load(Ordering::Relaxed)
    }

    /// Hard affinity: `v` may run on `cpu`. CPUs that run no guests are never allowed; a hard affinity that names
    /// only those counts as every other CPU.
    pub fn allowed(&self, v: &dyn Entity, cpu: u32) -> bool {
        let bit = 1u64 << (cpu % 64);
        let no_guests = self.no_guests.load(Ordering::Relaxed);
        if cpu >= self.online() || no_guests & bit != 0 {
            return false;
        }
        let affinity = v.sched().affinity.load(Ordering::Relaxed);
        affinity & bit != 0 || affinity & !no_guests == 0
    }

    fn home(&self, v: &dyn Entity) -> u32 {
        let p = v.sched().processor.load(Ordering::Relaxed);
        if self.allowed(v, p) {
            return p;
        }
        (0..self.online()).find(|&c| self.allowed(v, c)).unwrap_or(0)
    }

    /// Queues a runnable `v` on its home CPU (once); returns that CPU when it should preempt or wake.
    pub fn enqueue(&self, v: &Item, here: u32) -> Option<u32> {
        if v.sched().queued.swap(true, Ordering::AcqRel) {
            return None;
        }
        let cpu = self.home(&**v);
        v.sched().processor.store(cpu, Ordering::Relaxed);
        let rq = &self.rq[cpu as usize];
        rq.q.lock().push_back(v.clone());
        let prio = v.sched().priority() as u8;
        (cpu != here && (rq.idle.load(Ordering::Acquire) || prio < rq.current_priority.load(Ordering::Relaxed)))
            .then_some(cpu)
    }

    /// Makes a runnable `v` eligible to run.
    pub fn wake(&self, v: &Item, here: u32) -> Option<u32> {
        if v.run_state() == RunState::Runnable {
            self.enqueue(v, here)
        } else {
            None
        }
    }

    /// Something happened for `v` (an event, a timer, its domain ending): unblock it (with a boost), queue it for
    /// reaping when dead, or name the CPU running it so that it looks again.
    pub fn kick(&self, v: &Item, here: u32) -> Option<u32> {
        if v.unblock() {
            v.sched().boost();
            return self.enqueue(v, here);
        }
        match v.run_state() {
            RunState::Dead if !v.sched().queued.load(Ordering::Acquire) => {
                v.sched().queued.store(true, Ordering::Release);
                let cpu = self.home(&**v);
                self.rq[cpu as usize].q.lock().push_back(v.clone());
                (cpu != here).then_some(cpu)
            }
            RunState::Running => {
                let cpu = v.sched().processor.load(Ordering::Relaxed);
                (cpu != here).then_some(cpu)
            }
            _ => None,
        }
    }

    /// Drops queued references to a domain's vCPUs.
    pub fn remove_domain(&self, domid: u16) {
        for rq in self.rq.iter() {
            rq.q.lock().retain(|v| v.owner() != domid);
        }
    }

    /// Takes the best entry of `q` that `cpu` may run, of priority `max` or better. Best priority first; among
    /// equals, one that did not just yield (Xen's credit1 puts a yielding vCPU behind the others of its priority),
    /// then the one with the most credit left (the one furthest behind its share), which keeps shares proportional
    /// to weight even with coarse time slices. Dead entries go first so that they are reaped.
    fn take_best(&self, q: &mut VecDeque<Item>, cpu: u32, max: Priority) -> Option<Item> {
        let mut best: Option<(usize, (Priority, bool, i64))> = None;
        for (i, v) in q.iter().enumerate() {
            let s = v.sched();
            let dead = v.run_state() == RunState::Dead;
            if !self.allowed(&**v, cpu) || (s.is_parked() && !dead) {
                continue;
            }
            let p = if dead { Priority::Boost } else { s.priority() };
            let key = (p, s.yielded.load(Ordering::Relaxed) && !dead, -s.credit());
            if p <= max && best.is_none_or(|(_, b)| key < b) {
                best = Some((i, key));
            }
        }
        best.and_then(|(i, _)| q.remove(i))
    }

    /// Takes the best vCPU `cpu` may run: from its own queue, or stolen from another CPU's when it has nothing
    /// better than OVER (a BOOST or UNDER vCPU elsewhere beats a local OVER one; with nothing local at all, any
    /// runnable vCPU elsewhere beats idling). The vCPU is no longer queued.
    pub fn pick(&self, cpu: u32) -> Option<Item> {
        let v = self.pick_inner(cpu)?;
        self.rq[cpu as usize].idle.store(false, Ordering::Release);
        v.sched().queued.store(false, Ordering::Release);
        v.sched().yielded.store(false, Ordering::Relaxed);
        Some(v)
    }

    fn pick_inner(&self, cpu: u32) -> Option<Item> {
        let local = self.take_best(&mut self.rq[cpu as usize].q.lock(), cpu, Priority::Over);
        if let Some(v) = &local {
            if v.sched().priority() != Priority::Over {
                return local;
            }
        }
        let steal_max = if local.is_none() { Priority::Over } else { Priority::Under };
        let n = self.online();
        for other in (1..n).map(|d| (cpu + d) % n) {
            if let Some(mut q) = self.rq[other as usize].q.try_lock() {
                if let Some(v) = self.take_best(&mut q, cpu, steal_max) {
                    drop(q);
                    if let Some(l) = local {
                        self.rq[cpu as usize].q.lock().push_back(l);
                    }
                    return Some(v);
                }
            }
        }
        local
    }

    /// `v` starts running on `cpu`.
    pub fn running(&self, cpu: u32, v: &dyn Entity) {
        v.sched().processor.store(cpu, Ordering::Relaxed);
        self.rq[cpu as usize].current_priority.store(v.sched().priority() as u8, Ordering::Relaxed);
    }

    /// Whether a vCPU better than `mine` waits in `cpu`'s queue, or (when `mine` is OVER) in a queue it may be
    /// stolen from.
    pub fn higher_priority_waiting(&self, cpu: u32, mine: Priority) -> bool {
        let better = |o: &Item| !o.sched().is_parked() && o.sched().priority() < mine;
        if self.rq[cpu as usize].q.try_lock().is_some_and(|q| q.iter().any(better)) {
            return true;
        }
        if mine != Priority::Over {
            return false;
        }
        let n = self.online();
        (1..n).map(|d| (cpu + d) % n).any(|other| {
            self.rq[other as usize].q.try_lock().is_some_and(|q| q.iter().any(|o| better(o) && self.allowed(&**o, cpu)))
        })
    }

    /// `cpu` found nothing to run: it is idle (an enqueue kicks it) until its next pick.
    pub fn go_idle(&self, cpu: u32) {
        let rq = &self.rq[cpu as usize];
        rq.idle.store(true, Ordering::Release);
        rq.current_priority.store(IDLE_PRIORITY, Ordering::Relaxed);
    }

    /// Nothing waits in `cpu`'s own queue.
    pub fn is_empty(&self, cpu: u32) -> bool {
        self.rq[cpu as usize].q.lock().is_empty()
    }

    /// Queue lengths of the online CPUs.
    pub fn lengths(&self) -> Vec<usize> {
        (0..self.online() as usize).map(|c| self.rq[c].q.lock().len()).collect()
    }
}

// The machine's scheduler: the statics, and the kick IPI.

static QUEUES: Queues = Queues::new();
static ACCOUNTING: AccountClock = AccountClock::new();
/// Sends the kick IPI to a CPU and tells the calling CPU's index (set by `init`; none on the host).
static CPU_HOOKS: spin::Once<CpuHooks> = spin::Once::new();

/// How the scheduler reaches CPUs.
#[derive(Clone, Copy)]
pub struct CpuHooks {
    /// Index of the calling CPU.
    pub current: fn() -> u32,
    /// Makes a CPU look at its run queue again (the kick IPI).
    pub kick_cpu: fn(u32),
}

fn here() -> u32 {
    CPU_HOOKS.get().map_or(0, |h| (h.current)())
}

fn send_kick(cpu: Option<u32>) {
    if let (Some(cpu), Some(h)) = (cpu, CPU_HOOKS.get()) {
        (h.kick_cpu)(cpu);
    }
}

/// The machine's run queues.
pub fn queues() -> &'static Queues {
    &QUEUES
}

/// Records how many CPUs take part in scheduling.
pub fn set_online_cpus(n: u32) {
    QUEUES.set_online(n);
}

/// `cpu0-guests=off`: guest vCPUs stay off CPU 0 (when there is another CPU); whether they do.
pub fn keep_guests_off_cpu0() -> bool {
    QUEUES.keep_guests_off_cpu0()
}

/// Makes a runnable vCPU eligible to run.
pub fn wake<E: Entity>(v: &Arc<E>) {
    let item: Item = v.clone();
    send_kick(QUEUES.wake(&item, here()));
}

/// Queues a vCPU that stays runnable after its turn.
pub fn requeue<E: Entity>(v: &Arc<E>) {
    let item: Item = v.clone();
    send_kick(QUEUES.enqueue(&item, here()));
}

/// Something happened for `v` (an event, a timer, its domain ending): unblock it, or make the CPU running it look
/// again.
pub fn kick<E: Entity>(v: &Arc<E>) {
    let item: Item = v.clone();
    send_kick(QUEUES.kick(&item, here()));
}

/// Drops queued references to a destroyed domain's vCPUs.
pub fn domain_destroyed<D: DomainId + ?Sized>(dom: &D) {
    QUEUES.remove_domain(dom.domain_id());
}

/// Claims the accounting due at `now` (see [`AccountClock::due`]).
pub fn account_due(now: u64) -> Option<i64> {
    ACCOUNTING.due(now)
}

/// Snapshot of run-queue lengths (for logs).
pub fn queue_lengths() -> Vec<usize> {
    QUEUES.lengths()
}

/// Sets up the kick IPI (once): its handler, and how to send it.
pub fn init() {
    use crate::arch::x86::{apic, percpu};
    crate::arch::x86::trap::register_handler(KICK_VECTOR, |_| apic::eoi());
    CPU_HOOKS.call_once(|| CpuHooks {
        current: percpu::current_index,
        kick_cpu: |cpu| {
            apic::send_ipi(percpu::cpu(cpu as usize).apic_id.load(Ordering::Relaxed), apic::Ipi::Fixed(KICK_VECTOR))
        },
    });
}
