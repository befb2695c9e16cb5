"""The runtime path's pure logic: users, process spec, runtime checks, shim messages."""

from __future__ import annotations

import gzip
import hashlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sandbox_ssh import TerminalSize
from sandbox_ssh.providers._runtime import _binary, _holders, _protocol
from sandbox_ssh.providers._runtime._process import ssh_signal_name
from sandbox_ssh.providers._runtime._spec import merge_env, process_spec
from sandbox_ssh.providers._runtime._users import (
    OciUser,
    UnknownGroup,
    exec_user,
    parse_group,
    parse_passwd,
    resolve_group_add,
)
from sandbox_ssh.providers.docker._runtime_path import _root_candidates

PASSWD = parse_passwd(
    "root:x:0:0:root:/root:/bin/bash\n# comment\ndev:x:1000:1000::/home/dev:/bin/bash\nbad:x:y:1\n"
)
GROUPS = parse_group("root:x:0:\ndev:x:1000:\nextra:x:2000:dev,ann\nother:x:2001:\n")


@pytest.mark.parametrize(
    ("uid", "gid", "expected"),
    [
        # Each as `docker exec -u ...` resolved it in the same container (Docker 20.10).
        (1000, None, OciUser(1000, 1000, (1000, 2000))),  # -u 1000
        (1000, 2001, OciUser(1000, 2001, (2001,))),  # -u 1000:2001
        (1000, 1000, OciUser(1000, 1000, (1000,))),  # -u 1000:1000: no member groups
        (0, None, OciUser(0, 0, (0,))),  # -u 0
        (4242, None, OciUser(4242, 0, (0,))),  # -u 4242, no passwd entry
        (4242, 4242, OciUser(4242, 4242, (4242,))),
    ],
)
def test_exec_user_matches_docker(uid: int, gid: int | None, expected: OciUser) -> None:
    assert exec_user(uid, gid, PASSWD, GROUPS) == expected


def test_group_add_comes_after_the_gid_and_resolves_names() -> None:
    added = resolve_group_add(["3000", "other"], GROUPS)
    assert added == [3000, 2001]
    assert exec_user(1000, None, PASSWD, GROUPS, added).additional_gids == (1000, 2000, 3000, 2001)
    with pytest.raises(UnknownGroup, match="unable to find group nope"):
        resolve_group_add(["nope"], GROUPS)


def test_process_spec_keeps_the_containers_confinement() -> None:
    container = {
        "args": ["sleep", "infinity"],
        "env": ["PATH=/bin", "HOSTNAME=abc", "LANG=C"],
        "cwd": "/srv",
        "user": {"uid": 0, "gid": 0},
        "capabilities": {"bounding": ["CAP_CHOWN"]},
        "noNewPrivileges": True,
        "apparmorProfile": "docker-default",
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 10, "soft": 10}],
        "oomScoreAdj": 5,
    }
    spec = process_spec(
        container,
        ["sh", "-c", "true"],
        {"LANG": "en_US.UTF-8", "TOKEN": "t"},
        OciUser(1000, 1000, (1000,)),
        None,
        TerminalSize(cols=90, rows=30),
    )
    for kept in ("capabilities", "noNewPrivileges", "apparmorProfile", "rlimits", "oomScoreAdj"):
        assert spec[kept] == container[kept]
    assert spec["args"] == ["sh", "-c", "true"]
    assert spec["env"] == ["PATH=/bin", "HOSTNAME=abc", "LANG=en_US.UTF-8", "TERM=xterm", "TOKEN=t"]
    assert spec["cwd"] == "/srv"
    assert spec["user"] == {"uid": 1000, "gid": 1000, "additionalGids": [1000]}
    assert spec["terminal"] is True and spec["consoleSize"] == {"height": 30, "width": 90}
    assert container["args"] == ["sleep", "infinity"]  # the container's own spec is untouched


def test_env_without_a_terminal_gets_no_term() -> None:
    assert merge_env(["A=1", "B=2=3"], False, {"A": "x"}) == ["A=x", "B=2=3"]


@pytest.mark.parametrize(
    ("text", "kind", "version", "commit"),
    [
        (
            "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\n",
            "runc",
            "1.1.5+ds1",
            "1.1.5+ds1-1+deb12u1",
        ),
        (
            "runc version 1.1.12\ncommit: v1.1.12-0-g51d5e946\n",
            "runc",
            "1.1.12",
            "v1.1.12-0-g51d5e946",
        ),
        ("crun version 1.8.1\ncommit: f8a096be\nrundir: /run/crun\n", "crun", "1.8.1", "f8a096be"),
    ],
)
def test_runtime_versions_are_parsed(text: str, kind: str, version: str, commit: str) -> None:
    assert _binary.parse_version(text) == (kind, version, commit)


def test_the_fix_is_established_by_version_or_crun_but_not_by_an_old_version_alone() -> None:
    assert _binary.fix_evidence("/x/runc", "runc", "1.1.12", "") is not None
    assert _binary.fix_evidence("/x/runc", "runc", "1.2.0", "") is not None
    assert _binary.fix_evidence("/x/crun", "crun", "0.1", "") is not None
    assert _binary.upstream_tuple("1.1.5+ds1") == (1, 1, 5)


