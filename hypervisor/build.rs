//! Links the hypervisor binary with Keel's linker script when building for bare metal.
use std::path::PathBuf;

fn main() {
    let boot = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../boot");
    for f in ["linker.ld", "entry.S", "ap_trampoline.S"] {
        println!("cargo:rerun-if-changed={}", boot.join(f).display());
    }
    // The compiler that built Keel, for `XENVER_compile_info` (`xm info`'s cc_compiler).
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    println!("cargo:rustc-env=KEEL_RUSTC_VERSION={}", version.trim());
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        let script = boot.join("linker.ld").canonicalize().unwrap();
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
        println!("cargo:rustc-link-arg-bins=-zmax-page-size=0x1000");
        println!("cargo:rustc-link-arg-bins=--no-pie");
    }
}
