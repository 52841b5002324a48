//! Judging xtask/assets/checks/create.sh, which the domU test's boot runs: it builds domUs, so it runs where guests
//! stay off CPU 0 (`cpu0-guests=off`, the QEMU TCG defect of docs/testing.md).

use keel_tests::Run;

/// `xm create` of a tiny PVH domU from dom0 (xtask/assets/checks/create.sh): it starts, its own XS_WRITE on its
/// xenstore ring reaches dom0's xenstored (introduced: grant-mapped ring, bound event channel), its console_io
/// line shows in `xm dmesg`, `xm list` shows it, libxl's nodes are there (xenconsoled gave it a pty), a second
/// domain of the same name is refused; destroyed, it leaves no domain, no node and no page behind. A corrupt
/// kernel and too much memory fail with one line and leave nothing.
pub fn problems(run: &Run) -> Vec<String> {
    let mut problems = Vec::new();
    let line = |tag: &str| {
        run.lines().find(|l| l.contains(tag)).map(|l| l.split(tag).nth(1).unwrap_or("").trim_end().to_string())
    };
    let out = line("KEEL-CHECK: create-output ").unwrap_or_default();
    let Some(id) = out.strip_prefix("Started domain tiny (id=").and_then(|r| r.strip_suffix(')')) else {
        problems.push(format!("xm create of the tiny guest: {out:?}"));
        return problems;
    };
    // Bad configs: one line naming the cause (the corrupt kernel and too much memory below), nothing left behind.
    for (tag, needles) in [
        ("create-syntax", &["/tmp/broken.cfg:4", "vcpus"][..]),
        ("create-nokernel", &["/tmp/no-such-kernel"][..]),
        ("create-vcpus", &["vcpus", "1000"][..]),
    ] {
        let got = line(&format!("KEEL-CHECK: {tag} ")).unwrap_or_default();
        if !got.starts_with("xm: 'create' failed: ") || !needles.iter().all(|n| got.contains(n)) {
            problems.push(format!("{tag}: {got:?}, want an xm create error naming {needles:?}"));
        }
    }
    let mut want = |tag: &str, value: String| {
        let got = line(&format!("KEEL-CHECK: {tag} ")).unwrap_or_default();
        if got != value {
            problems.push(format!("{tag}: {got:?}, want {value:?}"));
        }
    };
    want("create-guest-xenstore", "ran".into());
    want("create-guest-console", "1".into());
    want("create-list", format!("tiny {id} 16 1"));
    want("create-nodes", "name=tiny target=16384 store-port=1 console-type=xenconsoled tty=1".into());
    want("create-duplicate", format!("xm: 'create' failed: domain name 'tiny' is already in use by domain {id}"));
    // `xm destroy` (xm/lifecycle.rs): the domain, its /local/domain/<id> and its /vm/<uuid> go, as with libxl.
    let destroy = line("KEEL-CHECK: create-xm-destroy ").unwrap_or_default();
    want("create-xm-destroy", if destroy.ends_with("rc=0") { destroy.clone() } else { "… rc=0".into() });
    want("create-destroyed", "listed=0 nodes=0 free-returned=yes".into());
    want("create-vm-node", "removed".into());
    // 50 more create/destroy cycles leave nothing: pages, domains, console ptys, xenstore nodes, dom0's event
    // channels to the guests.
    want("create-cycles", "ok=50/50 free-same=yes domains=0 ptys=0 nodes=0 ports=0 listed=0".into());
    want(
        "create-corrupt",
        "xm: 'create' failed: /tmp/keel-bad.elf: kernel: not a kernel image (magic 6e 6f 74 20): neither a \
         bzImage nor an ELF file"
            .into(),
    );
    want("create-leftover", "domains=0 free-same=yes".into());
    // Debian's stock kernel as a 2-vCPU PVH domU with a busybox initrd made in dom0 (this initramfs carries it,
    // xtask/src/xen.rs): its init's line reaches its console log through xenconsoled; `xm list` shows it; `xm destroy`
    // gives every page back.
    want("create-debian-list", "debian 256 2".into());
    want("create-debian-destroyed", "free-returned=yes".into());
    let deb = line("KEEL-CHECK: create-debian ").unwrap_or_default();
    if !deb.starts_with("KEEL-DOMU: init reached, 2 cpus ") {
        problems.push(format!(
            "Debian domU started by xm create: {deb:?} ({:?})",
            line("KEEL-CHECK: create-debian-output ")
        ));
    }
    let much = line("KEEL-CHECK: create-toomuch ").unwrap_or_default();
    if !much.starts_with("xm: 'create' failed: ") || !much.contains("memory") {
        problems.push(format!("xm create with too much memory: {much:?}"));
    }
    problems
}
