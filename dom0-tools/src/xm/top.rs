//! `xm top`: the host and its domains in xentop's columns, refreshed every few seconds; full-screen (ratatui on
//! crossterm) on a terminal, or plain frames with `-b` (xentop's batch mode: the column header and one row per
//! domain each frame), or one JSON array of frames with `--json`.

use keel_abi::domctl::{dominf, GetDomainInfo};
use keel_abi::sysctl::PhysInfo;
use serde::Serialize;
use std::cmp::Ordering;

use super::format::PAGE;

/// One domain in a frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopDomain {
    pub name: String,
    pub domid: u16,
    /// xentop's state letters: dying, shutdown, blocked, crashed, paused, running.
    pub state: String,
    /// Whole seconds of CPU time.
    pub cpu_secs: u64,
    /// Percent of one CPU used since the previous frame (0 in the first).
    pub cpu_pct: f64,
    pub mem_k: u64,
    pub mem_pct: f64,
    /// `None`: no limit.
    pub maxmem_k: Option<u64>,
    pub maxmem_pct: Option<f64>,
    pub vcpus: u32,
    pub nets: u32,
    pub nettx_k: u64,
    pub netrx_k: u64,
    pub vbds: u32,
    pub vbd_oo: u64,
    pub vbd_rd: u64,
    pub vbd_wr: u64,
    pub vbd_rsect: u64,
    pub vbd_wsect: u64,
    pub ssid: u32,
    /// Nanoseconds of CPU time, for the next frame's percentage.
    #[serde(skip)]
    pub cpu_ns: u64,
}

/// One refresh of the display.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopFrame {
    /// Time of day, HH:MM:SS.
    pub time: String,
    pub xen_version: String,
    pub running: u32,
    pub blocked: u32,
    pub paused: u32,
    pub crashed: u32,
    pub dying: u32,
    pub shutdown: u32,
    pub mem_total_k: u64,
    pub mem_used_k: u64,
    pub mem_free_k: u64,
    pub cpus: u32,
    pub cpu_mhz: u64,
    pub domains: Vec<TopDomain>,
}

/// xentop's state letters for getdomaininfo flags.
pub fn xentop_state(flags: u32) -> String {
    let shut = flags & dominf::SHUTDOWN != 0;
    let code = (flags >> dominf::SHUTDOWN_SHIFT) & dominf::SHUTDOWN_MASK;
    let crashed = shut && code == keel_abi::hypercall::ShutdownReason::Crash as u32;
    [
        (flags & dominf::DYING != 0, 'd'),
        (shut, 's'),
        (flags & dominf::BLOCKED != 0, 'b'),
        (crashed, 'c'),
        (flags & dominf::PAUSED != 0, 'p'),
        (flags & dominf::RUNNING != 0, 'r'),
    ]
    .iter()
    .map(|&(on, c)| if on { c } else { '-' })
    .collect()
}

