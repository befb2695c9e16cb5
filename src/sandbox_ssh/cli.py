"""`sandbox-ssh serve`: the ready server with the built-in Docker provider."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import click
import platformdirs

from . import __version__
from ._session.forwarding import ForwardingKind
from ._session.resolve import DEFAULT_SESSION_ID_PATTERN
from ._ssh.hostkey import HostKeyError, load_or_create_host_key
from .audit import AuditLog
from .config import (
    Config,
    ConfigError,
    auth_mode,
    check_algorithms,
    format_address,
    parse_address,
    parse_duration,
)
from .hooks import ConnectionTracker, SandboxEnsurer, SandboxError
from .http_hooks import (
    HttpAuthorizedKeysFetcher,
    HttpConnectionTracker,
    HttpEnvVarFetcher,
    HttpHookClient,
    HttpHookSettings,
    HttpSandboxEnsurer,
    HttpUserInfoFetcher,
)
from .providers.docker import DEFAULT_LABEL, EXEC_PATHS, DockerProvider, ExecPath
from .server import Server
from .tracking import CombinedTracker, IdleStopper

log = logging.getLogger("sandbox_ssh")


def default_host_key_path() -> Path:
    return Path(platformdirs.user_state_dir("sandbox-ssh")) / "ssh_host_ed25519_key"


def _names(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(name.strip() for name in value.split(",") if name.strip())


def _duration(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


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
    "host_keys",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
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
    "--exec-path",
    type=click.Choice(EXEC_PATHS),
    default="auto",
    show_default=True,
    help="How processes start: runtime (the container's OCI runtime, bytes straight to the "
    "gateway; needs root on the Docker host and the local socket), api (Docker's exec API, "
    "works anywhere), or auto (runtime when possible, else api, saying why).",
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
    "--ensure-timeout",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    metavar="SECONDS",
    help="Longest a sandbox may take to start before the client is refused.",
)
@click.option(
    "--user-fallback",
    type=click.Choice(["root"]),
    default=None,
    help="When looking up the session's user fails, run as root (logged each time) "
    "instead of refusing the connection.",
)
@click.option(
    "--accept-env",
    "accept_env",
    multiple=True,
    metavar="PATTERN",
    help="Client env variables to accept, as shell-style patterns (repeatable), like sshd's "
    "AcceptEnv; others are ignored silently. [default: accept all]",
)
@click.option(
    "--idle-stop",
    "idle_stop",
    default=None,
    callback=lambda ctx, param, value: _duration(value),
    metavar="DURATION",
    help="Stop a sandbox once it has had no SSH connection for this long (e.g. 30s, 10m, 1h); "
    "the next connection starts it again.",
)
@click.option("--ensure-url", metavar="URL", help="HTTP hook that makes a session's sandbox run.")
@click.option("--user-info-url", metavar="URL", help="HTTP hook giving a session's user.")
@click.option("--env-url", metavar="URL", help="HTTP hook giving a session's environment.")
@click.option("--track-url", metavar="URL", help="HTTP hook told of each connection and its end.")
@click.option(
    "--hook-token-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="File holding the bearer token sent to the HTTP hooks.",
)
@click.option(
    "--hook-timeout",
    default=5.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    metavar="SECONDS",
    help="Timeout of one HTTP hook attempt (3 attempts, with backoff).",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(min=1, max=64),
    help="Processes sharing the listening port (SO_REUSEPORT), each serving whole connections.",
)
@click.option(
    "--auth",
    type=click.Choice(["none", "publickey"]),
    default=None,
    help="none: the username alone admits (allowed on loopback only); publickey: a key from "
    "the session's or the admin's authorized keys, or a certificate. "
    "[default: none on loopback, publickey elsewhere]",
)
@click.option(
    "--insecure-allow-no-auth",
    is_flag=True,
    help="Allow --auth none on a non-loopback address (anyone who reaches it gets any sandbox).",
)
@click.option(
    "--admin-keys",
    type=click.Path(dir_okay=False, path_type=Path),
    help="authorized_keys file valid for every session.",
)
@click.option(
    "--authorized-keys-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory holding one authorized_keys file per session ID.",
)
@click.option(
    "--authorized-keys-url",
    metavar="URL",
    help="HTTP hook giving a session's authorized_keys lines.",
)
@click.option(
    "--trusted-user-ca-keys",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CA public keys; a user certificate is valid for session S when S is a principal.",
)
@click.option(
    "--session-id-pattern",
    default=DEFAULT_SESSION_ID_PATTERN,
    show_default=True,
    help="Regular expression a session ID must match in full.",
)
@click.option(
    "--login-grace-time",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=1),
    metavar="SECONDS",
    help="Time a client has to authenticate.",
)
@click.option(
    "--max-sessions",
    default=10,
    show_default=True,
    type=click.IntRange(min=1),
    help="Session channels per connection (shells, commands, SFTP), like sshd.",
)
@click.option(
    "--max-startups",
    default=100,
    show_default=True,
    type=click.IntRange(min=1),
    help="Connections that have not finished authenticating; more are dropped.",
)
@click.option(
    "--max-connections-per-session",
    default=100,
    show_default=True,
    type=click.IntRange(min=1),
    help="Live connections per session ID.",
)
@click.option(
    "--max-concurrent-starts",
    default=None,
    type=click.IntRange(min=1),
    help="Process starts run at once; more wait their turn, round-robin over sandboxes and "
    "connections. [default: 2 per CPU, at least 4]",
)
@click.option(
    "--client-alive-interval",
    default=0.0,
    show_default=True,
    type=click.FloatRange(min=0),
    metavar="SECONDS",
    help="Probe an idle client this often (0: off).",
)
@click.option(
    "--client-alive-count-max",
    default=3,
    show_default=True,
    type=click.IntRange(min=1),
    help="Unanswered probes before the connection is dropped.",
)
@click.option(
    "--max-connections-per-minute",
    default=3000,
    show_default=True,
    type=click.IntRange(min=0),
    help="New connections per source address (0: no limit).",
)
@click.option(
    "--ban-after-failures",
    default=20,
    show_default=True,
    type=click.IntRange(min=0),
    help="Rejected keys from one address that ban it for --ban-time (0: never).",
)
@click.option(
    "--ban-time",
    default="10m",
    show_default=True,
    metavar="DURATION",
    callback=lambda ctx, param, value: _duration(value),
    help="How long a ban lasts.",
)
@click.option(
    "--kex-algorithms",
    metavar="LIST",
    callback=lambda c, p, v: _names(v),
    help="Key exchange algorithms, comma-separated, in order of preference.",
)
@click.option(
    "--ciphers",
    metavar="LIST",
    callback=lambda c, p, v: _names(v),
    help="Ciphers, comma-separated, in order of preference.",
)
@click.option(
    "--macs",
    metavar="LIST",
    callback=lambda c, p, v: _names(v),
    help="MACs (used with non-AEAD ciphers), comma-separated.",
)
@click.option(
    "--host-key-algorithms",
    metavar="LIST",
    callback=lambda c, p, v: _names(v),
    help="Signature algorithms for host and user keys, comma-separated.",
)
@click.option(
    "--compression/--no-compression",
    default=False,
    show_default=True,
    help="Offer zlib@openssh.com compression after authentication.",
)
@click.option(
    "--audit-log",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Append audit events as JSON lines (reopened on SIGHUP, for rotation).",
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
    host_keys: tuple[Path, ...],
    docker_host: str | None,
    session_label: str,
    exec_path: ExecPath,
    auto_start: bool,
    no_forwarding: bool,
    disabled_forwarding: tuple[str, ...],
    sftp_server: str | None,
    ensure_timeout: float,
    user_fallback: str | None,
    accept_env: tuple[str, ...],
    idle_stop: float | None,
    ensure_url: str | None,
    user_info_url: str | None,
    env_url: str | None,
    track_url: str | None,
    hook_token_file: Path | None,
    hook_timeout: float,
    workers: int,
    auth: str | None,
    insecure_allow_no_auth: bool,
    admin_keys: Path | None,
    authorized_keys_dir: Path | None,
    authorized_keys_url: str | None,
    trusted_user_ca_keys: Path | None,
    session_id_pattern: str,
    login_grace_time: float,
    max_sessions: int,
    max_startups: int,
    max_connections_per_session: int,
    max_concurrent_starts: int | None,
    client_alive_interval: float,
    client_alive_count_max: int,
    max_connections_per_minute: int,
    ban_after_failures: int,
    ban_time: float,
    kex_algorithms: tuple[str, ...] | None,
    ciphers: tuple[str, ...] | None,
    macs: tuple[str, ...] | None,
    host_key_algorithms: tuple[str, ...] | None,
    compression: bool,
    audit_log: Path | None,
    log_level: str,
) -> None:
    """Serve SSH; every connection goes into the sandbox named by its username."""
    logging.basicConfig(
        level=log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    if workers > 1 and idle_stop:
        raise click.UsageError(
            "--idle-stop counts connections per process; use it with --workers 1"
        )
    host_key_path = host_keys[0] if host_keys else default_host_key_path()
    if workers > 1:
        # Create the key once, before the workers race to create it.
        try:
            load_or_create_host_key(host_key_path)
        except HostKeyError as error:
            raise click.ClickException(str(error)) from None
        listen = _fixed_port(listen)
    provider = DockerProvider(docker_host=docker_host, label=session_label, exec_path=exec_path)
    token = hook_token_file.read_text().strip() if hook_token_file else None
    hooks = HttpHookClient(HttpHookSettings(token=token or None, timeout=hook_timeout))
    trackers: list[ConnectionTracker] = []
    idle_stopper = IdleStopper(provider, idle_stop) if idle_stop else None
    if idle_stopper is not None:
        trackers.append(idle_stopper)
    http_trackers = [HttpConnectionTracker(hooks, track_url)] if track_url else []
    trackers.extend(http_trackers)
    ensurer: SandboxEnsurer | None = provider if auto_start else None
    config = Config(
        address=listen,
        host_key_path=host_key_path,
        sandbox_provider=provider,
        sandbox_ensurer=HttpSandboxEnsurer(hooks, ensure_url) if ensure_url else ensurer,
        user_info_fetcher=HttpUserInfoFetcher(hooks, user_info_url) if user_info_url else provider,
        env_var_fetcher=HttpEnvVarFetcher(hooks, env_url) if env_url else None,
        connection_tracker=CombinedTracker(*trackers) if trackers else None,
        disabled_forwarding=frozenset(ForwardingKind)
        if no_forwarding
        else frozenset(ForwardingKind(kind) for kind in disabled_forwarding),
        sftp_server_path=sftp_server,
        ensure_timeout=ensure_timeout,
        user_fallback_root=user_fallback == "root",
        accept_env=accept_env or None,
        reuse_port=workers > 1,
        extra_host_key_paths=tuple(host_keys[1:]),
        auth=auth,
        insecure_allow_no_auth=insecure_allow_no_auth,
        admin_keys_path=admin_keys,
        authorized_keys_dir=authorized_keys_dir,
        trusted_user_ca_keys_path=trusted_user_ca_keys,
        authorized_keys_fetcher=HttpAuthorizedKeysFetcher(hooks, authorized_keys_url)
        if authorized_keys_url
        else None,
        session_id_pattern=session_id_pattern,
        login_timeout=login_grace_time,
        max_sessions=max_sessions,
        max_startups=max_startups,
        max_connections_per_session=max_connections_per_session,
        max_concurrent_starts=max_concurrent_starts,
        client_alive_interval=client_alive_interval,
        client_alive_count_max=client_alive_count_max,
        audit_sink=AuditLog(audit_log) if audit_log else None,
        connections_per_minute=max_connections_per_minute,
        ban_after_failures=ban_after_failures,
        ban_seconds=ban_time,
        compression=("zlib@openssh.com", "none") if compression else ("none",),
    )
    for name, value in (
        ("kex_algorithms", kex_algorithms),
        ("ciphers", ciphers),
        ("macs", macs),
        ("host_key_algorithms", host_key_algorithms),
    ):
        if value:
            setattr(config, name, value)
    try:
        auth_mode(config)
        check_algorithms(config)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    if workers > 1:
        _run_workers(
            workers, lambda: _run(_serve(config, provider, hooks, idle_stopper, http_trackers))
        )
        return
    try:
        _run(_serve(config, provider, hooks, idle_stopper, http_trackers))
    except (HostKeyError, SandboxError) as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(
            f"cannot listen on {listen}: {error.strerror or error}"
        ) from None


def _fixed_port(listen: str) -> str:
    """Workers must share one port: turn port 0 into a free port chosen now."""
    host, port = parse_address(listen)
    if port:
        return listen
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        return format_address(host or "0.0.0.0", probe.getsockname()[1])


def _run_workers(count: int, serve_one: Callable[[], None]) -> None:
    """Fork ``count`` workers before any event loop exists; pass stop signals on to them."""
    pids: list[int] = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                serve_one()
            except BaseException:
                log.exception("worker failed")
                code = 1
            finally:
                os._exit(code)
        pids.append(pid)
    log.info("started %d workers: %s", count, " ".join(map(str, pids)))

    def forward(signum: int, frame: object) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    failed = 0
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        failed += os.waitstatus_to_exitcode(status) != 0
    if failed:
        raise click.ClickException(f"{failed} of {count} workers failed")


def _run(main_coroutine: Coroutine[Any, Any, None]) -> None:
    # uvloop must own the loop from the start; installing it inside asyncio.run is too late.
    try:
        import uvloop
    except ImportError:
        asyncio.run(main_coroutine)
    else:
        uvloop.run(main_coroutine)


async def _serve(
    config: Config,
    provider: DockerProvider,
    hooks: HttpHookClient,
    idle_stopper: IdleStopper | None,
    http_trackers: list[HttpConnectionTracker],
) -> None:
    server = Server(config)
    loop = asyncio.get_running_loop()
    stopping: list[asyncio.Task[None]] = []

    def request_stop(name: str) -> None:
        if not stopping:
            log.info("received %s, stopping", name)
            stopping.append(loop.create_task(server.stop()))

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, request_stop, signal.Signals(signum).name)
    if isinstance(config.audit_sink, AuditLog):
        loop.add_signal_handler(signal.SIGHUP, config.audit_sink.reopen)
    try:
        await server.start()
        await server.serve_forever()
    finally:
        if stopping:
            await stopping[0]
        if idle_stopper is not None:
            idle_stopper.close()
        for http_tracker in http_trackers:
            await http_tracker.drain()
        await hooks.close()
        await provider.close()
