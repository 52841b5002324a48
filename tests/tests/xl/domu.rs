//! Judging the domU checks (xtask/assets/checks/domu-*.sh) of the xl test's run: each area adds its function to
//! [`problems`].

use keel_tests::Run;

/// The value of the first `KEEL-CHECK: <what> <value>` line, if any, without a kernel message that dom0's console
/// printed into the middle of it.
pub fn check(run: &Run, what: &str) -> Option<String> {
    let tag = format!("KEEL-CHECK: {what} ");
    run.lines().find_map(|l| l.split_once(tag.as_str()).map(|(_, v)| without_printk(v).trim_end().to_string()))
}

/// `line` up to a printk timestamp (`[  488.893244] `) in it: dom0's kernel writes to the console (hvc0) as the
/// checks' shell does, and a kernel line can land inside a shell line (a fresh-clone CI run once read
/// `hostnet-again-gone yes[  488.893244] x`).
pub fn without_printk(line: &str) -> &str {
    let stamp_at = |i: usize| {
        let rest = line[i + 1..].trim_start_matches(' ');
        let (secs, rest) = rest.split_once('.').unwrap_or(("", ""));
        let frac = rest.split_once(']').map_or("", |(f, _)| f);
        !secs.is_empty()
            && secs.bytes().all(|b| b.is_ascii_digit())
            && frac.len() == 6
            && frac.bytes().all(|b| b.is_ascii_digit())
    };
    match line.match_indices('[').map(|(i, _)| i).find(|&i| stamp_at(i)) {
        Some(i) => &line[..i],
        None => line,
    }
}

/// Whether a yes/no check said yes. A kernel line's tail can follow the value on the same console line (a
/// fresh-clone run read `hostnet-gone yesisabled state`: the shell's line landed inside a bridge message), so only
/// the start counts.
pub fn said_yes(v: &str) -> bool {
    v.starts_with("yes")
}

/// `key=<integer>` in a check's value.
/// `key=[...]` (bracketed) or `key=value` in a check's value.
pub fn field<'a>(value: &'a str, key: &str) -> Option<&'a str> {
    let at = value.find(&format!("{key}="))? + key.len() + 1;
    let rest = &value[at..];
    match rest.strip_prefix('[') {
        Some(inner) => inner.split_once(']').map(|(v, _)| v),
        None => rest.split_whitespace().next(),
    }
}

pub fn num(value: &str, key: &str) -> Option<i64> {
    value.split_whitespace().find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// Page-table frames dom0's p2m may gain, once, for the range its backends map grants into (kept, as Xen keeps a
/// domain's p2m tables): a check's first use of a backend may cost that much, its repeats nothing.
pub const P2M_TABLES: i64 = 4;

/// What went wrong with a test guest that xtask/assets/checks/0domu.sh's `test_guest_run NAME CFG TAG` booted
/// (`what` names it in the messages): `xm create` of it, each of `probes` (and any other probe it ran) ending
/// `-> ok`, its `Test result: SUCCESS`, and its domain gone after its power-off. Err when it was not even created:
/// nothing else of it can be judged then.
pub fn test_guest_problems(run: &Run, tag: &str, what: &str, probes: &[&str]) -> Result<Vec<String>, String> {
    let c = |key: &str| check(run, &format!("{tag}-{key}")).unwrap_or_default();
    let area = tag.split('-').next().unwrap_or(tag);
    let create = c("create");
    if !create.starts_with("Started domain ") {
        return Err(format!("{area}: xm create of {what}: {create:?}"));
    }
    let head = format!("KEEL-CHECK: {tag}-guest hostile: probe ");
    let guest: Vec<&str> = run.lines().filter_map(|l| l.split_once(head.as_str()).map(|(_, v)| v.trim_end())).collect();
    let mut p = Vec::new();
    for name in probes {
        let head = format!("{name} ");
        match guest.iter().find(|l| l.starts_with(head.as_str())) {
            Some(l) if l.ends_with("-> ok") => {}
            Some(l) => p.push(format!("{area}: probe {l}")),
            None => p.push(format!("{area}: {what} did not run probe {name}")),
        }
    }
    if let Some(l) =
        guest.iter().find(|l| !l.ends_with("-> ok") && !probes.iter().any(|n| l.starts_with(&format!("{n} "))))
    {
        p.push(format!("{area}: probe {l}"));
    }
    if c("result") != "SUCCESS" {
        p.push(format!("{area}: {what}'s result: {:?}", c("result")));
    }
    if !said_yes(&c("gone")) {
        p.push(format!("{area}: {what} powered off but its domain stayed: {:?}", c("gone")));
    }
    Ok(p)
}

/// Every domU area's problems.
pub fn problems(run: &Run) -> Vec<String> {
    let areas: [fn(&Run) -> Vec<String>; 10] = [
        super::ops::problems,
        super::balloon::problems,
        super::dumpcore::problems,
        super::lifecycle::problems,
        super::disk::problems,
        super::net::problems,
        super::hostile::problems,
        super::hostnet::problems,
        super::save::problems,
        super::migrate::problems,
    ];
    areas.iter().flat_map(|area| area(run)).collect()
}

/// A kernel message printed into a check's line is cut off; brackets that are not a printk stamp stay.
#[test]
fn a_printk_inside_a_check_line_is_cut_off() {
    assert_eq!(without_printk("yes[  488.893244] x"), "yes");
    assert!(said_yes("yesisabled state") && !said_yes("no") && !said_yes(""));
    assert_eq!(without_printk("first=[n=3 sum=ab] last=[n=4]"), "first=[n=3 sum=ab] last=[n=4]");
    assert_eq!(without_printk("a [12.5] b [    3.000001] xenbr0"), "a [12.5] b ");
    assert_eq!(without_printk("no stamp"), "no stamp");
}
