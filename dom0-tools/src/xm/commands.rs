//! The `xm` command handlers: one function per command of the table.
//!
//! Each receives its already parsed and validated arguments. The host-level and read-only commands ask the
//! hypervisor through privcmd ([`keel_xenctrl`]) and dom0's xenstored (domain names), and print in the layouts of
//! [`super::format`] / [`super::hostinfo`] / [`super::top`], or JSON with `--json`. The lifecycle commands are in
//! [`super::lifecycle`]; the rest of those that act on guest domains report [`XmError::NotAvailable`] until Keel can
//! create domUs (issue 12).

use std::io::Write;
use std::path::Path;

use keel_abi::domctl::GetDomainInfo;
use keel_xenctrl::Xc;

use super::cmdtable::{
    CreateArgs, DmesgArgs, DomidArgs, DomnameArgs, DumpCoreArgs, InfoArgs, ListArgs, LogArgs, MigrateArgs, RestoreArgs,
    SaveArgs, SchedCreditArgs, TopArgs, UptimeArgs, VcpuListArgs, VcpuPinArgs, VnetListArgs,
};
use super::format::{self, json, CreditPool, CreditRow, DomainLong, DomainRow, UptimeRow, VcpuRow};
use super::{top as topfmt, XmError};
use crate::cpus::{format_cpumap, CpuPin, CpuSelection, VcpuSelection};
use crate::domain::DomainRef;

/// The result of a command handler.
pub type CmdResult = Result<(), XmError>;

/// `xm create <ConfigFile> [-c] [-p] [-n] [--json] [vars]`
pub fn create(args: &CreateArgs) -> CmdResult {
    super::create::create(args)
}

/// `xm destroy <Domain>`
pub use super::lifecycle::destroy;

/// `xm dump-core [-L] [-C] <Domain> [Filename]`
pub fn dump_core(args: &DumpCoreArgs) -> CmdResult {
    super::dumpcore::command(args)
}

/// `xm mem-set <Domain> <Mem>`
pub use super::lifecycle::mem_set;

/// `xm migrate [-l] <Domain> <Host>`
pub fn migrate(args: &MigrateArgs) -> CmdResult {
    super::migrate::migrate(args)
}

/// `xm pause <Domain>`
pub use super::lifecycle::pause;

/// `xm reboot [-w] (-a | <Domain>)`
pub use super::lifecycle::reboot;

/// `xm rename <Domain> <NewName>`
pub use super::lifecycle::rename;

/// `xm restore <CheckpointFile>`
pub fn restore(args: &RestoreArgs) -> CmdResult {
    super::save::restore(args)
}

/// `xm save <Domain> <CheckpointFile>`
pub fn save(args: &SaveArgs) -> CmdResult {
    super::save::save(args)
}

/// `xm shutdown [-w] (-a | <Domain>)`
pub use super::lifecycle::shutdown;

/// `xm sysrq <Domain> <letter>`
pub use super::lifecycle::sysrq;

/// `xm unpause <Domain>`
pub use super::lifecycle::unpause;

/// `xm vcpu-set <Domain> <vCPUs>`
pub use super::lifecycle::vcpu_set;

/// Writes `text` to stdout. A reader that went away (`xm dmesg | head`) is not an error.
fn emit(text: &str) -> CmdResult {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(XmError::Failed(format!("stdout: {e}"))),
        _ => Ok(()),
    }
}

fn failed(what: &str) -> impl Fn(keel_xenctrl::Error) -> XmError + '_ {
    move |e| XmError::Failed(format!("{what}: {e}"))
}

/// The hypervisor (privcmd) and, where it answers, dom0's xenstored.
struct Host {
    xc: Xc,
    store: Option<keel_xenstore::client::Client>,
}

impl Host {
    fn open() -> Result<Host, XmError> {
        let xc = Xc::open().map_err(|e| XmError::Failed(e.to_string()))?;
        Ok(Host { xc, store: keel_xenstore::client::Client::open().ok() })
    }

