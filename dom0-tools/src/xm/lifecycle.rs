//! The domain lifecycle commands of `xm`: `destroy`, `pause`, `unpause`, `shutdown`, `reboot`, `sysrq`, `rename`,
//! `mem-set` and `vcpu-set`, with xl's semantics (tools/xl/xl_vmcontrol.c, xl_misc.c; libxl_domain.c, libxl_mem.c).
//!
//! Each command runs against two small traits: [`Hypervisor`] (the domctls: getdomaininfo, destroy, pause, unpause,
//! max_mem) and [`Xenstore`] (read, write, directory). The real implementations are [`XcHypervisor`] (domctls
//! through privcmd) and the xenstored client; the tests use a fake hypervisor and keel-xenstore's in-memory store.
//!
//! The xenstore-driven commands talk to the guest as xl does:
//! - `shutdown`/`reboot` write `poweroff`/`reboot` to `/local/domain/N/control/shutdown`; with `-w`, they wait until
//!   the domain has shut down or gone (xl watches `@releaseDomain`; this polls getdomaininfo, which is what that
//!   watch fires on), and, where `xm create`'s monitor follows the domain, until the monitor has acted on it (the
//!   domain destroyed, or restarted under a new id, or left preserved).
//! - `sysrq` writes the key to `control/sysrq`.
//! - `rename` writes `name` (and `/vm/<uuid>/name` where the domain has one), refusing a name another domain has.
//! - `mem-set` writes `memory/target` in KiB, refusing a target above `memory/static-max`, and raises the
//!   hypervisor's limit (max_mem domctl) first where that exists.
//! - `vcpu-set` writes `cpu/K/availability` = `online` for K < N and `offline` up to the domain's maxvcpus.

use std::io::Write;
use std::time::Duration;

use keel_abi::domctl::{cmd as domctl_cmd, dominf, GetDomainInfo, XenDomctl};
use keel_abi::Zeroable;
use serde::Serialize;

use super::cmdtable::{DomainActionArgs, MemSetArgs, RenameArgs, ShutdownArgs, SysrqArgs, VcpuSetArgs};
use super::commands::CmdResult;
use super::corefile::{write_core, CoreSource, CoreSummary};
use super::format::json;
use super::XmError;
use crate::domain::DomainRef;

/// The hypervisor side of the lifecycle commands.
pub trait Hypervisor {
    /// One domain's information, `None` if it does not exist.
    fn domain_info(&mut self, domid: u16) -> Result<Option<GetDomainInfo>, XmError>;
    /// Every domain, by id.
    fn domains(&mut self) -> Result<Vec<GetDomainInfo>, XmError>;
    /// `XEN_DOMCTL_destroydomain`.
    fn destroy(&mut self, domid: u16) -> Result<(), XmError>;
    /// `XEN_DOMCTL_pausedomain`.
    fn pause(&mut self, domid: u16) -> Result<(), XmError>;
    /// `XEN_DOMCTL_unpausedomain`.
    fn unpause(&mut self, domid: u16) -> Result<(), XmError>;
    /// `XEN_DOMCTL_max_mem`: the most memory the domain may hold, KiB.
    fn set_max_mem(&mut self, domid: u16, kib: u64) -> Result<(), XmError>;
    /// Waits a moment before looking at the domains again (`shutdown -w`).
    fn wait(&mut self) {
        std::thread::sleep(Duration::from_millis(200));
    }
    /// Whether `xm create`'s monitor still follows domain `domid` (it will act on its shutdown: `shutdown -w`
    /// waits for that). None by default.
    fn monitored(&mut self, _domid: u16) -> bool {
        false
    }
}

/// Inside `impl Hypervisor for W`, the domctl calls a wrapper passes straight to its field (`W.hv`): the wrappers
/// (the monitor's, and test fakes) write only what they add, `wait`, `monitored` or `domain_info`.
macro_rules! pass_domctls_to {
    ($inner:ident) => {
        fn domains(&mut self) -> Result<Vec<keel_abi::domctl::GetDomainInfo>, $crate::xm::XmError> {
            self.$inner.domains()
        }
        fn destroy(&mut self, domid: u16) -> Result<(), $crate::xm::XmError> {
            self.$inner.destroy(domid)
        }
        fn pause(&mut self, domid: u16) -> Result<(), $crate::xm::XmError> {
            self.$inner.pause(domid)
        }
        fn unpause(&mut self, domid: u16) -> Result<(), $crate::xm::XmError> {
            self.$inner.unpause(domid)
        }
        fn set_max_mem(&mut self, domid: u16, kib: u64) -> Result<(), $crate::xm::XmError> {
            self.$inner.set_max_mem(domid, kib)
        }
    };
}
pub(crate) use pass_domctls_to;

/// The xenstore side of the lifecycle commands (dom0's privileged view).
pub trait Xenstore {
    /// A node's value, `None` if it does not exist.
    fn read(&mut self, path: &str) -> Option<String>;
    /// Writes a node (creating its parents).
    fn write(&mut self, path: &str, value: &str) -> Result<(), XmError>;
    /// Removes a node and everything below it (a missing node is not an error).
    fn rm(&mut self, path: &str) -> Result<(), XmError>;
    /// A node's children (none if it does not exist).
    fn directory(&mut self, path: &str) -> Vec<String>;
    /// Sets a node's permissions (xenstore's `n0`, `r3` ... form).
    fn set_perms(&mut self, path: &str, perms: &[String]) -> Result<(), XmError>;
    /// Writes nodes and sets permissions, in order, as one change others see at once (a transaction: a guest
    /// watching its `device` directory must never see a half-written device).
    fn apply(&mut self, ops: &[XsOp]) -> Result<(), XmError> {
        for op in ops {
            match op {
                XsOp::Write(path, value) => self.write(path, value)?,
                XsOp::Perms(path, perms) => self.set_perms(path, perms)?,
            }
        }
        Ok(())
    }
}

