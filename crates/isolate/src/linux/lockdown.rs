//! Helper-side setup, run while the helper is still single-threaded (unsharing a user
//! namespace requires it). The order matters and is explained step by step; the whole
//! sequence is in `docs/isolation.md`.

use std::ffi::CStr;
use std::fs;
use std::io;

use crate::protocol::RING_FD;

/// The outside id the helper runs as when it starts as root ("nobody").
pub const UNPRIVILEGED_ID: u32 = 65534;

fn check(what: &str, rc: libc::c_long) -> Result<libc::c_long, String> {
    if rc < 0 {
        Err(format!("{what}: {}", io::Error::last_os_error()))
    } else {
        Ok(rc)
    }
}

fn check_i(what: &str, rc: libc::c_int) -> Result<libc::c_int, String> {
    check(what, rc as libc::c_long).map(|r| r as libc::c_int)
}

/// Closes every descriptor except stdin/stdout (`/dev/null` from the parent), stderr, the
/// control socket and the ring memfd, whatever the parent forgot to mark close-on-exec.
pub fn close_other_fds() -> Result<(), String> {
    let first = (RING_FD + 1) as libc::c_uint;
    check("close_range", unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, 0) }).map(drop)
}

/// Stage 0: drop to an unprivileged id and enter new user, mount, net, ipc, uts and pid
/// namespaces, mapping uid/gid 0 inside to that id outside.
/// Started as root: become nobody, so that even an escape lands on an unprivileged id (and,
/// with namespaces, the id map is an ordinary self-mapping). Returns the (uid, gid) now in force.
pub fn drop_root() -> Result<(u32, u32), String> {
    unsafe {
        if libc::geteuid() == 0 {
            check_i("setgroups", libc::setgroups(0, std::ptr::null()))?;
            check_i("setresgid", libc::setresgid(UNPRIVILEGED_ID, UNPRIVILEGED_ID, UNPRIVILEGED_ID))?;
            check_i("setresuid", libc::setresuid(UNPRIVILEGED_ID, UNPRIVILEGED_ID, UNPRIVILEGED_ID))?;
        }
        Ok((libc::geteuid(), libc::getegid()))
    }
}

pub fn enter_namespaces() -> Result<(), String> {
    unsafe {
        let (uid, gid) = drop_root()?;
        // Changing ids made us non-dumpable, which would make /proc/self/*_map root's.
        check_i("prctl(PR_SET_DUMPABLE)", libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0))?;
        let flags = libc::CLONE_NEWUSER
            | libc::CLONE_NEWNS
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS
            | libc::CLONE_NEWPID;
        check_i("unshare(user, mnt, net, ipc, uts, pid)", libc::unshare(flags))?;
        let write = |path: &str, text: String| fs::write(path, text).map_err(|e| format!("write {path}: {e}"));
        write("/proc/self/setgroups", "deny".into())?;
        write("/proc/self/uid_map", format!("0 {uid} 1"))?;
        write("/proc/self/gid_map", format!("0 {gid} 1"))?;
    }
    Ok(())
}

/// Forks the real helper as a sibling: `CLONE_PARENT` makes the parent process its parent, so
/// it can hold a pidfd, reap it and get SIGCHLD, and the helper is pid 1 of the new pid
/// namespace. Returns the child's pid in the caller (stage 0), 0 in the child.
pub fn fork_as_sibling() -> Result<libc::pid_t, String> {
    // Raw clone with no new stack behaves like fork; safe here because we are single-threaded.
    let flags = (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong;
    let rc = check("clone(CLONE_PARENT)", unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) })?;
    Ok(rc as libc::pid_t)
}

/// Dies with SIGKILL when the thread that started the helper goes away. Re-armed here because
/// id changes and fork clear it.
pub fn die_with_parent() -> Result<(), String> {
    check_i("prctl(PR_SET_PDEATHSIG)", unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) }).map(drop)
}

fn c(s: &str) -> std::ffi::CString {
    std::ffi::CString::new(s).unwrap()
}