    fn read(&mut self, path: &str) -> Option<String> {
        let v = self.store.as_mut()?.read(0, path).ok()?;
        Some(String::from_utf8_lossy(&v).into_owned())
    }

    /// A domain's name, from `/local/domain/<id>/name` as xl reads it ("(null)" when it has none).
    fn name(&mut self, id: u16) -> String {
        self.read(&format!("/local/domain/{id}/name")).unwrap_or_else(|| "(null)".into())
    }

    /// A CPU pool's name (`/local/pool/<id>/name`); Xen's default for pool 0 when the store has none.
    fn pool_name(&mut self, id: u32) -> String {
        self.read(&format!("/local/pool/{id}/name")).unwrap_or_else(|| format!("Pool-{id}"))
    }

    fn domains(&self) -> Result<Vec<GetDomainInfo>, XmError> {
        self.xc.domains().map_err(failed("getdomaininfolist"))
    }

    /// The domain a `<Domain>` argument names: by id, one the hypervisor has; by name, the one xenstore calls so.
    fn find(&mut self, r: &DomainRef) -> Result<(GetDomainInfo, String), XmError> {
        match r {
            DomainRef::Id(id) => {
                let d = self.xc.domain_info(id.get()).map_err(failed("getdomaininfo"))?;
                let d = d.ok_or_else(|| XmError::NoDomain(r.to_string()))?;
                let name = self.name(d.domain);
                Ok((d, name))
            }
            DomainRef::Name(n) => {
                for d in self.domains()? {
                    let name = self.name(d.domain);
                    if name == n.as_str() {
                        return Ok((d, name));
                    }
                }
                Err(XmError::NoDomain(r.to_string()))
            }
        }
    }

    /// The domains named, in the order given, or every domain if none is.
    fn select(&mut self, refs: &[DomainRef]) -> Result<Vec<(GetDomainInfo, String)>, XmError> {
        if refs.is_empty() {
            let all = self.domains()?;
            Ok(all.into_iter().map(|d| (d, self.name(d.domain))).collect())
        } else {
            refs.iter().map(|r| self.find(r)).collect()
        }
    }

    /// Bytes of a CPU map covering every CPU the host can have (xl: 8·⌈(max_cpu_id+1)/8⌉ bits), and the CPUs online.
    fn cpumap_size(&self) -> Result<(usize, u32), XmError> {
        let p = self.xc.physinfo().map_err(failed("physinfo"))?;
        Ok(((p.max_cpu_id as usize + 1).div_ceil(8), p.nr_cpus))
    }
}

/// `xm domid <DomainName>`
pub fn domid(args: &DomidArgs) -> CmdResult {
    let mut host = Host::open()?;
    let (d, name) = host.find(&DomainRef::Name(args.name.clone()))?;
    if args.json {
        emit(&json(&serde_json::json!({ "name": name, "domid": d.domain })))
    } else {
        emit(&format!("{}\n", d.domain))
    }
}

/// `xm domname <DomainId>`
pub fn domname(args: &DomnameArgs) -> CmdResult {
    let mut host = Host::open()?;
    let (d, name) = host.find(&DomainRef::Id(args.id))?;
    if args.json {
        emit(&json(&serde_json::json!({ "domid": d.domain, "name": name })))
    } else {
        emit(&format!("{name}\n"))
    }
}

/// `xm list [-l] [Domain...]`: every domain (or those named) as `xl list` prints them; `-l` adds what the
/// hypervisor knows of each (the most memory it may hold, its vCPUs, its scheduler parameters).
pub fn list(args: &ListArgs) -> CmdResult {
    let mut host = Host::open()?;
    let doms = host.select(&args.domains)?;
    if args.long {
        let long: Vec<DomainLong> = doms
            .iter()
            .map(|(d, name)| {
                let pool = host.pool_name(d.cpupool);
                DomainLong::new(d, name, &pool, host.xc.sched_credit(d.domain).ok())
            })
            .collect();
        emit(&if args.json { json(&long) } else { format::list_long(&long) })
    } else {
        let rows: Vec<DomainRow> = doms.iter().map(|(d, name)| DomainRow::new(d, name)).collect();
        emit(&if args.json { json(&rows) } else { format::list_table(&rows) })
    }
}