/// One step of [`Xenstore::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XsOp {
    Write(String, String),
    Perms(String, Vec<String>),
}

/// The hypervisor through privcmd.
pub struct XcHypervisor(pub keel_xenctrl::Xc);

impl XcHypervisor {
    fn domctl(&self, what: &str, cmd: u32, domid: u16, member: Option<u64>) -> Result<(), XmError> {
        let mut d = XenDomctl::zeroed();
        d.cmd = cmd;
        d.domain = domid;
        if let Some(v) = member {
            d.set(&v);
        }
        self.0.domctl(&mut d).map_err(|e| XmError::Failed(format!("{what}: {e}")))
    }
}

impl Hypervisor for XcHypervisor {
    fn domain_info(&mut self, domid: u16) -> Result<Option<GetDomainInfo>, XmError> {
        self.0.domain_info(domid).map_err(|e| XmError::Failed(format!("getdomaininfo: {e}")))
    }
    fn domains(&mut self) -> Result<Vec<GetDomainInfo>, XmError> {
        self.0.domains().map_err(|e| XmError::Failed(format!("getdomaininfolist: {e}")))
    }
    fn destroy(&mut self, domid: u16) -> Result<(), XmError> {
        self.domctl("destroydomain", domctl_cmd::DESTROYDOMAIN, domid, None)
    }
    fn pause(&mut self, domid: u16) -> Result<(), XmError> {
        self.domctl("pausedomain", domctl_cmd::PAUSEDOMAIN, domid, None)
    }
    fn unpause(&mut self, domid: u16) -> Result<(), XmError> {
        self.domctl("unpausedomain", domctl_cmd::UNPAUSEDOMAIN, domid, None)
    }
    fn set_max_mem(&mut self, domid: u16, kib: u64) -> Result<(), XmError> {
        self.domctl("max_mem", domctl_cmd::MAX_MEM, domid, Some(kib))
    }
    fn monitored(&mut self, domid: u16) -> bool {
        super::monitor::follows(domid)
    }
}

impl Xenstore for keel_xenstore::client::Client {
    fn read(&mut self, path: &str) -> Option<String> {
        let v = keel_xenstore::client::Client::read(self, 0, path).ok()?;
        Some(String::from_utf8_lossy(&v).into_owned())
    }
    fn write(&mut self, path: &str, value: &str) -> Result<(), XmError> {
        keel_xenstore::client::Client::write(self, 0, path, value.as_bytes())
            .map_err(|e| XmError::Failed(format!("xenstore write {path}: {e}")))
    }
    fn rm(&mut self, path: &str) -> Result<(), XmError> {
        if Xenstore::read(self, path).is_none() {
            return Ok(());
        }
        keel_xenstore::client::Client::rm(self, 0, path)
            .map_err(|e| XmError::Failed(format!("xenstore rm {path}: {e}")))
    }
    fn directory(&mut self, path: &str) -> Vec<String> {
        keel_xenstore::client::Client::directory(self, 0, path).unwrap_or_default()
    }
    fn set_perms(&mut self, path: &str, perms: &[String]) -> Result<(), XmError> {
        keel_xenstore::client::Client::set_perms(self, 0, path, perms)
            .map_err(|e| XmError::Failed(format!("xenstore set-perms {path}: {e}")))
    }
    fn apply(&mut self, ops: &[XsOp]) -> Result<(), XmError> {
        use keel_xenstore::client::{Client, Error};
        let fail = |what: &str, e: Error| XmError::Failed(format!("xenstore {what}: {e}"));
        // A transaction that meets another's change ends with EAGAIN and is tried again, as libxl does.
        for _ in 0..10 {
            let tx = self.transaction_start().map_err(|e| fail("transaction", e))?;
            let done = ops.iter().try_for_each(|op| match op {
                XsOp::Write(path, value) => Client::write(self, tx, path, value.as_bytes()).map_err(|e| (path, e)),
                XsOp::Perms(path, perms) => Client::set_perms(self, tx, path, perms).map_err(|e| (path, e)),
            });
            if let Err((path, e)) = done {
                let _ = self.transaction_end(tx, false);
                return Err(fail(path, e));
            }
            match self.transaction_end(tx, true) {
                Ok(()) => return Ok(()),
                Err(Error::Store(keel_xenstore::XsError::Eagain)) => continue,
                Err(e) => return Err(fail("transaction end", e)),
            }
        }
        Err(XmError::Failed("xenstore: the transaction kept meeting other changes (EAGAIN)".into()))
    }
}

/// What a lifecycle command did, for `--json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Done {
    /// The domain's id.
    pub domid: u16,
    /// Its name (after a rename, the new one).
    pub name: String,
    /// The command.
    pub action: &'static str,
    /// The value written or set, where there is one (the shutdown request, the key, KiB, vCPUs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// The hypervisor and xenstore a command runs against.
pub struct Ctx<'a> {
    pub hv: &'a mut dyn Hypervisor,
    pub xs: &'a mut dyn Xenstore,
}

/// Whether a domain other than `except` has `vm` as its /vm directory (a migration's two ends on one host share
/// it, as with Xen): then it stays when `except` goes.
pub fn vm_shared(xs: &mut dyn Xenstore, vm: &str, except: u16) -> bool {
    let ids = xs.directory("/local/domain");
    ids.iter()
        .filter_map(|i| i.parse::<u16>().ok())
        .filter(|&i| i != except)
        .any(|i| xs.read(&format!("/local/domain/{i}/vm")).as_deref() == Some(vm))
}

fn home(domid: u16) -> String {
    format!("/local/domain/{domid}")
}

