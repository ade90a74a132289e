# The one byte-exact SMTP client of the integration tests (serve_helpers and
# faults_util re-export it): raw sends, replies read exactly as they come.
import socket


class RawSMTP:
    """Byte-exact SMTP client: sends what it is given, reads replies as
    they come. `source` binds the client side (another loopback address)."""

    def __init__(self, host, port, timeout=30, source=None):
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                                  socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if source:
            self.sock.bind((source, 0))
        self.sock.connect((host, port))
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def reply(self):
        """One (possibly multi-line) reply: (code, text of all lines).
        Raises ConnectionError when the server closed the connection."""
        lines = []
        while True:
            while b"\n" not in self.buf:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed by server; partial %r" % self.buf)
                self.buf += chunk
            line, _, self.buf = self.buf.partition(b"\n")
            line = line.rstrip(b"\r").decode(errors="replace")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return int(line[:3]), "\n".join(lines)

    def cmd(self, line):
        """Sends line (CRLF added unless it already ends with LF), returns
        the reply."""
        if isinstance(line, str):
            line = line.encode()
        if not line.endswith(b"\n"):
            line += b"\r\n"
        self.send(line)
        return self.reply()

    def open_data(self, helo, sender, rcpts):
        """Greeting, EHLO, MAIL, each RCPT and DATA, asserting 220, 250s
        and 354: the connection is then ready for the message. (This
        module is not assertion-rewritten by pytest: the reply text is
        the assertion message.)"""
        code, text = self.reply()
        assert code == 220, text
        steps = ["EHLO %s" % helo, "MAIL FROM:<%s>" % sender] + \
            ["RCPT TO:<%s>" % r for r in rcpts]
        for line in steps:
            code, text = self.cmd(line)
            assert code == 250, (line, text)
        code, text = self.cmd("DATA")
        assert code == 354, text

    def replies_until_quit(self, limit=20):
        """(code, text) of each reply up to and including the 221, or up
        to the server closing the connection; at most `limit` replies."""
        out = []
        for _ in range(limit):
            try:
                code, text = self.reply()
            except (ConnectionError, OSError):
                break
            out.append((code, text))
            if code == 221:
                break
        return out

    def closed(self, timeout=10):
        """True when the server closes the connection (EOF) within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
