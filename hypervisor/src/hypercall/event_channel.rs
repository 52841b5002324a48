//! `event_channel_op`: binding, sending, unmasking and closing 2-level event channels within a domain.

use super::{Action, Ctx, HResult};
use crate::domain::evtchn::{self, Binding};
use core::sync::atomic::Ordering;
use keel_abi::hypercall::errno::*;
use keel_abi::shared_info::{
    evtchnop, virq, EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindIpi, EvtchnBindVcpu, EvtchnBindVirq,
    EvtchnStatus,
};

pub fn event_channel_op(c: &mut Ctx) -> HResult {
    let (cmd, arg) = (c.args[0], c.args[1]);
    match cmd {
        evtchnop::BIND_VIRQ => {
            let mut b: EvtchnBindVirq = c.read(arg)?;
            if b.virq >= virq::NR {
                return Err(EINVAL);
            }
            let v = c.dom.vcpus.get(b.vcpu as usize).ok_or(ENOENT)?;
            if v.virq_ports[b.virq as usize].load(Ordering::Acquire) != 0 {
                return Err(EEXIST);
            }
            let port = c.dom.evtchn.lock().alloc(Binding::Virq(b.virq), b.vcpu)?;
            v.virq_ports[b.virq as usize].store(port, Ordering::Release);
            b.port = port;
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
                // The console port of the initial domain: Keel itself is the backend.
                Binding::Interdomain { remote: keel_abi::DOMID_XEN, remote_port } => {
                    crate::backend::kick(c.dom, remote_port)
                }
                Binding::Interdomain { remote, remote_port } => {
                    if let Some(r) = crate::domain::get(remote) {
                        evtchn::set_pending(&r, remote_port);
                    }
                }
                Binding::Virq(_) | Binding::Unbound { .. } => {}
                Binding::Free => return Err(EINVAL),
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
            let p = c.dom.evtchn.lock().close(port)?;
            if let Binding::Interdomain { remote, remote_port } = p.binding {
                // The other end goes back to waiting for a connection from us.
                if let Some(r) = crate::domain::get(remote) {
                    let _ = r.evtchn.lock().rebind(remote_port, Binding::Unbound { remote: c.dom.id });
                }
            }
            if let Binding::Virq(n) = p.binding {
                if let Some(v) = c.dom.vcpus.get(p.vcpu as usize) {
                    let _ = v.virq_ports[n as usize].compare_exchange(port, 0, Ordering::AcqRel, Ordering::Relaxed);
                }
            }
            Ok(Action::Return(0))
        }
        evtchnop::ALLOC_UNBOUND => {
            let mut a: EvtchnAllocUnbound = c.read(arg)?;
            if a.dom != keel_abi::DOMID_SELF && a.dom != c.dom.id {
                return Err(EPERM);
            }
            let remote = if a.remote_dom == keel_abi::DOMID_SELF { c.dom.id } else { a.remote_dom };
            a.port = c.dom.evtchn.lock().alloc(Binding::Unbound { remote }, 0)?;
            c.write(arg, &a)?;
            Ok(Action::Return(0))
        }
        evtchnop::BIND_INTERDOMAIN => {
            let mut b: EvtchnBindInterdomain = c.read(arg)?;
            let remote_id = if b.remote_dom == keel_abi::DOMID_SELF { c.dom.id } else { b.remote_dom };
            let remote = crate::domain::get(remote_id).ok_or(ESRCH)?;
            // The remote port must be waiting for us.
            let rp = remote.evtchn.lock().get(b.remote_port)?;
            if rp.binding != (Binding::Unbound { remote: c.dom.id }) {
                return Err(EINVAL);
            }
            let local =
                c.dom.evtchn.lock().alloc(Binding::Interdomain { remote: remote_id, remote_port: b.remote_port }, 0)?;
            remote
                .evtchn
                .lock()
                .rebind(b.remote_port, Binding::Interdomain { remote: c.dom.id, remote_port: local })?;
            b.local_port = local;
            c.write(arg, &b)?;
            // Xen raises the local port once so that both ends notice the connection.
            evtchn::set_pending(c.dom, local);
            Ok(Action::Return(0))
        }
        evtchnop::STATUS => {
            let mut s: EvtchnStatus = c.read(arg)?;
            if s.dom != keel_abi::DOMID_SELF && s.dom != c.dom.id {
                return Err(ESRCH);
            }
            let (status, vcpu, u) = c.dom.evtchn.lock().status(s.port);
            s.status = status;
            s.vcpu = vcpu;
            s.u = u;
            c.write(arg, &s)?;
            Ok(Action::Return(0))
        }
        _ => Err(ENOSYS),
    }
}

#[cfg(test)]
mod tests {
    use crate::testing::{self, get, put};
    use keel_abi::hypercall::{errno::*, nr};
    use keel_abi::shared_info::{evtchnop, EvtchnAllocUnbound, EvtchnBindIpi, EVTCHN_2L_PORTS};

    const ARG: u64 = 0x1000;

    fn op(dom: &alloc::sync::Arc<crate::domain::Domain>, cmd: u64) -> i64 {
        testing::hypercall(dom, 0, nr::EVENT_CHANNEL_OP, [cmd, ARG, 0, 0, 0])
    }

    /// Errors on a bad port come back negative, with Xen's values (they used to be +22 and +28).
    #[test]
    fn port_errors_are_negative_xen_errnos() {
        let dom = testing::domain(1, 4);
        for cmd in [evtchnop::SEND, evtchnop::UNMASK, evtchnop::CLOSE] {
            put(&dom, ARG, &12345u32);
            assert_eq!(op(&dom, cmd), EINVAL.negated(), "cmd {cmd}, port 12345");
            put(&dom, ARG, &0u32);
            assert_eq!(op(&dom, cmd), EINVAL.negated(), "cmd {cmd}, port 0");
        }
        put(&dom, ARG, &keel_abi::shared_info::EvtchnBindVcpu { port: 77, vcpu: 0 });
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
}
