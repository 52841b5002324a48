//! The per-domain watcher: what happens when a guest shuts down (xl's job of applying a config's `on_poweroff`,
//! `on_reboot`, `on_crash`; tools/xl/xl_vmcontrol.c's `handle_domain_death`).
//!
//! [`decide`] is the pure rule: the shutdown reason (from getdomaininfo's flags) picks the config's action; the
//! coredump actions dump to `/var/lib/xen/dump/<name>` first and then act as destroy/restart; `preserve` keeps
//! the domain; `rename-restart` keeps it renamed `<name>-<YYYYmmddTHHMM>Z` and starts a new one; a suspend is
//! left alone; an unknown reason destroys. [`handle_shutdown`] carries a plan out through the lifecycle traits and
//! a [`Builder`] (the domain builder, which creates a domain from its config), and [`watch`] is the loop around it
//! that follows one domain (and its restarts) until nothing is left to watch. `xm create`'s detached monitor
//! ([`super::monitor`]) runs that loop for every domain it starts.

use std::path::PathBuf;

use keel_abi::domctl::{dominf, GetDomainInfo};
use keel_config::{Action, DomainConfig};

use super::lifecycle::Ctx;
use super::XmError;
use crate::domain::{DomainId, DomainRef};

/// Where the coredump actions write (xl's `XEN_DUMP_DIR`).
pub const DUMP_DIR: &str = "/var/lib/xen/dump";

/// Why a domain shut down (`SHUTDOWN_*`, in bits 16-23 of getdomaininfo's flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Poweroff,
    Reboot,
    Suspend,
    Crash,
    Watchdog,
    SoftReset,
    /// A code Xen does not define.
    Unknown(u32),
}

impl Reason {
    /// The reason for `code`.
    pub fn from_code(code: u32) -> Reason {
        match code {
            0 => Reason::Poweroff,
            1 => Reason::Reboot,
            2 => Reason::Suspend,
            3 => Reason::Crash,
            4 => Reason::Watchdog,
            5 => Reason::SoftReset,
            c => Reason::Unknown(c),
        }
    }

    /// The reason's `SHUTDOWN_*` code.
    pub fn code(self) -> u32 {
        match self {
            Reason::Poweroff => 0,
            Reason::Reboot => 1,
            Reason::Suspend => 2,
            Reason::Crash => 3,
            Reason::Watchdog => 4,
            Reason::SoftReset => 5,
            Reason::Unknown(c) => c,
        }
    }

    /// The reason a domain has shut down for, `None` while it has not.
    pub fn of(info: &GetDomainInfo) -> Option<Reason> {
        (info.flags & dominf::SHUTDOWN != 0)
            .then(|| Reason::from_code((info.flags >> dominf::SHUTDOWN_SHIFT) & dominf::SHUTDOWN_MASK))
    }
}

/// What to do with a domain that has shut down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Then {
    /// Nothing (a suspended domain waits for its saver or resumer).
    Nothing,
    /// Keep it as it is.
    Preserve,
    /// Destroy it.
    Destroy,
    /// Destroy it and create a new one from the same config.
    Restart,
    /// Keep it, renamed `<name><suffix>`, and create a new one from the same config.
    RenameRestart,
    /// A soft reset (not supported by Keel's builder: the domain is left as it is).
    SoftReset,
}

/// A plan: an optional core dump first, then the action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The shutdown reason's action, as the config names it (for the log).
    pub action: &'static str,
    /// Dump the core to this file first.
    pub coredump: Option<PathBuf>,
    pub then: Then,
}

/// The rule: `config`'s action for `reason`.
pub fn decide(config: &DomainConfig, reason: Reason) -> Plan {
    let action = match reason {
        Reason::Poweroff => config.on_poweroff,
        Reason::Reboot => config.on_reboot,
        Reason::Crash => config.on_crash,
        // xl's on_watchdog, which Keel's configs do not set: its default.
        Reason::Watchdog | Reason::Unknown(_) => Action::Destroy,
        Reason::Suspend => return Plan { action: "none", coredump: None, then: Then::Nothing },
        Reason::SoftReset => return Plan { action: "soft-reset", coredump: None, then: Then::SoftReset },
    };
    let dump = || Some(PathBuf::from(DUMP_DIR).join(&config.name));
    let (coredump, then) = match action {
        Action::Destroy => (None, Then::Destroy),
        Action::Restart => (None, Then::Restart),
        Action::Preserve => (None, Then::Preserve),
        Action::RenameRestart => (None, Then::RenameRestart),
        Action::CoredumpDestroy => (dump(), Then::Destroy),
        Action::CoredumpRestart => (dump(), Then::Restart),
    };
    Plan { action: action.as_str(), coredump, then }
}

