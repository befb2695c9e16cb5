"""`sandbox-ssh`: `serve`, the ready server with the built-in Docker provider, and `ssh-config`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import logging
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, TypeAlias

import click

from . import __version__
from ._cli.options import SERVE_SETTINGS, default_host_key_path
from ._cli.settings import load_defaults, render
from ._logs import configure as configure_logging
from ._privsep.confine import Confinement, confine, writable_dir, writable_file
from ._privsep.split import FrontSockets, become_broker, bind, run_fronts
from ._privsep.user import FrontUser, FrontUserError, front_user
from ._session.environment import parse_set_env
from ._session.forwarding import ForwardingKind
from ._session.quotas import shared_quota_table
from ._session.resolve import DEFAULT_SESSION_ID_PATTERN
from ._session.tokens import CachedTokenVerifier, HmacTokenVerifier, load_token_key, mint_token
from ._ssh.certificates import sign_user_key
from ._ssh.hostkey import HostKeyError, load_host_keys, load_or_create_host_key
from .audit import AuditLog
from .config import (
    Config,
    ConfigError,
    auth_mode,
    check_algorithms,
    format_address,
    format_duration,
    parse_address,
    parse_duration,
)
from .hooks import (
    ConnectionTracker,
    Quotas,
    SandboxEnsurer,
    SandboxError,
    SandboxStopper,
    TokenVerifier,
)
from .http_hooks import (
    HttpAuthorizedKeysFetcher,
    HttpConnectionTracker,
    HttpEnvVarFetcher,
    HttpHookClient,
    HttpHookSettings,
    HttpSandboxEnsurer,
    HttpTokenVerifier,
    HttpUserInfoFetcher,
)
from .providers.broker import BrokerProvider
from .providers.docker import DockerProvider
from .server import Server
from .tracking import CombinedTracker, IdleStopper

if TYPE_CHECKING:
    from .providers.kubernetes import KubernetesProvider

Provider: TypeAlias = "DockerProvider | KubernetesProvider"

log = logging.getLogger("sandbox_ssh")


def _apply_settings(command: Callable[..., Any]) -> Callable[..., Any]:
    for setting in reversed(SERVE_SETTINGS):
        command = setting.option()(command)
    return command


def _load_settings(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """--config (eager): the file and the SANDBOX_SSH_* environment become the defaults."""
    ctx.default_map = load_defaults(ctx, SERVE_SETTINGS, value)
    return value


@click.group(context_settings={"max_content_width": 120, "help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sandbox-ssh")
def main() -> None:
    """An SSH gateway: the SSH username is a session ID, and the session's sandbox runs the work."""


@main.command()
@click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    is_eager=True,
    expose_value=False,
    callback=_load_settings,
    help='TOML file whose keys are these options\' names (listen = "..."); each option can '
    "also come from SANDBOX_SSH_<OPTION> in the environment. The command line wins over the "
    "environment, which wins over the file.",
)
@click.option(
    "--check-config",
    is_flag=True,
    help="Print the effective configuration (credentials redacted) as TOML, and exit.",
)
@_apply_settings
def serve(check_config: bool, **values: Any) -> None:
    """Serve SSH; every connection goes into the sandbox named by its username."""
    options = SimpleNamespace(**values)
    configure_logging(options.log_level, options.log_format)
    if options.workers > 1 and options.idle_stop:
        raise click.UsageError(
            "--idle-stop counts connections per process; use it with --workers 1"
        )
    separated = os.geteuid() == 0
    if options.user and not separated:
        raise click.UsageError("--user: serve gives root up for that user; start it as root")
    # Separated, this configuration only checks and addresses: each front builds its own.
    config, provider, hooks, idle_stopper, http_trackers = _build(
        options, _provider(options), check_config or separated
    )
    try:
        auth_mode(config)
        check_algorithms(config)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    if check_config:
        click.echo(render(SERVE_SETTINGS, values), nl=False)
        return
    if separated:
        _serve_separated(options, config)
        return
    _warn_if_holding_the_engine(options)
    if options.workers > 1:
        # Create the key once, before the workers race to create it.
        try:
            load_or_create_host_key(config.host_key_path)
        except HostKeyError as error:
            raise click.ClickException(str(error)) from None
        config.address = _fixed_port(config.address)
        if config.metrics_listen:
            config.metrics_listen = _fixed_port(config.metrics_listen)
        # Every worker writes its figures here; whichever answers a scrape adds them up.
        os.environ.setdefault(
            "PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="sandbox-ssh-metrics-")
        )
        shared_quota_table()  # made here, so that every worker counts in the same table
        _run_workers(
            options.workers,
            lambda: _run(_serve(config, provider, hooks, idle_stopper, http_trackers)),
        )
        return
    try:
        _run(_serve(config, provider, hooks, idle_stopper, http_trackers))
    except (HostKeyError, SandboxError) as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(
            f"cannot listen on {config.address}: {error.strerror or error}"
        ) from None


