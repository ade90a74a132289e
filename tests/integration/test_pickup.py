# Pickup of sendmail drop files runs off the event loop: while a large drop
# file is imported from a slow disk, SMTP clients keep getting prompt
# replies; a stop during the import is clean; more files than one batch all
# arrive exactly once.
import base64
import contextlib
import hashlib
import os
import random
import re
import smtplib
import time

import pytest

from serve_helpers import Daemon, parse_queue_file, sendmail_from_file

DROP_BYTES = 40 * 1024 * 1024       # the local user's large message
READ_BPS = 6 * 1024 * 1024          # the slow disk: ~7 s to read the drop file
REPLY_BOUND = 1.0                   # seconds any SMTP reply may take meanwhile
N_SUBMISSIONS = 20

SANITIZER_MARKS = ("AddressSanitizer", "UndefinedBehaviorSanitizer", "LeakSanitizer",
                   "runtime error:")


def whole_disk(dev):
    """(major, minor) of the disk holding device dev: blk-throttle rules
    name whole disks, not partitions."""
    maj, mnr = os.major(dev), os.minor(dev)
    sysdev = "/sys/dev/block/%d:%d" % (maj, mnr)
    if not os.path.exists(sysdev):
        return None
    if os.path.exists(os.path.join(sysdev, "partition")):
        with open(os.path.join(os.path.realpath(sysdev), "..", "dev")) as f:
            maj, mnr = (int(x) for x in f.read().split(":"))
    return maj, mnr


@contextlib.contextmanager
def slow_reads(path, bps):
    """A blkio cgroup whose members read the disk holding path at bps bytes
    per second (a real slow disk, as far as the daemon can tell). Yields a
    preexec_fn that puts a child process into it."""
    base = "/sys/fs/cgroup/blkio"
    if os.geteuid() != 0 or not os.path.exists(os.path.join(base, "blkio.throttle.read_bps_device")):
        pytest.skip("needs root and the cgroup v1 blkio throttle to make a slow disk")
    disk = whole_disk(os.stat(path).st_dev)
    if disk is None:
        pytest.skip("%s is not on a block device" % path)
    cg = os.path.join(base, "stsrelay-test-%d-%d" % (os.getpid(), random.getrandbits(32)))
    os.mkdir(cg)
    try:
        with open(os.path.join(cg, "blkio.throttle.read_bps_device"), "w") as f:
            f.write("%d:%d %d" % (disk[0], disk[1], bps))
        procs = os.path.join(cg, "cgroup.procs")

        def join():
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
        yield join
    finally:
        # members must be gone first; the daemon is stopped by then
        for _ in range(100):
            try:
                os.rmdir(cg)
                break
            except OSError:
                time.sleep(0.1)


