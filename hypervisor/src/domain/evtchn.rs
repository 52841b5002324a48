//! 2-level event channels: the per-domain port table, and raising an event (pending bit, selector bit,
//! upcall flag, kick).

use super::{pvclock, DomId, Domain, Vcpu};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use keel_abi::hypercall::errno::*;
use keel_abi::shared_info::{self as si, evtchnstat};
use spin::MutexGuard;

/// What a port is bound to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// Not in use.
    Free,
    /// Allocated, waiting for `remote` to bind.
    Unbound { remote: DomId },
    /// Connected to a port of another domain.
    Interdomain { remote: DomId, remote_port: u32 },
    /// A virtual IRQ.
    Virq(u32),
    /// An IPI between this domain's vCPUs.
    Ipi,
}

/// One port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    /// Binding.
    pub binding: Binding,
    /// vCPU notified.
    pub vcpu: u32,
}

/// Whether VIRQ `virq` is global (bound once, on vCPU 0, and movable with EVTCHNOP_bind_vcpu) rather than per
/// vCPU. As in Xen: TIMER, DEBUG, XENOPROF and XENPMU are per vCPU, every other VIRQ (the x86 arch ones too) is
/// global.
pub fn virq_is_global(virq: u32) -> bool {
    !matches!(virq, si::virq::TIMER | si::virq::DEBUG | si::virq::XENOPROF | si::virq::XENPMU)
}

/// A domain's ports (port 0 is never used).
pub struct Table {
    ports: Vec<Port>,
    /// The highest port that may be allocated (the domain's `max_evtchn_port`).
    max_port: u32,
}

impl Default for Table {
    fn default() -> Self {
        Self::new()
    }
}

impl Table {
    /// No ports bound, every port of the 2-level ABI allocatable.
    pub fn new() -> Self {
        Self::with_max_port(u32::MAX)
    }

    /// No ports bound; ports above `max_port` are never allocated (Xen's `max_evtchn_port`).
    pub fn with_max_port(max_port: u32) -> Self {
        Self { ports: alloc::vec![Port { binding: Binding::Free, vcpu: 0 }], max_port }
    }

    /// Whether `port` is a port number of the 2-level ABI (Xen's `port_is_valid`: an in-range number, bound or
    /// not).
    pub fn valid(port: u32) -> bool {
        port < si::EVTCHN_2L_PORTS
    }

    /// Allocates the lowest free port. -ENOSPC when none is free up to the domain's `max_evtchn_port` and the
    /// ABI's last port (Xen's get_free_port).
    pub fn alloc(&mut self, binding: Binding, vcpu: u32) -> Result<u32, Errno> {
        let last = self.max_port.min(si::EVTCHN_2L_PORTS - 1) as usize;
        if let Some(i) = self.ports.iter().take(last + 1).skip(1).position(|p| p.binding == Binding::Free) {
            self.ports[i + 1] = Port { binding, vcpu };
            return Ok(i as u32 + 1);
        }
        if self.ports.len() > last {
            return Err(ENOSPC);
        }
        self.ports.push(Port { binding, vcpu });
        Ok(self.ports.len() as u32 - 1)
    }

    /// The port, if it is in use.
    pub fn get(&self, port: u32) -> Result<Port, Errno> {
        match self.ports.get(port as usize) {
            Some(p) if port != 0 && p.binding != Binding::Free => Ok(*p),
            _ => Err(EINVAL),
        }
    }

    /// `EVTCHNOP_bind_vcpu`: changes a port's notified vCPU, where Xen allows it: unbound and interdomain ports
    /// and global VIRQs. Per-vCPU VIRQs and IPIs stay on their vCPU (-EINVAL), as does a free port.
    pub fn set_vcpu(&mut self, port: u32, vcpu: u32) -> Result<(), Errno> {
        let p = self.get(port)?;
        match p.binding {
            Binding::Virq(v) if virq_is_global(v) => {}
            Binding::Unbound { .. } | Binding::Interdomain { .. } => {}
            Binding::Virq(_) | Binding::Ipi | Binding::Free => return Err(EINVAL),
        }
        self.ports[port as usize].vcpu = vcpu;
        Ok(())
    }

    /// Changes what an in-use port is bound to.
    pub fn rebind(&mut self, port: u32, binding: Binding) -> Result<(), Errno> {
        self.get(port)?;
        self.ports[port as usize].binding = binding;
        Ok(())
    }

    /// The interdomain ports: (port, remote domain, remote port).
    pub fn interdomain(&self) -> alloc::vec::Vec<(u32, DomId, u32)> {
        let mut out = alloc::vec::Vec::new();
        for (i, p) in self.ports.iter().enumerate() {
            if let Binding::Interdomain { remote, remote_port } = p.binding {
                out.push((i as u32, remote, remote_port));
            }
        }
        out
    }

