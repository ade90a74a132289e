# Helpers for the `stsrelay serve` integration tests: start the daemon from a
# config dict on a free loopback port, talk raw SMTP, read the spool files.
import os
import pwd
import re
import signal
import subprocess
import time

from smtp_util import RawSMTP
from tests.world.util import free_port

BIN = os.environ.get("STSRELAY_BIN", "stsrelay")
HOSTNAME = "relay.test"
TEST_USER = "stsrelay-test"   # an unprivileged system user the tests may create


def ensure_test_user():
    """TEST_USER's passwd entry, creating the user first if needed."""
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        TEST_USER], check=True, timeout=60)
    return pwd.getpwnam(TEST_USER)


class Daemon:
    """One `stsrelay serve` process with its own spool and config file."""

    def __init__(self, tmpdir, env=None, **conf):
        self.dir = str(tmpdir)
        self.port = free_port()
        self.spool = os.path.join(self.dir, "spool")
        self.conf_path = os.path.join(self.dir, "stsrelay.conf")
        self.log_path = os.path.join(self.dir, "daemon.log")
        # DNS goes to a loopback port where nobody answers: a delivery attempt
        # (if this build has a transport) only defers, so every accepted
        # message stays in the queue for the checks.
        self.conf = {"listen": "127.0.0.1:%d" % self.port, "spool_dir": self.spool,
                     "hostname": HOSTNAME, "dns_servers": "127.0.0.1:%d" % free_port()}
        self.conf.update(conf)
        self.spool = self.conf["spool_dir"]
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.preexec_fn = None   # run in the child before exec (e.g. join a cgroup)
        self.proc = None
        self.write_conf()

    def write_conf(self):
        with open(self.conf_path, "w") as f:
            for k, v in self.conf.items():
                f.write("%s = %s\n" % (k, v))

    def start(self, timeout=20):
        assert self.proc is None
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([BIN, "serve", "-c", self.conf_path],
                                     stdout=self.logf, stderr=self.logf, env=self.env,
                                     preexec_fn=self.preexec_fn)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("daemon exited with %d:\n%s" % (self.proc.returncode, self.log()))
            # the log line, not a probe connection: a probe would hold a
            # session slot for a moment (max_sessions tests count them)
            if self.log().count("stsrelay/master[%d]: started:" % self.proc.pid) > 0:
                return self
            time.sleep(0.02)
        raise RuntimeError("daemon did not listen within %ds:\n%s" % (timeout, self.log()))

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Signal and wait; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait(timeout=10)
            raise RuntimeError("daemon did not stop within %ds" % timeout)
        finally:
            self.proc = None
            self.logf.close()
        return rc

    def kill9(self):
        return self.stop(signal.SIGKILL)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def wait_log(self, text, timeout=10):
        """True once text appears in the log (bounded wait)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return True
            time.sleep(0.02)
        return text in self.log()

    def queue_ids(self):
        d = os.path.join(self.spool, "queue")
        return sorted(n for n in os.listdir(d) if re.fullmatch(r"[0-9A-F]{12}", n))

    def queue_file(self, qid):
        return parse_queue_file(os.path.join(self.spool, "queue", qid))

    def tmp_files(self):
        return sorted(os.listdir(os.path.join(self.spool, "tmp")))

    def wait_tmp_empty(self, timeout=5):
        """tmp/ may hold a file for a moment (a state file being saved);
        a leftover would stay. True once tmp/ is empty."""
        deadline = time.monotonic() + timeout
        while self.tmp_files() and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.tmp_files() == []

    def connect(self, host="127.0.0.1", timeout=30):
        return RawSMTP(host, self.port, timeout)


def parse_queue_file(path):
    """(fields, rcpts, data) of a queue or maildrop file: header lines,
    'end', data."""
    with open(path, "rb") as f:
        raw = f.read()
    head, sep, data = raw.partition(b"\nend\n")
    assert sep, "no end line in %s" % path
    fields, rcpts = {}, []
    for line in head.decode().split("\n"):
        key, _, value = line.partition(" ")
        if key == "rcpt":
            rcpts.append(value)
        else:
            fields[key] = value
    return fields, rcpts, data


def sendmail_from_file(world, data, args, timeout=60):
    """`stsrelay sendmail -C CONF ARGS` reading a real file holding data
    (written to DIR/message.eml) on stdin; world is a dict with "dir" and
    "conf". Returns the CompletedProcess."""
    msgfile = os.path.join(world["dir"], "message.eml")
    with open(msgfile, "wb") as f:
        f.write(data)
    with open(msgfile, "rb") as f:
        return subprocess.run([BIN, "sendmail", "-C", world["conf"]] + args, stdin=f,
                              capture_output=True, timeout=timeout)


RECEIVED_RE = re.compile(
    rb"Received: from (?P<helo>\S+) \(unknown \[(?P<ip>[^\]]+)\]\)\r\n"
    rb"\tby relay\.test \(stsrelay\) with (?P<proto>E?SMTP) id (?P<qid>[0-9A-F]{12})"
    rb"(?:\r\n\tfor <(?P<rcpt>[^>]+)>)?;\r\n"
    rb"\t(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d? \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\n")


def split_received(data):
    """Checks the Received header we prepend; returns (match, rest)."""
    m = RECEIVED_RE.match(data)
    assert m, "no valid Received header at start of %r" % data[:300]
    return m, data[m.end():]


def crlf(b):
    """What the queue must hold for a message given with LF or CRLF ends."""
    b = b.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not b.endswith(b"\r\n"):
        b += b"\r\n"
    return b


def submit(daemon, sender, rcpts, data, host="127.0.0.1"):
    """A complete transaction with RawSMTP; data is sent as given (it must
    already be dot-stuffed and end with CRLF). Returns the queue id."""
    c = daemon.connect(host)
    try:
        c.open_data("client.test", sender, rcpts)
        code, text = c.cmd(data + b".\r\n")
        assert code == 250, text
        m = re.search(r"queued as ([0-9A-F]{12})", text)
        assert m, text
        assert c.cmd("QUIT")[0] == 221
        return m.group(1)
    finally:
        c.close()
