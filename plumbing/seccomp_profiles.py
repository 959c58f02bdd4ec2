"""System-call allow-lists per child role: data only, read by :mod:`.seccomp`.

A role's list is the union of the groups it names. Names are the kernel's
(libseccomp resolves them per architecture; a name the architecture lacks,
such as ``poll`` or ``select`` on aarch64, is skipped). The lists were taken
from ``strace -f`` of the daemon running every role (simulated PHCs, a
loopback NTP peer, our server answering, metrics scraped, SIGHUP reload, log
reopen, a PHC reopen, clock-control restarts) and cover CPython 3.11-3.13,
pyzmq/libzmq and glibc on Debian 12; ``benchmarks/seccomp_trace.py`` repeats
that run and names any call a role makes outside its list. Calls that need an
argument check are in ``CONDITIONAL``; ``seccomp.py`` writes those rules.
"""

from __future__ import annotations

__all__ = ["CONDITIONAL", "DENIED_WITH_ERRNO", "GROUPS", "ROLES"]

GROUPS: dict[str, tuple[str, ...]] = {
    # The interpreter itself: memory, the allocator, thread-local storage, exit.
    "python": (
        "brk", "mmap", "munmap", "mremap", "mprotect", "madvise",
        "exit", "exit_group", "rseq", "set_robust_list", "set_tid_address",
        "futex", "futex_waitv", "sched_yield", "sched_getaffinity", "getrandom",
        # libzmq reads its threads' scheduling parameters (it sets them only if asked).
        "sched_getparam", "sched_getscheduler",
        "uname", "sysinfo", "getrlimit", "prlimit64",
        "getpid", "gettid", "getppid", "getuid", "geteuid", "getgid", "getegid",
        "getresuid", "getresgid", "getgroups",
    ),
    # Signals this process receives and handles (SIGTERM, SIGINT, the wake-up fd).
    # No kill: a worker must not signal another process of the same uid.
    "signals": ("rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "sigaltstack"),
    # Reading clocks and sleeping; none of these can set anything.
    "time": (
        "clock_gettime", "clock_getres", "gettimeofday", "time",
        "clock_nanosleep", "nanosleep",
    ),
    # Work on descriptors the process already holds (files, pipes, sockets).
    "fd_io": (
        "read", "write", "readv", "writev", "pread64", "pwrite64", "lseek",
        "close", "dup", "dup2", "dup3", "fcntl", "ioctl", "fstat", "fstatfs",
        "pipe2", "eventfd2",
    ),
    # Lazy imports and the odd stat: Python reads modules after the filter is in place.
    # `openat` itself is in CONDITIONAL (read-only for the network-parsing roles).
    "lookup": (
        "newfstatat", "statx", "stat", "lstat", "readlink", "readlinkat",
        "getdents64", "getcwd", "access", "faccessat", "faccessat2", "fstatfs",
    ),
    # Waiting: the ZeroMQ poller, selectors, libzmq's I/O thread (epoll).
    "wait": (
        "poll", "ppoll", "select", "pselect6",
        "epoll_create1", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2",
    ),
    # Traffic on sockets the process holds: the supervisor link (fds passed with
    # SCM_RIGHTS: a reopened log file, a reopened PHC), ZeroMQ's ipc:// stream,
    # the UDP sockets (kernel receive timestamps come with recvmsg/recvmmsg).
    "socket_io": (
        "recvfrom", "recvmsg", "recvmmsg", "sendto", "sendmsg", "sendmmsg",
        "getsockopt", "setsockopt", "getsockname", "getpeername", "shutdown",
    ),
    # ZeroMQ connects a new ipc:// stream after every restart of clock-control
    # (`socket` itself is in CONDITIONAL: AF_UNIX only, except for ntp and the resolver).
    "zmq_connect": ("connect",),
    # Binding listening sockets (clock-control's bus, state feed and control socket)
    # and replacing their stale socket files; the chmod of the control socket, bound
    # under a restrictive umask so it is never wider than intended in between.
    "zmq_bind": ("bind", "listen", "accept", "accept4", "unlink", "unlinkat", "chmod",
                 "fchmodat", "fchmod", "umask"),
    # The metrics exporter: accept on the socket the supervisor opened, or bind its own
    # (it retries every 10 s when the port was busy at start; ports >= 1024 only then).
    "tcp_listen": ("accept", "accept4", "bind", "listen"),
    # The NTS-KE worker accepts on the TCP listener the supervisor bound (no bind).
    "tcp_accept": ("accept", "accept4"),
    # NTP client sockets are unprivileged: the ntp worker makes its own UDP socket.
    "udp_client": ("bind", "connect"),
    # Atomic state and drift files: temporary file, fsync, rename, directory fsync;
    # the simulated clock's file is written the same way.
    "state_files": ("fsync", "fdatasync", "rename", "renameat", "renameat2", "unlink",
                    "unlinkat", "fchmod", "chmod", "fchmodat", "ftruncate", "mkdir",
                    "mkdirat"),
    # Steering: the one thing clock-control holds CAP_SYS_TIME for.
    "steer": ("clock_adjtime", "adjtimex", "clock_settime", "settimeofday"),
}

# Calls allowed only with some arguments (see seccomp.py for the exact rule):
#   clone   - only with CLONE_THREAD: libzmq's I/O and reaper threads, never a process.
#   openat  - "ro": read-only and without O_CREAT (imports, /sys, /proc); a write-open
#             fails with EACCES instead of killing (CPython's .pyc cache); "rw": any.
#   socket  - "unix": AF_UNIX only (ZeroMQ ipc://); "inet": AF_UNIX, AF_INET, AF_INET6.
#   tgkill  - only to this process's own threads (abort() raises SIGABRT that way).
#   prctl   - only PR_SET_NAME / PR_GET_NAME (libzmq names its threads).
#   sched_setscheduler - only SCHED_OTHER: libzmq resets each new thread's policy.
CONDITIONAL: dict[str, dict[str, str]] = {
    "clock-control": {"clone": "thread", "openat": "rw", "socket": "unix",
                      "tgkill": "self", "prctl": "name", "sched_setscheduler": "other"},
    "ptp": {"clone": "thread", "openat": "ro", "socket": "unix", "tgkill": "self",
            "prctl": "name", "sched_setscheduler": "other"},
    "ntp": {"clone": "thread", "openat": "ro", "socket": "inet", "tgkill": "self",
            "prctl": "name", "sched_setscheduler": "other"},
    "server": {"clone": "thread", "openat": "ro", "socket": "unix", "tgkill": "self",
               "prctl": "name", "sched_setscheduler": "other"},
    "sock": {"clone": "thread", "openat": "ro", "socket": "unix", "tgkill": "self",
             "prctl": "name", "sched_setscheduler": "other"},
    "pps": {"clone": "thread", "openat": "ro", "socket": "unix", "tgkill": "self",
            "prctl": "name", "sched_setscheduler": "other"},
    "nts-ke": {"clone": "thread", "openat": "ro", "socket": "unix", "tgkill": "self",
               "prctl": "name", "sched_setscheduler": "other"},
    "metrics": {"clone": "thread", "openat": "ro", "socket": "inet", "tgkill": "self",
                "prctl": "name", "sched_setscheduler": "other"},
    # getaddrinfo: reads /etc/hosts, nsswitch.conf, resolv.conf; UDP/TCP to the resolver.
    "resolver": {"openat": "ro", "socket": "inet", "tgkill": "self"},
}

# glibc tries clone3 first and falls back to clone on ENOSYS; clone3 takes its flags
# in a struct that a filter cannot read, so it is refused with ENOSYS instead of killing.
DENIED_WITH_ERRNO: tuple[str, ...] = ("clone3",)

_BASE = ("python", "signals", "time", "fd_io", "lookup", "wait", "socket_io", "zmq_connect")

ROLES: dict[str, tuple[str, ...]] = {
    "clock-control": (*_BASE, "zmq_bind", "state_files", "steer"),
    # Reading a PHC is ioctl (PTP_SYS_OFFSET*) and clock_gettime on its dynamic
    # clock id, both in _BASE; a reopened PHC comes from the supervisor over the link.
    "ptp": _BASE,
    "ntp": (*_BASE, "udp_client"),
    "server": _BASE,
    # Receives a feeder's datagrams on the socket the supervisor bound (recvfrom in
    # _BASE): no bind, no file creation.
    "sock": _BASE,
    # PPS_GETCAP/GETPARAMS/FETCH are ioctls on the fd the supervisor opened (in _BASE).
    "pps": _BASE,
    # TLS on connections accepted from the listener the supervisor bound: accept only.
    "nts-ke": (*_BASE, "tcp_accept"),
    "metrics": (*_BASE, "tcp_listen"),
    "resolver": ("python", "signals", "time", "fd_io", "lookup", "wait", "socket_io",
                 "udp_client"),
}
