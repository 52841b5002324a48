//! The `xm` binary's lifecycle commands (destroy, pause, unpause, shutdown, reboot, sysrq, rename, mem-set,
//! vcpu-set): their arguments, usage errors and failures off dom0. Their behaviour against a hypervisor and
//! xenstore is unit-tested in src/xm/lifecycle.rs with fakes.

use std::process::{Command, Output};

fn xm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xm"))
        .args(args)
        .env_remove("CLICOLOR_FORCE")
        .env("NO_COLOR", "1")
        .output()
        .expect("xm runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).expect("UTF-8")
}

#[test]
fn usage_errors_exit_2_and_say_what_is_wrong() {
    let cases: &[(&[&str], &str)] = &[
        (&["pause"], "<Domain>"),
        (&["unpause", "a", "b"], "unexpected argument 'b'"),
        (&["destroy", "-x", "1"], "unexpected argument '-x'"),
        (&["shutdown", "-a", "guest"], "cannot be used with"),
        (&["reboot"], "<Domain|--all>"),
        (&["sysrq", "guest"], "<letter>"),
        (&["sysrq", "guest", ""], "is not a SysRq key"),
        (&["rename", "guest"], "<NewName>"),
        (&["rename", "guest", "123"], "cannot be a domain name"),
        (&["mem-set", "guest", "1.5G"], "is not a memory size"),
        (&["mem-set", "guest", "-1"], "unexpected argument '-1'"),
        (&["vcpu-set", "guest", "x"], "is not a vCPU count"),
        (&["vcpu-set", "guest"], "<vCPUs>"),
    ];
    for (args, expected) in cases {
        let out = xm(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "xm {args:?}: {err}");
        assert!(err.starts_with("error: ") && err.contains(expected), "xm {args:?}: {err}");
        assert!(out.stdout.is_empty(), "xm {args:?}");
    }
}

/// Off dom0 (no privcmd) each command fails with exit 1 and the reason, and with --json prints {"error": ...}.
#[test]
fn off_dom0_they_fail_with_the_reason_in_json_too() {
    let cases: &[&[&str]] = &[
        &["destroy", "--json", "3"],
        &["pause", "--json", "guest"],
        &["unpause", "--json", "guest"],
        &["shutdown", "--json", "-w", "-a"],
        &["reboot", "--json", "guest"],
        &["sysrq", "--json", "guest", "s"],
        &["rename", "--json", "guest", "other"],
        &["mem-set", "--json", "guest", "256m"],
        &["vcpu-set", "--json", "guest", "2"],
    ];
    for args in cases {
        let out = xm(args);
        assert_eq!(out.status.code(), Some(1), "xm {args:?}: {out:?}");
        let err = text(&out.stderr);
        assert!(err.starts_with(&format!("xm: '{}' failed: cannot open /dev/xen/privcmd", args[0])), "{err}");
        let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).expect("stdout is JSON");
        assert_eq!(format!("{}\n", v["error"].as_str().expect("an error")), err);
    }
}

#[test]
fn help_shows_the_json_and_wait_options() {
    for (cmd, opts) in [
        ("shutdown", &["-w, --wait", "-a, --all", "--json"][..]),
        ("reboot", &["--wait", "--json"]),
        ("destroy", &["--json"]),
    ] {
        let out = xm(&[cmd, "--help"]);
        let help = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0));
        for o in opts {
            assert!(help.contains(o), "xm {cmd} --help lacks {o}: {help}");
        }
    }
}
