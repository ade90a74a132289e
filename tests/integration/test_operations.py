# Running it as the README says: one daemon per spool (the lock), queue
# commands that never edit the spool under a live daemon, local submission by
# any user with `user =` set (the drop group), a drop file the daemon cannot
# read set aside once, and mailq for users who cannot read the spool.
import json
import os
import re
import shutil
import subprocess
import time

import pytest

from faults_util import SAN_ENV, assert_no_sanitizer_report, msgid_message, smtp_submit
from serve_helpers import TEST_USER, ensure_test_user
from tests.world import free_port
from tests.world.relay import format_config
from tests.world.util import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (users, setgid, serve as root)")

SRC = os.environ.get("STSRELAY_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
SENDER = "ops@client.test"
OTHER = "nobody"   # a user who is neither root nor the daemon's


def queue_id(text):
    return re.search(r"queued as ([0-9A-F]{12})", text).group(1)


def as_user(user, *cmd, input=None, env=None, timeout=60):
    return subprocess.run(["runuser", "-u", user, "--"] + list(cmd), input=input,
                          capture_output=True, text=True, timeout=timeout, env=env)


def setgid_copy(world):
    """The binary as `cmake --install` / the package installs it: setgid to
    stsrelay-drop (scripts/install-perms makes the group), with the
    sendmail and mailq names beside it."""
    bindir = os.path.join(world.dir, "bin")
    os.makedirs(bindir, mode=0o755, exist_ok=True)
    binary = os.path.join(bindir, "stsrelay")
    shutil.copy(os.environ["STSRELAY_BIN"], binary)
    subprocess.run([os.path.join(SRC, "scripts", "install-perms"), binary], check=True,
                   timeout=60)
    for name in ("sendmail", "mailq"):
        os.symlink(binary, os.path.join(bindir, name))
    return bindir


def relay_as_user(relay, config):
    """serve as root with user = TEST_USER, on a spool directory the
    operator gave that user (stsrelay never chowns an existing one)."""
    user = ensure_test_user()
    r = relay(dict(config, user=TEST_USER), start=False, env=SAN_ENV)
    os.chown(r.config["spool_dir"], user.pw_uid, user.pw_gid)
    r.start()
    r.wait_log(r"running as user %s" % TEST_USER)
    return r


def test_second_serve_is_refused_and_the_first_keeps_working(world, relay):
    pf = world.postfix(["ops.test"], ["mx.ops.test"])
    world.mx("ops.test", ["mx.ops.test"])
    r = relay({}, env=SAN_ENV)
    spool = r.config["spool_dir"]
    control = os.path.join(spool, "control")
    before = os.stat(control)
    want = "spool %s is in use by another stsrelay (pid %d holds %s/lock): one daemon per spool" % (
        spool, r.proc.pid, spool)
    # the same file, and the same spool with a listener of its own: both
    # stop at the lock, before binding, with 75 (EX_TEMPFAIL)
    other = os.path.join(world.dir, "other.conf")
    with open(other, "w") as f:
        f.write(format_config(dict(r.config, listen="127.0.0.1:%d" % free_port())))
    for conf in (r.conf, other):
        p = subprocess.run([r.binary, "serve", "-c", conf], capture_output=True, text=True,
                           timeout=60, env=dict(r.env, **SAN_ENV))
        assert p.returncode == 75, (p.returncode, p.stderr)
        assert want in p.stderr, p.stderr
        assert_no_sanitizer_report(p.stderr, "second serve")
    # the first one's control socket is the same file and answers
    after = os.stat(control)
    assert (after.st_ino, after.st_dev) == (before.st_ino, before.st_dev)
    p = r.cli("queue", "flush")
    assert p.returncode == 0, p.stderr
    # and it keeps delivering
    code, text = smtp_submit(r.host, r.port, SENDER, ["u@ops.test"],
                             msgid_message("after-second", to="u@ops.test", sender=SENDER))
    assert code == 250, text
    pf.wait_messages("u@ops.test", 1, timeout=30)
    r.wait_log(r"%s: to=<u@ops\.test>, .*status=sent" % queue_id(text), timeout=15)
    assert r.stop() == 0
    assert not os.path.exists(control)
    # the lock goes with the process: a new daemon starts
    r.start()
    assert r.stop() == 0


def test_queue_commands_never_edit_under_a_live_daemon(world, relay):
    fm = world.fake_mx("mx.later.test", {"reply": {"rcpt": "451 4.3.0 later"}})
    world.mx("later.test", ["mx.later.test"])
    r = relay({"retry_schedule": "1h"}, env=SAN_ENV)
    spool = r.config["spool_dir"]
    code, text = smtp_submit(r.host, r.port, SENDER, ["u@later.test"],
                             msgid_message("held", to="u@later.test", sender=SENDER))
    assert code == 250, text
    qid = queue_id(text)
    r.wait_log(r"%s: to=<u@later\.test>, .*status=deferred" % qid, timeout=30)
    # a daemon whose control socket does not answer (moved away here)
    control = os.path.join(spool, "control")
    os.rename(control, control + ".away")
    try:
        for args in (["delete", qid], ["flush"], ["flush", qid]):
            p = r.cli("queue", *args)
            assert p.returncode == 75, (args, p.returncode, p.stderr)
            assert ("a daemon (pid %d) holds the spool %s but does not answer on its control "
                    "socket; not editing the spool under it" % (r.proc.pid, spool)) in \
                p.stderr.decode(), p.stderr
        assert os.path.exists(os.path.join(spool, "queue", qid))
    finally:
        os.rename(control + ".away", control)
    assert r.stop() == 0
    # no daemon: the command takes the lock and edits the spool itself
    p = r.cli("queue", "delete", qid)
    assert p.returncode == 0 and p.stdout.decode() == "%s: deleted\n" % qid, p
    assert not os.path.exists(os.path.join(spool, "queue", qid))


def test_local_users_submit_to_a_daemon_running_as_its_user(world, relay):
    """README: serve as root with `user = ...`; sendmail (setgid to
    stsrelay-drop) from root and from any user reaches the MX."""
    pf = world.postfix(["ops.test"], ["mx.ops.test"])
    world.mx("ops.test", ["mx.ops.test"])
    bindir = setgid_copy(world)
    r = relay_as_user(relay, {})
    sendmail = os.path.join(bindir, "sendmail")
    for who, rcpt in ((OTHER, "from-user@ops.test"), ("root", "from-root@ops.test")):
        p = as_user(who, sendmail, "-C", r.conf, "-i", rcpt,
                    input="Subject: from %s\n\nhello\n" % who)
        assert p.returncode == 0, (who, p.stderr)
        m = pf.wait_messages(rcpt, 1, timeout=30)[0]
        assert b"hello" in m.raw
    log = r.log()
    uid = {OTHER: int(subprocess.check_output(["id", "-u", OTHER])), "root": 0}
    for who in (OTHER, "root"):
        assert re.search(r"stsrelay/pickup\[\d+\]: [0-9A-F]{12}: uid=%d, from=<%s@" % (
            uid[who], who), log), log
    assert "set aside" not in log and "cannot read" not in log, log
    assert r.stop() == 0
    assert_no_sanitizer_report(r.log())


def test_unreadable_drop_file_is_set_aside_once(world, relay):
    """A drop file the daemon's user may not read (here root's, 0600) is
    moved to maildrop/.bad-ID with one log line saying why; it is not
    tried again on later scans."""
    pf = world.postfix(["ops.test"], ["mx.ops.test"])
    world.mx("ops.test", ["mx.ops.test"])
    bindir = setgid_copy(world)
    r = relay_as_user(relay, {})
    maildrop = os.path.join(r.config["spool_dir"], "maildrop")
    bad = "0000000000AB"
    path = os.path.join(maildrop, bad)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"id 0000000000AB\nend\nSubject: x\r\n\r\nx\r\n")
    os.close(fd)
    os.rename(path + ".tmp", path)
    # later submissions make the daemon scan maildrop/ again, twice
    for i in range(2):
        p = as_user(OTHER, os.path.join(bindir, "sendmail"), "-C", r.conf, "-i",
                    "later%d@ops.test" % i, input="Subject: later\n\nx\n")
        assert p.returncode == 0, p.stderr
        pf.wait_messages("later%d@ops.test" % i, 1, timeout=30)
    wait_until(lambda: os.path.exists(os.path.join(maildrop, ".bad-" + bad)), 15,
               what="the unreadable file set aside")
    time.sleep(6)   # and one periodic rescan (every 5 s)
    lines = [x for x in r.log().splitlines() if bad in x]
    assert len(lines) == 1, lines
    assert re.search(r"stsrelay/pickup\[\d+\]: warning: rejected maildrop/%s: cannot read it: "
                     r"Permission denied \(owner uid 0, group 0, mode 0600; the daemon reads "
                     r"drop files through group stsrelay-drop\); set aside as maildrop/\.bad-%s$"
                     % (bad, bad), lines[0]), lines[0]
    assert not os.path.exists(path)
    assert r.stop() == 0


