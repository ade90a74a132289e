# A scriptable, misbehaving SMTP server (plain sockets, one thread per
# connection) that records every byte it got, plaintext and TLS apart.
import socket
import ssl
import threading
import time

from .util import listen_tcp, wait_until

STAGES = ("banner", "ehlo", "starttls", "tls", "mail", "rcpt", "data", "eod", "quit")


class Envelope:
    def __init__(self, mail_from, rcpts, data, tls):
        self.mail_from = mail_from
        self.rcpts = rcpts
        self.data = data      # message bytes, dot-unstuffed, without the final "."
        self.tls = tls        # True if the DATA went over TLS

    def __repr__(self):
        return "Envelope(%s -> %s, %d bytes, tls=%s)" % (
            self.mail_from, self.rcpts, len(self.data), self.tls)


class Session:
    """What one client connection did."""

    def __init__(self, peer):
        self.peer = peer
        self.plain = bytearray()   # every byte received before TLS
        self.tls_bytes = bytearray()  # every byte received inside TLS
        self.commands = []         # (in_tls, line str) per command line
        self.sni = None
        self.tls_version = None
        self.tls_error = None
        self.bursts = []           # replies per burst (Script burst=True)
        self.messages = []         # accepted Envelopes (250 after DATA)
        self.attempted = []        # Envelopes whose DATA fully arrived
        self.closed = False

    @property
    def tls(self):
        return self.tls_version is not None

    def __repr__(self):
        return "Session(%s, tls=%s, sni=%s, %d cmds, %d msgs)" % (
            self.peer, self.tls_version, self.sni, len(self.commands), len(self.messages))


class Script:
    """Behaviour of one connection. Keys (all optional):
    starttls: "offer" (default) | "none" (not advertised) | "refuse"
              (advertised, 454 on the command)
    cert:     ca.Leaf to present (default: good cert for the host name)
    tls_max / tls_min: ssl.TLSVersion limits of the server side
    reply:    {stage: "code text"} or {stage: [replies...]} (consumed in
              order, the last repeats) to override the normal reply at a
              stage: banner, ehlo, starttls, mail, rcpt, data, eod, quit
    hang:     stage at which to send nothing and wait (bounded by
              hang_seconds, default 30); "tls" = accept STARTTLS then
              never do the handshake
    disconnect: stage at which to close the connection instead of
              replying; "mid-data" = close after the first DATA bytes
    burst:    after STARTTLS, hold the replies to MAIL, RCPT and DATA until
              the DATA command has arrived, then send them back to back,
              each with its own sendall() (one TLS record each), corked so
              that they leave in as few TCP segments as possible: the
              client's next read then holds many records at once. Needs a
              pipelining client (one that does not wait for each reply).
    """

    def __init__(self, starttls="offer", cert=None, tls_max=None, tls_min=None,
                 reply=None, hang=None, disconnect=None, hang_seconds=30, burst=False):
        if starttls not in ("offer", "none", "refuse"):
            raise ValueError("starttls must be offer|none|refuse")
        for st in (hang, disconnect):
            if st is not None and st not in STAGES + ("mid-data",):
                raise ValueError("unknown stage %r" % st)
        self.starttls = starttls
        self.cert = cert
        self.tls_max = tls_max
        self.tls_min = tls_min
        self.reply = dict(reply or {})
        self.hang = hang
        self.disconnect = disconnect
        self.hang_seconds = hang_seconds
        self.burst = burst


class _Closed(Exception):
    pass