/// `xm dmesg [-c]`: the hypervisor's console ring (`XEN_SYSCTL_readconsole`, read on from each returned index, as
/// xl does); `-c` clears what was read.
pub fn dmesg(args: &DmesgArgs) -> CmdResult {
    let host = Host::open()?;
    let mut index = 0;
    let mut all = Vec::new();
    loop {
        let (bytes, next) = host.xc.read_console(args.clear, index, 16384).map_err(failed("readconsole"))?;
        if bytes.is_empty() {
            break;
        }
        if args.json {
            all.extend_from_slice(&bytes);
        } else {
            emit(&String::from_utf8_lossy(&bytes))?;
        }
        index = next;
    }
    if args.json {
        let text = String::from_utf8_lossy(&all);
        emit(&json(&serde_json::json!({ "cleared": args.clear, "lines": text.lines().collect::<Vec<_>>() })))?;
    }
    Ok(())
}

/// `xm info`: the host as `xl info` shows it.
pub fn info(args: &InfoArgs) -> CmdResult {
    use keel_abi::hypercall::xenver;
    let host = Host::open()?;
    let xc = &host.xc;
    let p = xc.physinfo().map_err(failed("physinfo"))?;
    let pagesize = xc.xen_version(xenver::PAGESIZE, 0).map(|r| r.0 as u64).unwrap_or(4096);
    let uname =
        |f: &str| std::fs::read_to_string(format!("/proc/sys/kernel/{f}")).unwrap_or_default().trim().to_string();
    let mut fields: Vec<(&str, String)> = vec![
        ("host", uname("hostname")),
        ("release", uname("osrelease")),
        ("version", uname("version")),
        ("machine", std::env::consts::ARCH.to_string()),
    ];
    fields.extend(super::hostinfo::physinfo_fields(&p, pagesize));
    let (major, minor) = xc.version().map_err(failed("xen_version"))?;
    let extra = xc.version_string(xenver::EXTRAVERSION).unwrap_or_default();
    let sched = xc.sched_id().map(super::hostinfo::scheduler_name).unwrap_or("unknown");
    fields.extend([
        ("xen_major", major.to_string()),
        ("xen_minor", minor.to_string()),
        ("xen_extra", extra.clone()),
        ("xen_version", format!("{major}.{minor}{extra}")),
        ("xen_caps", xc.version_string(xenver::CAPABILITIES).unwrap_or_default()),
        ("xen_scheduler", sched.to_string()),
        ("xen_pagesize", pagesize.to_string()),
        ("platform_params", xc.virt_start().map(|v| format!("virt_start=0x{v:x}")).unwrap_or_default()),
        ("xen_changeset", xc.version_string(xenver::CHANGESET).unwrap_or_default()),
        ("xen_commandline", xc.version_string(xenver::COMMANDLINE).unwrap_or_default()),
    ]);
    let cc = xc.compile_info().unwrap_or_default();
    fields.extend([
        ("cc_compiler", cc[0].clone()),
        ("cc_compile_by", cc[1].clone()),
        ("cc_compile_domain", cc[2].clone()),
        ("cc_compile_date", cc[3].clone()),
        ("build_id", String::new()),
        ("xend_config_format", "4".to_string()),
    ]);
    if args.json {
        emit(&json(&super::hostinfo::info_json(&fields)))
    } else {
        emit(&super::hostinfo::info_lines(&fields))
    }
}

/// Where dom0's services write their logs (Xen's `/var/log/xen/`).
pub const LOG_DIR: &str = "/var/log/xen";

