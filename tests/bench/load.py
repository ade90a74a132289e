# Load generators of tests/bench/run, the same for both systems: Postfix's
# smtp-source, a timing SMTP client for latency, and a crowd of idle sessions.
import hashlib
import random
import resource
import selectors
import socket
import subprocess
import threading
import time

CLIENT_NAME = "client.bench.test"
SENDER = "bench@client.bench.test"


def smtp_source(port, sessions, messages, size, rcpt, timeout=300):
    """Runs smtp-source (one connection per session, reused with -d) and
    returns (seconds, returncode, stderr text). Bounded by `timeout`."""
    cmd = ["smtp-source", "-d", "-s", str(sessions), "-m", str(messages), "-l", str(size),
           "-f", SENDER, "-t", rcpt, "-M", CLIENT_NAME, "127.0.0.1:%d" % port]
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return time.monotonic() - t0, "timeout", "smtp-source ran over %ds" % timeout
    return time.monotonic() - t0, p.returncode, p.stderr.decode(errors="replace")[-2000:]


class SMTPError(RuntimeError):
    pass


class TimingClient:
    """A minimal blocking SMTP client: one session, messages timed from MAIL
    to the reply after the final dot."""

    def __init__(self, port, timeout=30):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.reply("220")
        self.cmd(b"EHLO " + CLIENT_NAME.encode(), "250")

    def reply(self, want):
        while True:
            while b"\r\n" not in self.buf:
                data = self.s.recv(65536)
                if not data:
                    raise SMTPError("connection closed")
                self.buf += data
            line, self.buf = self.buf.split(b"\r\n", 1)
            if len(line) >= 4 and line[3:4] == b"-":
                continue
            if not line.startswith(want.encode()):
                raise SMTPError("wanted %s, got %r" % (want, line[:200]))
            return line

    def cmd(self, line, want):
        self.s.sendall(line + b"\r\n")
        return self.reply(want)

    def send(self, rcpt, body):
        t0 = time.perf_counter()
        self.cmd(b"MAIL FROM:<" + SENDER.encode() + b">", "250")
        self.cmd(b"RCPT TO:<" + rcpt.encode() + b">", "250")
        self.cmd(b"DATA", "354")
        self.s.sendall(body + b".\r\n")
        self.reply("250")
        return time.perf_counter() - t0

    def close(self):
        try:
            self.s.sendall(b"QUIT\r\n")
            self.s.close()
        except OSError:
            pass


def message_body(size, seq=0):
    head = ("From: <%s>\r\nTo: <bench@bench.test>\r\nSubject: bench %d\r\n"
            "Message-ID: <bench-%d@client.bench.test>\r\n\r\n" % (SENDER, seq, seq)).encode()
    line = b"x" * 76 + b"\r\n"
    body = line * (max(size, 0) // len(line) + 1)
    return head + body[:size] + (b"" if body[:size].endswith(b"\r\n") else b"\r\n")


def latency(port, sessions, per_session, size, rcpt, deadline_s=120):
    """Per-message accept latencies (seconds) from `sessions` parallel
    sessions of `per_session` messages each. Returns (latencies, errors)."""
    lat, errors = [], []
    lock = threading.Lock()
    body = message_body(size)
    end = time.monotonic() + deadline_s

    def worker():
        mine = []
        try:
            c = TimingClient(port)
            for _ in range(per_session):
                if time.monotonic() > end:
                    raise SMTPError("deadline")
                mine.append(c.send(rcpt, body))
            c.close()
        except (OSError, SMTPError) as e:
            with lock:
                errors.append(str(e))
        with lock:
            lat.extend(mine)
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1, end - time.monotonic() + 5))
    return lat, errors


def percentile(values, p):
    if not values:
        return None
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(soft, n), hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


class IdleCrowd:
    """n sessions that connect, get the greeting, say EHLO and then stay
    idle. open() is bounded by deadline_s; sessions refused (421) or not
    greeted in time are counted as failed."""

    def __init__(self, port, n):
        self.port, self.n = port, n
        self.socks = []
        self.failed = 0
        self.refused = 0

    def open(self, deadline_s=120, batch=50):
        end = time.monotonic() + deadline_s
        sel = selectors.DefaultSelector()
        pending = {}  # sock -> [stage, buffer]  stage 0: greeting, 1: EHLO reply
        opened = 0
        while (opened < self.n or pending) and time.monotonic() < end:
            # keep at most `batch` handshakes in flight (Postfix forks a
            # process per session; a burst of 1000 SYNs would overflow the
            # listen queue and measure that instead)
            while opened < self.n and len(pending) < batch:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", self.port))
                pending[s] = [0, b""]
                sel.register(s, selectors.EVENT_READ)
                opened += 1
            for key, _ in sel.select(timeout=0.5):
                s = key.fileobj
                st = pending[s]
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._drop(sel, pending, s, failed=True)
                    continue
                st[1] += data
                if not st[1].endswith(b"\r\n"):
                    continue
                last = st[1].rstrip(b"\r\n").split(b"\r\n")[-1]
                if len(last) >= 4 and last[3:4] == b"-":
                    continue
                if st[0] == 0:
                    if not last.startswith(b"220"):
                        self.refused += 1
                        self._drop(sel, pending, s, failed=True)
                        continue
                    st[0], st[1] = 1, b""
                    s.send(b"EHLO " + CLIENT_NAME.encode() + b"\r\n")
                else:
                    if not last.startswith(b"250"):
                        self._drop(sel, pending, s, failed=True)
                        continue
                    sel.unregister(s)
                    del pending[s]
                    self.socks.append(s)
        for s in list(pending):
            self._drop(sel, pending, s, failed=True)
        sel.close()
        self.failed += self.n - opened
        return len(self.socks)

    def _drop(self, sel, pending, s, failed):
        sel.unregister(s)
        del pending[s]
        s.close()
        if failed:
            self.failed += 1

    def close(self):
        for s in self.socks:
            try:
                s.close()
            except OSError:
                pass
        self.socks = []