impl Ctx<'_> {
    /// A domain's name as xl reads it.
    pub fn name(&mut self, domid: u16) -> String {
        self.xs.read(&format!("{}/name", home(domid))).unwrap_or_else(|| "(null)".into())
    }

    /// The domain a `<Domain>` argument names.
    pub fn find(&mut self, r: &DomainRef) -> Result<(GetDomainInfo, String), XmError> {
        match r {
            DomainRef::Id(id) => {
                let d = self.hv.domain_info(id.get())?.ok_or_else(|| XmError::NoDomain(r.to_string()))?;
                let name = self.name(d.domain);
                Ok((d, name))
            }
            DomainRef::Name(n) => {
                for d in self.hv.domains()? {
                    let name = self.name(d.domain);
                    if name == n.as_str() {
                        return Ok((d, name));
                    }
                }
                Err(XmError::NoDomain(r.to_string()))
            }
        }
    }

    /// `xm destroy`: xl refuses dom0 ("Cannot destroy privileged domain 0").
    pub fn destroy(&mut self, r: &DomainRef) -> Result<Done, XmError> {
        let (d, name) = self.find(r)?;
        if d.domain == 0 {
            return Err(XmError::Failed("cannot destroy privileged domain 0".into()));
        }
        // As libxl: the domain's xenstore nodes go with it (its /vm/<uuid> and /local/domain/<id>).
        let dom_path = format!("/local/domain/{}", d.domain);
        let vm = self.xs.read(&format!("{dom_path}/vm"));
        self.hv.destroy(d.domain)?;
        // Its disks and vifs: the backends let go (their grant mappings with them), the hotplug scripts detach the
        // loop devices and vifs, and the directories go, as libxl does.
        for problem in
            super::devices::remove_all(self.xs, &mut super::devices::Scripts, d.domain, super::devices::CLOSE_TIMEOUT)
        {
            eprintln!("xm: domain {}: {problem}", d.domain);
        }
        // Another domain may share the directory: a migration's two ends on one host, as with Xen.
        if let Some(vm) = vm.filter(|v| v.starts_with("/vm/") && !vm_shared(self.xs, v, d.domain)) {
            self.xs.rm(&vm)?;
        }
        self.xs.rm(&dom_path)?;
        Ok(Done { domid: d.domain, name, action: "destroy", value: None })
    }

    /// `xm pause`: Xen refuses to pause the domain asking (dom0 here).
    pub fn pause(&mut self, r: &DomainRef) -> Result<Done, XmError> {
        let (d, name) = self.find(r)?;
        if d.domain == 0 {
            return Err(XmError::Failed("cannot pause domain 0 (the domain running xm)".into()));
        }
        self.hv.pause(d.domain)?;
        Ok(Done { domid: d.domain, name, action: "pause", value: None })
    }

    /// `xm unpause`.
    pub fn unpause(&mut self, r: &DomainRef) -> Result<Done, XmError> {
        let (d, name) = self.find(r)?;
        if d.domain == 0 {
            return Err(XmError::Failed("cannot unpause domain 0 (the domain running xm)".into()));
        }
        self.hv.unpause(d.domain)?;
        Ok(Done { domid: d.domain, name, action: "unpause", value: None })
    }

    /// The domains `shutdown`/`reboot` act on: the one named, or with `-a` every domain but dom0 (as xl).
    fn targets(&mut self, args: &ShutdownArgs) -> Result<Vec<(GetDomainInfo, String)>, XmError> {
        if args.all {
            let all = self.hv.domains()?;
            Ok(all.into_iter().filter(|d| d.domain != 0).map(|d| (d, self.name(d.domain))).collect())
        } else {
            let r = args.domain.as_ref().ok_or_else(|| XmError::Failed("no domain given".into()))?;
            Ok(vec![self.find(r)?])
        }
    }

    /// `xm shutdown` (`request` "poweroff") and `xm reboot` ("reboot"): asks each guest through
    /// `control/shutdown`, then with `wait` waits until each has shut down or gone. Progress goes to `log`
    /// (stderr), in xl's words (also xl's "Waiting for 0 domains" for `-a -w` without domUs).
    pub fn shutdown(
        &mut self,
        args: &ShutdownArgs,
        request: &'static str,
        log: &mut dyn FnMut(String),
    ) -> Result<Vec<Done>, XmError> {
        let targets = self.targets(args)?;
        let mut done = Vec::new();
        for (d, name) in &targets {
            let verb = if request == "reboot" { "Rebooting" } else { "Shutting down" };
            log(format!("{verb} domain {}", d.domain));
            self.xs.write(&format!("{}/control/shutdown", home(d.domain)), request)?;
            done.push(Done { domid: d.domain, name: name.clone(), action: request_action(request), value: None });
        }
        if args.wait {
            let mut left: Vec<u16> = targets.iter().map(|(d, _)| d.domain).collect();
            log(format!("Waiting for {} domains", left.len()));
            // Domains seen shut down while their monitor still follows them: it is about to act (destroy,
            // restart: the old id goes; preserve: it stops following), and the wait lasts until it has.
            let mut seen_shut = Vec::new();
            while !left.is_empty() {
                let mut still = Vec::new();
                for id in left {
                    match self.hv.domain_info(id)? {
                        None => log(format!("Domain {id} has been destroyed")),
                        Some(i) if i.flags & dominf::DYING != 0 => log(format!("Domain {id} has been destroyed")),
                        Some(i) if i.flags & dominf::SHUTDOWN != 0 => {
                            if !seen_shut.contains(&id) {
                                let code = (i.flags >> dominf::SHUTDOWN_SHIFT) & dominf::SHUTDOWN_MASK;
                                log(format!("Domain {id} has been shut down, reason code {code}"));
                                seen_shut.push(id);
                            }
                            if self.hv.monitored(id) {
                                still.push(id);
                            }
                        }
                        Some(_) => still.push(id),
                    }
                }
                left = still;
                if !left.is_empty() {
                    self.hv.wait();
                }
            }
        }
        Ok(done)
    }

    /// `xm sysrq`.
    pub fn sysrq(&mut self, r: &DomainRef, key: char) -> Result<Done, XmError> {
        let (d, name) = self.find(r)?;
        self.xs.write(&format!("{}/control/sysrq", home(d.domain)), &key.to_string())?;
        Ok(Done { domid: d.domain, name, action: "sysrq", value: Some(key.to_string()) })
    }

    /// `xm rename`: the new name must not be another domain's (libxl_domain_rename).
    pub fn rename(&mut self, r: &DomainRef, new_name: &str) -> Result<Done, XmError> {
        let (d, old) = self.find(r)?;
        if old != new_name {
            for other in self.hv.domains()? {
                if other.domain != d.domain && self.name(other.domain) == new_name {
                    return Err(XmError::Failed(format!(
                        "domain with name \"{new_name}\" already exists (domain {})",
                        other.domain
                    )));
                }
            }
        }
        let h = home(d.domain);
        if let Some(vm) = self.xs.read(&format!("{h}/vm")).filter(|v| !v.is_empty()) {
            self.xs.write(&format!("{vm}/name"), new_name)?;
        }
        self.xs.write(&format!("{h}/name"), new_name)?;
        Ok(Done { domid: d.domain, name: new_name.to_owned(), action: "rename", value: Some(old) })
    }

    /// `xm mem-set`: `memory/target` in KiB, at most `memory/static-max` (libxl_set_memory_target refuses more).
    pub fn mem_set(&mut self, r: &DomainRef, kib: u64) -> Result<Done, XmError> {
        let (d, name) = self.find(r)?;
        let h = home(d.domain);
        let static_max = self.xs.read(&format!("{h}/memory/static-max")).and_then(|v| v.trim().parse::<u64>().ok());
        // Without static-max in the store, the hypervisor's limit stands in for it.
        let max_kib = static_max.unwrap_or(d.max_pages.saturating_mul(4));
        if kib > max_kib {
            return Err(XmError::Failed(format!(
                "memory target {kib} KiB is above the domain's maximum memory ({max_kib} KiB, memory/static-max)"
            )));
        }
        if d.domain != 0 {
            // libxl (xl mem-set enforces) sets the hypervisor's limit to the new target plus the pages outside
            // RAM (LIBXL_MAXMEM_CONSTANT) before telling the guest: the guest can balloon up to the target and no
            // further. A hypervisor without the domctl leaves the limit where it was (at or above static-max).
            match self.hv.set_max_mem(d.domain, kib + super::create::MAXMEM_SLACK_KIB) {
                Ok(()) | Err(XmError::NotAvailable) => {}
                Err(e) => return Err(e),
            }
        }
        self.xs.write(&format!("{h}/memory/target"), &kib.to_string())?;
        // And the VM's record of its memory, in MiB.
        if let Some(vm) = self.xs.read(&format!("{h}/vm")).filter(|v| !v.is_empty()) {
            self.xs.write(&format!("{vm}/memory"), &(kib >> 10).to_string())?;
        }
        Ok(Done { domid: d.domain, name, action: "mem-set", value: Some(kib.to_string()) })
    }

    /// `xm vcpu-set`: brings vCPUs 0..n online and the rest, up to maxvcpus, offline (libxl_set_vcpuonline).
    pub fn vcpu_set(&mut self, r: &DomainRef, n: u32) -> Result<Done, XmError> {
        let (d, name) = self.find(r)?;
        let max = if d.max_vcpu_id == u32::MAX { 0 } else { d.max_vcpu_id + 1 };
        if n > max {
            return Err(XmError::Failed(format!("requested {n} vCPUs, however maxvcpus is {max}")));
        }
        let h = home(d.domain);
        for k in 0..max {
            let state = if k < n { "online" } else { "offline" };
            self.xs.write(&format!("{h}/cpu/{k}/availability"), state)?;
        }
        Ok(Done { domid: d.domain, name, action: "vcpu-set", value: Some(n.to_string()) })
    }

    /// `xm dump-core [-L] [-C]`: pauses the domain (unless `live`), writes its core to `out` from `src`, then
    /// destroys it with `crash` (xm's -C) or unpauses it. A failed dump unpauses it and reports the failure.
    pub fn dump_core(
        &mut self,
        r: &DomainRef,
        src: &mut dyn CoreSource,
        out: &mut dyn std::io::Write,
        live: bool,
        crash: bool,
    ) -> Result<(Done, CoreSummary), XmError> {
        let (d, name) = self.find(r)?;
        if d.domain == 0 {
            return Err(XmError::Failed("cannot dump the core of domain 0 (the domain running xm)".into()));
        }
        if !live {
            self.hv.pause(d.domain)?;
        }
        let written = write_core(src, out);
        if crash && written.is_ok() {
            self.hv.destroy(d.domain)?;
        } else if !live {
            self.hv.unpause(d.domain)?;
        }
        let summary = written?;
        Ok((Done { domid: d.domain, name, action: "dump-core", value: Some(summary.bytes.to_string()) }, summary))
    }
}