/// The files of a log directory, by name, with their text.
pub fn log_files(dir: &Path) -> std::io::Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let text = String::from_utf8_lossy(&std::fs::read(entry.path())?).into_owned();
            files.push((entry.path().display().to_string(), text));
        }
    }
    files.sort();
    Ok(files)
}

/// `xm log`'s text: each file under a `==> path <==` line, as tail(1) separates files.
pub fn log_text(files: &[(String, String)]) -> String {
    let mut out = String::new();
    for (i, (path, text)) in files.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("==> {path} <==\n{text}"));
        if !text.is_empty() && !text.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// `xm log`: classic xm printed xend's log. Keel has no xend: dom0's toolstack services (xenstored, ...) log to
/// files under /var/log/xen/, which this prints; the hypervisor's own log is `xm dmesg`.
pub fn log(args: &LogArgs) -> CmdResult {
    let files = log_files(Path::new(LOG_DIR))
        .map_err(|e| XmError::Failed(format!("{LOG_DIR}: {e} (Keel has no xend; dom0's services log there)")))?;
    let note = "Keel has no xend: this is what dom0's services logged under /var/log/xen/; \
                the hypervisor's own log is 'xm dmesg'";
    if args.json {
        let files: Vec<_> = files
            .iter()
            .map(|(p, t)| serde_json::json!({ "path": p, "lines": t.lines().collect::<Vec<_>>() }))
            .collect();
        return emit(&json(&serde_json::json!({ "directory": LOG_DIR, "note": note, "files": files })));
    }
    if files.is_empty() {
        eprintln!("xm log: nothing logged under {LOG_DIR} yet ({note})");
    }
    emit(&log_text(&files))
}

/// `xm uptime [-s] [Domain...]`: dom0's uptime from /proc/uptime, as xl; a guest's from the start time its
/// toolstack recorded in xenstore (`<vm>/start_time`), skipped when there is none.
pub fn uptime(args: &UptimeArgs) -> CmdResult {
    let mut host = Host::open()?;
    let doms = host.select(&args.domains)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut rows = Vec::new();
    for (d, name) in doms {
        let up = if d.domain == 0 {
            let text = std::fs::read_to_string("/proc/uptime")
                .map_err(|e| XmError::Failed(format!("cannot get dom0's uptime: /proc/uptime: {e}")))?;
            format::parse_proc_uptime(&text)
                .ok_or_else(|| XmError::Failed("cannot get dom0's uptime: /proc/uptime unreadable".into()))?
        } else {
            let vm = host.read(&format!("/local/domain/{}/vm", d.domain));
            let start = vm.and_then(|vm| host.read(&format!("{vm}/start_time")));
            match start.and_then(|s| s.trim().split('.').next()?.parse::<u64>().ok()) {
                Some(start) => now.saturating_sub(start),
                None => continue,
            }
        };
        rows.push(UptimeRow { name, domid: d.domain, uptime: up });
    }
    if args.json {
        emit(&json(&rows))
    } else {
        emit(&format::uptime_table(&rows, args.short, &format::time_of_day(now)))
    }
}

/// `xm vcpu-list [Domain...]`: every vCPU of every domain (or those named), as `xl vcpu-list`.
pub fn vcpu_list(args: &VcpuListArgs) -> CmdResult {
    let mut host = Host::open()?;
    let (bytes, nr_cpus) = host.cpumap_size()?;
    let doms = host.select(&args.domains)?;
    let mut rows = Vec::new();
    for (d, name) in doms {
        if d.max_vcpu_id == u32::MAX {
            continue;
        }
        for v in 0..=d.max_vcpu_id {
            let i = host.xc.vcpu_info(d.domain, v).map_err(failed("getvcpuinfo"))?;
            let (hard, soft) = host.xc.vcpu_affinity(d.domain, v, bytes).map_err(failed("getvcpuaffinity"))?;
            rows.push(VcpuRow {
                name: name.clone(),
                domid: d.domain,
                vcpu: v,
                cpu: (i.online != 0).then_some(i.cpu),
                online: i.online != 0,
                running: i.running != 0,
                blocked: i.blocked != 0,
                time: i.cpu_time as f64 / 1e9,
                hard_affinity: format_cpumap(&hard, nr_cpus),
                soft_affinity: format_cpumap(&soft, nr_cpus),
            });
        }
    }
    emit(&if args.json { json(&rows) } else { format::vcpu_table(&rows) })
}

