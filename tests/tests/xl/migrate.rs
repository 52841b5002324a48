//! xtask/assets/checks/domu-migrate.sh: `xm migrate --live` of a running Debian domU with a vif to keel-relocd on
//! the same host, ten rounds while the guest writes memory; a wrong key, a refused host, a receiver killed
//! mid-stream and a save that cannot be written each leave the guest running here; nothing left at the end.

use super::domu::{check, field, num};
use keel_tests::Run;

/// A number after `key ` in the migrate's summary line (`downtime 180 ms`).
fn after_word(line: &str, key: &str) -> Option<u64> {
    let at = line.find(&format!("{key} "))? + key.len() + 1;
    line[at..].split_whitespace().next()?.parse().ok()
}

/// The guest is the same domain, still counting, and the only one: `same()`'s line.
fn runs_on(v: &str, id: &str) -> bool {
    field(v, "id") == Some(id) && field(v, "ticks") == Some("moving") && num(v, "domains") == Some(1)
}

pub fn problems(run: &Run) -> Vec<String> {
    let mut p = Vec::new();
    let create = check(run, "mig-create").unwrap_or_default();
    if !create.starts_with("Started domain mig ") {
        return vec![format!("migrate: xm create of the domU: {create:?}")];
    }
    let region = check(run, "mig-region").unwrap_or_default();
    if region.len() != 32 {
        p.push(format!("migrate: the guest did not fill its region: {region:?}"));
    }
    let mut rounds = 0;
    for r in 1.. {
        let Some(done) = check(run, &format!("mig-migrate-{r}")) else { break };
        rounds = r;
        if !done.starts_with("Migrated domain ") {
            p.push(format!("migrate: round {r}: xm migrate: {done:?}"));
            continue;
        }
        if after_word(&done, "downtime").is_none() || after_word(&done, "total").is_none() {
            p.push(format!("migrate: round {r}: no total time or downtime: {done:?}"));
        }
        let pre = check(run, &format!("mig-rounds-{r}")).unwrap_or_default();
        if !pre.starts_with("round 0: ") || !pre.contains("round 1: ") {
            p.push(format!("migrate: round {r}: no pre-copy rounds shown: {pre:?}"));
        }
        // The count goes on (the same process), the region is unchanged, dom0 answers pings, the domain moved to
        // a new id under its own name, and the guest never booted again.
        let after = check(run, &format!("mig-after-{r}")).unwrap_or_default();
        let (n0, n1) =
            (num(field(&after, "before").unwrap_or(""), "n"), num(field(&after, "first").unwrap_or(""), "n"));
        if !matches!((n0, n1), (Some(a), Some(b)) if b > a) {
            p.push(format!("migrate: round {r}: the count did not go on: {after:?}"));
        }
        let sum = field(&after, "sum").unwrap_or("");
        if !sum.starts_with(&region) || !sum.ends_with("ping=ok") {
            p.push(format!("migrate: round {r}: region or ping after the migration: {after:?}"));
        }
        if num(&after, "boots") != Some(1) {
            p.push(format!("migrate: round {r}: the guest booted again: {after:?}"));
        }
        if field(&after, "old") == field(&after, "new") || field(&after, "new").is_none_or(str::is_empty) {
            p.push(format!("migrate: round {r}: the domain did not move: {after:?}"));
        }
        if num(&after, "names") != Some(0) {
            p.push(format!("migrate: round {r}: an --incoming or --migratedaway domain is left: {after:?}"));
        }
        if !field(&after, "worst").is_some_and(|g| g.ends_with("ms") && g != "none0ms") {
            p.push(format!("migrate: round {r}: no gap measured in the guest: {after:?}"));
        }
    }
    if rounds < 10 {
        p.push(format!("migrate: {rounds} live migrations ran, want 10"));
    }
    let id = check(run, "mig-id").unwrap_or_default();
    for (what, says) in [
        ("wrongkey", "authentication failed"),
        ("denied", "not in xend-relocation-hosts-allow"),
        ("killed", "keeps running here"),
        ("savefail", "runs on"),
    ] {
        let v = check(run, &format!("mig-{what}")).unwrap_or_default();
        if !v.starts_with("rc=1 xm: ") || !v.contains(says) {
            p.push(format!("migrate: {what}: want a failure saying {says:?}: {v:?}"));
        }
        let after = check(run, &format!("mig-{what}-after")).unwrap_or_default();
        if !runs_on(&after, &id) {
            p.push(format!("migrate: {what}: the guest (domain {id}) should run on here, alone: {after:?}"));
        }
    }
    for (what, key) in [("wrongkey", "log"), ("denied", "log"), ("killed", "cleanup")] {
        let after = check(run, &format!("mig-{what}-after")).unwrap_or_default();
        if field(&after, key).and_then(|v| v.parse::<u32>().ok()).is_none_or(|n| n < 1) {
            p.push(format!("migrate: {what}: the relocation server did not log it: {after:?}"));
        }
    }
    let killed = check(run, "mig-killed-after").unwrap_or_default();
    if num(&killed, "incoming") != Some(0) {
        p.push(format!("migrate: the killed receiver's domain is left: {killed:?}"));
    }
    let savefail = check(run, "mig-savefail-after").unwrap_or_default();
    if !field(&savefail, "sum").is_some_and(|s| s.starts_with(&region)) || num(&savefail, "files") != Some(0) {
        p.push(format!("migrate: after the failed save: {savefail:?}"));
    }
    let rounds_free = check(run, "mig-rounds-free").unwrap_or_default();
    if num(&rounds_free, "last-vs-round1") != Some(0) {
        p.push(format!("migrate: free memory moved between the first and the last migration: {rounds_free:?}"));
    }
    let destroyed = check(run, "mig-destroyed").unwrap_or_default();
    if !num(&destroyed, "free-vs-start").is_some_and(|f| (-super::domu::P2M_TABLES..=0).contains(&f)) {
        p.push(format!("migrate: free memory after the last destroy: {destroyed:?}"));
    }
    for (key, want) in [("vifs", 0), ("domains", 0)] {
        if num(&destroyed, key) != Some(want) {
            p.push(format!("migrate: after the last destroy {key} should be {want}: {destroyed:?}"));
        }
    }
    p
}
