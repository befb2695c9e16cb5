"""The settings of `sandbox-ssh serve`, in the order --help and the README list them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import platformdirs

from .._session.environment import parse_set_env
from .._session.forwarding import ForwardingKind
from .._session.resolve import DEFAULT_SESSION_ID_PATTERN
from ..config import parse_address, parse_duration, parse_size
from ..providers.docker import DEFAULT_LABEL, EXEC_PATHS
from .settings import Setting

PROVIDERS = ("docker", "kubernetes")


def default_host_key_path() -> Path:
    return Path(platformdirs.user_state_dir("sandbox-ssh")) / "ssh_host_ed25519_key"


def _names(ctx: click.Context, param: click.Parameter, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return tuple(str(name).strip() for name in value if str(name).strip())
    return tuple(name.strip() for name in str(value).split(",") if name.strip())


def _duration(ctx: click.Context, param: click.Parameter, value: Any) -> float | None:
    if value is None or isinstance(value, float):
        return value
    try:
        return parse_duration(str(value))
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _size(ctx: click.Context, param: click.Parameter, value: Any) -> int | None:
    if value is None or isinstance(value, int):
        return value
    try:
        return parse_size(str(value))
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def _set_env(ctx: click.Context, param: click.Parameter, value: Any) -> tuple[str, ...]:
    try:
        parse_set_env(list(value or ()))
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    return tuple(value or ())


def _address(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is None:
        return None
    try:
        parse_address(str(value))
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    return str(value)


FILE = click.Path(dir_okay=False, path_type=Path)
DIRECTORY = click.Path(file_okay=False, path_type=Path)

SERVE_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "listen",
        "HOST:PORT to listen on; ':PORT' means every interface, port 0 a free port.",
        default="127.0.0.1:2222",
        callback=_address,
    ),
    Setting(
        "host-key",
        "Host key file. An ed25519 key is created there (0600, directories 0700) when missing; "
        "an unreadable or corrupt file, or one readable by group or others, stops start-up and "
        "is never overwritten. Repeat to offer more keys, one per key type (an RSA key for old "
        "clients signs with SHA-2 only).",
        type=FILE,
        multiple=True,
        default_text="$XDG_STATE_HOME/sandbox-ssh/ssh_host_ed25519_key (~/.local/state/...)",
    ),
    Setting(
        "provider",
        "Where sandboxes live: docker (containers of a Docker Engine or Podman) or kubernetes "
        "(pods; needs sandbox-ssh[kubernetes]).",
        type=click.Choice(PROVIDERS),
        default="docker",
    ),
    Setting(
        "docker-host",
        "Docker Engine API address: unix:///path, or tcp://host:port (TLS through "
        "DOCKER_TLS_VERIFY and DOCKER_CERT_PATH).",
        metavar="URL",
        default_text="$DOCKER_HOST, then unix:///var/run/docker.sock",
    ),
    Setting(
        "namespace",
        "Kubernetes namespace whose pods are sandboxes (repeatable).",
        multiple=True,
        metavar="NAME",
        default_text="default",
    ),
    Setting(
        "kubeconfig",
        "Kubernetes: kubeconfig file to use.",
        type=FILE,
        default_text="$KUBECONFIG, then ~/.kube/config, then the in-cluster service account",
    ),
    Setting("kube-context", "Kubernetes: kubeconfig context to use.", metavar="NAME"),
    Setting(
        "k8s-container",
        "Kubernetes: container processes run in.",
        metavar="NAME",
        default_text="the pod's sandbox-ssh.container annotation, else its first container",
    ),
    Setting(
        "session-label",
        "Container or pod label whose value is the session ID.",
        default=DEFAULT_LABEL,
        metavar="KEY",
    ),
    Setting(
        "exec-path",
        "How processes start: runtime (the container's OCI runtime, bytes straight to the "
        "gateway; needs root on the Docker host and the local socket), api (Docker's exec "
        "API, works anywhere), or auto (runtime when possible, else api, saying why).",
        type=click.Choice(EXEC_PATHS),
        default="auto",
    ),
    Setting(
        "auto-start",
        "Start a created, exited or paused sandbox when a client connects; when off, such a "
        "sandbox is refused.",
        default=True,
        negatable=True,
    ),
    Setting("no-forwarding", "Refuse every kind of port and socket forwarding.", flag=True),
    Setting(
        "no-agent-forwarding",
        "Refuse ssh -A. Otherwise a forwarded agent is reached from a socket in a fresh "
        "directory inside the sandbox, owned by the session user (0700, socket 0600), as "
        "SSH_AUTH_SOCK.",
        flag=True,
    ),
    Setting(
        "disable-forwarding",
        "Refuse one kind of forwarding (repeatable): local (-L, -D, -W), remote (-R), "
        "local-socket (-L to a unix socket), remote-socket (-R from a unix socket).",
        type=click.Choice([kind.value for kind in ForwardingKind]),
        multiple=True,
    ),
    Setting(
        "sftp-server",
        "Path of sftp-server inside the sandboxes.",
        metavar="PATH",
        default_text="the first of /usr/lib/openssh/sftp-server, "
        "/usr/libexec/openssh/sftp-server, /usr/lib/ssh/sftp-server, /usr/libexec/sftp-server",
    ),
    Setting(
        "ensure-timeout",
        "Longest a sandbox may take to start before the client is refused.",
        type=click.FloatRange(min=0.1),
        default=60.0,
        metavar="SECONDS",
    ),
    Setting(
        "user-fallback",
        "When looking up the session's user fails, run as root (logged each time) instead of "
        "refusing the connection.",
        type=click.Choice(["root"]),
    ),
    Setting(
        "accept-env",
        "Client env variables to accept, as shell-style patterns (repeatable), like sshd's "
        "AcceptEnv; others are ignored silently.",
        multiple=True,
        metavar="PATTERN",
        default_text="accept all",
    ),
    Setting(
        "set-env",
        "Set NAME=VALUE in every process's environment (repeatable), over what the client "
        "sends, like sshd's SetEnv; the first value given for a name wins.",
        multiple=True,
        metavar="NAME=VALUE",
        callback=_set_env,
        hidden_value=True,  # values may be credentials: --check-config prints NAME=***
    ),
    Setting(
        "idle-stop",
        "Stop a sandbox once it has had no SSH connection for this long (e.g. 30s, 10m, 1h); "
        "the next connection starts it again.",
        callback=_duration,
        metavar="DURATION",
    ),
    Setting(
        "ensure-url",
        "HTTP hook that makes a session's sandbox run (docs/http-hooks.md).",
        metavar="URL",
        hidden_value=True,
    ),
    Setting(
        "user-info-url", "HTTP hook giving a session's user.", metavar="URL", hidden_value=True
    ),
    Setting(
        "env-url", "HTTP hook giving a session's environment.", metavar="URL", hidden_value=True
    ),
    Setting(
        "track-url",
        "HTTP hook told of each connection and its end.",
        metavar="URL",
        hidden_value=True,
    ),
    Setting(
        "track-refuses",
        "Await the track hook's connect call once a connection authenticated, and refuse the "
        "connection when the hook refuses (4xx, its error shown) or cannot answer: quotas kept "
        "by the platform across replicas (docs/http-hooks.md).",
        flag=True,
    ),
    Setting(
        "hook-token-file",
        "File holding the bearer token sent to the HTTP hooks.",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
    ),
    Setting(
        "hook-timeout",
        "Timeout of one HTTP hook attempt (3 attempts, with backoff).",
        type=click.FloatRange(min=0.1),
        default=5.0,
        metavar="SECONDS",
    ),
    Setting(
        "workers",
        "Processes sharing the listening port (SO_REUSEPORT), each serving whole connections.",
        type=click.IntRange(min=1, max=64),
        default=1,
    ),
    Setting(
        "user",
        "When serve starts as root: the unprivileged user its fronts run as (everything that "
        "reads clients' bytes: SSH, hooks, metrics), with no capabilities, no_new_privs and a "
        "seccomp filter; root stays with a separate broker that has no network socket. The "
        "default user is made (useradd --system) when missing; it must be able to read the "
        "files read per connection (--authorized-keys-dir, --admin-keys, "
        "--trusted-user-ca-keys, the kubeconfig).",
        default_text="sandbox-ssh",
        metavar="NAME",
    ),
    Setting(
        "auth",
        "none: the username alone admits (allowed on loopback only); publickey: a key from the "
        "session's or the admin's authorized keys, or a certificate; token: a short-lived token "
        "as the password, by keyboard-interactive, or as SESSION#TOKEN in the username; "
        "publickey,token: either.",
        type=click.Choice(["none", "publickey", "token", "publickey,token"]),
        default_text="none on loopback, publickey elsewhere",
    ),
    Setting(
        "token-key-file",
        "File whose first line is the shared key of --auth token: tokens are HMAC-SHA256 over "
        "session ID and expiry (mint them with `sandbox-ssh token`).",
        type=click.Path(dir_okay=False, exists=True, path_type=Path),
    ),
    Setting(
        "token-url",
        "HTTP hook checking the tokens of --auth token (docs/http-hooks.md); accepted reusable "
        "tokens are remembered for at most 60 s, single-use ones never.",
        metavar="URL",
        hidden_value=True,
    ),
    Setting(
        "max-connection-age",
        "Close a connection this long after it authenticated (e.g. 8h); by default never, and "
        "a token or certificate expiring meanwhile does not close it, as under sshd.",
        callback=_duration,
        metavar="DURATION",
    ),
    Setting(
        "insecure-allow-no-auth",
        "Allow --auth none on a non-loopback address (anyone who reaches it gets any sandbox).",
        flag=True,
    ),
    Setting("admin-keys", "authorized_keys file valid for every session.", type=FILE),
    Setting(
        "authorized-keys-dir",
        "Directory holding one authorized_keys file per session ID.",
        type=DIRECTORY,
    ),
    Setting(
        "authorized-keys-url",
        "HTTP hook giving a session's authorized_keys lines.",
        metavar="URL",
        hidden_value=True,
    ),
    Setting(
        "trusted-user-ca-keys",
        "CA public keys; a user certificate is valid for session S when S is a principal.",
        type=FILE,
    ),
    Setting(
        "session-id-pattern",
        "Regular expression a session ID must match in full.",
        default=DEFAULT_SESSION_ID_PATTERN,
    ),
    Setting(
        "login-grace-time",
        "Time a client has to authenticate.",
        type=click.FloatRange(min=1),
        default=30.0,
        metavar="SECONDS",
    ),
    Setting(
        "max-sessions",
        "Session channels per connection (shells, commands, SFTP), like sshd.",
        type=click.IntRange(min=1),
        default=10,
    ),
    Setting(
        "max-startups",
        "Connections that have not finished authenticating; more are dropped.",
        type=click.IntRange(min=1),
        default=100,
    ),
    Setting(
        "max-connections-per-session",
        "Live connections per session ID.",
        type=click.IntRange(min=1),
        default=100,
    ),
    Setting(
        "quota-connections",
        "Per tenant (the session ID, or the user-info hook's tenant): live connections, across "
        "--workers. By default unbounded here; the hook may give each tenant its own quotas.",
        type=click.IntRange(min=0),
    ),
    Setting(
        "quota-channels",
        "Per tenant: open channels (sessions and forwarded connections), across --workers.",
        type=click.IntRange(min=0),
    ),
    Setting(
        "quota-starts-per-minute",
        "Per tenant: processes started in a clock minute, across --workers.",
        type=click.IntRange(min=0),
    ),
    Setting(
        "quota-bytes-in-per-hour",
        "Per tenant: bytes from clients in a clock hour (e.g. 10G), across --workers; past it "
        "the tenant's connections are closed and new ones refused until the hour ends.",
        callback=_size,
        metavar="SIZE",
    ),
    Setting(
        "quota-bytes-out-per-hour",
        "Per tenant: bytes to clients in a clock hour, as --quota-bytes-in-per-hour.",
        callback=_size,
        metavar="SIZE",
    ),
    Setting(
        "max-forwarded-per-session",
        "Forwarded connections (-L, -D, -W, -R, socket and agent forwards) open at once per "
        "session ID; more are refused, or closed on accept for -R.",
        type=click.IntRange(min=1),
        default=512,
    ),
    Setting(
        "tenant-loop-share",
        "While another tenant is interactive (handshaking, or within 1 s of a new channel or a "
        "keystroke), the most of the event loop's time one tenant's output may take (0-1]; "
        "1 turns the bound off.",
        type=click.FloatRange(min=0, max=1, min_open=True),
        default=0.25,
    ),
    Setting(
        "max-concurrent-starts",
        "Process starts run at once; more wait their turn, round-robin over sandboxes and "
        "connections.",
        type=click.IntRange(min=1),
        default_text="2 per CPU, at least 4",
    ),
    Setting(
        "max-concurrent-starts-per-sandbox",
        "Of those, how many one sandbox may hold at once, so that a sandbox whose starts hang "
        "cannot take every slot.",
        type=click.IntRange(min=1),
        default_text="half of --max-concurrent-starts",
    ),
    Setting(
        "start-timeout",
        "Longest a process start may hold its slot (the runtime's exec, the sandbox's first "
        "answer); then the client gets a one-line reason.",
        callback=_duration,
        default="30s",
        metavar="DURATION",
    ),
    Setting(
        "client-alive-interval",
        "Probe an idle client this often (0: off).",
        type=click.FloatRange(min=0),
        default=0.0,
        metavar="SECONDS",
    ),
    Setting(
        "client-alive-count-max",
        "Unanswered probes before the connection is dropped.",
        type=click.IntRange(min=1),
        default=3,
    ),
    Setting(
        "max-connections-per-minute",
        "New connections per source address (0: no limit).",
        type=click.IntRange(min=0),
        default=3000,
    ),
    Setting(
        "ban-after-failures",
        "Rejected keys from one address that ban it for --ban-time (0: never).",
        type=click.IntRange(min=0),
        default=20,
    ),
    Setting(
        "ban-time", "How long a ban lasts.", default="10m", metavar="DURATION", callback=_duration
    ),
    Setting(
        "kex-algorithms",
        "Key exchange algorithms, comma-separated, in order of preference.",
        metavar="LIST",
        callback=_names,
        default_text="see SECURITY.md",
    ),
    Setting(
        "ciphers",
        "Ciphers, comma-separated, in order of preference.",
        metavar="LIST",
        callback=_names,
        default_text="see SECURITY.md",
    ),
    Setting(
        "macs",
        "MACs (used with non-AEAD ciphers), comma-separated.",
        metavar="LIST",
        callback=_names,
        default_text="see SECURITY.md",
    ),
    Setting(
        "host-key-algorithms",
        "Signature algorithms for host and user keys, comma-separated. Unknown names in any "
        "algorithm list stop start-up with a clear error.",
        metavar="LIST",
        callback=_names,
        default_text="see SECURITY.md",
    ),
    Setting(
        "compression",
        "Offer zlib@openssh.com compression after authentication.",
        default=False,
        negatable=True,
    ),
    Setting(
        "audit-log",
        "Append audit events as JSON lines (reopened on SIGHUP, for rotation; see SECURITY.md).",
        type=FILE,
    ),
    Setting(
        "record-dir",
        "Record sessions as asciinema v2 .cast files in DIR/<session ID>/ (0700; files "
        "0600), written as they run. The audit log's session events name the file.",
        type=DIRECTORY,
        default_text="off",
    ),
    Setting(
        "record",
        "What --record-dir records: pty (sessions with a terminal) or exec (every shell, "
        "exec and PTY session).",
        type=click.Choice(["pty", "exec"]),
        default="pty",
    ),
    Setting(
        "record-input",
        "Record what the client types too (off: it captures passwords typed at prompts).",
        flag=True,
    ),
    Setting(
        "record-max-bytes",
        "Largest recording per session channel; past it a marker ends the file and the "
        "session goes on.",
        callback=_size,
        default="100M",
        metavar="SIZE",
    ),
    Setting(
        "metrics-listen",
        "HOST:PORT of the HTTP endpoint serving /metrics (Prometheus), /healthz and /readyz.",
        callback=_address,
        default_text="off",
    ),
    Setting(
        "drain-timeout",
        "On SIGTERM, stop accepting and let live connections go on for this long before "
        "hanging them up (a second SIGTERM, or SIGINT, stops at once).",
        callback=_duration,
        default="1h",
        metavar="DURATION",
    ),
    Setting(
        "log-format",
        "text: one line per event; json: one JSON object per line.",
        type=click.Choice(["text", "json"]),
        default="text",
    ),
    Setting(
        "log-level",
        "Log verbosity. Logs go to stderr: a line when a connection opens (session, remote "
        "address, sandbox, user) and one when it closes (duration, how it ended).",
        type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
        default="info",
    ),
)
