//! Test mode (`xtf` on the command line): every boot module is a tiny test guest in the spirit of Xen's XTF.
//! Keel builds one PVH domain per module, runs them all, reports each guest's `Test result:` line, and when
//! all are gone powers off (all passed) or exits QEMU through isa-debug-exit with a failure status.

use crate::bootinfo::Module;
use crate::domain::{self, Domain, DomainConfig, DomainState};
use crate::hvm::Support;
use crate::loader;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU32, Ordering};

/// A test guest's module string, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestSpec {
    /// Domain config.
    pub config: DomainConfig,
    /// The guest's own command line (in its `hvm_start_info`): the `guest.<key>=<value>` settings, as
    /// `<key>=<value>`, space-separated.
    pub guest_cmdline: String,
    /// `corrupt=guest-state`: vCPU 0's first entry fails its consistency checks (how Keel reports and contains
    /// an entry failure is then under test).
    pub corrupt_guest_state: bool,
}

/// Parses `name=<n> [vcpus=<n>] [memory=<MiB>] [weight=<w>] [cap=<pct>] [expect=crash] [corrupt=guest-state]
/// [guest.<key>=<value>...]`.
pub fn parse_spec(s: &str) -> Result<GuestSpec, String> {
    let mut guest_cmdline = String::new();
    let mut corrupt_guest_state = false;
    let mut cfg = DomainConfig {
        name: String::new(),
        vcpus: 1,
        memory: 32 << 20,
        weight: crate::sched::DEFAULT_WEIGHT,
        cap: 0,
        expect_crash: false,
        // Test guests are built by Keel, not the toolstack: Xen's defaults, as for dom0.
        limits: crate::domain::Limits::DEFAULT,
    };
    for word in s.split_ascii_whitespace() {
        let (k, v) = word.split_once('=').ok_or_else(|| format!("'{word}' is not key=value"))?;
        let num = |v: &str| v.parse::<u32>().map_err(|_| format!("'{word}': not a number"));
        match k {
            "name" => cfg.name = v.to_string(),
            "vcpus" => cfg.vcpus = num(v)?,
            "memory" => cfg.memory = num(v)? as u64 * (1 << 20),
            "weight" => cfg.weight = num(v)?.clamp(1, 65535),
            "cap" => cfg.cap = num(v)?,
            "expect" if v == "crash" => cfg.expect_crash = true,
            "corrupt" if v == "guest-state" => corrupt_guest_state = true,
            _ if k.starts_with("guest.") && k.len() > "guest.".len() => {
                if !guest_cmdline.is_empty() {
                    guest_cmdline.push(' ');
                }
                guest_cmdline.push_str(&word["guest.".len()..]);
            }
            _ => return Err(format!("unknown setting '{word}'")),
        }
    }
    if cfg.name.is_empty() {
        return Err("a test guest needs name=<name>".into());
    }
    Ok(GuestSpec { config: cfg, guest_cmdline, corrupt_guest_state })
}

static REMAINING: AtomicU32 = AtomicU32::new(0);
static PASSED: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);
static TOTAL: AtomicU32 = AtomicU32::new(0);

/// Where the start_info block goes in a test guest.
const START_INFO_GPA: u64 = 0x9000;

/// A test guest built and loaded, its vCPUs not started yet.
struct Built {
    dom: Arc<Domain>,
    entry: u32,
    start_info: u32,
    corrupt_guest_state: bool,
}

fn build(m: &Module, support: &Support) -> Result<Built, String> {
    let spec = parse_spec(&m.cmdline).map_err(|e| format!("module \"{}\": {e}", m.cmdline))?;
    // SAFETY: module memory is identity-mapped and reserved from the allocator for Keel's whole life.
    let image = unsafe { core::slice::from_raw_parts(m.start as *const u8, m.size() as usize) };
    let name = spec.config.name.clone();
    let memory = spec.config.memory;
    let dom = domain::create(spec.config, support).map_err(|e| format!("{name}: {}", e.0))?;
    let setup = || -> Result<(u32, u32), String> {
        let mem = dom.mem.lock();
        let entry = loader::load_pvh(&mem, image).map_err(|e| e.0)?;
        let map = loader::memory_map(memory, START_INFO_GPA);
        *dom.memmap.lock() = map.clone();
        let si =
            loader::write_start_info(&mem, START_INFO_GPA, 0, &spec.guest_cmdline, &[], &map, 0).map_err(|e| e.0)?;
        Ok((entry, si))
    };
    match setup() {
        Ok((entry, start_info)) => Ok(Built { dom, entry, start_info, corrupt_guest_state: spec.corrupt_guest_state }),
        Err(e) => {
            let msg = format!("{name}: {e}");
            dom.crash(&msg);
            let _ = domain::destroy(&dom);
            Err(msg)
        }
    }
}

