//! The read-only commands that ask the hypervisor (`xm info`, `xm list`, `xm dmesg`), in the formats of Xen's
//! `xl`. Formatting is kept apart from the hypercalls so that it is unit-tested on the host.

use keel_abi::domctl::sched_id;
use keel_abi::sysctl::{physcap, PhysInfo};

/// `xl info`'s lines: `name<padding>: value`, the name padded to 23 columns.
pub fn info_lines(fields: &[(&str, String)]) -> String {
    fields.iter().map(|(k, v)| format!("{k:<23}: {v}\n")).collect()
}

/// The scheduler's name as `xl info` prints it.
pub fn scheduler_name(id: u32) -> &'static str {
    match id {
        sched_id::CREDIT => "credit",
        sched_id::CREDIT2 => "credit2",
        sched_id::ARINC653 => "arinc653",
        sched_id::RTDS => "rtds",
        sched_id::NULL => "null",
        _ => "unknown",
    }
}

/// The physinfo part of `xl info` (pages turned into MiB with the hypervisor's page size).
pub fn physinfo_fields(p: &PhysInfo, pagesize: u64) -> Vec<(&'static str, String)> {
    let per_mib = (1u64 << 20) / pagesize.max(1);
    let caps = [
        (physcap::PV, "pv"),
        (physcap::HVM, "hvm"),
        (physcap::HAP, "hap"),
        (physcap::SHADOW, "shadow"),
        (physcap::GNTTAB_V1, "gnttab-v1"),
        (physcap::GNTTAB_V2, "gnttab-v2"),
    ];
    let virt: Vec<&str> = caps.iter().filter(|(b, _)| p.capabilities & b != 0).map(|(_, n)| *n).collect();
    vec![
        ("nr_cpus", p.nr_cpus.to_string()),
        ("max_cpu_id", p.max_cpu_id.to_string()),
        ("nr_nodes", p.nr_nodes.to_string()),
        ("cores_per_socket", p.cores_per_socket.to_string()),
        ("threads_per_core", p.threads_per_core.to_string()),
        ("cpu_mhz", format!("{}.{:03}", p.cpu_khz / 1000, p.cpu_khz % 1000)),
        ("hw_caps", p.hw_cap.iter().map(|w| format!("{w:08x}")).collect::<Vec<_>>().join(":")),
        ("virt_caps", virt.join(" ")),
        ("total_memory", (p.total_pages / per_mib).to_string()),
        ("free_memory", (p.free_pages.saturating_sub(p.outstanding_pages) / per_mib).to_string()),
        // Keel shares no pages between domains.
        ("sharing_freed_memory", "0".to_string()),
        ("sharing_used_memory", "0".to_string()),
        ("outstanding_claims", (p.outstanding_pages / per_mib).to_string()),
        // Every CPU is in pool 0.
        ("free_cpus", "0".to_string()),
    ]
}

/// `xm info --json`: the same fields as an object, whole numbers as JSON numbers and the rest as strings.
pub fn info_json(fields: &[(&str, String)]) -> serde_json::Value {
    let map = fields
        .iter()
        .map(|(k, v)| {
            let value = match v.parse::<u64>() {
                Ok(n) if !v.starts_with('0') || v == "0" => serde_json::Value::from(n),
                _ => serde_json::Value::from(v.as_str()),
            };
            (k.to_string(), value)
        })
        .collect();
    serde_json::Value::Object(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_lines_pad_names_as_xl() {
        assert_eq!(info_lines(&[("nr_cpus", "4".into())]), "nr_cpus                : 4\n");
    }

    #[test]
    fn physinfo_in_mib() {
        let p = PhysInfo {
            nr_cpus: 2,
            max_cpu_id: 1,
            cpu_khz: 2_441_064,
            capabilities: physcap::HVM | physcap::HAP | physcap::GNTTAB_V1,
            total_pages: 524_288,
            free_pages: 262_144,
            ..Default::default()
        };
        let f = physinfo_fields(&p, 4096);
        let get = |k: &str| f.iter().find(|(n, _)| *n == k).unwrap().1.clone();
        assert_eq!(get("total_memory"), "2048");
        assert_eq!(get("free_memory"), "1024");
        assert_eq!(get("cpu_mhz"), "2441.064");
        assert_eq!(get("virt_caps"), "hvm hap gnttab-v1");
    }

    #[test]
    fn info_json_keeps_numbers_numeric() {
        let j = info_json(&[("nr_cpus", "2".into()), ("hw_caps", "0000ab".into()), ("host", "dom0".into())]);
        assert_eq!(j["nr_cpus"], 2);
        assert_eq!(j["hw_caps"], "0000ab");
        assert_eq!(j["host"], "dom0");
    }
}