fn request_action(request: &str) -> &'static str {
    if request == "reboot" {
        "reboot"
    } else {
        "shutdown"
    }
}

/// Opens the real hypervisor and xenstore and runs `f` on them.
pub(crate) fn with_host<T>(f: impl FnOnce(&mut Ctx) -> Result<T, XmError>) -> Result<T, XmError> {
    let xc = keel_xenctrl::Xc::open().map_err(|e| XmError::Failed(e.to_string()))?;
    let mut hv = XcHypervisor(xc);
    let mut xs =
        keel_xenstore::client::Client::open().map_err(|e| XmError::Failed(format!("cannot reach xenstored: {e}")))?;
    f(&mut Ctx { hv: &mut hv, xs: &mut xs })
}

fn report(done: &[Done], as_json: bool) -> CmdResult {
    if as_json {
        let text = if done.len() == 1 { json(&done[0]) } else { json(done) };
        let mut out = std::io::stdout().lock();
        // A reader that went away (`| head`) is not an error of the command, which has been carried out.
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                return Err(XmError::Failed(format!("stdout: {e}")));
            }
        }
    }
    Ok(())
}

/// `xm destroy`.
pub fn destroy(args: &DomainActionArgs) -> CmdResult {
    let d = with_host(|c| c.destroy(&args.domain))?;
    report(&[d], args.json)
}

