"""`sandbox-ssh serve`: the ready server with the built-in Docker provider."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import click
import platformdirs

from . import __version__
from ._session.forwarding import ForwardingKind
from ._ssh.hostkey import HostKeyError
from .config import Config, parse_address
from .providers.docker import DEFAULT_LABEL, DockerProvider
from .server import Server

log = logging.getLogger("sandbox_ssh")


def default_host_key_path() -> Path:
    return Path(platformdirs.user_state_dir("sandbox-ssh")) / "ssh_host_ed25519_key"


def _check_listen(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        parse_address(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    return value


@click.group(context_settings={"max_content_width": 120, "help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sandbox-ssh")
def main() -> None:
    """An SSH gateway: the SSH username is a session ID, and the session's sandbox runs the work."""


@main.command()
@click.option(
    "--listen",
    default="127.0.0.1:2222",
    show_default=True,
    callback=_check_listen,
    help="HOST:PORT to listen on; ':PORT' means every interface, port 0 a free port.",
)
@click.option(
    "--host-key",
    "host_key",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Host key file; an ed25519 key is created there (0600) when missing. "
    f"[default: {default_host_key_path()}]",
)
@click.option(
    "--docker-host",
    default=None,
    metavar="URL",
    help="Docker Engine API address (unix:///path or tcp://host:port); "
    "defaults to $DOCKER_HOST, then the local socket.",
)
@click.option(
    "--session-label",
    default=DEFAULT_LABEL,
    show_default=True,
    metavar="KEY",
    help="Container label whose value is the session ID.",
)
@click.option(
    "--auto-start/--no-auto-start",
    default=True,
    show_default=True,
    help="Start a stopped or paused sandbox when a client connects.",
)
@click.option(
    "--no-forwarding", is_flag=True, help="Refuse every kind of port and socket forwarding."
)
@click.option(
    "--disable-forwarding",
    "disabled_forwarding",
    multiple=True,
    type=click.Choice([kind.value for kind in ForwardingKind]),
    help="Refuse one kind of forwarding (repeatable): local (-L, -D, -W), remote (-R), "
    "local-socket (-L to a unix socket), remote-socket (-R from a unix socket).",
)
@click.option(
    "--sftp-server",
    "sftp_server",
    default=None,
    metavar="PATH",
    help="Path of sftp-server inside the sandboxes. [default: the first of "
    "/usr/lib/openssh/sftp-server, /usr/libexec/openssh/sftp-server, "
    "/usr/lib/ssh/sftp-server, /usr/libexec/sftp-server]",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    help="Log verbosity (logs go to stderr).",
)
def serve(
    listen: str,
    host_key: Path | None,
    docker_host: str | None,
    session_label: str,
    auto_start: bool,
    no_forwarding: bool,
    disabled_forwarding: tuple[str, ...],
    sftp_server: str | None,
    log_level: str,
) -> None:
    """Serve SSH; every connection goes into the sandbox named by its username."""
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    provider = DockerProvider(docker_host=docker_host, label=session_label)
    config = Config(
        address=listen,
        host_key_path=host_key or default_host_key_path(),
        sandbox_provider=provider,
        sandbox_ensurer=provider if auto_start else None,
        user_info_fetcher=provider,
        disabled_forwarding=frozenset(ForwardingKind)
        if no_forwarding
        else frozenset(ForwardingKind(kind) for kind in disabled_forwarding),
        sftp_server_path=sftp_server,
    )
    try:
        _run(_serve(config, provider))
    except HostKeyError as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(
            f"cannot listen on {listen}: {error.strerror or error}"
        ) from None


def _run(main_coroutine: Coroutine[Any, Any, None]) -> None:
    # uvloop must own the loop from the start; installing it inside asyncio.run is too late.
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coroutine)
    else:
        uvloop.run(main_coroutine)


async def _serve(config: Config, provider: DockerProvider) -> None:
    server = Server(config)
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def request_stop(name: str) -> None:
        if not stopping:
            log.info("received %s, stopping", name)
            stopping.append(loop.create_task(server.stop()))

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, request_stop, signal.Signals(signum).name)
    try:
        await server.start()
        await server.serve_forever()
    finally:
        if stopping:
            await stopping[0]
        await provider.close()