class FakeMX:
    """Listens on ip:port as `hostname`. `script` is a Script, a dict of
    Script arguments, or a list of them (connection i uses entry i; the last
    one repeats). Change `mx.script` at any time; it applies to new
    connections."""

    def __init__(self, ip, port, hostname, ca, script=None):
        self.ip = ip
        self.port = port
        self.hostname = hostname
        self.ca = ca
        self.script = script
        self.sessions = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conns = set()
        self._threads = []
        self._sock = None

    # --- lifecycle -----------------------------------------------------
    def start(self):
        self._sock = listen_tcp(self.ip, self.port, backlog=64, timeout=0.2)
        t = threading.Thread(target=self._accept_loop, daemon=True,
                             name="fakemx-%s" % self.hostname)
        t.start()
        self._threads.append(t)
        return self

    def stop(self):
        self._stop.set()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for t in list(self._threads):
            t.join(5)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _script_for(self, n):
        sc = self.script
        if isinstance(sc, (list, tuple)):
            sc = sc[min(n, len(sc) - 1)] if sc else None
        if sc is None:
            return Script()
        if isinstance(sc, dict):
            return Script(**sc)
        return sc

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                c, peer = self._sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                sess = Session(peer)
                n = len(self.sessions)
                self.sessions.append(sess)
                self._conns.add(c)
            t = threading.Thread(target=self._serve, args=(c, sess, self._script_for(n)),
                                 daemon=True)
            t.start()
            self._threads.append(t)

    # --- observation ---------------------------------------------------
    def plaintext(self):
        """All bytes received outside TLS, over every session."""
        return b"".join(bytes(s.plain) for s in self.sessions)

    def messages(self):
        return [m for s in self.sessions for m in s.messages]

    def wait_sessions(self, count=1, timeout=15, closed=True):
        """Wait for `count` sessions (finished ones if closed=True)."""
        return wait_until(lambda: (lambda ss: ss if len(ss) >= count else None)(
            [s for s in self.sessions if s.closed or not closed]), timeout,
            what="%d session(s) at fake MX %s" % (count, self.hostname))

    # --- one connection ------------------------------------------------
    def _serve(self, conn, sess, sc):
        io = _Conn(conn, sess, self._stop)
        try:
            self._dialogue(io, sess, sc)
        except (_Closed, OSError, ssl.SSLError):
            pass
        finally:
            sess.closed = True
            with self._lock:
                self._conns.discard(conn)
            io.close()

    def _dialogue(self, io, sess, sc):
        replies = {k: (list(v) if isinstance(v, (list, tuple)) else [v])
                   for k, v in sc.reply.items()}

        def respond(stage, default):
            if sc.hang == stage:
                self._stop.wait(sc.hang_seconds)
                raise _Closed()
            if sc.disconnect == stage:
                raise _Closed()
            r = default
            if stage in replies:
                lst = replies[stage]
                r = lst.pop(0) if len(lst) > 1 else lst[0]
            io.send_reply(r)
            return r

        def ok(r):
            return r.startswith("2") or r.startswith("3")

        if not ok(respond("banner", "220 %s ESMTP fake" % self.hostname)):
            # A 4xx/5xx greeting: the client should QUIT; answer it and go.
            line = io.readline()
            if line is not None:
                io.send_reply("221 bye")
            return
        mail_from, rcpts, helo = None, [], False
        while True:
            line = io.readline()
            if line is None:
                return
            sess.commands.append((io.tls, line))
            verb = line.split(" ", 1)[0].upper()
            if verb in ("EHLO", "HELO"):
                ext = ["%s" % self.hostname, "SIZE 104857600", "8BITMIME",
                       "ENHANCEDSTATUSCODES", "PIPELINING"]
                if sc.starttls != "none" and not io.tls:
                    ext.append("STARTTLS")
                default = "\r\n".join("250-" + e for e in ext[:-1]) + "\r\n250 " + ext[-1]
                if verb == "HELO":
                    default = "250 " + self.hostname
                helo = ok(respond("ehlo", default))
                mail_from, rcpts = None, []
            elif verb == "STARTTLS":
                if io.tls or sc.starttls == "none":
                    io.send_reply("503 5.5.1 STARTTLS not available")
                    continue
                if sc.starttls == "refuse":
                    respond("starttls", "454 4.7.0 TLS not available due to temporary reason")
                    continue
                r = respond("starttls", "220 2.0.0 Ready to start TLS")
                if not ok(r):
                    continue
                if sc.hang == "tls":
                    self._stop.wait(sc.hang_seconds)
                    raise _Closed()
                io.start_tls(self._context(sc))
                helo, mail_from, rcpts = False, None, []
            elif verb == "MAIL":
                if not helo:
                    io.send_reply("503 5.5.1 EHLO first")
                    continue
                if sc.burst and io.tls:
                    io.hold()
                r = respond("mail", "250 2.1.0 Ok")
                if ok(r):
                    mail_from, rcpts = _addr(line), []
            elif verb == "RCPT":
                if mail_from is None:
                    io.send_reply("503 5.5.1 MAIL first")
                    continue
                r = respond("rcpt", "250 2.1.5 Ok")
                if ok(r):
                    rcpts.append(_addr(line))
            elif verb == "DATA":
                if not rcpts:
                    io.send_reply("554 5.5.1 no valid recipients")
                    io.release()
                    continue
                r = respond("data", "354 End data with <CR><LF>.<CR><LF>")
                io.release()
                if not r.startswith("3"):
                    continue
                data = io.read_data(disconnect_mid=(sc.disconnect == "mid-data"))
                env = Envelope(mail_from, rcpts, data, io.tls)
                sess.attempted.append(env)
                r = respond("eod", "250 2.0.0 Ok: queued as FAKE%d" % len(sess.attempted))
                if r.startswith("2"):
                    sess.messages.append(env)
                mail_from, rcpts = None, []
            elif verb == "RSET":
                mail_from, rcpts = None, []
                io.send_reply("250 2.0.0 Ok")
            elif verb == "NOOP":
                io.send_reply("250 2.0.0 Ok")
            elif verb == "QUIT":
                respond("quit", "221 2.0.0 Bye")
                return
            else:
                io.send_reply("502 5.5.2 Error: command not recognized")

    def _context(self, sc):
        leaf = sc.cert or self.ca.leaf([self.hostname], "good")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(leaf.cert, leaf.key)
        if sc.tls_min is not None:
            ctx.minimum_version = sc.tls_min
        if sc.tls_max is not None:
            ctx.maximum_version = sc.tls_max
        return ctx