/// `xm vcpu-pin <Domain> <VCPU|all> <CPUs|all|-> [SoftCPUs|all|-]`: sets hard (and soft) affinity, as
/// `xl vcpu-pin`; the hypervisor's scheduler runs the vCPU only on its hard-affinity CPUs.
pub fn vcpu_pin(args: &VcpuPinArgs) -> CmdResult {
    let mut host = Host::open()?;
    let (d, _) = host.find(&args.domain)?;
    let (bytes, nr_cpus) = host.cpumap_size()?;
    let map = |pin: Option<&CpuPin>| -> Result<Option<Vec<u8>>, XmError> {
        match pin {
            None | Some(CpuPin::Keep) => Ok(None),
            Some(CpuPin::Cpus(sel)) => {
                if let CpuSelection::Set(set) = sel {
                    if !set.iter().any(|c| c < nr_cpus) {
                        return Err(XmError::Failed(format!(
                            "CPU list '{set}' names no CPU of this host (CPUs 0 to {})",
                            nr_cpus.saturating_sub(1)
                        )));
                    }
                }
                Ok(Some(sel.to_bitmap(bytes)))
            }
        }
    };
    let hard = map(Some(&args.cpus))?;
    let soft = map(args.soft.as_ref())?;
    if hard.is_none() && soft.is_none() {
        return Err(XmError::Failed("nothing to change: both affinities are '-'".into()));
    }
    let vcpus: Vec<u32> = match args.vcpu {
        VcpuSelection::All => (0..d.max_vcpu_id.wrapping_add(1)).collect(),
        VcpuSelection::One(v) if v <= d.max_vcpu_id && d.max_vcpu_id != u32::MAX => vec![v],
        VcpuSelection::One(v) => {
            return Err(XmError::Failed(format!(
                "domain {} has no vCPU {v} (it has {})",
                d.domain,
                d.max_vcpu_id.wrapping_add(1)
            )))
        }
    };
    let mut applied = Vec::new();
    for v in vcpus {
        host.xc
            .set_vcpu_affinity(d.domain, v, hard.as_deref(), soft.as_deref())
            .map_err(|e| XmError::Failed(format!("could not set the affinity of vCPU {v}: {e}")))?;
        let (h, s) = host.xc.vcpu_affinity(d.domain, v, bytes).map_err(failed("getvcpuaffinity"))?;
        applied.push(serde_json::json!({
            "vcpu": v,
            "hard_affinity": format_cpumap(&h, nr_cpus),
            "soft_affinity": format_cpumap(&s, nr_cpus),
        }));
    }
    if args.json {
        emit(&json(&serde_json::json!({ "domid": d.domain, "vcpus": applied })))?;
    }
    Ok(())
}

/// Checks credit global parameters as libxl does before setting them.
pub fn check_credit_globals(p: &CreditPool) -> Result<(), XmError> {
    if !(1..=1000).contains(&p.tslice_ms) {
        return Err(XmError::Failed(format!("time slice {} ms out of range (1 to 1000)", p.tslice_ms)));
    }
    if p.ratelimit_us != 0 && !(100..=500_000).contains(&p.ratelimit_us) {
        return Err(XmError::Failed(format!("rate limit {} us out of range (0, or 100 to 500000)", p.ratelimit_us)));
    }
    if u64::from(p.ratelimit_us) > u64::from(p.tslice_ms) * 1000 {
        return Err(XmError::Failed(format!(
            "rate limit {} us is longer than the time slice ({} ms)",
            p.ratelimit_us, p.tslice_ms
        )));
    }
    if p.migration_delay_us > 100_000 {
        return Err(XmError::Failed(format!("migration delay {} us out of range (0 to 100000)", p.migration_delay_us)));
    }
    Ok(())
}