    /// Frees a port; returns what it was.
    pub fn close(&mut self, port: u32) -> Result<Port, Errno> {
        let p = self.get(port)?;
        self.ports[port as usize].binding = Binding::Free;
        Ok(p)
    }

    /// `EVTCHNOP_status` values, or -EINVAL for a port number outside the ABI's range.
    pub fn status(&self, port: u32) -> Result<(u32, u32, [u32; 2]), Errno> {
        if !Self::valid(port) {
            return Err(EINVAL);
        }
        Ok(match self.ports.get(port as usize) {
            None | Some(Port { binding: Binding::Free, .. }) => (evtchnstat::CLOSED, 0, [0; 2]),
            Some(p) if port == 0 => (evtchnstat::CLOSED, p.vcpu, [0; 2]),
            Some(p) => match p.binding {
                Binding::Unbound { remote } => (evtchnstat::UNBOUND, p.vcpu, [remote as u32, 0]),
                Binding::Interdomain { remote, remote_port } => {
                    (evtchnstat::INTERDOMAIN, p.vcpu, [remote as u32, remote_port])
                }
                Binding::Virq(v) => (evtchnstat::VIRQ, p.vcpu, [v, 0]),
                Binding::Ipi => (evtchnstat::IPI, p.vcpu, [0; 2]),
                Binding::Free => (evtchnstat::CLOSED, 0, [0; 2]),
            },
        })
    }
}

/// Two domains' port tables locked together, in a fixed order (the lower domain id first) so that two
/// operations on the same pair never deadlock; one lock when both are the same domain. Interdomain bindings
/// are only created, changed and torn down with both ends' tables held, so each end of a connected pair
/// always points at the other.
pub struct Pair<'a> {
    first: MutexGuard<'a, Table>,
    second: Option<MutexGuard<'a, Table>>,
    local_first: bool,
}

impl<'a> Pair<'a> {
    /// Locks `local`'s and `remote`'s tables.
    pub fn lock(local: &'a Domain, remote: &'a Domain) -> Self {
        if core::ptr::eq(local, remote) {
            return Self { first: local.evtchn.lock(), second: None, local_first: true };
        }
        let local_first = (local.id, local as *const Domain) < (remote.id, remote as *const Domain);
        let (a, b) = if local_first { (local, remote) } else { (remote, local) };
        let first = a.evtchn.lock();
        let second = Some(b.evtchn.lock());
        Self { first, second, local_first }
    }

    /// The calling domain's table.
    pub fn local(&mut self) -> &mut Table {
        match (&mut self.second, self.local_first) {
            (Some(s), false) => s,
            _ => &mut self.first,
        }
    }

    /// The other domain's table (the same one when the remote is the caller itself).
    pub fn remote(&mut self) -> &mut Table {
        match (&mut self.second, self.local_first) {
            (Some(s), true) => s,
            _ => &mut self.first,
        }
    }
}

fn word(dom: &Domain, offset: usize, idx: usize) -> &AtomicU64 {
    // SAFETY: shared_info is a page owned by the domain for its whole life; `offset + idx*8` is inside the
    // 512-byte pending or mask array (idx < 64), 8-byte aligned; guests update it atomically too.
    unsafe { &*(dom.shared_info_ptr().add(offset + idx * 8) as *const AtomicU64) }
}

/// Marks `port` pending and, unless masked, notifies its vCPU.
pub fn set_pending(dom: &Arc<Domain>, port: u32) {
    raise(dom, port, || dom.evtchn.lock().get(port).map(|p| p.vcpu).unwrap_or(0));
}

/// [`set_pending`] for a caller that already holds `dom`'s port table (`table`).
pub fn set_pending_locked(dom: &Arc<Domain>, table: &Table, port: u32) {
    raise(dom, port, || table.get(port).map(|p| p.vcpu).unwrap_or(0));
}

/// Sets the pending bit, wakes pollers, and notifies the vCPU `vcpu()` names unless the port is masked or was
/// already pending.
fn raise(dom: &Arc<Domain>, port: u32, vcpu: impl FnOnce() -> u32) {
    // A dying domain is reached only through a reference from before its destruction: leave its memory alone.
    if port >= si::EVTCHN_2L_PORTS || dom.dying.load(Ordering::Acquire) {
        return;
    }
    let (idx, bit) = ((port / 64) as usize, 1u64 << (port % 64));
    let was = word(dom, si::EVTCHN_PENDING_OFFSET, idx).fetch_or(bit, Ordering::SeqCst);
    // A vCPU blocked in SCHEDOP_poll on this port wakes up even when the port is masked (that is how PV
    // spinlocks wait).
    for v in &dom.vcpus {
        if v.polls(port) {
            v.stop_polling();
            crate::sched::kick(v);
        }
    }
    if was & bit != 0 || word(dom, si::EVTCHN_MASK_OFFSET, idx).load(Ordering::Acquire) & bit != 0 {
        return;
    }
    if let Some(v) = dom.vcpus.get(vcpu() as usize) {
        mark_upcall(dom, v, idx);
    }
}

