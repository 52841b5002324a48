//! Disk images and payloads for the tests where dom0 drives the machine's own devices: ext4 filesystems made
//! with the host's mkfs.ext4, files a wrong DMA would not reproduce by chance, and their SHA-256 by the host's
//! sha256sum.

use std::path::{Path, PathBuf};

/// A temporary path for test `test`'s file `name`.`ext`, unique to this process.
pub fn temp(test: &str, name: &str, ext: &str) -> PathBuf {
    std::env::temp_dir().join(format!("keel-{test}-{}-{name}.{ext}", std::process::id()))
}

/// Bytes that are not all the same (a file a wrong DMA would not reproduce by chance).
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// SHA-256 of `bytes` as hex, by the host's sha256sum.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().expect("sha256sum's input").write_all(bytes).expect("feed sha256sum");
    let out = child.wait_with_output().expect("sha256sum's output");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string()
}

/// The two files the checks in dom0 and in domUs read back: `keel-check` (`bytes`) and `keel-check.sha256`
/// (its SHA-256).
pub fn keel_check(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    vec![("keel-check".into(), bytes.to_vec()), ("keel-check.sha256".into(), sha256_hex(bytes).into_bytes())]
}

/// An ext4 image `img` of `mib` MiB holding `files`, labelled `label` if given, made with the host's mkfs.ext4.
pub fn ext4_image(img: &Path, mib: u64, label: Option<&str>, files: &[(String, Vec<u8>)]) {
    let dir = img.with_extension("d");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    for (name, bytes) in files {
        std::fs::write(dir.join(name), bytes).unwrap_or_else(|e| panic!("write {name}: {e}"));
    }
    let file = std::fs::File::create(img).unwrap_or_else(|e| panic!("create {}: {e}", img.display()));
    file.set_len(mib << 20).unwrap_or_else(|e| panic!("size {}: {e}", img.display()));
    drop(file);
    let mut mkfs = std::process::Command::new("mkfs.ext4");
    mkfs.args(["-q", "-F", "-d"]).arg(&dir);
    if let Some(label) = label {
        mkfs.args(["-L", label]);
    }
    let ok = mkfs.arg(img).status().is_ok_and(|s| s.success());
    let _ = std::fs::remove_dir_all(&dir);
    assert!(ok, "mkfs.ext4 -d {} {} failed", dir.display(), img.display());
}