/// `xm pause`.
pub fn pause(args: &DomainActionArgs) -> CmdResult {
    let d = with_host(|c| c.pause(&args.domain))?;
    report(&[d], args.json)
}

/// `xm unpause`.
pub fn unpause(args: &DomainActionArgs) -> CmdResult {
    let d = with_host(|c| c.unpause(&args.domain))?;
    report(&[d], args.json)
}

/// `xm shutdown`.
pub fn shutdown(args: &ShutdownArgs) -> CmdResult {
    let d = with_host(|c| c.shutdown(args, "poweroff", &mut |l| eprintln!("{l}")))?;
    report(&d, args.json)
}

/// `xm reboot`.
pub fn reboot(args: &ShutdownArgs) -> CmdResult {
    let d = with_host(|c| c.shutdown(args, "reboot", &mut |l| eprintln!("{l}")))?;
    report(&d, args.json)
}

/// `xm sysrq`.
pub fn sysrq(args: &SysrqArgs) -> CmdResult {
    let d = with_host(|c| c.sysrq(&args.domain, args.key.get()))?;
    report(&[d], args.json)
}

/// `xm rename`.
pub fn rename(args: &RenameArgs) -> CmdResult {
    let d = with_host(|c| c.rename(&args.domain, args.new_name.as_str()))?;
    report(&[d], args.json)
}

/// `xm mem-set`.
pub fn mem_set(args: &MemSetArgs) -> CmdResult {
    let d = with_host(|c| c.mem_set(&args.domain, args.mem.kib()))?;
    report(&[d], args.json)
}

