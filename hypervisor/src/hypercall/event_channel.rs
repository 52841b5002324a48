//! `event_channel_op`: binding, sending, unmasking and closing 2-level event channels within a domain.

use super::{Action, Ctx, HResult};
use crate::domain::evtchn::{self, Binding};
use crate::domain::{self, Domain};
use alloc::sync::Arc;
use core::sync::atomic::Ordering;
use keel_abi::hypercall::errno::*;
use keel_abi::shared_info::{
    evtchnop, virq, EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindIpi, EvtchnBindVcpu, EvtchnBindVirq,
    EvtchnStatus,
};

/// The domain `domid` names from the caller's point of view (DOMID_SELF is the caller).
fn domain_by_any_id(c: &Ctx, domid: u16) -> Option<Arc<Domain>> {
    if domid == keel_abi::DOMID_SELF || domid == c.dom.id {
        Some(c.dom.clone())
    } else {
        domain::get(domid)
    }
}

/// Xen's check for an operation on domain `domid`: -ESRCH when there is no such domain, -EPERM when it is another
/// domain (Keel gives no domain rights over another yet).
fn only_self(c: &Ctx, domid: u16) -> Result<(), Errno> {
    match domain_by_any_id(c, domid) {
        None => Err(ESRCH),
        Some(d) if !Arc::ptr_eq(&d, c.dom) => Err(EPERM),
        Some(_) => Ok(()),
    }
}

pub fn event_channel_op(c: &mut Ctx) -> HResult {
    let (cmd, arg) = (c.args[0], c.args[1]);
    match cmd {
        evtchnop::BIND_VIRQ => {
            let mut b: EvtchnBindVirq = c.read(arg)?;
            if b.virq >= virq::NR {
                return Err(EINVAL);
            }
            // A global VIRQ is bound once, on vCPU 0 (and may then be moved with BIND_VCPU).
            if evtchn::virq_is_global(b.virq) && b.vcpu != 0 {
                return Err(EINVAL);
            }
            let v = c.dom.vcpus.get(b.vcpu as usize).ok_or(ENOENT)?;
            {
                // The check and the binding under one lock: two racing binds of one VIRQ cannot both succeed.
                let mut t = c.dom.evtchn.lock();
                if v.virq_ports[b.virq as usize].load(Ordering::Acquire) != 0 {
                    return Err(EEXIST);
                }
                b.port = t.alloc(Binding::Virq(b.virq), b.vcpu)?;
                v.virq_ports[b.virq as usize].store(b.port, Ordering::Release);
            }
            c.write(arg, &b)?;
            Ok(Action::Return(0))
        }
        evtchnop::BIND_IPI => {
            let mut b: EvtchnBindIpi = c.read(arg)?;
            c.dom.vcpus.get(b.vcpu as usize).ok_or(ENOENT)?;
            b.port = c.dom.evtchn.lock().alloc(Binding::Ipi, b.vcpu)?;
            c.write(arg, &b)?;
            Ok(Action::Return(0))
        }
        evtchnop::BIND_VCPU => {
            let b: EvtchnBindVcpu = c.read(arg)?;
            c.dom.vcpus.get(b.vcpu as usize).ok_or(ENOENT)?;
            c.dom.evtchn.lock().set_vcpu(b.port, b.vcpu)?;
            Ok(Action::Return(0))
        }
        evtchnop::SEND => {
            let port: u32 = c.read(arg)?;
            let p = c.dom.evtchn.lock().get(port)?;
            match p.binding {
                Binding::Ipi => evtchn::set_pending(c.dom, port),
                Binding::Interdomain { remote, remote_port } => send_interdomain(c, port, remote, remote_port),
                // Xen drops a notification on a port nobody has bound yet.
                Binding::Unbound { .. } => {}
                Binding::Virq(_) | Binding::Free => return Err(EINVAL),
            }
            Ok(Action::Return(0))
        }
        evtchnop::UNMASK => {
            let port: u32 = c.read(arg)?;
            evtchn::unmask(c.dom, port)?;
            Ok(Action::Return(0))
        }
        evtchnop::CLOSE => {
            let port: u32 = c.read(arg)?;
            close(c, port)?;
            evtchn::clear_pending(c.dom, port);
            Ok(Action::Return(0))
        }
        evtchnop::ALLOC_UNBOUND => {
            // In the caller's own table, or, for a privileged caller, in another domain's (the toolstack making
            // a new domain's console and store ports): Xen's XSM_TARGET rule.
            let mut a: EvtchnAllocUnbound = c.read(arg)?;
            let owner = domain_by_any_id(c, a.dom).ok_or(ESRCH)?;
            if !Arc::ptr_eq(&owner, c.dom) && !c.dom.is_privileged() {
                return Err(EPERM);
            }
            let remote = if a.remote_dom == keel_abi::DOMID_SELF { c.dom.id } else { a.remote_dom };
            a.port = owner.evtchn.lock().alloc(Binding::Unbound { remote }, 0)?;
            c.write(arg, &a)?;
            Ok(Action::Return(0))
        }
        evtchnop::BIND_INTERDOMAIN => {
            let mut b: EvtchnBindInterdomain = c.read(arg)?;
            b.local_port = bind_interdomain(c, b.remote_dom, b.remote_port)?;
            c.write(arg, &b)?;
            Ok(Action::Return(0))
        }
        evtchnop::STATUS => {
            let mut s: EvtchnStatus = c.read(arg)?;
            only_self(c, s.dom)?;
            let (status, vcpu, u) = c.dom.evtchn.lock().status(s.port)?;
            s.status = status;
            s.vcpu = vcpu;
            s.u = u;
            c.write(arg, &s)?;
            Ok(Action::Return(0))
        }
        _ => Err(ENOSYS),
    }
}