/// An empty, read-only root: a tiny tmpfs made the root with `pivot_root`, the old root
/// detached. Nothing of the host's file system stays reachable.
pub fn empty_root() -> Result<(), String> {
    unsafe {
        let null = std::ptr::null::<libc::c_char>();
        check_i(
            "make mounts private",
            libc::mount(null, c("/").as_ptr(), null, libc::MS_REC | libc::MS_PRIVATE, std::ptr::null()),
        )?;
        let dir = c("/tmp");
        let opts = c("size=4k,nr_inodes=2,mode=0555");
        check_i(
            "mount tmpfs on /tmp",
            libc::mount(
                c("tmpfs").as_ptr(),
                dir.as_ptr(),
                c("tmpfs").as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                opts.as_ptr().cast(),
            ),
        )?;
        check_i("chdir new root", libc::chdir(dir.as_ptr()))?;
        // pivot_root(".", ".") stacks the old root under the new one; detaching it leaves
        // only the tmpfs (no put_old directory needed).
        let dot = c(".");
        check("pivot_root", libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()))?;
        check_i("detach old root", libc::umount2(dot.as_ptr(), libc::MNT_DETACH))?;
        check_i("chdir /", libc::chdir(c("/").as_ptr()))?;
        check_i(
            "remount root read-only",
            libc::mount(
                null,
                c("/").as_ptr(),
                null,
                libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            ),
        )?;
        let name = b"sluice-helper";
        check_i("sethostname", libc::sethostname(name.as_ptr().cast(), name.len()))?;
    }
    Ok(())
}

/// Without namespaces there is still no reason to keep a working directory on the host.
pub fn chdir_root() -> Result<(), String> {
    check_i("chdir /", unsafe { libc::chdir(c("/").as_ptr()) }).map(drop)
}

fn set_rlimit(what: &str, resource: libc::__rlimit_resource_t, value: u64) -> Result<(), String> {
    let lim = libc::rlimit { rlim_cur: value, rlim_max: value };
    check_i(what, unsafe { libc::setrlimit(resource, &lim) }).map(drop)
}

/// Limits set before the engine exists. RLIMIT_AS is deliberately absent: Wasmtime reserves
/// large virtual regions for linear memories and guard pages.
pub fn early_rlimits() -> Result<(), String> {
    set_rlimit("RLIMIT_CORE", libc::RLIMIT_CORE, 0)?;
    set_rlimit("RLIMIT_MEMLOCK", libc::RLIMIT_MEMLOCK, 0)?;
    set_rlimit("RLIMIT_MSGQUEUE", libc::RLIMIT_MSGQUEUE, 0)
}

/// After the engine and instances exist: no new descriptors beyond a small margin, and no
/// file growth (Wasmtime writes each module's memory image into a memfd while compiling).
pub fn late_rlimits() -> Result<(), String> {
    set_rlimit("RLIMIT_FSIZE", libc::RLIMIT_FSIZE, 0)?;
    set_rlimit("RLIMIT_NOFILE", libc::RLIMIT_NOFILE, 64)
}

/// no_new_privs, not dumpable (no core, no ptrace attach by same-uid processes), and every
/// capability dropped from the bounding, ambient, inheritable, permitted and effective sets.
pub fn drop_privileges() -> Result<(), String> {
    unsafe {
        check_i("PR_SET_NO_NEW_PRIVS", libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
        check_i("PR_SET_DUMPABLE", libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0))?;
        // Bounding set: EINVAL past the last capability the kernel knows.
        for cap in 0..64 {
            if libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) < 0 {
                break;
            }
            // Fails with EPERM without CAP_SETPCAP (no-namespace mode as a normal user): the
            // set is then already out of reach.
            libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
        libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let header = Header { version: 0x2008_0522, pid: 0 };
        let data = [Data { effective: 0, permitted: 0, inheritable: 0 }; 2];
        check("capset", libc::syscall(libc::SYS_capset, &header, data.as_ptr()))?;
    }
    Ok(())
}

/// The interfaces the helper can see and whether each is up (reported to the parent, so tests
/// check the network namespace from the inside).
pub fn interfaces() -> Vec<(String, bool)> {
    let mut out = Vec::new();
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        let mut p = list;
        while (*p).if_index != 0 {
            let name = CStr::from_ptr((*p).if_name);
            let mut req: libc::ifreq = std::mem::zeroed();
            let bytes = name.to_bytes();
            for (i, b) in bytes.iter().take(libc::IFNAMSIZ - 1).enumerate() {
                req.ifr_name[i] = *b as libc::c_char;
            }
            let up = sock >= 0
                && libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) == 0
                && (req.ifr_ifru.ifru_flags as libc::c_int & libc::IFF_UP) != 0;
            out.push((name.to_string_lossy().into_owned(), up));
            p = p.add(1);
        }
        libc::if_freenameindex(list);
        if sock >= 0 {
            libc::close(sock);
        }
    }
    out
}
