//! `xm`, Keel's domain management command, modelled on Xen's classic `xm`.
//!
//! [`cmdtable`] holds the command table (names, one-line help, usage and
//! argument validation, all from one clap definition), [`commands`] one
//! handler per command, and [`dispatch`] the `match` joining the two.
//! [`main`] is the whole program; `src/bin/xm.rs` only calls it.

pub mod cmdtable;
pub mod commands;
pub mod console;
pub mod corefile;
pub mod create;
pub mod devcmds;
pub mod devices;
pub mod dumpcore;
pub mod format;
pub mod hostinfo;
pub mod lifecycle;
pub mod migrate;
pub mod monitor;
pub mod onshutdown;
pub mod save;
pub mod top;

use std::ffi::OsString;
use std::fmt;

use clap::{CommandFactory, FromArgMatches};

pub use cmdtable::{Cli, Command};

/// Exit status of a command that succeeded.
pub const EXIT_OK: u8 = 0;
/// Exit status of a command that failed, or is not available.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for a usage error (a bad or missing argument, an unknown
/// command), as clap uses.
pub const EXIT_USAGE: u8 = 2;

/// Why a command failed, once its arguments were accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XmError {
    /// The command exists but this Keel build cannot carry it out yet.
    NotAvailable,
    /// The hypervisor or dom0's services refused or failed.
    Failed(String),
    /// No domain has this id or name.
    NoDomain(String),
    /// Xen itself no longer offers this (holds why, and what to use instead).
    Unsupported(String),
}

impl XmError {
    /// The exit status `xm` ends with for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            XmError::NotAvailable | XmError::Failed(_) | XmError::NoDomain(_) | XmError::Unsupported(_) => EXIT_FAILURE,
        }
    }

    /// The one-line message `xm` prints to stderr when `command` fails
    /// with this error.
    /// What went wrong, without the "failed: " of [`fmt::Display`] (for a message that adds its own context).
    pub fn reason(&self) -> String {
        match self {
            XmError::Failed(why) => why.clone(),
            other => other.to_string(),
        }
    }

    pub fn report(&self, command: &str) -> String {
        format!("xm: '{command}' {self}")
    }
}

impl fmt::Display for XmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XmError::NotAvailable => f.write_str("is not available yet in this Keel build"),
            XmError::Failed(why) => write!(f, "failed: {why}"),
            XmError::NoDomain(d) => write!(f, "failed: domain '{d}' does not exist"),
            XmError::Unsupported(why) => write!(f, "is not supported: {why}"),
        }
    }
}

impl std::error::Error for XmError {}

impl XmError {
    /// The reason alone (a `Failed` error's words, without the "failed: " its display adds), to go into another
    /// message.
    pub fn into_reason(self) -> String {
        match self {
            XmError::Failed(why) => why,
            other => other.to_string(),
        }
    }
}

/// Runs the handler of `command`.
pub fn dispatch(command: &Command) -> commands::CmdResult {
    match command {
        Command::BlockAttach(args) => devcmds::block_attach(args),
        Command::BlockDetach(args) => devcmds::detach(args, devices::Kind::Vbd),
        Command::BlockList(args) => devcmds::list(args, devices::Kind::Vbd),
        Command::NetworkAttach(args) => devcmds::network_attach(args),
        Command::NetworkDetach(args) => devcmds::detach(args, devices::Kind::Vif),
        Command::NetworkList(args) => devcmds::list(args, devices::Kind::Vif),
        Command::Console(args) => console::console(args),
        Command::Create(args) => commands::create(args),
        Command::Destroy(args) => commands::destroy(args),
        Command::Domid(args) => commands::domid(args),
        Command::Domname(args) => commands::domname(args),
        Command::DumpCore(args) => commands::dump_core(args),
        Command::List(args) => commands::list(args),
        Command::MemSet(args) => commands::mem_set(args),
        Command::Migrate(args) => commands::migrate(args),
        Command::Pause(args) => commands::pause(args),
        Command::Reboot(args) => commands::reboot(args),
        Command::Rename(args) => commands::rename(args),
        Command::Restore(args) => commands::restore(args),
        Command::Save(args) => commands::save(args),
        Command::Shutdown(args) => commands::shutdown(args),
        Command::Sysrq(args) => commands::sysrq(args),
        Command::Top(args) => commands::top(args),
        Command::Unpause(args) => commands::unpause(args),
        Command::Uptime(args) => commands::uptime(args),
        Command::VcpuList(args) => commands::vcpu_list(args),
        Command::VcpuPin(args) => commands::vcpu_pin(args),
        Command::VcpuSet(args) => commands::vcpu_set(args),
        Command::Dmesg(args) => commands::dmesg(args),
        Command::Info(args) => commands::info(args),
        Command::Log(args) => commands::log(args),
        Command::SchedCredit(args) => commands::sched_credit(args),
        Command::VnetList(args) => commands::vnet_list(args),
    }
}

