"""Privilege separation of ``sandbox-ssh serve`` started as root.

* ``user.py``: the unprivileged user the fronts run as (``--user``).
* ``confine.py``: what a front does to itself right after the fork, before it reads a
  byte from a client: its user and groups, no capabilities in any set,
  ``no_new_privs``, writes only beneath its state and log paths (Landlock), and a
  seccomp filter (``seccomp.py``) refusing exec, ptrace, mounts, namespaces, modules
  and kexec.
* ``split.py``: serve's part: ports bound as root, fronts forked and confined, then
  the process becomes the broker (``sandbox_ssh._broker``), the only root process.
"""
