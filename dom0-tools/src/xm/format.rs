//! What the read-only `xm` commands print: each command's rows as plain data (serialisable, for `--json`) and
//! their text in the layouts of Xen's `xl` (`list`, `list -l`, `vcpu-list`, `uptime`, `sched-credit`). Kept apart
//! from the hypercalls so that it is unit-tested on the host.

use keel_abi::domctl::{dominf, GetDomainInfo};
use serde::Serialize;

/// Bytes of a page, for turning page counts into MiB and KiB.
pub const PAGE: u64 = 4096;

/// A domain's state letters as `xl list` prints them: running, blocked, paused, shutdown, the shutdown reason
/// (one of `-rscwS`, indexed by the reason code: poweroff, reboot, suspend, crash, watchdog, soft reset) and dying.
pub fn state_letters(flags: u32) -> String {
    let shut = flags & dominf::SHUTDOWN != 0;
    let code = if shut { (flags >> dominf::SHUTDOWN_SHIFT) & dominf::SHUTDOWN_MASK } else { 0 };
    let reason = b"-rscwS".get(code as usize).map_or('?', |&c| c as char);
    let on = |bit: u32, c: char| if flags & bit != 0 { c } else { '-' };
    [
        on(dominf::RUNNING, 'r'),
        on(dominf::BLOCKED, 'b'),
        on(dominf::PAUSED, 'p'),
        on(dominf::SHUTDOWN, 's'),
        reason,
        on(dominf::DYING, 'd'),
    ]
    .iter()
    .collect()
}

/// One domain as `xm list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DomainRow {
    pub name: String,
    pub domid: u16,
    /// MiB held (with outstanding claims, as xl).
    pub mem: u64,
    /// vCPUs online.
    pub vcpus: u32,
    pub state: String,
    /// Seconds of CPU time all its vCPUs used.
    pub cpu_time: f64,
}

impl DomainRow {
    pub fn new(d: &GetDomainInfo, name: &str) -> DomainRow {
        DomainRow {
            name: name.to_string(),
            domid: d.domain,
            mem: ((d.tot_pages + d.outstanding_pages) * PAGE) >> 20,
            vcpus: d.nr_online_vcpus,
            state: state_letters(d.flags),
            cpu_time: d.cpu_time as f64 / 1e9,
        }
    }
}

/// `xl list`'s header and rows.
pub fn list_table(rows: &[DomainRow]) -> String {
    let mut out = String::from("Name                                        ID   Mem VCPUs\tState\tTime(s)\n");
    for r in rows {
        out.push_str(&format!(
            "{:<40} {:>5} {:>5} {:>5}     {}  {:>8.1}\n",
            r.name, r.domid, r.mem, r.vcpus, r.state, r.cpu_time
        ));
    }
    out
}

/// One domain as `xm list -l` shows it: the row and what the hypervisor knows of its configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DomainLong {
    #[serde(flatten)]
    pub row: DomainRow,
    pub uuid: String,
    /// The most it may hold, MiB (dom0: `dom0_mem`).
    pub maxmem: u64,
    /// vCPUs it has (dom0: `dom0_max_vcpus`), online or not.
    pub max_vcpus: u32,
    pub cpupool: String,
    /// Credit scheduler weight and cap, when the scheduler answered.
    pub cpu_weight: Option<u16>,
    pub cpu_cap: Option<u16>,
    /// Pages of its shared_info frame.
    pub shared_info_frame: u64,
}

impl DomainLong {
    pub fn new(d: &GetDomainInfo, name: &str, pool: &str, credit: Option<(u16, u16)>) -> DomainLong {
        DomainLong {
            row: DomainRow::new(d, name),
            uuid: uuid(&d.handle),
            maxmem: d.max_pages.saturating_mul(PAGE) >> 20,
            max_vcpus: d.max_vcpu_id.wrapping_add(1),
            cpupool: pool.to_string(),
            cpu_weight: credit.map(|c| c.0),
            cpu_cap: credit.map(|c| c.1),
            shared_info_frame: d.shared_info_frame,
        }
    }
}