/// Builds a frame from one sample of the hypervisor. `prev` is the previous frame and `elapsed_s` the seconds
/// since it, for the CPU percentages.
pub fn frame(
    p: &PhysInfo,
    version: &str,
    time: &str,
    domains: &[(GetDomainInfo, String)],
    prev: Option<&TopFrame>,
    elapsed_s: f64,
) -> TopFrame {
    let total_k = p.total_pages * PAGE / 1024;
    let free_k = p.free_pages * PAGE / 1024;
    let pct = |k: u64| if total_k == 0 { 0.0 } else { k as f64 / total_k as f64 * 100.0 };
    let doms: Vec<TopDomain> = domains
        .iter()
        .map(|(d, name)| {
            let mem_k = d.tot_pages * PAGE / 1024;
            let maxmem_k =
                (d.max_pages != u64::MAX && d.max_pages != u32::MAX as u64).then(|| d.max_pages * PAGE / 1024);
            let before = prev.and_then(|f| f.domains.iter().find(|o| o.domid == d.domain));
            let cpu_pct = match before {
                Some(o) if elapsed_s > 0.0 => d.cpu_time.saturating_sub(o.cpu_ns) as f64 / 1e9 / elapsed_s * 100.0,
                _ => 0.0,
            };
            TopDomain {
                name: name.clone(),
                domid: d.domain,
                state: xentop_state(d.flags),
                cpu_secs: d.cpu_time / 1_000_000_000,
                cpu_pct,
                mem_k,
                mem_pct: pct(mem_k),
                maxmem_k,
                maxmem_pct: maxmem_k.map(pct),
                vcpus: d.max_vcpu_id.wrapping_add(1),
                nets: 0,
                nettx_k: 0,
                netrx_k: 0,
                vbds: 0,
                vbd_oo: 0,
                vbd_rd: 0,
                vbd_wr: 0,
                vbd_rsect: 0,
                vbd_wsect: 0,
                ssid: d.ssidref,
                cpu_ns: d.cpu_time,
            }
        })
        .collect();
    // Each domain counted once, in xentop's order of precedence.
    let mut counts = [0u32; 6];
    for (d, _) in domains {
        let f = d.flags;
        let shut = f & dominf::SHUTDOWN != 0;
        let crashed = shut
            && (f >> dominf::SHUTDOWN_SHIFT) & dominf::SHUTDOWN_MASK
                == keel_abi::hypercall::ShutdownReason::Crash as u32;
        let i = if f & dominf::RUNNING != 0 {
            0
        } else if f & dominf::BLOCKED != 0 {
            1
        } else if f & dominf::PAUSED != 0 {
            2
        } else if shut {
            5
        } else if crashed {
            3
        } else if f & dominf::DYING != 0 {
            4
        } else {
            continue;
        };
        counts[i] += 1;
    }
    TopFrame {
        time: time.to_string(),
        xen_version: version.to_string(),
        running: counts[0],
        blocked: counts[1],
        paused: counts[2],
        crashed: counts[3],
        dying: counts[4],
        shutdown: counts[5],
        mem_total_k: total_k,
        mem_used_k: total_k.saturating_sub(free_k),
        mem_free_k: free_k,
        cpus: p.nr_cpus,
        cpu_mhz: p.cpu_khz as u64 / 1000,
        domains: doms,
    }
}

/// xentop's columns: header and width.
pub const COLUMNS: [(&str, usize); 19] = [
    ("NAME", 10),
    ("STATE", 6),
    ("CPU(sec)", 10),
    ("CPU(%)", 6),
    ("MEM(k)", 10),
    ("MEM(%)", 6),
    ("MAXMEM(k)", 10),
    ("MAXMEM(%)", 9),
    ("VCPUS", 5),
    ("NETS", 4),
    ("NETTX(k)", 8),
    ("NETRX(k)", 8),
    ("VBDS", 4),
    ("VBD_OO", 8),
    ("VBD_RD", 8),
    ("VBD_WR", 8),
    ("VBD_RSECT", 10),
    ("VBD_WSECT", 10),
    ("SSID", 4),
];

/// The summary lines xentop prints above the table on screen.
pub fn summary(f: &TopFrame) -> [String; 3] {
    [
        format!("xentop - {}   Xen {}", f.time, f.xen_version),
        format!(
            "{} domains: {} running, {} blocked, {} paused, {} crashed, {} dying, {} shutdown ",
            f.domains.len(),
            f.running,
            f.blocked,
            f.paused,
            f.crashed,
            f.dying,
            f.shutdown
        ),
        format!(
            "Mem: {}k total, {}k used, {}k free    CPUs: {} @ {}MHz",
            f.mem_total_k, f.mem_used_k, f.mem_free_k, f.cpus, f.cpu_mhz
        ),
    ]
}

/// The column header line.
pub fn header() -> String {
    COLUMNS.iter().map(|(h, w)| format!("{h:>w$}")).collect::<Vec<_>>().join(" ")
}

/// One domain's cells, each padded to its column's width.
pub fn cells(d: &TopDomain) -> Vec<String> {
    let name: String = d.name.chars().take(10).collect();
    vec![
        format!("{name:>10}"),
        format!("{:>6}", d.state),
        format!("{:>10}", d.cpu_secs),
        format!("{:>6.1}", d.cpu_pct),
        format!("{:>10}", d.mem_k),
        format!("{:>6.1}", d.mem_pct),
        d.maxmem_k.map_or(format!("{:>10}", "no limit"), |k| format!("{k:>10}")),
        d.maxmem_pct.map_or(format!("{:>9}", "n/a"), |p| format!("{p:>9.1}")),
        format!("{:>5}", d.vcpus),
        format!("{:>4}", d.nets),
        format!("{:>8}", d.nettx_k),
        format!("{:>8}", d.netrx_k),
        format!("{:>4}", d.vbds),
        format!("{:>8}", d.vbd_oo),
        format!("{:>8}", d.vbd_rd),
        format!("{:>8}", d.vbd_wr),
        format!("{:>10}", d.vbd_rsect),
        format!("{:>10}", d.vbd_wsect),
        format!("{:>4}", d.ssid),
    ]
}