def test_mailq_for_a_user_who_cannot_read_the_spool(world, relay):
    """mailq, `queue list` and `sendmail -bp` as a user who is neither root
    nor the daemon's: the listing comes from the daemon (public/showq) and
    shows a deferred message with its reason; changing the queue is refused
    with 77."""
    fm = world.fake_mx("mx.later.test", {"reply": {"rcpt": "451 4.3.0 greylisted, come back"}})
    world.mx("later.test", ["mx.later.test"])
    bindir = setgid_copy(world)
    r = relay_as_user(relay, {"retry_schedule": "1h"})
    code, text = smtp_submit(r.host, r.port, SENDER, ["u@later.test"],
                             msgid_message("mq", to="u@later.test", sender=SENDER))
    assert code == 250, text
    qid = queue_id(text)
    r.wait_log(r"%s: to=<u@later\.test>, .*status=deferred" % qid, timeout=30)
    mailq = os.path.join(bindir, "mailq")
    for cmd in ([mailq, "-c", r.conf], [os.path.join(bindir, "stsrelay"), "queue", "list", "-c",
                                         r.conf],
                [os.path.join(bindir, "sendmail"), "-C", r.conf, "-bp"]):
        p = as_user(OTHER, *cmd)
        assert p.returncode == 0, (cmd, p.stderr)
        out = p.stdout
        assert re.search(r"^%s +\d+ \S+ %s$" % (qid, re.escape(SENDER)), out, re.M), out
        assert "u@later.test (deferred, 1 attempt, next try " in out, out
        assert "451 4.3.0 greylisted, come back" in out, out
        assert out.endswith("-- 1 Kbytes in 1 Request.\n"), out
    # JSON: the shape of queue list --json, without who submitted it from where
    p = as_user(OTHER, os.path.join(bindir, "stsrelay"), "queue", "list", "--json", "-c", r.conf)
    assert p.returncode == 0, p.stderr
    mine = json.loads(p.stdout)["messages"]
    assert [m["id"] for m in mine] == [qid]
    assert "submitter" not in mine[0] and "client" not in mine[0]
    assert mine[0]["recipients"][0]["status"] == "deferred"
    root = json.loads(r.cli("queue", "list", "--json").stdout)["messages"]
    assert root[0]["client"] and {k: v for k, v in root[0].items()
                                  if k not in ("submitter", "client")} == mine[0]
    # changing or reading the queue: root and the daemon's user only
    for args in (["flush"], ["flush", qid], ["delete", qid], ["bounce", qid], ["show", qid]):
        p = as_user(OTHER, os.path.join(bindir, "stsrelay"), "queue", *args, "-c", r.conf)
        assert p.returncode == 77, (args, p.returncode, p.stderr)
        assert "Permission denied (run it as root or as the daemon's user" in p.stderr, p.stderr
    assert os.path.exists(os.path.join(r.config["spool_dir"], "queue", qid))
    # the daemon's user may change it
    p = as_user(TEST_USER, os.path.join(bindir, "stsrelay"), "queue", "flush", qid, "-c", r.conf)
    assert p.returncode == 0, p.stderr
    assert r.stop() == 0
    # without the daemon there is nobody to ask
    p = as_user(OTHER, mailq, "-c", r.conf)
    assert p.returncode == 69, (p.returncode, p.stderr)
    assert "readable only by root and the daemon's user, and the daemon is not running" in p.stderr
    assert_no_sanitizer_report(r.log())