/// A domain handle as a UUID string.
pub fn uuid(h: &[u8; 16]) -> String {
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// `xm list -l`: each domain as the S-expression classic `xm` printed.
pub fn list_long(domains: &[DomainLong]) -> String {
    let mut out = String::new();
    for d in domains {
        let mut fields = vec![
            ("domid", d.row.domid.to_string()),
            ("uuid", d.uuid.clone()),
            ("name", d.row.name.clone()),
            ("memory", d.row.mem.to_string()),
            ("maxmem", d.maxmem.to_string()),
            ("vcpus", d.max_vcpus.to_string()),
            ("online_vcpus", d.row.vcpus.to_string()),
        ];
        if let (Some(w), Some(c)) = (d.cpu_weight, d.cpu_cap) {
            fields.extend([("cpu_weight", w.to_string()), ("cpu_cap", c.to_string())]);
        }
        fields.extend([
            ("cpupool", d.cpupool.clone()),
            ("state", d.row.state.clone()),
            ("cpu_time", format!("{:.3}", d.row.cpu_time)),
            ("shared_info_frame", d.shared_info_frame.to_string()),
        ]);
        out.push_str("(domain\n");
        for (k, v) in fields {
            out.push_str(&format!("    ({k} {v})\n"));
        }
        out.push_str(")\n");
    }
    out
}

/// One vCPU as `xm vcpu-list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VcpuRow {
    pub name: String,
    pub domid: u16,
    pub vcpu: u32,
    /// The CPU it runs or last ran on; `None` when offline.
    pub cpu: Option<u32>,
    pub online: bool,
    pub running: bool,
    pub blocked: bool,
    /// Seconds of CPU time it used.
    pub time: f64,
    /// Hard and soft affinity, as xl prints CPU maps (`all`, `none`, `0-1,3`).
    pub hard_affinity: String,
    pub soft_affinity: String,
}

impl VcpuRow {
    /// The State column: `r`/`b` and `-`, or `--p` for an offline vCPU.
    pub fn state(&self) -> String {
        if !self.online {
            "--p".into()
        } else {
            format!("{}{}-", if self.running { 'r' } else { '-' }, if self.blocked { 'b' } else { '-' })
        }
    }
}

/// `xl vcpu-list`'s header and rows.
pub fn vcpu_table(rows: &[VcpuRow]) -> String {
    let mut out = format!(
        "{:<32} {:>5} {:>5} {:>5} {:>5} {:>9} {}\n",
        "Name", "ID", "VCPU", "CPU", "State", "Time(s)", "Affinity (Hard / Soft)"
    );
    for r in rows {
        let cpu = r.cpu.filter(|_| r.online).map_or("-".to_string(), |c| c.to_string());
        out.push_str(&format!(
            "{:<32} {:>5} {:>5} {:>5} {:>5} {:>9.1}  {} / {}\n",
            r.name,
            r.domid,
            r.vcpu,
            cpu,
            r.state(),
            r.time,
            r.hard_affinity,
            r.soft_affinity
        ));
    }
    out
}

/// An uptime as `xl uptime` writes it: `[D day(s), ]HH:MM:SS`, or without the seconds in short form.
pub fn uptime_string(secs: u64, short: bool) -> String {
    let (day, rest) = (secs / 86400, secs % 86400);
    let (hour, min, sec) = (rest / 3600, rest % 3600 / 60, rest % 60);
    let days = match day {
        0 => String::new(),
        1 => "1 day, ".to_string(),
        n => format!("{n} days, "),
    };
    if short {
        format!("{days}{hour:2}:{min:02}")
    } else {
        format!("{days}{hour:2}:{min:02}:{sec:02}")
    }
}

/// One domain's uptime.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UptimeRow {
    pub name: String,
    pub domid: u16,
    /// Whole seconds since it started.
    pub uptime: u64,
}

/// `xl uptime`: a header and one line per domain; with `-s`, one line per domain in the style of uptime(1),
/// `now` being the time of day (HH:MM:SS).
pub fn uptime_table(rows: &[UptimeRow], short: bool, now: &str) -> String {
    let mut out = String::new();
    if !short {
        out.push_str(&format!("{:<33} {:>4} {}\n", "Name", "ID", "Uptime"));
    }
    for r in rows {
        if short {
            out.push_str(&format!(" {now} up {}, {} ({})\n", uptime_string(r.uptime, true), r.name, r.domid));
        } else {
            out.push_str(&format!("{:<33} {:>4} {}\n", r.name, r.domid, uptime_string(r.uptime, false)));
        }
    }
    out
}