/// Sets the selector bit and the upcall flag of `v`; kicks it if they were clear.
fn mark_upcall(dom: &Arc<Domain>, v: &Arc<Vcpu>, idx: usize) {
    let Some(info) = pvclock::vcpu_info_ptr(dom, v) else {
        // No vcpu_info yet (shared_info not mapped): the event stays pending in the bitmap.
        return;
    };
    // SAFETY: `info` points at this vCPU's vcpu_info (64 bytes, inside one guest frame owned by the domain);
    // its fields are updated with atomics as guests do.
    let (sel, pending) = unsafe {
        (
            &*(core::ptr::addr_of_mut!((*info).evtchn_pending_sel) as *const AtomicU64),
            &*(core::ptr::addr_of_mut!((*info).evtchn_upcall_pending) as *const AtomicU8),
        )
    };
    sel.fetch_or(1 << idx, Ordering::AcqRel);
    pending.store(1, Ordering::Release);
    crate::sched::kick(v);
}

/// Whether the vCPU has an upcall to take.
pub fn upcall_pending(dom: &Domain, v: &Vcpu) -> bool {
    match pvclock::vcpu_info_ptr(dom, v) {
        // SAFETY: as in `mark_upcall`.
        Some(info) => unsafe {
            (*(core::ptr::addr_of_mut!((*info).evtchn_upcall_pending) as *const AtomicU8)).load(Ordering::Acquire) != 0
        },
        None => false,
    }
}

/// `EVTCHNOP_unmask`: clears the mask bit and re-raises the event if it is pending. As in Xen, any port number
/// of the ABI's range may be unmasked, bound or not (-EINVAL only beyond it).
pub fn unmask(dom: &Arc<Domain>, port: u32) -> Result<(), Errno> {
    if !Table::valid(port) {
        return Err(EINVAL);
    }
    let (idx, bit) = ((port / 64) as usize, 1u64 << (port % 64));
    let was = word(dom, si::EVTCHN_MASK_OFFSET, idx).fetch_and(!bit, Ordering::AcqRel);
    if was & bit != 0 && word(dom, si::EVTCHN_PENDING_OFFSET, idx).load(Ordering::Acquire) & bit != 0 {
        let vcpu = dom.evtchn.lock().get(port).map(|p| p.vcpu).unwrap_or(0);
        if let Some(v) = dom.vcpus.get(vcpu as usize) {
            mark_upcall(dom, v, idx);
        }
    }
    Ok(())
}

/// The pending bits of ports `64 * idx .. 64 * idx + 64` (for SCHEDOP_poll).
pub fn pending_word(dom: &Domain, idx: usize) -> u64 {
    if idx < (si::EVTCHN_2L_PORTS / 64) as usize {
        word(dom, si::EVTCHN_PENDING_OFFSET, idx).load(Ordering::SeqCst)
    } else {
        0
    }
}

/// Clears `port`'s pending bit: a port that is freed keeps no event for whoever binds its number next (as Xen
/// clears it when it frees a port).
pub fn clear_pending(dom: &Domain, port: u32) {
    if port < si::EVTCHN_2L_PORTS {
        word(dom, si::EVTCHN_PENDING_OFFSET, (port / 64) as usize).fetch_and(!(1 << (port % 64)), Ordering::SeqCst);
    }
}

/// Masks every port: how a restored domain starts (`hypercall::domctl::hvmctx`). Its guest's masks stayed in
/// the shared_info page of the domain it was saved from, which is not carried over; Linux's resume rebinds its
/// ports and unmasks those it uses, and relies on the others (its PV spinlock kicker, which it only polls) staying
/// masked.
pub fn mask_all(dom: &Domain) {
    if dom.dying.load(Ordering::Acquire) {
        return;
    }
    for idx in 0..(si::EVTCHN_2L_PORTS / 64) as usize {
        word(dom, si::EVTCHN_MASK_OFFSET, idx).store(u64::MAX, Ordering::SeqCst);
    }
}

/// Whether `port` is masked.
pub fn is_masked(dom: &Domain, port: u32) -> bool {
    port < si::EVTCHN_2L_PORTS
        && word(dom, si::EVTCHN_MASK_OFFSET, (port / 64) as usize).load(Ordering::SeqCst) & (1 << (port % 64)) != 0
}

