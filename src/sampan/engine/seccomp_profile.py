"""sampan's default seccomp profile: an allowlist of the system calls containers need.

Everything not listed fails with EPERM. Left out, as in Docker's default profile: kernel
modules, kexec, reboot, swap, mounting and namespaces (unless CAP_SYS_ADMIN), bpf and perf,
the kernel keyring, ptrace (unless CAP_SYS_PTRACE), setting the clock (unless CAP_SYS_TIME),
acct, quotactl, open_by_handle_at, userfaultfd, iopl/ioperm, syslog, lookup_dcookie, vm86,
``clone`` with namespace flags and ``clone3`` (ENOSYS, so libc falls back to ``clone``).
Capabilities widen the profile the way Docker's does (``profile(caps)``).
"""
from __future__ import annotations

import json
import platform
from typing import Any, Iterable

ENOSYS = 38

# ---------------------------------------------------------------- always allowed, by theme
_FILES = """
access faccessat faccessat2 chdir fchdir chmod fchmod fchmodat fchmodat2 chown fchown fchownat lchown
chown32 fchown32 lchown32 close close_range copy_file_range creat dup dup2 dup3 fadvise64 fadvise64_64
fallocate fcntl fcntl64 fdatasync flock fstat fstat64 fstatat64 fstatfs fstatfs64 fsync ftruncate
ftruncate64 getcwd getdents getdents64 lseek _llseek link linkat lstat lstat64 mkdir mkdirat mknod
mknodat newfstatat open openat openat2 pread64 preadv preadv2 pwrite64 pwritev pwritev2 read readahead
readlink readlinkat readv rename renameat renameat2 rmdir sendfile sendfile64 splice stat stat64 statfs
statfs64 statx symlink symlinkat sync sync_file_range syncfs tee truncate truncate64 umask unlink
unlinkat utime utimensat utimensat_time64 utimes futimesat vmsplice write writev
getxattr lgetxattr fgetxattr listxattr llistxattr flistxattr setxattr lsetxattr fsetxattr
removexattr lremovexattr fremovexattr chroot
inotify_init inotify_init1 inotify_add_watch inotify_rm_watch fanotify_mark
io_setup io_destroy io_getevents io_pgetevents io_pgetevents_time64 io_submit io_cancel
io_uring_setup io_uring_enter io_uring_register memfd_create memfd_secret
"""
_PROCESS = """
arch_prctl brk capget capset clone exit exit_group execve execveat fork vfork getpid getppid getpgid
getpgrp getsid setsid setpgid gettid getuid getuid32 geteuid geteuid32 getgid getgid32 getegid getegid32
getgroups getgroups32 setgroups setgroups32 getresuid getresuid32 getresgid getresgid32 setuid setuid32
setgid setgid32 setreuid setreuid32 setregid setregid32 setresuid setresuid32 setresgid setresgid32
setfsuid setfsuid32 setfsgid setfsgid32 getpriority setpriority getrlimit ugetrlimit setrlimit prlimit64
getrusage kill tkill tgkill pidfd_open pidfd_send_signal prctl restart_syscall rseq
sched_getaffinity sched_setaffinity sched_getattr sched_setattr sched_getparam sched_setparam
sched_getscheduler sched_setscheduler sched_get_priority_max sched_get_priority_min sched_rr_get_interval
sched_rr_get_interval_time64 sched_yield set_robust_list get_robust_list set_tid_address
set_thread_area get_thread_area uname olduname wait4 waitid waitpid times sysinfo ioprio_get
ioprio_set membarrier landlock_create_ruleset landlock_add_rule landlock_restrict_self
"""
_MEMORY = """
mmap mmap2 munmap mprotect mremap msync mincore madvise mlock mlock2 munlock mlockall munlockall
remap_file_pages pkey_alloc pkey_free pkey_mprotect
"""
_SIGNALS_TIME = """
alarm getitimer setitimer nanosleep clock_nanosleep clock_nanosleep_time64 clock_getres
clock_getres_time64 clock_gettime clock_gettime64 gettimeofday time timer_create timer_delete
timer_getoverrun timer_gettime timer_gettime64 timer_settime timer_settime64 timerfd_create
timerfd_gettime timerfd_gettime64 timerfd_settime timerfd_settime64 clock_adjtime clock_adjtime64 adjtimex
pause rt_sigaction rt_sigpending rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend
rt_sigtimedwait rt_sigtimedwait_time64 rt_tgsigqueueinfo sigaction sigaltstack signal signalfd signalfd4
sigpending sigprocmask sigreturn sigsuspend
"""
_IPC_EVENTS = """
epoll_create epoll_create1 epoll_ctl epoll_ctl_old epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old
eventfd eventfd2 poll ppoll ppoll_time64 select _newselect pselect6 pselect6_time64
futex futex_time64 futex_waitv futex_wait futex_wake futex_requeue pipe pipe2 ioctl
mq_getsetattr mq_notify mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend
mq_timedsend_time64 mq_unlink msgctl msgget msgrcv msgsnd semctl semget semop semtimedop
semtimedop_time64 shmat shmctl shmdt shmget ipc
"""
_NETWORK = """
accept accept4 bind connect getpeername getsockname getsockopt setsockopt listen recv recvfrom
recvmmsg recvmmsg_time64 recvmsg send sendmmsg sendmsg sendto shutdown socketpair socketcall
"""
_MISC = """
getrandom get_mempolicy set_mempolicy mbind getcpu
"""