/// The suffix a preserved domain's name gets: `-YYYYmmddTHHMMZ`, UTC, from seconds since the epoch (as xl).
pub fn preserve_suffix(unix_secs: u64) -> String {
    let days = unix_secs / 86400;
    let secs = unix_secs % 86400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("-{year:04}{month:02}{day:02}T{:02}{:02}Z", secs / 3600, secs / 60 % 60)
}

/// Creates domains from their configs (the domain builder).
pub trait Builder {
    /// Creates and starts a domain from `config`; its new id.
    fn create(&mut self, config: &DomainConfig) -> Result<u16, XmError>;
    /// Writes domain `domid`'s core to `path`.
    fn dump_core(&mut self, domid: u16, path: &std::path::Path) -> Result<(), XmError>;
}

/// What became of the domain after its shutdown was handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Left as it is (suspended, preserved, soft reset): no longer watched.
    Left,
    /// Destroyed.
    Destroyed,
    /// Replaced by a new domain with this id (which the watcher now follows).
    Restarted(u16),
}

/// Carries out `decide(config, reason)` for domain `domid`; the log lines (xl's) go to `log`.
pub fn handle_shutdown(
    ctx: &mut Ctx,
    builder: &mut dyn Builder,
    domid: u16,
    config: &DomainConfig,
    reason: Reason,
    now_secs: u64,
    log: &mut dyn FnMut(String),
) -> Result<Outcome, XmError> {
    let plan = decide(config, reason);
    if let Reason::Unknown(c) = reason {
        log(format!("Unknown shutdown reason code {c}. Destroying domain."));
    }
    if plan.then == Then::Nothing {
        log("Domain has suspended.".into());
        return Ok(Outcome::Left);
    }
    log(format!("Action for shutdown reason code {} is {}", reason.code(), plan.action));
    if let Some(path) = &plan.coredump {
        log(format!("dumping core to {}", path.display()));
        // As xl: a failed dump is logged and the action goes on.
        if let Err(e) = builder.dump_core(domid, path) {
            log(format!("core dump failed ({e})."));
        }
    }
    let target = DomainRef::Id(DomainId::try_from(u32::from(domid)).map_err(|e| XmError::Failed(e.to_string()))?);
    match plan.then {
        Then::Nothing | Then::Preserve | Then::SoftReset => Ok(Outcome::Left),
        Then::Destroy | Then::Restart => {
            log(format!("Domain {domid} needs to be cleaned up: destroying the domain"));
            // `xm destroy`'s path: the domain and its xenstore nodes (/local/domain/<id>, /vm/<uuid>), as libxl.
            ctx.destroy(&target)?;
            if plan.then == Then::Destroy {
                return Ok(Outcome::Destroyed);
            }
            Ok(Outcome::Restarted(builder.create(config)?))
        }
        Then::RenameRestart => {
            let suffix = preserve_suffix(now_secs);
            log(format!("Preserving domain {domid} {} with suffix{suffix}", config.name));
            ctx.rename(&target, &format!("{}{suffix}", config.name))?;
            Ok(Outcome::Restarted(builder.create(config)?))
        }
    }
}

