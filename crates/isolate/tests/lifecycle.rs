//! Helper death is noticed fast and reported with its cause; helpers die with the thread that
//! started them; every helper is reaped.

mod common;

use std::time::{Duration, Instant};

use common::*;
use sluice_isolate::{Exit, IsolateError};

#[test]
fn sigkill_is_detected_within_100ms_and_reported() {
    let mut h = spawn(EMITTER).unwrap();
    let killed = Instant::now();
    unsafe { libc::kill(h.pid(), libc::SIGKILL) };
    let exit = h.wait(Some(Duration::from_millis(100)));
    assert_eq!(exit, Some(Exit::Signal(libc::SIGKILL)), "not seen dead within 100 ms");
    assert!(killed.elapsed() < Duration::from_millis(100));
    match h.handle(&envelope("e", b"{}"), None) {
        Err(IsolateError::Died(Exit::Signal(s))) => assert_eq!(s, libc::SIGKILL),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_helper_killed_mid_stream_fails_the_call_with_its_exit() {
    let mut h = spawn(SPINNER).unwrap();
    let pid = h.pid();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(10));
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let r = h.handle(&envelope("e", b"{}"), Some(Instant::now() + Duration::from_millis(40)));
    killer.join().unwrap();
    assert!(matches!(r, Err(IsolateError::Died(Exit::Signal(9)))), "{r:?}");
}

#[test]
fn helper_dies_with_the_thread_that_started_it() {
    // Leak the handle so nothing but PR_SET_PDEATHSIG can end the helper.
    let pid = std::thread::spawn(|| {
        let h = spawn(EMITTER).unwrap();
        let pid = h.pid();
        std::mem::forget(h);
        pid
    })
    .join()
    .unwrap();
    let mut status = 0;
    let started = Instant::now();
    let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(rc, pid);
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL, "status {status:#x}");
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn closing_the_channel_ends_the_helper_cleanly() {
    let h = spawn(EMITTER).unwrap();
    let pid = h.pid();
    drop(h);
    // Drop reaped it: the pid is no longer our child.
    let rc = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
    assert_eq!(rc, -1);
}
