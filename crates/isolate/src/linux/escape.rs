//! Test-only (feature `escape-tests`): forbidden and borderline syscalls a test asks a
//! locked-down helper to issue. The forbidden ones must kill the helper with SIGSYS; the
//! allowed ones (with their exact arguments) must return. Never built into release helpers.

/// One probe. The discriminant travels in the `ESCAPE` frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Probe {
    Execve = 0,
    Fork = 1,
    CloneNewNamespaces = 2,
    Unshare = 3,
    Setns = 4,
    Mount = 5,
    Ptrace = 6,
    Socket = 7,
    Connect = 8,
    OpenHostFile = 9,
    IoUringSetup = 10,
    Bpf = 11,
    PerfEventOpen = 12,
    /// `kill(arg, SIGKILL)`: the test passes the parent's pid.
    KillParent = 13,
    /// getpid through `int 0x80` (the i386 entry point).
    I386Getpid = 14,
    /// getpid with the x32 bit set.
    X32Getpid = 15,
    /// Must survive: answered with ENOSYS.
    Clone3 = 16,
    /// `write` is allowed on fds 2 and 3 only.
    WriteStdout = 17,
    /// `read` is allowed on fd 3 only.
    ReadStdin = 18,
    MmapExec = 19,
    MprotectExec = 20,
    /// `madvise` is allowed with MADV_DONTNEED / MADV_FREE only.
    MadviseWillNeed = 21,
    /// Must survive.
    MmapReadWrite = 22,
    /// Must survive.
    WriteStderr = 23,
    /// Must survive.
    MadviseDontNeed = 24,
    /// Installing another filter (e.g. to answer SIGSYS-worthy calls itself).
    Seccomp = 25,
    /// `getpid` is not needed after lockdown and is not allowed.
    Getpid = 26,
}

impl Probe {
    pub const ALL: [Probe; 27] = [
        Probe::Execve,
        Probe::Fork,
        Probe::CloneNewNamespaces,
        Probe::Unshare,
        Probe::Setns,
        Probe::Mount,
        Probe::Ptrace,
        Probe::Socket,
        Probe::Connect,
        Probe::OpenHostFile,
        Probe::IoUringSetup,
        Probe::Bpf,
        Probe::PerfEventOpen,
        Probe::KillParent,
        Probe::I386Getpid,
        Probe::X32Getpid,
        Probe::Clone3,
        Probe::WriteStdout,
        Probe::ReadStdin,
        Probe::MmapExec,
        Probe::MprotectExec,
        Probe::MadviseWillNeed,
        Probe::MmapReadWrite,
        Probe::WriteStderr,
        Probe::MadviseDontNeed,
        Probe::Seccomp,
        Probe::Getpid,
    ];

    pub fn from_u32(v: u32) -> Option<Probe> {
        Probe::ALL.get(v as usize).copied()
    }

    /// Whether the locked-down helper must survive this probe.
    pub fn allowed(self) -> bool {
        matches!(self, Probe::Clone3 | Probe::MmapReadWrite | Probe::WriteStderr | Probe::MadviseDontNeed)
    }
}

/// Issues the probe's syscall; returns the raw result (`-errno` on failure) if still alive.
pub fn run(probe: Probe, arg: u64) -> i64 {
    use libc::*;
    let sys = |r: c_long| -> i64 {
        if r < 0 {
            -(std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as i64)
        } else {
            r as i64
        }
    };
    let zeros = [0u8; 256];
    unsafe {
        match probe {
            Probe::Execve => {
                let path = b"/bin/sh\0";
                let argv = [path.as_ptr(), std::ptr::null()];
                sys(syscall(SYS_execve, path.as_ptr(), argv.as_ptr(), std::ptr::null::<u8>()))
            }
            Probe::Fork => sys(syscall(SYS_clone, SIGCHLD as c_ulong, 0usize, 0usize, 0usize, 0usize)),
            Probe::CloneNewNamespaces => sys(syscall(
                SYS_clone,
                (CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWNS | SIGCHLD) as c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )),
            Probe::Unshare => sys(syscall(SYS_unshare, CLONE_NEWNET)),
            Probe::Setns => sys(syscall(SYS_setns, 3, 0)),
            Probe::Mount => {
                let t = b"tmpfs\0";
                sys(syscall(SYS_mount, t.as_ptr(), b"/\0".as_ptr(), t.as_ptr(), 0usize, 0usize))
            }
            Probe::Ptrace => sys(syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0)),
            Probe::Socket => sys(syscall(SYS_socket, AF_INET, SOCK_STREAM, 0)),
            Probe::Connect => {
                let mut addr: sockaddr_in = std::mem::zeroed();
                addr.sin_family = AF_INET as sa_family_t;
                addr.sin_port = 80u16.to_be();
                addr.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
                sys(syscall(SYS_connect, 3, &addr as *const sockaddr_in, std::mem::size_of::<sockaddr_in>()))
            }
            Probe::OpenHostFile => sys(syscall(SYS_openat, AT_FDCWD, b"/etc/passwd\0".as_ptr(), O_RDONLY)),
            Probe::IoUringSetup => sys(syscall(SYS_io_uring_setup, 1, zeros.as_ptr())),
            Probe::Bpf => sys(syscall(SYS_bpf, 5 /* BPF_PROG_LOAD */, zeros.as_ptr(), 128)),
            Probe::PerfEventOpen => sys(syscall(SYS_perf_event_open, zeros.as_ptr(), 0, -1, -1, 0)),
            Probe::KillParent => sys(syscall(SYS_kill, arg as pid_t, SIGKILL)),
            Probe::I386Getpid => {
                let mut ret: i64 = 20; // __NR_getpid on i386
                std::arch::asm!("int 0x80", inout("rax") ret, options(nostack));
                ret
            }
            Probe::X32Getpid => sys(syscall(0x4000_0000 | SYS_getpid)),
            Probe::Clone3 => sys(syscall(SYS_clone3, zeros.as_ptr(), 88usize)),
            Probe::WriteStdout => sys(syscall(SYS_write, 1, b"x".as_ptr(), 1usize)),
            Probe::ReadStdin => sys(syscall(SYS_read, 0, zeros.as_ptr(), 1usize)),
            Probe::MmapExec => sys(syscall(SYS_mmap, 0usize, 4096usize, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)),
            Probe::MprotectExec => {
                let p = syscall(SYS_mmap, 0usize, 4096usize, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                sys(syscall(SYS_mprotect, p, 4096usize, PROT_READ | PROT_EXEC))
            }
            Probe::MadviseWillNeed => {
                let p = syscall(SYS_mmap, 0usize, 4096usize, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                sys(syscall(SYS_madvise, p, 4096usize, MADV_WILLNEED))
            }
            Probe::MmapReadWrite => {
                let p = syscall(SYS_mmap, 0usize, 4096usize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                sys(if p < 0 { p } else { syscall(SYS_munmap, p, 4096usize) })
            }
            Probe::WriteStderr => sys(syscall(SYS_write, 2, b"".as_ptr(), 0usize)),
            Probe::MadviseDontNeed => {
                let p = syscall(SYS_mmap, 0usize, 4096usize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                sys(syscall(SYS_madvise, p, 4096usize, MADV_DONTNEED))
            }
            Probe::Seccomp => sys(syscall(SYS_seccomp, SECCOMP_SET_MODE_STRICT, 0, 0)),
            Probe::Getpid => sys(syscall(SYS_getpid)),
        }
    }
}
