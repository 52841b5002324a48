//! `xm create <ConfigFile> [NAME=VALUE]...`: reads a domain configuration
//! ([`keel_config`]: Xen's xl.cfg syntax), applies the command line's
//! settings after it, validates it fully, and starts the domain.
//!
//! A bare file name is looked up in the current directory and then in
//! `/etc/xen/`, as xm did. `-n` (xm's and xl's dry run) prints the
//! parsed configuration with every default filled in, as a config file
//! that reads back the same, or as JSON with `--json`, and starts
//! nothing. Warnings (unknown keys, as xl ignores them) go to stderr.
//!
//! Starting a domain is libxl's `libxl_domain_create_new` for a PVH guest, in this order:
//! 1. the kernel and ramdisk are read and the guest's memory planned ([`keel_builder::plan`]): a bad image is
//!    refused before anything exists; the name must be free and the memory available;
//! 2. `XEN_DOMCTL_createdomain` (PVH: HVM container with HAP, `maxvcpus` vCPUs, the UUID as its handle), max_mem
//!    (`maxmem` + 1 MiB, libxl's `LIBXL_MAXMEM_CONSTANT`, for the ACPI and special pages), the credit weight and cap;
//! 3. the xenstore tree libxl writes (`/local/domain/N` read-only to the guest, its `device`, `control`, `data`,
//!    ... directories its own; `name`, `domid`, `vm`, `memory/{target,static-max}`, `cpu/N/availability`,
//!    `console/*` with an empty read-only `tty` for xenconsoled to fill, `/vm/UUID`);
//! 4. the build ([`keel_builder::build`] over keel-xenctrl: memory, images, start_info, ACPI, rings, grants, boot
//!    vCPU), then `store/{ring-ref,port}` and `console/{ring-ref,port}`, XS_INTRODUCE, and the unpause (not
//!    with `-p`).
//!
//! Any failure after createdomain destroys the domain and removes its xenstore nodes (and releases it from
//! xenstored if it was introduced): nothing is left behind. Once the domain runs, `xm create` forks its monitor
//! ([`super::monitor`], as xl does), which applies on_poweroff/on_reboot/on_crash for as long as the domain lives.

use std::io::Write;

use keel_builder::{xc::XcOps, DomainSpec, Layout};
use keel_config::{find_config, DomainConfig};
use keel_xenctrl::Xc;
use keel_xenstore::client::Client;
use keel_xenstore::wire::typ;

use super::cmdtable::CreateArgs;
use super::commands::CmdResult;
use super::devices;
use super::format::json;
use super::XmError;

/// Reads and validates the configuration `args` name, printing its warnings.
pub fn read_config(args: &CreateArgs) -> Result<DomainConfig, XmError> {
    let path = find_config(&args.config_file);
    let overrides: Vec<(String, String)> =
        args.vars.iter().map(|v| (v.name().to_owned(), v.value().to_owned())).collect();
    let loaded = keel_config::load(&path, &overrides).map_err(|e| XmError::Failed(e.to_string()))?;
    for w in &loaded.warnings {
        eprintln!("{w}");
    }
    Ok(loaded.config)
}

/// `xm create`.
pub fn create(args: &CreateArgs) -> CmdResult {
    let config = read_config(args)?;
    if args.dryrun {
        let text = if args.json { json(&config) } else { config.to_config_text() };
        let mut out = std::io::stdout().lock();
        return out
            .write_all(text.as_bytes())
            .map_err(|e| XmError::Failed(format!("cannot write the configuration: {e}")));
    }
    // The checks that look at dom0's files (the kernel and ramdisk must be readable).
    config.check_files().map_err(|e| XmError::Failed(e.to_string()))?;
    let id = start_domain(&config, args.paused)?;
    println!("Started domain {} (id={id})", config.name);
    let _ = std::io::stdout().flush();
    // As xl: a detached monitor applies on_poweroff/on_reboot/on_crash for as long as the domain lives. Without
    // one the domain still runs; the failure is reported (and nothing else is left behind).
    if let Err(e) = super::monitor::spawn(&config, id) {
        eprintln!("xm: warning: domain {id} runs without its monitor (on_poweroff/on_reboot/on_crash): {e}");
    }
    if args.console {
        let mut xs = Client::open().map_err(|e| failed(format!("cannot reach xenstore: {e}")))?;
        wait_for_console(&mut xs, id);
        return super::console::attach_domain(id);
    }
    Ok(())
}