# ---------------------------------------------------------------- what capabilities add
_BY_CAP: dict[str, str] = {
    "CAP_SYS_ADMIN": """bpf clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie mount
        mount_setattr move_mount name_to_handle_at open_tree perf_event_open quotactl quotactl_fd
        setdomainname sethostname setns syslog umount umount2 unshare pivot_root""",
    "CAP_SYS_BOOT": "reboot",
    "CAP_SYS_MODULE": "delete_module init_module finit_module",
    "CAP_SYS_PACCT": "acct",
    "CAP_SYS_PTRACE": "kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
    "CAP_SYS_RAWIO": "iopl ioperm",
    "CAP_SYS_TIME": "settimeofday stime clock_settime clock_settime64",
    "CAP_SYS_TTY_CONFIG": "vhangup",
    "CAP_SYS_NICE": "set_mempolicy_home_node move_pages migrate_pages",
    "CAP_SYSLOG": "syslog",
    "CAP_BPF": "bpf",
    "CAP_PERFMON": "perf_event_open",
    "CAP_DAC_READ_SEARCH": "open_by_handle_at",
}

# Kept out whatever the capabilities (Docker keeps these out too).
NEVER = frozenset("""kexec_load kexec_file_load swapon swapoff add_key request_key keyctl userfaultfd
    vm86 vm86old nfsservctl uselib _sysctl create_module get_kernel_syms query_module""".split())

# personality(2): only the PER_LINUX personalities (and the query value).
_PERSONALITIES = (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)
# clone(2) flags that make namespaces; without CAP_SYS_ADMIN none may be set.
CLONE_NS_FLAGS = 0x7E020000
_AF_VSOCK = 40

_ARCHES = {
    "x86_64": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "aarch64": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
    "ppc64le": ["SCMP_ARCH_PPC64LE"],
    "s390x": ["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
    "riscv64": ["SCMP_ARCH_RISCV64"],
}


def _names(*groups: str) -> list[str]:
    out: list[str] = []
    for g in groups:
        out += g.split()
    return sorted(set(out))


def base_syscalls() -> list[str]:
    """The syscalls every container may make, without argument filters."""
    return _names(_FILES, _PROCESS, _MEMORY, _SIGNALS_TIME, _IPC_EVENTS, _NETWORK, _MISC)


def profile(caps: Iterable[str] = (), arch: str | None = None) -> dict[str, Any]:
    """The OCI ``linux.seccomp`` object for a container with the bounding set ``caps`` (a
    new object each time: it is made once per capability set and architecture)."""
    caps = frozenset(c if c.startswith("CAP_") else "CAP_" + c for c in caps)
    key = (caps, arch or platform.machine())
    text = _made.get(key)
    if text is None:
        text = json.dumps(_profile(caps, arch))
        if len(_made) >= 64:
            _made.pop(next(iter(_made)))
        _made[key] = text
    return json.loads(text)


_made: dict[tuple[frozenset, str], str] = {}


def _profile(caps: frozenset, arch: str | None) -> dict[str, Any]:
    allowed = set(base_syscalls())
    for cap, names in _BY_CAP.items():
        if cap in caps:
            allowed.update(names.split())
    allowed -= NEVER
    sys_admin = "CAP_SYS_ADMIN" in caps
    if not sys_admin:
        allowed.discard("clone")
        allowed.discard("clone3")
    syscalls: list[dict[str, Any]] = [{"names": sorted(allowed), "action": "SCMP_ACT_ALLOW"}]
    syscalls.append({"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 0, "value": v, "op": "SCMP_CMP_EQ"} for v in _PERSONALITIES]})
    syscalls.append({"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                     "args": [{"index": 0, "value": _AF_VSOCK, "op": "SCMP_CMP_NE"}]})
    if not sys_admin:
        syscalls.append({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                         "args": [{"index": _clone_flags_index(arch), "value": CLONE_NS_FLAGS, "valueTwo": 0,
                                   "op": "SCMP_CMP_MASKED_EQ"}]})
        syscalls.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS})
    machine = arch or platform.machine()
    return {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 1,
        "architectures": _ARCHES.get(machine, []),
        "syscalls": syscalls,
    }


def _clone_flags_index(arch: str | None) -> int:
    # s390 passes the stack first and the flags second.
    return 1 if (arch or platform.machine()).startswith("s390") else 0