def _warn_if_holding_the_engine(options: Any) -> None:
    """Not root: nothing to separate; say so when this process can drive the engine."""
    if options.provider != "docker":
        return
    host = options.docker_host or os.environ.get("DOCKER_HOST") or ""
    path = host.removeprefix("unix://") if host.startswith("unix://") else "/var/run/docker.sock"
    if not host or host.startswith("unix://"):
        with contextlib.suppress(OSError):
            if os.path.exists(path) and os.access(path, os.W_OK):
                log.warning(
                    "serve runs as uid %d with the container engine's socket (%s): the process "
                    "that reads clients' bytes holds the engine; start it as root to "
                    "separate the two",
                    os.geteuid(),
                    path,
                )


def _check_engine(options: Any) -> None:
    """Refuse to start, in one line, what the broker would refuse: an engine too old, a
    runtime path required and unavailable, a TLS engine whose streams cannot be handed over.

    Checked here, before anything is forked, on a loop that is gone before the fork; the
    broker checks again and logs what it chose.
    """
    provider = DockerProvider(
        docker_host=options.docker_host, label=options.session_label, exec_path=options.exec_path
    )
    docker_log = logging.getLogger("sandbox_ssh.docker")
    level = docker_log.level
    docker_log.setLevel(logging.ERROR)  # the broker says it all once, when it prepares

    async def check() -> None:
        try:
            await provider.prepare()
        finally:
            await provider.close()

    try:
        asyncio.run(check())
    except SandboxError as error:
        raise click.ClickException(str(error)) from None
    finally:
        docker_log.setLevel(level)
    problem = provider.handover_problem()
    if problem and provider.exec_path != "runtime":
        raise click.ClickException(problem)


