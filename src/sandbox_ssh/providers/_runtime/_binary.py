"""The OCI runtime binary: which one it is, and whether it is safe to exec through.

runc before 1.1.12 leaked a host descriptor into the processes it started
(CVE-2024-21626, "Leaky Vessels"): a process could reach the host's
filesystem through it. Distributions backported the fix without changing the
upstream version (Debian 12's runc says 1.1.5), so the version alone proves
nothing either way. The fix is taken as established when:

* the upstream version is 1.1.12 or later; or
* the binary is, byte for byte, the one a Debian package installed (its
  md5sums entry), and that package's changelog lists the CVE; or
* an RPM package owns the binary, verifies, and its changelog lists the CVE;
* or the runtime is crun, which never had the bug (it is runc's own code).

Otherwise the runtime path is refused and the reason logged.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CVE = "CVE-2024-21626"
_FIXED_UPSTREAM = (1, 1, 12)
_TIMEOUT = 10.0


class RuntimeUnavailable(Exception):
    """The runtime path cannot be used; the message says why, in one line."""


@dataclass(frozen=True)
class RuntimeBinary:
    path: str
    kind: str  # "runc" or "crun"
    version: str
    # How the CVE-2024-21626 fix was established (logged at start-up).
    fix_evidence: str

    def describe(self) -> str:
        return f"{self.kind} {self.version} at {self.path}"

    def state(self, root: str, container_id: str) -> dict[str, Any]:
        """``RUNTIME --root ROOT state ID`` (blocking): the container's pid, status and bundle."""
        result = _run([self.path, "--root", root, "state", container_id])
        if result.returncode != 0:
            raise RuntimeUnavailable(_last_line(result.stderr) or f"{self.kind} state failed")
        state: dict[str, Any] = json.loads(result.stdout)
        return state


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=_TIMEOUT,
        check=False,
        env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")},
    )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def parse_version(text: str) -> tuple[str, str, str]:
    """(kind, version, commit) from ``--version`` output."""
    kind, version, commit = "", "", ""
    for line in text.splitlines():
        match = re.match(r"(runc|crun) version (\S+)", line.strip())
        if match and not kind:
            kind, version = match.group(1), match.group(2)
        elif line.startswith("commit:"):
            commit = line.split(":", 1)[1].strip()
    return kind, version, commit


def upstream_tuple(version: str) -> tuple[int, ...]:
    numbers = re.match(r"v?(\d+)\.(\d+)\.(\d+)", version)
    return tuple(int(n) for n in numbers.groups()) if numbers else ()


def _md5(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as binary:
        while chunk := binary.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def debian_package_evidence(path: str, commit: str, info_dir: Path, doc_dir: Path) -> str | None:
    """Evidence that a Debian package installed ``path`` unchanged and lists the fix."""
    relative = path.lstrip("/")
    for md5sums in sorted(info_dir.glob("*.md5sums")):
        with contextlib.suppress(OSError):
            for line in md5sums.read_text(errors="replace").splitlines():
                digest, _, name = line.partition("  ")
                if name.strip() != relative:
                    continue
                package = md5sums.name.removesuffix(".md5sums").split(":")[0]
                if _md5(path) != digest:
                    return None  # modified or replaced since the package installed it
                changelog = doc_dir / package / "changelog.Debian.gz"
                with gzip.open(changelog, "rt", errors="replace") as text:
                    log = text.read()
                top = log.split("\n", 1)[0]
                if CVE not in log:
                    return None
                version = re.search(r"\(([^)]+)\)", top)
                shown = version.group(1) if version else commit
                return f"Debian package {package} {shown}, whose changelog lists {CVE}"
    return None


def rpm_package_evidence(path: str) -> str | None:
    if shutil.which("rpm") is None:
        return None
    owner = _run(["rpm", "-qf", path])
    if owner.returncode != 0:
        return None
    package = owner.stdout.strip().splitlines()[0]
    if _run(["rpm", "-Vf", path]).stdout.strip():
        return None  # the file differs from the package's
    changelog = _run(["rpm", "-q", "--changelog", package]).stdout
    return f"RPM package {package}, whose changelog lists {CVE}" if CVE in changelog else None


def fix_evidence(path: str, kind: str, version: str, commit: str) -> str | None:
    if kind == "crun":
        return f"crun is not affected by {CVE} (a runc bug)"
    upstream = upstream_tuple(version)
    if upstream and upstream >= _FIXED_UPSTREAM:
        return f"runc {version} is 1.1.12 or later"
    with contextlib.suppress(OSError, EOFError):
        found = debian_package_evidence(
            path, commit, Path("/var/lib/dpkg/info"), Path("/usr/share/doc")
        )
        if found:
            return found
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return rpm_package_evidence(path)
    return None


def find_runtime_binary(name: str) -> RuntimeBinary:
    """The runtime called ``name`` (a path, or a command on PATH), checked (blocking)."""
    found = name if os.path.isabs(name) else shutil.which(name)
    if not found or not os.access(found, os.X_OK):
        raise RuntimeUnavailable(f"the OCI runtime {name!r} is not on this host")
    path = os.path.realpath(found)
    try:
        result = _run([path, "--version"])
    except (OSError, subprocess.SubprocessError) as error:
        raise RuntimeUnavailable(f"{path} --version failed: {error}") from error
    kind, version, commit = parse_version(result.stdout)
    if kind not in ("runc", "crun"):
        raise RuntimeUnavailable(f"{path} is neither runc nor crun")
    evidence = fix_evidence(path, kind, version, commit)
    if evidence is None:
        raise RuntimeUnavailable(
            f"cannot establish that {kind} {version} ({commit or 'no commit'}) at {path} carries "
            f"the fix for {CVE} (upstream 1.1.12, or a distribution package whose changelog "
            "lists it)"
        )
    return RuntimeBinary(path=path, kind=kind, version=version, fix_evidence=evidence)
