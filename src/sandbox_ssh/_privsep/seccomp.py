"""The front's seccomp filter, compiled by libseccomp (the maintained C library, through
its stable C API: Debian's ``libseccomp2``, which systemd itself depends on).

Everything is allowed but what a process that parses SSH never needs, which fails with
EPERM (never a kill: one refused call must not end every session): running programs,
tracing or reading other processes, mounts, namespaces (``setns``, ``unshare``, and
``clone`` with a namespace flag), kernel modules, kexec, BPF, keyrings, perf and
userfaultfd. ``clone3``, whose flags a filter cannot see, and ``io_uring_setup``,
whose operations bypass seccomp, fail with ENOSYS, so that glibc falls back to
``clone`` and libuv to its thread pool.
"""

from __future__ import annotations

import ctypes
import errno

DENIED = (
    "execve",
    "execveat",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "mount",
    "umount2",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "pivot_root",
    "chroot",
    "setns",
    "unshare",
    "init_module",
    "finit_module",
    "delete_module",
    "kexec_load",
    "kexec_file_load",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "swapon",
    "swapoff",
    "reboot",
    "acct",
    "quotactl",
)
UNAVAILABLE = ("clone3", "io_uring_setup")
# clone(2) flags that make namespaces.
_CLONE_NEW = (
    0x00020000  # CLONE_NEWNS
    | 0x00000080  # CLONE_NEWTIME
    | 0x02000000  # CLONE_NEWCGROUP
    | 0x04000000  # CLONE_NEWUTS
    | 0x08000000  # CLONE_NEWIPC
    | 0x10000000  # CLONE_NEWUSER
    | 0x20000000  # CLONE_NEWPID
    | 0x40000000  # CLONE_NEWNET
)

_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_FLTATR_CTL_TSYNC = 4
_SCMP_CMP_MASKED_EQ = 7
_NR_SCMP_ERROR = -1


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)  # SCMP_ACT_ERRNO


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class SeccompUnavailable(Exception):
    """libseccomp cannot be loaded here; the message says why."""


def install() -> int:
    """Load the filter into every thread of this process; returns how many rules it has."""
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError as error:
        raise SeccompUnavailable(f"libseccomp.so.2: {error}") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    context = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not context:
        raise SeccompUnavailable("seccomp_init failed")
    rules = 0
    try:

        def add(name: str, action: int, *conditions: _ArgCmp) -> None:
            nonlocal rules
            number = lib.seccomp_syscall_resolve_name(name.encode())
            if number == _NR_SCMP_ERROR:
                return  # not a call of this architecture
            array = (_ArgCmp * max(1, len(conditions)))(*conditions)
            result = lib.seccomp_rule_add_array(context, action, number, len(conditions), array)
            if result < 0:
                raise OSError(-result, f"seccomp_rule_add({name}): {errno.errorcode.get(-result)}")
            rules += 1

        for name in DENIED:
            add(name, _errno_action(errno.EPERM))
        for name in UNAVAILABLE:
            add(name, _errno_action(errno.ENOSYS))
        # clone(flags, ...), flags being argument 0 on x86-64 and arm64: one rule per
        # namespace flag, (flags & flag) == flag, refuses any of them.
        for flag in range(32):
            bit = 1 << flag
            if _CLONE_NEW & bit:
                add("clone", _errno_action(errno.EPERM), _ArgCmp(0, _SCMP_CMP_MASKED_EQ, bit, bit))
        if lib.seccomp_attr_set(context, _SCMP_FLTATR_CTL_TSYNC, 1) < 0:
            raise OSError("seccomp: cannot synchronise the filter over threads")
        result = lib.seccomp_load(context)
        if result < 0:
            raise OSError(-result, f"seccomp_load: {errno.errorcode.get(-result)}")
    finally:
        lib.seccomp_release(context)
    return rules
