//! `xm block-attach`, `block-detach`, `block-list`, `network-attach`, `network-detach`, `network-list`: Xen's
//! hot-plug commands on a running guest, over [`super::devices`]. The lists print xl's columns.

use std::io::Write;

use keel_config::disk;
use keel_config::vif;
use serde::Serialize;

use super::cmdtable::{BlockAttachArgs, DeviceDetachArgs, DeviceListArgs, NetworkAttachArgs};
use super::commands::CmdResult;
use super::devices::{self, Device, Kind, Row};
use super::format::json;
use super::lifecycle::{with_host, Ctx};
use super::XmError;

/// What a hot-plug command did, for `--json`.
#[derive(Debug, Serialize)]
struct Done {
    domid: u16,
    action: &'static str,
    kind: Kind,
    devid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<String>,
}

fn print(text: &str) -> CmdResult {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(XmError::Failed(format!("stdout: {e}"))),
        _ => Ok(()),
    }
}

/// The running guest `ctx` names (not dom0: its devices are real ones).
fn guest(ctx: &mut Ctx, r: &crate::domain::DomainRef) -> Result<u16, XmError> {
    let (d, _) = ctx.find(r)?;
    if d.domain == 0 {
        return Err(XmError::Failed("domain 0 has no virtual devices of its own to change".into()));
    }
    Ok(d.domain)
}

/// `xm block-attach <Domain> <Disk>...`.
pub fn block_attach(args: &BlockAttachArgs) -> CmdResult {
    let spec = args.spec.join(",");
    let disk = disk::parse(&spec).map_err(|e| XmError::Failed(format!("disk '{spec}': {e}")))?;
    let done = with_host(|ctx| {
        let domid = guest(ctx, &args.domain)?;
        let dev = Device::new(Kind::Vbd, domid, disk.vbd);
        devices::add(ctx.xs, &mut devices::Scripts, &dev, &devices::disk_nodes(&dev, &disk), devices::INIT_TIMEOUT)
            .map_err(|e| XmError::Failed(format!("disk '{}' of domain {domid}: {}", disk.vdev, e.reason())))?;
        Ok(Done { domid, action: "block-attach", kind: Kind::Vbd, devid: disk.vbd, warning: None })
    })?;
    if args.json {
        print(&json(&done))?;
    }
    Ok(())
}

/// `xm network-attach <Domain> [KEY=VALUE]...`: the next free index unless `devid=` says otherwise.
pub fn network_attach(args: &NetworkAttachArgs) -> CmdResult {
    let spec = args.settings.join(",");
    let done = with_host(|ctx| {
        let domid = guest(ctx, &args.domain)?;
        let next = devices::list(ctx.xs, domid, Kind::Vif).into_iter().max().map_or(0, |m| m + 1);
        let v = vif::parse(&spec, next).map_err(|e| XmError::Failed(format!("vif '{spec}': {e}")))?;
        let dev = Device::new(Kind::Vif, domid, v.devid);
        let nodes = devices::vif_nodes(&dev, &v, v.mac.unwrap_or_else(devices::random_mac));
        devices::add(ctx.xs, &mut devices::Scripts, &dev, &nodes, devices::INIT_TIMEOUT)
            .map_err(|e| XmError::Failed(format!("vif {} of domain {domid}: {}", v.devid, e.reason())))?;
        Ok(Done { domid, action: "network-attach", kind: Kind::Vif, devid: v.devid, warning: None })
    })?;
    if args.json {
        print(&json(&done))?;
    }
    Ok(())
}

/// The device id `name` names among `rows`: a number, a disk's name (xvdb), a vif's MAC.
fn device_id(kind: Kind, name: &str, rows: &[Row]) -> Result<u32, XmError> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    match kind {
        Kind::Vbd => disk::vbd_number(name).map_err(|e| XmError::Failed(format!("'{name}': {e}"))),
        Kind::Vif => {
            let mac = vif::Mac::parse(name)
                .map_err(|_| XmError::Failed(format!("'{name}' is neither a vif index nor a MAC address")))?;
            rows.iter()
                .find(|r| vif::Mac::parse(&r.detail).is_ok_and(|m| m == mac))
                .map(|r| r.devid)
                .ok_or_else(|| XmError::Failed(format!("no vif with MAC {name}")))
        }
    }
}