/// libxl's `LIBXL_MAXMEM_CONSTANT`: KiB beyond `maxmem` for the pages outside RAM (ACPI, special pages).
pub(super) const MAXMEM_SLACK_KIB: u64 = 1024;
/// `console/limit`, as libxl writes it.
const CONSOLE_LIMIT: u64 = 1_048_576;

fn failed(s: impl Into<String>) -> XmError {
    XmError::Failed(s.into())
}

/// The images read from dom0's files and the guest's memory planned with them.
type Planned = (Vec<u8>, Option<Vec<u8>>, Layout);

/// Reads the kernel and ramdisk and plans the guest's memory: every error of the images, before anything exists.
fn plan(config: &DomainConfig) -> Result<Planned, XmError> {
    let kernel =
        std::fs::read(&config.kernel).map_err(|e| failed(format!("cannot read the kernel {}: {e}", config.kernel)))?;
    let ramdisk = match &config.ramdisk {
        Some(r) => Some(std::fs::read(r).map_err(|e| failed(format!("cannot read the ramdisk {r}: {e}")))?),
        None => None,
    };
    let layout = keel_builder::plan(&spec(config, &kernel, ramdisk.as_deref()))
        .map_err(|e| failed(format!("{}: {e}", config.kernel)))?;
    Ok((kernel, ramdisk, layout))
}

fn spec<'a>(config: &'a DomainConfig, kernel: &'a [u8], ramdisk: Option<&'a [u8]>) -> DomainSpec<'a> {
    let mut s = DomainSpec::new(kernel, config.memory << 20, config.vcpus);
    s.ramdisk = ramdisk;
    s.cmdline = &config.cmdline;
    s
}

/// A fresh random UUID (version 4), as libxl_uuid_generate.
fn random_uuid() -> [u8; 16] {
    let mut u = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut u);
    }
    if u == [0; 16] {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        u = (t ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    u[6] = (u[6] & 0x0f) | 0x40;
    u[8] = (u[8] & 0x3f) | 0x80;
    u
}

/// The domain (by id) that already has `name` in xenstore, if any.
fn name_in_use(xs: &mut Client, name: &str) -> Option<u16> {
    let ids = xs.directory(0, "/local/domain").unwrap_or_default();
    ids.iter().filter_map(|s| s.parse::<u16>().ok()).find(|id| {
        xs.read(0, &format!("/local/domain/{id}/name"))
            .is_ok_and(|v| v.strip_suffix(&[0]).unwrap_or(&v) == name.as_bytes())
    })
}

/// A domain half made: what to undo if a later step fails.
struct Partial<'a> {
    xc: &'a Xc,
    xs: &'a mut Client,
    id: u16,
    vm: String,
    introduced: bool,
}

impl Partial<'_> {
    fn xs_err(what: &str, e: keel_xenstore::client::Error) -> XmError {
        failed(format!("xenstore: {what}: {e}"))
    }

    fn write(&mut self, path: &str, value: &str) -> Result<(), XmError> {
        xs_write(self.xs, path, value)
    }

    /// Destroys the domain and removes what was written for it.
    fn undo(self) {
        if self.introduced {
            let _ = self.xs.request(typ::RELEASE, 0, format!("{}\0", self.id).as_bytes());
        }
        let _ = self.xc.destroy_domain(self.id);
        for problem in devices::remove_all(self.xs, &mut devices::Scripts, self.id, devices::CLOSE_TIMEOUT) {
            eprintln!("xm: domain {}: {problem}", self.id);
        }
        remove_tree(self.xs, self.id, &self.vm);
    }
}

/// Writes one node, or sets its permissions, with the path in the error.
fn xs_write(xs: &mut Client, path: &str, value: &str) -> Result<(), XmError> {
    xs.write(0, path, value.as_bytes()).map_err(|e| Partial::xs_err(path, e))
}

fn xs_perms(xs: &mut Client, path: &str, perms: &[String]) -> Result<(), XmError> {
    xs.set_perms(0, path, perms).map_err(|e| Partial::xs_err(path, e))
}

