//! `isolation: 'process'` for the sandbox's deployments: a `RemoteFactory` that starts a
//! supervised helper per dispatcher, and the `RemoteExecutor` over it.

use std::path::PathBuf;

use std::sync::Arc;

use sluice_sandbox::{DeployError, Isolation, RemoteExecutor, RemoteFactory, SandboxOptions};

/// The deployment option by its public name: `in-process`, `process` (fails where isolation
/// is refused) or `process-if-available` (degrades, and the deployment's info says so).
pub fn isolation_by_name(name: &str) -> Option<Isolation> {
    let process = |degrade: bool| Isolation::Process { factory: Arc::new(ProcessIsolation { helper: None, degrade }), fallback: degrade };
    match name {
        "in-process" => Some(Isolation::InProcess),
        "process" => Some(process(false)),
        "process-if-available" => Some(process(true)),
        _ => None,
    }
}

/// Starts supervised `sluice-helper` processes.
#[derive(Clone, Debug, Default)]
pub struct ProcessIsolation {
    /// The helper binary; default: `$SLUICE_HELPER`, else `sluice-helper` next to the binary
    /// this code is linked into (the Node addon).
    pub helper: Option<PathBuf>,
    /// `'process-if-available'`: if the kernel refuses namespaces, run under seccomp alone
    /// (`wasm+seccomp`); the deployment falls back to in-process if even that fails.
    pub degrade: bool,
}

fn unavailable(message: impl Into<String>) -> DeployError {
    DeployError { code: "ERR_ISOLATION_UNAVAILABLE", message: message.into() }
}

/// `sluice-helper` beside the shared object or executable containing this function.
pub fn locate_helper() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SLUICE_HELPER") {
        return Some(PathBuf::from(p));
    }
    #[cfg(unix)]
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(locate_helper as *const libc::c_void, &mut info) != 0 && !info.dli_fname.is_null() {
            let me = PathBuf::from(std::ffi::CStr::from_ptr(info.dli_fname).to_string_lossy().into_owned());
            let candidate = std::fs::canonicalize(&me).unwrap_or(me).parent()?.join("sluice-helper");
            return candidate.is_file().then_some(candidate);
        }
    }
    None
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod linux {
    use std::time::{Duration, Instant};

    use sluice_sandbox::{ErrorKind, RemoteInfo, RemoteOutcome};

    use super::*;
    use crate::{Completion, HelperOptions, IsolateError, Supervisor, SupervisorOptions};

    fn deploy_error(e: IsolateError) -> DeployError {
        let code = match &e {
            // No helper binary (or it cannot be executed) is a missing wall, like a kernel refusal.
            IsolateError::Unavailable { .. } | IsolateError::Spawn(_) => "ERR_ISOLATION_UNAVAILABLE",
            IsolateError::Load { code, .. } => ErrorKind::ALL.iter().map(|k| k.code()).find(|c| c == code).unwrap_or("ERR_HELPER"),
            _ => "ERR_HELPER",
        };
        let message = match e {
            IsolateError::Load { message, .. } => message,
            other => other.to_string(),
        };
        DeployError { code, message }
    }

    impl RemoteFactory for ProcessIsolation {
        fn start(&self, module: &[u8], options: &SandboxOptions) -> Result<Box<dyn RemoteExecutor>, DeployError> {
            let path = self.helper.clone().or_else(locate_helper).ok_or_else(|| unavailable("sluice-helper was not found next to the addon (set SLUICE_HELPER)"))?;
            let mut opts = SupervisorOptions::new(HelperOptions::new(path));
            match Supervisor::start(opts.clone(), module.into(), options.clone()) {
                Ok(s) => Ok(Box::new(Supervised(s, Vec::new()))),
                Err(IsolateError::Unavailable { .. }) if self.degrade => {
                    opts.helper.args.namespaces = false;
                    Supervisor::start(opts, module.into(), options.clone()).map(|s| Box::new(Supervised(s, Vec::new())) as _).map_err(deploy_error)
                }
                Err(e) => Err(deploy_error(e)),
            }
        }
    }

    /// The supervisor, and its completions buffer (reused: `poll` runs once per dispatcher loop).
    struct Supervised(Supervisor<u64>, Vec<Completion<u64>>);

    impl RemoteExecutor for Supervised {
        fn submit(&mut self, token: u64, envelope: Vec<u8>, deadline: Option<Instant>) -> Result<(), Vec<u8>> {
            self.0.submit(token, envelope, deadline).map_err(|(_, env)| env)
        }

        fn poll(&mut self, out: &mut Vec<(u64, RemoteOutcome)>, wait: Duration) {
            self.0.poll(&mut self.1, wait);
            out.extend(self.1.drain(..).map(|c| match c {
                Completion::Done { item, result, .. } => (item, RemoteOutcome::Done(result)),
                Completion::GaveUp { item, reason, .. } => (item, RemoteOutcome::GaveUp(reason)),
            }));
        }

        fn in_flight(&self) -> usize {
            self.0.in_flight()
        }

        fn close(&mut self) {
            self.0.close();
        }

        fn recycle(&mut self, spare: &mut Vec<Vec<u8>>) {
            self.0.take_spare(spare);
        }

        fn info(&self) -> RemoteInfo {
            let s = self.0.stats();
            RemoteInfo {
                sandbox_level: self.0.helper().map_or("wasm", |h| h.sandbox_level()),
                pid: self.0.pid(),
                helpers_started: s.helpers_started,
                deaths: s.deaths,
                seccomp_kills: s.seccomp_kills,
                redelivered: s.redelivered,
                gave_up: s.gave_up,
                start_time_us: s.start_time.as_micros() as u64,
                last_exit: s.last_exit.map(|e| e.to_string()),
                last_error: s.last_error.clone(),
            }
        }
    }
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
impl RemoteFactory for ProcessIsolation {
    fn start(&self, _module: &[u8], _options: &SandboxOptions) -> Result<Box<dyn RemoteExecutor>, DeployError> {
        Err(unavailable("process isolation needs Linux on x86_64"))
    }
}
