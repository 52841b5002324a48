//! dom0's console, as Xen gives its hardware domain: dom0 writes with `console_io` straight to the machine's
//! console (see `hypercall/console.rs`), and serial input switched to dom0 is queued in Keel's console and
//! announced with `VIRQ_CONSOLE` on dom0's vCPU 0, where Linux's hvc driver reads it with `CONSOLEIO_read`.

use crate::domain;
use alloc::string::String;
use keel_abi::shared_info::virq;

/// Queues serial input for the initial domain and raises its `VIRQ_CONSOLE`.
pub fn input(bytes: &[u8]) {
    let Some(dom) = domain::get(0) else { return };
    if dom.is_finished() {
        return;
    }
    let taken = crate::console::push_input(bytes);
    if taken < bytes.len() {
        crate::debug!("dom0 console: {} bytes of input dropped (dom0 is not reading)", bytes.len() - taken);
    }
    if let Some(v0) = dom.vcpus.first() {
        domain::evtchn::send_virq(&dom, v0, virq::CONSOLE);
    }
}

/// The console's state, for the debug keys.
pub(crate) fn describe() -> Option<String> {
    let dom = domain::get(0)?;
    let port = dom.vcpus.first()?.virq_ports[virq::CONSOLE as usize].load(core::sync::atomic::Ordering::Relaxed);
    Some(alloc::format!("dom0 console: VIRQ_CONSOLE on port {port}"))
}