impl Command {
    /// Whether the command was asked for JSON (`--json`).
    pub fn json(&self) -> bool {
        match self {
            Command::Create(a) => a.json,
            Command::BlockAttach(a) => a.json,
            Command::NetworkAttach(a) => a.json,
            Command::BlockDetach(a) | Command::NetworkDetach(a) => a.json,
            Command::BlockList(a) | Command::NetworkList(a) => a.json,
            Command::VcpuSet(a) => a.json,
            Command::Sysrq(a) => a.json,
            Command::Shutdown(a) => a.json,
            Command::Reboot(a) => a.json,
            Command::Rename(a) => a.json,
            Command::MemSet(a) => a.json,
            Command::Unpause(a) => a.json,
            Command::Pause(a) => a.json,
            Command::Destroy(a) => a.json,
            Command::Domid(a) => a.json,
            Command::Domname(a) => a.json,
            Command::List(a) => a.json,
            Command::Top(a) => a.json,
            Command::Uptime(a) => a.json,
            Command::VcpuList(a) => a.json,
            Command::VcpuPin(a) => a.json,
            Command::Dmesg(a) => a.json,
            Command::Info(a) => a.json,
            Command::Log(a) => a.json,
            Command::SchedCredit(a) => a.json,
            Command::VnetList(a) => a.json,
            _ => false,
        }
    }
}

/// Runs `xm` with `args` (the program name first, as from
/// [`std::env::args_os`]) and returns its exit status.
///
/// Help goes to stdout; usage errors go to stderr with [`EXIT_USAGE`];
/// a command that fails prints one `xm: ...` line to stderr (and, asked for `--json`, `{"error": "..."}` to stdout,
/// so that a script always has a JSON document to parse).
pub fn main<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let mut cli = Cli::command();
    let parsed = cli.try_get_matches_from_mut(args).and_then(|matches| {
        Cli::from_arg_matches(&matches).map(|cli| (cli, matches)).map_err(|err| err.format(&mut cli))
    });
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(err) => {
            // Printing can only fail if stdout/stderr is gone; the exit
            // status still tells the story then.
            let _ = err.print();
            return u8::try_from(err.exit_code()).unwrap_or(EXIT_USAGE);
        }
    };
    let name = matches.subcommand_name().unwrap_or("xm");
    match dispatch(&cli.command) {
        Ok(()) => EXIT_OK,
        Err(err) => {
            eprintln!("{}", err.report(name));
            if cli.command.json() {
                println!("{}", serde_json::json!({ "error": err.report(name) }));
            }
            err.exit_code()
        }
    }
}