/// The xenstore tree of a new PVH domain `id`, as libxl__domain_make and libxl__build_post write it (the ring
/// nodes come after the build): `/local/domain/N` read-only to the guest, its `device`, `control`, `data`, ...
/// its own, the console front end read-only to it with an empty `tty` for xenconsoled, `vm` at `/vm/UUID`.
fn write_tree(xs: &mut Client, id: u16, vm: &str, config: &DomainConfig, uuid: &str) -> Result<(), XmError> {
    let dom = format!("/local/domain/{id}");
    let ro = vec!["n0".to_string(), format!("r{id}")];
    let own = vec![format!("n{id}")];
    xs_write(xs, vm, "")?;
    xs_perms(xs, vm, &ro)?;
    xs_write(xs, &format!("{vm}/uuid"), uuid)?;
    xs_write(xs, &format!("{vm}/name"), &config.name)?;
    xs_write(xs, &format!("{vm}/image/ostype"), "pvh")?;
    xs_write(xs, &dom, "")?;
    xs_perms(xs, &dom, &ro)?;
    xs_write(xs, &format!("{dom}/vm"), vm)?;
    xs_write(xs, &format!("{dom}/name"), &config.name)?;
    xs_write(xs, &format!("{dom}/domid"), &id.to_string())?;
    for d in ["device", "control", "data", "drivers", "feature", "attr", "error"] {
        let path = format!("{dom}/{d}");
        xs_write(xs, &path, "")?;
        xs_perms(xs, &path, &own)?;
    }
    for n in ["shutdown", "sysrq"] {
        xs_write(xs, &format!("{dom}/control/{n}"), "")?;
    }
    xs_write(xs, &format!("{dom}/control/platform-feature-multiprocessor-suspend"), "1")?;
    xs_write(xs, &format!("{dom}/control/platform-feature-xs_reset_watches"), "1")?;
    xs_write(xs, &format!("{dom}/memory/static-max"), &(config.maxmem << 10).to_string())?;
    xs_write(xs, &format!("{dom}/memory/target"), &(config.memory << 10).to_string())?;
    xs_write(xs, &format!("{dom}/memory/videoram"), "-1")?;
    for v in 0..config.maxvcpus {
        let state = if v < config.vcpus { "online" } else { "offline" };
        xs_write(xs, &format!("{dom}/cpu/{v}/availability"), state)?;
    }
    // The console front end: read-only to the guest (its `tty` too: xenconsoled writes the pty there).
    let con = format!("{dom}/console");
    xs_write(xs, &con, "")?;
    xs_perms(xs, &con, &ro)?;
    xs_write(xs, &format!("{con}/backend-id"), "0")?;
    xs_write(xs, &format!("{con}/limit"), &CONSOLE_LIMIT.to_string())?;
    xs_write(xs, &format!("{con}/type"), "xenconsoled")?;
    xs_write(xs, &format!("{con}/output"), "pty")?;
    xs_write(xs, &format!("{con}/tty"), "")?;
    let store = format!("{dom}/store");
    xs_write(xs, &store, "")?;
    xs_perms(xs, &store, &ro)?;
    // The configuration, for `xm save` (libxl keeps it in /var/lib/xen/userdata): dom0's alone, gone with the
    // domain's /vm directory.
    let saved = format!("{vm}/{CONFIG_NODE}");
    let text = config.to_config_text();
    if text.len() > keel_xenstore::wire::PAYLOAD_MAX - saved.len() - 2 {
        eprintln!("xm: warning: the configuration of '{}' is too long to keep: `xm save` will refuse it", config.name);
        return Ok(());
    }
    xs_write(xs, &saved, &text)?;
    xs_perms(xs, &saved, &["n0".to_string()])?;
    Ok(())
}

/// Where [`write_tree`] keeps the domain's configuration, under its `/vm/<uuid>`.
pub const CONFIG_NODE: &str = "keel-config";

/// Removes what [`write_tree`] and the build wrote.
fn remove_tree(xs: &mut Client, id: u16, vm: &str) {
    let _ = xs.rm(0, &format!("/local/domain/{id}"));
    // Unless another domain shares it (a migration's source on this host).
    if !super::lifecycle::vm_shared(xs, vm, id) {
        let _ = xs.rm(0, vm);
    }
}