/// One domain's row.
pub fn row(d: &TopDomain) -> String {
    cells(d).join(" ")
}

/// A frame as `xentop -b` prints it: the column header, then one row per domain.
pub fn batch_text(f: &TopFrame, sort: usize) -> String {
    let mut out = header();
    out.push('\n');
    for d in sorted(&f.domains, sort) {
        out.push_str(&row(d));
        out.push('\n');
    }
    out
}

/// The domains in the order of column `sort` (as xentop: names alphabetically, numbers largest first).
pub fn sorted(domains: &[TopDomain], sort: usize) -> Vec<&TopDomain> {
    let mut v: Vec<&TopDomain> = domains.iter().collect();
    let num = |a: f64, b: f64| b.partial_cmp(&a).unwrap_or(Ordering::Equal);
    v.sort_by(|a, b| match sort {
        0 => a.name.to_lowercase().cmp(&b.name.to_lowercase()),
        1 => a.state.cmp(&b.state).reverse(),
        2 => b.cpu_ns.cmp(&a.cpu_ns),
        3 => num(a.cpu_pct, b.cpu_pct),
        4 | 5 => b.mem_k.cmp(&a.mem_k),
        6 | 7 => b.maxmem_k.unwrap_or(u64::MAX).cmp(&a.maxmem_k.unwrap_or(u64::MAX)),
        8 => b.vcpus.cmp(&a.vcpus),
        18 => a.ssid.cmp(&b.ssid),
        _ => Ordering::Equal,
    });
    v
}

/// The full-screen display.
pub mod tui {
    use super::{cells, header, sorted, summary, TopFrame, COLUMNS};
    use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
    use ratatui::style::{Modifier, Style};
    use ratatui::text::{Line, Span};
    use ratatui::widgets::Paragraph;
    use std::time::{Duration, Instant};

    /// What the user has set with keys.
    #[derive(Debug, Default)]
    struct View {
        sort: usize,
        first: usize,
        delay_s: u32,
        prompt: Option<String>,
    }

    /// Runs the display until `q`/Esc (or `iterations` frames): `sample` gives each new frame from the previous.
    pub fn run(
        delay_s: u32,
        iterations: Option<u32>,
        mut sample: impl FnMut(Option<&TopFrame>) -> Result<TopFrame, String>,
    ) -> Result<(), String> {
        let mut term = ratatui::try_init().map_err(|e| format!("cannot start the display: {e}"))?;
        let result = (|| {
            let mut view = View { delay_s, ..Default::default() };
            let mut frame = sample(None)?;
            let mut shown = 1u32;
            let mut last = Instant::now();
            loop {
                term.draw(|f| draw(f, &frame, &view)).map_err(|e| e.to_string())?;
                if iterations.is_some_and(|n| shown >= n) && last.elapsed() >= Duration::from_secs(view.delay_s.into())
                {
                    return Ok(());
                }
                if event::poll(Duration::from_millis(250)).map_err(|e| e.to_string())? {
                    if let Event::Key(k) = event::read().map_err(|e| e.to_string())? {
                        if k.kind == KeyEventKind::Press && !key(&mut view, k.code) {
                            return Ok(());
                        }
                    }
                }
                if last.elapsed() >= Duration::from_secs(view.delay_s.into()) && iterations.is_none_or(|n| shown < n) {
                    frame = sample(Some(&frame))?;
                    shown += 1;
                    last = Instant::now();
                }
            }
        })();
        ratatui::restore();
        result
    }

    /// Handles a key as xentop does; false to quit.
    fn key(v: &mut View, code: KeyCode) -> bool {
        if let Some(p) = v.prompt.as_mut() {
            match code {
                KeyCode::Enter => {
                    if let Ok(d) = p.parse::<u32>() {
                        if d > 0 {
                            v.delay_s = d;
                        }
                    }
                    v.prompt = None;
                }
                KeyCode::Esc => v.prompt = None,
                KeyCode::Backspace => {
                    p.pop();
                }
                KeyCode::Char(c) if p.len() < 8 && c.is_ascii_digit() => p.push(c),
                _ => {}
            }
            return true;
        }
        match code {
            KeyCode::Char('q' | 'Q') | KeyCode::Esc => return false,
            KeyCode::Char('s' | 'S') => v.sort = (v.sort + 1) % COLUMNS.len(),
            KeyCode::Char('d' | 'D') => v.prompt = Some(String::new()),
            KeyCode::Down => v.first += 1,
            KeyCode::Up => v.first = v.first.saturating_sub(1),
            _ => {}
        }
        true
    }

