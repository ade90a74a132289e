# Every exit code the README lists for serve, check, sendmail, mailq, queue,
# sts and tlsrpt, each produced here by the situation it names (the last
# test reads the README's table and checks none is left out), and the
# message that goes with it.
import grp
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from mountns import release, unshare_argv
from serve_helpers import TEST_USER, Daemon, ensure_test_user, submit
from tests.world import free_port

BIN = os.path.abspath(os.environ.get("STSRELAY_BIN", "stsrelay"))
SRC = os.environ.get("STSRELAY_SRC",
                     os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
TIMEOUT = 60
DROP_GROUP = "stsrelay-drop"
NOBODY_UID = 54321          # a uid with no passwd entry

# (command, code) -> what produced it; filled by the tests, checked at the end
SEEN = {}
# codes produced by tests in other modules, named there
ELSEWHERE = {("tlsrpt", 75): ("test_tlsrpt.py", 'assert rc == 75'),
             ("serve", 75): ("test_operations.py", 'assert p.returncode == 75, (p.returncode, p.stderr)'),
             ("sts", 1): ("test_sts_probe.py", 'assert rc == 1, out'),
             ("sts", 75): ("test_sts_fixtures.py", 'assert p.returncode == 75, (p.stdout, p.stderr)')}


def expect(cmd, code, p, stderr_has=None):
    """Assert p exited with code (and said stderr_has), record it."""
    err = p.stderr.decode(errors="replace")
    assert p.returncode == code, "%s: want %d, got %d\n%s" % (cmd, code, p.returncode, err)
    if stderr_has is not None:
        assert re.search(stderr_has, err, re.M), (stderr_has, err)
    assert "Sanitizer" not in err and "runtime error" not in err, err
    SEEN[(cmd, code)] = True
    return p


def run(args, user=None, input=b"", env=None, prefix=None):
    cmd = (prefix or []) + [BIN] + [str(a) for a in args]
    if user:
        cmd = ["runuser", "-u", user, "--"] + cmd
    e = dict(os.environ)
    e.pop("STSRELAY_CONF", None)
    e.update(env or {})
    return subprocess.run(cmd, input=input, capture_output=True, timeout=TIMEOUT, env=e)


def ensure_drop_group():
    try:
        return grp.getgrnam(DROP_GROUP).gr_gid
    except KeyError:
        subprocess.run(["groupadd", "--system", DROP_GROUP], check=True, timeout=60)
        return grp.getgrnam(DROP_GROUP).gr_gid


@pytest.fixture
def w():
    """A directory any user may enter, a spool path and a config file."""
    d = tempfile.mkdtemp(prefix="stsrelay-exit-")
    os.chmod(d, 0o755)
    spool = os.path.join(d, "spool")
    conf = os.path.join(d, "stsrelay.conf")
    write(conf, "spool_dir = %s\nhostname = relay.test\nlisten = 127.0.0.1:%d\n"
                "dns_servers = 127.0.0.1:%d\n" % (spool, free_port(), free_port()))
    yield {"dir": d, "spool": spool, "conf": conf}
    shutil.rmtree(d, ignore_errors=True)


def write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def conf_with(w, extra, name="extra.conf"):
    path = os.path.join(w["dir"], name)
    write(path, open(w["conf"]).read() + extra)
    return path


# ------------------------------------------------------------------ serve
def serve(conf, timeout=20):
    return subprocess.run([BIN, "serve", "-c", conf], capture_output=True, timeout=timeout)


def test_serve_codes(w, tmp_path):
    expect("serve", 64, run(["serve", "--bogus"]), r"^usage: stsrelay serve")
    expect("serve", 78, serve(conf_with(w, "bogus_key = 1\n")),
           r"extra\.conf:5: unknown key 'bogus_key'")
    # Fatal start errors are printed once.
    p = expect("serve", 77, serve(conf_with(w, "user = no-such-user-x\n")),
               r"user no-such-user-x: no such user")
    assert p.stderr.decode().count("no-such-user-x") == 1, p.stderr
    under_file = os.path.join(w["dir"], "a-file")
    write(under_file, "x")
    p = expect("serve", 73, serve(write_spool(w, under_file + "/spool")),
               r"spool .*a-file/spool")
    assert p.stderr.decode().count("cannot start") == 1, p.stderr
    garbage = os.path.join(w["dir"], "ca.pem")
    write(garbage, "not a certificate\n")
    expect("serve", 70, serve(conf_with(w, "ca_file = %s\n" % garbage, "ca.conf")),
           r"cannot load ca_file .*ca\.pem")
    # the listen port is taken
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    try:
        port = s.getsockname()[1]
        expect("serve", 71, serve(write_listen(w, port)), r"127\.0\.0\.1:%d" % port)
    finally:
        s.close()
    d = Daemon(tmp_path)
    d.start()
    assert d.stop() == 0
    SEEN[("serve", 0)] = True


def write_spool(w, spool):
    path = os.path.join(w["dir"], "spool.conf")
    write(path, re.sub(r"(?m)^spool_dir = .*$", "spool_dir = " + spool, open(w["conf"]).read()))
    return path


def write_listen(w, port):
    path = os.path.join(w["dir"], "port.conf")
    write(path, re.sub(r"(?m)^listen = .*$", "listen = 127.0.0.1:%d" % port,
                       open(w["conf"]).read()))
    return path


# ------------------------------------------------------------------ check
def test_check_codes(w):
    ensure_drop_group()
    p = expect("check", 0, run(["check", "-c", w["conf"]]))
    assert p.stdout.decode() == "%s: ok (with warnings)\n" % w["conf"], p.stdout
    expect("check", 64, run(["check", "--bogus"]), r"^usage: stsrelay check")
    expect("check", 64, run(["check", "-c", w["conf"], "extra"]))
    expect("check", 78, run(["check", "-c", conf_with(w, "max_sessions = lots\n")]),
           r"^%s:5: bad value 'lots' for key 'max_sessions'" % re.escape(
               os.path.join(w["dir"], "extra.conf")))
    # Several problems at once, each with the line of its key.
    garbage = os.path.join(w["dir"], "key.pem")
    write(garbage, "no key here\n")
    conf = conf_with(w, "user = no-such-user-x\nca_file = %s\ndkim_domain = relay.test\n"
                        "dkim_selector = s1\ndkim_key_file = %s\n" % (garbage, garbage),
                     "many.conf")
    p = expect("check", 78, run(["check", "-c", conf]))
    lines = p.stderr.decode().splitlines()
    errors = [l for l in lines if ": warning: " not in l]
    assert len(errors) == 3, lines
    assert errors[0] == "%s:5: user 'no-such-user-x' does not exist" % conf
    assert errors[1].startswith("%s:6: cannot load ca_file %s: " % (conf, garbage)), lines
    assert errors[2] == "%s:9: dkim_key_file: no PEM private key found" % conf
    assert p.stdout == b""
    # RFC 8460 §3: signed by the submitter's domain or a parent of it
    key = os.path.join(w["dir"], "dkim.key")
    subprocess.run(["openssl", "genrsa", "-out", key, "2048"], check=True, capture_output=True,
                   timeout=120)
    conf = conf_with(w, "tlsrpt_contact = tls@mail.example.org\ndkim_domain = example.com\n"
                        "dkim_selector = s1\ndkim_key_file = %s\n" % key, "dkim.conf")
    expect("check", 78, run(["check", "-c", conf]),
           r"^%s:6: dkim_domain 'example.com' is neither the report submitter's domain "
           r"'mail.example.org'" % re.escape(conf))
    write(conf, open(conf).read().replace("example.com", "example.org"))
    expect("check", 0, run(["check", "-c", conf]))
    # a spool that cannot be created
    under_file = os.path.join(w["dir"], "file")
    write(under_file, "x")
    p = expect("check", 78, run(["check", "-c", write_spool(w, under_file + "/spool")]),
               r"spool\.conf:1: spool_dir .*/file/spool")


def test_check_reads_files_as_the_user(w):
    ensure_drop_group()
    ensure_test_user()
    key = os.path.join(w["dir"], "dkim.key")
    subprocess.run(["openssl", "genrsa", "-out", key, "2048"], check=True, capture_output=True,
                   timeout=120)
    os.chmod(key, 0o600)   # root's only: the daemon, once it is TEST_USER, cannot read it
    conf = conf_with(w, "user = %s\ndkim_domain = relay.test\ndkim_selector = s1\n"
                        "dkim_key_file = %s\n" % (TEST_USER, key))
    expect("check", 78, run(["check", "-c", conf]),
           r":8: dkim_key_file %s is not readable by user %s: Permission denied" %
           (re.escape(key), TEST_USER))
    os.chown(key, pwd.getpwnam(TEST_USER).pw_uid, -1)
    p = expect("check", 0, run(["check", "-c", conf]))
    assert p.stdout.endswith(b": ok (with warnings)\n"), p.stdout


# --------------------------------------------------------------- sendmail
def sendmail(w, args, user=None, input=b"Subject: x\n\nbody\n", conf=None, prefix=None,
             binary=None):
    cmd = [binary or BIN, "sendmail", "-C", conf or w["conf"]] + args
    if prefix:
        cmd = prefix + cmd
    if user:
        cmd = ["runuser", "-u", user, "--"] + cmd
    return subprocess.run(cmd, input=input, capture_output=True, timeout=TIMEOUT)


def setgid_copy(w):
    """A copy of the binary installed the way sendmail needs it."""
    b = os.path.join(w["dir"], "bin", "stsrelay")
    os.makedirs(os.path.dirname(b))
    shutil.copy(BIN, b)
    subprocess.run([os.path.join(SRC, "scripts", "install-perms"), b, w["spool"]], check=True,
                   capture_output=True, timeout=60)
    return b


def test_sendmail_codes(w):
    ensure_drop_group()
    ensure_test_user()
    expect("sendmail", 0, sendmail(w, ["a@example.com"]))
    expect("sendmail", 64, sendmail(w, ["-Q", "a@example.com"]), r"^sendmail: unknown option")
    expect("sendmail", 65, sendmail(w, []), r"^sendmail: no recipients")
    expect("sendmail", 78, sendmail(w, ["a@example.com"], conf=w["conf"] + ".missing"),
           r"stsrelay\.conf\.missing: cannot open")
    # a uid without a passwd entry has no login name to use as sender
    expect("sendmail", 67, sendmail(w, ["a@example.com"], prefix=[
        "setpriv", "--reuid=%d" % NOBODY_UID, "--regid=%d" % NOBODY_UID, "--clear-groups"]),
        r"no login name for user id %d" % NOBODY_UID)
    # a user outside the drop group (the binary is not set-group-ID)
    expect("sendmail", 77, sendmail(w, ["a@example.com"], user=TEST_USER),
           r"maildrop: Permission denied")
    # no spool at all (not made yet): try again later
    missing = write_spool(w, os.path.join(w["dir"], "not-yet"))
    expect("sendmail", 75, sendmail(w, ["a@example.com"], user=TEST_USER, conf=missing),
           r"not-yet")
    drop = os.path.join(w["spool"], "maildrop")
    gid = grp.getgrnam(DROP_GROUP).gr_gid
    # maildrop/ on a read-only mount: the file cannot be created
    try:
        p = sendmail(w, ["a@example.com"], prefix=unshare_argv(
            drop, "mount -o remount,bind,ro %s" % drop))
    finally:
        release(drop)
    expect("sendmail", 73, p, r"cannot create a file in .*/maildrop: Read-only file system")
    # maildrop/ on a full file system: the write fails
    big = b"Subject: big\n\n" + (b"x" * 76 + b"\n") * 4000
    try:
        p = sendmail(w, ["a@example.com"], input=big, prefix=unshare_argv(
            drop, "mount -t tmpfs -o size=64k,mode=1730,gid=%d tmpfs %s" % (gid, drop)))
    finally:
        release(drop)
    expect("sendmail", 74, p, r"No space left on device")


# ---------------------------------------------------------- mailq, queue
def corrupt_queue_file(spool):
    qdir = os.path.join(spool, "queue")
    os.makedirs(qdir, exist_ok=True)
    path = os.path.join(qdir, "0123456789AB")
    write(path, "this is no queue file\n", 0o600)
    return "0123456789AB"


def test_mailq_codes(w):
    ensure_test_user()
    expect("mailq", 69, run(["mailq", "-c", w["conf"]]), r"cannot open the spool")
    assert sendmail(w, ["a@example.com"]).returncode == 0   # makes the spool
    p = expect("mailq", 0, run(["mailq", "-c", w["conf"]]))
    assert b"Mail queue is empty" in p.stdout
    expect("mailq", 64, run(["mailq", "-c", w["conf"], "extra"]), r"^usage: mailq")
    expect("mailq", 78, run(["mailq", "-c", conf_with(w, "listen = nowhere\n")]))
    # a user who cannot read the spool asks the daemon; with none running: 69
    expect("mailq", 69, run(["mailq", "-c", w["conf"]], user=TEST_USER),
           r"readable only by root and the daemon's user, and the daemon is not running")
    # and one who cannot even enter the spool directory: a permission problem
    os.chmod(w["spool"], 0o700)
    expect("mailq", 77, run(["mailq", "-c", w["conf"]], user=TEST_USER), r"Permission denied")
    os.chmod(w["spool"], 0o755)
    qid = corrupt_queue_file(w["spool"])
    expect("mailq", 74, run(["mailq", "-c", w["conf"]]), qid)


def fake_control(path, replies):
    """A stand-in daemon on the control socket: one reply per connection
    (None: close without a reply)."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    srv.settimeout(20)

    def serve():
        try:
            for reply in replies:
                c, _ = srv.accept()
                with c:
                    c.settimeout(10)
                    buf = b""
                    while not buf.endswith(b"\n") and len(buf) < 1024:
                        chunk = c.recv(1024)
                        if not chunk:
                            break
                        buf += chunk
                    if reply is not None:
                        c.sendall(reply)
        finally:
            srv.close()
            os.unlink(path)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def test_queue_codes(w, tmp_path):
    ensure_test_user()
    q = ["-c", w["conf"]]
    expect("queue", 64, run(["queue", "frobnicate"] + q), r"unknown command")
    expect("queue", 65, run(["queue", "show", "not-an-id"] + q), r"not a queue id")
    expect("queue", 78, run(["queue", "list", "-c", conf_with(w, "user = -x\n")]))
    expect("queue", 69, run(["queue", "list"] + q), r"cannot open the spool")

    # the daemon of the same spool and configuration file as the commands
    d = Daemon(w["dir"])
    assert d.conf_path == w["conf"] and d.spool == w["spool"]
    d.start()
    try:
        qid = submit(d, "a@sender.test", ["b@dest.test"], b"Subject: q\r\n\r\nx\r\n")
        expect("queue", 0, run(["queue", "flush", qid] + q))
        expect("queue", 67, run(["queue", "flush", "0000000000AB"] + q),
               r"^stsrelay queue: no such message 0000000000AB$")
        # the control socket is root's: a permission problem, not "no daemon"
        expect("queue", 77, run(["queue", "flush"] + q, user=TEST_USER),
               r"control: Permission denied \(run it as root")
    finally:
        assert d.stop() == 0
    expect("queue", 69, run(["queue", "bounce", qid] + q), r"needs the daemon")
    expect("queue", 67, run(["queue", "delete", "0000000000AB"] + q), r"no message")
    expect("queue", 77, run(["queue", "delete", qid] + q, user=TEST_USER),
           r"Permission denied")
    bad = corrupt_queue_file(w["spool"])
    expect("queue", 74, run(["queue", "show", bad] + q), bad)
    os.unlink(os.path.join(w["spool"], "queue", bad))

    # what a daemon may answer
    t = fake_control(os.path.join(w["spool"], "control"), [
        b"error cannot delete %s (spool error, see the log)\n" % qid.encode(),
        None, b"what?\n"])
    expect("queue", 70, run(["queue", "delete", qid] + q), r"spool error")
    expect("queue", 75, run(["queue", "flush"] + q), r"closed the connection")
    expect("queue", 76, run(["queue", "flush"] + q), r"unexpected reply")
    t.join(timeout=20)


# -------------------------------------------------------------- sts, tlsrpt
def test_sts_codes(w):
    os.makedirs(w["spool"])
    expect("sts", 0, run(["sts", "cache", "-c", w["conf"]]))
    expect("sts", 64, run(["sts", "frob", "-c", w["conf"]]), r"unknown command")
    expect("sts", 65, run(["sts", "check", "bad..domain", "-c", w["conf"]]),
           r"not a valid domain name")
    expect("sts", 78, run(["sts", "cache", "-c", conf_with(w, "hostname = -x\n")]))
    write(os.path.join(w["spool"], "sts"), "not a directory\n")
    expect("sts", 74, run(["sts", "cache", "-c", w["conf"]]), r"cannot read .*/sts")


def test_tlsrpt_codes(w):
    ensure_test_user()
    os.makedirs(w["spool"])
    c = ["-c", w["conf"]]
    p = expect("tlsrpt", 0, run(["tlsrpt", "show", "--day", "2026-01-01"] + c))
    assert b"TLS-RPT day 2026-01-01 (UTC): 0 policy domains" in p.stdout, p.stdout
    expect("tlsrpt", 64, run(["tlsrpt", "show", "--day", "yesterday"] + c), r"bad day")
    expect("tlsrpt", 66, run(["tlsrpt", "validate", os.path.join(w["dir"], "none.json")]),
           r"unreadable")
    junk = os.path.join(w["dir"], "report.json")
    write(junk, "{}")
    p = expect("tlsrpt", 65, run(["tlsrpt", "validate", junk]))
    assert p.stdout.startswith(b"invalid: ")
    garbage = os.path.join(w["dir"], "dkim.key")
    write(garbage, "nothing\n")
    expect("tlsrpt", 78, run(["tlsrpt", "send", "-c", conf_with(
        w, "dkim_domain = relay.test\ndkim_selector = s1\ndkim_key_file = %s\n" % garbage)]),
        r"DKIM key")
    under_file = os.path.join(w["dir"], "file")
    write(under_file, "x")
    expect("tlsrpt", 69, run(["tlsrpt", "send", "-c", write_spool(w, under_file + "/s")]),
           r"cannot open the spool")
    assert run(["sendmail", "-C", w["conf"], "a@example.com"],
               input=b"x\n").returncode == 0  # root makes queue/ (0700)
    expect("tlsrpt", 77, run(["tlsrpt", "send"] + c, user=TEST_USER), r"Permission denied")
    key = os.path.join(w["dir"], "exists.key")
    write(key, "mine\n", 0o600)
    expect("tlsrpt", 73, run(["tlsrpt", "dkim-keygen", "--selector", "s1", "--out", key] + c),
           r"exists; not replaced")
    assert open(key).read() == "mine\n"
    write(os.path.join(w["spool"], "tlsrpt"), "not a directory\n")
    expect("tlsrpt", 74, run(["tlsrpt", "show", "--day", "2026-01-01"] + c),
           r"tlsrpt/2026-01-01/sessions: Not a directory")


# ------------------------------------------------------------ the README
def readme_codes():
    """(command, code) pairs of the README's exit code table."""
    text = open(os.path.join(SRC, "README.md")).read()
    sec = text[text.index("## Exit codes"):]
    sec = sec[:sec.index("\n## ", 5)]
    out = set()
    for row in re.findall(r"^\| `([^`]+)`[^|]*\| (.+) \|$", sec, re.M):
        names, cell = row
        cmd = names.split()[0]
        codes = re.findall(r"(?:^|(?<= · ))(\d{1,3})\b", cell)
        assert codes, row
        out.update((cmd, int(c)) for c in codes)
    return out


def test_zz_every_readme_code_was_produced():
    listed = readme_codes()
    assert {c for c, _ in listed} >= {"serve", "check", "sendmail", "mailq", "queue", "sts",
                                      "tlsrpt"}, listed
    for key, (module, needle) in ELSEWHERE.items():
        assert needle in open(os.path.join(os.path.dirname(__file__), module)).read(), key
    missing = sorted(listed - set(SEEN) - set(ELSEWHERE))
    assert missing == [], "README codes no test produced: %s" % missing
    unlisted = sorted(set(SEEN) - listed)
    assert unlisted == [], "codes produced but not in the README: %s" % unlisted
