//! Guest networks through dom0's stock netback and xenbr0 (xtask/assets/checks/domu-net.sh): two Debian PVH domUs'
//! stock netfronts come up with Xen-prefixed MACs; dom0 and the guests ping each other; 64 MiB go from a guest to
//! dom0 over TCP intact; network-detach and network-attach work on a running guest; nothing is left behind.

use super::domu::check;
use keel_tests::Run;

/// 64 MiB.
const BLOB: u64 = 64 << 20;

/// What the network checks got wrong.
pub fn problems(run: &Run) -> Vec<String> {
    let mut p = Vec::new();
    let c = |what: &str| check(run, what).unwrap_or_default();
    if !c("net-bridge").starts_with("xenbr0 10.0.3.1/24") {
        p.push(format!("net: dom0's bridge: {:?}, want xenbr0 with 10.0.3.1/24", c("net-bridge")));
    }
    let create = c("net-create");
    if !create.contains("Started domain net1 (id=") || !create.contains("Started domain net2 (id=") {
        p.push(format!("net: xm create of two guests with a vif each: {create:?}"));
        return p;
    }
    let ports = c("net-bridge-ports");
    if ports.split_whitespace().filter(|v| v.starts_with("vif")).count() != 2 {
        p.push(format!("net: the bridge's ports: {ports:?}, want the two guests' vifs"));
    }
    for (g, ip) in [("net1", "10.0.3.2/24"), ("net2", "10.0.3.3/24")] {
        let up = c(&format!("net-guest {g} up"));
        let mut words = up.split_whitespace();
        let (mac, addr) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        if !mac.starts_with("00:16:3e:") || addr != ip {
            p.push(format!("net: {g}'s eth0: {up:?}, want a 00:16:3e MAC and {ip}"));
        }
        for to in ["dom0", "peer"] {
            let got = c(&format!("net-guest {g} ping {to}"));
            if got != "3/3" {
                p.push(format!("net: {g} pinging {to}: {got:?} replies, want 3/3"));
            }
        }
    }
    if c("net-guest net2 up").split_whitespace().next() != Some("00:16:3e:4b:00:03") {
        p.push(format!("net: net2's configured MAC: {:?}", c("net-guest net2 up")));
    }
    if c("net-dom0-ping") != "net1=3/3 net2=3/3" {
        p.push(format!("net: dom0 pinging the guests: {:?}", c("net-dom0-ping")));
    }
    // 64 MiB over TCP, intact.
    let blob = c("net-guest net2 blob");
    let received = c("net-received");
    let mut r = received.split_whitespace();
    let (bytes, sum) = (r.next().and_then(|b| b.parse::<u64>().ok()), r.next().unwrap_or(""));
    if blob.len() != 64 || bytes != Some(BLOB) || sum != blob || !c("net-guest net2 sent").starts_with("rc=0") {
        p.push(format!(
            "net: TCP from net2 to dom0: the guest sent {blob:?} ({:?}), dom0 received {received:?}",
            c("net-guest net2 sent")
        ));
    }
    // Hot-plug.
    if c("net-detach") != "rc=0"
        || c("net-detached") != "vif=gone backend=gone"
        || c("net-guest net1 unplug eth0") != "gone"
    {
        p.push(format!(
            "net: network-detach: {:?}, dom0: {:?}, in the guest: {:?}",
            c("net-detach"),
            c("net-detached"),
            c("net-guest net1 unplug eth0")
        ));
    }
    let back = c("net-guest net1 hotplug");
    if c("net-attach") != "rc=0" || !back.ends_with(" 00:16:3e:4b:00:07") || c("net-reattached").trim().is_empty() {
        p.push(format!(
            "net: network-attach: {:?}, in the guest: {back:?}, on the bridge: {:?}",
            c("net-attach"),
            c("net-reattached")
        ));
    }
    // As in disk.rs: dom0's p2m may keep a table for the range netback maps grants into.
    let left = c("net-leftover");
    let free_diff = left.split_whitespace().find_map(|w| w.strip_prefix("free-diff=")?.parse::<i64>().ok());
    if !left.starts_with("vifs=0 backends=0 ") || free_diff.is_none_or(|d| d.abs() > 4) {
        p.push(format!("net: after the guests: {left:?}, want no vif, no backend directory and every page back"));
    }
    p
}