/// `xm vcpu-set`.
pub fn vcpu_set(args: &VcpuSetArgs) -> CmdResult {
    let d = with_host(|c| c.vcpu_set(&args.domain, args.vcpus.get()))?;
    report(&[d], args.json)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use keel_xenstore::store::{ConnId, Store};
    use keel_xenstore::wire::{typ, Msg};
    use std::collections::BTreeMap;

    /// keel-xenstore's store, seen through a privileged dom0 connection.
    pub struct MemStore {
        pub s: Store,
        conn: ConnId,
    }

    impl MemStore {
        pub fn new() -> MemStore {
            let mut s = Store::default();
            let conn = s.connect(0, true);
            MemStore { s, conn }
        }
        fn req(&mut self, ty: u32, payload: Vec<u8>) -> Result<Vec<u8>, String> {
            let out = self.s.handle(self.conn, &Msg::new(ty, 1, 0, payload));
            let (_, m) = out.msgs.iter().find(|(c, m)| *c == self.conn && m.typ != typ::WATCH_EVENT).unwrap();
            if m.typ == typ::ERROR {
                Err(String::from_utf8_lossy(&m.payload).into())
            } else {
                Ok(m.payload.clone())
            }
        }
    }

    impl Xenstore for MemStore {
        fn read(&mut self, path: &str) -> Option<String> {
            let v = self.req(typ::READ, format!("{path}\0").into_bytes()).ok()?;
            Some(String::from_utf8_lossy(&v).into_owned())
        }
        fn write(&mut self, path: &str, value: &str) -> Result<(), XmError> {
            self.req(typ::WRITE, format!("{path}\0{value}").into_bytes()).map(drop).map_err(XmError::Failed)
        }
        fn rm(&mut self, path: &str) -> Result<(), XmError> {
            match self.req(typ::RM, format!("{path}\0").into_bytes()) {
                Ok(_) => Ok(()),
                Err(e) if e.contains("ENOENT") => Ok(()),
                Err(e) => Err(XmError::Failed(e)),
            }
        }
        fn directory(&mut self, path: &str) -> Vec<String> {
            self.req(typ::DIRECTORY, format!("{path}\0").into_bytes())
                .map(|v| {
                    v.split(|&b| b == 0).filter(|n| !n.is_empty()).map(|n| String::from_utf8_lossy(n).into()).collect()
                })
                .unwrap_or_default()
        }
        fn set_perms(&mut self, path: &str, perms: &[String]) -> Result<(), XmError> {
            let mut payload = format!("{path}\0").into_bytes();
            for p in perms {
                payload.extend_from_slice(p.as_bytes());
                payload.push(0);
            }
            self.req(typ::SET_PERMS, payload).map(drop).map_err(XmError::Failed)
        }
    }

    impl MemStore {
        /// A node's permissions.
        pub fn get_perms(&mut self, path: &str) -> Vec<String> {
            let v = self.req(typ::GET_PERMS, format!("{path}\0").into_bytes()).unwrap();
            v.split(|&b| b == 0).filter(|n| !n.is_empty()).map(|n| String::from_utf8_lossy(n).into()).collect()
        }
    }

    /// A hypervisor holding `doms`, recording the domctls it is asked for.
    #[derive(Default)]
    pub struct FakeHv {
        pub doms: BTreeMap<u16, GetDomainInfo>,
        pub calls: Vec<String>,
        /// `wait` calls left before the domains asked to shut down have done so.
        pub shutdown_after: u32,
        pub has_max_mem: bool,
        /// The domains go away (rather than only shut down) when `shutdown_after` runs out.
        pub vanish: bool,
    }

    impl FakeHv {
        pub fn with(doms: &[(u16, u32)]) -> FakeHv {
            let mut hv = FakeHv { has_max_mem: true, ..Default::default() };
            for &(id, vcpus) in doms {
                let d = GetDomainInfo {
                    domain: id,
                    max_pages: 65536,
                    max_vcpu_id: vcpus - 1,
                    nr_online_vcpus: vcpus,
                    flags: dominf::RUNNING,
                    ..Default::default()
                };
                hv.doms.insert(id, d);
            }
            hv
        }
    }

    impl Hypervisor for FakeHv {
        fn domain_info(&mut self, domid: u16) -> Result<Option<GetDomainInfo>, XmError> {
            Ok(self.doms.get(&domid).copied())
        }
        fn domains(&mut self) -> Result<Vec<GetDomainInfo>, XmError> {
            Ok(self.doms.values().copied().collect())
        }
        fn destroy(&mut self, domid: u16) -> Result<(), XmError> {
            self.calls.push(format!("destroy {domid}"));
            self.doms.remove(&domid);
            Ok(())
        }
        fn pause(&mut self, domid: u16) -> Result<(), XmError> {
            self.calls.push(format!("pause {domid}"));
            Ok(())
        }
        fn unpause(&mut self, domid: u16) -> Result<(), XmError> {
            self.calls.push(format!("unpause {domid}"));
            Ok(())
        }
        fn set_max_mem(&mut self, domid: u16, kib: u64) -> Result<(), XmError> {
            if !self.has_max_mem {
                return Err(XmError::NotAvailable);
            }
            self.calls.push(format!("max_mem {domid} {kib}"));
            Ok(())
        }
        fn wait(&mut self) {
            self.calls.push("wait".into());
            if self.shutdown_after > 0 {
                self.shutdown_after -= 1;
                if self.shutdown_after == 0 && self.vanish {
                    self.doms.retain(|&id, _| id == 0);
                } else if self.shutdown_after == 0 {
                    for d in self.doms.values_mut().filter(|d| d.domain != 0) {
                        d.flags = dominf::SHUTDOWN | (1 << dominf::SHUTDOWN_SHIFT);
                    }
                }
            }
        }
    }

    /// dom0 and two guests, named in the store as the toolstack names them.
    fn setup() -> (FakeHv, MemStore) {
        let hv = FakeHv::with(&[(0, 2), (3, 4), (5, 1)]);
        let mut xs = MemStore::new();
        xs.write("/local/domain/0/name", "Domain-0").unwrap();
        xs.write("/local/domain/3/name", "web").unwrap();
        xs.write("/local/domain/3/vm", "/vm/1234").unwrap();
        xs.write("/vm/1234/name", "web").unwrap();
        xs.write("/local/domain/3/memory/static-max", "262144").unwrap();
        xs.write("/local/domain/5/name", "db").unwrap();
        (hv, xs)
    }

    fn r(s: &str) -> DomainRef {
        s.parse().unwrap()
    }

    #[test]
    fn destroy_pause_unpause_reach_the_hypervisor_by_id_or_name() {
        let (mut hv, mut xs) = setup();
        let mut c = Ctx { hv: &mut hv, xs: &mut xs };
        let d = c.pause(&r("web")).unwrap();
        assert_eq!(d, Done { domid: 3, name: "web".into(), action: "pause", value: None });
        c.unpause(&r("3")).unwrap();
        c.destroy(&r("db")).unwrap();
        assert_eq!(hv.calls, ["pause 3", "unpause 3", "destroy 5"]);
        assert!(!hv.doms.contains_key(&5));
    }

    #[test]
    fn destroy_removes_the_domains_nodes_as_libxl() {
        let (mut hv, mut xs) = setup();
        let mut c = Ctx { hv: &mut hv, xs: &mut xs };
        c.destroy(&r("web")).unwrap();
        assert_eq!(hv.calls, ["destroy 3"]);
        for gone in ["/local/domain/3/name", "/local/domain/3", "/vm/1234/name", "/vm/1234"] {
            assert_eq!(xs.read(gone), None, "{gone}");
        }
        assert_eq!(xs.read("/local/domain/5/name").as_deref(), Some("db"));
        // A domain with no vm node loses only its own directory.
        let mut c = Ctx { hv: &mut hv, xs: &mut xs };
        c.destroy(&r("5")).unwrap();
        assert_eq!(xs.read("/local/domain/5/name"), None);
    }

    #[test]
    fn dom0_and_unknown_domains_are_refused() {
        let (mut hv, mut xs) = setup();
        let mut c = Ctx { hv: &mut hv, xs: &mut xs };
        let e = c.destroy(&r("0")).unwrap_err();
        assert_eq!(e.report("destroy"), "xm: 'destroy' failed: cannot destroy privileged domain 0");
        assert!(c.destroy(&r("Domain-0")).is_err());
        assert!(c.pause(&r("0")).is_err());
        assert_eq!(c.pause(&r("nosuch")).unwrap_err(), XmError::NoDomain("nosuch".into()));
        assert_eq!(c.unpause(&r("9")).unwrap_err(), XmError::NoDomain("9".into()));
        assert_eq!(c.sysrq(&r("9"), 's').unwrap_err(), XmError::NoDomain("9".into()));
        assert!(hv.calls.is_empty(), "{:?}", hv.calls);
    }

    fn sargs(domain: Option<&str>, all: bool, wait: bool) -> ShutdownArgs {
        ShutdownArgs { domain: domain.map(r), all, wait, json: false }
    }

    #[test]
    fn shutdown_and_reboot_write_the_control_node() {
        let (mut hv, mut xs) = setup();
        let mut log = Vec::new();
        let mut c = Ctx { hv: &mut hv, xs: &mut xs };
        let d = c.shutdown(&sargs(Some("web"), false, false), "poweroff", &mut |l| log.push(l)).unwrap();
        assert_eq!(d[0].action, "shutdown");
        c.shutdown(&sargs(Some("5"), false, false), "reboot", &mut |l| log.push(l)).unwrap();
        assert_eq!(xs.read("/local/domain/3/control/shutdown").as_deref(), Some("poweroff"));
        assert_eq!(xs.read("/local/domain/5/control/shutdown").as_deref(), Some("reboot"));
        assert_eq!(log, ["Shutting down domain 3", "Rebooting domain 5"]);
        assert!(hv.calls.is_empty());
    }

    #[test]
    fn shutdown_all_skips_dom0_and_waits() {
        let (mut hv, mut xs) = setup();
        hv.shutdown_after = 2;
        let mut log = Vec::new();
        let mut c = Ctx { hv: &mut hv, xs: &mut xs };
        let d = c.shutdown(&sargs(None, true, true), "poweroff", &mut |l| log.push(l)).unwrap();
        assert_eq!(d.iter().map(|d| d.domid).collect::<Vec<_>>(), [3, 5]);
        assert_eq!(xs.read("/local/domain/0/control/shutdown"), None);
        assert_eq!(xs.read("/local/domain/5/control/shutdown").as_deref(), Some("poweroff"));
        assert_eq!(hv.calls, ["wait", "wait"], "waited until the domains had shut down");
        assert_eq!(
            log,
            [
                "Shutting down domain 3",
                "Shutting down domain 5",
                "Waiting for 2 domains",
                "Domain 3 has been shut down, reason code 1",
                "Domain 5 has been shut down, reason code 1",
            ]
        );
    }

    #[test]
    fn waiting_ends_when_the_domain_is_gone() {
        let (mut hv, mut xs) = setup();
        hv.shutdown_after = 1;
        hv.vanish = true;
        let mut log = Vec::new();
        let mut c = Ctx { hv: &mut hv, xs: &mut xs };
        c.shutdown(&sargs(Some("web"), false, true), "reboot", &mut |l| log.push(l)).unwrap();
        assert_eq!(log, ["Rebooting domain 3", "Waiting for 1 domains", "Domain 3 has been destroyed",]);
        assert_eq!(hv.calls, ["wait"]);
    }

    /// Domain 3 followed by a monitor: the first wait shuts it down (reboot); at the third, its monitor acts:
    /// destroys it (`restart`, the old id goes) or, with `keep`, stops following it (`preserve`).
    struct Monitored {
        hv: FakeHv,
        keep: bool,
        following: bool,
        waits: u32,
    }

    impl Hypervisor for Monitored {
        pass_domctls_to!(hv);
        fn domain_info(&mut self, domid: u16) -> Result<Option<GetDomainInfo>, XmError> {
            self.hv.domain_info(domid)
        }
        fn wait(&mut self) {
            self.waits += 1;
            match self.waits {
                1 => self.hv.doms.get_mut(&3).unwrap().flags = dominf::SHUTDOWN | (1 << dominf::SHUTDOWN_SHIFT),
                3 if self.keep => self.following = false,
                3 => {
                    self.hv.doms.remove(&3);
                    self.following = false;
                }
                _ => {}
            }
        }
        fn monitored(&mut self, domid: u16) -> bool {
            domid == 3 && self.following
        }
    }

    #[test]
    fn waiting_lasts_until_the_monitor_has_acted() {
        for keep in [false, true] {
            let (hv, mut xs) = setup();
            let mut hv = Monitored { hv, keep, following: true, waits: 0 };
            let mut log = Vec::new();
            let mut c = Ctx { hv: &mut hv, xs: &mut xs };
            c.shutdown(&sargs(Some("web"), false, true), "reboot", &mut |l| log.push(l)).unwrap();
            assert_eq!(hv.waits, 3, "keep {keep}: waited past the shutdown for the monitor");
            let mut want =
                vec!["Rebooting domain 3", "Waiting for 1 domains", "Domain 3 has been shut down, reason code 1"];
            if !keep {
                want.push("Domain 3 has been destroyed");
            }
            assert_eq!(log, want, "keep {keep}");
        }
    }

    #[test]
    fn shutdown_all_without_domus_leaves_dom0_alone() {
        let mut hv = FakeHv::with(&[(0, 2)]);
        let mut xs = MemStore::new();
        let mut log = Vec::new();
        let d = Ctx { hv: &mut hv, xs: &mut xs }.shutdown(&sargs(None, true, true), "poweroff", &mut |l| log.push(l));
        assert_eq!(d.unwrap(), []);
        assert_eq!(log, ["Waiting for 0 domains"]);
        assert_eq!(xs.read("/local/domain/0/control/shutdown"), None);
    }

    /// One RAM page and one vCPU; `fail` makes reading the page fail.
    struct Core {
        fail: bool,
    }

    impl CoreSource for Core {
        fn memory_map(&mut self) -> Result<Vec<crate::xm::corefile::MemRange>, XmError> {
            Ok(vec![crate::xm::corefile::MemRange { gpa: 0, len: 4096 }])
        }
        fn read_page(&mut self, _gfn: u64, page: &mut [u8; 4096]) -> Result<(), XmError> {
            page.fill(7);
            if self.fail {
                return Err(XmError::Failed("cannot map page 0".into()));
            }
            Ok(())
        }
        fn vcpu_regs(&mut self) -> Result<Vec<crate::xm::corefile::VcpuRegs>, XmError> {
            Ok(vec![Default::default()])
        }
    }

    #[test]
    fn dump_core_pauses_around_the_dump_and_crash_destroys() {
        let (mut hv, mut xs) = setup();
        let mut c = Ctx { hv: &mut hv, xs: &mut xs };
        let mut file = Vec::new();
        let (d, s) = c.dump_core(&r("web"), &mut Core { fail: false }, &mut file, false, false).unwrap();
        assert_eq!((d.domid, s.pages, s.vcpus), (3, 1, 1));
        assert_eq!(file.len() as u64, s.bytes);
        assert_eq!(file[file.len() - 1], 7, "the page is the file's last");
        c.dump_core(&r("db"), &mut Core { fail: false }, &mut Vec::new(), true, true).unwrap();
        assert!(c.dump_core(&r("0"), &mut Core { fail: false }, &mut Vec::new(), false, false).is_err());
        let e = c.dump_core(&r("web"), &mut Core { fail: true }, &mut Vec::new(), false, true).unwrap_err();
        assert_eq!(e, XmError::Failed("cannot map page 0".into()));
        // -L does not pause; -C destroys after the dump; a failed dump unpauses and destroys nothing.
        assert_eq!(hv.calls, ["pause 3", "unpause 3", "destroy 5", "pause 3", "unpause 3"]);
    }

    #[test]
    fn sysrq_writes_the_key() {
        let (mut hv, mut xs) = setup();
        let mut c = Ctx { hv: &mut hv, xs: &mut xs };
        let d = c.sysrq(&r("db"), 'b').unwrap();
        assert_eq!(d.value.as_deref(), Some("b"));
        assert_eq!(xs.read("/local/domain/5/control/sysrq").as_deref(), Some("b"));
    }

    #[test]
    fn rename_checks_uniqueness_and_writes_both_names() {
        let (mut hv, mut xs) = setup();
        let mut c = Ctx { hv: &mut hv, xs: &mut xs };
        let e = c.rename(&r("web"), "db").unwrap_err();
        assert_eq!(e, XmError::Failed("domain with name \"db\" already exists (domain 5)".into()));
        let d = c.rename(&r("web"), "www").unwrap();
        assert_eq!((d.name.as_str(), d.value.as_deref()), ("www", Some("web")));
        // Renaming to its own name is not a clash.
        c.rename(&r("www"), "www").unwrap();
        assert_eq!(xs.read("/local/domain/3/name").as_deref(), Some("www"));
        assert_eq!(xs.read("/vm/1234/name").as_deref(), Some("www"));
        assert_eq!(c_find_name(&mut hv, &mut xs, "www"), Some(3));
        assert_eq!(c_find_name(&mut hv, &mut xs, "web"), None);
    }

    fn c_find_name(hv: &mut FakeHv, xs: &mut MemStore, name: &str) -> Option<u16> {
        Ctx { hv, xs }.find(&r(name)).ok().map(|(d, _)| d.domain)
    }

    #[test]
    fn mem_set_writes_the_target_in_kib_capped_by_static_max() {
        let (mut hv, mut xs) = setup();
        let mut c = Ctx { hv: &mut hv, xs: &mut xs };
        let kib = "128m".parse::<crate::mem::MemSize>().unwrap().kib();
        c.mem_set(&r("web"), kib).unwrap();
        let e = c.mem_set(&r("web"), 512 << 10).unwrap_err();
        assert!(e.to_string().contains("above the domain's maximum memory (262144 KiB"), "{e}");
        // No static-max in the store: the hypervisor's max_pages (65536 pages = 256 MiB) caps it.
        assert!(c.mem_set(&r("db"), 300 << 10).is_err());
        c.mem_set(&r("db"), 100 << 10).unwrap();
        assert_eq!(xs.read("/local/domain/3/memory/target").as_deref(), Some("131072"));
        assert_eq!(xs.read("/local/domain/5/memory/target").as_deref(), Some("102400"));
        assert_eq!(xs.read("/vm/1234/memory").as_deref(), Some("128"), "libxl's /vm/<uuid>/memory, MiB");
        // The limit is the target plus libxl's 1 MiB for the pages outside RAM.
        assert_eq!(hv.calls, ["max_mem 3 132096", "max_mem 5 103424"]);
        // A hypervisor without max_mem: the target is still written.
        hv.has_max_mem = false;
        Ctx { hv: &mut hv, xs: &mut xs }.mem_set(&r("db"), 64 << 10).unwrap();
        assert_eq!(xs.read("/local/domain/5/memory/target").as_deref(), Some("65536"));
    }

    #[test]
    fn vcpu_set_marks_each_vcpu_up_to_maxvcpus() {
        let (mut hv, mut xs) = setup();
        let mut c = Ctx { hv: &mut hv, xs: &mut xs };
        c.vcpu_set(&r("web"), 2).unwrap();
        let states: Vec<_> = (0..5).map(|k| xs.read(&format!("/local/domain/3/cpu/{k}/availability"))).collect();
        assert_eq!(
            states,
            [Some("online".into()), Some("online".into()), Some("offline".into()), Some("offline".into()), None]
        );
        let mut c = Ctx { hv: &mut hv, xs: &mut xs };
        let e = c.vcpu_set(&r("web"), 5).unwrap_err();
        assert_eq!(e, XmError::Failed("requested 5 vCPUs, however maxvcpus is 4".into()));
    }

    #[test]
    fn json_reports_what_was_done() {
        let d = Done { domid: 3, name: "web".into(), action: "sysrq", value: Some("s".into()) };
        let v: serde_json::Value = serde_json::from_str(&json(&d)).unwrap();
        assert_eq!(v, serde_json::json!({"domid": 3, "name": "web", "action": "sysrq", "value": "s"}));
        let d = Done { value: None, action: "pause", ..d };
        assert!(!json(&d).contains("value"));
    }
}