def _serve_separated(options: Any, config: Config) -> None:
    """Root: confined fronts that read the clients, and a broker that holds root (_privsep)."""
    if options.provider == "docker":
        _check_engine(options)
    try:
        user = front_user(options.user)
        host_keys = load_host_keys(config.host_key_path, config.extra_host_key_paths)
    except (FrontUserError, HostKeyError) as error:
        raise click.ClickException(str(error)) from None
    runtime = Path(tempfile.mkdtemp(prefix="sandbox-ssh-front-", dir="/run"))
    # Its folders first, then itself: given to the front's user last (root may lack the
    # capability that overrides file permissions, and 0700 would then shut it out).
    writable = [writable_dir(runtime / "tmp", user)]
    if options.workers > 1:
        metrics_dir = writable_dir(runtime / "metrics", user)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    writable.insert(0, writable_dir(runtime, user))
    # The fronts' temporary files (relayed listeners, kubeconfig certificates) go here.
    os.environ["TMPDIR"] = tempfile.tempdir = str(runtime / "tmp")
    if options.record_dir:
        writable.append(writable_dir(Path(options.record_dir), user))
    if options.audit_log:
        audit = writable_file(Path(options.audit_log), user)
        # Its folder, when it is the front's own, so that a rotated log can be made anew.
        writable.append(audit.parent if audit.parent.stat().st_uid == user.uid else audit)
    if options.workers > 1:
        config.address = _fixed_port(config.address)
        if config.metrics_listen:
            config.metrics_listen = _fixed_port(config.metrics_listen)
    shared_quota_table()  # made before the fork, so that every front counts in it
    host, port = parse_address(config.address)
    fronts: list[FrontSockets] = []
    brokers: list[socket.socket] = []
    try:
        for index in range(options.workers):
            listen = bind(host, port)
            metrics = bind(*parse_address(config.metrics_listen)) if config.metrics_listen else None
            theirs = None
            if options.provider == "docker":
                ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                brokers.append(ours)
            fronts.append(FrontSockets(index + 1, listen, metrics, theirs))
    except OSError as error:
        raise click.ClickException(
            f"cannot listen on {config.address}: {error.strerror or error}"
        ) from None

    def serve_front(front: FrontSockets, confine_now: Callable[[], Confinement]) -> int:
        for sock in brokers:
            sock.close()
        return _front(options, front, host_keys, confine_now, user)

    engine = options.docker_host or os.environ.get("DOCKER_HOST") or ""
    engine_socket = [engine.removeprefix("unix://")] if engine.startswith("unix://") else []
    pids = run_fronts(fronts, user, writable, serve_front, engine_socket)
    for front in fronts:
        for sock in front.all():
            sock.close()
    log.info(
        "started %d workers: %s (unprivileged fronts, as %s, uid %d)",
        len(pids),
        " ".join(map(str, pids)),
        user.name,
        user.uid,
    )
    if brokers:
        become_broker(
            list(zip(brokers, pids, strict=True)),
            [
                *(["--docker-host", options.docker_host] if options.docker_host else []),
                "--session-label",
                options.session_label,
                "--exec-path",
                options.exec_path,
                "--start-timeout",
                str(options.start_timeout),
                "--log-level",
                options.log_level,
                "--log-format",
                options.log_format,
                "--remove-at-exit",
                str(runtime),
            ],
        )
    # Kubernetes: nothing needs root; this parent gives it up as well, then waits.
    confine(user, [runtime])
    try:
        _wait_for(pids)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def _front(
    options: Any,
    front: FrontSockets,
    host_keys: list[Any],
    confine_now: Callable[[], Confinement],
    user: FrontUser,
) -> int:
    """One front, still root: built from the options, confined, then serving."""
    if front.broker is not None:
        provider: Provider | BrokerProvider = BrokerProvider(front.broker)
    else:
        provider = _provider(options)
    config, provider, hooks, idle_stopper, http_trackers = _build(options, provider)
    confinement = confine_now()
    log.info(
        "front %d (pid %d) runs as %s: no capabilities, no_new_privs, Landlock ABI %d, "
        "seccomp filter of %d rules",
        front.index,
        os.getpid(),
        user.name,
        confinement.landlock_abi,
        confinement.seccomp_rules,
    )
    try:
        return _run(
            _serve(
                config,
                provider,
                hooks,
                idle_stopper,
                http_trackers,
                adopt=(front.listen, host_keys, front.metrics),
            )
        )
    except (HostKeyError, SandboxError) as error:
        click.echo(f"Error: {error}", err=True)
        return 1


def _provider(options: Any) -> DockerProvider | KubernetesProvider:
    if options.provider == "docker":
        return DockerProvider(
            docker_host=options.docker_host,
            label=options.session_label,
            exec_path=options.exec_path,
            answer_timeout=options.start_timeout,
        )
    try:
        from .providers.kubernetes import KubernetesProvider
    except ImportError as error:
        raise click.UsageError(
            f"--provider kubernetes needs sandbox-ssh[kubernetes] installed ({error})"
        ) from None
    return KubernetesProvider(
        namespace=options.namespace or "default",
        label=options.session_label,
        container=options.k8s_container,
        kubeconfig=str(options.kubeconfig) if options.kubeconfig else None,
        context=options.kube_context,
        answer_timeout=options.start_timeout,
    )