/// The time of day `secs` after the epoch, HH:MM:SS (UTC: dom0 has no time zone).
pub fn time_of_day(secs: u64) -> String {
    let s = secs % 86400;
    format!("{:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
}

/// The seconds of `/proc/uptime` (its first field, whole seconds as xl reads it).
pub fn parse_proc_uptime(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.split('.').next()?.parse().ok()
}

/// One domain's credit scheduler parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreditRow {
    pub name: String,
    pub domid: u16,
    pub weight: u16,
    pub cap: u16,
}

/// The credit scheduler's global parameters of a CPU pool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CreditPool {
    pub cpupool: String,
    pub tslice_ms: u32,
    pub ratelimit_us: u32,
    pub migration_delay_us: u32,
}

/// `xl sched-credit -s`'s line for a pool.
pub fn credit_pool_line(p: &CreditPool) -> String {
    format!(
        "Cpupool {}: tslice={}ms ratelimit={}us migration-delay={}us\n",
        p.cpupool, p.tslice_ms, p.ratelimit_us, p.migration_delay_us
    )
}

/// `xl sched-credit`'s domain header and rows.
pub fn credit_table(rows: &[CreditRow]) -> String {
    let mut out = format!("{:<33} {:>4} {:>6} {:>4}\n", "Name", "ID", "Weight", "Cap");
    for r in rows {
        out.push_str(&format!("{:<33} {:>4} {:>6} {:>4}\n", r.name, r.domid, r.weight, r.cap));
    }
    out
}

