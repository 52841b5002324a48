//! A hostile netfront cannot hurt dom0 or Keel (xtask/assets/checks/domu-hostnet.sh): Keel's test guest
//! hostile_netfront, a deliberately bad netfront with four vifs, gets its valid ARP request through dom0's stock
//! netback and bridge and dom0's reply back on its rx ring; each bad request that fails only itself gets
//! NETIF_RSP_ERROR; the requests netback takes as fatal get no NETIF_RSP_OKAY (netback disables that vif, and says
//! so in dom0's log); meanwhile a Debian domU keeps pinging dom0, dom0's kernel logs no oops, its xenstored and
//! xenconsoled keep running, and no vif, backend directory or page is left afterwards: the guest runs twice, and
//! the second run costs no page at all (the first may give dom0's p2m a table or two for netback's grant range).

use super::domu::{check, num, test_guest_problems, P2M_TABLES};
use keel_tests::Run;

/// Probes the guest must have run, each ending `-> ok`.
const PROBES: &[&str] = &[
    "valid-arp",
    "gref-beyond-table",
    "gref-not-granted",
    "gref-other-domain",
    "size-below-header",
    "size-zero",
    // Linux 6.1 takes a 19-slot packet: the guest reports it and does not judge it.
    "slots-19",
    "id-reused",
    "valid-after-errors",
    "valid-after-flood",
    "cross-page",
    "size-beyond-chain",
    "slots-24",
    "producer-ahead",
];

/// What the hostile-netfront check got wrong.
pub fn problems(run: &Run) -> Vec<String> {
    let c = |what: &str| check(run, what).unwrap_or_default();
    let mut p = match test_guest_problems(run, "hostnet", "the hostile netfront", PROBES) {
        Ok(p) => p,
        Err(e) => return vec![e],
    };
    if c("hostnet-dom0-fatal").parse::<u32>().unwrap_or(0) == 0 {
        p.push("hostnet: dom0's netback did not log \"fatal error; disabling device\" for the fatal probes".into());
    }
    if c("hostnet-dom0-oops") != "0" {
        p.push(format!("hostnet: dom0's kernel logged {} new BUG/Oops lines", c("hostnet-dom0-oops")));
    }
    if c("hostnet-daemons") != "xenstored=up xenconsoled=up xenstore=answers" {
        p.push(format!("hostnet: dom0's daemons afterwards: {:?}", c("hostnet-daemons")));
    }
    if !c("hostnet-bystander-create").starts_with("Started domain nbystander (id=") {
        p.push(format!("hostnet: the bystander domU: {:?}", c("hostnet-bystander-create")));
    }
    let ping = c("hostnet-bystander-ping");
    let after = ping.split_whitespace().find_map(|w| w.strip_prefix("after=")).and_then(|v| v.parse::<u32>().ok());
    if after.unwrap_or(0) < 5 || !ping.ends_with("failed=0") {
        p.push(format!("hostnet: the bystander's pings of dom0 after the hostile guest: {ping:?}, want 5 or more"));
    }
    match test_guest_problems(run, "hostnet-again", "the hostile netfront's second run", PROBES) {
        Ok(again) => p.extend(again),
        Err(e) => p.push(e),
    }
    if c("hostnet-again-free") != "0" {
        p.push(format!("hostnet: the second run changed free memory by {} pages, want 0", c("hostnet-again-free")));
    }
    let left = c("hostnet-leftover");
    if !left.starts_with("vifs=0 backends=0 ")
        || num(&left, "free-vs-start").is_none_or(|d| !(-P2M_TABLES..=0).contains(&d))
    {
        p.push(format!("hostnet: afterwards: {left:?}, want no vif, backend directory or page left"));
    }
    p
}
