//! on_poweroff / on_reboot / on_crash through `xm create`'s monitor, with Debian domUs
//! (xtask/assets/checks/domu-lifecycle.sh): shutdown -w with destroy, reboot -w with restart, a crash with restart
//! and with preserve, and destroy mid-boot; each leaves no domain, xenstore node, memory or monitor behind.

use keel_tests::Run;

use super::domu::check;

/// `key=value` from a check's value (the value runs to the next space).
fn field(line: &str, key: &str) -> Option<String> {
    line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{key}=")).map(String::from))
}

/// A domain id, if `v` is one (a domU's: not 0).
fn domid(v: Option<String>) -> Option<u16> {
    v.and_then(|v| v.parse().ok()).filter(|&id| id != 0)
}

/// The lifecycle area's problems.
pub fn problems(run: &Run) -> Vec<String> {
    let mut p = Vec::new();
    let get = |what: &str| check(run, what).unwrap_or_default();
    let mut want = |what: &str, ok: bool, why: &str| {
        if !ok {
            p.push(format!("lifecycle-{what} {:?}: {why}", check(run, &format!("lifecycle-{what}"))));
        }
    };

    let create = get("lifecycle-create");
    want("create", create.starts_with("Started domain lc-off (id="), "xm create of the first domU");
    let mon = get("lifecycle-monitor");
    want("monitor", mon == "running log=1", "xm create left a running xm-monitor that logs xl's first line");

    // xm shutdown -w: the guest's own power-off ran, -w returned once the monitor had destroyed it.
    let w = get("lifecycle-shutdown-wait");
    want(
        "shutdown-wait",
        w.starts_with("rc=0 last=Domain ") && w.ends_with(" has been destroyed"),
        "exit 0, after the domain is gone",
    );
    want("shutdown-console", get("lifecycle-shutdown-console") == "1", "one `KEEL-DOMU: powering off`");
    want(
        "shutdown-gone",
        get("lifecycle-shutdown-gone") == "listed=0 nodes=0 free=yes monitor=exited",
        "not listed, no nodes, free memory exactly back, monitor gone",
    );
    want("shutdown-log", get("lifecycle-shutdown-log") == "1", "the monitor applied on_poweroff=destroy");

    // xm reboot -w: the guest rebooted itself, came back under a new id with the same monitor, and init ran twice.
    let w = get("lifecycle-reboot-wait");
    want(
        "reboot-wait",
        w.starts_with("rc=0 old-listed=0 last=Domain ") && w.ends_with(" has been destroyed"),
        "-w returns once the old id is gone",
    );
    let ids = get("lifecycle-reboot-ids");
    let (old, new) = (domid(field(&ids, "old")), domid(field(&ids, "new")));
    want("reboot-ids", old.is_some() && new.is_some() && old != new, "a new domain id under the same name");
    want(
        "reboot-ids",
        field(&ids, "old-nodes").as_deref() == Some("0") && field(&ids, "same-monitor").as_deref() == Some("yes"),
        "the old id's nodes removed; the same monitor follows the new domain",
    );
    want(
        "reboot-console",
        get("lifecycle-reboot-console") == "rebooting=1 init=2",
        "the guest's own /sbin/reboot ran and init was reached again",
    );
    want("reboot-log", get("lifecycle-reboot-log") == "1", "the monitor applied on_reboot=restart once");
    want(
        "reboot-destroyed",
        get("lifecycle-reboot-destroyed") == "listed=0 nodes=0 free=yes monitor=exited",
        "xm destroy of the restarted domain: gone, memory back, monitor gone",
    );

    // A crash with on_crash=restart.
    let c = get("lifecycle-crash-restart");
    let (old, new) = (domid(field(&c, "old")), domid(field(&c, "new")));
    want(
        "crash-restart",
        old.is_some() && new.is_some() && old != new && field(&c, "init").as_deref() == Some("2"),
        "a new id and init reached again after sysrq c",
    );
    want("crash-restart", field(&c, "old-nodes").as_deref() == Some("0"), "the crashed domain's nodes removed");
    want("crash-log", get("lifecycle-crash-log") == "1", "the monitor applied on_crash=restart (reason code 3)");
    want(
        "crash-destroyed",
        get("lifecycle-crash-destroyed") == "listed=0 nodes=0 free=yes monitor=exited",
        "gone, memory back, monitor gone",
    );

    // A crash with on_crash=preserve: kept, shut down for a crash (state letters `---sc-`), unwatched.
    let s = get("lifecycle-preserve-state");
    let id = field(&s, "id");
    let kept = s.split_once("now=").map(|(_, rest)| rest.split_whitespace().take(2).collect::<Vec<_>>());
    want(
        "preserve-state",
        id.is_some()
            && kept.as_ref().is_some_and(|k| k.first() == id.as_deref().as_ref() && k.get(1) == Some(&"---sc-")),
        "the same domain, listed in state c",
    );
    want("preserve-state", s.ends_with(" monitor=exited"), "the monitor stops watching a preserved domain");
    want("preserve-log", get("lifecycle-preserve-log") == "1", "the monitor applied on_crash=preserve");
    want(
        "preserve-destroyed",
        get("lifecycle-preserve-destroyed") == "listed=0 nodes=0 free=yes",
        "xm destroy removes the preserved domain and gives its memory back",
    );

    // A crash with on_crash=coredump-destroy: the core written, then the domain destroyed.
    want(
        "coredump",
        get("lifecycle-coredump") == "listed=0 nodes=0 free=yes monitor=exited dumped=1 destroyed=1",
        "dump attempted, then the domain destroyed with nothing left",
    );
    let f = get("lifecycle-coredump-file");
    want(
        "coredump-file",
        f.strip_prefix("bytes=").and_then(|b| b.parse::<u64>().ok()).is_some_and(|b| b > 100 << 20),
        "a core holding the guest's RAM (128 MiB)",
    );

    // xm destroy mid-boot.
    let e = get("lifecycle-early");
    want(
        "early",
        e.starts_with("rc=0 booted=0 ") && e.ends_with(" listed=0 nodes=0 free=yes monitor=exited"),
        "destroyed before its init, nothing left",
    );
    want("monitors-left", get("lifecycle-monitors-left") == "0", "no xm-monitor process left");
    p
}
