//! Gives libdeploykit.so a soname: `libdeploykit.so.MAJOR` (`libdeploykit.so.0`
//! for every 0.x release), the name a Debian package ships the library under
//! (`libdeploykit0`). ffi-c/build.sh installs `libdeploykit.so.MAJOR.MINOR.PATCH`
//! with the soname link and `libdeploykit.so` pointing at it.

fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").unwrap_or_else(|_| "0".into());
    let soname = format!("libdeploykit.so.{major}");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os == "linux" || target_os.ends_with("bsd") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    }
    println!("cargo:rustc-env=DK_SONAME={soname}");
    println!("cargo:rerun-if-changed=build.rs");
}
