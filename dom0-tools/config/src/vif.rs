//! `vif = [ 'VIFSPEC', ... ]`: xl's network interface syntax
//! (xl-network-configuration(5)): comma-separated `key=value` settings
//! and the flags `trusted`/`untrusted`; every key is optional, and `''`
//! is a NIC with every default.

use std::fmt;
use std::net::IpAddr;

use serde::{Serialize, Serializer};

/// The bridge a NIC joins when none is named, as xl.
pub const DEFAULT_BRIDGE: &str = "xenbr0";
/// The hotplug script when none is named, as xl.
pub const DEFAULT_SCRIPT: &str = "vif-bridge";
/// Linux's interface names are at most this long (IFNAMSIZ - 1).
const MAX_IFNAME: usize = 15;

/// A MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Mac {
    /// Six colon-separated groups of one or two hex digits.
    pub fn parse(s: &str) -> Result<Mac, String> {
        let bad = || format!("mac {s:?} is not a MAC address (six hex bytes separated by ':', e.g. 00:16:3e:12:34:56)");
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            if part.is_empty() || part.len() > 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        if out[0] & 1 != 0 {
            return Err(format!("mac {s:?} is a multicast address (the low bit of the first byte is set)"));
        }
        Ok(Mac(out))
    }
}

/// One parsed, validated network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vif {
    /// The device number (its place in the list unless `devid=` says otherwise).
    pub devid: u32,
    /// The guest's MAC address (generated in Xen's 00:16:3e range at creation if not given).
    pub mac: Option<Mac>,
    /// The bridge in dom0 it joins.
    pub bridge: String,
    /// The hotplug script that sets it up.
    pub script: String,
    /// Addresses the script may restrict the guest to.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ip: Vec<IpAddr>,
    /// The backend interface's name in dom0 (vifDOMID.DEVID if not given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vifname: Option<String>,
    /// The emulated NIC model (HVM only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The backend domain, if not dom0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The MTU, if not the bridge's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Other settings as written (type=, rate=, gatewaydev=, vlan=, trusted ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl fmt::Display for Vif {
    /// The canonical spec, which parses back to the same NIC (devid included).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "devid={}", self.devid)?;
        if let Some(m) = self.mac {
            write!(f, ", mac={m}")?;
        }
        write!(f, ", bridge={}, script={}", self.bridge, self.script)?;
        if !self.ip.is_empty() {
            let ips: Vec<String> = self.ip.iter().map(ToString::to_string).collect();
            write!(f, ", ip={}", ips.join(" "))?;
        }
        for (k, v) in [("vifname", &self.vifname), ("model", &self.model), ("backend", &self.backend)] {
            if let Some(v) = v {
                write!(f, ", {k}={v}")?;
            }
        }
        if let Some(m) = self.mtu {
            write!(f, ", mtu={m}")?;
        }
        for o in &self.options {
            write!(f, ", {o}")?;
        }
        Ok(())
    }
}

fn ifname(key: &str, v: &str) -> Result<String, String> {
    if v.is_empty()
        || v.len() > MAX_IFNAME
        || v.contains(['/', ':'])
        || v.contains(char::is_whitespace)
        || v == "."
        || v == ".."
    {
        return Err(format!(
            "{key} {v:?} is not a network interface name (1 to {MAX_IFNAME} characters, no '/', ':' or spaces)"
        ));
    }
    Ok(v.to_owned())
}

fn rate_ok(v: &str) -> bool {
    // RATE/s or RATE/s@INTERVAL: RATE is digits and an optional G/M/K then B (bytes) or b (bits);
    // INTERVAL is digits and an optional unit s, ms or us.
    let (rate, interval) = match v.split_once('@') {
        Some((r, i)) => (r, Some(i)),
        None => (v, None),
    };
    let Some(amount) = rate.strip_suffix("/s") else { return false };
    let Some(amount) = amount.strip_suffix(['B', 'b']) else { return false };
    let digits = amount.strip_suffix(['G', 'M', 'K']).unwrap_or(amount);
    let number =
        |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()) && d.parse::<u64>().is_ok_and(|n| n > 0);
    if !number(digits) {
        return false;
    }
    match interval {
        None => true,
        Some(i) => {
            let d = i.strip_suffix("ms").or_else(|| i.strip_suffix("us")).or_else(|| i.strip_suffix('s')).unwrap_or(i);
            number(d)
        }
    }
}

