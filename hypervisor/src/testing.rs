//! Host unit-test support: domains whose RAM and nested page tables are host memory (`mm::host_frames`), and
//! hypercalls made through the real dispatcher ([`crate::hypercall::call`]), so handlers' checks, errors and side
//! effects are tested without an emulator.

use crate::domain::{self, Domain, DomainConfig};
use crate::hvm::{PagingState, Support};
use alloc::sync::Arc;
use keel_abi::Pod;

/// An SVM machine with nested paging (the capabilities a domain needs).
pub fn support() -> Support {
    crate::hvm::test_machine()
}

/// A running domain with `vcpus` vCPUs (offline: no hardware context) and `mib` MiB of RAM.
pub fn domain(vcpus: u32, mib: u64) -> Arc<Domain> {
    domain_with_limits(vcpus, mib, crate::domain::Limits::DEFAULT)
}

/// [`domain`], with the event-channel and grant limits a toolstack could give it.
pub fn domain_with_limits(vcpus: u32, mib: u64, limits: crate::domain::Limits) -> Arc<Domain> {
    let cfg = DomainConfig {
        name: "test".into(),
        vcpus,
        memory: mib << 20,
        weight: crate::sched::DEFAULT_WEIGHT,
        cap: 0,
        expect_crash: false,
        limits,
    };
    domain::create(cfg, &support()).expect("a test domain")
}

/// Paging off: guest-linear addresses are guest-physical.
pub fn flat() -> PagingState {
    PagingState::default()
}

/// Hypercall `nr` from vCPU `vcpu` of `dom` with paging off; the value RAX gets, as a signed number.
pub fn hypercall(dom: &Arc<Domain>, vcpu: usize, nr: u64, args: [u64; 5]) -> i64 {
    crate::hypercall::call(dom, &dom.vcpus[vcpu], flat(), nr, args).0 as i64
}

/// Writes a value into the domain's RAM at `gpa`.
pub fn put<T: Pod>(dom: &Domain, gpa: u64, v: &T) {
    dom.mem.lock().write_val(gpa, v).expect("test write into guest RAM");
}

/// Reads a value from the domain's RAM at `gpa`.
pub fn get<T: Pod>(dom: &Domain, gpa: u64) -> T {
    dom.mem.lock().read_val(gpa).expect("test read of guest RAM")
}
