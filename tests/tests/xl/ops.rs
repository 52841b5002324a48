//! xtask/assets/checks/domu-ops.sh: pause/unpause, sysrq, vcpu-set, and credit weights with `cpus=` pinning on
//! live Debian domUs.

use super::domu::check;
use keel_tests::Run;

/// `key=value` fields of a check's value.
fn field<'a>(value: &'a str, key: &str) -> Option<&'a str> {
    value.split_whitespace().find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
}

pub fn problems(run: &Run) -> Vec<String> {
    let mut p = Vec::new();
    let Some(created) = check(run, "ops-create") else {
        return vec!["domu-ops.sh did not run (no KEEL-CHECK: ops-create)".into()];
    };
    if !created.starts_with("Started domain ops (id=") {
        p.push(format!("ops: xm create: {created:?}"));
    }

    // Live output through xm console (about one tick a second for 4 s), detached by Ctrl-].
    let console = check(run, "ops-console").unwrap_or_default();
    let ticks = field(&console, "ticks").and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
    if field(&console, "rc") != Some("0") || ticks < 2 {
        p.push(format!("ops: xm console: {console:?}, want rc=0 and ticks>=2"));
    }

    // Paused: state p, not one tick for 4 s; unpaused: ticks again, and its own uptime jumped over the pause.
    let pause = check(run, "ops-pause").unwrap_or_default();
    let num = |k: &str| field(&pause, k).and_then(|v| v.parse::<i64>().ok());
    let paused_ok = field(&pause, "state").is_some_and(|s| s.contains('p'))
        && num("ticks-while-paused") == Some(0)
        && num("ticks-after").is_some_and(|n| n >= 2)
        && num("uptime-jump").is_some_and(|n| n >= 4)
        && field(&pause, "state-after").is_some_and(|s| !s.contains('p'));
    if !paused_ok {
        p.push(format!("ops: pause/unpause: {pause:?}"));
    }

    if check(run, "ops-sysrq").and_then(|n| n.parse::<u32>().ok()).unwrap_or(0) == 0 {
        p.push(format!("ops: xm sysrq h did not reach the guest: {:?}", check(run, "ops-sysrq")));
    }
    for (what, want) in [("ops-vcpu-set-1", "cpus=0"), ("ops-vcpu-set-2", "cpus=0-1")] {
        if check(run, what).as_deref() != Some(want) {
            p.push(format!("ops: {what}: {:?}, want {want}", check(run, what)));
        }
    }

    // The heavy domain's vCPUs pinned to the machine's last two CPUs (vcpu-list's hard affinity), the light one's
    // free; CPU time about 2:1 for weights 512:256.
    let pinned = check(run, "ops-pinned").unwrap_or_default();
    let cpus: Vec<&str> = pinned.split_whitespace().collect();
    let consecutive = match cpus[..] {
        [a, b, "all", "all"] => a.parse::<u32>().ok().map(|a| a + 1) == b.parse().ok(),
        _ => false,
    };
    if !consecutive {
        p.push(format!("ops: per-vCPU cpus= pinning in xm vcpu-list: {pinned:?}"));
    }
    let weights = check(run, "ops-weights").unwrap_or_default();
    let secs = |k: &str| field(&weights, k).and_then(|v| v.parse::<f64>().ok());
    match (secs("heavy"), secs("light")) {
        (Some(h), Some(l)) if l > 1.0 && h + l > 8.0 && (1.5..=2.5).contains(&(h / l)) => {}
        _ => p.push(format!("ops: CPU time of weights 512:256: {weights:?}")),
    }
    // xm top's second frame: the heavier domain has the larger live CPU share; both show their 128 MiB.
    let top: Vec<Vec<String>> = run
        .lines()
        .filter_map(|l| l.split_once("KEEL-OPS-TOP: "))
        .map(|(_, r)| r.split_whitespace().map(String::from).collect())
        .collect();
    let row = |name: &str| top.iter().rev().find(|c| c.first().map(String::as_str) == Some(name));
    let share = |name: &str| row(name).and_then(|c| c.get(2)?.parse::<f64>().ok());
    let mem = |name: &str| row(name).and_then(|c| c.get(3)?.parse::<u64>().ok());
    let top_ok = matches!((share("heavy"), share("light")), (Some(h), Some(l)) if h > l && l > 5.0)
        && [mem("heavy"), mem("light")].iter().all(|m| m.is_some_and(|k| (120_000..=140_000).contains(&k)));
    if !top_ok {
        p.push(format!("ops: xm top rows of the spinning domUs: {top:?}"));
    }
    if check(run, "ops-destroyed").as_deref() != Some("free-returned=yes domains=0") {
        p.push(format!("ops: after destroying them: {:?}", check(run, "ops-destroyed")));
    }
    p
}