/// Follows domain `domid` (created from `config`): waits for it to shut down, handles that, and follows its
/// replacement after a restart, until it is destroyed, left, or gone.
pub fn watch(
    ctx: &mut Ctx,
    builder: &mut dyn Builder,
    mut domid: u16,
    config: &DomainConfig,
    now: &mut dyn FnMut() -> u64,
    log: &mut dyn FnMut(String),
) -> Result<Outcome, XmError> {
    loop {
        let Some(info) = ctx.hv.domain_info(domid)? else { return Ok(Outcome::Destroyed) };
        if let Some(reason) = Reason::of(&info) {
            log(format!("Domain {domid} has shut down, reason code {} 0x{:x}", reason.code(), info.flags));
            match handle_shutdown(ctx, builder, domid, config, reason, now(), log)? {
                Outcome::Restarted(new) => domid = new,
                done => return Ok(done),
            }
        } else if info.flags & dominf::DYING != 0 {
            return Ok(Outcome::Destroyed);
        } else {
            ctx.hv.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::lifecycle::tests::{FakeHv, MemStore};
    use super::super::lifecycle::{Hypervisor, Xenstore};
    use super::*;

    fn config(on_poweroff: Action, on_reboot: Action, on_crash: Action) -> DomainConfig {
        let text = format!(
            "name = \"web\"\nkernel = \"/boot/vmlinuz\"\nmemory = 128\non_poweroff = \"{}\"\non_reboot = \"{}\"\n\
             on_crash = \"{}\"\n",
            on_poweroff.as_str(),
            on_reboot.as_str(),
            on_crash.as_str()
        );
        keel_config::from_text("web.cfg", &text, &[]).unwrap().config
    }

    #[test]
    fn each_reason_takes_its_action() {
        let c = config(Action::Preserve, Action::RenameRestart, Action::CoredumpRestart);
        assert_eq!(decide(&c, Reason::Poweroff).then, Then::Preserve);
        assert_eq!(decide(&c, Reason::Reboot).then, Then::RenameRestart);
        let crash = decide(&c, Reason::Crash);
        assert_eq!(
            crash,
            Plan {
                action: "coredump-restart",
                coredump: Some(PathBuf::from("/var/lib/xen/dump/web")),
                then: Then::Restart
            }
        );
        assert_eq!(decide(&c, Reason::Suspend).then, Then::Nothing);
        assert_eq!(decide(&c, Reason::Watchdog).then, Then::Destroy);
        assert_eq!(decide(&c, Reason::Unknown(9)).then, Then::Destroy);
        assert_eq!(decide(&c, Reason::SoftReset).then, Then::SoftReset);
        let d = config(Action::Destroy, Action::Restart, Action::CoredumpDestroy);
        assert_eq!(decide(&d, Reason::Poweroff), Plan { action: "destroy", coredump: None, then: Then::Destroy });
        assert_eq!(decide(&d, Reason::Reboot).then, Then::Restart);
        assert_eq!(decide(&d, Reason::Crash).then, Then::Destroy);
        assert!(decide(&d, Reason::Crash).coredump.is_some());
    }

    #[test]
    fn reasons_come_from_the_flags() {
        let info = |flags| GetDomainInfo { flags, ..Default::default() };
        assert_eq!(Reason::of(&info(dominf::RUNNING)), None);
        assert_eq!(Reason::of(&info(dominf::SHUTDOWN | (3 << 16))), Some(Reason::Crash));
        assert_eq!(Reason::of(&info(dominf::SHUTDOWN)), Some(Reason::Poweroff));
        assert_eq!(Reason::of(&info(dominf::SHUTDOWN | (200 << 16))), Some(Reason::Unknown(200)));
        for code in 0..7 {
            assert_eq!(Reason::from_code(code).code(), code);
        }
    }

    #[test]
    fn the_preserve_suffix_is_utc_to_the_minute() {
        assert_eq!(preserve_suffix(0), "-19700101T0000Z");
        // 2026-12-03 23:27:45 UTC.
        assert_eq!(preserve_suffix(1_796_340_465), "-20261203T2327Z");
        // 2000-02-29 12:34 UTC (a leap day).
        assert_eq!(preserve_suffix(951_827_640), "-20000229T1234Z");
    }

    /// A builder that hands out ids from 10 up, and records dumps.
    #[derive(Default)]
    struct FakeBuilder {
        created: Vec<u16>,
        dumps: Vec<(u16, PathBuf)>,
    }

    impl Builder for FakeBuilder {
        fn create(&mut self, _config: &DomainConfig) -> Result<u16, XmError> {
            let id = 10 + self.created.len() as u16;
            self.created.push(id);
            Ok(id)
        }
        fn dump_core(&mut self, domid: u16, path: &std::path::Path) -> Result<(), XmError> {
            self.dumps.push((domid, path.to_owned()));
            Err(XmError::Failed("no memory source".into()))
        }
    }

    fn shut(hv: &mut FakeHv, domid: u16, code: u32) {
        hv.doms.get_mut(&domid).unwrap().flags = dominf::SHUTDOWN | (code << dominf::SHUTDOWN_SHIFT);
    }

    #[test]
    fn restart_destroys_and_creates_anew_coredump_first() {
        let mut hv = FakeHv::with(&[(0, 1), (3, 1)]);
        let mut xs = MemStore::new();
        let mut b = FakeBuilder::default();
        xs.write("/local/domain/3/name", "web").unwrap();
        xs.write("/local/domain/3/vm", "/vm/u-3").unwrap();
        xs.write("/vm/u-3/name", "web").unwrap();
        let c = config(Action::Destroy, Action::Restart, Action::CoredumpRestart);
        shut(&mut hv, 3, 3);
        let mut log = Vec::new();
        let out = handle_shutdown(&mut Ctx { hv: &mut hv, xs: &mut xs }, &mut b, 3, &c, Reason::Crash, 0, &mut |l| {
            log.push(l)
        })
        .unwrap();
        assert_eq!(out, Outcome::Restarted(10));
        assert_eq!(b.dumps, [(3, PathBuf::from("/var/lib/xen/dump/web"))]);
        assert_eq!(hv.calls, ["destroy 3"]);
        // Destroyed as `xm destroy` does: its xenstore nodes went with it (the new domain may take the name).
        for gone in ["/local/domain/3", "/vm/u-3"] {
            assert_eq!(xs.read(gone), None, "{gone}");
        }
        assert!(log.contains(&"core dump failed (failed: no memory source).".to_string()), "{log:?}");
        assert_eq!(log[0], "Action for shutdown reason code 3 is coredump-restart");
        assert!(log.contains(&"Domain 3 needs to be cleaned up: destroying the domain".to_string()), "{log:?}");
    }

    #[test]
    fn rename_restart_keeps_the_old_domain_under_a_dated_name() {
        let mut hv = FakeHv::with(&[(0, 1), (3, 1)]);
        let mut xs = MemStore::new();
        xs.write("/local/domain/3/name", "web").unwrap();
        let mut b = FakeBuilder::default();
        let c = config(Action::Destroy, Action::RenameRestart, Action::Destroy);
        let out = handle_shutdown(&mut Ctx { hv: &mut hv, xs: &mut xs }, &mut b, 3, &c, Reason::Reboot, 0, &mut |_| {})
            .unwrap();
        assert_eq!(out, Outcome::Restarted(10));
        assert!(hv.calls.is_empty(), "not destroyed: {:?}", hv.calls);
        assert_eq!(xs.read("/local/domain/3/name").as_deref(), Some("web-19700101T0000Z"));
    }

    #[test]
    fn preserve_and_suspend_leave_the_domain() {
        let mut hv = FakeHv::with(&[(0, 1), (3, 1)]);
        let mut xs = MemStore::new();
        let mut b = FakeBuilder::default();
        let c = config(Action::Preserve, Action::Restart, Action::Destroy);
        for reason in [Reason::Poweroff, Reason::Suspend] {
            let out =
                handle_shutdown(&mut Ctx { hv: &mut hv, xs: &mut xs }, &mut b, 3, &c, reason, 0, &mut |_| {}).unwrap();
            assert_eq!(out, Outcome::Left);
        }
        assert!(hv.calls.is_empty() && b.created.is_empty());
    }

    /// Domain 3 reboots (restart: it becomes 10), then 10 powers off (destroy): the watch ends.
    struct Scripted {
        hv: FakeHv,
    }

    impl Hypervisor for Scripted {
        fn domain_info(&mut self, domid: u16) -> Result<Option<GetDomainInfo>, XmError> {
            // The builder's new domain (10) is running once created.
            if domid == 10 && !self.hv.calls.iter().any(|c| c == "destroy 10") {
                let d = self.hv.doms.entry(10).or_default();
                d.domain = 10;
                if d.flags == 0 {
                    d.flags = dominf::RUNNING;
                }
            }
            self.hv.domain_info(domid)
        }
        crate::xm::lifecycle::pass_domctls_to!(hv);
        fn wait(&mut self) {
            self.hv.calls.push("wait".into());
            // The first wait reboots domain 3, the next powers off its replacement.
            if let Some(d) = self.hv.doms.get_mut(&3) {
                d.flags = dominf::SHUTDOWN | (1 << dominf::SHUTDOWN_SHIFT);
            } else if let Some(d) = self.hv.doms.get_mut(&10) {
                d.flags = dominf::SHUTDOWN;
            }
        }
    }

    #[test]
    fn the_watch_follows_a_restart_until_the_end() {
        let mut hv = Scripted { hv: FakeHv::with(&[(0, 1), (3, 1)]) };
        let mut xs = MemStore::new();
        let mut b = FakeBuilder::default();
        let c = config(Action::Destroy, Action::Restart, Action::Destroy);
        let mut log = Vec::new();
        let out = watch(&mut Ctx { hv: &mut hv, xs: &mut xs }, &mut b, 3, &c, &mut || 0, &mut |l| log.push(l)).unwrap();
        assert_eq!(out, Outcome::Destroyed);
        assert_eq!(b.created, [10]);
        let shut: Vec<_> = log.iter().filter(|l| l.contains("has shut down")).collect();
        assert_eq!(
            shut,
            ["Domain 3 has shut down, reason code 1 0x10004", "Domain 10 has shut down, reason code 0 0x4"]
        );
        assert_eq!(hv.hv.calls, ["wait", "destroy 3", "wait", "destroy 10"]);
    }
}