/// The rings a built or restored domain talks to xenstored and xenconsoled on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rings {
    pub store_pfn: u64,
    pub store_port: u32,
    pub console_pfn: u64,
    pub console_port: u32,
}

/// Builds and starts the domain `config` describes (leaving it paused with `paused`, xm create's `-p`); its id.
/// The monitor's restarts build through here too.
pub fn start_domain(config: &DomainConfig, paused: bool) -> Result<u16, XmError> {
    let (kernel, ramdisk, layout) = plan(config)?;
    make_domain(config, paused, &mut |xc, id| {
        let mut ops = XcOps { xc, unpause: false };
        let built = keel_builder::build(&mut ops, id, &spec(config, &kernel, ramdisk.as_deref()), &layout)
            .map_err(|e| failed(format!("building domain '{}': {e}", config.name)))?;
        Ok(Rings {
            store_pfn: built.store_pfn,
            store_port: built.store_port,
            console_pfn: built.console_pfn,
            console_port: built.console_port,
        })
    })
}

/// Makes the domain `config` describes as libxl does (see the module's description), with `fill` for its memory
/// and vCPUs (the build, or a restore's saved state) once it exists with its xenstore tree; then its rings are
/// introduced, its devices attached, and it is unpaused unless `paused`. Any failure leaves nothing behind.
pub fn make_domain(
    config: &DomainConfig,
    paused: bool,
    fill: &mut dyn FnMut(&Xc, u16) -> Result<Rings, XmError>,
) -> Result<u16, XmError> {
    make(config, paused, fill, None)
}

/// What [`make_domain_staged`] runs once the devices are attached.
pub type Finish<'a> = dyn FnMut(&Xc, u16) -> Result<(), XmError> + 'a;

/// As [`make_domain`] for a migration's incoming domain, left paused: `fill` loads the first state (the rings'
/// parameters and the first round of memory), the devices are attached (their hotplug scripts run while the guest
/// still runs on the source), then `finish` loads the rest (the last rounds and the vCPUs), and only then are the
/// rings introduced to xenstored and xenconsoled, whose pages are final by then.
pub fn make_domain_staged(
    config: &DomainConfig,
    fill: &mut dyn FnMut(&Xc, u16) -> Result<Rings, XmError>,
    finish: &mut Finish<'_>,
) -> Result<u16, XmError> {
    make(config, true, fill, Some(finish))
}

fn make(
    config: &DomainConfig,
    paused: bool,
    fill: &mut dyn FnMut(&Xc, u16) -> Result<Rings, XmError>,
    finish: Option<&mut Finish<'_>>,
) -> Result<u16, XmError> {
    let xc = Xc::open().map_err(|e| failed(e.to_string()))?;
    let mut xs = Client::open().map_err(|e| failed(format!("cannot reach xenstore: {e}")))?;
    if let Some(id) = name_in_use(&mut xs, &config.name) {
        return Err(failed(format!("domain name '{}' is already in use by domain {id}", config.name)));
    }
    let free = xc.physinfo().map_err(|e| failed(format!("physinfo: {e}")))?.free_pages << 2;
    let need = (config.memory << 10) + MAXMEM_SLACK_KIB;
    if need > free {
        return Err(failed(format!(
            "not enough free memory for '{}': {} MiB asked, {} MiB free",
            config.name,
            config.memory,
            free >> 10
        )));
    }
    let uuid = config.uuid.map_or_else(random_uuid, |u| u.0);
    let uuid_text = keel_config::Uuid(uuid).to_string();
    let id = xc
        .create_domain(0, &keel_xenctrl::pvh_domain_config(config.maxvcpus, uuid))
        .map_err(|e| failed(format!("cannot create domain '{}': {e}", config.name)))?;
    let mut p = Partial { xc: &xc, xs: &mut xs, id, vm: format!("/vm/{uuid_text}"), introduced: false };
    match build_and_run(&mut p, config, paused, &uuid_text, fill, finish) {
        Ok(()) => Ok(id),
        Err(e) => {
            p.undo();
            Err(e)
        }
    }
}