/// EVTCHNOP_bind_interdomain: connects a new local port to `remote_port` of `remote_dom`, which must be unbound
/// and waiting for this domain. The check, the allocation and both bindings happen under both domains' locks,
/// so two binds of one unbound port cannot both succeed.
fn bind_interdomain(c: &Ctx, remote_dom: u16, remote_port: u32) -> Result<u32, Errno> {
    let remote = domain_by_any_id(c, remote_dom).ok_or(ESRCH)?;
    let mut pair = evtchn::Pair::lock(c.dom, &remote);
    // As in Xen: the local port first (a full table says -ENOSPC), then the remote port's state.
    let local = pair.local().alloc(Binding::Interdomain { remote: remote.id, remote_port }, 0)?;
    let waiting = !remote.dying.load(Ordering::Acquire)
        && pair.remote().get(remote_port).map(|p| p.binding) == Ok(Binding::Unbound { remote: c.dom.id });
    if !waiting {
        // Nobody saw the new port: both tables are still locked.
        pair.local().close(local)?;
        return Err(EINVAL);
    }
    pair.remote().rebind(remote_port, Binding::Interdomain { remote: c.dom.id, remote_port: local })?;
    // Xen raises the local port once so that both ends notice the connection.
    evtchn::set_pending_locked(c.dom, pair.local(), local);
    Ok(local)
}

/// EVTCHNOP_send on a connected interdomain port: raises the peer's port if the peer still points back at
/// (this domain, this port) and is not being torn down; otherwise the notification is dropped, as Xen drops one
/// on a port whose peer has gone.
fn send_interdomain(c: &Ctx, port: u32, remote_id: u16, remote_port: u32) {
    let Some(remote) = domain_by_any_id(c, remote_id) else { return };
    let t = remote.evtchn.lock();
    if remote.dying.load(Ordering::Acquire) {
        return;
    }
    // Bindings of a connected pair change only with both tables locked: while the peer's table is held and the
    // peer points back here, this port is still its other end.
    if t.get(remote_port).map(|p| p.binding) == Ok(Binding::Interdomain { remote: c.dom.id, remote_port: port }) {
        evtchn::set_pending_locked(&remote, &t, remote_port);
    }
}

/// EVTCHNOP_close. The port's binding is read and acted on under the table lock (so a port closed and re-bound
/// by another vCPU meanwhile is never torn down as what it used to be); an interdomain port takes both tables.
fn close(c: &Ctx, port: u32) -> Result<(), Errno> {
    let mut t = c.dom.evtchn.lock();
    let p = t.get(port)?;
    match p.binding {
        Binding::Interdomain { remote, remote_port } => {
            drop(t);
            close_interdomain(c, port, p.binding, remote, remote_port)
        }
        Binding::Virq(n) => {
            t.close(port)?;
            // Clear the VIRQ's binding wherever it is recorded (vCPU 0 for a global VIRQ, the bound vCPU for a
            // per-vCPU one): a port moved by BIND_VCPU must not leave the VIRQ bound to a closed port.
            for v in &c.dom.vcpus {
                let _ = v.virq_ports[n as usize].compare_exchange(port, 0, Ordering::AcqRel, Ordering::Relaxed);
            }
            Ok(())
        }
        _ => t.close(port).map(|_| ()),
    }
}