/// Parses one vif spec; `index` is its place in the list (its default devid).
pub fn parse(spec: &str, index: u32) -> Result<Vif, String> {
    let mut vif = Vif {
        devid: index,
        mac: None,
        bridge: DEFAULT_BRIDGE.into(),
        script: DEFAULT_SCRIPT.into(),
        ip: Vec::new(),
        vifname: None,
        model: None,
        backend: None,
        mtu: None,
        options: Vec::new(),
    };
    for token in spec.split(',') {
        let token = token.trim_matches([' ', '\t']);
        if token.is_empty() {
            continue;
        }
        if token == "trusted" || token == "untrusted" {
            vif.options.push(token.to_owned());
            continue;
        }
        let Some((key, value)) = token.split_once('=') else {
            return Err(format!("{token:?} is not a setting (KEY=VALUE, or the flag trusted/untrusted)"));
        };
        let number = |what: &str, min: u32, max: u32| -> Result<u32, String> {
            match crate::parse_c_number(value) {
                Some(n) if (u64::from(min)..=u64::from(max)).contains(&n) => Ok(n as u32),
                _ => Err(format!("{key} {value:?} is not {what} from {min} to {max}")),
            }
        };
        match key {
            "mac" => vif.mac = Some(Mac::parse(value)?),
            "bridge" => vif.bridge = ifname(key, value)?,
            "script" if value.is_empty() => return Err("script is empty".into()),
            "script" => vif.script = value.to_owned(),
            "ip" => {
                let ips: Result<Vec<IpAddr>, _> = value.split_whitespace().map(str::parse).collect();
                match ips {
                    Ok(ips) if !ips.is_empty() => vif.ip = ips,
                    _ => return Err(format!("ip {value:?} is not an IP address (or a space-separated list of them)")),
                }
            }
            "vifname" => vif.vifname = Some(ifname(key, value)?),
            "model" if value.is_empty() => return Err("model is empty".into()),
            "model" => vif.model = Some(value.to_owned()),
            "backend" if value.is_empty() => return Err("backend is empty".into()),
            "backend" => vif.backend = Some(value.to_owned()),
            "mtu" => vif.mtu = Some(number("an MTU", 68, 65535)?),
            "devid" => vif.devid = number("a device number", 0, 65535)?,
            "type" if !matches!(value, "vif" | "ioemu") => {
                return Err(format!("type {value:?} is not one of vif, ioemu"));
            }
            "rate" if !rate_ok(value) => {
                return Err(format!("rate {value:?} is not a rate (e.g. 10Mb/s, 250KB/s, 1MB/s@20ms)"));
            }
            "netdev" => vif.options.push(format!("gatewaydev={value}")),
            "type" | "rate" | "gatewaydev" | "vlan" | "forwarddev" => vif.options.push(format!("{key}={value}")),
            _ => return Err(format!("unknown setting '{key}'")),
        }
    }
    Ok(vif)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vif(spec: &str) -> Vif {
        parse(spec, 0).unwrap_or_else(|e| panic!("{spec:?}: {e}"))
    }

    fn err(spec: &str) -> String {
        parse(spec, 0).map(|v| panic!("{spec:?} parsed: {v:?}")).unwrap_err()
    }

    #[test]
    fn defaults() {
        let v = parse("", 3).unwrap();
        assert_eq!((v.devid, v.mac, v.bridge.as_str(), v.script.as_str()), (3, None, "xenbr0", "vif-bridge"));
        assert!(v.ip.is_empty() && v.vifname.is_none() && v.options.is_empty());
    }

    #[test]
    fn settings() {
        let v = vif("mac=00:16:3E:74:3d:76,model=rtl8139,bridge=xenbr1");
        assert_eq!(v.mac, Some(Mac([0, 0x16, 0x3e, 0x74, 0x3d, 0x76])));
        assert_eq!(v.mac.unwrap().to_string(), "00:16:3e:74:3d:76");
        assert_eq!((v.model.as_deref(), v.bridge.as_str()), (Some("rtl8139"), "xenbr1"));
        let v = vif(" ip=10.0.0.2 10.0.0.3, vifname=web0 ,script=vif-route, mtu=9000,devid=7,trusted,rate=10Mb/s@20ms");
        assert_eq!(v.ip.len(), 2);
        assert_eq!(
            (v.vifname.as_deref(), v.script.as_str(), v.mtu, v.devid),
            (Some("web0"), "vif-route", Some(9000), 7)
        );
        assert_eq!(v.options, ["trusted", "rate=10Mb/s@20ms"]);
        assert_eq!(vif("netdev=eth0").options, ["gatewaydev=eth0"]);
        assert_eq!(vif("ip=fe80::1").ip, ["fe80::1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn the_canonical_form_reads_back() {
        for spec in ["", "mac=00:16:3e:00:00:01,bridge=br1,ip=1.2.3.4 5.6.7.8,vifname=v,model=e1000,backend=drv,mtu=1400,type=vif,untrusted", "devid=4"] {
            let v = vif(spec);
            assert_eq!(parse(&v.to_string(), 9).unwrap(), v, "{spec} -> {v}");
        }
    }

    #[test]
    fn bad_specs() {
        assert_eq!(
            err("mac=00:16:3e:12:34"),
            "mac \"00:16:3e:12:34\" is not a MAC address (six hex bytes separated by ':', e.g. 00:16:3e:12:34:56)"
        );
        assert!(err("mac=00:16:3e:12:34:56:78").starts_with("mac \"00:16:3e:12:34:56:78\" is not a MAC"));
        assert!(err("mac=00:16:3e:12:34:zz").contains("is not a MAC"));
        assert!(err("mac=00:16:3e:12:34:567").contains("is not a MAC"));
        assert_eq!(
            err("mac=01:00:5e:00:00:01"),
            "mac \"01:00:5e:00:00:01\" is a multicast address (the low bit of the first byte is set)"
        );
        assert_eq!(err("ip=10.0.0.256"), "ip \"10.0.0.256\" is not an IP address (or a space-separated list of them)");
        assert_eq!(err("ip="), "ip \"\" is not an IP address (or a space-separated list of them)");
        assert_eq!(err("vifname=a-very-long-ifname"), "vifname \"a-very-long-ifname\" is not a network interface name (1 to 15 characters, no '/', ':' or spaces)");
        assert!(err("bridge=br/0").contains("not a network interface name"));
        assert_eq!(err("mtu=10"), "mtu \"10\" is not an MTU from 68 to 65535");
        assert_eq!(err("rate=fast"), "rate \"fast\" is not a rate (e.g. 10Mb/s, 250KB/s, 1MB/s@20ms)");
        assert_eq!(err("type=e1000"), "type \"e1000\" is not one of vif, ioemu");
        assert_eq!(err("colour=red"), "unknown setting 'colour'");
        assert_eq!(err("xenbr0"), "\"xenbr0\" is not a setting (KEY=VALUE, or the flag trusted/untrusted)");
        assert_eq!(err("script="), "script is empty");
    }

    #[test]
    fn rates() {
        for ok in ["10Mb/s", "250KB/s", "1MB/s@20ms", "5GB/s@1s", "100b/s@50us", "1B/s@7"] {
            assert!(rate_ok(ok), "{ok}");
        }
        for bad in ["10Mb", "0B/s", "MB/s", "1MB/s@", "1MB/s@x", "1TB/s", "1Mb/s@0ms"] {
            assert!(!rate_ok(bad), "{bad}");
        }
    }
}