/// `xm sched-credit`: with no option every domain's weight and cap under pool 0's global parameters; `-d` one
/// domain's, `-d -w/-c` sets them; `-s` the global parameters, `-s -t/-r/-m` sets them.
pub fn sched_credit(args: &SchedCreditArgs) -> CmdResult {
    let mut host = Host::open()?;
    let pool = |host: &mut Host| -> Result<CreditPool, XmError> {
        let g = host.xc.sched_credit_global().map_err(failed("scheduler_op"))?;
        Ok(CreditPool {
            cpupool: host.pool_name(0),
            tslice_ms: g.tslice_ms,
            ratelimit_us: g.ratelimit_us,
            migration_delay_us: g.vcpu_migr_delay_us,
        })
    };
    if args.schedparam {
        let mut p = pool(&mut host)?;
        if args.tslice.is_some() || args.ratelimit.is_some() || args.migration_delay.is_some() {
            p.tslice_ms = args.tslice.unwrap_or(p.tslice_ms);
            p.ratelimit_us = args.ratelimit.unwrap_or(p.ratelimit_us);
            p.migration_delay_us = args.migration_delay.unwrap_or(p.migration_delay_us);
            check_credit_globals(&p)?;
            let mut g = host.xc.sched_credit_global().map_err(failed("scheduler_op"))?;
            g.tslice_ms = p.tslice_ms;
            g.ratelimit_us = p.ratelimit_us;
            g.vcpu_migr_delay_us = p.migration_delay_us;
            host.xc.set_sched_credit_global(g).map_err(failed("scheduler_op"))?;
            if !args.json {
                return Ok(());
            }
            p = pool(&mut host)?;
        }
        return emit(&if args.json { json(&p) } else { format::credit_pool_line(&p) });
    }
    let row = |host: &mut Host, d: &GetDomainInfo, name: String| -> Result<CreditRow, XmError> {
        let (weight, cap) = host.xc.sched_credit(d.domain).map_err(failed("scheduler_op"))?;
        Ok(CreditRow { name, domid: d.domain, weight, cap })
    };
    match &args.domain {
        Some(r) => {
            let (d, name) = host.find(r)?;
            let setting = args.weight.is_some() || args.cap.is_some();
            if let Some(cap) = args.cap {
                let most = (d.max_vcpu_id.wrapping_add(1)).saturating_mul(100);
                if u32::from(cap.get()) > most {
                    return Err(XmError::Failed(format!(
                        "cap {} is out of range for domain {} (0 to {most}: 100 per vCPU)",
                        cap.get(),
                        d.domain
                    )));
                }
            }
            if setting {
                host.xc
                    .set_sched_credit(d.domain, args.weight.map(|w| w.get()), args.cap.map(|c| c.get()))
                    .map_err(failed("scheduler_op"))?;
            }
            let r = row(&mut host, &d, name)?;
            if args.json {
                emit(&json(&r))
            } else if setting {
                Ok(())
            } else {
                emit(&format::credit_table(&[r]))
            }
        }
        None => {
            let p = pool(&mut host)?;
            let mut rows = Vec::new();
            for (d, name) in host.select(&[])? {
                if d.cpupool == 0 {
                    rows.push(row(&mut host, &d, name)?);
                }
            }
            if args.json {
                emit(&json(&serde_json::json!({ "cpupool": p, "domains": rows })))
            } else {
                emit(&format!("{}{}", format::credit_pool_line(&p), format::credit_table(&rows)))
            }
        }
    }
}

