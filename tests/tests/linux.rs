//! Debian's stock Linux 6.1 as Keel's initial domain, booted from a GRUB ISO exactly like Xen
//! (`multiboot2 keel.elf …`, `module2 --nounzip vmlinuz console=hvc0 …`, `module2 --nounzip initrd.img`),
//! judged by the serial log: dom0's `/etc/init.d/S99keel` (xtask/assets/keel-init) prints `KEEL-CHECK:` lines in
//! `keel.init=checks` mode. Each boot takes 40-60 s under TCG, so there are few of them. Run them with
//! `cargo xtask test --no-lint --no-unit -- linux::` (it builds Keel, fetches the kernel, builds the initramfs
//! and passes their paths in as `KEEL_ELF`, `KEEL_VMLINUZ`, `KEEL_INITRD`).

/// `linux::` in the test names, for a filter that picks these three.
mod linux {
    use keel_tests::disk::{self, pattern, sha256_hex};
    use keel_tests::{env_path, iso, Run};
    use std::path::{Path, PathBuf};

    /// Seconds before `timeout` stops QEMU: GRUB reads ~9 MB, Keel unpacks the XZ kernel (6-10 s), Linux boots
    /// (20-30 s), then the checks run (~15 s).
    const CHECKS_TIMEOUT: u64 = 180;
    const BOOT_TIMEOUT: u64 = 150;
    /// Keel's command line, as one would give Xen, with dom0 on the PVH domU platform these tests were written for
    /// (`dom0-platform=virtual`; those of dom0 on the machine's own devices say `host`, the default).
    const XEN_LIKE: &str = "console=com1 dom0_mem=512M dom0-platform=virtual";

    /// A temporary file name for this test.
    fn temp(name: &str, ext: &str) -> PathBuf {
        std::env::temp_dir().join(format!("keel-linux-{}-{name}.{ext}", std::process::id()))
    }

    /// Boots Keel + `kernel` as dom0 with the test initramfs (`KEEL_INITRD`) on `smp` CPUs with 2 GiB
    /// ([`iso::Dom0Boot`]: a run ended by the QEMU TCG defect is repeated once, loudly).
    fn boot(name: &str, keel_cmdline: &str, kernel: &Path, kernel_cmdline: &str, smp: u32, timeout: u64) -> Run {
        let initrd = env_path("KEEL_INITRD");
        iso::Dom0Boot {
            name,
            keel_cmdline,
            kernel,
            kernel_cmdline,
            initrd: &initrd,
            smp,
            timeout,
            retries: 1,
            qemu_args: &[],
        }
        .run()
    }

    /// The value of `KEEL-CHECK: <what> <value>`.
    #[track_caller]
    fn check<T: std::str::FromStr>(run: &Run, what: &str) -> T {
        run.assert_parsed(&format!("KEEL-CHECK: {what} "))
    }

