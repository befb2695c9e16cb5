"""Fixtures shared by every layer: a real dockerd, the sandbox image, gateways and clients."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from sandbox_ssh import Config
from sandbox_ssh.providers.broker import BrokerProvider
from sandbox_ssh.providers.docker import ExecPath

from .support import containers as containers_support
from .support import gateway as gateway_support
from .support.containers import (
    Container,
    Containers,
    remove_stale_test_containers,
    run_is_alive,
    this_run,
)
from .support.gateway import InProcessGateway, LoopThread
from .support.hookserver import HookServer
from .support.kubernetes import EmulatedApiServer
from .support.ssh import SSHClient
from .support.system import ensure_commands, ensure_dockerd, ensure_podman, ensure_sandbox_image

PODMAN_CREATE_ARGS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--exec-path",
        choices=("runtime", "api"),
        default="runtime",
        help="How the gateways under test start processes (the suite runs once per path).",
    )
    parser.addoption(
        "--engine",
        choices=("docker", "podman"),
        default="docker",
        help="The container engine behind the Docker API: dockerd, or rootful Podman's "
        "`podman system service` (started by the suite; DOCKER_HOST then points at it).",
    )


# Every run's temporary folders, readable by the fronts of `serve` (see _ReadableByFronts).
TEST_ROOT = Path("/tmp/sandbox-ssh-tests")


def pytest_configure(config: pytest.Config) -> None:
    gateway_support.EXEC_PATH = config.getoption("--exec-path")
    # Named here, in the run's first process, so that pytest-xdist's workers inherit it:
    # the containers of every worker then belong to this run (support/containers.py).
    run = this_run()
    if config.option.basetemp is None and "PYTEST_XDIST_WORKER" not in os.environ:
        # A folder of this run's own, not under /tmp/pytest-of-root: each new pytest session
        # makes that one 0700 again, which would shut another run's fronts out mid-run.
        TEST_ROOT.mkdir(mode=0o755, exist_ok=True)
        os.chmod(TEST_ROOT, 0o755)
        for stale in TEST_ROOT.iterdir():
            if not run_is_alive(stale.name):
                shutil.rmtree(stale, ignore_errors=True)
        config.option.basetemp = str(TEST_ROOT / run)


_FINISHED_SESSIONS: list[pytest.Session] = []


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    _FINISHED_SESSIONS.append(session)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the run with pytest's own status, without the interpreter's shutdown.

    Event loops and log readers run in daemon threads; one that holds stderr's lock while
    Python finalizes aborts the interpreter (SIGABRT, exit 134) after every test has passed.
    """
    if _FINISHED_SESSIONS and threading.active_count() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(_FINISHED_SESSIONS[-1].exitstatus))


def pytest_report_header(config: pytest.Config) -> str:
    return (
        f"sandbox-ssh exec path: {config.getoption('--exec-path')}, "
        f"engine: {config.getoption('--engine')}"
    )


class _ReadableByFronts:
    """pytest's temporary folders, readable by the unprivileged user of `serve`'s fronts.

    `sandbox-ssh serve` started as root reads clients' bytes in fronts that run as
    another user and read their configuration per connection (authorized keys, CA keys,
    kubeconfigs), as an operator's files are made readable to that user. pytest makes
    its folders 0700: each is opened to 0755 as it is made (files keep the umask's 0644,
    or what the test gives them).
    """

    def __init__(self, factory: pytest.TempPathFactory) -> None:
        self._factory = factory

    def _open_up(self, path: Path) -> Path:
        for folder in (path, *path.parents):
            if folder == TEST_ROOT or folder.name.startswith("pytest-of-"):
                break  # the root of the run's folders (pytest's own with --basetemp)
            os.chmod(folder, 0o755)
        return path

    def mktemp(self, basename: str, numbered: bool = True) -> Path:
        return self._open_up(self._factory.mktemp(basename, numbered))

    def getbasetemp(self) -> Path:
        return self._open_up(self._factory.getbasetemp())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._factory, name)