def _fake_dpkg(tmp_path: Path, binary: Path, content: bytes, changelog: str) -> tuple[Path, Path]:
    info, doc = tmp_path / "info", tmp_path / "doc" / "runc"
    info.mkdir()
    doc.mkdir(parents=True)
    digest = hashlib.md5(content, usedforsecurity=False).hexdigest()
    (info / "runc.md5sums").write_text(f"{digest}  {str(binary).lstrip('/')}\n")
    with gzip.open(doc / "changelog.Debian.gz", "wt") as log:
        log.write(changelog)
    return info, tmp_path / "doc"


DEBIAN_CHANGELOG = (
    "runc (1.1.5+ds1-1+deb12u1) bookworm-security; urgency=high\n\n"
    "  * CVE-2024-21626: several container breakouts due to internally leaked fds\n"
)


def test_a_debian_backport_is_trusted_only_for_the_packaged_binary(tmp_path: Path) -> None:
    binary = tmp_path / "runc"
    binary.write_bytes(b"packaged")
    info, doc = _fake_dpkg(tmp_path, binary, b"packaged", DEBIAN_CHANGELOG)
    evidence = _binary.debian_package_evidence(str(binary), "", info, doc)
    assert evidence is not None and "1.1.5+ds1-1+deb12u1" in evidence
    binary.write_bytes(b"replaced")  # same path, not the package's file any more
    assert _binary.debian_package_evidence(str(binary), "", info, doc) is None


def test_a_debian_package_without_the_fix_is_not_trusted(tmp_path: Path) -> None:
    binary = tmp_path / "runc"
    binary.write_bytes(b"packaged")
    info, doc = _fake_dpkg(tmp_path, binary, b"packaged", "runc (1.1.5+ds1-1) unstable\n")
    assert _binary.debian_package_evidence(str(binary), "", info, doc) is None


def test_an_unproven_runtime_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "runc"
    fake.write_text("#!/bin/sh\necho 'runc version 1.1.4'\necho 'commit: v1.1.4'\n")
    fake.chmod(0o755)
    with pytest.raises(_binary.RuntimeUnavailable, match="CVE-2024-21626"):
        _binary.find_runtime_binary(str(fake))


def test_root_candidates_prefer_the_configured_root() -> None:
    candidates = _root_candidates("runc", ["--debug", "--root", "/custom/root"])
    assert candidates[0] == "/custom/root"
    assert "/run/docker/runtime-runc/moby" in candidates
    assert len(candidates) == len(set(candidates))


def test_exit_signal_names_are_sshds() -> None:
    assert ssh_signal_name(signal.SIGTERM) == "TERM"
    assert ssh_signal_name(signal.SIGKILL) == "KILL"
    assert ssh_signal_name(signal.SIGWINCH) == "SIG@openssh.com"


def test_shim_messages_carry_descriptors() -> None:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    read, write = os.pipe()
    with left, right:
        _protocol.send(left, {"op": "start", "id": 7}, [read])
        received = _protocol.receive(right)
        assert received is not None
        message, fds = received
        assert message == {"op": "start", "id": 7} and len(fds) == 1
        os.write(write, b"through the passed descriptor")
        assert os.read(fds[0], 100) == b"through the passed descriptor"
        assert not os.get_inheritable(fds[0])  # close-on-exec, never leaked onward
        for fd in (read, write, *fds):
            os.close(fd)
        left.shutdown(socket.SHUT_WR)
        assert _protocol.receive(right) is None


def test_holders_are_found_by_what_they_hold_not_by_their_session() -> None:
    read, write = os.pipe()
    # SIGHUP at its default even when the test run itself ignores it (under nohup).
    holding = subprocess.Popen(
        ["sleep", "30"],
        stdout=write,
        start_new_session=True,
        pass_fds=(),
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
    )
    let_go = subprocess.Popen(["sleep", "30"], stdout=subprocess.DEVNULL)
    try:
        namespace = _holders.pid_namespace(os.getpid())
        assert namespace is not None
        found = _holders.find_holders(
            namespace, [_holders.identity_of_fd(read)], exclude=os.getpid()
        )
        assert [h.pid for h in found] == [holding.pid]
        assert found[0].ignores_hangup is False
    finally:
        for process in (holding, let_go):
            process.kill()
            process.wait()
        os.close(read)
        os.close(write)


def test_the_shim_runs_without_the_gateways_imports() -> None:
    # Started by file (see _launcher), the shim must not import the gateway's dependencies.
    shim = Path(_protocol.__file__).with_name("_shim.py")
    probe = (
        f"import sys; sys.path.insert(0, {str(shim.parent)!r}); import _shim; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('sandbox_ssh', 'asyncssh', 'aiohttp', 'aiodocker', 'asyncio')))"
    )
    result = subprocess.run(
        [sys.executable, "-E", "-s", "-c", probe], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    usage = subprocess.run([sys.executable, "-E", "-s", str(shim), "--help"], capture_output=True)
    assert usage.returncode == 0 and b"--control-fd" in usage.stdout
