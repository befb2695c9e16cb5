"""The program a sandbox runs (with python3) to give the gateway sockets over stdio.

For providers whose runtime offers only exec (Kubernetes): the gateway runs it
as the session user, so every socket it makes or reaches is checked with that
user's rights, inside the sandbox's own network and filesystem.

``connect tcp HOST PORT`` / ``connect unix PATH``: connects, says ``OK`` or
``ERR reason`` on the first line of stdout, then relays raw bytes (stdin EOF
half-closes the socket).

``listen tcp HOST PORT`` / ``listen unix PATH`` / ``listen agent``: binds, says
``OK PORT-OR-PATH`` or ``ERR reason``, then multiplexes every accepted
connection over stdio in frames (see _frames.py). When stdin ends (the gateway
is gone), it closes everything and removes the socket files it made.

Kept to what Python 3.5 has, as sandbox images carry old interpreters too.
"""

HELPER = r"""
import os, selectors, socket, struct, sys, tempfile
HEADER = struct.Struct(">IBI")
OPEN, DATA, EOF, CLOSE = 1, 2, 3, 4
out = sys.stdout.buffer
def say(line):
    out.write(line.encode("utf-8", "replace") + b"\n"); out.flush()
def reason(error):
    text = getattr(error, "strerror", None) or str(error) or type(error).__name__
    return text.replace("\n", " ")
def read_stdin():
    try:
        return os.read(0, 65536)
    except OSError:
        return b""
def relay(sock):
    # One thread per direction, so neither waits on the other; each EOF is passed on.
    import threading
    def up():
        while True:
            data = read_stdin()
            if not data:
                try:
                    sock.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                return
            try:
                sock.sendall(data)
            except OSError:
                return
    sender = threading.Thread(target=up)
    sender.daemon = True
    sender.start()
    while True:
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            break
        out.write(data); out.flush()
    out.close()
    sender.join()
def connect(kind, args):
    try:
        if kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(args[0])
        else:
            sock = socket.create_connection((args[0], int(args[1])))
    except (OSError, ValueError) as error:
        say("ERR " + reason(error)); return 1
    say("OK")
    relay(sock)
    return 0
def frame(kind, conn_id, data=b""):
    out.write(HEADER.pack(conn_id, kind, len(data)) + data); out.flush()
def listen(kind, args):
    made = []
    try:
        if kind == "tcp":
            host, port = args[0], int(args[1])
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            server = socket.socket(family, socket.SOCK_STREAM)
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind((host, port))
            where = str(server.getsockname()[1])
        else:
            if kind == "agent":
                directory = tempfile.mkdtemp(prefix="ssh-sandbox-")
                made.append(directory)
                path = os.path.join(directory, "agent.sock")
                os.umask(0o177)
            else:
                path = args[0]
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.bind(path)
            made.insert(0, path)
            where = path
        server.listen(128)
    except (OSError, ValueError) as error:
        say("ERR " + reason(error)); cleanup(made); return 1
    say("OK " + where)
    try:
        serve(server)
    finally:
        cleanup(made)
    return 0
def cleanup(made):
    for path in made:
        try:
            os.rmdir(path) if os.path.isdir(path) else os.unlink(path)
        except OSError:
            pass
class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.out = bytearray()  # bytes from the gateway not yet written to the socket
        self.read_done = False  # the socket said EOF (passed on)
        self.write_eof = False  # the gateway said EOF: shut down once out is written
        self.write_done = False
def serve(server):
    # Never blocks on one connection: what a socket cannot take yet waits in its buffer.
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ, None)
    sel.register(server, selectors.EVENT_READ, None)
    conns = {}
    next_id = [1]
    pending = bytearray()
    def watch(conn_id):
        conn = conns[conn_id]
        events = (0 if conn.read_done else selectors.EVENT_READ) | (
            selectors.EVENT_WRITE if conn.out else 0)
        try:
            sel.unregister(conn.sock)
        except KeyError:
            pass
        if events:
            sel.register(conn.sock, events, conn_id)
    def drop(conn_id, tell):
        conn = conns.pop(conn_id)
        try:
            sel.unregister(conn.sock)
        except KeyError:
            pass
        conn.sock.close()
        if tell:
            frame(CLOSE, conn_id)
    def flush(conn_id):
        conn = conns[conn_id]
        try:
            while conn.out:
                sent = conn.sock.send(conn.out)
                del conn.out[:sent]
        except BlockingIOError:
            pass
        except OSError:
            drop(conn_id, True); return
        if not conn.out and conn.write_eof and not conn.write_done:
            conn.write_done = True
            try:
                conn.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if conn.read_done and conn.write_done:
            drop(conn_id, False)
        else:
            watch(conn_id)
    while True:
        for key, events in sel.select():
            if key.fileobj is server:
                try:
                    sock, _ = server.accept()
                except OSError:
                    continue
                sock.setblocking(False)
                conn_id = next_id[0]; next_id[0] += 1
                conns[conn_id] = Conn(sock)
                frame(OPEN, conn_id)
                watch(conn_id)
            elif key.fileobj == 0:
                data = read_stdin()
                if not data:
                    for conn in conns.values():
                        conn.sock.close()
                    return
                pending.extend(data)
                while len(pending) >= HEADER.size:
                    conn_id, kind, size = HEADER.unpack_from(pending)
                    if len(pending) < HEADER.size + size:
                        break
                    payload = bytes(pending[HEADER.size:HEADER.size + size])
                    del pending[:HEADER.size + size]
                    if conn_id not in conns:
                        continue
                    if kind == DATA:
                        conns[conn_id].out.extend(payload)
                    elif kind == EOF:
                        conns[conn_id].write_eof = True
                    elif kind == CLOSE:
                        drop(conn_id, False); continue
                    flush(conn_id)
            else:
                conn_id = key.data
                if conn_id not in conns:
                    continue
                conn = conns[conn_id]
                if events & selectors.EVENT_READ and not conn.read_done:
                    try:
                        data = conn.sock.recv(65536)
                    except BlockingIOError:
                        data = None
                    except OSError:
                        data = b""
                    if data:
                        frame(DATA, conn_id, data)
                    elif data is not None:
                        conn.read_done = True
                        frame(EOF, conn_id)
                flush(conn_id)
mode, kind, args = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.exit(connect(kind, args) if mode == "connect" else listen(kind, args))
"""
