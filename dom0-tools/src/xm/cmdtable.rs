//! The `xm` command table.
//!
//! This is the one definition of every `xm` subcommand, in the spirit of
//! Xen's `tools/xl/xl_cmdtable.c`: each variant of [`Command`] is a
//! command, its name comes from the variant (kebab-case), its one-line
//! help from the first line of its doc comment, its longer help from the
//! rest, and its usage from its argument struct. `xm help`, `xm <cmd>
//! --help`, argument parsing and validation are all generated from it by
//! clap, and [`super::dispatch`] maps each variant to its handler.
//!
//! The doc comments of the items below are `xm`'s help text as users see
//! it, so they write `<Domain>` plainly rather than as rustdoc would like.
#![allow(rustdoc::invalid_html_tags)]

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::cpus::{CpuPin, VcpuCount, VcpuSelection};
use crate::create_vars::ConfigVar;
use crate::domain::{DomainId, DomainName, DomainRef};
use crate::host::Host;
use crate::mem::MemSize;
use crate::sched::{CreditCap, CreditWeight};
use crate::sysrq::SysrqKey;

/// Text shown after the command list in `xm help`.
const AFTER_HELP: &str = "\
<Domain> can either be the Domain Name or Id.
For more help on a subcommand, run 'xm help <subcommand>' or 'xm <subcommand> --help'.";

/// The `xm` command line.
#[derive(Debug, Parser)]
#[command(
    name = "xm",
    bin_name = "xm",
    about = "Control, list, and manipulate Keel guest domains.",
    override_usage = "xm <subcommand> [args]",
    after_help = AFTER_HELP,
    subcommand_value_name = "subcommand",
    help_template = "{usage-heading} {usage}\n\n{about}\n\n{all-args}{after-help}\n",
    arg_required_else_help = true
)]
pub struct Cli {
    /// The subcommand to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Every `xm` subcommand, in the order `xm help` lists them.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a new virtual block device for a domain
    ///
    /// <Disk> is a disk specification as in a config file's disk list,
    /// either in one argument (file:/var/lib/xen/images/d.img,xvdb,w) or
    /// in xm's three (<BackDev> <FrontDev> <Mode>: phy:/dev/vg/d xvdb r).
    #[command(verbatim_doc_comment)]
    BlockAttach(BlockAttachArgs),
    /// Destroy a domain's virtual block device.
    BlockDetach(DeviceDetachArgs),
    /// List the virtual block devices of a domain.
    BlockList(DeviceListArgs),
    /// Attach to <Domain>'s console.
    Console(DomainArg),
    /// Create a domain based on <ConfigFile>.
    Create(CreateArgs),
    /// Terminate a domain immediately.
    Destroy(DomainActionArgs),
    /// Convert a domain name to a domain id.
    Domid(DomidArgs),
    /// Convert a domain id to a domain name.
    Domname(DomnameArgs),
    /// Dump the core of a domain.
    DumpCore(DumpCoreArgs),
    /// List information about all/some domains.
    List(ListArgs),
    /// Set the current memory usage of a domain.
    MemSet(MemSetArgs),
    /// Migrate a domain to another machine.
    Migrate(MigrateArgs),
    /// Create a new virtual network device for a domain
    ///
    /// The settings are those of a vif in a config file
    /// (mac=00:16:3e:01:02:03 bridge=xenbr0 ip=... script=... vifname=...).
    #[command(verbatim_doc_comment)]
    NetworkAttach(NetworkAttachArgs),
    /// Destroy a domain's virtual network device (by its index or MAC).
    NetworkDetach(DeviceDetachArgs),
    /// List the virtual network devices of a domain.
    NetworkList(DeviceListArgs),
    /// Pause execution of a domain.
    Pause(DomainActionArgs),
    /// Reboot a domain.
    Reboot(ShutdownArgs),
    /// Rename a domain.
    Rename(RenameArgs),
    /// Restore a domain from a saved state.
    Restore(RestoreArgs),
    /// Save a domain's state to restore later.
    Save(SaveArgs),
    /// Shut down a domain.
    Shutdown(ShutdownArgs),
    /// Send a SysRq key to a domain.
    Sysrq(SysrqArgs),
    /// Monitor the host and its domains in real time.
    Top(TopArgs),
    /// Unpause a paused domain.
    Unpause(DomainActionArgs),
    /// Print the uptime of all/some domains.
    Uptime(UptimeArgs),
    /// List the vCPUs of all/some domains.
    VcpuList(VcpuListArgs),
    /// Set which CPUs a vCPU can run on
    ///
    /// <CPUs> (the hard affinity: where the vCPU may run) and [SoftCPUs]
    /// (the soft affinity: where it prefers to run) are comma-separated
    /// lists of CPU numbers (N) and ranges (N-M), applied from left to
    /// right; an item starting with ^ removes those CPUs instead. For
    /// example 0-3,^2 is CPUs 0, 1 and 3. Use 'all' for every CPU of the
    /// host, and '-' to leave that affinity as it is.
    #[command(verbatim_doc_comment)]
    VcpuPin(VcpuPinArgs),
    /// Set the number of active vCPUs of a domain.
    VcpuSet(VcpuSetArgs),
    /// Read and/or clear the hypervisor's message buffer.
    Dmesg(DmesgArgs),
    /// Get information about the Keel host.
    Info(InfoArgs),
    /// Print the dom0 toolstack's log.
    ///
    /// Xen's xm printed xend's log; Keel has no xend. Its dom0 services log
    /// to files under /var/log/xen/ (xenstored.log, ...), which this prints;
    /// the hypervisor's own log is 'xm dmesg'.
    #[command(verbatim_doc_comment)]
    Log(LogArgs),
    /// Get/set credit scheduler parameters
    ///
    /// With no options, list the parameters of every domain; with -d
    /// alone, those of one domain; with -d and -w and/or -c, set them.
    /// With -s, print the scheduler's global parameters (of CPU pool 0);
    /// with -s and -t/-r/-m, set them.
    #[command(verbatim_doc_comment)]
    SchedCredit(SchedCreditArgs),
    /// List virtual networks.
    VnetList(VnetListArgs),
}