    fn draw(f: &mut ratatui::Frame, frame: &TopFrame, v: &View) {
        let area = f.area();
        let mut lines: Vec<Line> = summary(frame).into_iter().map(Line::from).collect();
        let reverse = Style::default().add_modifier(Modifier::REVERSED);
        let bold = Style::default().add_modifier(Modifier::BOLD);
        let head = header();
        let mut spans = Vec::new();
        let mut at = 0;
        for (i, (_, w)) in COLUMNS.iter().enumerate() {
            let end = (at + w).min(head.len());
            let style = if i == v.sort { reverse.add_modifier(Modifier::BOLD) } else { reverse };
            spans.push(Span::styled(head[at..end].to_string(), style));
            if i + 1 < COLUMNS.len() {
                spans.push(Span::styled(" ", reverse));
            }
            at = end + 1;
        }
        lines.push(Line::from(spans));
        let doms = sorted(&frame.domains, v.sort);
        let first = v.first.min(doms.len().saturating_sub(1));
        for d in doms.into_iter().skip(first) {
            let mut spans = Vec::new();
            for (i, c) in cells(d).into_iter().enumerate() {
                if i > 0 {
                    spans.push(Span::raw(" "));
                }
                spans.push(if i == v.sort { Span::styled(c, bold) } else { Span::raw(c) });
            }
            lines.push(Line::from(spans));
        }
        let body_height = area.height.saturating_sub(1);
        f.render_widget(Paragraph::new(lines), ratatui::layout::Rect { height: body_height, ..area });
        let bottom = match &v.prompt {
            Some(p) => Line::from(format!("  Delay(sec): {p}")),
            None => {
                let k = |c: &'static str| Span::styled(c, reverse);
                Line::from(vec![
                    Span::raw("  "),
                    k("D"),
                    Span::raw("elay  "),
                    k("S"),
                    Span::raw("ort order  "),
                    k("Q"),
                    Span::raw("uit  "),
                    Span::raw("(Up/Down scroll)"),
                ])
            }
        };
        let y = area.y + area.height.saturating_sub(1);
        f.render_widget(Paragraph::new(bottom), ratatui::layout::Rect { y, height: 1.min(area.height), ..area });
    }

    #[cfg(test)]
    mod tests {
        use super::super::tests::sample_frame;
        use super::*;
        use ratatui::backend::TestBackend;
        use ratatui::Terminal;

        fn screen(v: &View) -> Vec<String> {
            let mut term = Terminal::new(TestBackend::new(200, 8)).unwrap();
            term.draw(|f| draw(f, &sample_frame(), v)).unwrap();
            let buf = term.backend().buffer().clone();
            (0..8).map(|y| (0..200).map(|x| buf[(x, y)].symbol().to_string()).collect::<String>()).collect()
        }

        #[test]
        fn the_screen_shows_xentop_summary_columns_and_keys() {
            let lines = screen(&View { delay_s: 3, ..Default::default() });
            assert!(lines[0].starts_with("xentop - 12:00:00   Xen 4.17.0"), "{lines:#?}");
            assert!(lines[1].starts_with("1 domains: 1 running"), "{lines:#?}");
            assert!(lines[2].starts_with("Mem: 2097152k total"), "{lines:#?}");
            assert!(lines[3].starts_with(&super::super::header()), "{lines:#?}");
            assert!(lines[4].trim_start().starts_with("Domain-0 -----r"), "{lines:#?}");
            assert!(lines[7].starts_with("  Delay  Sort order  Quit"), "{lines:#?}");
        }

