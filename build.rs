//! Build script of the PVH kernel: passes the linker script for bare-metal builds only.
//!
//! Host builds (`cargo test`, the host placeholder binary) must link normally, so
//! `-Tlinker.ld` is added only when the target OS is "none". `rustc-link-arg-bins` keeps the
//! script away from test and build-script links.
fn main() {
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rerun-if-changed=boot/pvh_entry.s");
    println!("cargo:rerun-if-changed=boot/xen_notes.s");
    println!("cargo:rerun-if-changed=boot/exception_stubs.s");
    println!("cargo:rerun-if-changed=build.rs");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os == "none" {
        let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
        println!("cargo:rustc-link-arg-bins=-T{manifest_dir}/linker.ld");
    }
}