@pytest.fixture(scope="session")
def tmp_path_factory(tmp_path_factory: pytest.TempPathFactory) -> pytest.TempPathFactory:
    return cast(pytest.TempPathFactory, _ReadableByFronts(tmp_path_factory))


@pytest.fixture(scope="session")
def engine(request: pytest.FixtureRequest) -> str:
    """``docker`` (dockerd) or ``podman``, as --engine chose."""
    return str(request.config.getoption("--engine"))


@pytest.fixture(scope="session")
def exec_path() -> str:
    """The exec path of this run's gateways: ``runtime`` (the default) or ``api``."""
    return gateway_support.EXEC_PATH


@pytest.fixture(scope="session")
def sandbox_image(engine: str) -> str:
    if engine == "podman":
        # Everything after this (the docker CLI, the gateways, their subprocesses) talks to
        # Podman through its Docker-compatible API.
        os.environ["DOCKER_HOST"] = ensure_podman()
        containers_support.ENGINE_CREATE_ARGS[:] = PODMAN_CREATE_ARGS
    else:
        ensure_dockerd()
    remove_stale_test_containers()
    return ensure_sandbox_image()


@pytest.fixture(scope="session")
def emulated_api_server(
    sandbox_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[EmulatedApiServer]:
    """The emulated Kubernetes API server over dockerd (tests/support/apiserver_emulator.py)."""
    server = EmulatedApiServer.start(tmp_path_factory.mktemp("apiserver"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def client_tools() -> None:
    ensure_commands("ssh", "scp", "sftp", "ssh-keygen", "rsync")


@pytest.fixture
def containers(sandbox_image: str) -> Iterator[Containers]:
    started = Containers(sandbox_image, run_label=uuid.uuid4().hex[:8])
    yield started
    started.remove_all()


@pytest.fixture
def sandbox(containers: Containers) -> Container:
    return containers.start()


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture
def hook_server(loop_thread: LoopThread) -> Iterator[HookServer]:
    """A platform's HTTP hook endpoints (tests/support/hookserver.py)."""
    server = HookServer(loop_thread)
    loop_thread.run(server.start())
    yield server
    assert server.runner is not None
    loop_thread.run(server.runner.cleanup())


@dataclass
class Gateway:
    gateway: InProcessGateway
    client: SSHClient
    provider: BrokerProvider
    broker: subprocess.Popen[bytes]


GatewayFactory = Callable[..., Gateway]


@pytest.fixture
def gateway_factory(
    loop_thread: LoopThread, tmp_path: Path, client_tools: None, sandbox_image: str
) -> Iterator[GatewayFactory]:
    """Start in-process gateways; keyword arguments override the Config's hooks."""
    started: list[Gateway] = []

    def start(
        *, auto_start: bool = True, exec_path: ExecPath | None = None, **overrides: Any
    ) -> Gateway:
        # The Docker provider behind the privileged broker, as `serve` started as root runs
        # it: every end-to-end test through an in-process gateway goes through the broker.
        provider, broker = BrokerProvider.spawn(
            ["--exec-path", exec_path or gateway_support.EXEC_PATH]
        )
        workdir = tmp_path / f"gateway-{len(started)}"
        config = Config(
            address="127.0.0.1:0",
            host_key_path=workdir / "host_key",
            sandbox_provider=provider,
            sandbox_ensurer=provider if auto_start else None,
            user_info_fetcher=provider,
            # A busy engine can make the login step (a user lookup) slow; the login timeout
            # has its own tests in test_auth.
            login_timeout=120.0,
        )
        for name, value in overrides.items():
            setattr(config, name, value)
        gateway = InProcessGateway(loop_thread, config)
        client = SSHClient(gateway.host, gateway.port, gateway.host_key_path, workdir / "client")
        started.append(Gateway(gateway, client, provider, broker))
        return started[-1]

    yield start
    for item in started:
        item.gateway.stop()
        loop_thread.run(item.provider.close())
        item.broker.wait(30)  # it ends once its front (the provider) has gone


@pytest.fixture
def gateway(gateway_factory: GatewayFactory) -> Gateway:
    return gateway_factory()


@pytest.fixture
def ssh(gateway: Gateway) -> SSHClient:
    return gateway.client