/// Closes interdomain port `port` (bound as `was`, to `remote_port` of `remote_id`): the other end goes back to
/// waiting for a connection from this domain if it still is this port's other end and its domain is not being
/// torn down.
fn close_interdomain(c: &Ctx, port: u32, was: Binding, remote_id: u16, remote_port: u32) -> Result<(), Errno> {
    let Some(remote) = domain_by_any_id(c, remote_id) else {
        // The peer is gone: only this end is left.
        let mut t = c.dom.evtchn.lock();
        if t.get(port)?.binding != was {
            return Err(EINVAL);
        }
        return t.close(port).map(|_| ());
    };
    let mut pair = evtchn::Pair::lock(c.dom, &remote);
    // The port may have changed while no lock was held; Xen answers -EINVAL then (it was closed meanwhile).
    if pair.local().get(port)?.binding != was {
        return Err(EINVAL);
    }
    pair.local().close(port)?;
    let back = Binding::Interdomain { remote: c.dom.id, remote_port: port };
    if !remote.dying.load(Ordering::Acquire) && pair.remote().get(remote_port).map(|q| q.binding) == Ok(back) {
        pair.remote().rebind(remote_port, Binding::Unbound { remote: c.dom.id })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::domain::evtchn::{self, Binding};
    use crate::domain::Domain;
    use crate::testing::{self, get, put};
    use alloc::sync::Arc;
    use keel_abi::hypercall::{errno::*, nr};
    use keel_abi::shared_info::{
        evtchnop, evtchnstat, virq, EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindIpi, EvtchnBindVcpu,
        EvtchnBindVirq, EvtchnStatus, EVTCHN_2L_PORTS,
    };
    use keel_abi::DOMID_SELF;

    const ARG: u64 = 0x1000;
    /// A guest-physical address beyond the test domains' RAM.
    const BAD: u64 = 0x4000_0000;
    /// A domain id no test domain has.
    const NO_SUCH_DOMAIN: u16 = 0x7000;

    fn op(dom: &Arc<Domain>, cmd: u64) -> i64 {
        testing::hypercall(dom, 0, nr::EVENT_CHANNEL_OP, [cmd, ARG, 0, 0, 0])
    }

    fn op_at(dom: &Arc<Domain>, vcpu: usize, cmd: u64, arg: u64) -> i64 {
        testing::hypercall(dom, vcpu, nr::EVENT_CHANNEL_OP, [cmd, arg, 0, 0, 0])
    }

    /// A closed port keeps no pending event for its next binding (it used to: the new binding never fired).
    #[test]
    fn close_clears_the_pending_bit() {
        let dom = testing::domain(1, 4);
        put(&dom, ARG, &EvtchnBindIpi { vcpu: 0, port: 0 });
        assert_eq!(op(&dom, evtchnop::BIND_IPI), 0);
        let port = get::<EvtchnBindIpi>(&dom, ARG).port;
        assert_eq!(port_op(&dom, evtchnop::SEND, port), 0);
        assert!(evtchn::is_pending(&dom, port));
        assert_eq!(port_op(&dom, evtchnop::CLOSE, port), 0);
        assert!(!evtchn::is_pending(&dom, port));
        put(&dom, ARG, &EvtchnBindIpi { vcpu: 0, port: 0 });
        assert_eq!(op(&dom, evtchnop::BIND_IPI), 0);
        assert_eq!(get::<EvtchnBindIpi>(&dom, ARG).port, port, "the same number again");
        assert!(!evtchn::is_pending(&dom, port));
        crate::domain::destroy(&dom);
    }

    fn port_op(dom: &Arc<Domain>, cmd: u64, port: u32) -> i64 {
        put(dom, ARG, &port);
        op(dom, cmd)
    }

    fn alloc_unbound(dom: &Arc<Domain>, remote: u16) -> u32 {
        put(dom, ARG, &EvtchnAllocUnbound { dom: DOMID_SELF, remote_dom: remote, port: 0 });
        assert_eq!(op(dom, evtchnop::ALLOC_UNBOUND), 0);
        get::<EvtchnAllocUnbound>(dom, ARG).port
    }

    fn bind_interdomain(dom: &Arc<Domain>, remote: u16, remote_port: u32) -> Result<u32, i64> {
        put(dom, ARG, &EvtchnBindInterdomain { remote_dom: remote, pad: 0, remote_port, local_port: 0 });
        match op(dom, evtchnop::BIND_INTERDOMAIN) {
            0 => Ok(get::<EvtchnBindInterdomain>(dom, ARG).local_port),
            e => Err(e),
        }
    }

    fn bind_virq(dom: &Arc<Domain>, virq: u32, vcpu: u32) -> Result<u32, i64> {
        put(dom, ARG, &EvtchnBindVirq { virq, vcpu, port: 0 });
        match op(dom, evtchnop::BIND_VIRQ) {
            0 => Ok(get::<EvtchnBindVirq>(dom, ARG).port),
            e => Err(e),
        }
    }

    fn bind_ipi(dom: &Arc<Domain>) -> u32 {
        put(dom, ARG, &EvtchnBindIpi { vcpu: 0, port: 0 });
        assert_eq!(op(dom, evtchnop::BIND_IPI), 0);
        get::<EvtchnBindIpi>(dom, ARG).port
    }

    fn status(dom: &Arc<Domain>, port: u32) -> EvtchnStatus {
        put(dom, ARG, &EvtchnStatus { dom: DOMID_SELF, port, ..Default::default() });
        assert_eq!(op(dom, evtchnop::STATUS), 0);
        get(dom, ARG)
    }

    fn clear_pending(dom: &Domain, port: u32) {
        let off = keel_abi::shared_info::EVTCHN_PENDING_OFFSET + (port / 64) as usize * 8;
        // SAFETY: the word lies in the domain's shared_info page, alive while `dom` is.
        let w = unsafe { &*(dom.shared_info_ptr().add(off) as *const core::sync::atomic::AtomicU64) };
        w.fetch_and(!(1 << (port % 64)), core::sync::atomic::Ordering::SeqCst);
    }

    /// Errors on a bad port come back negative, with Xen's values (they used to be +22 and +28).
    #[test]
    fn port_errors_are_negative_xen_errnos() {
        let dom = testing::domain(1, 4);
        for cmd in [evtchnop::SEND, evtchnop::UNMASK, evtchnop::CLOSE] {
            assert_eq!(port_op(&dom, cmd, 12345), EINVAL.negated(), "cmd {cmd}, port 12345");
        }
        for cmd in [evtchnop::SEND, evtchnop::CLOSE] {
            assert_eq!(port_op(&dom, cmd, 0), EINVAL.negated(), "cmd {cmd}, port 0");
            assert_eq!(port_op(&dom, cmd, 77), EINVAL.negated(), "cmd {cmd}, free port 77");
        }
        // Xen unmasks any port number of the ABI's range, bound or not.
        assert_eq!(port_op(&dom, evtchnop::UNMASK, 0), 0);
        assert_eq!(port_op(&dom, evtchnop::UNMASK, EVTCHN_2L_PORTS - 1), 0);
        assert_eq!(port_op(&dom, evtchnop::UNMASK, EVTCHN_2L_PORTS), EINVAL.negated());
        put(&dom, ARG, &EvtchnBindVcpu { port: 77, vcpu: 0 });
        assert_eq!(op(&dom, evtchnop::BIND_VCPU), EINVAL.negated());
        crate::domain::destroy(&dom);
    }

    /// A full table says -ENOSPC.
    #[test]
    fn full_table_is_enospc() {
        let dom = testing::domain(1, 4);
        for i in 1..EVTCHN_2L_PORTS {
            put(&dom, ARG, &EvtchnBindIpi { vcpu: 0, port: 0 });
            assert_eq!(op(&dom, evtchnop::BIND_IPI), 0, "bind {i}");
            assert_eq!(get::<EvtchnBindIpi>(&dom, ARG).port, i);
        }
        put(&dom, ARG, &EvtchnBindIpi { vcpu: 0, port: 0 });
        assert_eq!(op(&dom, evtchnop::BIND_IPI), ENOSPC.negated());
        put(&dom, ARG, &EvtchnAllocUnbound { dom: keel_abi::DOMID_SELF, remote_dom: 0, port: 0 });
        assert_eq!(op(&dom, evtchnop::ALLOC_UNBOUND), ENOSPC.negated());
        crate::domain::destroy(&dom);
    }

    /// Every command with an argument it cannot read says -EFAULT; an unknown command -ENOSYS.
    #[test]
    fn bad_pointers_and_commands() {
        let dom = testing::domain(1, 4);
        let end_of_ram = 4 << 20;
        for cmd in [
            evtchnop::BIND_VIRQ,
            evtchnop::CLOSE,
            evtchnop::SEND,
            evtchnop::STATUS,
            evtchnop::ALLOC_UNBOUND,
            evtchnop::BIND_INTERDOMAIN,
            evtchnop::BIND_IPI,
            evtchnop::BIND_VCPU,
            evtchnop::UNMASK,
        ] {
            assert_eq!(op_at(&dom, 0, cmd, BAD), EFAULT.negated(), "cmd {cmd}");
            // Straddling the end of RAM: the first bytes are readable, the rest are not.
            assert_eq!(op_at(&dom, 0, cmd, end_of_ram - 2), EFAULT.negated(), "cmd {cmd} at the edge");
        }
        for cmd in [evtchnop::BIND_PIRQ, evtchnop::RESET, evtchnop::INIT_CONTROL, 12, 99, 1 << 32] {
            assert_eq!(op(&dom, cmd), ENOSYS.negated(), "cmd {cmd}");
        }
        crate::domain::destroy(&dom);
    }

    #[test]
    fn bind_virq_and_ipi_errors() {
        let dom = testing::domain(2, 4);
        assert_eq!(bind_virq(&dom, virq::NR, 0), Err(EINVAL.negated()));
        assert_eq!(bind_virq(&dom, u32::MAX, 0), Err(EINVAL.negated()));
        assert_eq!(bind_virq(&dom, virq::TIMER, 2), Err(ENOENT.negated()));
        // A global VIRQ is bound on vCPU 0 only (-EINVAL before the vCPU is looked at).
        assert_eq!(bind_virq(&dom, virq::CONSOLE, 1), Err(EINVAL.negated()));
        assert_eq!(bind_virq(&dom, virq::CONSOLE, 7), Err(EINVAL.negated()));
        let t0 = bind_virq(&dom, virq::TIMER, 0).unwrap();
        let t1 = bind_virq(&dom, virq::TIMER, 1).unwrap();
        assert_ne!(t0, t1);
        assert_eq!(bind_virq(&dom, virq::TIMER, 1), Err(EEXIST.negated()));
        let s = status(&dom, t1);
        assert_eq!((s.status, s.vcpu, s.u[0]), (evtchnstat::VIRQ, 1, virq::TIMER));
        // SEND on a VIRQ port is -EINVAL in Xen.
        assert_eq!(port_op(&dom, evtchnop::SEND, t0), EINVAL.negated());
        put(&dom, ARG, &EvtchnBindIpi { vcpu: 2, port: 0 });
        assert_eq!(op(&dom, evtchnop::BIND_IPI), ENOENT.negated());
        crate::domain::destroy(&dom);
    }

    #[test]
    fn bind_vcpu_errors() {
        let dom = testing::domain(2, 4);
        let ipi = bind_ipi(&dom);
        let timer = bind_virq(&dom, virq::TIMER, 0).unwrap();
        // The vCPU is checked first (-ENOENT even for a bad port), then the port.
        put(&dom, ARG, &EvtchnBindVcpu { port: 999, vcpu: 2 });
        assert_eq!(op(&dom, evtchnop::BIND_VCPU), ENOENT.negated());
        for port in [ipi, timer] {
            put(&dom, ARG, &EvtchnBindVcpu { port, vcpu: 1 });
            assert_eq!(op(&dom, evtchnop::BIND_VCPU), EINVAL.negated(), "port {port}");
        }
        let unbound = alloc_unbound(&dom, 0);
        put(&dom, ARG, &EvtchnBindVcpu { port: unbound, vcpu: 1 });
        assert_eq!(op(&dom, evtchnop::BIND_VCPU), 0);
        assert_eq!(status(&dom, unbound).vcpu, 1);
        crate::domain::destroy(&dom);
    }

    /// Defect 10: a global VIRQ whose port BIND_VCPU moved to another vCPU is unbound by CLOSE, so it can be
    /// bound again (it stayed recorded on vCPU 0 and re-binding said -EEXIST forever).
    #[test]
    fn virq_moved_then_closed_can_be_bound_again() {
        let dom = testing::domain(2, 4);
        let port = bind_virq(&dom, virq::CONSOLE, 0).unwrap();
        put(&dom, ARG, &EvtchnBindVcpu { port, vcpu: 1 });
        assert_eq!(op(&dom, evtchnop::BIND_VCPU), 0);
        assert_eq!(status(&dom, port).vcpu, 1);
        assert_eq!(port_op(&dom, evtchnop::CLOSE, port), 0);
        assert_eq!(status(&dom, port).status, evtchnstat::CLOSED);
        let again = bind_virq(&dom, virq::CONSOLE, 0);
        assert!(again.is_ok(), "re-binding the VIRQ: {again:?}");
        // And a per-vCPU VIRQ: bound, closed, bound again.
        let t = bind_virq(&dom, virq::TIMER, 1).unwrap();
        assert_eq!(port_op(&dom, evtchnop::CLOSE, t), 0);
        assert!(bind_virq(&dom, virq::TIMER, 1).is_ok());
        crate::domain::destroy(&dom);
    }

    #[test]
    fn foreign_domains_in_alloc_unbound_and_status() {
        let dom = testing::domain(1, 4);
        let other = testing::domain(1, 4);
        put(&dom, ARG, &EvtchnAllocUnbound { dom: NO_SUCH_DOMAIN, remote_dom: 0, port: 0 });
        assert_eq!(op(&dom, evtchnop::ALLOC_UNBOUND), ESRCH.negated());
        put(&dom, ARG, &EvtchnAllocUnbound { dom: other.id, remote_dom: 0, port: 0 });
        assert_eq!(op(&dom, evtchnop::ALLOC_UNBOUND), EPERM.negated());
        put(&dom, ARG, &EvtchnAllocUnbound { dom: dom.id, remote_dom: DOMID_SELF, port: 0 });
        assert_eq!(op(&dom, evtchnop::ALLOC_UNBOUND), 0);
        let port = get::<EvtchnAllocUnbound>(&dom, ARG).port;
        let s = status(&dom, port);
        assert_eq!((s.status, s.u[0]), (evtchnstat::UNBOUND, dom.id as u32), "DOMID_SELF is the caller");
        put(&dom, ARG, &EvtchnStatus { dom: NO_SUCH_DOMAIN, port, ..Default::default() });
        assert_eq!(op(&dom, evtchnop::STATUS), ESRCH.negated());
        put(&dom, ARG, &EvtchnStatus { dom: other.id, port, ..Default::default() });
        assert_eq!(op(&dom, evtchnop::STATUS), EPERM.negated());
        put(&dom, ARG, &EvtchnStatus { dom: DOMID_SELF, port: EVTCHN_2L_PORTS, ..Default::default() });
        assert_eq!(op(&dom, evtchnop::STATUS), EINVAL.negated());
        assert_eq!(status(&dom, 0).status, evtchnstat::CLOSED);
        assert_eq!(status(&dom, 3000).status, evtchnstat::CLOSED);
        assert_eq!(bind_interdomain(&dom, NO_SUCH_DOMAIN, 1), Err(ESRCH.negated()));
        // Sending on an unbound port is dropped without an error.
        assert_eq!(port_op(&dom, evtchnop::SEND, port), 0);
        crate::domain::destroy(&dom);
        crate::domain::destroy(&other);
    }

    /// Connect, notify both ways, close one end: the other goes back to waiting for the same domain.
    #[test]
    fn interdomain_connect_send_close() {
        let a = testing::domain(1, 4);
        let b = testing::domain(1, 4);
        let pa = alloc_unbound(&a, b.id);
        // Only the domain the port waits for may bind it.
        let c = testing::domain(1, 4);
        assert_eq!(bind_interdomain(&c, a.id, pa), Err(EINVAL.negated()));
        assert_eq!(bind_interdomain(&b, a.id, pa + 100), Err(EINVAL.negated()));
        let pb = bind_interdomain(&b, a.id, pa).unwrap();
        assert!(evtchn::is_pending(&b, pb), "Xen raises the new local port once");
        clear_pending(&b, pb);
        let (sa, sb) = (status(&a, pa), status(&b, pb));
        assert_eq!((sa.status, sa.u), (evtchnstat::INTERDOMAIN, [b.id as u32, pb]));
        assert_eq!((sb.status, sb.u), (evtchnstat::INTERDOMAIN, [a.id as u32, pa]));
        assert_eq!(port_op(&b, evtchnop::SEND, pb), 0);
        assert!(evtchn::is_pending(&a, pa));
        assert_eq!(port_op(&a, evtchnop::SEND, pa), 0);
        assert!(evtchn::is_pending(&b, pb));
        assert_eq!(port_op(&a, evtchnop::CLOSE, pa), 0);
        let sb = status(&b, pb);
        assert_eq!((sb.status, sb.u[0]), (evtchnstat::UNBOUND, a.id as u32));
        // The connection can be made again from the other side.
        let pa2 = bind_interdomain(&a, b.id, pb).unwrap();
        assert_eq!(status(&b, pb).u, [a.id as u32, pa2]);
        for d in [a, b, c] {
            crate::domain::destroy(&d);
        }
    }

    /// A domain may connect two of its own ports (one lock taken, not two).
    #[test]
    fn loopback_interdomain() {
        let d = testing::domain(1, 4);
        let p1 = alloc_unbound(&d, DOMID_SELF);
        let p2 = bind_interdomain(&d, DOMID_SELF, p1).unwrap();
        clear_pending(&d, p2);
        assert_eq!(port_op(&d, evtchnop::SEND, p2), 0);
        assert!(evtchn::is_pending(&d, p1));
        assert_eq!(port_op(&d, evtchnop::CLOSE, p1), 0);
        assert_eq!(status(&d, p2).status, evtchnstat::UNBOUND);
        crate::domain::destroy(&d);
    }

    /// Domain 0 under id 0, as the initial domain is (waits while another test holds the id).
    fn domain_zero() -> Arc<Domain> {
        let cfg = || crate::domain::DomainConfig {
            name: "Domain-0".into(),
            vcpus: 1,
            memory: 4 << 20,
            weight: crate::sched::DEFAULT_WEIGHT,
            cap: 0,
            expect_crash: false,
            limits: crate::domain::Limits::DEFAULT,
        };
        for _ in 0..1000 {
            if let Ok(d) = crate::domain::create_with_id(0, cfg(), &testing::support()) {
                return d;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("domain id 0 stayed in use");
    }

    /// dom0's store as on Xen (Linux's XS_LOCAL, then dom0's xenstored): the kernel allocates a port with
    /// alloc_unbound(DOMID_SELF, remote DOMID_SELF), xenstored binds it through /dev/xen/evtchn with
    /// bind_interdomain(remote_dom 0, that port), a loopback inside domain 0; notifications go both ways, and
    /// closing xenstored's end leaves the kernel's port waiting for domain 0 again (xenstored can restart). It also
    /// binds VIRQ_DOM_EXC.
    #[test]
    fn dom0_xs_local_loopback() {
        let d = domain_zero();
        put(&d, ARG, &EvtchnAllocUnbound { dom: DOMID_SELF, remote_dom: DOMID_SELF, port: 0 });
        assert_eq!(op(&d, evtchnop::ALLOC_UNBOUND), 0);
        let kernel = get::<EvtchnAllocUnbound>(&d, ARG).port;
        let s = status(&d, kernel);
        assert_eq!((s.status, s.u[0]), (evtchnstat::UNBOUND, 0), "waiting for domain 0 itself");
        let daemon = bind_interdomain(&d, 0, kernel).unwrap();
        assert_ne!(daemon, kernel);
        assert_eq!(status(&d, kernel).u, [0, daemon]);
        assert_eq!(status(&d, daemon).u, [0, kernel]);
        clear_pending(&d, daemon);
        // xenstored's first notification wakes the kernel's xenbus_probe thread.
        assert_eq!(port_op(&d, evtchnop::SEND, daemon), 0);
        assert!(evtchn::is_pending(&d, kernel));
        assert!(!evtchn::is_pending(&d, daemon));
        clear_pending(&d, kernel);
        assert_eq!(port_op(&d, evtchnop::SEND, kernel), 0);
        assert!(evtchn::is_pending(&d, daemon));
        assert!(!evtchn::is_pending(&d, kernel));
        let dom_exc = bind_virq(&d, virq::DOM_EXC, 0).unwrap();
        assert_eq!(status(&d, dom_exc).status, evtchnstat::VIRQ);
        // Only one end may connect: a second bind of the kernel's port fails.
        assert_eq!(bind_interdomain(&d, 0, kernel), Err(EINVAL.negated()));
        assert_eq!(port_op(&d, evtchnop::CLOSE, daemon), 0);
        let s = status(&d, kernel);
        assert_eq!((s.status, s.u[0]), (evtchnstat::UNBOUND, 0));
        let again = bind_interdomain(&d, 0, kernel).unwrap();
        assert_eq!(status(&d, kernel).u, [0, again]);
        crate::domain::destroy(&d);
    }

    /// Defect 6: a binding whose peer no longer points back (the peer port was closed and reused, here an IPI)
    /// neither raises nor takes over the reused port.
    #[test]
    fn stale_binding_never_touches_a_reused_port() {
        let a = testing::domain(1, 4);
        let b = testing::domain(1, 4);
        let reused = bind_ipi(&a);
        // What the unlocked bind used to leave behind: b's port still names a's port, which a has since reused.
        let stale = b.evtchn.lock().alloc(Binding::Interdomain { remote: a.id, remote_port: reused }, 0).unwrap();
        assert_eq!(port_op(&b, evtchnop::SEND, stale), 0);
        assert!(!evtchn::is_pending(&a, reused), "the stale binding raised the reused port");
        assert_eq!(port_op(&b, evtchnop::CLOSE, stale), 0);
        assert_eq!(status(&a, reused).status, evtchnstat::IPI, "the stale close rebound the reused port");
        crate::domain::destroy(&a);
        crate::domain::destroy(&b);
    }

    /// Defect 7 (SEND/CLOSE side): a peer being torn down is neither raised nor rebound.
    #[test]
    fn dying_peer_is_left_alone() {
        let a = testing::domain(1, 4);
        let b = testing::domain(1, 4);
        let pa = alloc_unbound(&a, b.id);
        let pb = bind_interdomain(&b, a.id, pa).unwrap();
        a.dying.store(true, core::sync::atomic::Ordering::Release);
        assert_eq!(port_op(&b, evtchnop::SEND, pb), 0, "Xen drops a notification to a peer that has gone");
        assert!(!evtchn::is_pending(&a, pa));
        assert_eq!(port_op(&b, evtchnop::CLOSE, pb), 0);
        assert_eq!(a.evtchn.lock().get(pa).unwrap().binding, Binding::Interdomain { remote: b.id, remote_port: pb });
        // A dying domain's unbound port cannot be connected to either.
        let b2 = alloc_unbound(&b, a.id);
        let pa2 = alloc_unbound(&a, b.id);
        assert_eq!(bind_interdomain(&b, a.id, pa2), Err(EINVAL.negated()));
        assert_eq!(status(&b, b2).status, evtchnstat::UNBOUND);
        a.dying.store(false, core::sync::atomic::Ordering::Release);
        crate::domain::destroy(&a);
        crate::domain::destroy(&b);
    }

    /// Defect 6: two vCPUs binding the same unbound port at the same time: exactly one succeeds, the other gets
    /// -EINVAL, and the winner's port is the one the remote end points at.
    #[test]
    fn racing_binds_of_one_port() {
        let a = testing::domain(1, 4);
        let b = testing::domain(2, 4);
        let args = [0x1000u64, 0x2000];
        for round in 0..300 {
            let pa = alloc_unbound(&a, b.id);
            let barrier = std::sync::Barrier::new(2);
            let results: alloc::vec::Vec<i64> = std::thread::scope(|s| {
                let hs: alloc::vec::Vec<_> = (0..2)
                    .map(|v| {
                        let (b, barrier) = (&b, &barrier);
                        put(
                            b,
                            args[v],
                            &EvtchnBindInterdomain { remote_dom: a.id, pad: 0, remote_port: pa, local_port: 0 },
                        );
                        s.spawn(move || {
                            barrier.wait();
                            op_at(b, v, evtchnop::BIND_INTERDOMAIN, args[v])
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let ok: alloc::vec::Vec<usize> = (0..2).filter(|&v| results[v] == 0).collect();
            assert_eq!(ok.len(), 1, "round {round}: {results:?}");
            assert_eq!(results[1 - ok[0]], EINVAL.negated());
            let won = get::<EvtchnBindInterdomain>(&b, args[ok[0]]).local_port;
            assert_eq!(status(&a, pa).u, [b.id as u32, won]);
            // Tidy up for the next round: closing b's end makes a's port wait again; close that too.
            assert_eq!(port_op(&b, evtchnop::CLOSE, won), 0);
            assert_eq!(port_op(&a, evtchnop::CLOSE, pa), 0);
        }
        crate::domain::destroy(&a);
        crate::domain::destroy(&b);
    }

    /// Two vCPUs binding the same VIRQ at once: one port, the other caller -EEXIST (the check used to be made
    /// outside the table lock, so both could allocate a port and one of them was leaked).
    #[test]
    fn racing_virq_binds() {
        let d = testing::domain(2, 4);
        let args = [0x1000u64, 0x2000];
        for round in 0..300 {
            let barrier = std::sync::Barrier::new(2);
            let results: alloc::vec::Vec<i64> = std::thread::scope(|s| {
                let hs: alloc::vec::Vec<_> = (0..2)
                    .map(|v| {
                        let (d, barrier) = (&d, &barrier);
                        put(d, args[v], &EvtchnBindVirq { virq: virq::CONSOLE, vcpu: 0, port: 0 });
                        s.spawn(move || {
                            barrier.wait();
                            op_at(d, v, evtchnop::BIND_VIRQ, args[v])
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let mut sorted = results.clone();
            sorted.sort();
            assert_eq!(sorted, [EEXIST.negated(), 0], "round {round}");
            let won = get::<EvtchnBindVirq>(&d, args[results.iter().position(|&r| r == 0).unwrap()]).port;
            assert_eq!(status(&d, won + 1).status, evtchnstat::CLOSED, "round {round}: a second port was allocated");
            assert_eq!(port_op(&d, evtchnop::CLOSE, won), 0);
        }
        crate::domain::destroy(&d);
    }
}
