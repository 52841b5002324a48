//! End-to-end tests of the `xm` binary: help, dispatch, exit statuses.

use std::process::{Command, Output};

use clap::CommandFactory;
use dom0_tools::xm::Cli;

/// Every `xm` command, in the order `xm help` lists them.
const COMMANDS: [&str; 27] = [
    "console",
    "create",
    "destroy",
    "domid",
    "domname",
    "dump-core",
    "list",
    "mem-set",
    "migrate",
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

/// For each command, a valid invocation (command name first).
const VALID: [&[&str]; 27] = [
    &["console", "guest1"],
    &["create", "/etc/keel/guest1.cfg", "-c", "memory=512", "vcpus=2"],
    &["destroy", "3"],
    &["domid", "Domain-0"],
    &["domname", "0"],
    &["dump-core", "-L", "-C", "guest1", "/var/dump/guest1.core"],
    &["list", "--long", "0", "guest1"],
    &["mem-set", "guest1", "512M"],
    &["migrate", "--live", "guest1", "dest.example"],
    &["pause", "guest1"],
    &["reboot", "-w", "guest1"],
    &["rename", "guest1", "guest2"],
    &["restore", "/var/save/guest1.chk"],
    &["save", "guest1", "/var/save/guest1.chk"],
    &["shutdown", "-w", "-a"],
    &["sysrq", "guest1", "s"],
    &["top"],
    &["unpause", "guest1"],
    &["uptime", "-s"],
    &["vcpu-list", "guest1", "7"],
    &["vcpu-pin", "guest1", "all", "0-3,^2"],
    &["vcpu-set", "guest1", "4"],
    &["dmesg", "-c"],
    &["info"],
    &["log"],
    &["sched-credit", "-d", "guest1", "-w", "512", "-c", "100"],
    &["vnet-list", "-l"],
];

fn xm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xm"))
        .args(args)
        .env_remove("CLICOLOR_FORCE")
        .env("NO_COLOR", "1")
        .output()
        .expect("xm runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("stderr is UTF-8")
}

/// The one-line help of `name`, from the command table.
fn one_line_help(name: &str) -> String {
    let cli = Cli::command();
    let cmd = cli.find_subcommand(name).unwrap_or_else(|| panic!("'{name}' is in the command table"));
    cmd.get_about().expect("every command has help").to_string()
}

fn assert_lists_every_command(text: &str) {
    for name in COMMANDS {
        let help = one_line_help(name);
        let listed = text.lines().any(|line| {
            let mut words = line.split_whitespace();
            words.next() == Some(name) && line.trim_end().ends_with(&help)
        });
        assert!(listed, "'{name}  {help}' missing from:\n{text}");
    }
}

#[test]
fn help_lists_all_27_commands() {
    for args in [&["help"][..], &["--help"], &["-h"]] {
        let out = xm(args);
        assert_eq!(out.status.code(), Some(0), "xm {args:?}");
        let text = stdout(&out);
        assert!(text.starts_with("Usage: xm <subcommand> [args]\n"), "xm {args:?}:\n{text}");
        assert_lists_every_command(&text);
        assert!(stderr(&out).is_empty());
    }
}

#[test]
fn the_listing_follows_the_table_order() {
    let text = stdout(&xm(&["help"]));
    let positions: Vec<usize> = COMMANDS
        .iter()
        .map(|name| text.find(&format!("\n  {name} ")).unwrap_or_else(|| panic!("{name} listed")))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[test]
fn no_command_prints_usage_and_fails() {
    let out = xm(&[]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("Usage: xm <subcommand> [args]"), "{err}");
    assert_lists_every_command(&err);
}

#[test]
fn help_for_each_command_shows_its_usage() {
    for name in COMMANDS {
        let usage = format!("Usage: xm {name}");
        for args in [vec!["help", name], vec![name, "--help"]] {
            let out = xm(&args);
            assert_eq!(out.status.code(), Some(0), "xm {args:?}");
            let text = stdout(&out);
            assert!(text.contains(&usage), "xm {args:?}:\n{text}");
            assert!(text.contains(&one_line_help(name)), "xm {args:?}:\n{text}");
        }
    }
}

#[test]
fn usages_name_the_xm_style_arguments() {
    for (name, usage) in [
        ("create", "xm create [OPTIONS] <ConfigFile> [NAME=VALUE]..."),
        ("destroy", "xm destroy [OPTIONS] <Domain>"),
        ("list", "xm list [OPTIONS] [Domain]..."),
        ("mem-set", "xm mem-set [OPTIONS] <Domain> <Mem>"),
        ("vcpu-pin", "xm vcpu-pin [OPTIONS] <Domain> <VCPU|all> <CPUs|all> [SoftCPUs]"),
        ("sched-credit", "xm sched-credit [OPTIONS]"),
        ("top", "xm top [OPTIONS]"),
        ("shutdown", "xm shutdown [OPTIONS] <Domain|--all>"),
        ("dump-core", "xm dump-core [OPTIONS] <Domain> [Filename]"),
        ("domid", "xm domid [OPTIONS] <DomainName>"),
        ("domname", "xm domname [OPTIONS] <DomainId>"),
        ("sysrq", "xm sysrq [OPTIONS] <Domain> <letter>"),
    ] {
        let text = stdout(&xm(&["help", name]));
        assert!(text.contains(&format!("Usage: {usage}\n")), "{text}");
    }
}

#[test]
fn unknown_commands_fail_clearly() {
    let out = xm(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.starts_with("error: unrecognized subcommand 'frobnicate'"), "{err}");
    assert!(err.contains("Usage: xm <subcommand> [args]"), "{err}");
    assert!(stdout(&out).is_empty());

    let out = xm(&["lsit"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("a similar subcommand exists: 'list'"), "{}", stderr(&out));

    let out = xm(&["help", "frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unrecognized subcommand 'frobnicate'"));
}

/// Commands not built yet say so; those built (they ask the hypervisor through privcmd) fail with the reason on a
/// host that is not dom0.
#[test]
fn commands_say_why_they_cannot_run() {
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
    ];
    for (args, name) in VALID.iter().zip(COMMANDS) {
        assert_eq!(args[0], name);
        let out = xm(args);
        let err = stderr(&out);
        if name == "log" {
            // Prints /var/log/xen/, which a host may or may not have.
            continue;
        }
        assert_eq!(out.status.code(), Some(1), "xm {args:?}: {out:?}");
        if BUILT.contains(&name) {
            assert!(
                err.starts_with(&format!("xm: '{name}' failed: cannot open /dev/xen/privcmd")),
                "xm {args:?}: {err}"
            );
        } else if name == "create" {
            assert!(
                err.starts_with("xm: 'create' failed: /etc/keel/guest1.cfg: cannot read the configuration file: "),
                "{err}"
            );
        } else if name == "console" {
            // Looks the domain up in xenstore (dom0-tools/tests/xm_console.rs has the rest).
            assert!(err.starts_with("xm: 'console' failed: cannot reach xenstore"), "xm {args:?}: {err}");
        } else if name == "vnet-list" {
            assert!(err.starts_with("xm: 'vnet-list' is not supported: Xen removed virtual networks"), "{err}");
        } else if name == "migrate" {
            // Reads the relocation key before anything else.
            assert!(err.starts_with("xm: 'migrate' failed: cannot read the relocation key "), "{err}");
        } else if name == "restore" {
            // Checks its file before anything else.
            assert!(err.starts_with("xm: 'restore' failed: cannot open /var/save/guest1.chk: "), "{err}");
        } else {
            assert_eq!(err, format!("xm: '{name}' is not available yet in this Keel build\n"), "xm {args:?}");
        }
        assert!(stdout(&out).is_empty(), "xm {args:?}");
    }
}

/// Asked for JSON, a command that fails still prints a JSON document (`{"error": ...}`) for the script reading it.
#[test]
fn json_failures_are_json() {
    for args in [&["info", "--json"][..], &["vnet-list", "--json"], &["top", "-b", "-i", "1", "--json"]] {
        let out = xm(args);
        assert_eq!(out.status.code(), Some(1), "xm {args:?}");
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("stdout is JSON");
        let why = v["error"].as_str().expect("an error string");
        assert!(why.starts_with(&format!("xm: '{}' ", args[0])), "{why}");
        assert_eq!(format!("{why}\n"), stderr(&out));
    }
}

#[test]
fn bad_arguments_are_usage_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["destroy"], "required arguments were not provided"),
        (&["destroy", "1", "2"], "unexpected argument '2'"),
        (&["destroy", "my guest"], "not allowed in a domain name"),
        (&["pause", "40000"], "domain id 40000 is out of range"),
        (&["list", "--bogus"], "unexpected argument '--bogus'"),
        (&["mem-set", "guest1"], "<Mem>"),
        (&["mem-set", "guest1", "12X"], "'12X' is not a memory size"),
        (&["mem-set", "guest1", "0"], "memory size of zero"),
        (&["vcpu-set", "guest1", "0"], "vCPU count 0 is out of range"),
        (&["vcpu-pin", "guest1", "0"], "<CPUs|all>"),
        (&["vcpu-pin", "guest1", "x", "0"], "'x' is not a vCPU"),
        (&["vcpu-pin", "guest1", "0", "0-3,^"], "'^' is not a CPU list item"),
        (&["vcpu-pin", "guest1", "0", "3-1"], "ends before it starts"),
        (&["vcpu-pin", "guest1", "0", "^2"], "selects no CPU"),
        (&["domid", "12"], "cannot be a domain name"),
        (&["domname", "guest1"], "is not a domain id"),
        (&["rename", "guest1", "a/b"], "not allowed in a domain name"),
        (&["sysrq", "guest1", "sb"], "is not a SysRq key"),
        (&["create"], "<ConfigFile>"),
        (&["create", "g.cfg", "memory"], "expected NAME=VALUE"),
        (&["migrate", "guest1", ""], "host name or address is required"),
        (&["shutdown"], "<Domain|--all>"),
        (&["reboot", "-a", "guest1"], "cannot be used with"),
        (&["sched-credit", "-w", "256"], "--domain <Domain>"),
        (&["sched-credit", "-d", "1", "-w", "0"], "weight 0 is out of range"),
        (&["sched-credit", "-d", "1", "-c", "x"], "'x' is not a cap"),
        (&["dmesg", "extra"], "unexpected argument 'extra'"),
        (&["info", "-c"], "unexpected argument '-c'"),
        (&["sched-credit", "-s", "-d", "0"], "cannot be used with"),
        (&["sched-credit", "-r", "100"], "--schedparam"),
        (&["top", "-i", "0"], "not in 1.."),
        (&["vcpu-pin", "0", "1", "0", "1-"], "not a CPU list item"),
    ];
    for (args, expected) in cases {
        let out = xm(args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "xm {args:?}: {err}");
        assert!(err.starts_with("error: "), "xm {args:?}: {err}");
        assert!(err.contains(expected), "xm {args:?}: {err}");
        assert!(!err.contains("not available"), "xm {args:?}: {err}");
        assert!(stdout(&out).is_empty(), "xm {args:?}");
    }
}