        #[test]
        fn keys_as_xentop() {
            let mut v = View { delay_s: 3, ..Default::default() };
            assert!(key(&mut v, KeyCode::Char('s')));
            assert_eq!(v.sort, 1);
            assert!(key(&mut v, KeyCode::Char('d')));
            for c in ['1', '0'] {
                assert!(key(&mut v, KeyCode::Char(c)));
            }
            assert!(screen(&v)[7].starts_with("  Delay(sec): 10"));
            assert!(key(&mut v, KeyCode::Enter));
            assert_eq!((v.delay_s, v.prompt.is_none()), (10, true));
            // A delay of 0 is ignored, as xentop does.
            for k in [KeyCode::Char('d'), KeyCode::Char('0'), KeyCode::Enter] {
                key(&mut v, k);
            }
            assert_eq!(v.delay_s, 10);
            assert!(!key(&mut v, KeyCode::Char('q')));
            assert!(!key(&mut v, KeyCode::Esc));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dom0(cpu_ns: u64) -> (GetDomainInfo, String) {
        let d = GetDomainInfo {
            domain: 0,
            flags: dominf::RUNNING,
            tot_pages: 131_072,
            max_pages: 131_072,
            nr_online_vcpus: 4,
            max_vcpu_id: 3,
            cpu_time: cpu_ns,
            ..Default::default()
        };
        (d, "Domain-0".to_string())
    }

    fn phys() -> PhysInfo {
        PhysInfo { nr_cpus: 2, cpu_khz: 2_400_000, total_pages: 524_288, free_pages: 262_144, ..Default::default() }
    }

    /// A frame of dom0 alone, for the display's tests.
    pub(super) fn sample_frame() -> TopFrame {
        frame(&phys(), "4.17.0", "12:00:00", &[dom0(5_000_000_000)], None, 0.0)
    }

    #[test]
    fn frames_hold_xentop_values() {
        let f1 = frame(&phys(), "4.17.0", "12:00:00", &[dom0(5_000_000_000)], None, 0.0);
        let d = &f1.domains[0];
        assert_eq!(
            (d.state.as_str(), d.cpu_secs, d.mem_k, d.maxmem_k, d.vcpus),
            ("-----r", 5, 524_288, Some(524_288), 4)
        );
        assert_eq!(d.cpu_pct, 0.0);
        assert!((d.mem_pct - 25.0).abs() < 1e-9);
        // Two seconds later, 3 s more of CPU time: 150% (of one CPU).
        let f2 = frame(&phys(), "4.17.0", "12:00:02", &[dom0(8_000_000_000)], Some(&f1), 2.0);
        assert!((f2.domains[0].cpu_pct - 150.0).abs() < 1e-9);
        let s = summary(&f2);
        assert_eq!(s[0], "xentop - 12:00:02   Xen 4.17.0");
        assert_eq!(s[1], "1 domains: 1 running, 0 blocked, 0 paused, 0 crashed, 0 dying, 0 shutdown ");
        assert_eq!(s[2], "Mem: 2097152k total, 1048576k used, 1048576k free    CPUs: 2 @ 2400MHz");
    }

    #[test]
    fn batch_frames_have_xentop_columns() {
        let f = frame(&phys(), "4.17.0", "12:00:00", &[dom0(5_000_000_000)], None, 0.0);
        let text = batch_text(&f, 0);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            "      NAME  STATE   CPU(sec) CPU(%)     MEM(k) MEM(%)  MAXMEM(k) MAXMEM(%) VCPUS NETS NETTX(k) NETRX(k) \
             VBDS   VBD_OO   VBD_RD   VBD_WR  VBD_RSECT  VBD_WSECT SSID"
        );
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(cols[..9], ["Domain-0", "-----r", "5", "0.0", "524288", "25.0", "524288", "25.0", "4"]);
        assert_eq!(cols.len(), COLUMNS.len());
        // Every cell sits under its header: the row is exactly as wide as the header.
        assert_eq!(lines[1].len(), lines[0].len());
    }

    #[test]
    fn long_names_are_cut_to_ten_and_unlimited_memory_says_so() {
        let (mut d, _) = dom0(0);
        d.max_pages = u64::MAX;
        let f = frame(&phys(), "4.17.0", "", &[(d, "a-very-long-name".into())], None, 0.0);
        let r = row(&f.domains[0]);
        assert!(r.starts_with("a-very-lon "), "{r}");
        assert!(r.contains("  no limit       n/a "), "{r}");
    }

    #[test]
    fn xentop_state_order() {
        assert_eq!(xentop_state(dominf::RUNNING), "-----r");
        assert_eq!(xentop_state(dominf::BLOCKED | dominf::PAUSED), "--b-p-");
        assert_eq!(xentop_state(dominf::SHUTDOWN | 3 << dominf::SHUTDOWN_SHIFT | dominf::DYING), "ds-c--");
    }

    #[test]
    fn frames_serialise_without_internal_fields() {
        let f = frame(&phys(), "4.17.0", "12:00:00", &[dom0(5)], None, 0.0);
        let v: serde_json::Value = serde_json::from_str(&super::super::format::json(&[f])).unwrap();
        assert_eq!(v[0]["domains"][0]["name"], "Domain-0");
        assert_eq!(v[0]["cpus"], 2);
        assert!(v[0]["domains"][0].get("cpu_ns").is_none());
    }
}