/// Creates every test guest. Returns how many started.
pub fn start(modules: &[Module], support: &Support) -> usize {
    crate::run::on_domain_end(domain_ended);
    TOTAL.store(modules.len() as u32, Ordering::Relaxed);
    REMAINING.store(modules.len() as u32, Ordering::Relaxed);
    // Every guest is built before any vCPU starts: building is slow (under Bochs, seconds per guest), and a vCPU
    // queued on this CPU while it builds would wait for it, so an early guest's vCPUs would not run together.
    let mut built = alloc::vec::Vec::new();
    for m in modules {
        match build(m, support) {
            Ok(b) => built.push(b),
            Err(e) => {
                crate::error!("xtf: cannot build test guest: {e}");
                FAILED.fetch_add(1, Ordering::Relaxed);
                finish_one();
            }
        }
    }
    let mut started = 0;
    for b in built {
        let d = &b.dom;
        let init = crate::hvm::InitState::Pvh { entry: b.entry, start_info: b.start_info };
        if let Some((i, e)) = d
            .vcpus
            .iter()
            .enumerate()
            .find_map(|(i, v)| domain::start_vcpu(v, support, init.clone()).err().map(|e| (i, e)))
        {
            let msg = format!("{}: {}", d.name, e.0);
            crate::error!("xtf: cannot start test guest: {msg}");
            d.crash(&msg);
            if i == 0 {
                // Nothing of it runs, so nothing will reap it: count it here.
                let _ = domain::destroy(d);
                FAILED.fetch_add(1, Ordering::Relaxed);
                finish_one();
            }
            continue;
        }
        if b.corrupt_guest_state {
            if let Some(hw) = d.vcpus[0].hw.lock().as_mut() {
                hw.corrupt_for_test();
            }
        }
        crate::info!("xtf: started d{} ({}) with {} vCPUs", d.id, d.name, d.vcpus.len());
        started += 1;
    }
    if modules.is_empty() {
        crate::error!("xtf: no test guests given as boot modules");
        finish_one();
    }
    started
}

fn domain_ended(d: &Arc<Domain>) {
    let result = d.test_result.lock().clone();
    let (word, pass) = match d.state() {
        DomainState::Crashed(_) => ("CRASHED".to_string(), d.config.expect_crash),
        _ => match result {
            Some(r) => {
                let pass = (r == "SUCCESS" || r == "SKIP") && !d.config.expect_crash;
                (r, pass)
            }
            None => ("NO RESULT".to_string(), false),
        },
    };
    crate::info!("xtf: {}: {}", d.name, word);
    if pass {
        PASSED.fetch_add(1, Ordering::Relaxed);
    } else {
        FAILED.fetch_add(1, Ordering::Relaxed);
    }
    finish_one();
}

fn finish_one() {
    if REMAINING.fetch_sub(1, Ordering::AcqRel) > 1 {
        return;
    }
    let (t, p, f) = (TOTAL.load(Ordering::Relaxed), PASSED.load(Ordering::Relaxed), FAILED.load(Ordering::Relaxed));
    crate::info!("xtf: {t} guests, {p} passed, {f} failed");
    crate::info!("Memory: {} MiB free after the test guests", (crate::mm::free_frames() * 4096) >> 20);
    if f == 0 && t > 0 {
        crate::arch::x86::power::power_off();
    }
    crate::arch::x86::power::debug_exit(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_strings() {
        let s = parse_spec("name=spin vcpus=2 memory=16 weight=512 cap=25").unwrap();
        assert_eq!(s.config.name, "spin");
        assert_eq!((s.config.vcpus, s.config.memory, s.config.weight, s.config.cap), (2, 16 << 20, 512, 25));
        assert!(parse_spec("name=t expect=crash").unwrap().config.expect_crash);
        assert!(parse_spec("vcpus=2").unwrap_err().contains("name="));
        assert!(parse_spec("name=x vcpus=two").unwrap_err().contains("not a number"));
        assert!(parse_spec("name=x colour=red").unwrap_err().contains("unknown"));
        assert!(parse_spec("name=x guest.=1").unwrap_err().contains("unknown"));
        let g = parse_spec("name=h guest.calls=2000 vcpus=1 guest.seed=7").unwrap();
        assert_eq!(g.guest_cmdline, "calls=2000 seed=7");
        assert_eq!(parse_spec("name=h").unwrap().guest_cmdline, "");
        assert!(parse_spec("name=h corrupt=guest-state").unwrap().corrupt_guest_state);
        assert!(parse_spec("name=h corrupt=rip").is_err());
    }
}
