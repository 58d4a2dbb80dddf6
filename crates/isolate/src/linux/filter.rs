//! The helper's seccomp-bpf allow-list (x86_64). Every allowed syscall and why is in
//! `docs/isolation.md`; keep the two in step.
//!
//! Two filters are installed. The first is the allow-list: anything not on it, any other
//! architecture (i386 through `int 0x80`) and any x32 number (bit 30 set, which matches no
//! rule) kills the whole process with SIGSYS. The second answers `clone3` with ENOSYS: its
//! flags live behind a pointer that BPF cannot read, and ENOSYS makes libc fall back to
//! `clone`, which the allow-list does not permit after lockdown. The kernel runs both filters
//! and takes the stricter verdict, so `clone3` is on the allow-list only to let ERRNO win.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op, SeccompCondition as Cond, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::protocol::CTL_FD;

/// Where the helper's diagnostics go (inherited stderr).
pub const STDERR_FD: i32 = 2;

fn arg_eq(index: u8, value: u64) -> Cond {
    Cond::new(index, Len::Qword, Op::Eq, value).expect("valid condition")
}

/// `arg & mask == 0`.
fn arg_clear(index: u8, mask: u64) -> Cond {
    Cond::new(index, Len::Qword, Op::MaskedEq(mask), 0).expect("valid condition")
}

fn rule(conds: Vec<Cond>) -> SeccompRule {
    SeccompRule::new(conds).expect("valid rule")
}

/// The allow-list as `(syscall, rules)`; an empty rule list allows any arguments.
pub fn allowed_rules() -> BTreeMap<i64, Vec<SeccompRule>> {
    let exec = libc::PROT_EXEC as u64;
    let any = Vec::new;
    let mut m: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    // The control socket is the only thing the helper reads; it writes to it and to stderr.
    m.insert(libc::SYS_read, vec![rule(vec![arg_eq(0, CTL_FD as u64)])]);
    m.insert(
        libc::SYS_write,
        vec![rule(vec![arg_eq(0, CTL_FD as u64)]), rule(vec![arg_eq(0, STDERR_FD as u64)])],
    );
    // Memory: malloc and Wasmtime's instance pool (mapping/resetting linear memories). Code was
    // compiled and published before lockdown, so nothing may become executable any more.
    m.insert(libc::SYS_mmap, vec![rule(vec![arg_clear(2, exec)])]);
    m.insert(libc::SYS_mprotect, vec![rule(vec![arg_clear(2, exec)])]);
    m.insert(libc::SYS_munmap, any());
    m.insert(libc::SYS_mremap, any());
    m.insert(libc::SYS_brk, any());
    m.insert(
        libc::SYS_madvise,
        vec![
            rule(vec![arg_eq(2, libc::MADV_DONTNEED as u64)]),
            rule(vec![arg_eq(2, libc::MADV_FREE as u64)]),
        ],
    );
    // Threads that already exist (the epoch ticker) sleep and synchronise.
    m.insert(libc::SYS_futex, any());
    m.insert(libc::SYS_clock_nanosleep, any());
    m.insert(libc::SYS_nanosleep, any());
    m.insert(libc::SYS_clock_gettime, any());
    m.insert(libc::SYS_sched_yield, any());
    // Wasm traps arrive as SIGSEGV/SIGILL and are handled by Wasmtime's signal handler.
    m.insert(libc::SYS_rt_sigreturn, any());
    m.insert(libc::SYS_rt_sigprocmask, any());
    m.insert(libc::SYS_sigaltstack, any());
    m.insert(libc::SYS_getrandom, any());
    m.insert(libc::SYS_exit, any());
    m.insert(libc::SYS_exit_group, any());
    // Present only so that the second filter's ENOSYS is the verdict (see the module docs).
    m.insert(libc::SYS_clone3, any());
    m
}

fn arch() -> TargetArch {
    TargetArch::x86_64
}

/// The allow-list program. `log_only` turns the default action into "log and allow": the
/// discovery mode used to find which syscalls Wasmtime needs (see docs/isolation.md).
pub fn allow_list_program(log_only: bool) -> Result<BpfProgram, seccompiler::BackendError> {
    let default = if log_only { SeccompAction::Log } else { SeccompAction::KillProcess };
    SeccompFilter::new(allowed_rules(), default, SeccompAction::Allow, arch())?.try_into()
}

/// `clone3` → ENOSYS, everything else passes to the allow-list.
pub fn clone3_program() -> Result<BpfProgram, seccompiler::BackendError> {
    let mut m = BTreeMap::new();
    m.insert(libc::SYS_clone3, Vec::new());
    SeccompFilter::new(m, SeccompAction::Allow, SeccompAction::Errno(libc::ENOSYS as u32), arch())?.try_into()
}

/// Installs both filters on every thread of the process (TSYNC). Sets no_new_privs first.
pub fn install(log_only: bool) -> Result<(), String> {
    let allow = allow_list_program(log_only).map_err(|e| format!("allow-list: {e}"))?;
    let clone3 = clone3_program().map_err(|e| format!("clone3 filter: {e}"))?;
    seccompiler::apply_filter_all_threads(&clone3).map_err(|e| format!("seccomp (clone3): {e}"))?;
    seccompiler::apply_filter_all_threads(&allow).map_err(|e| format!("seccomp (allow-list): {e}"))?;
    Ok(())
}
