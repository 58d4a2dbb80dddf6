//! Starting, using and dropping helpers (also ones that die) leaves no descriptor and no
//! child process behind. Alone in its test binary so no other test's helpers are counted.

mod common;

use std::fs;

use common::*;

fn open_fds() -> usize {
    fs::read_dir("/proc/self/fd").unwrap().count()
}

fn children() -> Vec<String> {
    let mut all = Vec::new();
    for task in fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path().join("children");
        let text = fs::read_to_string(path).unwrap_or_default();
        all.extend(text.split_whitespace().map(str::to_owned));
    }
    all
}

#[test]
fn no_descriptor_or_child_outlives_a_helper() {
    // One helper first so lazily opened files (e.g. /dev/null) are already counted.
    drop(spawn(EMITTER).unwrap());
    let fds = open_fds();
    for i in 0..10 {
        let mut h = spawn(EMITTER).unwrap();
        h.handle(&envelope("e", b"{}"), None).unwrap();
        if i % 2 == 0 {
            unsafe { libc::kill(h.pid(), libc::SIGKILL) };
            assert!(h.handle(&envelope("e", b"{}"), None).is_err());
        }
    }
    assert!(spawn(r#"(module)"#).is_err());
    assert_eq!(open_fds(), fds, "descriptors leaked");
    assert_eq!(children(), Vec::<String>::new(), "children left behind");
}