def _build(
    options: Any,
    provider: Provider | BrokerProvider,
    dry_run: bool = False,
) -> tuple[
    Config,
    Provider | BrokerProvider,
    HttpHookClient,
    IdleStopper | None,
    list[HttpConnectionTracker],
]:
    host_keys: tuple[Path, ...] = options.host_key
    host_key_path = host_keys[0] if host_keys else default_host_key_path()
    token_file: Path | None = options.hook_token_file
    token = token_file.read_text().strip() if token_file else None
    hooks = HttpHookClient(HttpHookSettings(token=token or None, timeout=options.hook_timeout))
    trackers: list[ConnectionTracker] = []
    idle_stopper = None
    if options.idle_stop:
        if not isinstance(provider, SandboxStopper):
            raise click.UsageError(
                f"--idle-stop: the {options.provider} provider cannot stop sandboxes"
            )
        idle_stopper = IdleStopper(provider, options.idle_stop)
    if idle_stopper is not None:
        trackers.append(idle_stopper)
    http_trackers = [HttpConnectionTracker(hooks, options.track_url)] if options.track_url else []
    if options.track_refuses and not http_trackers:
        raise click.UsageError("--track-refuses needs --track-url")
    if not options.track_refuses:
        trackers.extend(http_trackers)  # else the hook is the admitter, which tracks too
    ensurer: SandboxEnsurer | None = provider if options.auto_start else None
    if options.ensure_url:
        ensurer = HttpSandboxEnsurer(hooks, options.ensure_url)
    config = Config(
        address=options.listen,
        host_key_path=host_key_path,
        sandbox_provider=provider,
        sandbox_ensurer=ensurer,
        user_info_fetcher=HttpUserInfoFetcher(hooks, options.user_info_url)
        if options.user_info_url
        else provider,
        env_var_fetcher=HttpEnvVarFetcher(hooks, options.env_url) if options.env_url else None,
        connection_tracker=CombinedTracker(*trackers) if trackers else None,
        disabled_forwarding=frozenset(ForwardingKind)
        if options.no_forwarding
        else frozenset(ForwardingKind(kind) for kind in options.disable_forwarding),
        agent_forwarding=not options.no_agent_forwarding,
        record_dir=options.record_dir,
        record_exec=options.record == "exec",
        record_input=options.record_input,
        record_max_bytes=options.record_max_bytes,
        sftp_server_path=options.sftp_server,
        ensure_timeout=options.ensure_timeout,
        user_fallback_root=options.user_fallback == "root",
        accept_env=tuple(options.accept_env) or None,
        set_env=parse_set_env(options.set_env),
        reuse_port=True,  # a new instance can take over the port while this one drains
        extra_host_key_paths=tuple(host_keys[1:]),
        auth=options.auth,
        token_key_file=options.token_key_file,
        token_verifier=_token_verifier(options, hooks, dry_run),
        max_connection_age=options.max_connection_age or 0.0,
        insecure_allow_no_auth=options.insecure_allow_no_auth,
        admin_keys_path=options.admin_keys,
        authorized_keys_dir=options.authorized_keys_dir,
        trusted_user_ca_keys_path=options.trusted_user_ca_keys,
        authorized_keys_fetcher=HttpAuthorizedKeysFetcher(hooks, options.authorized_keys_url)
        if options.authorized_keys_url
        else None,
        session_id_pattern=options.session_id_pattern,
        login_timeout=options.login_grace_time,
        max_sessions=options.max_sessions,
        max_startups=options.max_startups,
        max_connections_per_session=options.max_connections_per_session,
        max_forwarded_per_session=options.max_forwarded_per_session,
        tenant_loop_share=options.tenant_loop_share,
        connection_admitter=http_trackers[0] if options.track_refuses else None,
        quotas=Quotas(
            connections=options.quota_connections,
            channels=options.quota_channels,
            starts_per_minute=options.quota_starts_per_minute,
            bytes_in_per_hour=options.quota_bytes_in_per_hour,
            bytes_out_per_hour=options.quota_bytes_out_per_hour,
        ),
        max_concurrent_starts=options.max_concurrent_starts,
        max_concurrent_starts_per_sandbox=options.max_concurrent_starts_per_sandbox,
        start_timeout=options.start_timeout,
        client_alive_interval=options.client_alive_interval,
        client_alive_count_max=options.client_alive_count_max,
        audit_sink=AuditLog(options.audit_log) if options.audit_log and not dry_run else None,
        connections_per_minute=options.max_connections_per_minute,
        ban_after_failures=options.ban_after_failures,
        ban_seconds=options.ban_time,
        compression=("zlib@openssh.com", "none") if options.compression else ("none",),
        metrics_listen=options.metrics_listen,
        drain_timeout=options.drain_timeout,
    )
    for name in ("kex_algorithms", "ciphers", "macs", "host_key_algorithms"):
        chosen = getattr(options, name)
        if chosen:
            setattr(config, name, chosen)
    return config, provider, hooks, idle_stopper, http_trackers


def _token_verifier(options: Any, hooks: HttpHookClient, dry_run: bool) -> TokenVerifier | None:
    """The hook's, or one with the shared key: read here, as root before a front gives root
    up, so that the key file may be root's alone."""
    if options.token_url:
        return CachedTokenVerifier(HttpTokenVerifier(hooks, options.token_url))
    if options.token_key_file and not dry_run:
        try:
            return HmacTokenVerifier(load_token_key(options.token_key_file))
        except ValueError as error:
            raise click.ClickException(str(error)) from None
    return None


