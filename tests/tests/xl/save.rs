//! xtask/assets/checks/domu-save.sh: `xm save` and `xm restore` of a running Debian domU with a disk and a vif,
//! ten rounds; a corrupted and a truncated file refused; nothing left at the end.

use super::domu::{check, field, num};
use keel_tests::Run;

pub fn problems(run: &Run) -> Vec<String> {
    let mut p = Vec::new();
    let create = check(run, "save-create").unwrap_or_default();
    if !create.starts_with("Started domain save ") {
        return vec![format!("save: xm create of the domU: {create:?}")];
    }
    let written = check(run, "save-written").unwrap_or_default();
    if written.len() != 32 {
        p.push(format!("save: the guest did not write its file: {written:?}"));
    }
    let mut rounds = 0;
    for r in 1.. {
        let Some(saved) = check(run, &format!("save-save-{r}")) else { break };
        rounds = r;
        if !saved.starts_with("Saved domain ") {
            p.push(format!("save: round {r}: xm save: {saved:?}"));
            continue;
        }
        let before = check(run, &format!("save-before-{r}")).unwrap_or_default();
        if !before.ends_with("gone=yes") {
            p.push(format!("save: round {r}: the saved domain is still there: {before:?}"));
        }
        let restored = check(run, &format!("save-restore-{r}")).unwrap_or_default();
        if !restored.starts_with("Restored domain save ") {
            p.push(format!("save: round {r}: xm restore: {restored:?}"));
            continue;
        }
        // The count goes on from the last line before the save (one more, or two if a line was on its way), the
        // file reads back the same through blkfront, and dom0 answers pings again; the guest never booted again.
        let after = check(run, &format!("save-after-{r}")).unwrap_or_default();
        let (first, last) = (field(&after, "first").unwrap_or(""), field(&after, "last").unwrap_or(""));
        let (n0, n1) = (num(&before, "n"), num(first, "n"));
        if !matches!((n0, n1), (Some(a), Some(b)) if b > a && b <= a + 3) {
            p.push(format!("save: round {r}: the count did not go on: before {before:?}, after {after:?}"));
        }
        if field(first, "sum") != Some(written.as_str()) || field(last, "sum") != Some(written.as_str()) {
            p.push(format!("save: round {r}: the file read back differs from {written}: {after:?}"));
        }
        if field(last, "ping") != Some("ok") {
            p.push(format!("save: round {r}: no ping after the restore: {after:?}"));
        }
        if num(&after, "boots") != Some(1) {
            p.push(format!("save: round {r}: the guest booted again: {after:?}"));
        }
    }
    if rounds < 10 {
        p.push(format!("save: {rounds} save/restore rounds ran, want 10"));
    }
    for what in ["corrupt", "truncated"] {
        let v = check(run, &format!("save-{what}")).unwrap_or_default();
        if !v.starts_with("rc=1 xm: 'restore' failed: ") {
            p.push(format!("save: the {what} file: {v:?}"));
        }
    }
    if check(run, "save-corrupt").is_some_and(|v| !v.contains("corrupted")) {
        p.push("save: the corrupted file's error does not say so".into());
    }
    if check(run, "save-bad-files-left").as_deref() != Some("domains=0") {
        p.push(format!("save: a bad file left a domain: {:?}", check(run, "save-bad-files-left")));
    }
    // Every round costs nothing: the free memory with the restored guest running is the same after the last round
    // as after the first. Once all is gone, only dom0's p2m may have gained the tables for the range its backends
    // map grants into (kept, as Xen keeps them).
    let rounds_free = check(run, "save-rounds-free").unwrap_or_default();
    if num(&rounds_free, "last-vs-round1") != Some(0) {
        p.push(format!("save: free memory moved between the first and the last round: {rounds_free:?}"));
    }
    let destroyed = check(run, "save-destroyed").unwrap_or_default();
    if !num(&destroyed, "free-vs-start").is_some_and(|f| (-super::domu::P2M_TABLES..=0).contains(&f)) {
        p.push(format!("save: free memory after the last destroy: {destroyed:?}"));
    }
    for (key, want) in [("loops", 0), ("vifs", 0), ("domains", 0)] {
        if num(&destroyed, key) != Some(want) {
            p.push(format!("save: after the last destroy {key} should be {want}: {destroyed:?}"));
        }
    }
    p
}
