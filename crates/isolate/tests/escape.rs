//! Escape-attempt suite (feature `escape-tests`, never in release builds): a locked-down
//! helper is asked to issue each forbidden syscall and must die with SIGSYS, reported by the
//! parent as a seccomp kill; allowed syscalls with their exact arguments must return, and the
//! same syscalls with slightly-off arguments must kill.
#![cfg(feature = "escape-tests")]

mod common;

use common::*;
use sluice_isolate::escape::Probe;
use sluice_isolate::{Helper, HelperOptions, IsolateError};

fn expect_killed(probe: Probe) {
    let mut h = spawn(EMITTER).unwrap();
    let parent = std::process::id() as u64;
    match h.escape(probe, parent) {
        Err(IsolateError::Died(exit)) => assert!(exit.is_seccomp_kill(), "{probe:?}: helper {exit}"),
        other => panic!("{probe:?} was not stopped: {other:?}"),
    }
    // Reaped with the same verdict; the parent (this test) is unharmed.
    assert!(h.wait(None).unwrap().is_seccomp_kill());
}

macro_rules! killed {
    ($($name:ident => $probe:ident,)*) => {$(
        #[test]
        fn $name() {
            expect_killed(Probe::$probe);
        }
    )*};
}

killed! {
    execve_is_killed => Execve,
    fork_is_killed => Fork,
    clone_with_new_namespaces_is_killed => CloneNewNamespaces,
    unshare_is_killed => Unshare,
    setns_is_killed => Setns,
    mount_is_killed => Mount,
    ptrace_is_killed => Ptrace,
    socket_is_killed => Socket,
    connect_on_the_control_socket_is_killed => Connect,
    open_of_a_host_file_is_killed => OpenHostFile,
    io_uring_setup_is_killed => IoUringSetup,
    bpf_is_killed => Bpf,
    perf_event_open_is_killed => PerfEventOpen,
    kill_of_the_parent_is_killed => KillParent,
    i386_int80_form_is_killed => I386Getpid,
    x32_form_is_killed => X32Getpid,
    seccomp_is_killed => Seccomp,
    getpid_is_not_on_the_list => Getpid,
    write_to_another_fd_is_killed => WriteStdout,
    read_from_another_fd_is_killed => ReadStdin,
    mmap_executable_is_killed => MmapExec,
    mprotect_executable_is_killed => MprotectExec,
    madvise_with_another_advice_is_killed => MadviseWillNeed,
}

#[test]
fn allowed_probes_return_and_the_helper_keeps_serving() {
    let mut h = spawn(EMITTER).unwrap();
    for probe in Probe::ALL.into_iter().filter(|p| p.allowed()) {
        let rc = h.escape(probe, 0).unwrap_or_else(|e| panic!("{probe:?} killed the helper: {e}"));
        match probe {
            Probe::Clone3 => assert_eq!(rc, -(libc::ENOSYS as i64), "clone3 must answer ENOSYS"),
            _ => assert!(rc >= 0, "{probe:?} returned {rc}"),
        }
    }
    let r = h.handle(&envelope("e", b"{}"), None).unwrap();
    assert_eq!(r.outcome, sluice_sandbox::Outcome::Ack);
}

#[test]
fn every_probe_is_covered() {
    let killed = Probe::ALL.iter().filter(|p| !p.allowed()).count();
    assert_eq!(killed, 23, "add the new probe to the killed! list");
}

#[test]
fn without_the_filter_the_same_probes_reach_the_kernel() {
    // Proves the kills above come from seccomp, not from a broken probe.
    let mut opts = HelperOptions::new(helper_path());
    opts.args.seccomp = false;
    let mut h = Helper::spawn(&opts, &wat::parse_str(EMITTER).unwrap(), &options()).unwrap();
    assert_eq!(h.sandbox_level(), "wasm");
    assert_eq!(h.escape(Probe::Getpid, 0).unwrap(), 1, "getpid inside the pid namespace");
    // Kernels built without CONFIG_X86_X32_ABI answer ENOSYS; the filter kills it either way.
    let x32 = h.escape(Probe::X32Getpid, 0).unwrap();
    assert!(x32 == 1 || x32 == -(libc::ENOSYS as i64), "x32 getpid returned {x32}");
    assert_eq!(h.escape(Probe::I386Getpid, 0).unwrap(), 1, "i386 getpid");
    assert!(h.escape(Probe::OpenHostFile, 0).unwrap() < 0, "the empty root has no /etc/passwd");
    assert!(h.escape(Probe::Socket, 0).unwrap() >= 0);
}

#[test]
fn the_supervisor_reports_a_seccomp_kill_and_serves_on_a_new_helper() {
    let mut opts = sluice_isolate::SupervisorOptions::new(HelperOptions::new(helper_path()));
    opts.max_kills = 1;
    let mut sup: sluice_isolate::Supervisor<u32> =
        sluice_isolate::Supervisor::start(opts, wat::parse_str(EMITTER).unwrap().into(), options()).unwrap();
    let first = sup.pid().unwrap();
    let mut out = Vec::new();
    assert_eq!(sup.escape(Probe::Execve, 0, &mut out), None);
    let stats = sup.stats().clone();
    assert_eq!((stats.deaths, stats.seccomp_kills), (1, 1));
    assert!(stats.last_exit.unwrap().is_seccomp_kill());
    assert_ne!(sup.pid().unwrap(), first);
    sup.submit(7, envelope("e", b"{}"), None).unwrap();
    while out.is_empty() {
        sup.poll(&mut out, std::time::Duration::from_millis(100));
    }
    assert!(matches!(&out[0], sluice_isolate::Completion::Done { item: 7, attempts: 1, .. }), "{:?}", out[0]);
}