# ---- messages whose delivery is checked byte for byte ---------------------

_POOL = None
_POOL_LINES = None


def _pool():
    """~5 MB of CRLF lines, fixed seed: printable text with the cases that
    broke relays before: lines of one dot, lines starting with a dot (the
    client stuffs them, the relay must unstuff them and stuff them again),
    empty lines, and lines of 998 bytes (the RFC 5321 maximum)."""
    global _POOL, _POOL_LINES
    if _POOL is None:
        rnd = random.Random(12)
        alphabet = bytes(range(32, 127))
        lines, total = [], 0
        while total < 5 * 1024 * 1024:
            k = rnd.random()
            if k < 0.02:
                line = b"."
            elif k < 0.06:
                line = b"." + bytes(rnd.choice(alphabet) for _ in range(rnd.randint(1, 70)))
            elif k < 0.08:
                line = b""
            elif k < 0.085:
                line = bytes(rnd.choice(alphabet) for _ in range(998))
            else:
                line = bytes(rnd.choice(alphabet) for _ in range(rnd.randint(1, 78)))
            lines.append(line + b"\r\n")
            total += len(line) + 2
        _POOL_LINES = [0]
        for ln in lines:
            _POOL_LINES.append(_POOL_LINES[-1] + len(ln))
        _POOL = b"".join(lines)
    return _POOL, _POOL_LINES


def checked_message(tag, seq, size, rcpt):
    """(message, sha256 hex) for message `seq` of run `tag`: headers (the
    first is X-Bench-Seq, so everything from it on is what the client
    sent, whatever trace headers the relays prepend) and a body of about
    `size` bytes cut at line boundaries from the pool at an offset that
    depends on seq. The digest is over the message with LF line ends, as
    Postfix's virtual(8) stores it in a maildir."""
    pool, starts = _pool()
    head = ("X-Bench-Seq: %s-%d\r\nFrom: <%s>\r\nTo: <%s>\r\nSubject: checked %s %d\r\n"
            "Date: Thu, 03 Dec 2026 12:00:00 +0000\r\nMessage-ID: <%s-%d@client.bench.test>"
            "\r\n\r\n" % (tag, seq, SENDER, rcpt, tag, seq, tag, seq)).encode()
    size = min(size, len(pool) - 1024)
    nlines = len(starts) - 1
    i = (seq * 7919) % nlines
    while starts[i] + size > len(pool):
        i = i // 2
    j = i
    while j < nlines and starts[j] - starts[i] < size:
        j += 1
    msg = head + pool[starts[i]:starts[j]]
    return msg, hashlib.sha256(msg.replace(b"\r\n", b"\n")).hexdigest()


def stuffed(msg):
    """The DATA bytes for msg (CRLF lines): leading dots doubled, final dot."""
    data = msg.replace(b"\r\n.", b"\r\n..")
    if data.startswith(b"."):
        data = b"." + data
    return data + b".\r\n"


def send_checked(port, sessions, messages, timeout=300):
    """Sends `messages` (a list of message bytes) over `sessions` parallel
    SMTP sessions (one connection each, reused), each message to the
    recipient named in its To: header. Returns (seconds, errors)."""
    errors = []
    lock = threading.Lock()
    todo = list(enumerate(messages))
    end = time.monotonic() + timeout

    def worker():
        try:
            c = TimingClient(port)
        except (OSError, SMTPError) as e:
            with lock:
                errors.append("connect: %s" % e)
            return
        try:
            while time.monotonic() < end:
                with lock:
                    if not todo:
                        break
                    _, msg = todo.pop(0)
                rcpt = msg.split(b"\r\nTo: <", 1)[1].split(b">", 1)[0].decode()
                c.cmd(b"MAIL FROM:<" + SENDER.encode() + b">", "250")
                c.cmd(b"RCPT TO:<" + rcpt.encode() + b">", "250")
                c.cmd(b"DATA", "354")
                c.s.sendall(stuffed(msg))
                c.reply("250")
            c.close()
        except (OSError, SMTPError) as e:
            with lock:
                errors.append(str(e))
    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(1, end - time.monotonic() + 5))
    with lock:
        if todo:
            errors.append("%d messages not sent" % len(todo))
    return time.monotonic() - t0, errors