/// Arguments of a command that acts on one domain.
#[derive(Debug, Args)]
pub struct DomainArg {
    /// The domain, by id or name.
    #[arg(value_name = "Domain")]
    pub domain: DomainRef,
}

/// `xm block-attach <Domain> <Disk>...`
#[derive(Debug, Args)]
pub struct BlockAttachArgs {
    /// The domain, by id or name.
    #[arg(value_name = "Domain")]
    pub domain: DomainRef,
    /// The disk specification (one argument, or xm's <BackDev> <FrontDev> <Mode>).
    #[arg(value_name = "Disk", required = true)]
    pub spec: Vec<String>,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `xm network-attach <Domain> [KEY=VALUE]...`
#[derive(Debug, Args)]
pub struct NetworkAttachArgs {
    /// The domain, by id or name.
    #[arg(value_name = "Domain")]
    pub domain: DomainRef,
    /// The vif's settings.
    #[arg(value_name = "KEY=VALUE")]
    pub settings: Vec<String>,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `xm block-detach` / `network-detach <Domain> <DevId>`
#[derive(Debug, Args)]
pub struct DeviceDetachArgs {
    /// The domain, by id or name.
    #[arg(value_name = "Domain")]
    pub domain: DomainRef,
    /// The device: a disk's name (xvdb) or number, a vif's index or MAC.
    #[arg(value_name = "DevId")]
    pub device: String,
    /// Remove it even if the guest does not let go of it.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `xm block-list` / `network-list <Domain>...`
#[derive(Debug, Args)]
pub struct DeviceListArgs {
    /// The domains, by id or name.
    #[arg(value_name = "Domain", required = true)]
    pub domains: Vec<DomainRef>,
    /// Print the devices as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `destroy`, `pause` and `unpause`.
#[derive(Debug, Args)]
pub struct DomainActionArgs {
    /// The domain, by id or name.
    #[arg(value_name = "Domain")]
    pub domain: DomainRef,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `xm create <ConfigFile> [-c] [-p] [vars]`
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The domain configuration file (a bare name is looked up in /etc/xen/).
    #[arg(value_name = "ConfigFile")]
    pub config_file: PathBuf,
    /// Settings that add to or override the configuration file.
    #[arg(value_name = "NAME=VALUE")]
    pub vars: Vec<ConfigVar>,
    /// Connect to the console after the domain is created.
    #[arg(short = 'c', long = "console-autoconnect", alias = "console_autoconnect")]
    pub console: bool,
    /// Leave the domain paused after it is created.
    #[arg(short = 'p', long)]
    pub paused: bool,
    /// Dry run: print the configuration with its defaults filled in, and start nothing.
    #[arg(short = 'n', long)]
    pub dryrun: bool,
    /// With -n, print the configuration as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `xm domid <DomainName>`
#[derive(Debug, Args)]
pub struct DomidArgs {
    /// The domain's name.
    #[arg(value_name = "DomainName")]
    pub name: DomainName,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `xm domname <DomainId>`
#[derive(Debug, Args)]
pub struct DomnameArgs {
    /// The domain's id.
    #[arg(value_name = "DomainId")]
    pub id: DomainId,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `xm dump-core [-L|--live] [-C|--crash] <Domain> [Filename]`
#[derive(Debug, Args)]
pub struct DumpCoreArgs {
    /// The domain to dump, by id or name.
    #[arg(value_name = "Domain")]
    pub domain: DomainRef,
    /// Where to write the core (a file under the dump directory if not given).
    #[arg(value_name = "Filename")]
    pub filename: Option<PathBuf>,
    /// Dump the core without pausing the domain.
    #[arg(short = 'L', long)]
    pub live: bool,
    /// Crash the domain after dumping its core.
    #[arg(short = 'C', long)]
    pub crash: bool,
}

/// `xm list [-l|--long] [Domain...]`
#[derive(Debug, Args)]
pub struct ListArgs {
    /// The domains to list, by id or name (all domains if none).
    #[arg(value_name = "Domain")]
    pub domains: Vec<DomainRef>,
    /// Output all the details of each domain.
    #[arg(short, long)]
    pub long: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `xm mem-set <Domain> <Mem>`
#[derive(Debug, Args)]
pub struct MemSetArgs {
    /// The domain, by id or name.
    #[arg(value_name = "Domain")]
    pub domain: DomainRef,
    /// The new memory target: MiB, or a number with a K, M, G or T suffix.
    #[arg(value_name = "Mem")]
    pub mem: MemSize,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `xm migrate [-l|--live] [-p|--port PORT] <Domain> <Host>[:<Port>]`
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The domain to migrate, by id or name.
    #[arg(value_name = "Domain")]
    pub domain: DomainRef,
    /// The host to migrate it to (its keel-relocd), with its port after a colon if not xend-relocation-port.
    #[arg(value_name = "Host")]
    pub host: Host,
    /// Use live migration.
    #[arg(short, long)]
    pub live: bool,
    /// The relocation server's port (default: xend-relocation-port, 8002).
    #[arg(short, long)]
    pub port: Option<u16>,
}

/// `xm rename <Domain> <NewName>`
#[derive(Debug, Args)]
pub struct RenameArgs {
    /// The domain to rename, by id or name.
    #[arg(value_name = "Domain")]
    pub domain: DomainRef,
    /// Its new name.
    #[arg(value_name = "NewName")]
    pub new_name: DomainName,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `xm restore [-p] [-c] <CheckpointFile>`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Leave the restored domain paused.
    #[arg(short, long)]
    pub paused: bool,
    /// Attach to the domain's console once it runs.
    #[arg(short, long)]
    pub console: bool,
    /// The file a domain was saved to.
    #[arg(value_name = "CheckpointFile")]
    pub checkpoint_file: PathBuf,
}

/// `xm save <Domain> <CheckpointFile>`
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// The domain to save, by id or name.
    #[arg(value_name = "Domain")]
    pub domain: DomainRef,
    /// The file to save it to.
    #[arg(value_name = "CheckpointFile")]
    pub checkpoint_file: PathBuf,
}

/// `xm shutdown|reboot [-w] <Domain|-a>`
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").args(["domain", "all"]).required(true)))]
pub struct ShutdownArgs {
    /// The domain, by id or name.
    #[arg(value_name = "Domain")]
    pub domain: Option<DomainRef>,
    /// Act on all domains.
    #[arg(short, long)]
    pub all: bool,
    /// Wait for the domain(s) to finish.
    #[arg(short, long)]
    pub wait: bool,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `xm sysrq <Domain> <letter>`
#[derive(Debug, Args)]
pub struct SysrqArgs {
    /// The domain, by id or name.
    #[arg(value_name = "Domain")]
    pub domain: DomainRef,
    /// The SysRq key to send, e.g. s.
    #[arg(value_name = "letter")]
    pub key: SysrqKey,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `xm uptime [-s] [Domain...]`
#[derive(Debug, Args)]
pub struct UptimeArgs {
    /// The domains, by id or name (all domains if none).
    #[arg(value_name = "Domain")]
    pub domains: Vec<DomainRef>,
    /// Print a short uptime.
    #[arg(short, long)]
    pub short: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `xm vcpu-pin <Domain> <VCPU|all> <CPUs|all|-> [SoftCPUs|all|-]`
#[derive(Debug, Args)]
pub struct VcpuPinArgs {
    /// The domain, by id or name.
    #[arg(value_name = "Domain")]
    pub domain: DomainRef,
    /// The vCPU to pin, or 'all'.
    #[arg(value_name = "VCPU|all")]
    pub vcpu: VcpuSelection,
    /// The CPUs it may run on (hard affinity), e.g. 0-3,^2, 'all', or '-' to keep it.
    #[arg(value_name = "CPUs|all")]
    pub cpus: CpuPin,
    /// The CPUs it prefers (soft affinity), e.g. 0-3,^2, 'all', or '-' to keep it (the default).
    #[arg(value_name = "SoftCPUs")]
    pub soft: Option<CpuPin>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `xm vcpu-set <Domain> <vCPUs>`
#[derive(Debug, Args)]
pub struct VcpuSetArgs {
    /// The domain, by id or name.
    #[arg(value_name = "Domain")]
    pub domain: DomainRef,
    /// How many vCPUs to keep online.
    #[arg(value_name = "vCPUs")]
    pub vcpus: VcpuCount,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `xm dmesg [-c|--clear]`
#[derive(Debug, Args)]
pub struct DmesgArgs {
    /// Clear the message buffer as well as printing it.
    #[arg(short, long)]
    pub clear: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `xm sched-credit [-d <Domain> [-w WEIGHT] [-c CAP]] | -s [-t TSLICE] [-r RATELIMIT] [-m DELAY]`
#[derive(Debug, Args)]
pub struct SchedCreditArgs {
    /// The domain, by id or name.
    #[arg(short, long, value_name = "Domain", conflicts_with = "schedparam")]
    pub domain: Option<DomainRef>,
    /// Set the domain's weight (1 to 65535).
    #[arg(short, long, value_name = "WEIGHT", requires = "domain")]
    pub weight: Option<CreditWeight>,
    /// Set the domain's cap, in percent of one CPU (0 for no cap).
    #[arg(short, long, value_name = "CAP", requires = "domain")]
    pub cap: Option<CreditCap>,
    /// Get or set the scheduler's global parameters (CPU pool 0).
    #[arg(short, long)]
    pub schedparam: bool,
    /// Set the time slice, in milliseconds (1 to 1000).
    #[arg(short, long = "tslice_ms", value_name = "TSLICE", requires = "schedparam",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub tslice: Option<u32>,
    /// Set the rate limit, in microseconds (0, or 100 to 500000).
    #[arg(short, long = "ratelimit_us", value_name = "RATELIMIT", requires = "schedparam")]
    pub ratelimit: Option<u32>,
    /// Set the vCPU migration delay, in microseconds (0 to 100000).
    #[arg(short = 'm', long = "migration_delay_us", value_name = "DELAY", requires = "schedparam")]
    pub migration_delay: Option<u32>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `xm vnet-list [-l|--long]`
#[derive(Debug, Args)]
pub struct VnetListArgs {
    /// Output all the details of each virtual network.
    #[arg(short, long)]
    pub long: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `xm info [--json]`
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `xm log [--json]`
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `xm vcpu-list [Domain...]`
#[derive(Debug, Args)]
pub struct VcpuListArgs {
    /// The domains, by id or name (all domains if none).
    #[arg(value_name = "Domain")]
    pub domains: Vec<DomainRef>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `xm top [-b] [-i N] [-d SECONDS]`, as xentop.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Batch mode: print plain frames to stdout instead of the full-screen display.
    #[arg(short, long)]
    pub batch: bool,
    /// Stop after this many frames (default: run until quit; 1 with --json and no -b).
    #[arg(short, long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub iterations: Option<u32>,
    /// Seconds between frames (default 3).
    #[arg(short, long, value_name = "SECONDS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub delay: u32,
    /// Print the frames as one JSON array (implies batch mode).
    #[arg(long)]
    pub json: bool,
}
