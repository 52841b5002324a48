//! Tests of a whole configuration: keys, defaults, errors with their file:line, overrides, JSON.

use super::*;

const FILE: &str = "/etc/xen/web";

fn overrides(args: &[&str]) -> Vec<(String, String)> {
    args.iter()
        .map(|a| {
            let (k, v) = a.split_once('=').expect("KEY=VALUE");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn read_with(text: &str, args: &[&str]) -> Loaded {
    from_text(FILE, text, &overrides(args)).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn read(text: &str) -> DomainConfig {
    let loaded = read_with(text, &[]);
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    loaded.config
}

fn error_with(text: &str, args: &[&str]) -> String {
    match from_text(FILE, text, &overrides(args)) {
        Ok(l) => panic!("{text:?} was accepted: {:?}", l.config),
        Err(e) => {
            assert!(!e.warning);
            e.to_string()
        }
    }
}

fn error(text: &str) -> String {
    error_with(text, &[])
}

const MINIMAL: &str = "name = 'web'\nkernel = '/boot/vmlinuz'\n";

#[test]
fn defaults_are_xls() {
    let c = read(MINIMAL);
    assert_eq!(c.name, "web");
    assert_eq!(c.uuid, None);
    assert_eq!(c.guest_type, GuestType::Pvh);
    assert_eq!((c.memory, c.maxmem), (32, 32));
    assert_eq!((c.vcpus, c.maxvcpus), (1, 1));
    assert_eq!(c.cpus, None);
    assert_eq!((c.cpu_weight, c.cap), (256, 0));
    assert_eq!((c.on_poweroff, c.on_reboot, c.on_crash), (Action::Destroy, Action::Restart, Action::Destroy));
    assert_eq!((c.kernel.as_str(), c.ramdisk.as_deref(), c.cmdline.as_str()), ("/boot/vmlinuz", None, ""));
    assert!(c.disk.is_empty() && c.vif.is_empty());
}

#[test]
fn memory_and_maxmem_default_to_each_other() {
    let c = read(&format!("{MINIMAL}memory = 512"));
    assert_eq!((c.memory, c.maxmem), (512, 512));
    let c = read(&format!("{MINIMAL}maxmem = 1024"));
    assert_eq!((c.memory, c.maxmem), (1024, 1024));
    let c = read(&format!("{MINIMAL}memory = 256\nmaxmem = 1024"));
    assert_eq!((c.memory, c.maxmem), (256, 1024));
    // Numbers as xl reads them: hex, octal, and in quotes.
    assert_eq!(read(&format!("{MINIMAL}memory = 0x100")).memory, 256);
    assert_eq!(read(&format!("{MINIMAL}memory = 0100")).memory, 64);
    assert_eq!(read(&format!("{MINIMAL}memory = \"128\"")).memory, 128);
}

#[test]
fn every_key() {
    let text = r#"
# A guest with everything set.
name = "web-1"
uuid = "3F2504E0-4F89-11D3-9A0C-0305E82C3301"
type = "pvh"
kernel = "/boot/vmlinuz"
ramdisk = "/boot/initrd.img"
root = "/dev/xvda1 ro"
extra = "console=hvc0"
memory = 512
maxmem = 1024
vcpus = 2
maxvcpus = 4
cpus = "0-3,^1"
cpu_weight = 512
cap = 50
on_poweroff = "preserve"
on_reboot = "rename-restart"
on_crash = "coredump-restart"
disk = [ 'phy:/dev/vg/web,xvda,w',
         '/srv/web-data.img,qcow2,xvdb,ro' ]
vif = [ 'mac=00:16:3e:00:00:01,bridge=xenbr1,ip=10.0.0.2', '' ]
"#;
    let c = read(text);
    assert_eq!(c.name, "web-1");
    assert_eq!(c.uuid.map(|u| u.to_string()).as_deref(), Some("3f2504e0-4f89-11d3-9a0c-0305e82c3301"));
    assert_eq!(c.ramdisk.as_deref(), Some("/boot/initrd.img"));
    assert_eq!(c.cmdline, "root=/dev/xvda1 ro console=hvc0");
    assert_eq!((c.memory, c.maxmem, c.vcpus, c.maxvcpus), (512, 1024, 2, 4));
    assert_eq!(
        c.cpus.as_ref().map(|c| match c {
            Cpus::All(l) => l.to_string(),
            Cpus::PerVcpu(_) => "per vcpu".into(),
        }),
        Some("0-3,^1".into())
    );
    assert_eq!((c.cpu_weight, c.cap), (512, 50));
    assert_eq!(
        (c.on_poweroff, c.on_reboot, c.on_crash),
        (Action::Preserve, Action::RenameRestart, Action::CoredumpRestart)
    );
    assert_eq!(c.disk.len(), 2);
    assert_eq!((c.disk[0].target.as_str(), c.disk[0].vdev.as_str()), ("/dev/vg/web", "xvda"));
    assert_eq!((c.disk[1].format, c.disk[1].access), (disk::Format::Qcow2, disk::Access::Ro));
    assert_eq!(c.vif.len(), 2);
    assert_eq!((c.vif[0].bridge.as_str(), c.vif[1].bridge.as_str(), c.vif[1].devid), ("xenbr1", "xenbr0", 1));
    assert_eq!(c.location("memory"), Some(&Location::File { path: FILE.into(), line: Some(10) }));
    assert_eq!(c.location("disk"), Some(&Location::File { path: FILE.into(), line: Some(20) }));
    assert_eq!(c.location("cap"), Some(&Location::File { path: FILE.into(), line: Some(16) }));
}

#[test]
fn the_command_line() {
    let cmd = |extra: &str| read_with(&format!("{MINIMAL}{extra}"), &[]);
    assert_eq!(cmd("root = '/dev/xvda1'").config.cmdline, "root=/dev/xvda1");
    assert_eq!(cmd("extra = 'quiet'").config.cmdline, "quiet");
    assert_eq!(cmd("extra = 'quiet'\nextra += ' console=hvc0'").config.cmdline, "quiet console=hvc0");
    let l = cmd("cmdline = 'console=hvc0'\nroot = '/dev/xvda1'");
    assert_eq!(l.config.cmdline, "console=hvc0");
    assert_eq!(l.warnings.len(), 1);
    assert_eq!(
        l.warnings[0].to_string(),
        "/etc/xen/web:3: warning: cmdline: root and extra are ignored in favour of cmdline"
    );
}

#[test]
fn event_actions() {
    for a in Action::ALL {
        let c = read(&format!("{MINIMAL}on_poweroff = '{0}'\non_reboot = '{0}'\non_crash = '{0}'", a.as_str()));
        assert_eq!((c.on_poweroff, c.on_reboot, c.on_crash), (a, a, a));
    }
    assert_eq!(
        error(&format!("{MINIMAL}on_crash = 'explode'")),
        "/etc/xen/web:3: on_crash: expected one of destroy, restart, preserve, rename-restart, coredump-destroy, coredump-restart, found \"explode\""
    );
    assert_eq!(
        error(&format!("{MINIMAL}on_reboot = 'soft-reset'")),
        "/etc/xen/web:3: on_reboot: expected one of destroy, restart, preserve, rename-restart, coredump-destroy, coredump-restart, found \"soft-reset\""
    );
}

#[test]
fn guest_types() {
    assert_eq!(read(&format!("{MINIMAL}type = 'pvh'")).guest_type, GuestType::Pvh);
    assert_eq!(
        error(&format!("{MINIMAL}type = 'hvm'")),
        "/etc/xen/web:3: type: HVM guests are not built yet in Keel (only type = \"pvh\" is)"
    );
    assert_eq!(
        error(&format!("{MINIMAL}type = 'pv'")),
        "/etc/xen/web:3: type: PV guests are not built yet in Keel (only type = \"pvh\" is)"
    );
    assert_eq!(
        error(&format!("{MINIMAL}type = 'xen'")),
        "/etc/xen/web:3: type: expected one of pvh, pv, hvm, found \"xen\""
    );
    assert_eq!(
        error(&format!("{MINIMAL}builder = 'hvm'")),
        "/etc/xen/web:3: builder: HVM guests are not built yet in Keel (only type = \"pvh\" is)"
    );
    assert_eq!(
        error(&format!("{MINIMAL}builder = 'generic'")),
        "/etc/xen/web:3: builder: PV guests are not built yet in Keel (only type = \"pvh\" is)"
    );
    assert_eq!(
        error(&format!("{MINIMAL}type = 'pvh'\nbuilder = 'hvm'")),
        "/etc/xen/web:4: builder: builder = \"hvm\" (hvm) contradicts type = \"pvh\""
    );
    assert_eq!(
        error(&format!("{MINIMAL}builder = 'linux'")),
        "/etc/xen/web:3: builder: expected one of generic, hvm, found \"linux\""
    );
}

#[test]
fn the_example_of_the_brief() {
    let text = "name = 'web'\nkernel = '/boot/vmlinuz'\n\n# sizes\n\nvcpus = 2\nmemory = \"lots\"\n";
    assert_eq!(error(text), "/etc/xen/web:7: memory: expected a number of MiB from 1 to 16777216, found \"lots\"");
}

#[test]
fn number_errors() {
    let e = |kv: &str| error(&format!("{MINIMAL}{kv}"));
    assert_eq!(e("memory = 0"), "/etc/xen/web:3: memory: expected a number of MiB from 1 to 16777216, found 0");
    assert_eq!(
        e("memory = [512]"),
        "/etc/xen/web:3: memory: expected a number of MiB from 1 to 16777216, found a list"
    );
    assert_eq!(e("memory = 12abc"), "/etc/xen/web:3: memory: expected a number of MiB from 1 to 16777216, found 12abc");
    assert_eq!(
        e("memory = 99999999999999999999999"),
        "/etc/xen/web:3: memory: expected a number of MiB from 1 to 16777216, found 99999999999999999999999"
    );
    assert_eq!(e("maxmem = '1G'"), "/etc/xen/web:3: maxmem: expected a number of MiB from 1 to 16777216, found \"1G\"");
    assert_eq!(e("vcpus = 0"), "/etc/xen/web:3: vcpus: expected a number of vCPUs from 1 to 128, found 0");
    assert_eq!(e("vcpus = 129"), "/etc/xen/web:3: vcpus: expected a number of vCPUs from 1 to 128, found 129");
    assert_eq!(e("maxvcpus = 'x'"), "/etc/xen/web:3: maxvcpus: expected a number of vCPUs from 1 to 128, found \"x\"");
    assert_eq!(e("cpu_weight = 0"), "/etc/xen/web:3: cpu_weight: expected a weight from 1 to 65535, found 0");
    assert_eq!(
        e("cap = 65536"),
        "/etc/xen/web:3: cap: expected a cap in percent of one CPU from 0 to 65535, found 65536"
    );
}

#[test]
fn semantic_errors() {
    let e = |kv: &str| error(&format!("{MINIMAL}{kv}"));
    assert_eq!(
        e("memory = 512\nmaxmem = 256"),
        "/etc/xen/web:4: maxmem: 256 MiB is less than memory (512 MiB): maxmem must be at least memory"
    );
    assert_eq!(
        e("vcpus = 4\nmaxvcpus = 2"),
        "/etc/xen/web:4: maxvcpus: 2 is less than vcpus (4): maxvcpus must be at least vcpus"
    );
    assert_eq!(
        e("uuid = '3f2504e0-4f89-11d3-9a0c-0305e82c330'"),
        "/etc/xen/web:3: uuid: expected a UUID like 01234567-89ab-cdef-0123-456789abcdef, found \"3f2504e0-4f89-11d3-9a0c-0305e82c330\""
    );
    assert!(e("uuid = '3f2504e0-4f89-11d3-9a0c-0305e82c330g'").starts_with("/etc/xen/web:3: uuid: expected a UUID"));
    assert!(e("uuid = '3f2504e04f8911d39a0c0305e82c3301'").starts_with("/etc/xen/web:3: uuid: expected a UUID"));
    assert_eq!(e("cpus = '2-1'"), "/etc/xen/web:3: cpus: \"2-1\" ends before it starts");
    assert_eq!(e("cpus = '0,^0'"), "/etc/xen/web:3: cpus: \"0,^0\" selects no CPU");
    assert_eq!(
        e("cpus = ['0', 'x']"),
        "/etc/xen/web:3: cpus: vCPU 1: \"x\" is not a CPU list item (N, N-M, all, node:N, each optionally after ^)"
    );
    assert_eq!(e("cpus = []"), "/etc/xen/web:3: cpus: expected a CPU list per vCPU, found an empty list");
    assert_eq!(
        e("disk = ['/a.img,,xvda', '/b.img,,xvdb', '/c.img,,d0']"),
        "/etc/xen/web:3: disk: entries 1 and 3 are both the guest's d0 (vdev \"xvda\" and \"d0\")"
    );
    // An entry of a list over several lines is blamed at its own line.
    assert_eq!(
        e("disk = ['/a.img,,xvda',\n        '/b.img,,xvda,colour=red']"),
        "/etc/xen/web:4: disk: entry 2 (\"/b.img,,xvda,colour=red\"): unknown parameter 'colour'"
    );
    assert_eq!(
        e("disk = [\n  '/a.img,,xvda',\n\n  '/b.img,,xvda',\n]"),
        "/etc/xen/web:6: disk: entries 1 and 2 are both the guest's xvda (vdev \"xvda\" and \"xvda\")"
    );
    assert_eq!(
        e("vif = [\n  'bridge=xenbr0',\n  'mac=nope',\n]"),
        "/etc/xen/web:5: vif: entry 2 (\"mac=nope\"): mac \"nope\" is not a MAC address (six hex bytes separated by ':', e.g. 00:16:3e:12:34:56)"
    );
    assert_eq!(
        e("vcpus = 2\ncpus = ['0',\n        '9-8']"),
        "/etc/xen/web:5: cpus: vCPU 1: \"9-8\" ends before it starts"
    );
    assert_eq!(
        error_with(MINIMAL, &["disk=['/a,,xvda', '/b,,xvdz9z']"]),
        "command line 'disk=['/a,,xvda', '/b,,xvdz9z']': disk: entry 2 (\"/b,,xvdz9z\"): vdev \"xvdz9z\" is not a virtual device (xvdN, sdN, hdN with a letter for N, optionally a partition number, or dNpP)"
    );
    assert_eq!(e("disk = '/a.img,,xvda'"), "/etc/xen/web:3: disk: expected a list of strings like disk = [ '/dev/vg/guest,raw,xvda,rw' ], found \"/a.img,,xvda\"");
    assert_eq!(
        e("vif = [['bridge=xenbr0']]"),
        "/etc/xen/web:3: vif: expected a list of strings like vif = [ 'bridge=xenbr0' ], found a list as entry 1"
    );
    assert_eq!(
        e("vif = ['mac=00:16:3e:00:00:01', 'mac=00:16:3E:00:00:01']"),
        "/etc/xen/web:3: vif: entries 1 and 2 have the same mac 00:16:3e:00:00:01"
    );
    assert_eq!(e("vif = ['devid=1', '']"), "/etc/xen/web:3: vif: entries 1 and 2 have the same devid 1");
    assert_eq!(e("vif = ['vifname=a', 'vifname=a']"), "/etc/xen/web:3: vif: entries 1 and 2 have the same vifname a");
    assert_eq!(e("vif = ['bridge']"), "/etc/xen/web:3: vif: entry 1 (\"bridge\"): \"bridge\" is not a setting (KEY=VALUE, or the flag trusted/untrusted)");
}

#[test]
fn names() {
    let e = |name: &str| error(&format!("name = '{name}'\nkernel = '/k'"));
    assert_eq!(e(""), "/etc/xen/web:1: name: a domain name cannot be empty");
    assert_eq!(
        e("a b"),
        "/etc/xen/web:1: name: ' ' is not allowed in a domain name (use ASCII letters, digits and any of - _ . : +)"
    );
    assert_eq!(
        e("123"),
        "/etc/xen/web:1: name: \"123\" cannot be a domain name: a name made only of digits reads as a domain id"
    );
    assert!(e(&"x".repeat(65)).ends_with("is 65 bytes long (at most 64)"));
    assert_eq!(error("kernel = '/k'"), "/etc/xen/web: name: missing: every domain needs a name (e.g. name = \"web\")");
    assert_eq!(error("name = ['web']"), "/etc/xen/web:1: name: expected a domain name, found a list");
    assert_eq!(read("name = 'a.b_c:d+e-f'\nkernel = '/k'").name, "a.b_c:d+e-f");
}

#[test]
fn kernel_is_required() {
    assert_eq!(
        error("name = 'web'"),
        "/etc/xen/web: kernel: missing: a PVH guest boots a kernel image (e.g. kernel = \"/boot/vmlinuz\")"
    );
    assert_eq!(error("name = 'web'\nkernel = ''"), "/etc/xen/web:2: kernel: expected a file name, found \"\"");
}

#[test]
fn syntax_errors_name_the_file() {
    assert_eq!(
        error("name = 'web'\nmemory = 512 MB\n"),
        "/etc/xen/web:2: memory: expected the end of the line or ';' after the value, found 'MB'"
    );
    assert_eq!(error("name = 'web'\n\nkernel = /boot/vmlinuz\n"), "/etc/xen/web:3: unexpected character '/'");
    assert_eq!(error("name = 'web\n"), "/etc/xen/web:1: unterminated string (no closing ' on this line)");
    assert_eq!(
        error("name = 'web'\ndisk = [ '/a,,xvda'\nkernel = '/k'\n"),
        "/etc/xen/web:3: disk: expected ',' or ']' in a list, found 'kernel'"
    );
}

#[test]
fn unknown_keys_are_warnings() {
    let l = read_with(&format!("{MINIMAL}pvshim = 1\nvnc = 1\n"), &["colour=blue"]);
    let w: Vec<String> = l.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        w,
        [
            "/etc/xen/web:3: warning: pvshim: unknown key, ignored",
            "/etc/xen/web:4: warning: vnc: unknown key, ignored",
            "command line 'colour=blue': warning: colour: unknown key, ignored",
        ]
    );
    assert_eq!(l.config.name, "web");
}

#[test]
fn the_last_setting_wins_and_append_appends() {
    let c = read(&format!("{MINIMAL}memory = 128\nmemory = 256"));
    assert_eq!(c.memory, 256);
    let c = read(&format!("{MINIMAL}disk = ['/a,,xvda']\ndisk += ['/b,,xvdb']"));
    assert_eq!(c.disk.iter().map(|d| d.vdev.as_str()).collect::<Vec<_>>(), ["xvda", "xvdb"]);
    // += on a key not set yet is a plain assignment, as in xl.
    assert_eq!(read(&format!("{MINIMAL}extra += 'quiet'")).cmdline, "quiet");
    assert_eq!(
        error(&format!("{MINIMAL}extra = 'a'\nextra += ['b']")),
        "/etc/xen/web:4: extra: cannot add a list to a string or a string to a list"
    );
    // xm's cpu_cap and xl's cap: the later one wins.
    assert_eq!(read(&format!("{MINIMAL}cpu_cap = 20")).cap, 20);
    assert_eq!(read(&format!("{MINIMAL}cap = 10\ncpu_cap = 20")).cap, 20);
    assert_eq!(read(&format!("{MINIMAL}cpu_cap = 20\ncap = 10")).cap, 10);
}

#[test]
fn overrides_apply_after_the_file() {
    let text = format!("{MINIMAL}memory = 512\nvcpus = 2\n");
    let l =
        read_with(&text, &["memory=1024", "name=web2", "extra=root=/dev/xvda1 ro", "disk=['/a,,xvda']", "vif=['']"]);
    let c = l.config;
    assert_eq!((c.memory, c.maxmem, c.vcpus, c.name.as_str()), (1024, 1024, 2, "web2"));
    assert_eq!(c.cmdline, "root=/dev/xvda1 ro");
    assert_eq!((c.disk.len(), c.vif.len()), (1, 1));
    assert_eq!(c.location("memory"), Some(&Location::Arg("memory=1024".into())));
    assert_eq!(
        error_with(&text, &["memory=lots"]),
        "command line 'memory=lots': memory: expected a number of MiB from 1 to 16777216, found \"lots\""
    );
    assert_eq!(
        error_with(&text, &["maxmem=256"]),
        "command line 'maxmem=256': maxmem: 256 MiB is less than memory (512 MiB): maxmem must be at least memory"
    );
    assert_eq!(
        error_with(&text, &["vif='bridge'"]),
        "command line 'vif='bridge'': vif: expected a list of strings like vif = [ 'bridge=xenbr0' ], found \"bridge\""
    );
    // A config can come wholly from the command line, as `xm create /dev/null ...`.
    let c = read_with("", &["name=ramdisk", "kernel=/boot/vmlinuz", "memory=64", "vcpus=1"]).config;
    assert_eq!((c.name.as_str(), c.memory), ("ramdisk", 64));
}

#[test]
fn per_vcpu_cpus() {
    let c = read(&format!("{MINIMAL}vcpus = 2\ncpus = ['2', '3-8,^5']"));
    match c.cpus {
        Some(Cpus::PerVcpu(l)) => assert_eq!(l.iter().map(|l| l.to_string()).collect::<Vec<_>>(), ["2", "3-8,^5"]),
        other => panic!("{other:?}"),
    }
    let l = read_with(&format!("{MINIMAL}cpus = ['0', '1', '2']"), &[]);
    assert_eq!(l.warnings[0].to_string(), "/etc/xen/web:3: warning: cpus: 3 lists for 1 vCPUs: the last 2 are ignored");
    assert!(matches!(read(&format!("{MINIMAL}cpus = 3")).cpus, Some(Cpus::All(_))));
}

#[test]
fn json_shape() {
    let c = read(&format!(
        "{MINIMAL}uuid = '3f2504e0-4f89-11d3-9a0c-0305e82c3301'\nmemory = 256\ncpus = 'all,^1'\nramdisk = '/boot/initrd'\nextra = 'quiet'\n\
         disk = ['/img,,xvda']\nvif = ['mac=00:16:3e:00:00:01']"
    ));
    let v = serde_json::to_value(&c).unwrap();
    let want = serde_json::json!({
        "name": "web",
        "uuid": "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        "type": "pvh",
        "kernel": "/boot/vmlinuz",
        "ramdisk": "/boot/initrd",
        "cmdline": "quiet",
        "memory": 256,
        "maxmem": 256,
        "vcpus": 1,
        "maxvcpus": 1,
        "cpus": "all,^1",
        "cpu_weight": 256,
        "cap": 0,
        "on_poweroff": "destroy",
        "on_reboot": "restart",
        "on_crash": "destroy",
        "disk": [{"target": "/img", "format": "raw", "vdev": "xvda", "vbd": 51712, "access": "rw", "cdrom": false}],
        "vif": [{"devid": 0, "mac": "00:16:3e:00:00:01", "bridge": "xenbr0", "script": "vif-bridge"}],
    });
    assert_eq!(v, want);
    let v = serde_json::to_value(read(MINIMAL)).unwrap();
    assert_eq!(
        (v["uuid"].clone(), v["ramdisk"].clone(), v["cpus"].clone()),
        (serde_json::Value::Null, serde_json::Value::Null, serde_json::Value::Null)
    );
    let v = serde_json::to_value(read(&format!("{MINIMAL}vcpus = 2\ncpus = ['0', '1-2']"))).unwrap();
    assert_eq!(v["cpus"], serde_json::json!(["0", "1-2"]));
}

#[test]
fn the_listing_reads_back_the_same() {
    let texts = [
        MINIMAL.to_owned(),
        format!(
            "{MINIMAL}uuid = '3f2504e0-4f89-11d3-9a0c-0305e82c3301'\nmemory = 256\nmaxmem = 512\nvcpus = 2\nmaxvcpus = 3\n\
             cpus = ['0', '1-2,^2']\ncpu_weight = 100\ncap = 5\nroot = '/dev/xvda1'\nextra = 'say \"hi\"'\nramdisk = '/r'\n\
             on_crash = 'preserve'\ndisk = ['/img,,xvda', 'tap:qcow2:/q,xvdb,r', ',hdc:cdrom,r']\n\
             vif = ['', 'mac=00:16:3e:00:00:02,ip=10.0.0.1,vifname=v1,mtu=1400,rate=1MB/s,trusted']"
        ),
        format!("{MINIMAL}cpus = 'node:0,^3'\ndisk = ['/x,,xvda']\n"),
    ];
    for text in texts {
        let c = read(&text);
        let listing = c.to_config_text();
        let again = from_text("listing", &listing, &[]).unwrap_or_else(|e| panic!("{listing}\n{e}"));
        assert!(again.warnings.is_empty(), "{:?}", again.warnings);
        let mut c2 = again.config;
        c2.locations = c.locations.clone();
        assert_eq!(c2, c, "{listing}");
    }
    let listing = read(MINIMAL).to_config_text();
    assert_eq!(
        listing,
        "name = \"web\"\ntype = \"pvh\"\nkernel = \"/boot/vmlinuz\"\ncmdline = \"\"\nmemory = 32\nmaxmem = 32\nvcpus = 1\n\
         maxvcpus = 1\ncpu_weight = 256\ncap = 0\non_poweroff = \"destroy\"\non_reboot = \"restart\"\non_crash = \"destroy\"\n\
         disk = [ ]\nvif = [ ]\n# uuid: none given; a fresh one is generated when the domain is created\n"
    );
}

#[test]
fn files() {
    let dir = std::env::temp_dir().join(format!("keel-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kernel = dir.join("vmlinuz");
    std::fs::write(&kernel, b"kernel").unwrap();
    let cfg = dir.join("web");
    std::fs::write(
        &cfg,
        format!("name = 'web'\nkernel = '{}'\nramdisk = '{}/initrd'\n", kernel.display(), dir.display()),
    )
    .unwrap();
    let loaded = load(&cfg, &[]).unwrap();
    assert_eq!(
        loaded.config.check_files().unwrap_err().to_string(),
        format!(
            "{}:3: ramdisk: cannot read {}/initrd: No such file or directory (os error 2)",
            cfg.display(),
            dir.display()
        )
    );
    let loaded = load(&cfg, &overrides(&["ramdisk=/"])).unwrap();
    assert_eq!(
        loaded.config.check_files().unwrap_err().to_string(),
        "command line 'ramdisk=/': ramdisk: cannot read /: not a regular file"
    );
    let loaded = load(&cfg, &overrides(&[&format!("ramdisk={}", kernel.display())])).unwrap();
    assert_eq!(loaded.config.check_files(), Ok(()));

    let missing = dir.join("nope");
    assert_eq!(
        load(&missing, &[]).unwrap_err().to_string(),
        format!("{}: cannot read the configuration file: No such file or directory (os error 2)", missing.display())
    );
    std::fs::write(&cfg, b"name = '\xff'\n").unwrap();
    assert_eq!(
        load(&cfg, &[]).unwrap_err().to_string(),
        format!("{}: the configuration file is not UTF-8 text (byte 8)", cfg.display())
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bare_names_are_looked_up_in_etc_xen() {
    assert_eq!(find_config(Path::new("keel-no-such-guest")), Path::new("/etc/xen/keel-no-such-guest"));
    assert_eq!(find_config(Path::new("./web")), Path::new("./web"));
    assert_eq!(find_config(Path::new("sub/web")), Path::new("sub/web"));
    assert_eq!(find_config(Path::new("/srv/web.cfg")), Path::new("/srv/web.cfg"));
    // A file of that name in the current directory is taken first, as xm's search path ".:/etc/xen".
    assert_eq!(find_config(Path::new("Cargo.toml")), Path::new("Cargo.toml"));
}

#[test]
fn c_numbers() {
    assert_eq!(parse_c_number("0"), Some(0));
    assert_eq!(parse_c_number("10"), Some(10));
    assert_eq!(parse_c_number("010"), Some(8));
    assert_eq!(parse_c_number("0x1f"), Some(31));
    for bad in ["", "0x", "08", "1a", "-1", " 1"] {
        assert_eq!(parse_c_number(bad), None, "{bad}");
    }
}

#[test]
fn the_example_config_is_valid() {
    let text = include_str!("../example-pvh");
    let l = from_text("/etc/xen/example-pvh", text, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    assert_eq!(l.config.name, "example-pvh");
    assert_eq!(l.config.guest_type, GuestType::Pvh);
}
