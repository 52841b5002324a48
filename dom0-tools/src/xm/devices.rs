//! Split-driver devices (disks and network interfaces), wired up as libxl does it with a Linux dom0: the
//! toolstack writes the frontend's directory (`/local/domain/D/device/KIND/N`, the guest's own, readable by the
//! backend) and the backend's (`/local/domain/0/backend/KIND/D/N`, dom0's, readable by the guest) in xenstore;
//! dom0's stock Linux backend (xen-blkback, xen-netback) finds its directory, reaches InitWait, and the toolstack
//! then runs the device's hotplug script (dom0 has no udev), as libxl does with `run_hotplug_scripts=1`:
//! `/etc/xen/scripts/block add` attaches a file to a loop device (or checks a block device) and writes
//! `physical-device`, which blkback opens; `/etc/xen/scripts/vif-bridge online` puts netback's `vifD.N` on the
//! bridge. Each writes `hotplug-status` = `connected`, which netback waits for before it connects, and which the
//! toolstack checks.
//!
//! Removal: on a live guest (`xm block-detach`, `network-detach`) the backend's `online` goes to 0 and its `state`
//! to Closing, which the guest's frontend answers by closing; once the backend is Closed (or after a timeout), the
//! script's `remove`/`offline` runs and both directories go. After `xm destroy` (or any end of the domain) the
//! frontend's directory is removed instead, which a backend takes as its frontend gone: it unregisters (unmapping
//! its grants) and says Closed.

use std::process::Command;
use std::time::{Duration, Instant};

use keel_config::disk::{Access, Disk};
use keel_config::vif::{Mac, Vif};
use serde::Serialize;

use super::lifecycle::{Xenstore, XsOp};
use super::XmError;

/// Where the hotplug scripts are.
pub const SCRIPTS_DIR: &str = "/etc/xen/scripts";
/// How long a backend gets to reach InitWait after its directory is written (libxl's LIBXL_INIT_TIMEOUT).
pub const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a backend gets to close (libxl's LIBXL_DESTROY_TIMEOUT).
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// XenbusState values (xen/include/public/io/xenbus.h).
pub use keel_abi::io::xenbus::state;

/// A kind of split device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A virtual block device (blkfront/blkback).
    Vbd,
    /// A virtual network interface (netfront/netback).
    Vif,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Vbd => "vbd",
            Kind::Vif => "vif",
        }
    }

    /// The hotplug script's actions, as Xen names them: (attach, detach).
    fn actions(self) -> (&'static str, &'static str) {
        match self {
            Kind::Vbd => ("add", "remove"),
            Kind::Vif => ("online", "offline"),
        }
    }
}

/// One device of a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Device {
    pub kind: Kind,
    /// The guest.
    pub domid: u16,
    /// The device id (a disk's VBD number, a vif's index).
    pub devid: u32,
    /// The domain running the backend.
    pub backend_domid: u16,
}

impl Device {
    pub fn new(kind: Kind, domid: u16, devid: u32) -> Device {
        Device { kind, domid, devid, backend_domid: 0 }
    }

    /// The backend's directory.
    pub fn backend(&self) -> String {
        format!("/local/domain/{}/backend/{}/{}/{}", self.backend_domid, self.kind.as_str(), self.domid, self.devid)
    }

    /// The frontend's directory.
    pub fn frontend(&self) -> String {
        format!("/local/domain/{}/device/{}/{}", self.domid, self.kind.as_str(), self.devid)
    }

    /// The backend directory as the hotplug scripts get it (`XENBUS_PATH`, relative to dom0's home, as on Xen).
    fn xenbus_path(&self) -> String {
        format!("backend/{}/{}/{}", self.kind.as_str(), self.domid, self.devid)
    }
}

