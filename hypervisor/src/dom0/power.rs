//! The machine follows the initial domain: its power-off powers the machine off, its reboot or crash reboots it.

use crate::domain::{Domain, DomainState};
use alloc::sync::Arc;
use keel_abi::hypercall::ShutdownReason;

/// Run when a domain has been destroyed (registered with the run loop when dom0 is built).
pub fn domain_ended(d: &Arc<Domain>) {
    if d.id != 0 {
        return;
    }
    match d.state() {
        DomainState::Shutdown(ShutdownReason::Reboot) => crate::arch::x86::power::reboot(),
        DomainState::Crashed(_) => {
            crate::error!("Domain 0 crashed: rebooting machine");
            crate::arch::x86::power::reboot()
        }
        _ => {
            crate::arch::x86::power::power_off();
            crate::arch::x86::cpu::halt_forever()
        }
    }
}