/// JSON text of `v`, pretty-printed, with a final newline.
pub fn json<T: Serialize + ?Sized>(v: &T) -> String {
    // Serialising these plain structures cannot fail (no maps with non-string keys, no failing Serialize impls).
    let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dom0() -> GetDomainInfo {
        GetDomainInfo {
            domain: 0,
            flags: dominf::RUNNING,
            tot_pages: 131_072,
            max_pages: 131_072,
            nr_online_vcpus: 4,
            max_vcpu_id: 3,
            cpu_time: 12_345_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn list_rows_have_xl_columns() {
        let t = list_table(&[DomainRow::new(&dom0(), "Domain-0")]);
        let mut lines = t.lines();
        assert_eq!(lines.next(), Some("Name                                        ID   Mem VCPUs\tState\tTime(s)"));
        let row = lines.next().unwrap();
        // Exactly xl's layout: a 40-column name, ids and counts right-aligned in 5, the state after 5 spaces.
        assert_eq!(row, format!("{:<40}     0   512     4     r-----      12.3", "Domain-0"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols, ["Domain-0", "0", "512", "4", "r-----", "12.3"]);
    }

    #[test]
    fn state_letters_as_xl() {
        assert_eq!(state_letters(dominf::RUNNING), "r-----");
        assert_eq!(state_letters(dominf::BLOCKED | dominf::PAUSED), "-bp---");
        // Shut down for a crash (code 3): `s` and the reason letter `c`.
        assert_eq!(state_letters(dominf::SHUTDOWN | 3 << dominf::SHUTDOWN_SHIFT), "---sc-");
        // Powered off (code 0): the reason letter is `-`.
        assert_eq!(state_letters(dominf::SHUTDOWN | dominf::DYING), "---s-d");
        // A code past the table reads `?`.
        assert_eq!(state_letters(dominf::SHUTDOWN | 9 << dominf::SHUTDOWN_SHIFT), "---s?-");
    }

    #[test]
    fn long_list_shows_dom0_mem_and_max_vcpus() {
        let mut d = dom0();
        d.tot_pages = 130_000;
        d.nr_online_vcpus = 2;
        let long = DomainLong::new(&d, "Domain-0", "Pool-0", Some((256, 0)));
        assert_eq!((long.maxmem, long.max_vcpus, long.row.mem, long.row.vcpus), (512, 4, 507, 2));
        let text = list_long(&[long.clone(), long]);
        assert_eq!(text.matches("(domain\n").count(), 2, "{text}");
        assert!(
            text.starts_with("(domain\n    (domid 0)\n    (uuid 00000000-0000-0000-0000-000000000000)\n"),
            "{text}"
        );
        assert!(text.contains("    (maxmem 512)\n    (vcpus 4)\n    (online_vcpus 2)\n"), "{text}");
        assert!(text.contains("    (cpu_weight 256)\n    (cpu_cap 0)\n"), "{text}");
        assert!(text.ends_with(")\n"));
        let balance = text.chars().fold(0i32, |n, c| n + (c == '(') as i32 - (c == ')') as i32);
        assert_eq!(balance, 0, "{text}");
    }

    #[test]
    fn uuids_are_grouped_8_4_4_4_12() {
        let mut h = [0u8; 16];
        h[0] = 0xab;
        h[15] = 0x01;
        assert_eq!(uuid(&h), "ab000000-0000-0000-0000-000000000001");
    }

    #[test]
    fn json_rows_parse_back() {
        let rows = vec![DomainLong::new(&dom0(), "Domain-0", "Pool-0", None)];
        let v: serde_json::Value = serde_json::from_str(&json(&rows)).unwrap();
        assert_eq!(v[0]["name"], "Domain-0");
        assert_eq!(v[0]["domid"], 0);
        assert_eq!(v[0]["maxmem"], 512);
        assert_eq!(v[0]["max_vcpus"], 4);
        assert_eq!(v[0]["state"], "r-----");
        assert!(v[0]["cpu_weight"].is_null());
    }

    #[test]
    fn vcpu_rows_have_xl_columns() {
        let row = VcpuRow {
            name: "Domain-0".into(),
            domid: 0,
            vcpu: 1,
            cpu: Some(0),
            online: true,
            running: true,
            blocked: false,
            time: 3.25,
            hard_affinity: "0".into(),
            soft_affinity: "all".into(),
        };
        let offline = VcpuRow { vcpu: 2, online: false, running: false, hard_affinity: "all".into(), ..row.clone() };
        let t = vcpu_table(&[row, offline]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], format!("{:<32}    ID  VCPU   CPU State   Time(s) Affinity (Hard / Soft)", "Name"));
        assert_eq!(lines[1], format!("{:<32}     0     1     0   r--       3.2  0 / all", "Domain-0"));
        assert_eq!(lines[2], format!("{:<32}     0     2     -   --p       3.2  all / all", "Domain-0"));
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cols, ["Domain-0", "0", "1", "0", "r--", "3.2", "0", "/", "all"]);
    }

    #[test]
    fn uptimes_as_xl() {
        assert_eq!(uptime_string(59, false), " 0:00:59");
        assert_eq!(uptime_string(3 * 3600 + 62, false), " 3:01:02");
        assert_eq!(uptime_string(86400 + 36000, false), "1 day, 10:00:00");
        assert_eq!(uptime_string(3 * 86400 + 60, true), "3 days,  0:01");
        let rows = [UptimeRow { name: "Domain-0".into(), domid: 0, uptime: 75 }];
        let t = uptime_table(&rows, false, "");
        assert_eq!(t, format!("{:<33}   ID Uptime\n{:<33}    0  0:01:15\n", "Name", "Domain-0"));
        assert_eq!(uptime_table(&rows, true, "12:00:01"), " 12:00:01 up  0:01, Domain-0 (0)\n");
        assert_eq!(parse_proc_uptime("75.92 140.11\n"), Some(75));
        assert_eq!(parse_proc_uptime(""), None);
        assert_eq!(time_of_day(86400 * 365 + 3661), "01:01:01");
    }

    #[test]
    fn credit_lines_as_xl() {
        let pool = CreditPool { cpupool: "Pool-0".into(), tslice_ms: 30, ratelimit_us: 1000, migration_delay_us: 0 };
        assert_eq!(credit_pool_line(&pool), "Cpupool Pool-0: tslice=30ms ratelimit=1000us migration-delay=0us\n");
        let t = credit_table(&[CreditRow { name: "Domain-0".into(), domid: 0, weight: 512, cap: 0 }]);
        assert_eq!(t, format!("{:<33}   ID Weight  Cap\n{:<33}    0    512    0\n", "Name", "Domain-0"));
    }
}