/// `xm top [-b] [-i N] [-d SECONDS] [--json]`: xentop's display.
pub fn top(args: &TopArgs) -> CmdResult {
    use keel_abi::hypercall::xenver;
    use std::time::{Instant, SystemTime, UNIX_EPOCH};
    let mut host = Host::open()?;
    let (major, minor) = host.xc.version().map_err(failed("xen_version"))?;
    let extra = host.xc.version_string(xenver::EXTRAVERSION).unwrap_or_default();
    let version = format!("{major}.{minor}{extra}");
    let mut taken = Instant::now();
    let mut sample = |prev: Option<&topfmt::TopFrame>| -> Result<topfmt::TopFrame, XmError> {
        let p = host.xc.physinfo().map_err(failed("physinfo"))?;
        let doms = host.select(&[])?;
        let elapsed = taken.elapsed().as_secs_f64();
        taken = Instant::now();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Ok(topfmt::frame(&p, &version, &format::time_of_day(now), &doms, prev, elapsed))
    };
    let delay = std::time::Duration::from_secs(args.delay.into());
    if args.json || args.batch {
        let frames = args.iterations.or(if args.json && !args.batch { Some(1) } else { None });
        let mut prev = None;
        let mut n = 0u32;
        if args.json {
            emit("[\n")?;
        }
        loop {
            let f = sample(prev.as_ref())?;
            n += 1;
            if args.json {
                let mut text = serde_json::to_string_pretty(&f).map_err(|e| XmError::Failed(e.to_string()))?;
                if n > 1 {
                    text.insert_str(0, ",\n");
                }
                emit(&text)?;
            } else {
                emit(&topfmt::batch_text(&f, 0))?;
            }
            prev = Some(f);
            if frames.is_some_and(|max| n >= max) {
                break;
            }
            std::thread::sleep(delay);
        }
        if args.json {
            emit("\n]\n")?;
        }
        return Ok(());
    }
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return Err(XmError::Failed("stdout is not a terminal: use -b for batch mode".into()));
    }
    topfmt::tui::run(args.delay, args.iterations, |prev| sample(prev).map_err(|e| e.to_string()))
        .map_err(XmError::Failed)
}

/// `xm vnet-list [-l]`: virtual networks went with xend (Xen 4.5); neither xl nor Keel has them.
pub fn vnet_list(_args: &VnetListArgs) -> CmdResult {
    Err(XmError::Unsupported(
        "Xen removed virtual networks (vnets) along with xend in Xen 4.5, and Keel has none; \
         connect guests through bridges in dom0 instead"
            .into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_prints_each_file_of_the_directory_under_its_name() {
        let dir = std::env::temp_dir().join(format!("xm-log-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("xenstored.log"), "started\n").unwrap();
        std::fs::write(dir.join("a.log"), "no newline").unwrap();
        let files = log_files(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let names: Vec<&str> = files.iter().map(|(p, _)| p.rsplit('/').next().unwrap()).collect();
        assert_eq!(names, ["a.log", "xenstored.log"], "files only, in name order");
        let text = log_text(&files);
        let a = format!("==> {}/a.log <==\nno newline\n", dir.display());
        let x = format!("\n==> {}/xenstored.log <==\nstarted\n", dir.display());
        assert_eq!(text, format!("{a}{x}"));
        assert!(log_files(Path::new("/nonexistent/xm-log")).is_err());
    }

    #[test]
    fn credit_globals_checked_as_libxl() {
        let p = |t, r, m| CreditPool { cpupool: "Pool-0".into(), tslice_ms: t, ratelimit_us: r, migration_delay_us: m };
        assert!(check_credit_globals(&p(30, 1000, 0)).is_ok());
        assert!(check_credit_globals(&p(10, 0, 100_000)).is_ok());
        for bad in [p(0, 0, 0), p(1001, 0, 0), p(30, 50, 0), p(30, 600_000, 0), p(1, 1500, 0), p(30, 0, 100_001)] {
            assert!(check_credit_globals(&bad).is_err(), "{bad:?}");
        }
    }
}