/// `xm block-detach` / `network-detach <Domain> <DevId> [-f]`: the guest is asked to let go first; without `-f` a
/// guest that does not within the timeout is an error (the device is removed all the same, as libxl does).
pub fn detach(args: &DeviceDetachArgs, kind: Kind) -> CmdResult {
    let action = if kind == Kind::Vbd { "block-detach" } else { "network-detach" };
    let done = with_host(|ctx| {
        let domid = guest(ctx, &args.domain)?;
        let rows = devices::rows(ctx.xs, domid, kind);
        let devid = device_id(kind, &args.device, &rows)?;
        let dev = Device::new(kind, domid, devid);
        let report = devices::remove(ctx.xs, &mut devices::Scripts, &dev, !args.force, devices::CLOSE_TIMEOUT)?;
        let warning = (!report.closed).then(|| {
            format!("the guest did not release the device in {} s; removed anyway", devices::CLOSE_TIMEOUT.as_secs())
        });
        Ok(Done { domid, action, kind, devid, warning: warning.or(report.script_error) })
    })?;
    if let Some(w) = &done.warning {
        eprintln!("xm: {action}: {w}");
    }
    if args.json {
        print(&json(&done))?;
    }
    Ok(())
}

/// xl's block-list columns.
fn vbd_table(domid: u16, rows: &[Row]) -> String {
    let mut s = format!(
        "{:<5} {:<3} {:<6} {:<5} {:<6} {:<8} {:<30}\n",
        "Vdev", "BE", "handle", "state", "evt-ch", "ring-ref", "BE-path"
    );
    for r in rows {
        s += &format!(
            "{:<5} {:<3} {:<6} {:<5} {:<6} {:<8} {:<30}\n",
            r.devid, r.backend_id, domid, r.state, r.evtchn, r.ring_ref, r.backend_path
        );
    }
    s
}

/// xl's network-list columns.
fn vif_table(domid: u16, rows: &[Row]) -> String {
    let mut s = format!(
        "{:<3} {:<2} {:<17} {:<6} {:<5} {:<6} {:>5}/{:<5} {:<30}\n",
        "Idx", "BE", "Mac Addr.", "handle", "state", "evt-ch", "tx-", "rx-ring-ref", "BE-path"
    );
    for r in rows {
        s += &format!(
            "{:<3} {:<2} {:<17} {:<6} {:<5} {:<6} {:>5}/{:<5} {:<30}\n",
            r.devid, r.backend_id, r.detail, domid, r.state, r.evtchn, r.ring_ref, r.rx_ring_ref, r.backend_path
        );
    }
    s
}

/// `xm block-list` / `network-list <Domain>...`.
pub fn list(args: &DeviceListArgs, kind: Kind) -> CmdResult {
    let all = with_host(|ctx| {
        let mut all = Vec::new();
        for r in &args.domains {
            let (d, _) = ctx.find(r)?;
            all.push((d.domain, devices::rows(ctx.xs, d.domain, kind)));
        }
        Ok(all)
    })?;
    if args.json {
        #[derive(Serialize)]
        struct Listed<'a> {
            domid: u16,
            devices: &'a [Row],
        }
        let listed: Vec<Listed> = all.iter().map(|(domid, rows)| Listed { domid: *domid, devices: rows }).collect();
        return print(&json(&listed));
    }
    let text: String = all
        .iter()
        .map(|(domid, rows)| if kind == Kind::Vbd { vbd_table(*domid, rows) } else { vif_table(*domid, rows) })
        .collect();
    print(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(devid: u32, detail: &str) -> Row {
        Row {
            devid,
            backend_id: 0,
            state: 4,
            backend_state: 4,
            evtchn: 9,
            ring_ref: 8,
            rx_ring_ref: 768,
            backend_path: format!("/local/domain/0/backend/vif/3/{devid}"),
            detail: detail.into(),
        }
    }

    #[test]
    fn devices_are_named_as_xl_names_them() {
        let rows = [row(0, "00:16:3e:00:00:01"), row(1, "00:16:3e:00:00:02")];
        assert_eq!(device_id(Kind::Vbd, "xvdb", &[]).unwrap(), 51728);
        assert_eq!(device_id(Kind::Vbd, "51712", &[]).unwrap(), 51712);
        assert_eq!(device_id(Kind::Vif, "1", &rows).unwrap(), 1);
        assert_eq!(device_id(Kind::Vif, "00:16:3e:00:00:02", &rows).unwrap(), 1);
        assert!(device_id(Kind::Vif, "00:16:3e:00:00:09", &rows).is_err());
        assert!(device_id(Kind::Vif, "eth0", &rows).is_err());
    }

    #[test]
    fn the_lists_have_xls_columns() {
        let t = vif_table(3, &[row(0, "00:16:3e:00:00:01")]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("Idx BE Mac Addr.         handle state evt-ch   tx-/rx-ring-ref BE-path"));
        assert!(lines[1]
            .starts_with("0   0  00:16:3e:00:00:01 3      4     9          8/768   /local/domain/0/backend/vif/3/0"));
        let t = vbd_table(3, &[row(51712, "/img")]);
        assert!(t.starts_with("Vdev  BE  handle state evt-ch ring-ref BE-path"));
        assert!(t
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("51712 0   3      4     9      8        /local/domain/0/backend/vif/3/51712"));
    }
}
