# Shared set-up for scripts/test.sh and scripts/demo.sh (sourced, not run).
# Installs the system packages and a virtualenv with the project, and makes sure dockerd runs.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SANDBOX_SSH_VENV:-$REPO_ROOT/.venv}"
# Debian's Python: serve's unprivileged fronts must be able to read the interpreter and its
# standard library, which a Python installed under /root (pyenv) does not allow.
BASE_PYTHON="${SANDBOX_SSH_PYTHON:-$( [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || command -v python3)}"

install_system_packages() {
    local wanted=(docker.io debootstrap openssh-client rsync socat python3-venv)
    local missing=()
    for pkg in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        echo "installing system packages: ${missing[*]}"
        # The lock the tests take too (tests/support/system.py): one apt at a time.
        flock /run/lock/sandbox-ssh-apt.lock sh -c 'apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null' sh "${missing[@]}"
    fi
}

# The project, editable, with its dependencies at the exact versions and hashes of a lock file
# (scripts/lock.sh): requirements/test.lock for "[test]", runtime.lock otherwise.
install_python_package() {
    local extras="$1" lock="$REPO_ROOT/requirements/runtime.lock"
    [[ "$extras" == *test* ]] && lock="$REPO_ROOT/requirements/test.lock"
    if [ -x "$VENV/bin/python" ] && ! grep -q "^home = $(dirname "$BASE_PYTHON")\$" "$VENV/pyvenv.cfg"; then
        rm -rf "$VENV"  # made from another Python: made again from $BASE_PYTHON
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        "$BASE_PYTHON" -m venv "$VENV"
    fi
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install -q --require-hashes -r "$lock"
    "$VENV/bin/python" -m pip install -q --no-deps -e "$REPO_ROOT$extras"
}

start_dockerd() {
    if docker info >/dev/null 2>&1; then
        return
    fi
    echo "starting dockerd"
    nohup dockerd >/var/log/sandbox-ssh-dockerd.log 2>&1 &
    for _ in $(seq 300); do
        docker info >/dev/null 2>&1 && return
        sleep 0.2
    done
    echo "dockerd did not start; see /var/log/sandbox-ssh-dockerd.log" >&2
    exit 1
}