    /// The kernel boots as dom0 with 4 vCPUs on 2 CPUs, reaches busybox, and sees Xen as Xen: the hypervisor type,
    /// its vCPUs each running a pinned loop, stolen time accounted, a wall clock that matches the host's and a
    /// monotonic clock that ticks in real time, xenfs, no clocksource complaints; then it powers the machine off.
    #[test]
    fn stock_kernel_boots_to_busybox() {
        let vmlinuz = env_path("KEEL_VMLINUZ");
        let run = boot(
            "checks",
            &format!("{XEN_LIKE} dom0_max_vcpus=4"),
            &vmlinuz,
            // create.sh builds domUs: it runs in the xl domU test's boot (tests/tests/xl/create.rs), where guests stay
            // off CPU 0 because of the QEMU TCG defect (docs/testing.md); this boot pins dom0's vCPUs to CPU 0.
            "console=hvc0 keel.init=checks keel.checks.skip=create",
            2,
            CHECKS_TIMEOUT,
        );
        run.assert_order(&[
            "Linux version 6.1",
            // 6.1.192 says "Booting kernel on Xen PVH"; older kernels "Booting paravirtualized kernel on Xen PVH".
            "kernel on Xen PVH",
            // As the initial domain Linux rates the xen clocksource below the TSC (as on Xen), so either is fine.
            "clocksource: Switched to clocksource ",
            "KEEL-INIT: busybox init reached",
            "KEEL-CHECK: hypervisor-type ",
            "KEEL-CHECK: done",
            "(KEEL) domain 0 (Domain-0) shut down: poweroff",
            "(KEEL) Powering off",
        ]);
        run.assert_no_line("EXCEPTION");

        // Every check below is judged; the failure lists all that failed.
        let mut problems = Vec::new();
        let hv: String = check(&run, "hypervisor-type");
        if hv != "xen" {
            problems.push(format!("/sys/hypervisor/type is {hv:?}, not \"xen\""));
        }
        let nproc: u32 = check(&run, "nproc");
        if nproc != 4 {
            problems.push(format!("nproc is {nproc}, want the 4 vCPUs of dom0_max_vcpus=4"));
        }
        for n in 0..4 {
            let done = run.count_lines_matching(&format!("KEEL-CHECK: cpu {n} loop done"));
            if done != 1 {
                problems.push(format!("{done} `cpu {n} loop done` lines, want 1"));
            }
        }
        // Four busy vCPUs on two CPUs wait for each other: Linux must see that as steal time (runstate areas).
        let steal: u64 = check(&run, "steal");
        if steal == 0 {
            problems.push("/proc/stat shows no steal time although 4 busy vCPUs shared 2 CPUs".into());
        }
        let warnings: u32 = check(&run, "clock-warnings");
        if warnings != 0 {
            let lines: Vec<&str> = run.lines().filter(|l| is_clock_warning(l)).collect();
            problems.push(format!("{warnings} clocksource warnings in the kernel log: {lines:#?}"));
        }

        // The guest's wall clock (shared_info wallclock + its system time) against the host's when the line arrived.
        eprintln!("[{}] clocks: {}", run.name, clock_diagnostics(&run));
        // `date +%s` has whole seconds only; the microsecond reading taken right after it (busybox adjtimex) is
        // the guest's clock at full precision, so that is what is compared.
        let date: i64 = check(&run, "date");
        let (guest, arrived) = match run.timed_lines.iter().find(|l| l.text.contains("KEEL-CHECK: wallclock ")) {
            Some(l) => (
                l.text
                    .split("KEEL-CHECK: wallclock ")
                    .nth(1)
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .unwrap_or(date as f64),
                l.unix_secs(),
            ),
            None => (date as f64, run.assert_timed_line("KEEL-CHECK: date ").unix_secs()),
        };
        // The guest may lag: QEMU starts its RTC at the host's whole second (0-1 s behind, and Keel, like Xen,
        // reads the RTC), and Linux keeps wall time on jiffies until its Xen clocksource takes over, losing the
        // ticks of early boot (~1 s under TCG, measured 0.95-1.75 s in all; 2.2 s with the host overloaded).
        // Ahead of the host it may not be.
        let off = arrived - guest;
        if !(-0.5..=3.0).contains(&off) {
            problems.push(format!(
                "guest clock {guest:.3} is {off:.3} s behind the host clock at arrival ({arrived:.3}), want -0.5..3 s; \
                 {}",
                clock_diagnostics(&run)
            ));
        }
        // `sleep 5` in the guest takes 5 s of host time (±5%).
        let slept =
            run.assert_timed_line("KEEL-CHECK: sleep-end").at - run.assert_timed_line("KEEL-CHECK: sleep-start").at;
        let secs = slept.as_secs_f64();
        if !(4.75..=5.25).contains(&secs) {
            problems.push(format!("`sleep 5` in dom0 took {secs:.3} s of host time (want 5 s ± 5%)"));
        }
        // Needs the hypervisor side of xenfs (privcmd, xenbus).
        if run.count_lines_matching("KEEL-CHECK: xenfs mounted") == 0 {
            problems.push(format!("xenfs: {:?}", run.assert_line("KEEL-CHECK: xenfs ")));
        }
        // The initial domain is Xen's control domain to Linux.
        let caps = run.assert_line("KEEL-CHECK: capabilities ");
        if !caps.trim_end().ends_with("control_d") {
            problems.push(format!("/proc/xen/capabilities: {caps:?}, want control_d"));
        }
        // xm asks the hypervisor through privcmd: the machine (-smp 2, -m 2048M) and dom0 (dom0_mem=512M,
        // dom0_max_vcpus=4) as QEMU and the command line made them.
        let info = |key: &str| -> String {
            run.lines()
                .find_map(|l| l.split("KEEL-XM-INFO: ").nth(1).and_then(|x| x.strip_prefix(key)))
                .and_then(|rest| rest.split(':').nth(1))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        if info("nr_cpus ") != "2" {
            problems.push(format!("xm info nr_cpus {:?}, want 2", info("nr_cpus ")));
        }
        let total: u64 = info("total_memory ").parse().unwrap_or(0);
        let free: u64 = info("free_memory ").parse().unwrap_or(0);
        if !(2000..=2048).contains(&total) || free == 0 || free >= total {
            problems.push(format!("xm info total_memory {total} / free_memory {free} MiB, want ~2048 and less"));
        }
        // The privileged domain reads Keel's command line and build compiler (XENVER_commandline, _compile_info).
        if !info("xen_commandline ").contains("dom0_max_vcpus=4") || !info("cc_compiler ").starts_with("rustc ") {
            problems.push(format!(
                "xm info xen_commandline {:?}, cc_compiler {:?}",
                info("xen_commandline "),
                info("cc_compiler ")
            ));
        }
        let dom0_row = run.lines().find_map(|l| l.split("KEEL-XM-LIST: ").nth(1).filter(|r| r.starts_with("Domain-0")));
        let cols: Vec<&str> = dom0_row.map(|r| r.split_whitespace().collect()).unwrap_or_default();
        // Mem is what dom0 holds: dom0_mem less the RAM pages its shared_info and grant frames were mapped over.
        let mem_ok = cols.get(2).and_then(|m| m.parse::<u64>().ok()).is_some_and(|m| (508..=512).contains(&m));
        if cols.get(1) != Some(&"0") || !mem_ok || cols.get(3) != Some(&"4") {
            problems.push(format!("xm list's Domain-0 row {dom0_row:?}, want id 0, ~512 MiB, 4 vCPUs"));
        }
        let svm_lines: u32 = check(&run, "xm-dmesg-svm-lines");
        if svm_lines != 2 {
            problems.push(format!("xm dmesg holds {svm_lines} `SVM enabled` lines, want one per CPU (2)"));
        }
        // dom0's own xenstored (started by /etc/init.d/S30xencommons) answers the xenstore-* commands.
        let xs = run.assert_line("KEEL-CHECK: xenstore ");
        if !xs.trim_end().ends_with("KEEL-CHECK: xenstore written-and-read") {
            problems.push(format!("dom0's xenstored: {xs:?}"));
        }
        // As on Xen, dom0's kernel talks to dom0's xenstored over its own XS_LOCAL ring (xtask/assets/checks/xenstore.sh).
        let port: u32 = check(&run, "xsd_port");
        let probe = run.assert_line("KEEL-CHECK: xenbus-probe ");
        let kernel_read = run.assert_line("KEEL-CHECK: xenstore-kernel-read ");
        let socket_read = run.assert_line("KEEL-CHECK: xenstore-socket-read ");
        let watch = run.assert_line("KEEL-CHECK: xenstore-kernel-watch ");
        let xenbus_errors: u32 = check(&run, "xenbus-errors");
        if port == 0
            || !probe.trim_end().ends_with("xenbus-probe done")
            || !kernel_read.trim_end().ends_with(" socket-to-kernel")
            || !socket_read.trim_end().ends_with(" kernel-to-socket")
            || !watch.trim_end().ends_with("xenstore-kernel-watch /keel/xs-watch /keel/xs-watch/fired")
            || xenbus_errors != 0
        {
            problems.push(format!(
                "dom0's kernel and xenstored (XS_LOCAL): xsd_port {port}, {probe:?}, {kernel_read:?}, {socket_read:?}, \
                 {watch:?}, {xenbus_errors} xenbus errors in dmesg"
            ));
        }
        // xm's host-level commands (xtask/assets/checks/xm.sh).
        problems.extend(xm_problems(&run));
        // dom0's Xen devices (xtask/assets/checks/devices.sh): a page gntalloc granted to dom0 itself, mapped
        // again through gntdev (GNTTABOP_map_grant_ref), shows gntalloc's pattern and takes gntdev's writes.
        let gnt = run.assert_line("KEEL-CHECK: gntdev-own-grant ");
        if !gnt.trim_end().ends_with("read=ok write-back=ok") {
            problems.push(format!("gntalloc + gntdev: {gnt:?}"));
        }
        // /dev/xen/evtchn: an interdomain loopback inside dom0 delivers the notification.
        let ev = run.assert_line("KEEL-CHECK: evtchn-loopback ");
        if !ev.trim_end().ends_with("event=ok") {
            problems.push(format!("evtchn loopback: {ev:?}"));
        }
        // privcmd: Xen 4.17's errors. MMAP_RESOURCE of one's own grant table is -EPERM (a remote domain only),
        // of no domain -ESRCH; MMAPBATCH_V2's per-page errors: -ESRCH for no domain, -EPERM for dom0 itself.
        for (what, want) in [
            ("mmap-resource-gnttab self", "errno=-1"),
            ("mmap-resource-gnttab nodomain", "errno=-3"),
            ("mmapbatch nodomain", "rc=0 err=-3"),
            ("mmapbatch self", "rc=0 err=-1"),
        ] {
            let line = run.assert_line(&format!("KEEL-CHECK: {what} "));
            if !line.trim_end().ends_with(&format!("{what} {want}")) {
                problems.push(format!("{what}: {line:?}, want {want}"));
            }
        }
        // `xm create -n` of the sample /etc/xen/example-pvh, by its bare name (xtask/assets/checks/config.sh).
        let dry: Vec<String> =
            run.lines().filter_map(|l| l.split("KEEL-CFG-DRY: ").nth(1)).map(|l| l.trim_end().to_string()).collect();
        for want in [
            "name = \"example-pvh\"",
            "type = \"pvh\"",
            "memory = 256",
            "maxmem = 256",
            "vcpus = 1",
            "maxvcpus = 1",
            "cmdline = \"console=hvc0\"",
        ] {
            if !dry.iter().any(|l| l == want) {
                problems.push(format!("xm create -n example-pvh vcpus=1 lacks {want:?}: {dry:?}"));
            }
        }
        let bad = run.assert_line("KEEL-CFG: bad-memory ");
        if !bad.contains("rc=1 xm: 'create' failed: command line 'memory=lots': memory: expected a number of MiB") {
            problems.push(format!("xm create -n example-pvh memory=lots: {bad:?}"));
        }
        problems.extend(consoled_problems(&run));
        // A guest built from dom0 through the toolstack's hypercalls (createdomain, max_mem, populate_physmap, a
        // page mapped with MMAPBATCH_V2 and written, sethvmcontext, unpause: its boot vCPU runs the code written at
        // its entry, which shuts it down with reason reboot; destroydomain): free memory comes back exactly.
        let build = run.assert_line("KEEL-CHECK: guest-build ");
        if !build.contains("ran=yes shutdown-code=1 ") || !build.trim_end().ends_with("returned=yes") {
            problems.push(format!("guest build from dom0: {build:?}"));
        }
        // pausedomain stops a running guest (its counter stands still), unpausedomain resumes it, destroydomain
        // takes it down while it runs; free memory comes back once dom0 unmaps the page it still held.
        let pause = run.assert_line("KEEL-CHECK: guest-pause ");
        if !pause
            .trim_end()
            .ends_with("paused-still=yes resumed=yes destroyed-running=yes mapped-after-destroy=readable returned=yes")
        {
            problems.push(format!("guest pause/unpause/destroy: {pause:?}"));
        }
        // xm's lifecycle commands without domUs (xtask/assets/checks/lifecycle.sh).
        for (what, want) in [
            ("destroy-0", "rc=1 xm: 'destroy' failed: cannot destroy privileged domain 0"),
            ("pause-nosuch", "rc=1 xm: 'pause' failed: domain 'nosuch' does not exist"),
            ("sysrq-77", "rc=1 xm: 'sysrq' failed: domain '77' does not exist"),
            ("vcpu-set-0-9", "rc=1 xm: 'vcpu-set' failed: requested 9 vCPUs, however maxvcpus is 4"),
            ("shutdown-all", "rc=0 Waiting for 0 domains"),
        ] {
            let line = run.assert_line(&format!("KEEL-LIFE: {what} "));
            if !line.trim_end().ends_with(&format!("{what} {want}")) {
                problems.push(format!("lifecycle.sh {what}: {line:?}, want {want:?}"));
            }
        }
        if !problems.is_empty() {
            run.fail(&format!("{} checks failed:\n  {}", problems.len(), problems.join("\n  ")));
        }
        run.assert_success();
    }

    /// What is wrong with what xtask/assets/checks/consoled.sh saw of dom0's xenconsoled (S30xencommons starts it
    /// with --log=guest): running detached, watching the domain list, no errors logged, its guest log directory, its
    /// devices working on a loopback console (`--self-check`);
    /// `xm console` of an unknown domain and of dom0 (which has no console/tty) failing with one clear line.
    fn consoled_problems(run: &Run) -> Vec<String> {
        let mut p = Vec::new();
        for (what, want) in [
            ("xenconsoled running", ""),
            ("xenconsoled watching", "1"),
            ("xenconsoled log-errors", "0"),
            ("xenconsoled log-dir", "yes"),
            ("xm-console-unknown", "xm: 'console' failed: domain 'nosuchdomain' does not exist"),
            (
                "xm-console-dom0",
                "xm: 'console' failed: domain '0' has no console: /local/domain/0/console/tty is not there \
                 (is xenconsoled running?)",
            ),
        ] {
            let line = run.lines().find(|l| l.contains(&format!("KEEL-CHECK: {what}"))).map(str::trim_end);
            let got = line.and_then(|l| l.split_once(&format!("KEEL-CHECK: {what}"))).map(|(_, v)| v.trim());
            if got != Some(want) {
                p.push(format!("{what}: {line:?}, want {want:?}"));
            }
        }
        // Its devices on a loopback console inside dom0: 23 bytes out through the grant, 5 typed bytes in.
        let selfcheck = run.lines().find(|l| l.contains("KEEL-CHECK: xenconsoled-self-check ")).unwrap_or_default();
        if !(selfcheck.contains("xenconsoled: self-check ok") && selfcheck.trim_end().ends_with("output=23 input=5")) {
            p.push(format!("xenconsoled --self-check: {selfcheck:?}"));
        }
        if run.count_lines_matching("KEEL-INIT: xenconsoled started") != 1 {
            p.push("S30xencommons did not say `xenconsoled started`".into());
        }
        p
    }

    /// What is wrong with what xtask/assets/checks/xm.sh saw of xm's host-level commands in dom0 (-smp 2, 2 GiB,
    /// dom0_mem=512M, dom0_max_vcpus=4): Domain-0 in `list -l` with its memory and vCPUs, domid/domname, unknown
    /// domains and vnet-list failing plainly, sched-credit's weight/cap/time slice set and read back, vcpu-pin's
    /// hard affinity shown and obeyed, two `top -b` frames, every command's `--json` parsed here with serde_json.
    fn xm_problems(run: &Run) -> Vec<String> {
        let mut p = Vec::new();
        let tagged = |tag: &str| -> Vec<String> {
            run.lines().filter_map(|l| l.split_once(tag).map(|(_, r)| r.trim_end().to_string())).collect()
        };
        let value = |what: &str| tagged(&format!("KEEL-XM: {what} ")).into_iter().next().unwrap_or_default();
        if run.count_lines_matching("KEEL-XM: done") != 1 {
            p.push("xm.sh did not run to its end".to_string());
        }
        let long = tagged("KEEL-XM-LONG: ").join("\n");
        for field in ["(name Domain-0)", "(domid 0)", "(maxmem 512)", "(vcpus 4)"] {
            if !long.contains(field) {
                p.push(format!("xm list -l 0 lacks {field}: {long:?}"));
            }
        }
        if value("domid") != "0" || value("domname") != "Domain-0" {
            p.push(format!("xm domid Domain-0 {:?}, xm domname 0 {:?}", value("domid"), value("domname")));
        }
        for (what, want) in [
            ("unknown-name", "rc=1 xm: 'list' failed: domain 'nosuch' does not exist"),
            ("unknown-id", "rc=1 xm: 'vcpu-list' failed: domain '999' does not exist"),
            ("create", "rc=1 xm: 'create' failed: /etc/xen/guest.cfg: cannot read the configuration file"),
            ("vnet-list", "rc=1 xm: 'vnet-list' is not supported: Xen removed virtual networks"),
            ("log", "rc=0"),
            ("sched-set", "rc=0"),
            ("tslice-set", "rc=0 Cpupool Pool-0: tslice=10ms"),
            ("pin", "rc=0"),
            ("unpin", "rc=0"),
            ("dmesg-c", "2 then 0"),
        ] {
            if !value(what).starts_with(want) {
                p.push(format!("xm.sh {what}: {:?}, want {want:?}…", value(what)));
            }
        }
        let row = |tag: &str, first: &[&str]| -> Option<Vec<String>> {
            tagged(tag)
                .into_iter()
                .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
                .find(|c| c.len() >= first.len() && c.iter().zip(first).all(|(a, b)| a == b))
        };
        if row("KEEL-XM-SCHED-SET: ", &["Domain-0", "0", "512", "150"]).is_none() {
            p.push(format!("sched-credit -d 0 after -w 512 -c 150: {:?}", tagged("KEEL-XM-SCHED-SET: ")));
        }
        // vCPU 1 pinned to CPU 0 (soft affinity untouched), and running only there; then back to all.
        let pinned = row("KEEL-XM-PINNED: ", &["Domain-0", "0", "1"]);
        if pinned.as_ref().map(|c| c[c.len() - 3..].join(" ")).as_deref() != Some("0 / all") {
            p.push(format!("vcpu-list after vcpu-pin 0 1 0: {:?}", tagged("KEEL-XM-PINNED: ")));
        }
        let cpus = tagged("KEEL-XM: pinned-cpu ");
        if cpus.len() != 3 || cpus.iter().any(|c| c != "0") {
            p.push(format!("dom0's vCPU 1, pinned to CPU 0 and busy, ran on CPUs {cpus:?}, want 0 each time"));
        }
        let unpinned = row("KEEL-XM-UNPINNED: ", &["Domain-0", "0", "1"]);
        if unpinned.as_ref().map(|c| c[c.len() - 3..].join(" ")).as_deref() != Some("all / all") {
            p.push(format!("vcpu-list after vcpu-pin Domain-0 all all all: {:?}", tagged("KEEL-XM-UNPINNED: ")));
        }
        let top = tagged("KEEL-XM-TOP: ");
        let headers = top.iter().filter(|l| l.trim_start().starts_with("NAME  STATE   CPU(sec) CPU(%)")).count();
        let dom0_rows = top.iter().filter(|l| l.trim_start().starts_with("Domain-0 ")).count();
        if headers != 2 || dom0_rows != 2 {
            p.push(format!("xm top -b -i 2: {headers} headers and {dom0_rows} Domain-0 rows, want 2 each: {top:#?}"));
        }
        p.extend(xm_json_problems(run));
        p
    }

    /// The `--json` outputs xm.sh sent (base64, `KEEL-XM-JSON <name> <chunk>`), each parsed and checked.
    fn xm_json_problems(run: &Run) -> Vec<String> {
        let mut p = Vec::new();
        let doc = |name: &str| -> (String, Result<serde_json::Value, String>) {
            let head = format!("KEEL-XM-JSON {name} ");
            let b64: String = run.lines().filter_map(|l| l.split_once(&head).map(|(_, r)| r.trim())).collect();
            let rc = run
                .lines()
                .find_map(|l| l.split_once(&format!("KEEL-XM-JSON-RC: {name} ")).map(|(_, r)| r.trim().to_string()))
                .unwrap_or_default();
            let text = base64_decode(&b64).and_then(|b| String::from_utf8(b).map_err(|e| e.to_string()));
            (rc, text.and_then(|t| serde_json::from_str(&t).map_err(|e| format!("{e} in {t:?}"))))
        };
        let mut check = |name: &str, want_rc: &str, ok: &dyn Fn(&serde_json::Value) -> bool| match doc(name) {
            (rc, Ok(v)) if rc == want_rc && ok(&v) => {}
            (rc, v) => p.push(format!("xm {name} --json: exit {rc:?} (want {want_rc}), {v:?}")),
        };
        let n = |v: &serde_json::Value| v.as_u64().unwrap_or(u64::MAX);
        check("info", "0", &|v| {
            n(&v["nr_cpus"]) == 2
                && (2000..=2048).contains(&n(&v["total_memory"]))
                && (1..n(&v["total_memory"])).contains(&n(&v["free_memory"]))
        });
        check("list", "0", &|v| v[0]["name"] == "Domain-0" && v[0]["domid"] == 0 && v[0]["vcpus"] == 4);
        check("list-long", "0", &|v| v[0]["maxmem"] == 512 && v[0]["max_vcpus"] == 4 && v[0]["name"] == "Domain-0");
        check("domid", "0", &|v| v["domid"] == 0);
        check("domname", "0", &|v| v["name"] == "Domain-0");
        check("uptime", "0", &|v| v[0]["name"] == "Domain-0" && n(&v[0]["uptime"]) > 0);
        check("vcpu-list", "0", &|v| {
            v.as_array().is_some_and(|a| a.len() == 4 && a.iter().all(|r| r["hard_affinity"] == "all"))
        });
        check("vcpu-pin", "0", &|v| v["vcpus"].as_array().is_some_and(|a| a.len() == 4));
        check("sched-credit", "0", &|v| v["domains"][0]["weight"] == 256 && n(&v["cpupool"]["tslice_ms"]) < 1001);
        check("sched-credit-d", "0", &|v| v["weight"] == 256 && v["cap"] == 0);
        check("sched-credit-s", "0", &|v| v["cpupool"] == "Pool-0" && n(&v["tslice_ms"]) < 1001);
        check("top", "0", &|v| {
            v.as_array().is_some_and(|frames| {
                frames.len() == 2 && frames.iter().all(|f| f["cpus"] == 2 && f["domains"][0]["name"] == "Domain-0")
            })
        });
        check("log", "0", &|v| v["directory"] == "/var/log/xen" && v["files"].is_array());
        check("vnet-list", "1", &|v| v["error"].as_str().is_some_and(|e| e.contains("vnet")));
        check("unknown", "1", &|v| v["error"].as_str().is_some_and(|e| e.contains("does not exist")));
        check("dmesg", "0", &|v| {
            v["lines"].as_array().is_some_and(|l| {
                l.iter().filter(|l| l.as_str().is_some_and(|l| l.contains("SVM enabled"))).count() == 2
            })
        });
        p
    }

    #[test]
    fn base64_of_busybox_decodes() {
        assert_eq!(base64_decode("eyJhIjoxfQ==").as_deref(), Ok(&b"{\"a\":1}"[..]));
        assert_eq!(base64_decode("eyJhIjox\nfQ").as_deref().map_err(|_| ()), Err(()));
        assert_eq!(base64_decode("eyJhIjoxfQ").as_deref(), Ok(&b"{\"a\":1}"[..]));
    }

    /// Standard base64 (as busybox's `base64` writes it), padding optional.
    fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0);
        for c in text.bytes().filter(|&c| c != b'=') {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return Err(format!("{:?} is not base64", c as char)),
            };
            acc = acc << 6 | v as u32;
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
                acc &= (1 << bits) - 1;
            }
        }
        Ok(out)
    }

    /// What the diagnostic lines of init.sh's checks say about the guest's clocks, for failure messages: the wall
    /// clock to the microsecond against the host's at arrival, and the monotonic clock (`/proc/uptime`) against the
    /// kernel's sched_clock (the `[timestamp]` of the kernel-log line that carries it).
    fn clock_diagnostics(run: &Run) -> String {
        let mut out = Vec::new();
        if let Some(l) = run.timed_lines.iter().find(|l| l.text.contains("KEEL-CHECK: wallclock ")) {
            if let Some(Ok(wc)) = l.text.split("KEEL-CHECK: wallclock ").nth(1).map(|v| v.trim().parse::<f64>()) {
                out.push(format!("wall clock {wc:.6} is {:.3} s behind the host", l.unix_secs() - wc));
            }
        }
        if let Some(l) = run.lines().find(|l| l.contains("KEEL-CHECK: kmsg-uptime ")) {
            let stamp =
                l.split_once('[').and_then(|(_, r)| r.split_once(']')).and_then(|(t, _)| t.trim().parse::<f64>().ok());
            let uptime = l.rsplit(' ').next().and_then(|u| u.trim().parse::<f64>().ok());
            if let (Some(stamp), Some(uptime)) = (stamp, uptime) {
                out.push(format!(
                    "/proc/uptime {uptime:.2} s vs sched_clock {stamp:.3} s (monotonic clock {:.3} s behind)",
                    stamp - uptime
                ));
            }
        }
        if out.is_empty() {
            "no clock diagnostics in the log".into()
        } else {
            out.join("; ")
        }
    }

    /// What init.sh counts as a clock warning (`grep -i -E "clocksource.*unstable|tsc.*unstable|clocksource.*skew"`).
    fn is_clock_warning(line: &str) -> bool {
        let l = line.to_ascii_lowercase();
        let after = |a: &str, b: &str| l.find(a).is_some_and(|i| l[i..].contains(b));
        after("clocksource", "unstable") || after("tsc", "unstable") || after("clocksource", "skew")
    }

    /// `reboot -f` in dom0 (SCHEDOP_shutdown reboot) reboots the machine; QEMU's -no-reboot turns that into an exit.
    #[test]
    fn guest_reboot_reboots_the_machine() {
        let vmlinuz = env_path("KEEL_VMLINUZ");
        let run = boot(
            "reboot",
            &format!("{XEN_LIKE} dom0_max_vcpus=1"),
            &vmlinuz,
            "console=hvc0 keel.init=reboot",
            2,
            BOOT_TIMEOUT,
        );
        run.assert_order(&[
            "KEEL-INIT: busybox init reached",
            "KEEL-INIT: rebooting",
            "(KEEL) domain 0 (Domain-0) shut down: reboot",
            "(KEEL) Rebooting",
        ]);
        run.assert_no_line("EXCEPTION").assert_no_line("Powering off");
        run.assert_success();
    }

    /// `dom0_mem=` beyond the machine (4 GiB asked of 2 GiB) is clamped as Xen clamps it, leaving Keel its
    /// reserve and the room to unpack the XZ kernel (it used to leave too little: "no 94 MiB of contiguous
    /// memory", and the machine did not boot): dom0 gets most of the memory and reaches busybox.
    #[test]
    fn dom0_mem_beyond_the_machine_still_boots() {
        let vmlinuz = env_path("KEEL_VMLINUZ");
        let run = boot(
            "dom0-mem",
            "console=com1 dom0_mem=4096M dom0_max_vcpus=1 dom0-platform=virtual",
            &vmlinuz,
            "console=hvc0 keel.init=reboot",
            2,
            BOOT_TIMEOUT,
        );
        run.assert_order(&["(KEEL) dom0: unpacked a ", "KEEL-INIT: busybox init reached", "(KEEL) Rebooting"]);
        let line = run.assert_line("(KEEL) dom0: ");
        let mib: u64 = run
            .lines()
            .find_map(|l| l.split("(KEEL) dom0: ").nth(1)?.split(" MiB, ").next()?.parse().ok())
            .unwrap_or_else(|| run.fail(&format!("no `dom0: <n> MiB, ...` line (first dom0 line: {line:?})")));
        if !(1536..2048).contains(&mib) {
            run.fail(&format!("dom0 got {mib} MiB of a 2 GiB machine with dom0_mem=4096M; want most of it"));
        }
        run.assert_no_line("EXCEPTION").assert_no_line("cannot build the initial domain");
        run.assert_success();
    }

    /// An ext4 image of 16 MiB holding `keel-check` (`bytes`) and `keel-check.sha256` (its SHA-256).
    fn ext4_image(name: &str, bytes: &[u8]) -> PathBuf {
        let img = temp(name, "img");
        disk::ext4_image(&img, 16, None, &disk::keel_check(bytes));
        img
    }

    /// `dom0-platform=host` on QEMU's q35 without an IOMMU (issue 15): dom0 gets the host's e820 shape with its RAM
    /// mapped 1:1 (and `swiotlb=force`), the host's ACPI tables behind Keel's RSDP, XSDT and MADT, an emulated
    /// IO-APIC whose lines Keel routes on the real one, the machine's I/O ports and PCI configuration, and device
    /// memory 1:1. Its ACPI interpreter runs, it lists the PCI functions QEMU made, takes the RTC's alarm
    /// interrupt, drives a virtio-blk and an AHCI disk (a checksummed file on each) and its e1000e NIC (a DHCP
    /// lease, a ping of the host, a TCP transfer from it), with interrupts: IO-APIC lines, MSI and MSI-X, all
    /// through Keel.
    #[test]
    fn dom0_drives_the_hosts_devices_on_q35() {
        drives_the_hosts_devices("host-platform", false);
    }

    /// The same with QEMU's Intel IOMMU: Keel drives it, so dom0 runs without `swiotlb=force` and every DMA of
    /// its disks and NIC goes through Keel's copy of dom0's map. (The virtio disk must negotiate
    /// VIRTIO_F_ACCESS_PLATFORM, or QEMU lets it bypass the IOMMU, as no real device can.)
    #[test]
    fn dom0_drives_the_hosts_devices_on_q35_with_vtd() {
        drives_the_hosts_devices("host-platform-vtd", true);
    }

    fn drives_the_hosts_devices(name: &str, vtd: bool) {
        let vmlinuz = env_path("KEEL_VMLINUZ");
        let initrd = env_path("KEEL_INITRD");
        let (virtio, ahci) = (ext4_image("virtio", &pattern(1 << 20, 7)), ext4_image("ahci", &pattern(3 << 19, 11)));
        let tcp_bytes = pattern(5 << 20, 13);
        let tcp_file = temp("tcp", "bin");
        std::fs::write(&tcp_file, &tcp_bytes).expect("write the TCP payload");
        let iommu: &[&str] = if vtd { &["-device", "intel-iommu,intremap=off"] } else { &[] };
        let virtio_device = if vtd {
            "virtio-blk-pci,drive=vd0,disable-legacy=on,iommu_platform=on"
        } else {
            "virtio-blk-pci,drive=vd0"
        };
        let args: Vec<String> = ["-machine", "q35"]
            .iter()
            .chain(iommu)
            .map(|a| a.to_string())
            .chain([
                "-drive".into(),
                format!("file={},if=none,id=vd0,format=raw", virtio.display()),
                "-device".into(),
                virtio_device.into(),
                "-drive".into(),
                format!("file={},if=none,id=sd0,format=raw", ahci.display()),
                "-device".into(),
                "ide-hd,drive=sd0,bus=ide.0".into(),
                "-nic".into(),
                format!("user,model=e1000e,guestfwd=tcp:10.0.2.100:1234-cmd:cat {}", tcp_file.display()),
            ])
            .collect();
        let run = iso::Dom0Boot {
            name,
            keel_cmdline: &format!("{XEN_LIKE} dom0_max_vcpus=2 dom0-platform=host"),
            kernel: &vmlinuz,
            kernel_cmdline: "console=hvc0 keel.init=platform",
            initrd: &initrd,
            smp: 2,
            timeout: CHECKS_TIMEOUT,
            retries: 1,
            qemu_args: &args,
        }
        .run();
        for f in [&virtio, &ahci, &tcp_file] {
            let _ = std::fs::remove_file(f);
        }
        run.assert_order(&[
            "(KEEL) dom0: emulated IO-APIC at 0xfec00000, GSI 0-23",
            "(KEEL) dom0: the host's platform: ",
            "ACPI: XSDT ",
            "PCI: Using configuration type 1 for base access",
            "ACPI: Interpreter enabled",
            "ACPI: Using IOAPIC for interrupt routing",
            "KEEL-PLATFORM: pci ",
            "KEEL-INIT: powering off",
        ]);
        // QEMU's q35 with these devices: the host bridge, VGA, the NIC, the two disks' controllers, LPC, SMBus.
        let pci = run.assert_parsed::<String>("KEEL-PLATFORM: pci ");
        for (what, ids) in [
            ("host bridge", "8086:29c0"),
            ("VGA", "1234:1111"),
            ("e1000e", "8086:10d3"),
            // Transitional, or modern only (1af4:1042) with the IOMMU.
            ("virtio-blk", if vtd { "1af4:1042" } else { "1af4:1001" }),
            ("LPC", "8086:2918"),
            ("AHCI", "8086:2922"),
            ("SMBus", "8086:2930"),
        ] {
            if !pci.split(',').any(|d| d.ends_with(&format!("={ids}"))) {
                run.fail(&format!("dom0 does not list the {what} ({ids}): {pci}"));
            }
        }
        run.assert_line("KEEL-PLATFORM: irq 9 IO-APIC 9-fasteoi acpi");
        // The RTC's alarm, two seconds ahead: its interrupt reaches dom0 through Keel (GSI 8, edge).
        run.assert_line("(KEEL) GSI 8: edge active high, forwarded to dom0 as vector ");
        let rtc: u64 = run.assert_parsed("KEEL-PLATFORM: rtc0 interrupts ");
        if rtc == 0 {
            run.fail("the RTC's alarm raised no interrupt in dom0");
        }
        // Each disk: mounted, the file read back by DMA into dom0's 1:1 RAM, its SHA-256 as written on the host.
        for (disk, driver) in [("vda", "virtio_blk"), ("sda", "sd")] {
            let line = run.assert_line(&format!("KEEL-PLATFORM: disk {disk} {driver} "));
            let want = line.split("want=").nth(1).and_then(|w| w.split_whitespace().next()).unwrap_or("");
            let got = line.split("got=").nth(1).and_then(|w| w.split_whitespace().next()).unwrap_or("");
            if want.len() != 64 || want != got {
                run.fail(&format!("dom0 read the file on {disk} wrongly: {line}"));
            }
        }
        // S20hostdevices took the NIC's lease, S30xencommons bridged it into xenbr0 (Xen's network-bridge): the
        // address and the default route moved to the bridge, and the ping and the transfer go through it.
        run.assert_line("KEEL-INIT: host drivers loaded");
        run.assert_line("KEEL-PLATFORM: nic ");
        run.assert_line("KEEL-PLATFORM: lease 10.0.2.15");
        run.assert_line("KEEL-PLATFORM: bridge eth0 addr=10.0.2.15/24 via=xenbr0");
        run.assert_line("KEEL-PLATFORM: ping 10.0.2.2 ok");
        run.assert_line(&format!("KEEL-PLATFORM: tcp got={}", sha256_hex(&tcp_bytes)));
        if run.count_lines_matching("KEEL-PLATFORM: interrupts ") == 0 {
            run.fail("no device interrupt line in dom0's /proc/interrupts");
        }
        // MSI (AHCI) and MSI-X (virtio, the e1000e) are mediated: Keel programs its own messages (in configuration
        // space, in the MSI-X table it keeps dom0 from mapping) and forwards dom0's vectors, and dom0 counts
        // message interrupts on the NIC's and the disk's queues.
        run.assert_line("(KEEL) PCI 00:1f.2: MSI forwarded to dom0 as vector ");
        run.assert_line(": MSI-X entry 0 forwarded to dom0 as vector ");
        let counted = |name: &str| {
            run.lines().filter(|l| l.starts_with("KEEL-PLATFORM: interrupts ") && l.contains("PCI-MSI")).any(|l| {
                l.contains(name)
                    && l.split_whitespace()
                        .skip(3)
                        .take_while(|w| *w != "PCI-MSI")
                        .any(|n| n.parse::<u64>().unwrap_or(0) > 0)
            })
        };
        for queue in ["ahci[0000:00:1f.2]", "eth0-rx-0", "virtio0-req."] {
            if !counted(queue) {
                run.fail(&format!("no message interrupt counted for {queue} in dom0"));
            }
        }
        if let Some(l) = run.lines().find(|l| l.contains("KEEL-INIT: insmod ") && l.contains(" failed")) {
            run.fail(&format!("a driver did not load: {l}"));
        }
        // The IOMMU, or the mode without one, as Keel says at boot; no DMA faulted.
        if vtd {
            run.assert_line("(KEEL) IOMMU: unit at 0xfed90000 translates every device's DMA through dom0's map");
            run.assert_no_line("dom0: no IOMMU in use").assert_no_line("IOMMU: DMA fault");
        } else {
            run.assert_line("(KEEL) dom0: no IOMMU in use: ");
        }
        run.assert_no_line("EXCEPTION").assert_no_line("crashed");
        run.assert_success();
    }

    /// A bzImage cut in half: Keel names the problem, gives up on dom0 and reboots, without faulting.
    #[test]
    fn hypervisor_survives_broken_kernel() {
        let whole = std::fs::read(env_path("KEEL_VMLINUZ")).expect("read KEEL_VMLINUZ");
        let broken = temp("half", "vmlinuz");
        std::fs::write(&broken, &whole[..whole.len() / 2]).expect("write the truncated kernel");
        let run = boot("broken", &format!("{XEN_LIKE} dom0_max_vcpus=1"), &broken, "console=hvc0", 2, BOOT_TIMEOUT);
        let _ = std::fs::remove_file(&broken);

        let line = run.assert_line("(KEEL) dom0: cannot build the initial domain: bzImage: ");
        let reason = &line[line.find("bzImage: ").unwrap_or(0)..];
        if reason.trim_end() == "bzImage:" {
            run.fail(&format!("the error does not say what is wrong: {line:?}"));
        }
        run.assert_order(&[
            "(KEEL) dom0: cannot build the initial domain: bzImage: ",
            "(KEEL) Could not set up the initial domain: rebooting",
            "(KEEL) Rebooting",
        ]);
        run.assert_no_line("EXCEPTION").assert_no_line("Linux version").assert_no_line("Powering off");
        if run.timed_out() {
            run.fail("QEMU did not exit: Keel should have reset the machine (-no-reboot makes that an exit)");
        }
        run.assert_success();
    }
}