def _addr(line):
    """The <...> path of MAIL FROM:/RCPT TO:, without brackets."""
    a, b = line.find("<"), line.find(">")
    if a == -1 or b < a:
        return line.split(":", 1)[-1].strip()
    return line[a + 1:b]


class _Conn:
    """Line I/O over a socket that may switch to TLS; records input."""

    MAX_LINE = 65536
    MAX_DATA = 128 * 1024 * 1024
    IDLE = 60  # seconds without input before the server gives up

    def __init__(self, sock, sess, stop):
        self.sock = sock
        self.sess = sess
        self.stop = stop
        self.buf = bytearray()
        self.tls = False
        self.held = None           # replies held back (Script burst), else None
        sock.settimeout(0.5)

    def _recv(self):
        deadline = time.monotonic() + self.IDLE
        while not self.stop.is_set():
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                if time.monotonic() > deadline:
                    raise _Closed()
                continue
            except ssl.SSLWantReadError:
                continue
            if not data:
                raise _Closed()
            (self.sess.tls_bytes if self.tls else self.sess.plain).extend(data)
            self.buf.extend(data)
            return
        raise _Closed()

    def readline(self):
        try:
            while b"\n" not in self.buf:
                if len(self.buf) > self.MAX_LINE:
                    raise _Closed()
                self._recv()
        except _Closed:
            return None
        i = self.buf.index(b"\n")
        line = bytes(self.buf[:i + 1])
        del self.buf[:i + 1]
        return line.rstrip(b"\r\n").decode("utf-8", errors="replace")

    def read_data(self, disconnect_mid=False):
        if disconnect_mid:
            # Wait for the first bytes of the message, then drop the line.
            while not self.buf:
                self._recv()
            raise _Closed()
        while True:
            if self.buf.startswith(b".\r\n"):
                end = 0
            else:
                end = self.buf.find(b"\r\n.\r\n")
            if end != -1:
                raw = bytes(self.buf[:end + 2]) if end else b""
                del self.buf[:end + 5 if end else 3]
                lines = raw.split(b"\r\n")
                return b"\r\n".join(l[1:] if l.startswith(b".") else l for l in lines)
            if len(self.buf) > self.MAX_DATA:
                raise _Closed()
            self._recv()

    def send_reply(self, text):
        out = "\r\n".join(text.split("\n")).replace("\r\r", "\r")
        if self.held is not None:
            self.held.append(out.encode() + b"\r\n")
            return
        self.sock.sendall(out.encode() + b"\r\n")

    def hold(self):
        """Replies wait in a list until release()."""
        if self.held is None:
            self.held = []

    def release(self):
        """Sends the held replies back to back, one sendall() (so one TLS
        record) each, with TCP_CORK set meanwhile so that the kernel packs
        the records into full segments instead of one segment each."""
        held, self.held = self.held, None
        if not held:
            return
        self.sess.bursts.append(len(held))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        try:
            for r in held:
                self.sock.sendall(r)
        finally:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)

    def start_tls(self, ctx):
        names = {}

        def sni_cb(sslobj, name, _ctx):
            names["sni"] = name
        ctx.sni_callback = sni_cb
        if self.buf:
            # Bytes pipelined after STARTTLS before the handshake: a
            # protocol violation (and an injection risk); drop them.
            self.buf.clear()
        self.sock.settimeout(10)
        try:
            self.sock = ctx.wrap_socket(self.sock, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.sess.tls_error = str(e)
            self.sess.sni = names.get("sni")
            raise _Closed()
        self.sock.settimeout(0.5)
        self.tls = True
        self.sess.sni = names.get("sni")
        self.sess.tls_version = self.sock.version()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