def big_body(nbytes, seed):
    """nbytes of base64 lines (76 characters, LF ends), fixed by seed."""
    raw = random.Random(seed).randbytes(nbytes * 3 // 4)
    return b"Subject: large local message\n\n" + base64.encodebytes(raw)


def drop_names(d):
    return sorted(n for n in os.listdir(os.path.join(d.spool, "maildrop"))
                  if re.fullmatch(r"[0-9A-F]{12}", n))


def drop_large_file(d, seed=1):
    """sendmail (root) leaves one large drop file; it is then evicted from
    the page cache so that the import really reads the disk. Returns the
    SHA-256 of its data part."""
    r = sendmail_from_file({"dir": d.dir, "conf": d.conf_path}, big_body(DROP_BYTES, seed),
                           ["-i", "big@dest.test"], timeout=300)
    assert r.returncode == 0, r.stderr
    names = drop_names(d)
    assert len(names) == 1, names
    path = os.path.join(d.spool, "maildrop", names[0])
    _, _, data = parse_queue_file(path)
    assert len(data) > DROP_BYTES
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return hashlib.sha256(data).hexdigest()


PICKUP_RE = re.compile(r"^(\S+) \S+ stsrelay/pickup\[\d+\]: ([0-9A-F]{12}): uid=0, "
                       r"from=<[^>]*>$", re.M)
QMGR_RE = re.compile(r"^\S+ \S+ stsrelay/qmgr\[\d+\]: ([0-9A-F]{12}): from=<[^>]*>, "
                     r"size=(\d+), nrcpt=\d+ \(queue active\)$", re.M)


def imported(d):
    """(queue id, size) of picked-up messages: the pickup line names the
    submitter (uid=, as Postfix's pickup), the qmgr line the size."""
    log = d.log()
    sizes = dict(QMGR_RE.findall(log))
    return [(m.group(2), sizes.get(m.group(2))) for m in PICKUP_RE.finditer(log)]


def import_times(d):
    """Log time stamps (seconds) of the picked-up messages, in order."""
    out = []
    for m in PICKUP_RE.finditer(d.log()):
        hms = m.group(1).split("T")[1].rstrip("Z")
        h, mi, sec = hms.split(":")
        out.append(int(h) * 3600 + int(mi) * 60 + float(sec))
    return out


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


def timed_submission(port, i):
    """One smtplib transaction; returns (slowest step in seconds, its name,
    queue id)."""
    steps = []

    def step(name, fn):
        t = time.monotonic()
        out = fn()
        steps.append((time.monotonic() - t, name))
        return out

    s = smtplib.SMTP(timeout=30)
    step("connect+banner", lambda: s.connect("127.0.0.1", port))
    step("EHLO", lambda: s.ehlo("client.test"))
    step("MAIL", lambda: s.mail("sender@client.test"))
    step("RCPT", lambda: s.rcpt("rcpt%d@dest.test" % i))
    code, text = step("DATA+250", lambda: s.data(
        b"Subject: small %d\r\n\r\nhello while a large drop is imported\r\n" % i))
    assert code == 250, (code, text)
    step("QUIT", s.quit)
    qid = re.search(rb"queued as ([0-9A-F]{12})", text).group(1).decode()
    worst = max(steps)
    return worst[0], worst[1], qid


def assert_clean_log(d):
    log = d.log()
    for mark in SANITIZER_MARKS:
        assert mark not in log, log[-5000:]


def test_large_drop_does_not_stall_smtp(tmp_path):
    d = Daemon(tmp_path)
    digest = drop_large_file(d)
    with slow_reads(d.spool, READ_BPS) as join:
        d.preexec_fn = join
        d.start()
        t0 = time.monotonic()
        results = [timed_submission(d.port, i) for i in range(N_SUBMISSIONS)]
        t_subs = time.monotonic() - t0
        # The import was in flight during every submission: its drop file
        # is still there and not yet logged as picked up.
        still_importing = drop_names(d) != [] and imported(d) == []
        wait_until(lambda: imported(d), 120, "the large drop file to be picked up")
        t_import = time.monotonic() - t0
        assert d.stop() == 0
    worst = max(results)
    assert worst[0] < REPLY_BOUND, (
        "an SMTP reply took %.2f s (%s) while the drop file was imported; all: %s"
        % (worst[0], worst[1], ["%.3f %s" % (t, n) for t, n, _ in results]))
    # The test means something only if the import outlasted the submissions.
    assert still_importing, "import finished within %.2f s, before the submissions ended" % t_subs
    assert t_import > 3.0, "import took %.2f s: the slow disk did not apply" % t_import
    # Every submission and the large message are queued, the latter intact.
    queued = set(d.queue_ids())
    assert {qid for _, _, qid in results} <= queued
    (qid, size), = imported(d)
    assert qid in queued and drop_names(d) == []
    _, rcpts, data = d.queue_file(qid)
    assert rcpts == ["big@dest.test"] and int(size) == len(data)
    assert hashlib.sha256(data).hexdigest() == digest
    assert_clean_log(d)
    print("%d submissions in %.2f s, slowest reply %.3f s (%s); import %.2f s"
          % (N_SUBMISSIONS, t_subs, worst[0], worst[1], t_import))


def test_stop_during_import_is_clean(tmp_path):
    d = Daemon(tmp_path)
    digest = drop_large_file(d, seed=2)
    with slow_reads(d.spool, READ_BPS) as join:
        d.preexec_fn = join
        d.start()
        time.sleep(1.0)
        assert imported(d) == [] and drop_names(d) != [], "import not in flight"
        t = time.monotonic()
        assert d.stop(timeout=120) == 0
        t_stop = time.monotonic() - t
    log = d.log()
    assert "stopped" in log and "did not close cleanly" not in log, log[-3000:]
    assert_clean_log(d)
    # The running import was waited for: the message is queued exactly
    # once and the drop file is gone.
    (qid, _), = imported(d)
    assert d.queue_ids() == [qid] and drop_names(d) == []
    assert hashlib.sha256(d.queue_file(qid)[2]).hexdigest() == digest
    # A restart imports nothing twice.
    d.preexec_fn = None
    d.start()
    time.sleep(1.0)
    assert d.queue_ids() == [qid] and drop_names(d) == []
    assert d.stop() == 0
    assert len(imported(d)) == 1
    print("stop waited %.2f s for the running import" % t_stop)


def test_more_drop_files_than_one_batch(tmp_path):
    """105 drop files (the batch is 100 per scan): each is imported exactly
    once, the rest by the follow-up scan without waiting for the rescan."""
    n = 105
    d = Daemon(tmp_path)
    world = {"dir": d.dir, "conf": d.conf_path}
    for i in range(n):
        r = sendmail_from_file(world, b"Subject: drop %d\n\nbody %d\n" % (i, i),
                               ["-i", "r%d@dest.test" % i])
        assert r.returncode == 0, r.stderr
    assert len(drop_names(d)) == n
    d.start()
    wait_until(lambda: len(imported(d)) >= n, 60, "%d imports" % n)
    time.sleep(0.5)
    assert d.stop() == 0
    # the 101st came from the follow-up scan, not from the 5 s rescan
    times = import_times(d)
    assert times[100] - times[99] < 2.5, times[95:]
    lines = imported(d)
    assert len(lines) == n and len({q for q, _ in lines}) == n
    assert drop_names(d) == []
    rcpts = sorted(d.queue_file(q)[1][0] for q, _ in lines)
    assert rcpts == sorted("r%d@dest.test" % i for i in range(n))
    assert_clean_log(d)
