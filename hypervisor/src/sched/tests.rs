//! The credit policy, driven on the host: queues and accounting without per-CPU statics or IPIs.

use super::*;
use alloc::boxed::Box;

/// A vCPU as the scheduler sees it.
struct V {
    s: VcpuSched,
    state: Mutex<RunState>,
    dom: u16,
}

impl Entity for V {
    fn sched(&self) -> &VcpuSched {
        &self.s
    }
    fn run_state(&self) -> RunState {
        *self.state.lock()
    }
    fn unblock(&self) -> bool {
        let mut s = self.state.lock();
        if *s == RunState::Blocked {
            *s = RunState::Runnable;
            true
        } else {
            false
        }
    }
    fn owner(&self) -> u16 {
        self.dom
    }
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

fn vcpu(dom: u16, state: RunState) -> Arc<V> {
    Arc::new(V { s: VcpuSched::new(), state: Mutex::new(state), dom })
}

fn item(v: &Arc<V>) -> Item {
    v.clone()
}

fn queues(cpus: u32) -> Box<Queues> {
    let q = Box::new(Queues::new());
    q.set_online(cpus);
    q
}

fn same(a: &Item, b: &Arc<V>) -> bool {
    a.owner() == b.dom && core::ptr::eq(a.sched(), &b.s)
}

const P: i64 = ACCOUNT_PERIOD_NS as i64;

#[test]
fn credits_follow_weight() {
    let (a, b) = (vcpu(1, RunState::Runnable), vcpu(2, RunState::Runnable));
    let shares = [
        Share { weight: 512, cap: 0, vcpus: alloc::vec![&a.s] },
        Share { weight: 256, cap: 0, vcpus: alloc::vec![&b.s] },
    ];
    hand_out(P, 1, &shares);
    assert_eq!(a.s.credit(), 2 * P / 3);
    assert_eq!(b.s.credit(), P / 3);
    assert_eq!(a.s.credit(), 2 * b.s.credit());
    assert_eq!(a.s.priority(), Priority::Under);
    // A domain with no active vCPU takes no share; a domain's share is split among its vCPUs.
    let (c, d) = (vcpu(3, RunState::Runnable), vcpu(3, RunState::Runnable));
    let shares = [
        Share { weight: 256, cap: 0, vcpus: alloc::vec![&c.s, &d.s] },
        Share { weight: 256, cap: 0, vcpus: alloc::vec![] },
    ];
    hand_out(P, 2, &shares);
    assert_eq!(c.s.credit(), P);
    assert_eq!(d.s.credit(), P);
    // Surplus is capped at two periods.
    for _ in 0..5 {
        hand_out(P, 2, &shares);
    }
    assert_eq!(c.s.credit(), 2 * P);
}

#[test]
fn a_capped_domain_is_parked_when_out_of_credit() {
    let v = vcpu(1, RunState::Runnable);
    let shares = [Share { weight: 256, cap: 10, vcpus: alloc::vec![&v.s] }];
    hand_out(P, 4, &shares);
    // 10% of one CPU, not the whole machine.
    assert_eq!(v.s.credit(), P / 10);
    v.s.burn((P / 5) as u64);
    v.s.descheduled(true);
    assert!(v.s.is_parked());
    assert_eq!(v.s.priority(), Priority::Over);
    let q = queues(1);
    assert_eq!(q.enqueue(&item(&v), 0), None);
    assert!(q.pick(0).is_none(), "a parked vCPU must not run");
    // The next accounting pays back part of the debt; still out of credit, still parked.
    hand_out(P, 4, &shares);
    assert!(v.s.credit() <= 0 && v.s.is_parked());
    hand_out(P, 4, &shares);
    assert!(v.s.credit() > 0 && !v.s.is_parked());
    assert!(q.pick(0).is_some());
    // Uncapped, running out of credit makes it OVER but never parks it.
    let u = vcpu(2, RunState::Runnable);
    u.s.burn(1);
    u.s.descheduled(false);
    assert!(!u.s.is_parked());
    assert_eq!(u.s.priority(), Priority::Over);
}

#[test]
fn waking_from_a_block_boosts() {
    let q = queues(1);
    let under = vcpu(1, RunState::Runnable);
    under.s.credit.store(P, Ordering::Relaxed);
    let sleeper = vcpu(2, RunState::Blocked);
    q.enqueue(&item(&under), 0);
    // Not blocked: a kick does not queue it.
    assert!(q.kick(&item(&vcpu(3, RunState::Offline)), 0).is_none());
    q.kick(&item(&sleeper), 0);
    assert_eq!(sleeper.run_state(), RunState::Runnable);
    assert_eq!(sleeper.s.priority(), Priority::Boost);
    // BOOST beats UNDER even with less credit.
    assert!(same(&q.pick(0).unwrap(), &sleeper));
    // The boost lasts one turn.
    sleeper.s.descheduled(false);
    assert_ne!(sleeper.s.priority(), Priority::Boost);
    // An OVER vCPU waking is not boosted.
    let over = vcpu(4, RunState::Blocked);
    over.s.set_priority(Priority::Over);
    q.kick(&item(&over), 0);
    assert_eq!(over.s.priority(), Priority::Over);
}

#[test]
fn an_idle_cpu_steals() {
    let q = queues(2);
    let v = vcpu(1, RunState::Runnable);
    v.s.processor.store(1, Ordering::Relaxed);
    q.enqueue(&item(&v), 1);
    assert_eq!(q.lengths(), [0, 1]);
    assert!(same(&q.pick(0).unwrap(), &v));
    assert_eq!(q.lengths(), [0, 0]);
    // A local OVER vCPU loses to an UNDER one elsewhere; the OVER one stays queued here.
    let over = vcpu(2, RunState::Runnable);
    over.s.set_priority(Priority::Over);
    over.s.processor.store(0, Ordering::Relaxed);
    let under = vcpu(3, RunState::Runnable);
    under.s.credit.store(P, Ordering::Relaxed);
    under.s.processor.store(1, Ordering::Relaxed);
    q.enqueue(&item(&over), 0);
    q.enqueue(&item(&under), 0);
    assert!(same(&q.pick(0).unwrap(), &under));
    assert_eq!(q.lengths(), [1, 0]);
    // An UNDER vCPU here is not given up for one elsewhere.
    let local = vcpu(4, RunState::Runnable);
    local.s.processor.store(0, Ordering::Relaxed);
    let remote = vcpu(5, RunState::Runnable);
    remote.s.processor.store(1, Ordering::Relaxed);
    q.enqueue(&item(&local), 0);
    q.enqueue(&item(&remote), 0);
    assert!(same(&q.pick(0).unwrap(), &local));
}

#[test]
fn hard_affinity_is_respected() {
    let q = queues(2);
    let v = vcpu(1, RunState::Runnable);
    v.s.affinity.store(1 << 1, Ordering::Relaxed);
    // Its home becomes CPU 1, which is idle: CPU 1 gets kicked.
    q.go_idle(1);
    assert_eq!(q.enqueue(&item(&v), 0), Some(1));
    assert_eq!(v.s.processor.load(Ordering::Relaxed), 1);
    // CPU 0 may not steal it.
    assert!(q.pick(0).is_none());
    assert!(!q.higher_priority_waiting(0, Priority::Over));
    assert!(same(&q.pick(1).unwrap(), &v));
    // Affinity to a CPU that is not online falls back to one that is.
    let w = vcpu(2, RunState::Runnable);
    w.s.affinity.store(1 << 5 | 1, Ordering::Relaxed);
    w.s.processor.store(5, Ordering::Relaxed);
    q.enqueue(&item(&w), 0);
    assert_eq!(w.s.processor.load(Ordering::Relaxed), 0);
}

/// `cpu0-guests=off`: no vCPU runs on CPU 0, one pinned only there runs elsewhere, and the accounting hands out
/// the other CPUs' time only. With one CPU the setting cannot apply.
#[test]
fn guests_kept_off_cpu0() {
    assert!(!queues(1).keep_guests_off_cpu0());
    let q = queues(2);
    assert_eq!(q.guest_cpus(), 2);
    assert!(q.keep_guests_off_cpu0());
    assert_eq!(q.guest_cpus(), 1);
    let (free, pinned0, pinned1) =
        (vcpu(1, RunState::Runnable), vcpu(2, RunState::Runnable), vcpu(3, RunState::Runnable));
    pinned0.s.affinity.store(1, Ordering::Relaxed);
    pinned1.s.affinity.store(1 << 1, Ordering::Relaxed);
    for v in [&free, &pinned0, &pinned1] {
        assert!(!q.allowed(&**v, 0) && q.allowed(&**v, 1));
        q.enqueue(&item(v), 0);
        assert_eq!(v.s.processor.load(Ordering::Relaxed), 1);
    }
    assert!(q.pick(0).is_none(), "CPU 0 neither runs nor steals guests");
    for _ in 0..3 {
        assert!(q.pick(1).is_some());
    }
}

#[test]
fn a_yielding_vcpu_goes_behind_its_peers_once() {
    let q = queues(1);
    let (a, b) = (vcpu(1, RunState::Runnable), vcpu(2, RunState::Runnable));
    a.s.credit.store(P, Ordering::Relaxed);
    b.s.credit.store(P / 2, Ordering::Relaxed);
    // With equal priority the one with more credit goes first...
    q.enqueue(&item(&b), 0);
    q.enqueue(&item(&a), 0);
    assert!(same(&q.pick(0).unwrap(), &a));
    // ...unless it just yielded.
    a.s.set_yielded(true);
    q.enqueue(&item(&a), 0);
    assert!(same(&q.pick(0).unwrap(), &b));
    // Once picked, the yield is forgotten.
    assert!(same(&q.pick(0).unwrap(), &a));
    q.enqueue(&item(&a), 0);
    q.enqueue(&item(&b), 0);
    assert!(same(&q.pick(0).unwrap(), &a));
}

#[test]
fn kicks_name_the_cpu_to_interrupt() {
    let q = queues(2);
    let v = vcpu(1, RunState::Running);
    v.s.processor.store(1, Ordering::Relaxed);
    assert_eq!(q.kick(&item(&v), 0), Some(1));
    assert_eq!(q.kick(&item(&v), 1), None);
    // A dead vCPU is queued once so that a CPU reaps it, even when parked.
    let d = vcpu(2, RunState::Dead);
    d.s.parked.store(true, Ordering::Relaxed);
    q.kick(&item(&d), 0);
    q.kick(&item(&d), 0);
    assert_eq!(q.lengths(), [1, 0]);
    assert!(same(&q.pick(0).unwrap(), &d));
    // A busy CPU running something better is not interrupted for an UNDER vCPU; an idle one is.
    let runner = vcpu(3, RunState::Running);
    runner.s.set_priority(Priority::Boost);
    q.running(1, &*runner);
    let w = vcpu(4, RunState::Runnable);
    w.s.processor.store(1, Ordering::Relaxed);
    assert_eq!(q.enqueue(&item(&w), 0), None);
    assert!(q.higher_priority_waiting(1, Priority::Over));
    assert!(!q.higher_priority_waiting(1, Priority::Boost));
    q.remove_domain(4);
    assert_eq!(q.lengths(), [0, 0]);
}

#[test]
fn accounting_hands_out_elapsed_time_once_per_period() {
    let c = AccountClock::new();
    let t0 = ACCOUNT_PERIOD_NS + 1_000;
    assert_eq!(c.due(t0), Some(P));
    assert_eq!(c.due(t0 + ACCOUNT_PERIOD_NS - 1), None);
    assert_eq!(c.due(t0 + ACCOUNT_PERIOD_NS + 5), Some(P + 5));
    // A long gap hands out two periods at most.
    assert_eq!(c.due(10 * ACCOUNT_PERIOD_NS), Some(2 * P));
}
