//! End-to-end tests of `xm create`: config files, overrides, `-n` and `--json`, and its errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch directory, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("keel-xm-create-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        Dir(d)
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn xm_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xm")).args(args).current_dir(dir).output().expect("xm runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8")
}

fn config(kernel: &Path) -> String {
    format!(
        "# web server\nname = 'web'\nkernel = '{}'\nmemory = 256\nvcpus = 2\nextra = 'console=hvc0'\n\
         disk = [ 'phy:/dev/vg/web,xvda,w',\n         '/srv/data.img,,xvdb,ro', ]\nvif = [ '' ]\n",
        kernel.display()
    )
}

#[test]
fn dry_run_prints_the_defaulted_config() {
    let d = Dir::new("dry");
    let cfg = d.file("web.cfg", &config(Path::new("/boot/vmlinuz")));
    let out = xm_in(&d.0, &["create", "-n", cfg.to_str().unwrap(), "memory=512", "name=web2"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(text(&out.stderr), "");
    let listing = text(&out.stdout);
    for line in [
        "name = \"web2\"\n",
        "type = \"pvh\"\n",
        "kernel = \"/boot/vmlinuz\"\n",
        "cmdline = \"console=hvc0\"\n",
        "memory = 512\n",
        "maxmem = 512\n",
        "vcpus = 2\n",
        "maxvcpus = 2\n",
        "cpu_weight = 256\n",
        "cap = 0\n",
        "on_poweroff = \"destroy\"\n",
        "on_reboot = \"restart\"\n",
        "on_crash = \"destroy\"\n",
        "    \"format=raw, vdev=xvda, access=rw, target=/dev/vg/web\",\n",
        "    \"format=raw, vdev=xvdb, access=ro, target=/srv/data.img\",\n",
        "vif = [ \"devid=0, bridge=xenbr0, script=vif-bridge\" ]\n",
    ] {
        assert!(listing.contains(line), "{line:?} missing from:\n{listing}");
    }
    // The listing is itself a config file that reads back to the same configuration.
    let again = d.file("again", &listing);
    let out2 = xm_in(&d.0, &["create", "-n", again.to_str().unwrap()]);
    assert_eq!(text(&out2.stdout), listing);
}

#[test]
fn dry_run_as_json() {
    let d = Dir::new("json");
    let cfg = d.file("web.cfg", &config(Path::new("/boot/vmlinuz")));
    let out = xm_in(&d.0, &["create", "-n", "--json", cfg.to_str().unwrap(), "vcpus=1"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["name"], "web");
    assert_eq!(v["type"], "pvh");
    assert_eq!((v["memory"].as_u64(), v["maxmem"].as_u64(), v["vcpus"].as_u64()), (Some(256), Some(256), Some(1)));
    assert_eq!(v["uuid"], serde_json::Value::Null);
    assert_eq!(v["disk"][1]["access"], "ro");
    assert_eq!(v["disk"][0]["vbd"], 51712);
    assert_eq!(v["vif"][0]["bridge"], "xenbr0");
}

#[test]
fn a_bad_config_fails_naming_file_line_and_key() {
    let d = Dir::new("bad");
    let cfg = d.file("web.cfg", "name = 'web'\nkernel = '/boot/vmlinuz'\nmemory = \"lots\"\n");
    let out = xm_in(&d.0, &["create", "-n", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "xm: 'create' failed: {}:3: memory: expected a number of MiB from 1 to 16777216, found \"lots\"\n",
            cfg.display()
        )
    );
    assert_eq!(text(&out.stdout), "");

    // Asked for JSON, the failure is JSON too.
    let out = xm_in(&d.0, &["create", "-n", "--json", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(v["error"]
        .as_str()
        .unwrap()
        .ends_with(":3: memory: expected a number of MiB from 1 to 16777216, found \"lots\""));

    // An override is blamed by name.
    let cfg = d.file("ok.cfg", "name = 'web'\nkernel = '/boot/vmlinuz'\nmemory = 512\n");
    let out = xm_in(&d.0, &["create", "-n", cfg.to_str().unwrap(), "maxmem=128"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        "xm: 'create' failed: command line 'maxmem=128': maxmem: 128 MiB is less than memory (512 MiB): maxmem must be at least memory\n"
    );

    let out = xm_in(&d.0, &["create", "-n", cfg.to_str().unwrap(), "type=hvm"]);
    assert_eq!(
        text(&out.stderr),
        "xm: 'create' failed: command line 'type=hvm': type: HVM guests are not built yet in Keel (only type = \"pvh\" is)\n"
    );
}

#[test]
fn unknown_keys_warn_and_carry_on() {
    let d = Dir::new("warn");
    let cfg = d.file("web.cfg", "name = 'web'\nkernel = '/boot/vmlinuz'\nvnc = 1\n");
    let out = xm_in(&d.0, &["create", "-n", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stderr), format!("{}:3: warning: vnc: unknown key, ignored\n", cfg.display()));
    assert!(text(&out.stdout).starts_with("name = \"web\"\n"));
}

#[test]
fn bare_names_are_found_here_then_in_etc_xen() {
    let d = Dir::new("bare");
    d.file("web", "name = 'web'\nkernel = '/boot/vmlinuz'\n");
    let out = xm_in(&d.0, &["create", "-n", "web"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = xm_in(&d.0, &["create", "-n", "keel-no-such-guest"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with(
            "xm: 'create' failed: /etc/xen/keel-no-such-guest: cannot read the configuration file: No such file"
        ),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn without_dry_run_a_corrupt_kernel_is_refused_before_anything_is_created() {
    let d = Dir::new("start");
    let kernel = d.file("vmlinuz", "not really a kernel");
    let cfg = d.file("web.cfg", &config(&kernel));
    let out = xm_in(&d.0, &["create", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "xm: 'create' failed: {}: kernel: not a kernel image (magic 6e 6f 74 20): neither a bzImage nor an ELF \
             file\n",
            kernel.display()
        )
    );
    assert_eq!(text(&out.stdout), "");

    // A missing kernel is found first.
    let cfg = d.file("web.cfg", &config(&d.0.join("gone")));
    let out = xm_in(&d.0, &["create", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!(
            "xm: 'create' failed: {}:3: kernel: cannot read {}: No such file or directory (os error 2)\n",
            cfg.display(),
            d.0.join("gone").display()
        )
    );
}
