//! Links every guest with guest.ld (loaded at 1 MiB, Xen PVH note) when building for bare metal.
use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    println!("cargo:rerun-if-changed={}", dir.join("guest.ld").display());
    println!("cargo:rerun-if-changed={}", dir.join("src/entry.S").display());
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        let script = dir.join("guest.ld").canonicalize().unwrap();
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
        println!("cargo:rustc-link-arg-bins=-zmax-page-size=0x1000");
        println!("cargo:rustc-link-arg-bins=--no-pie");
    }
}