/// Every step after createdomain.
fn build_and_run(
    p: &mut Partial<'_>,
    config: &DomainConfig,
    paused: bool,
    uuid: &str,
    fill: &mut dyn FnMut(&Xc, u16) -> Result<Rings, XmError>,
    finish: Option<&mut Finish<'_>>,
) -> Result<(), XmError> {
    let (xc, id) = (p.xc, p.id);
    let step = |what: &str, r: keel_xenctrl::Result<()>| r.map_err(|e| failed(format!("{what}: {e}")));
    step("max_mem", xc.set_max_mem(id, (config.maxmem << 10) + MAXMEM_SLACK_KIB))?;
    let weight = u16::try_from(config.cpu_weight).unwrap_or(u16::MAX);
    let cap = u16::try_from(config.cap).unwrap_or(u16::MAX);
    step("scheduler parameters", xc.set_sched_credit(id, Some(weight), Some(cap)))?;
    pin_vcpus(xc, id, config)?;
    let vm = p.vm.clone();
    write_tree(p.xs, id, &vm, config, uuid)?;
    let built = fill(xc, id)?;
    match finish {
        None => {
            connect_rings(p, &built)?;
            attach_devices(p.xs, id, config)?;
        }
        Some(finish) => {
            attach_devices(p.xs, id, config)?;
            finish(xc, id)?;
            connect_rings(p, &built)?;
        }
    }
    if !paused {
        step("unpause", xc.unpause_domain(id))?;
    }
    Ok(())
}

/// Writes the ring nodes and introduces the domain to xenstored.
fn connect_rings(p: &mut Partial<'_>, built: &Rings) -> Result<(), XmError> {
    let id = p.id;
    let dom = format!("/local/domain/{id}");
    p.write(&format!("{dom}/store/ring-ref"), &built.store_pfn.to_string())?;
    p.write(&format!("{dom}/store/port"), &built.store_port.to_string())?;
    p.write(&format!("{dom}/console/ring-ref"), &built.console_pfn.to_string())?;
    p.write(&format!("{dom}/console/port"), &built.console_port.to_string())?;
    let intro = format!("{id}\0{}\0{}\0", built.store_pfn, built.store_port);
    p.xs.request(typ::INTRODUCE, 0, intro.as_bytes()).map_err(|e| failed(format!("xenstore introduce: {e}")))?;
    p.introduced = true;
    Ok(())
}

/// The config's disks and vifs, attached as libxl does before the domain first runs (the backends in dom0, the
/// hotplug scripts run here: [`devices`]).
fn attach_devices(xs: &mut Client, id: u16, config: &DomainConfig) -> Result<(), XmError> {
    for disk in &config.disk {
        let dev = devices::Device::new(devices::Kind::Vbd, id, disk.vbd);
        let nodes = devices::disk_nodes(&dev, disk);
        devices::add(xs, &mut devices::Scripts, &dev, &nodes, devices::INIT_TIMEOUT)
            .map_err(|e| failed(format!("disk '{}': {}", disk.vdev, e.reason())))?;
    }
    for vif in &config.vif {
        let dev = devices::Device::new(devices::Kind::Vif, id, vif.devid);
        let nodes = devices::vif_nodes(&dev, vif, vif.mac.unwrap_or_else(devices::random_mac));
        devices::add(xs, &mut devices::Scripts, &dev, &nodes, devices::INIT_TIMEOUT)
            .map_err(|e| failed(format!("vif {}: {}", vif.devid, e.reason())))?;
    }
    Ok(())
}