_HOST_OPTION = click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address of the gateway."
)
_PORT_OPTION = click.option(
    "--port", default=2222, show_default=True, type=click.IntRange(1, 65535)
)
_ALIAS_OPTION = click.option("--alias", help="The Host name in the block. [default: SESSION]")
_HOST_KEY_OPTION = click.option(
    "--host-key",
    "host_key",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help=f"The gateway's host key (or its .pub). [default: {default_host_key_path()}]",
)
_TTL_OPTION = click.option(
    "--ttl",
    required=True,
    callback=lambda ctx, param, value: _cli_duration(value),
    help="How long it is valid, e.g. 90s, 15m, 2h.",
)


def _session_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not re.fullmatch(DEFAULT_SESSION_ID_PATTERN, value):
        raise click.BadParameter(f"{value!r} is not a session ID")
    return value


def _cli_duration(value: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    if seconds <= 0:
        raise click.BadParameter("must be more than 0")
    return seconds


def _known_hosts_entry(host: str, port: int, host_key: Path | None) -> str:
    key_path = host_key or default_host_key_path()
    public = key_path if key_path.suffix == ".pub" else Path(f"{key_path}.pub")
    try:
        key_type, key_data = public.read_text().split()[:2]
    except (OSError, ValueError) as error:
        raise click.ClickException(
            f"cannot read the gateway's host key {public}: {error}"
        ) from None
    known = f"[{host}]:{port}" if port != 22 else host
    return f"{known} {key_type} {key_data}"


def _config_block(alias: str, host: str, port: int, user: str, known: str) -> str:
    return (
        f"Host {alias}\n"
        f"    HostName {host}\n"
        f"    Port {port}\n"
        f"    User {user}\n"
        "    # The gateway's host key, trusted from the first connection (OpenSSH 8.5+):\n"
        f"    KnownHostsCommand /bin/echo {known}\n"
        "    # Older clients: put this line in ~/.ssh/known_hosts instead.\n"
        f"    #   {known}\n"
    )


@main.command("ssh-config")
@click.argument("session")
@_HOST_OPTION
@_PORT_OPTION
@_ALIAS_OPTION
@_HOST_KEY_OPTION
def ssh_config(
    session: str, host: str, port: int, alias: str | None, host_key: Path | None
) -> None:
    """Print a ~/.ssh/config block for SESSION: paste it, then `ssh SESSION` (or connect from an
    IDE) with the gateway's host key already trusted."""
    known = _known_hosts_entry(host, port, host_key)
    click.echo(_config_block(alias or session, host, port, session, known))


@main.command("token")
@click.argument("session", callback=_session_id)
@_TTL_OPTION
@click.option(
    "--token-key-file",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The shared key the gateway's --token-key-file names.",
)
@_HOST_OPTION
@_PORT_OPTION
@_ALIAS_OPTION
@_HOST_KEY_OPTION
def token_command(
    session: str,
    ttl: float,
    token_key_file: Path,
    host: str,
    port: int,
    alias: str | None,
    host_key: Path | None,
) -> None:
    """Mint a token for SESSION (gateways with --auth token and the same --token-key-file), and
    print the ~/.ssh/config block and the ssh command that use it, host key included."""
    try:
        key = load_token_key(token_key_file)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    known = _known_hosts_entry(host, port, host_key)
    token = mint_token(key, session, ttl)
    expiry = int(token.split(".", 1)[0])
    until = datetime.datetime.fromtimestamp(expiry, datetime.UTC)
    user = f"{session}#{token}"
    click.echo(
        f"# A token for session {session}, valid for {format_duration(ttl)} "
        f"(until {until:%Y-%m-%d %H:%M:%S} UTC).\n"
        f"# Put this block in ~/.ssh/config, then: ssh {alias or session}\n"
        + _config_block(alias or session, host, port, user, known)
        + "# Or at once (the token is then in this machine's process list while ssh runs):\n"
        + f"ssh -p {port} -o 'KnownHostsCommand=/bin/echo {known}' '{user}@{host}'"
    )


@main.command("sign-key")
@click.argument("session", callback=_session_id)
@click.argument("public_key", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@_TTL_OPTION
@click.option(
    "--ca-key",
    required=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The user CA's private key; the gateway's --trusted-user-ca-keys holds its public half.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the certificate. [default: PUBLIC_KEY with -cert.pub, as ssh-keygen]",
)
def sign_key(session: str, public_key: Path, ttl: float, ca_key: Path, output: Path | None) -> None:
    """Sign PUBLIC_KEY as a user certificate for SESSION (its one principal), valid for --ttl:
    `ssh -i KEY SESSION@gateway` then logs in on a gateway that trusts the CA."""
    try:
        certificate = sign_user_key(ca_key, public_key, session, ttl)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    stem = public_key.name[: -len(".pub")] if public_key.name.endswith(".pub") else public_key.name
    target = output or public_key.with_name(f"{stem}-cert.pub")
    certificate.write_certificate(str(target))
    click.echo(
        f"{target}: a certificate for session {session}, valid for {format_duration(ttl)}; "
        f"ssh -i {public_key.with_name(stem)} finds it next to the key."
    )


def _fixed_port(listen: str) -> str:
    """Workers must share one port: turn port 0 into a free port chosen now."""
    host, port = parse_address(listen)
    if port:
        return listen
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.bind((host, 0))
        return format_address(host or "0.0.0.0", probe.getsockname()[1])


def _run_workers(count: int, serve_one: Callable[[], object]) -> None:
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
    _wait_for(pids)


def _wait_for(pids: list[int]) -> None:
    """Pass stop signals on to ``pids`` and wait for them; non-zero when one failed."""

    def forward(signum: int, frame: object) -> None:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    failed = 0
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        failed += os.waitstatus_to_exitcode(status) != 0
    if failed:
        raise click.ClickException(f"{failed} of {len(pids)} workers failed")


# The default executor's threads (asyncssh builds each connection's options there), all
# started at once: the gateway's thread count then stays the same whatever the load.
_EXECUTOR_THREADS = 4


def _started_pool(size: int) -> concurrent.futures.ThreadPoolExecutor:
    pool = concurrent.futures.ThreadPoolExecutor(size, thread_name_prefix="sandbox-ssh")
    everyone = threading.Barrier(size + 1)
    for _ in range(size):
        pool.submit(everyone.wait)  # none is idle yet, so each submit starts a thread
    everyone.wait()
    return pool


def _run(main_coroutine: Coroutine[Any, Any, int]) -> int:
    # uvloop must own the loop from the start; installing it inside asyncio.run is too late.
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main_coroutine)
    return uvloop.run(main_coroutine)


async def _serve(
    config: Config,
    provider: Provider | BrokerProvider,
    hooks: HttpHookClient,
    idle_stopper: IdleStopper | None,
    http_trackers: list[HttpConnectionTracker],
    adopt: tuple[socket.socket, list[Any], socket.socket | None] | None = None,
) -> int:
    """Serve until stopped; the exit status (1 once the privileged helper is gone)."""
    server = Server(config)
    if adopt is not None:
        listen_sock, host_keys, metrics_sock = adopt
        server.adopt(listen_sock, host_keys, metrics_sock)
    loop = asyncio.get_running_loop()
    loop.set_default_executor(_started_pool(_EXECUTOR_THREADS))
    stopping: list[asyncio.Task[None]] = []
    status = 0

    def request_stop(name: str) -> None:
        """SIGTERM drains (a second one stops at once); SIGINT stops at once."""
        if name == "SIGTERM" and not stopping:
            log.info("received SIGTERM: draining (no new connections; live ones go on)")
            stopping.append(loop.create_task(server.drain()))
            return
        log.info("received %s, stopping", name)
        stopping.append(loop.create_task(server.stop()))

    def broker_lost(why: str) -> None:
        """No new session can start (each is refused in one line): the port goes to the
        next instance at once, live sessions end where they can, then this front exits
        non-zero, as serve's broker already has, so that a supervisor restarts it."""
        nonlocal status
        status = 1
        if not stopping:
            stopping.append(loop.create_task(server.drain()))

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, request_stop, signal.Signals(signum).name)
    if isinstance(config.audit_sink, AuditLog):
        loop.add_signal_handler(signal.SIGHUP, config.audit_sink.reopen)
    if isinstance(provider, BrokerProvider):
        provider.on_lost(broker_lost)
    try:
        await server.start()
        await server.serve_forever()
    finally:
        for task in stopping:
            await task
        if idle_stopper is not None:
            idle_stopper.close()
        for http_tracker in http_trackers:
            await http_tracker.drain()
        await hooks.close()
        await provider.close()
    return status
