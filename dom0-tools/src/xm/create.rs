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
//! xenstored if it was introduced): nothing is left behind.

use std::io::Write;

use keel_builder::{xc::XcOps, DomainSpec, Layout};
use keel_config::{find_config, DomainConfig};
use keel_xenctrl::Xc;
use keel_xenstore::client::Client;
use keel_xenstore::wire::typ;

use super::cmdtable::CreateArgs;
use super::commands::CmdResult;
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
    start(&config, args)
}

/// libxl's `LIBXL_MAXMEM_CONSTANT`: KiB beyond `maxmem` for the pages outside RAM (ACPI, special pages).
const MAXMEM_SLACK_KIB: u64 = 1024;
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
        self.xs.write(0, path, value.as_bytes()).map_err(|e| Self::xs_err(path, e))
    }

    fn perms(&mut self, path: &str, perms: &[String]) -> Result<(), XmError> {
        self.xs.set_perms(0, path, perms).map_err(|e| Self::xs_err(path, e))
    }

    /// Destroys the domain and removes what was written for it.
    fn undo(self) {
        if self.introduced {
            let _ = self.xs.request(typ::RELEASE, 0, format!("{}\0", self.id).as_bytes());
        }
        let _ = self.xc.destroy_domain(self.id);
        let _ = self.xs.rm(0, &format!("/local/domain/{}", self.id));
        let _ = self.xs.rm(0, &self.vm);
    }
}

/// The xenstore tree of a new PVH domain, as libxl__domain_make and libxl__build_post write it (the ring nodes
/// come after the build).
fn write_tree(p: &mut Partial<'_>, config: &DomainConfig, uuid: &str) -> Result<(), XmError> {
    let id = p.id;
    let dom = format!("/local/domain/{id}");
    let ro = vec!["n0".to_string(), format!("r{id}")];
    let own = vec![format!("n{id}")];
    p.write(&p.vm.clone(), "")?;
    let vm = p.vm.clone();
    p.perms(&vm, &ro)?;
    p.write(&format!("{vm}/uuid"), uuid)?;
    p.write(&format!("{vm}/name"), &config.name)?;
    p.write(&format!("{vm}/image/ostype"), "pvh")?;
    p.write(&dom, "")?;
    p.perms(&dom, &ro)?;
    p.write(&format!("{dom}/vm"), &vm)?;
    p.write(&format!("{dom}/name"), &config.name)?;
    p.write(&format!("{dom}/domid"), &id.to_string())?;
    for d in ["device", "control", "data", "drivers", "feature", "attr", "error"] {
        let path = format!("{dom}/{d}");
        p.write(&path, "")?;
        p.perms(&path, &own)?;
    }
    for n in ["shutdown", "sysrq"] {
        let path = format!("{dom}/control/{n}");
        p.write(&path, "")?;
        p.perms(&path, &own)?;
    }
    p.write(&format!("{dom}/control/platform-feature-multiprocessor-suspend"), "1")?;
    p.write(&format!("{dom}/control/platform-feature-xs_reset_watches"), "1")?;
    let kib = config.memory << 10;
    p.write(&format!("{dom}/memory/static-max"), &(config.maxmem << 10).to_string())?;
    p.write(&format!("{dom}/memory/target"), &kib.to_string())?;
    p.write(&format!("{dom}/memory/videoram"), "-1")?;
    for v in 0..config.maxvcpus {
        let state = if v < config.vcpus { "online" } else { "offline" };
        p.write(&format!("{dom}/cpu/{v}/availability"), state)?;
    }
    // The console front end: read-only to the guest (its `tty` too: xenconsoled writes the pty there).
    let con = format!("{dom}/console");
    p.write(&con, "")?;
    p.perms(&con, &ro)?;
    p.write(&format!("{con}/backend-id"), "0")?;
    p.write(&format!("{con}/limit"), &CONSOLE_LIMIT.to_string())?;
    p.write(&format!("{con}/type"), "xenconsoled")?;
    p.write(&format!("{con}/output"), "pty")?;
    p.write(&format!("{con}/tty"), "")?;
    let store = format!("{dom}/store");
    p.write(&store, "")?;
    p.perms(&store, &ro)?;
    Ok(())
}

/// Builds and starts the domain `config` describes (attaching its console with `-c`, leaving it paused with `-p`).
fn start(config: &DomainConfig, args: &CreateArgs) -> CmdResult {
    let (kernel, ramdisk, layout) = plan(config)?;
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
    match build_and_run(&mut p, config, args, &kernel, ramdisk.as_deref(), &layout, &uuid_text) {
        Ok(()) => {}
        Err(e) => {
            p.undo();
            return Err(e);
        }
    }
    println!("Started domain {} (id={id})", config.name);
    let _ = std::io::stdout().flush();
    if args.console {
        wait_for_console(&mut xs, id);
        return super::console::attach_domain(id);
    }
    Ok(())
}

/// Every step after createdomain.
fn build_and_run(
    p: &mut Partial<'_>,
    config: &DomainConfig,
    args: &CreateArgs,
    kernel: &[u8],
    ramdisk: Option<&[u8]>,
    layout: &Layout,
    uuid: &str,
) -> Result<(), XmError> {
    let (xc, id) = (p.xc, p.id);
    let step = |what: &str, r: keel_xenctrl::Result<()>| r.map_err(|e| failed(format!("{what}: {e}")));
    step("max_mem", xc.set_max_mem(id, (config.maxmem << 10) + MAXMEM_SLACK_KIB))?;
    let weight = u16::try_from(config.cpu_weight).unwrap_or(u16::MAX);
    let cap = u16::try_from(config.cap).unwrap_or(u16::MAX);
    step("scheduler parameters", xc.set_sched_credit(id, Some(weight), Some(cap)))?;
    write_tree(p, config, uuid)?;
    let mut ops = XcOps { xc, unpause: false };
    let built = keel_builder::build(&mut ops, id, &spec(config, kernel, ramdisk), layout)
        .map_err(|e| failed(format!("building domain '{}': {e}", config.name)))?;
    let dom = format!("/local/domain/{id}");
    p.write(&format!("{dom}/store/ring-ref"), &built.store_pfn.to_string())?;
    p.write(&format!("{dom}/store/port"), &built.store_port.to_string())?;
    p.write(&format!("{dom}/console/ring-ref"), &built.console_pfn.to_string())?;
    p.write(&format!("{dom}/console/port"), &built.console_port.to_string())?;
    let intro = format!("{id}\0{}\0{}\0", built.store_pfn, built.store_port);
    p.xs.request(typ::INTRODUCE, 0, intro.as_bytes()).map_err(|e| failed(format!("xenstore introduce: {e}")))?;
    p.introduced = true;
    if !args.paused {
        step("unpause", xc.unpause_domain(id))?;
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