/// `cpus = ...`: each vCPU's hard affinity, as libxl sets it before the domain first runs.
fn pin_vcpus(xc: &Xc, id: u16, config: &DomainConfig) -> Result<(), XmError> {
    let Some(cpus) = &config.cpus else { return Ok(()) };
    let info = xc.physinfo().map_err(|e| failed(format!("physinfo: {e}")))?;
    let bytes = (info.max_cpu_id as usize + 1).div_ceil(8);
    // Keel reports one NUMA node holding every CPU; a host with more would need the CPU topology here.
    let node_cpus = |n: u32| if n == 0 && info.nr_nodes <= 1 { (0..info.nr_cpus).collect() } else { Vec::new() };
    for v in 0..config.maxvcpus {
        let Some(list) = cpus.for_vcpu(v) else { continue };
        let set = list.resolve(info.nr_cpus, node_cpus);
        if !set.iter().any(|&c| c < info.nr_cpus) {
            return Err(failed(format!(
                "cpus: vCPU {v}: '{list}' selects no CPU of this host (CPUs 0 to {})",
                info.nr_cpus.saturating_sub(1)
            )));
        }
        let mut map = vec![0u8; bytes];
        for c in set.into_iter().filter(|&c| (c as usize) < bytes * 8) {
            map[c as usize / 8] |= 1 << (c % 8);
        }
        xc.set_vcpu_affinity(id, v, Some(&map), None)
            .map_err(|e| failed(format!("cpus: pinning vCPU {v} to '{list}': {e}")))?;
    }
    Ok(())
}

/// Waits (up to 5 s) for xenconsoled to write the domain's pty.
fn wait_for_console(xs: &mut Client, id: u16) {
    let node = format!("/local/domain/{id}/console/tty");
    for _ in 0..50 {
        if xs.read(0, &node).is_ok_and(|v| !v.strip_suffix(&[0]).unwrap_or(&v).is_empty()) {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_xenstore::server::Server;
    use keel_xenstore::store::Store;

    fn config(text: &str) -> DomainConfig {
        keel_config::from_text("t.cfg", text, &[]).expect("a valid config").config
    }

    /// The tree libxl writes for a PVH domU, with its permissions, and nothing left once removed.
    #[test]
    fn the_domains_xenstore_tree_is_libxls() {
        let dir = std::env::temp_dir().join(format!("keel-xm-tree-{}", std::process::id()));
        let path = dir.join("socket");
        let server = Server::new(Store::default(), Box::new(|_| {}));
        let listener = server.bind(&path).expect("bind");
        let s = server.clone();
        std::thread::spawn(move || s.accept_loop(listener));
        let mut xs = Client::unix(&path).expect("connect");
        let before = server.with_store(|s| s.len());
        let cfg = config("name = \"web\"\nkernel = \"/k\"\nmemory = 64\nmaxmem = 128\nvcpus = 1\nmaxvcpus = 2\n");
        write_tree(&mut xs, 7, "/vm/u-u", &cfg, "u-u").unwrap();
        let read = |xs: &mut Client, p: &str| String::from_utf8(xs.read(0, p).unwrap()).unwrap();
        assert_eq!(read(&mut xs, "/local/domain/7/name"), "web");
        assert_eq!(read(&mut xs, "/local/domain/7/domid"), "7");
        assert_eq!(read(&mut xs, "/local/domain/7/vm"), "/vm/u-u");
        assert_eq!(read(&mut xs, "/local/domain/7/memory/target"), "65536");
        assert_eq!(read(&mut xs, "/local/domain/7/memory/static-max"), "131072");
        assert_eq!(read(&mut xs, "/local/domain/7/cpu/0/availability"), "online");
        assert_eq!(read(&mut xs, "/local/domain/7/cpu/1/availability"), "offline");
        assert_eq!(read(&mut xs, "/local/domain/7/console/type"), "xenconsoled");
        assert_eq!(read(&mut xs, "/local/domain/7/console/tty"), "");
        assert_eq!(read(&mut xs, "/vm/u-u/uuid"), "u-u");
        let ro = ["n0", "r7"];
        assert_eq!(xs.get_perms(0, "/local/domain/7").unwrap(), ro);
        assert_eq!(xs.get_perms(0, "/local/domain/7/console/tty").unwrap(), ro, "the guest cannot move its pty");
        assert_eq!(xs.get_perms(0, "/local/domain/7/store").unwrap(), ro);
        assert_eq!(xs.get_perms(0, "/local/domain/7/control/shutdown").unwrap(), ["n7"], "the guest's own");
        assert_eq!(xs.get_perms(0, "/local/domain/7/data").unwrap(), ["n7"]);
        remove_tree(&mut xs, 7, "/vm/u-u");
        assert!(xs.read(0, "/local/domain/7").is_err());
        // `/vm` itself stays, as on Xen (libxl never removes it).
        assert_eq!(server.with_store(|s| s.len()), before + 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
