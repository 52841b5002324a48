//! The `xm` command handlers: one function per command of the table.
//!
//! Each receives its already parsed and validated arguments. None is
//! implemented yet (the hypervisor interfaces they need do not exist), so
//! each reports [`XmError::NotAvailable`]; the issue that implements a
//! command replaces its body here.

use super::cmdtable::{
    CreateArgs, DmesgArgs, DomainArg, DomainsArg, DomidArgs, DomnameArgs, DumpCoreArgs, ListArgs, MemSetArgs,
    MigrateArgs, RenameArgs, RestoreArgs, SaveArgs, SchedCreditArgs, ShutdownArgs, SysrqArgs, UptimeArgs, VcpuPinArgs,
    VcpuSetArgs, VnetListArgs,
};
use super::XmError;

/// The result of a command handler.
pub type CmdResult = Result<(), XmError>;

/// `xm console <Domain>`
pub fn console(_args: &DomainArg) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm create <ConfigFile> [-c] [-p] [vars]`
pub fn create(_args: &CreateArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm destroy <Domain>`
pub fn destroy(_args: &DomainArg) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm domid <DomainName>`
pub fn domid(_args: &DomidArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm domname <DomainId>`
pub fn domname(_args: &DomnameArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm dump-core [-L] [-C] <Domain> [Filename]`
pub fn dump_core(_args: &DumpCoreArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm list`: every domain, as `xl list` prints them (names from xenstore's `/local/domain/<id>/name`).
pub fn list(args: &ListArgs) -> CmdResult {
    if args.long || !args.domains.is_empty() {
        return Err(XmError::NotAvailable);
    }
    let xc = xc()?;
    let doms = xc.domains().map_err(failed("getdomaininfolist"))?;
    let mut store = keel_xenstore::client::Client::open().ok();
    let rows: Vec<_> = doms
        .into_iter()
        .map(|d| {
            let name = store
                .as_mut()
                .and_then(|c| c.read(0, &format!("/local/domain/{}/name", d.domain)).ok())
                .map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_else(|| "(null)".into());
            (d, name)
        })
        .collect();
    print!("{}", super::hostinfo::list_table(&rows));
    Ok(())
}

/// `xm mem-set <Domain> <Mem>`
pub fn mem_set(_args: &MemSetArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm migrate [-l] <Domain> <Host>`
pub fn migrate(_args: &MigrateArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm pause <Domain>`
pub fn pause(_args: &DomainArg) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm reboot [-w] (-a | <Domain>)`
pub fn reboot(_args: &ShutdownArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm rename <Domain> <NewName>`
pub fn rename(_args: &RenameArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm restore <CheckpointFile>`
pub fn restore(_args: &RestoreArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm save <Domain> <CheckpointFile>`
pub fn save(_args: &SaveArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm shutdown [-w] (-a | <Domain>)`
pub fn shutdown(_args: &ShutdownArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm sysrq <Domain> <letter>`
pub fn sysrq(_args: &SysrqArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm top`
pub fn top() -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm unpause <Domain>`
pub fn unpause(_args: &DomainArg) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm uptime [-s] [Domain...]`
pub fn uptime(_args: &UptimeArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm vcpu-list [Domain...]`
pub fn vcpu_list(_args: &DomainsArg) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm vcpu-pin <Domain> <VCPU|all> <CPUs|all>`
pub fn vcpu_pin(_args: &VcpuPinArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm vcpu-set <Domain> <vCPUs>`
pub fn vcpu_set(_args: &VcpuSetArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

fn xc() -> Result<keel_xenctrl::Xc, XmError> {
    keel_xenctrl::Xc::open().map_err(|e| XmError::Failed(e.to_string()))
}

fn failed(what: &str) -> impl Fn(keel_xenctrl::Error) -> XmError + '_ {
    move |e| XmError::Failed(format!("{what}: {e}"))
}

/// `xm dmesg [-c]`: the hypervisor's console ring (`XEN_SYSCTL_readconsole`, read on from each returned index).
pub fn dmesg(args: &DmesgArgs) -> CmdResult {
    let xc = xc()?;
    let mut index = 0;
    let mut out = std::io::stdout().lock();
    loop {
        let (bytes, next) = xc.read_console(args.clear, index, 16384).map_err(failed("readconsole"))?;
        if bytes.is_empty() {
            return Ok(());
        }
        use std::io::Write;
        out.write_all(&bytes).map_err(|e| XmError::Failed(e.to_string()))?;
        index = next;
    }
}

/// `xm info`: the host as `xl info` shows it.
pub fn info() -> CmdResult {
    use keel_abi::hypercall::xenver;
    let xc = xc()?;
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
    print!("{}", super::hostinfo::info_lines(&fields));
    Ok(())
}

/// `xm log`
pub fn log() -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm sched-credit [-d <Domain> [-w WEIGHT] [-c CAP]]`
pub fn sched_credit(_args: &SchedCreditArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}

/// `xm vnet-list [-l]`
pub fn vnet_list(_args: &VnetListArgs) -> CmdResult {
    Err(XmError::NotAvailable)
}
