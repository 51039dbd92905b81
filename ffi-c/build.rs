//! Gives libdeploykit.so a soname: `libdeploykit.so.MAJOR` (or `.0.MINOR` before 1.0,
//! where every minor release may break the ABI).

fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".into());
    let minor = std::env::var("CARGO_PKG_VERSION_MINOR").unwrap_or_else(|_| "0".into());
    let soname = if major == "0" { format!("libdeploykit.so.0.{minor}") } else { format!("libdeploykit.so.{major}") };
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os == "linux" || target_os.ends_with("bsd") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    }
    println!("cargo:rustc-env=DK_SONAME={soname}");
    println!("cargo:rerun-if-changed=build.rs");
}