/// Whether `port` is pending (for SCHEDOP_poll).
pub fn is_pending(dom: &Domain, port: u32) -> bool {
    port < si::EVTCHN_2L_PORTS
        && word(dom, si::EVTCHN_PENDING_OFFSET, (port / 64) as usize).load(Ordering::SeqCst) & (1 << (port % 64)) != 0
}

/// Raises VIRQ `virq` on vCPU `v` if the guest bound it.
pub fn send_virq(dom: &Arc<Domain>, v: &Vcpu, virq: u32) {
    if let Some(p) = v.virq_ports.get(virq as usize) {
        let port = p.load(Ordering::Acquire);
        if port != 0 {
            set_pending(dom, port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_allocation_and_close() {
        let mut t = Table::new();
        assert_eq!(t.alloc(Binding::Virq(0), 0), Ok(1));
        assert_eq!(t.alloc(Binding::Ipi, 1), Ok(2));
        assert_eq!(t.get(0), Err(EINVAL));
        assert_eq!(t.close(1).unwrap().binding, Binding::Virq(0));
        assert_eq!(t.get(1), Err(EINVAL));
        assert_eq!(t.alloc(Binding::Unbound { remote: 0 }, 0), Ok(1));
        assert_eq!(t.status(2), Ok((evtchnstat::IPI, 1, [0, 0])));
        assert_eq!(t.status(99).unwrap().0, evtchnstat::CLOSED);
        assert_eq!(t.status(si::EVTCHN_2L_PORTS), Err(EINVAL));
        for _ in 3..si::EVTCHN_2L_PORTS {
            t.alloc(Binding::Ipi, 0).unwrap();
        }
        assert_eq!(t.alloc(Binding::Ipi, 0), Err(ENOSPC));
    }

    /// A domain's `max_evtchn_port` is the highest port it gets (Xen's get_free_port): -ENOSPC beyond, a freed port
    /// below it is reused; 0 leaves it none (port 0 is reserved).
    #[test]
    fn ports_stop_at_max_evtchn_port() {
        let mut t = Table::with_max_port(3);
        for want in 1..=3 {
            assert_eq!(t.alloc(Binding::Ipi, 0), Ok(want));
        }
        assert_eq!(t.alloc(Binding::Ipi, 0), Err(ENOSPC));
        assert_eq!(t.status(4).unwrap().0, evtchnstat::CLOSED, "a port beyond the limit is still a valid number");
        t.close(2).unwrap();
        assert_eq!(t.alloc(Binding::Unbound { remote: 0 }, 0), Ok(2));
        assert_eq!(t.alloc(Binding::Ipi, 0), Err(ENOSPC));
        assert_eq!(Table::with_max_port(0).alloc(Binding::Ipi, 0), Err(ENOSPC));
        // Above the 2-level ABI's ports, the ABI's limit holds.
        let mut t = Table::with_max_port(i32::MAX as u32);
        for _ in 1..si::EVTCHN_2L_PORTS {
            t.alloc(Binding::Ipi, 0).unwrap();
        }
        assert_eq!(t.alloc(Binding::Ipi, 0), Err(ENOSPC));
    }

    /// BIND_VCPU moves only what Xen lets move: unbound and interdomain ports and global VIRQs.
    #[test]
    fn bind_vcpu_follows_xen() {
        let mut t = Table::new();
        let timer = t.alloc(Binding::Virq(si::virq::TIMER), 0).unwrap();
        let console = t.alloc(Binding::Virq(si::virq::CONSOLE), 0).unwrap();
        let ipi = t.alloc(Binding::Ipi, 0).unwrap();
        let unbound = t.alloc(Binding::Unbound { remote: 0 }, 0).unwrap();
        let inter = t.alloc(Binding::Interdomain { remote: 0, remote_port: 1 }, 0).unwrap();
        assert_eq!(t.set_vcpu(timer, 1), Err(EINVAL), "VIRQ_TIMER is per vCPU");
        assert_eq!(t.set_vcpu(ipi, 1), Err(EINVAL));
        assert_eq!(t.set_vcpu(console, 1), Ok(()));
        assert_eq!(t.set_vcpu(unbound, 1), Ok(()));
        assert_eq!(t.set_vcpu(inter, 1), Ok(()));
        assert_eq!(t.get(timer).unwrap().vcpu, 0);
        assert_eq!(t.get(console).unwrap().vcpu, 1);
        assert!(!virq_is_global(si::virq::TIMER) && !virq_is_global(si::virq::DEBUG));
        assert!(virq_is_global(si::virq::CONSOLE) && virq_is_global(si::virq::DOM_EXC));
    }
}
