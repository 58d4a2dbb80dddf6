//! A real helper process is confined: seccomp filter on, no_new_privs, new namespaces, pid 1
//! inside, only `lo` (down), an empty read-only root, no capabilities, an unprivileged id.

mod common;

use std::fs;

use common::*;

fn status_field(pid: i32, field: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in status"))
        .trim()
        .to_string()
}

#[test]
fn helper_is_under_seccomp_filter_mode_with_no_new_privs() {
    let h = spawn(EMITTER).unwrap();
    assert_eq!(status_field(h.pid(), "Seccomp"), "2");
    assert_eq!(status_field(h.pid(), "Seccomp_filters"), "2");
    assert_eq!(status_field(h.pid(), "NoNewPrivs"), "1");
    assert_eq!(h.sandbox_level(), "wasm+ns+seccomp");
}

#[test]
fn helper_lives_in_its_own_user_pid_net_mnt_ipc_uts_namespaces() {
    let h = spawn(EMITTER).unwrap();
    for ns in ["user", "pid", "net", "mnt", "ipc", "uts"] {
        let ours = fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
        let theirs = fs::read_link(format!("/proc/{}/ns/{ns}", h.pid())).unwrap();
        assert_ne!(ours, theirs, "{ns} namespace is shared with the parent");
    }
}

#[test]
fn inside_the_helper_is_pid_1_and_sees_only_lo_down() {
    let h = spawn(EMITTER).unwrap();
    assert_eq!(h.ready().inner_pid, 1);
    assert_eq!(h.ready().interfaces, vec![("lo".to_string(), false)]);
}

#[test]
fn helper_runs_as_an_unprivileged_id_without_capabilities() {
    let h = spawn(EMITTER).unwrap();
    // Real, effective, saved and filesystem ids as the parent's namespace sees them.
    assert_eq!(status_field(h.pid(), "Uid"), "65534\t65534\t65534\t65534");
    assert_eq!(status_field(h.pid(), "Gid"), "65534\t65534\t65534\t65534");
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(status_field(h.pid(), caps), "0000000000000000", "{caps}");
    }
}

#[test]
fn helper_root_is_empty_and_read_only() {
    let h = spawn(EMITTER).unwrap();
    let root = format!("/proc/{}/root", h.pid());
    assert_eq!(fs::read_dir(&root).unwrap().count(), 0, "the helper's root is not empty");
    let mounts = fs::read_to_string(format!("/proc/{}/mounts", h.pid())).unwrap();
    let lines: Vec<&str> = mounts.lines().collect();
    assert_eq!(lines.len(), 1, "{mounts}");
    assert!(lines[0].starts_with("tmpfs / tmpfs ro,"), "{mounts}");
}

#[test]
fn helper_keeps_only_its_descriptors() {
    let h = spawn(EMITTER).unwrap();
    let mut fds: Vec<String> = fs::read_dir(format!("/proc/{}/fd", h.pid()))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    fds.sort();
    // 0/1 are /dev/null, 2 the inherited stderr, 3 the control socket; Wasmtime's module
    // image (memfd) may follow. Nothing else from the parent.
    for fd in &fds {
        let target = fs::read_link(format!("/proc/{}/fd/{fd}", h.pid())).unwrap();
        let t = target.to_string_lossy();
        let ok = match fd.as_str() {
            "0" | "1" => t == "/dev/null",
            "2" => true,
            "3" => t.starts_with("socket:"),
            _ => t.starts_with("/memfd:"),
        };
        assert!(ok, "unexpected fd {fd} -> {t}");
    }
}

#[test]
fn without_namespaces_the_helper_still_drops_root_and_runs_under_seccomp() {
    let mut opts = sluice_isolate::HelperOptions::new(helper_path());
    opts.args.namespaces = false;
    let mut h = sluice_isolate::Helper::spawn(&opts, &wat::parse_str(EMITTER).unwrap(), &options()).unwrap();
    assert_eq!(h.sandbox_level(), "wasm+seccomp");
    assert_eq!(status_field(h.pid(), "Seccomp"), "2");
    assert_eq!(status_field(h.pid(), "Uid"), "65534\t65534\t65534\t65534");
    assert_eq!(status_field(h.pid(), "CapEff"), "0000000000000000");
    let r = h.handle(&envelope("e", b"{}"), None).unwrap();
    assert_eq!(r.outcome, sluice_sandbox::Outcome::Ack);
}
