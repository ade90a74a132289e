# Helpers shared by the fault-injection and security tests: a byte-exact
# SMTP client, sanitizer-clean checks, queue listing, tmpfs mounts.
import contextlib
import json
import os
import re
import subprocess

from smtp_util import RawSMTP  # noqa: F401  (re-exported for the tests)
from tests.world.util import wait_until

# The daemon runs with these whatever the caller's environment says: a
# sanitizer report must end the process (and so fail the test).
SAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}

SAN_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:",
               "UndefinedBehaviorSanitizer")


def assert_no_sanitizer_report(text, what="relay log"):
    for m in SAN_MARKERS:
        assert m not in text, "%s has a sanitizer report:\n%s" % (what, text[-6000:])


def msgid_message(tag, to="rcpt@example.test", size=0, sender="sender@client.world.test"):
    """A message whose Message-ID and Subject carry `tag`; `size` pads the
    body with 76-byte lines to about that many bytes."""
    body = "body of %s\r\n" % tag
    if size:
        line = ("%s-" % tag * 80)[:76] + "\r\n"
        body += line * (size // len(line) + 1)
    return ("From: <%s>\r\nTo: <%s>\r\nSubject: fault test %s\r\n"
            "Message-ID: <%s@client.world.test>\r\n\r\n%s" % (
                sender, to, tag, tag, body)).encode()


def smtp_submit(host, port, sender, rcpts, data, source=None, timeout=30, trace=None):
    """One transaction; data is the message (CRLF lines, not yet dot-stuffed).
    Returns (code, text) of the reply to the final dot, or of the first
    command that failed; `trace` (a list) gets the name of each step sent."""
    trace = [] if trace is None else trace
    stuffed = re.sub(rb"(?m)^\.", b"..", data)
    if not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    with RawSMTP(host, port, timeout, source) as c:
        code, text = c.reply()
        if code != 220:
            return code, text
        for line in ["EHLO client.world.test", "MAIL FROM:<%s>" % sender] + \
                ["RCPT TO:<%s>" % r for r in rcpts]:
            trace.append(line.split()[0].lower())
            code, text = c.cmd(line)
            if code != 250:
                return code, text
        trace.append("data")
        code, text = c.cmd("DATA")
        if code != 354:
            return code, text
        trace.append("eod")
        code, text = c.cmd(stuffed + b".\r\n")
        try:
            c.cmd("QUIT")
        except (OSError, ConnectionError):
            pass
        return code, text


def queue_id_of(text):
    m = re.search(r"queued as ([0-9A-Za-z]+)", text)
    return m.group(1) if m else None


def queue_list(relay):
    """`stsrelay queue list --json` as a dict."""
    p = relay.cli("queue", "list", "--json")
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    return json.loads(p.stdout)


def spool_queue_files(spool):
    """Names in spool/queue and spool/tmp (what an operator would ls)."""
    out = {}
    for sub in ("queue", "tmp"):
        d = os.path.join(spool, sub)
        out[sub] = sorted(os.listdir(d)) if os.path.isdir(d) else []
    return out


def wait_for(pred, timeout, interval=0.1, what="condition"):
    """wait_until with a slower default poll; a timeout fails the test
    with AssertionError."""
    return wait_until(pred, timeout, interval, what, error=AssertionError)


def log_lines(relay, pattern):
    rx = re.compile(pattern)
    return [l for l in relay.log().splitlines() if rx.search(l)]


def proc_status(pid):
    """/proc/PID/status as {key: value string}."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


@contextlib.contextmanager
def tmpfs(path, size="2m", options=""):
    """A fresh tmpfs mounted at path (created); unmounted afterwards.
    Skips the calling test when mounting is not possible (not root)."""
    import pytest
    os.makedirs(path, exist_ok=True)
    opts = "size=%s,mode=0755" % size + ("," + options if options else "")
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", path],
                       capture_output=True, timeout=30)
    if p.returncode != 0:
        pytest.skip("cannot mount a tmpfs: %s" % p.stderr.decode(errors="replace"))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True, timeout=30)


def remount(path, options):
    subprocess.run(["mount", "-o", "remount," + options, path], check=True,
                   capture_output=True, timeout=30)


def fill_fs(path, leave=0):
    """Fills the filesystem holding directory `path` with one file until
    ENOSPC, then gives back `leave` bytes. Returns the filler's path."""
    filler = os.path.join(path, "filler")
    chunk = b"\0" * 65536
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    size = 0
    try:
        for _ in range(1 << 20):  # bounded: 64 GiB at most
            try:
                size += os.write(fd, chunk)
            except OSError as e:
                if e.errno != 28:  # ENOSPC
                    raise
                break
        else:
            raise AssertionError("filesystem at %s never filled" % path)
        # small writes fill the last partial page
        for _ in range(65536):
            try:
                if os.write(fd, b"\0" * 512) == 0:
                    break
                size += 512
            except OSError:
                break
        if leave:
            os.ftruncate(fd, max(0, size - leave))
    finally:
        os.close(fd)
    return filler


def free_bytes(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