/// The nodes of a device's two directories, (name, value), in the order written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nodes {
    pub front: Vec<(&'static str, String)>,
    pub back: Vec<(&'static str, String)>,
    /// The hotplug script (a name in [`SCRIPTS_DIR`] or a path).
    pub script: String,
}

/// The script's path: a bare name is one of [`SCRIPTS_DIR`]'s, as in xl.
fn script_path(script: &str) -> String {
    if script.contains('/') {
        script.to_string()
    } else {
        format!("{SCRIPTS_DIR}/{script}")
    }
}

/// What libxl writes for a disk served by blkback (`type` says which kind of target the block script attaches:
/// `phy` a dom0 block device, `file` an image it puts on a loop device).
pub fn disk_nodes(dev: &Device, disk: &Disk) -> Nodes {
    let script = script_path(disk.script.as_deref().unwrap_or("block"));
    let is_file = !disk.target.starts_with("/dev/");
    let mode = if disk.access == Access::Ro { "r" } else { "w" };
    let device_type = if disk.cdrom { "cdrom" } else { "disk" };
    let back = vec![
        ("frontend", dev.frontend()),
        ("frontend-id", dev.domid.to_string()),
        ("params", disk.target.clone()),
        ("script", script.clone()),
        ("online", "1".into()),
        ("removable", u8::from(disk.cdrom).to_string()),
        ("bootable", "1".into()),
        ("state", state::INITIALISING.to_string()),
        ("dev", disk.vdev.clone()),
        ("type", if is_file { "file" } else { "phy" }.into()),
        ("mode", mode.into()),
        ("device-type", device_type.into()),
        ("discard-enable", "0".into()),
    ];
    let front = vec![
        ("backend", dev.backend()),
        ("backend-id", dev.backend_domid.to_string()),
        ("state", state::INITIALISING.to_string()),
        ("virtual-device", dev.devid.to_string()),
        ("device-type", device_type.into()),
    ];
    Nodes { front, back, script }
}

/// What libxl writes for a vif on a bridge; `mac` is the configured one or a fresh one.
pub fn vif_nodes(dev: &Device, vif: &Vif, mac: Mac) -> Nodes {
    let script = script_path(&vif.script);
    let mtu = vif.mtu.unwrap_or(1500).to_string();
    let mut back = vec![
        ("frontend", dev.frontend()),
        ("frontend-id", dev.domid.to_string()),
        ("online", "1".into()),
        ("state", state::INITIALISING.to_string()),
        ("script", script.clone()),
        ("mac", mac.to_string()),
        ("bridge", vif.bridge.clone()),
        ("handle", dev.devid.to_string()),
        ("type", "vif".into()),
        ("mtu", mtu.clone()),
    ];
    if !vif.ip.is_empty() {
        back.push(("ip", vif.ip.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")));
    }
    if let Some(name) = &vif.vifname {
        back.push(("vifname", name.clone()));
    }
    let front = vec![
        ("backend", dev.backend()),
        ("backend-id", dev.backend_domid.to_string()),
        ("state", state::INITIALISING.to_string()),
        ("handle", dev.devid.to_string()),
        ("mac", mac.to_string()),
        ("mtu", mtu),
    ];
    Nodes { front, back, script }
}

/// A fresh MAC address with Xen's prefix (00:16:3e), as libxl makes one.
pub fn random_mac() -> Mac {
    let mut b = [0u8; 3];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    Mac([0x00, 0x16, 0x3e, b[0] & 0x7f, b[1], b[2]])
}

/// Runs hotplug scripts.
pub trait Hotplug {
    /// Runs `script action` with `env` (a script reads and writes xenstore itself; `xs` is for stand-ins);
    /// Err(what it said) when it fails.
    fn run(&mut self, xs: &mut dyn Xenstore, script: &str, action: &str, env: &[(&str, String)]) -> Result<(), String>;
}

/// The real scripts, as processes.
pub struct Scripts;

impl Hotplug for Scripts {
    fn run(&mut self, _: &mut dyn Xenstore, script: &str, action: &str, env: &[(&str, String)]) -> Result<(), String> {
        let out = Command::new(script)
            .arg(action)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .map_err(|e| format!("cannot run {script}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            let said = String::from_utf8_lossy(&out.stderr);
            let said = said.lines().last().unwrap_or("").trim();
            Err(format!(
                "{script} {action} failed ({}){}",
                out.status,
                if said.is_empty() { String::new() } else { format!(": {said}") }
            ))
        }
    }
}

/// The environment of a device's hotplug script (libxl's names).
fn script_env(dev: &Device, script: &str) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("script", script.to_string()),
        ("XENBUS_TYPE", dev.kind.as_str().to_string()),
        ("XENBUS_PATH", dev.xenbus_path()),
        ("XENBUS_BASE_PATH", "backend".to_string()),
    ];
    if dev.kind == Kind::Vif {
        env.push(("vif", format!("vif{}.{}", dev.domid, dev.devid)));
    }
    env
}

fn state_of(xs: &mut dyn Xenstore, dir: &str) -> Option<u32> {
    xs.read(&format!("{dir}/state"))?.trim().parse().ok()
}

/// Polls until `done` or `timeout`; whether it was done.
fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Attaches a device: writes both directories, waits for the backend, runs the hotplug script and checks what it
/// reported. On failure what was written is removed again (and the script's remove run if it had run).
pub fn add(
    xs: &mut dyn Xenstore,
    hp: &mut dyn Hotplug,
    dev: &Device,
    nodes: &Nodes,
    timeout: Duration,
) -> Result<(), XmError> {
    let (back, front) = (dev.backend(), dev.frontend());
    if xs.read(&back).is_some() || xs.read(&front).is_some() {
        return Err(XmError::Failed(format!(
            "domain {} already has a {} device {}",
            dev.domid,
            dev.kind.as_str(),
            dev.devid
        )));
    }
    let failed = XmError::Failed;
    // Both directories in one transaction, as libxl writes them: the guest's xenbus probes a device as soon as
    // its directory appears, and one without `backend` yet would fail for good.
    let mut ops = vec![
        XsOp::Write(back.clone(), String::new()),
        XsOp::Perms(back.clone(), vec![format!("n{}", dev.backend_domid), format!("r{}", dev.domid)]),
    ];
    ops.extend(nodes.back.iter().map(|(k, v)| XsOp::Write(format!("{back}/{k}"), v.clone())));
    ops.push(XsOp::Write(front.clone(), String::new()));
    ops.push(XsOp::Perms(front.clone(), vec![format!("n{}", dev.domid), format!("r{}", dev.backend_domid)]));
    ops.extend(nodes.front.iter().map(|(k, v)| XsOp::Write(format!("{front}/{k}"), v.clone())));
    let written = xs.apply(&ops);
    let undo = |xs: &mut dyn Xenstore| {
        let _ = xs.rm(&front);
        let _ = xs.rm(&back);
    };
    if let Err(e) = written {
        undo(xs);
        return Err(e);
    }
    // The backend driver picks the directory up and says InitWait (netback has made vifD.N by then).
    if !wait_until(timeout, || state_of(xs, &back).is_some_and(|s| s >= state::INIT_WAIT)) {
        let st = state_of(xs, &back).unwrap_or(0);
        undo(xs);
        return Err(failed(format!(
            "the backend did not answer in {} s (state {st}; is dom0's xen-{}back loaded?)",
            timeout.as_secs(),
            if dev.kind == Kind::Vbd { "blk" } else { "net" }
        )));
    }
    let env = script_env(dev, &nodes.script);
    let (attach, detach) = dev.kind.actions();
    let ran = hp.run(xs, &nodes.script, attach, &env);
    let status = xs.read(&format!("{back}/hotplug-status"));
    // The scripts say why they failed in hotplug-error, as Xen's do; what they printed is the fallback.
    let why = xs.read(&format!("{back}/hotplug-error")).filter(|e| !e.is_empty());
    let said = |fallback: String| why.as_ref().map_or(fallback, |w| format!("{} {attach}: {w}", nodes.script));
    if let Err(e) = ran.map_err(said).and_then(|()| match status.as_deref() {
        Some("connected") => Ok(()),
        other => {
            Err(said(format!("{} {attach} reported hotplug-status {:?}", nodes.script, other.unwrap_or("(none)"))))
        }
    }) {
        let _ = xs.write(&format!("{back}/online"), "0");
        let _ = xs.rm(&front);
        let _ = hp.run(xs, &nodes.script, detach, &env);
        undo(xs);
        return Err(failed(e));
    }
    Ok(())
}

/// Detaches a device. `live`: the guest runs and is asked to close its frontend first (`*-detach`); otherwise
/// (the domain is gone) the backend is told Closing and the frontend directory is removed, which the backend takes
/// as the guest gone (libxl's forced removal). The
/// script's remove action always runs and both directories go, even when the backend does not answer in time.
/// Err only when the device does not exist.
pub fn remove(
    xs: &mut dyn Xenstore,
    hp: &mut dyn Hotplug,
    dev: &Device,
    live: bool,
    timeout: Duration,
) -> Result<RemoveReport, XmError> {
    let (back, front) = (dev.backend(), dev.frontend());
    if xs.read(&back).is_none() {
        return Err(XmError::Failed(format!("domain {} has no {} device {}", dev.domid, dev.kind.as_str(), dev.devid)));
    }
    let _ = xs.write(&format!("{back}/online"), "0");
    let was = state_of(xs, &back).unwrap_or(0);
    let active = (state::INIT_WAIT..state::CLOSING).contains(&was);
    // The backend's state says Closing, as libxl writes it, before the frontend goes: a backend driver that
    // unregisters on losing its frontend (blkback does, without a word) finds Closing there and says Closed as it
    // goes (Linux's xenbus_dev_remove), so the wait below ends at once instead of timing out.
    if active {
        let _ = xs.write(&format!("{back}/state"), &state::CLOSING.to_string());
    }
    if !live || !active {
        let _ = xs.rm(&front);
    }
    // A backend that never picked the device up has nothing to close.
    let closed = was < state::INIT_WAIT
        || wait_until(timeout, || state_of(xs, &back).is_none_or(|s| s == state::CLOSED || s < state::INIT_WAIT));
    let script = xs.read(&format!("{back}/script")).filter(|s| !s.is_empty());
    let mut script_error = None;
    if let Some(script) = &script {
        let (_, detach) = dev.kind.actions();
        script_error = hp.run(xs, script, detach, &script_env(dev, script)).err();
    }
    let _ = xs.rm(&front);
    let _ = xs.rm(&back);
    Ok(RemoveReport { closed, script_error })
}

/// How a removal went (it always removes; these are for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoveReport {
    /// The backend said Closed in time.
    pub closed: bool,
    /// The hotplug script's complaint, if any.
    pub script_error: Option<String>,
}

/// The device ids domain `domid` has of `kind`, from dom0's backend directories.
pub fn list(xs: &mut dyn Xenstore, domid: u16, kind: Kind) -> Vec<u32> {
    let mut ids: Vec<u32> = xs
        .directory(&format!("/local/domain/0/backend/{}/{domid}", kind.as_str()))
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    ids.sort_unstable();
    ids
}

/// Removes every device of a domain that is gone (destroyed, or never started); the problems met, for the log.
pub fn remove_all(xs: &mut dyn Xenstore, hp: &mut dyn Hotplug, domid: u16, timeout: Duration) -> Vec<String> {
    let mut problems = Vec::new();
    for kind in [Kind::Vbd, Kind::Vif] {
        for devid in list(xs, domid, kind) {
            let dev = Device::new(kind, domid, devid);
            match remove(xs, hp, &dev, false, timeout) {
                Ok(r) => {
                    if !r.closed {
                        problems.push(format!("{} {devid}: the backend did not close in time", kind.as_str()));
                    }
                    problems.extend(r.script_error);
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        let _ = xs.rm(&format!("/local/domain/0/backend/{}/{domid}", kind.as_str()));
    }
    problems
}

/// The `xm block-list` / `network-list` row of a device, from its two directories.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Row {
    /// The device id (Xen's `Vdev` / `Idx`).
    pub devid: u32,
    /// The backend domain.
    pub backend_id: u16,
    /// The frontend's state.
    pub state: u32,
    /// The backend's state.
    pub backend_state: u32,
    /// The frontend's event channel (`evtch`).
    pub evtchn: i64,
    /// The frontend's ring reference (`ring-ref`, or `tx-ring-ref` for a vif).
    pub ring_ref: i64,
    /// A vif's `rx-ring-ref` (-1 for a disk).
    pub rx_ring_ref: i64,
    /// The backend's directory.
    pub backend_path: String,
    /// The vif's MAC, the disk's target.
    pub detail: String,
}

/// The rows of every device of `kind` of domain `domid`.
pub fn rows(xs: &mut dyn Xenstore, domid: u16, kind: Kind) -> Vec<Row> {
    list(xs, domid, kind)
        .into_iter()
        .map(|devid| {
            let dev = Device::new(kind, domid, devid);
            let (front, back) = (dev.frontend(), dev.backend());
            let num =
                |xs: &mut dyn Xenstore, p: String| xs.read(&p).and_then(|v| v.trim().parse::<i64>().ok()).unwrap_or(-1);
            let (evtchn_node, ring_node, detail_node) = match kind {
                Kind::Vbd => ("event-channel", "ring-ref", format!("{back}/params")),
                Kind::Vif => ("event-channel-tx", "tx-ring-ref", format!("{back}/mac")),
            };
            let mut evtchn = num(xs, format!("{front}/{evtchn_node}"));
            if evtchn < 0 && kind == Kind::Vif {
                evtchn = num(xs, format!("{front}/event-channel"));
            }
            if evtchn < 0 {
                evtchn = num(xs, format!("{front}/queue-0/{evtchn_node}"));
            }
            let mut ring_ref = num(xs, format!("{front}/{ring_node}"));
            if ring_ref < 0 {
                ring_ref = num(xs, format!("{front}/queue-0/{ring_node}"));
            }
            if ring_ref < 0 && kind == Kind::Vbd {
                ring_ref = num(xs, format!("{front}/ring-ref0"));
            }
            let mut rx_ring_ref = -1;
            if kind == Kind::Vif {
                rx_ring_ref = num(xs, format!("{front}/rx-ring-ref"));
                if rx_ring_ref < 0 {
                    rx_ring_ref = num(xs, format!("{front}/queue-0/rx-ring-ref"));
                }
            }
            Row {
                devid,
                rx_ring_ref,
                backend_id: dev.backend_domid,
                state: num(xs, format!("{front}/state")).max(0) as u32,
                backend_state: num(xs, format!("{back}/state")).max(0) as u32,
                evtchn,
                ring_ref,
                backend_path: back.clone(),
                detail: xs.read(&detail_node).unwrap_or_default(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::lifecycle::tests::MemStore;
    use super::*;

    /// The store with a backend driver simulated on it: it says InitWait once its directory is complete, Closed
    /// when its frontend goes or the toolstack says Closing (unless `dead`). With `blkback`, it behaves as Linux's
    /// blkback with a dead guest instead: Closing from the toolstack changes nothing (no live frontend answers it),
    /// and its frontend's directory going makes it unregister, which says Closed only where the state already says
    /// Closing (xenbus_dev_remove).
    struct Backend {
        xs: MemStore,
        dead: bool,
        blkback: bool,
    }

    impl Xenstore for Backend {
        fn read(&mut self, path: &str) -> Option<String> {
            self.xs.read(path)
        }
        fn write(&mut self, path: &str, value: &str) -> Result<(), XmError> {
            self.xs.write(path, value)?;
            if !self.dead && path.starts_with("/local/domain/0/backend/") {
                let dir = path.rsplit_once('/').unwrap().0.to_string();
                if path.ends_with("/discard-enable") || path.ends_with("/mtu") {
                    self.xs.write(&format!("{dir}/state"), "2")?;
                } else if path.ends_with("/state") && value == "5" && !self.blkback {
                    self.xs.write(path, "6")?;
                }
            }
            Ok(())
        }
        fn rm(&mut self, path: &str) -> Result<(), XmError> {
            self.xs.rm(path)?;
            // /local/domain/D/device/KIND/N gone: its backend closes.
            let parts: Vec<&str> = path.split('/').collect();
            if !self.dead && parts.len() == 7 && parts[4] == "device" {
                let st = format!("/local/domain/0/backend/{}/{}/{}/state", parts[5], parts[3], parts[6]);
                let closing = self.xs.read(&st).as_deref() == Some("5");
                if self.xs.read(&st).is_some() && (!self.blkback || closing) {
                    self.xs.write(&st, "6")?;
                }
            }
            Ok(())
        }
        fn directory(&mut self, path: &str) -> Vec<String> {
            self.xs.directory(path)
        }
        fn set_perms(&mut self, path: &str, perms: &[String]) -> Result<(), XmError> {
            self.xs.set_perms(path, perms)
        }
    }

    /// Hotplug scripts stood in for: each call is logged; `add`/`online` writes hotplug-status (or fails).
    #[derive(Default)]
    struct Log {
        calls: Vec<String>,
        fail: bool,
    }

    impl Hotplug for Log {
        fn run(
            &mut self,
            xs: &mut dyn Xenstore,
            script: &str,
            action: &str,
            env: &[(&str, String)],
        ) -> Result<(), String> {
            let path = env.iter().find(|(k, _)| *k == "XENBUS_PATH").map(|(_, v)| v.clone()).unwrap();
            self.calls.push(format!("{script} {action} {path}"));
            if self.fail {
                xs.write(&format!("/local/domain/0/{path}/hotplug-error"), "no free loop device").unwrap();
                return Err("exit status 1".into());
            }
            if action == "add" || action == "online" {
                xs.write(&format!("/local/domain/0/{path}/hotplug-status"), "connected").unwrap();
            }
            Ok(())
        }
    }

    const T: Duration = Duration::from_millis(200);

    fn store() -> Backend {
        Backend { xs: MemStore::new(), dead: false, blkback: false }
    }

    fn disk(spec: &str) -> Disk {
        keel_config::disk::parse(spec).unwrap()
    }

    /// A destroyed guest's disk: blkback, losing its frontend, unregisters; told Closing first (as libxl tells
    /// it), it says Closed as it goes, so the removal does not wait out its timeout.
    #[test]
    fn a_dead_guests_disk_closes_at_once() {
        let (mut xs, mut hp) = (store(), Log::default());
        let dev = Device::new(Kind::Vbd, 4, 51712);
        add(&mut xs, &mut hp, &dev, &disk_nodes(&dev, &disk("file:/images/a.img,xvda,w")), T).unwrap();
        xs.xs.write("/local/domain/0/backend/vbd/4/51712/state", "4").unwrap();
        xs.blkback = true;
        let started = std::time::Instant::now();
        let r = remove(&mut xs, &mut hp, &dev, false, Duration::from_secs(5)).unwrap();
        assert!(r.closed, "the backend said Closed");
        assert!(started.elapsed() < Duration::from_secs(2), "no wait for the timeout: {:?}", started.elapsed());
        assert!(xs.read("/local/domain/0/backend/vbd/4/51712").is_none());
    }

    /// A file disk: libxl's nodes in both directories, the perms crossing over, the block script run with Xen's
    /// environment; then a destroy-time removal leaves nothing.
    #[test]
    fn a_disk_is_wired_and_unwired_as_libxl_does() {
        let (mut xs, mut hp) = (store(), Log::default());
        let dev = Device::new(Kind::Vbd, 3, 51712);
        let nodes = disk_nodes(&dev, &disk("file:/images/a.img,xvda,w"));
        add(&mut xs, &mut hp, &dev, &nodes, T).unwrap();
        let b = "/local/domain/0/backend/vbd/3/51712";
        let f = "/local/domain/3/device/vbd/51712";
        assert_eq!(xs.read(&format!("{b}/params")).unwrap(), "/images/a.img");
        assert_eq!(xs.read(&format!("{b}/type")).unwrap(), "file");
        assert_eq!(xs.read(&format!("{b}/mode")).unwrap(), "w");
        assert_eq!(xs.read(&format!("{b}/frontend")).unwrap(), f);
        assert_eq!(xs.read(&format!("{b}/frontend-id")).unwrap(), "3");
        assert_eq!(xs.read(&format!("{b}/dev")).unwrap(), "xvda");
        assert_eq!(xs.read(&format!("{f}/backend")).unwrap(), b);
        assert_eq!(xs.read(&format!("{f}/virtual-device")).unwrap(), "51712");
        assert_eq!(xs.read(&format!("{f}/device-type")).unwrap(), "disk");
        assert_eq!(xs.xs.get_perms(b), ["n0", "r3"]);
        assert_eq!(xs.xs.get_perms(f), ["n3", "r0"]);
        assert_eq!(hp.calls, ["/etc/xen/scripts/block add backend/vbd/3/51712"]);
        assert_eq!(list(&mut xs, 3, Kind::Vbd), [51712]);

        let problems = remove_all(&mut xs, &mut hp, 3, T);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(hp.calls[1], "/etc/xen/scripts/block remove backend/vbd/3/51712");
        assert!(xs.read(b).is_none() && xs.read(f).is_none());
        assert!(xs.read("/local/domain/0/backend/vbd/3").is_none());
    }

    /// A read-only phy: disk and a vif: their nodes; a live detach asks the frontend to close first.
    #[test]
    fn phy_disks_and_vifs() {
        let (mut xs, mut hp) = (store(), Log::default());
        let dev = Device::new(Kind::Vbd, 4, 51728);
        let nodes = disk_nodes(&dev, &disk("phy:/dev/loop3,xvdb,r"));
        assert!(nodes.back.contains(&("type", "phy".into())) && nodes.back.contains(&("mode", "r".into())));
        add(&mut xs, &mut hp, &dev, &nodes, T).unwrap();

        let vif = keel_config::vif::parse("mac=00:16:3e:01:02:03,bridge=xenbr0", 0).unwrap();
        let vdev = Device::new(Kind::Vif, 4, 0);
        let vn = vif_nodes(&vdev, &vif, vif.mac.unwrap());
        add(&mut xs, &mut hp, &vdev, &vn, T).unwrap();
        assert_eq!(xs.read("/local/domain/4/device/vif/0/mac").unwrap(), "00:16:3e:01:02:03");
        assert_eq!(xs.read("/local/domain/0/backend/vif/4/0/bridge").unwrap(), "xenbr0");
        assert_eq!(xs.read("/local/domain/0/backend/vif/4/0/handle").unwrap(), "0");
        assert_eq!(hp.calls[1], "/etc/xen/scripts/vif-bridge online backend/vif/4/0");
        let env = script_env(&vdev, &vn.script);
        assert!(env.contains(&("vif", "vif4.0".into())));

        let r = remove(&mut xs, &mut hp, &vdev, true, T).unwrap();
        assert!(r.closed && r.script_error.is_none());
        assert_eq!(hp.calls[2], "/etc/xen/scripts/vif-bridge offline backend/vif/4/0");
        assert!(xs.read("/local/domain/4/device/vif/0").is_none());
        assert_eq!(list(&mut xs, 4, Kind::Vif), Vec::<u32>::new());
        assert_eq!(list(&mut xs, 4, Kind::Vbd), [51728]);
        assert!(remove(&mut xs, &mut hp, &vdev, true, T).is_err(), "no such device any more");
    }

    /// A failing script, a backend that never answers, a device that exists already: each an error naming the
    /// device, with nothing left behind.
    #[test]
    fn failures_leave_nothing() {
        let (mut xs, mut hp) = (store(), Log { fail: true, ..Log::default() });
        let dev = Device::new(Kind::Vbd, 5, 51712);
        let nodes = disk_nodes(&dev, &disk("/images/a.img,raw,xvda,w"));
        let e = add(&mut xs, &mut hp, &dev, &nodes, T).unwrap_err().to_string();
        assert_eq!(e, "failed: /etc/xen/scripts/block add: no free loop device");
        assert_eq!(hp.calls.len(), 2, "add, then remove: {:?}", hp.calls);
        assert!(xs.read(&dev.backend()).is_none() && xs.read(&dev.frontend()).is_none());

        let mut dead = Backend { xs: MemStore::new(), dead: true, blkback: false };
        let mut hp = Log::default();
        let e = add(&mut dead, &mut hp, &dev, &nodes, T).unwrap_err().to_string();
        assert!(e.contains("did not answer") && e.contains("xen-blkback"), "{e}");
        assert!(hp.calls.is_empty() && dead.read(&dev.backend()).is_none());

        let (mut xs, mut hp) = (store(), Log::default());
        add(&mut xs, &mut hp, &dev, &nodes, T).unwrap();
        assert!(add(&mut xs, &mut hp, &dev, &nodes, T).unwrap_err().to_string().contains("already has"));
    }

    #[test]
    fn macs_have_xens_prefix() {
        let m = random_mac();
        assert_eq!(&m.0[..3], &[0x00, 0x16, 0x3e]);
        assert_eq!(m.0[3] & 0x80, 0);
    }
}
