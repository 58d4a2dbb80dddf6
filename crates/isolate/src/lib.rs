//! sluice-isolate: runs a deployment's WASM handler in a separate helper process confined by
//! Linux namespaces and a seccomp-bpf allow-list (`docs/isolation.md`).
//!
//! - [`Helper`] (parent side): starts `sluice-helper`, loads a module, runs events through
//!   the control channel, notices and reaps the helper's death.
//! - The helper binary's logic lives in `helper` (setup, lockdown, event loop) with the
//!   pieces in `lockdown` (namespaces, empty root, limits) and `filter` (the allow-list).
//!
//! Linux on x86_64 only; elsewhere the crate is empty and callers report
//! `ERR_ISOLATION_UNAVAILABLE`.

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod linux {
    // Files live in src/linux/.

    #[cfg(feature = "escape-tests")]
    pub mod escape;
    pub mod filter;
    pub mod helper;
    pub mod lockdown;
    pub mod protocol;
    pub mod ring;
    pub mod spawn;
    pub mod supervisor;
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub use linux::*;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub use linux::spawn::{Exit, Helper, HelperOptions, IsolateError};
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub use linux::supervisor::{Completion, KillSwitch, Supervisor, SupervisorOptions, SupervisorStats};

mod executor;
pub use executor::{isolation_by_name, locate_helper, ProcessIsolation};

/// Whether this platform can run isolated handlers at all.
pub const SUPPORTED: bool = cfg!(all(target_os = "linux", target_arch = "x86_64"));