/// The temporary name a file (a core dump, a save) is written under until it is complete and renamed into place,
/// so that a failed write leaves nothing that looks whole.
pub(crate) fn partial_path(path: &std::path::Path) -> std::path::PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".partial-{}", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Every command, in table order.
    const COMMANDS: [&str; 33] = [
        "block-attach",
        "block-detach",
        "block-list",
        "console",
        "create",
        "destroy",
        "domid",
        "domname",
        "dump-core",
        "list",
        "mem-set",
        "migrate",
        "network-attach",
        "network-detach",
        "network-list",
        "pause",
        "reboot",
        "rename",
        "restore",
        "save",
        "shutdown",
        "sysrq",
        "top",
        "unpause",
        "uptime",
        "vcpu-list",
        "vcpu-pin",
        "vcpu-set",
        "dmesg",
        "info",
        "log",
        "sched-credit",
        "vnet-list",
    ];

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("xm").chain(args.iter().copied()))
    }

    #[test]
    fn the_table_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_table_holds_exactly_the_xm_commands() {
        let cli = Cli::command();
        let names: Vec<&str> = cli.get_subcommands().map(|c| c.get_name()).collect();
        assert_eq!(names, COMMANDS);
    }

    #[test]
    fn every_command_has_one_line_help() {
        for cmd in Cli::command().get_subcommands() {
            let about = cmd.get_about().map(|a| a.to_string()).unwrap_or_default();
            assert!(!about.is_empty(), "{} has no help", cmd.get_name());
            assert!(!about.contains('\n'), "{}: {about:?}", cmd.get_name());
        }
    }

    #[test]
    fn commands_not_built_say_so() {
        let samples: [&[&str]; 33] = [
            &["block-attach", "1", "file:/img,xvdb,w"],
            &["block-detach", "1", "xvdb"],
            &["block-list", "1"],
            &["console", "1"],
            &["create", "guest.cfg"],
            &["destroy", "1"],
            &["domid", "guest"],
            &["domname", "1"],
            &["dump-core", "1"],
            &["list"],
            &["mem-set", "1", "512"],
            &["migrate", "1", "dest"],
            &["network-attach", "1", "bridge=xenbr0"],
            &["network-detach", "1", "0"],
            &["network-list", "1"],
            &["pause", "1"],
            &["reboot", "1"],
            &["rename", "1", "new"],
            &["restore", "guest.chk"],
            &["save", "1", "guest.chk"],
            &["shutdown", "1"],
            &["sysrq", "1", "s"],
            &["top"],
            &["unpause", "1"],
            &["uptime"],
            &["vcpu-list"],
            &["vcpu-pin", "1", "0", "0-3"],
            &["vcpu-set", "1", "2"],
            &["dmesg"],
            &["info"],
            &["log"],
            &["sched-credit"],
            &["vnet-list"],
        ];
        // These ask the hypervisor through privcmd; the host has none, so they fail with a reason instead.
        const BUILT: &[&str] = &[
            "domid",
            "domname",
            "list",
            "top",
            "uptime",
            "vcpu-list",
            "vcpu-pin",
            "dmesg",
            "info",
            "sched-credit",
            "destroy",
            "pause",
            "unpause",
            "shutdown",
            "reboot",
            "sysrq",
            "rename",
            "mem-set",
            "vcpu-set",
            "dump-core",
            "save",
            "block-attach",
            "block-detach",
            "block-list",
            "network-attach",
            "network-detach",
            "network-list",
        ];
        for (sample, name) in samples.iter().zip(COMMANDS) {
            assert_eq!(sample[0], name);
            let cli = parse(sample).unwrap_or_else(|e| panic!("{sample:?}: {e}"));
            match dispatch(&cli.command) {
                Err(XmError::Failed(why)) if BUILT.contains(&name) => assert!(why.contains("privcmd"), "{why}"),
                // Looks the domain up in xenstore, which the host has not.
                Err(XmError::Failed(why)) if name == "console" => assert!(why.contains("xenstore"), "{why}"),
                // Reads /var/log/xen/, which may or may not exist on the host.
                _ if name == "log" => {}
                Err(XmError::Unsupported(why)) if name == "vnet-list" => assert!(why.contains("xend"), "{why}"),
                // Reads the relocation key first, which the host does not have.
                Err(XmError::Failed(why)) if name == "migrate" => assert!(why.contains("relocation key"), "{why}"),
                // Reads its checkpoint file first, which the host does not have.
                Err(XmError::Failed(why)) if name == "restore" => assert!(why.starts_with("cannot open"), "{why}"),
                // Reads its config file (/etc/xen/guest.cfg), which the host does not have.
                Err(XmError::Failed(why)) if name == "create" => {
                    assert!(why.starts_with("/etc/xen/guest.cfg: cannot read the configuration file"), "{why}")
                }
                other => assert_eq!(other, Err(XmError::NotAvailable), "{name}"),
            }
        }
    }

    #[test]
    fn arguments_arrive_parsed() {
        let cli = parse(&["vcpu-pin", "Domain-0", "all", "0-3,^2"]).unwrap();
        let Command::VcpuPin(args) = cli.command else { panic!("wrong command") };
        assert_eq!(args.domain.to_string(), "Domain-0");
        assert_eq!(args.vcpu, crate::cpus::VcpuSelection::All);
        assert_eq!(args.cpus.to_string(), "0-1,3");
        assert_eq!(args.soft, None);

        let cli = parse(&["vcpu-pin", "0", "1", "-", "0", "--json"]).unwrap();
        let Command::VcpuPin(args) = cli.command else { panic!("wrong command") };
        assert_eq!(args.cpus, crate::cpus::CpuPin::Keep);
        assert_eq!(args.soft.map(|s| s.to_string()), Some("0".into()));
        assert!(args.json);

        let cli = parse(&["sched-credit", "-s", "-t", "10", "-r", "500", "-m", "0"]).unwrap();
        let Command::SchedCredit(args) = cli.command else { panic!("wrong command") };
        assert!(args.schedparam);
        assert_eq!((args.tslice, args.ratelimit, args.migration_delay), (Some(10), Some(500), Some(0)));

        let cli = parse(&["top", "-b", "-i", "2", "-d", "1"]).unwrap();
        let Command::Top(args) = cli.command else { panic!("wrong command") };
        assert!(args.batch && !args.json);
        assert_eq!((args.iterations, args.delay), (Some(2), 1));
        let Command::Top(args) = parse(&["top"]).unwrap().command else { panic!("wrong command") };
        assert_eq!((args.iterations, args.delay, args.batch), (None, 3, false));

        for (argv, json) in [(&["list", "-l", "--json"][..], true), (&["info"], false), (&["info", "--json"], true)] {
            assert_eq!(parse(argv).unwrap().command.json(), json, "{argv:?}");
        }

        let cli = parse(&["mem-set", "7", "1G"]).unwrap();
        let Command::MemSet(args) = cli.command else { panic!("wrong command") };
        assert_eq!(args.mem.mib(), 1024);

        let cli = parse(&["create", "-c", "g.cfg", "memory=512", "vcpus=2"]).unwrap();
        let Command::Create(args) = cli.command else { panic!("wrong command") };
        assert!(args.console && !args.paused && !args.dryrun && !args.json);
        assert_eq!(args.vars.len(), 2);
        assert_eq!(args.vars[1].name(), "vcpus");
        let cli = parse(&["create", "-n", "--json", "web", "memory=512"]).unwrap();
        assert!(cli.command.json());
        let Command::Create(args) = cli.command else { panic!("wrong command") };
        assert!(args.dryrun && args.json);
        assert_eq!(args.config_file, std::path::Path::new("web"));

        let cli = parse(&["sched-credit", "-d", "3", "-w", "512", "-c", "50"]).unwrap();
        let Command::SchedCredit(args) = cli.command else { panic!("wrong command") };
        assert_eq!(args.weight.map(|w| w.get()), Some(512));
        assert_eq!(args.cap.map(|c| c.get()), Some(50));
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        use clap::error::ErrorKind;
        let kind = |args: &[&str]| parse(args).map(|_| ()).unwrap_err().kind();
        assert_eq!(kind(&["destroy"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["destroy", "1", "2"]), ErrorKind::UnknownArgument);
        assert_eq!(kind(&["destroy", "bad name"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["mem-set", "1", "12X"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["vcpu-pin", "1", "0", "3-1"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["vcpu-set", "1", "0"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["domname", "guest"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["domid", "12"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["sysrq", "1", "sb"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["create", "g.cfg", "oops"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["sched-credit", "-w", "256"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["sched-credit", "-d", "1", "-w", "0"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["shutdown"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["shutdown", "-a", "1"]), ErrorKind::ArgumentConflict);
        assert_eq!(kind(&["top", "1"]), ErrorKind::UnknownArgument);
        assert_eq!(kind(&["top", "-i", "0"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["top", "-d", "x"]), ErrorKind::ValueValidation);
        // xl: the global parameters and a domain's do not mix, and -t/-r/-m need -s.
        assert_eq!(kind(&["sched-credit", "-s", "-d", "0"]), ErrorKind::ArgumentConflict);
        assert_eq!(kind(&["sched-credit", "-t", "10"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["sched-credit", "-s", "-t", "0"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["vcpu-pin", "0", "1", "0", "x"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["vcpu-pin", "0", "1", "0", "1", "2"]), ErrorKind::UnknownArgument);
        assert_eq!(kind(&["frobnicate"]), ErrorKind::InvalidSubcommand);
    }

    #[test]
    fn shutdown_and_reboot_take_all_instead_of_a_domain() {
        for cmd in ["shutdown", "reboot"] {
            assert!(parse(&[cmd, "-a"]).is_ok());
            assert!(parse(&[cmd, "-wa"]).is_ok());
            assert!(parse(&[cmd, "-w", "guest"]).is_ok());
        }
    }

    #[test]
    fn failures_read_clearly() {
        assert_eq!(
            XmError::NoDomain("guest".into()).report("list"),
            "xm: 'list' failed: domain 'guest' does not exist"
        );
        assert_eq!(XmError::NoDomain("9".into()).exit_code(), EXIT_FAILURE);
        assert!(XmError::Unsupported("why".into())
            .report("vnet-list")
            .starts_with("xm: 'vnet-list' is not supported: "));
    }

    #[test]
    fn the_not_available_report() {
        assert_eq!(XmError::NotAvailable.report("mem-set"), "xm: 'mem-set' is not available yet in this Keel build");
        assert_eq!(XmError::NotAvailable.exit_code(), EXIT_FAILURE);
    }

    #[test]
    fn main_returns_the_exit_status() {
        // (Usage errors and help are checked on the binary, in
        // tests/xm_cli.rs: clap prints them past the test harness.)
        assert_eq!(main(["xm", "info"]), EXIT_FAILURE);
    }
}
