"""The broker: the only part of sandbox-ssh that runs as root, as a program of its own.

``sandbox-ssh serve`` started as root binds its ports, forks its fronts (which drop
to an unprivileged user before they read a byte from a client: ``sandbox_ssh._front``)
and then becomes this program (``python -m sandbox_ssh._broker``). The broker:

* listens on no network socket and never loads the SSH side of the package;
* serves only its own fronts, each over a socketpair made before the fork;
* answers the fixed request table of ``protocol.py``, close to the provider protocol,
  by running the Docker provider (the runtime path's shim, the exec API, sockets in
  sandboxes' namespaces) in this process;
* derives every container, PID, path and namespace itself from the sandbox it found
  for a session ID, and sends descriptors, never bytes of a session.

Everything else of the package (``sandbox_ssh/`` outside this folder) runs in the
fronts, unprivileged, or in the library's embedding process.
"""
