//! Build script for the addon: what `napi_build::setup()` emits for a Linux GNU target, minus
//! one line.
//!
//! `setup()` asks Cargo to rerun on `NAPI_FORCE_BUILD_SLUICE_NODE`. `napi build` sets that
//! variable to the current time whenever its type-definition folder has no entry for this crate
//! yet (a new clone, a new CLI version), and leaves it unset on the next build. So the second
//! `napi build` in a fresh clone — `npm test` after `npm install` — saw the variable change and
//! recompiled the whole addon (minutes of every CI run) although no source had changed. A new
//! folder already changes `NAPI_TYPE_DEF_TMP_FOLDER`, which still reruns this script, so the
//! type definitions are regenerated whenever the folder is new.

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=NAPI_TYPE_DEF_TMP_FOLDER");
    println!("cargo::rerun-if-env-changed=NAPI_DEBUG_GENERATED_CODE");

    let target_env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_env == "gnu" && target_os == "linux" {
        // As napi-build does: keep the DSO loaded so pthread-key destructors never run after
        // it is unmapped (sourceware bugs 21031/21032, rust-lang/rust#134820).
        println!("cargo:rustc-link-arg=-Wl,-z,nodelete");
    }
}
