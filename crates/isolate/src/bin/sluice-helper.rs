//! `sluice-helper`: the isolated process that runs one deployment's WASM handler. Started by
//! `sluice_isolate::Helper` with its control socket on fd 3; not meant to be run by hand.

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn main() {
    sluice_isolate::helper::main()
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn main() {
    eprintln!("sluice-helper: process isolation needs Linux on x86_64");
    std::process::exit(1);
}
