# Security properties of the daemon (issue 6, item 5): no open relay outside
# mynetworks, no header/command injection through the envelope, privilege
# drop to `user`, private spool permissions.
import grp
import os
import pwd
import re
import socket
import stat
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faults_util import (SAN_ENV, RawSMTP, assert_no_sanitizer_report,  # noqa: E402
                         log_lines, msgid_message, proc_status, queue_id_of, queue_list,
                         smtp_submit, wait_for)
from tests.world import free_port  # noqa: E402

SENDER = "sender@client.world.test"


def finish(r, expect_rc=0):
    rc = r.stop(timeout=30)
    assert_no_sanitizer_report(r.log())
    assert rc == expect_rc, "relay exit code %r\n%s" % (rc, r.log(4000))


def queue_files(spool):
    d = os.path.join(spool, "queue")
    return sorted(n for n in os.listdir(d) if not n.startswith("."))


def read_spool(spool):
    """Every byte of every regular file under the spool."""
    out = b""
    for root, _dirs, files in os.walk(spool):
        for f in files:
            p = os.path.join(root, f)
            if stat.S_ISREG(os.lstat(p).st_mode):
                with open(p, "rb") as fh:
                    out += fh.read()
    return out


# ------------------------------------------------------- mynetworks

def _ipv6_ok():
    try:
        s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        s.bind(("::", 0))
        s.close()
        return True
    except OSError:
        return False


def _outside_attempts(c):
    """From a client outside mynetworks: every relay attempt is refused
    at RCPT with 554 5.7.1, DATA and a pipelined transaction get nowhere."""
    rcpts = ["victim@example.test", "user%other.test@example.test",
             "@hop.test:victim@example.test", "victim@[127.0.0.1]",
             "victim@relay.world.test"]
    assert c.reply()[0] == 220
    assert c.cmd("EHLO outside.test")[0] == 250
    assert c.cmd("MAIL FROM:<%s>" % SENDER)[0] == 250
    for rc in rcpts:
        code, text = c.cmd("RCPT TO:<%s>" % rc)
        assert code == 554 and "5.7.1" in text, (rc, code, text)
    code, text = c.cmd("DATA")
    assert 500 <= code < 600, (code, text)
    # a whole pipelined transaction, body lines included
    c.send(b"RSET\r\nMAIL FROM:<a@outside.test>\r\nRCPT TO:<victim@example.test>\r\n"
           b"DATA\r\nSubject: relay me\r\n\r\nspam\r\n.\r\nQUIT\r\n")
    codes = [code for code, _ in c.replies_until_quit()]
    assert codes[:2] == [250, 250] and codes[-1] == 221, codes
    assert 250 not in codes[2:] and 354 not in codes, codes


def test_relay_refused_outside_mynetworks(world, relay):
    """mynetworks = 127.0.0.1/32: a client from 127.0.0.2 cannot relay and
    nothing is queued; the same recipient from 127.0.0.1 is accepted."""
    # DNS down: the accepted control message stays in the queue
    r = relay({"mynetworks": "127.0.0.1/32", "retry_schedule": "1h",
               "dns_servers": "127.0.0.1:%d" % free_port(udp_too=True)}, env=SAN_ENV)
    with RawSMTP(r.host, r.port, source="127.0.0.2") as c:
        _outside_attempts(c)
    assert queue_list(r)["messages"] == []
    assert queue_files(r.config["spool_dir"]) == []
    assert log_lines(r, r"reject: RCPT from \S*\[127\.0\.0\.2\]: 554 5\.7\.1")

    code, text = smtp_submit(r.host, r.port, SENDER, ["victim@example.test"],
                             msgid_message("inside"), source="127.0.0.1")
    assert code == 250, (code, text)
    assert len(queue_list(r)["messages"]) == 1
    assert r.running
    finish(r)


def test_relay_refused_ipv6_client_outside_mynetworks(world, relay):
    """An IPv6 listener with mynetworks = 127.0.0.1/32: a client from ::1
    is outside and cannot relay."""
    if not _ipv6_ok():
        pytest.skip("no IPv6")
    port = free_port("::1")
    r = relay({"mynetworks": "127.0.0.1/32",
               "listen": "127.0.0.1:%d, [::1]:%d" % (port, port)}, start=False, env=SAN_ENV)
    r.start()
    with RawSMTP("::1", port) as c:
        _outside_attempts(c)
    assert queue_list(r)["messages"] == []
    assert log_lines(r, r"reject: RCPT from \S*\[(IPv6:)?::1\]: 554 5\.7\.1")
    finish(r)


# ------------------------------------------------------ injection

# (name, stage, bytes sent instead of the normal command, must every reply
# be 5xx). "X-Injected" must never reach a queue file or the MX.
INJECTIONS = [
    ("crlf-after-mail", "mail", b"MAIL FROM:<a@b.test>\r\nX-Injected: crlf\r\n", False),
    ("cr-in-mail-path", "mail", b"MAIL FROM:<a@b.test\rX-Injected: cr>\r\n", True),
    ("cr-after-mail-path", "mail", b"MAIL FROM:<a@b.test>\rX-Injected: cr2\r\n", True),
    ("lf-in-mail-path", "mail", b"MAIL FROM:<a@b.test\nX-Injected: lf>\r\n", True),
    ("lf-after-mail-path", "mail", b"MAIL FROM:<a@b.test>\nX-Injected: lf2\r\n", False),
    ("nul-in-mail-path", "mail", b"MAIL FROM:<a\0X-Injected: nul@b.test>\r\n", True),
    ("quoted-cr-mail", "mail", b"MAIL FROM:<\"a\rX-Injected: q\"@b.test>\r\n", True),
    ("quoted-pair-cr-mail", "mail", b"MAIL FROM:<\"a\\\rX-Injected: qp\"@b.test>\r\n", True),
    ("param-cr-mail", "mail", b"MAIL FROM:<a@b.test> SIZE=10\rX-Injected: p\r\n", True),
    ("cr-in-rcpt-path", "rcpt", b"RCPT TO:<user@inj.test\rX-Injected: rcr>\r\n", True),
    ("lf-in-rcpt-path", "rcpt", b"RCPT TO:<user@inj.test\nX-Injected: rlf>\r\n", True),
    ("nul-in-rcpt-path", "rcpt", b"RCPT TO:<user\0X-Injected: rnul@inj.test>\r\n", True),
    ("quoted-cr-rcpt", "rcpt", b"RCPT TO:<\"u\rX-Injected: rq\"@inj.test>\r\n", True),
    ("quoted-pair-lf-rcpt", "rcpt", b"RCPT TO:<\"u\\\nX-Injected: rqp\"@inj.test>\r\n", True),
    ("cr-in-helo", "ehlo", b"EHLO c.test\rX-Injected: helo\r\n", True),
    ("lf-in-helo", "ehlo", b"EHLO c.test\nX-Injected: helo2\r\n", False),
    ("nul-in-helo", "ehlo", b"EHLO c.test\0X-Injected: helo3\r\n", True),
]


def _replies_until_help(c):
    """Replies up to the 214 that answers our HELP marker."""
    codes = []
    for _ in range(20):
        code, text = c.reply()
        if code == 214:
            return codes
        codes.append((code, text))
    raise AssertionError("no reply to HELP: %s" % codes)


def test_no_header_injection_through_envelope(world, relay):
    """Envelope commands carrying CR, LF or NUL (bare, quoted, quoted-pair,
    after the path) are refused, and afterwards the same session still
    queues a normal message; no queue file, no SMTP command to the MX and
    no delivered message carries the injected text."""
    fm = world.fake_mx("mx.inj.test")
    world.mx("inj.test", ["mx.inj.test"])
    # DNS down at first: every message stays queued for inspection
    r = relay({"retry_schedule": "2s",
               "dns_servers": "127.0.0.1:%d" % free_port(udp_too=True)}, env=SAN_ENV)
    spool = r.config["spool_dir"]
    qids = []
    for name, stage, evil, all_5xx in INJECTIONS:
        with RawSMTP(r.host, r.port) as c:
            assert c.reply()[0] == 220
            if stage == "ehlo":
                c.send(evil + b"HELP\r\n")
                codes = _replies_until_help(c)
                assert c.cmd("EHLO c.test")[0] == 250
            else:
                assert c.cmd("EHLO c.test")[0] == 250
                if stage == "rcpt":
                    assert c.cmd("MAIL FROM:<a@b.test>")[0] == 250
                c.send(evil + b"HELP\r\n")
                codes = _replies_until_help(c)
            assert codes, name
            if all_5xx:
                assert all(500 <= k < 600 for k, _ in codes), (name, codes)
            else:
                # the clean first line may pass; the injected line may not
                assert 500 <= codes[-1][0] < 600, (name, codes)
            # the session goes on with a clean transaction
            assert c.cmd("RSET")[0] == 250
            assert c.cmd("MAIL FROM:<a@b.test>")[0] == 250, name
            assert c.cmd("RCPT TO:<user@inj.test>")[0] == 250, name
            assert c.cmd("DATA")[0] == 354
            code, text = c.cmd(b"Subject: after %s\r\nMessage-ID: <%s@c.test>\r\n\r\n"
                               b"clean body\r\n.\r\n" % (name.encode(), name.encode()))
            assert code == 250, (name, code, text)
            qids.append(queue_id_of(text))
            c.cmd("QUIT")
    assert b"X-Injected" not in read_spool(spool)
    for qid in qids:
        with open(os.path.join(spool, "queue", qid), "rb") as f:
            head = f.read().split(b"\nend\n")[0]
        rcpt_lines = [l for l in head.split(b"\n") if l.startswith(b"rcpt")]
        assert len(rcpt_lines) == 1 and b"user@inj.test" in rcpt_lines[0], head
    assert len(queue_list(r)["messages"]) == len(INJECTIONS)

    finish(r)
    r.config["dns_servers"] = world.dns.servers
    r.start()
    r.cli("queue", "flush")
    wait_for(lambda: len(fm.messages()) >= len(INJECTIONS), 60,
             what="all %d messages at the MX" % len(INJECTIONS))
    time.sleep(1)
    assert len(fm.messages()) == len(INJECTIONS)
    for m in fm.messages():
        assert b"X-Injected" not in m.data
        assert m.mail_from == "a@b.test" and m.rcpts == ["user@inj.test"], m
    for s in fm.sessions:
        for _tls, line in s.commands:
            assert "X-Injected" not in line
            assert "\r" not in line and "\0" not in line, line
    assert r.running
    finish(r)


@pytest.mark.parametrize("eod", [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r",
                                 b"\r\n.\r", b"\r.\r\n"],
                         ids=["LF.LF", "LF.CRLF", "CRLF.LF", "CR.CR", "CRLF.CR", "CR.CRLF"])
def test_no_smtp_smuggling_inbound(world, relay, eod):
    """SMTP smuggling into the relay: only CRLF.CRLF ends DATA. A body
    holding another end-of-data look-alike followed by a second envelope
    (what a client library that dot-stuffs only after CRLF passes on from
    user-supplied text) stays one message; no second transaction is
    started from the text after it."""
    r = relay({"dns_servers": "127.0.0.1:%d" % free_port(udp_too=True),
               "retry_schedule": "1h"}, env=SAN_ENV)
    body = (b"Subject: smuggle\r\nMessage-ID: <smuggle@c.test>\r\n\r\nline one" + eod +
            b"MAIL FROM:<ceo@victim.test>\r\nRCPT TO:<target@elsewhere.test>\r\n"
            b"DATA\r\nFrom: ceo@victim.test\r\nSubject: smuggled\r\n\r\nsmuggled\r\n")
    with RawSMTP(r.host, r.port) as c:
        c.open_data("c.test", "a@b.test", ["user@smuggle.test"])
        c.send(body + b".\r\nQUIT\r\n")
        codes = c.replies_until_quit()
    msgs = queue_list(r)["messages"]
    rcpts = sorted(x["address"] for m in msgs for x in m["recipients"])
    assert "target@elsewhere.test" not in rcpts, ("smuggled transaction queued", codes)
    assert rcpts == ["user@smuggle.test"] or \
        (rcpts == [] and 500 <= codes[0][0] < 600), (rcpts, codes)
    assert [k for k, _ in codes] in ([250, 221], [221]) or \
        (500 <= codes[0][0] < 600 and codes[-1][0] == 221), codes
    if rcpts:
        with open(os.path.join(r.config["spool_dir"], "queue", msgs[0]["id"]), "rb") as f:
            data = f.read()
        assert b"smuggled\r\n" in data, "message was cut at the look-alike: %r" % data[-300:]
    finish(r)


def test_no_smtp_smuggling_to_the_mx(world, relay):
    """A body holding end-of-data look-alikes (a dot line, bare CR
    variants) followed by commands reaches the MX as one message: the MX
    sees one MAIL, and the stream the relay sends carries no bare CR or LF
    (lenient receivers take "CR . CR" and the like as the end of DATA)."""
    fm = world.fake_mx("mx.smuggle.test")
    world.mx("smuggle.test", ["mx.smuggle.test"])
    r = relay({}, env=SAN_ENV)
    body = (b"Subject: smuggle\r\nMessage-ID: <smuggle@c.test>\r\n\r\nline one\r\n"
            b"..\r\nMAIL FROM:<evil@smuggle.test>\r\nRCPT TO:<other@smuggle.test>\r\n"
            b"DATA\r\nX-Smuggled: 1\r\n\r\nsecond\r\n..\r\n"
            b"cr variant\r.\rMAIL FROM:<evil2@smuggle.test>\r\n"
            b"end\r\n")
    with RawSMTP(r.host, r.port) as c:
        c.open_data("c.test", "a@b.test", ["user@smuggle.test"])
        code, text = c.cmd(body + b".\r\n")
        assert code == 250, text
        c.cmd("QUIT")
    wait_for(lambda: fm.messages(), 30, what="delivery")
    time.sleep(1)
    assert len(fm.messages()) == 1, fm.messages()
    mails = [l for s in fm.sessions for _t, l in s.commands if l.upper().startswith("MAIL")]
    assert len(mails) == 1 and mails[0].startswith("MAIL FROM:<a@b.test>"), mails
    data = fm.messages()[0].data
    assert b"MAIL FROM:<evil@smuggle.test>" in data and b"evil2@smuggle.test" in data
    wire = b"".join(bytes(s.tls_bytes) or bytes(s.plain) for s in fm.sessions)
    start = wire.index(b"Subject: smuggle")
    stream = wire[start:wire.index(b"\r\n.\r\n", wire.index(b"end\r\n", start))]
    bare = re.search(rb"(?<!\r)\n|\r(?!\n)", stream)
    assert bare is None, "bare CR or LF sent to the MX: %r" % stream[
        max(0, bare.start() - 30):bare.start() + 30]
    for m in re.finditer(rb"\r\n\.", stream):
        assert stream[m.end():m.end() + 1] == b".", "unstuffed dot line sent: %r" % stream[
            m.start():m.start() + 40]
    finish(r)


def test_sendmail_envelope_cannot_inject(world, relay):
    """The sendmail front end: -f, -F and recipient arguments with CR/LF
    are refused (non-zero exit) or, if taken, never inject a header into
    the queued message."""
    # DNS down: whatever is accepted stays in the queue for inspection
    r = relay({"dns_servers": "127.0.0.1:%d" % free_port(udp_too=True),
               "retry_schedule": "1h"}, env=SAN_ENV)
    spool = r.config["spool_dir"]
    msg = b"Subject: sm\r\n\r\nbody\r\n"
    cases = [["-f", "a@b.test\nX-Injected: f", "user@inj.test"],
             ["-f", "a@b.test\r\nX-Injected: f2", "user@inj.test"],
             ["-f", "a@b.test\rX-Injected: f3", "user@inj.test"],
             ["-f", "a@b.test", "user@inj.test\nX-Injected: r"],
             ["-f", "a@b.test", "user@inj.test\r\nX-Injected: r2"],
             ["-f", "a@b.test", "-F", "Name\nX-Injected: F", "user@inj.test"],
             ["-f", "a@b.test", "-F", "Name\r\nX-Injected: F2", "user@inj.test"]]
    accepted = 0
    for args in cases:
        p = r.cli("sendmail", "-i", *args, input=msg, timeout=30)
        assert_no_sanitizer_report(p.stderr.decode(errors="replace"), "sendmail")
        assert p.returncode >= 0, (args, p.returncode)
        accepted += p.returncode == 0
    drop = os.path.join(spool, "maildrop")
    wait_for(lambda: not os.listdir(drop), 15, what="maildrop to be picked up")
    time.sleep(1)
    assert len(queue_list(r)["messages"]) == accepted
    for n in queue_files(spool):
        with open(os.path.join(spool, "queue", n), "rb") as f:
            raw = f.read()
        head, _, data = raw.partition(b"\nend\n")
        for line in head.split(b"\n"):
            assert b"X-Injected" not in line, (n, head)
        headers = data.split(b"\r\n\r\n", 1)[0]
        for line in headers.split(b"\r\n"):
            assert not line.startswith(b"X-Injected"), (n, headers)
            assert b"\r" not in line and b"\n" not in line, (n, headers)
    finish(r)


# ------------------------------------------------- privilege drop

def _ids(pid):
    st = proc_status(pid)
    uids = [int(x) for x in st["Uid"].split()]
    gids = [int(x) for x in st["Gid"].split()]
    groups = [int(x) for x in st.get("Groups", "").split()]
    return uids, gids, groups


def test_privilege_drop_to_user(world, relay):
    """user = nobody: after binding, every uid/gid of the process is
    nobody's, no supplementary group is root's, and mail is still
    queued (files owned by nobody) and delivered."""
    if os.getuid() != 0:
        pytest.skip("needs root")
    nobody = pwd.getpwnam("nobody")
    pf = world.postfix(["example.test"], ["mx1.example.test"])
    world.mx("example.test", ["mx1.example.test"])
    world.sts("example.test", "enforce", ["mx1.example.test"])
    r = relay({"user": "nobody"}, start=False, env=SAN_ENV)
    # the operator's step: stsrelay never chowns an existing spool directory
    os.chown(r.config["spool_dir"], nobody.pw_uid, nobody.pw_gid)
    r.start()
    uids, gids, groups = _ids(r.proc.pid)
    assert uids == [nobody.pw_uid] * 4, uids
    assert gids == [nobody.pw_gid] * 4, gids
    assert 0 not in groups, groups
    # the drop group (when installed) stays, so the pickup reads what users submit
    drop = [g.gr_gid for g in grp.getgrall() if g.gr_name == "stsrelay-drop"]
    assert set(drop) <= set(groups), (drop, groups)
    assert r.wait_log(r"running as user nobody")

    code, text = smtp_submit(r.host, r.port, SENDER, ["rcpt@example.test"],
                             msgid_message("dropped"))
    assert code == 250, (code, text)
    qid = queue_id_of(text)
    pf.wait_messages("rcpt@example.test", 1, timeout=30)
    line = r.wait_log(r"%s: to=<rcpt@example\.test>.*status=sent" % qid, timeout=10)[0]
    assert "sts=enforce" in line, line
    spool = r.config["spool_dir"]
    # everything the daemon made after the switch is nobody's
    for root, dirs, files in os.walk(spool):
        for n in dirs + files:
            p = os.path.join(root, n)
            st = os.lstat(p)
            if os.path.basename(root) == "maildrop" or n == "maildrop":
                continue
            assert st.st_uid == nobody.pw_uid, "%s owned by uid %d" % (p, st.st_uid)
    assert os.stat(spool).st_uid == nobody.pw_uid
    # the queue commands (run as root) still work against it
    assert queue_list(r)["messages"] == []
    finish(r)


def test_privilege_drop_after_running_as_root(world, relay):
    """An operator sets user = nobody on a spool that root used before, with
    a message still deferred in it: the daemon must still deliver it (or
    refuse to start with a clear message) — never run and silently strand
    the queue."""
    if os.getuid() != 0:
        pytest.skip("needs root")
    pf = world.postfix(["example.test"], ["mx1.example.test"])
    world.mx("example.test", ["mx1.example.test"])
    world.sts("example.test", "enforce", ["mx1.example.test"])
    # first as root, with DNS down so the message stays queued
    r = relay({"dns_servers": "127.0.0.1:%d" % free_port(udp_too=True)}, env=SAN_ENV)
    code, text = smtp_submit(r.host, r.port, SENDER, ["rcpt@example.test"],
                             msgid_message("rootqueued"))
    assert code == 250, text
    qid = queue_id_of(text)
    r.wait_log(r"%s: to=<rcpt@example\.test>.*status=deferred" % qid, timeout=60)
    finish(r)

    r.config["dns_servers"] = world.dns.servers
    r.config["user"] = "nobody"
    r.write_config()
    p_started = True
    try:
        r.start()
    except Exception as e:  # refusing to start, clearly, is acceptable
        p_started = False
        assert "spool" in str(e) or "owned" in str(e), e
    if p_started:
        r.cli("queue", "flush")
        try:
            pf.wait_messages("rcpt@example.test", 1, timeout=30)
        except Exception:
            pytest.fail("message queued as root was not delivered after user = nobody:\n"
                        + r.log(5000))
        finish(r)


# -------------------------------------------------- spool permissions

def test_spool_files_private(world, relay):
    """After submissions, a delivery under an MTA-STS policy (cache and
    TLS-RPT data), a deferred message (state file) and a sendmail drop:
    every file under the spool is 0600 or stricter (no group/other bits)
    and no directory is world-writable."""
    pf = world.postfix(["example.test"], ["mx1.example.test"])
    world.mx("example.test", ["mx1.example.test"])
    world.sts("example.test", "enforce", ["mx1.example.test"])
    fm = world.fake_mx("mx.defer.test", {"reply": {"rcpt": "451 4.3.0 later"}})
    world.mx("defer.test", ["mx.defer.test"])
    r = relay({"retry_schedule": "1h"}, env=SAN_ENV)
    code, text = smtp_submit(r.host, r.port, SENDER, ["rcpt@example.test"],
                             msgid_message("perm1"))
    assert code == 250, text
    code, text = smtp_submit(r.host, r.port, SENDER, ["u@defer.test"],
                             msgid_message("perm2", to="u@defer.test"))
    assert code == 250, text
    q2 = queue_id_of(text)
    p = r.cli("sendmail", "-i", "-f", SENDER, "rcpt@example.test",
              input=msgid_message("perm3"))
    assert p.returncode == 0, p.stderr
    pf.wait_messages("rcpt@example.test", 2, timeout=30)
    r.wait_log(r"%s: to=<u@defer\.test>.*status=deferred" % q2, timeout=30)
    assert fm.sessions
    time.sleep(1)
    spool = r.config["spool_dir"]
    bad = []
    nfiles = 0
    for root, dirs, files in os.walk(spool):
        for n in dirs:
            p = os.path.join(root, n)
            mode = stat.S_IMODE(os.lstat(p).st_mode)
            if mode & 0o002:
                bad.append("dir %s mode %04o is world-writable" % (p, mode))
        for n in files:
            p = os.path.join(root, n)
            st = os.lstat(p)
            mode = stat.S_IMODE(st.st_mode)
            if os.path.relpath(p, spool) == "public/showq":
                # the listing socket every user may use (Postfix's public/showq)
                assert stat.S_ISSOCK(st.st_mode) and mode == 0o666, (p, oct(mode))
                continue
            nfiles += 1
            if mode & 0o077:
                bad.append("file %s mode %04o" % (os.path.relpath(p, spool), mode))
    mode = stat.S_IMODE(os.stat(spool).st_mode)
    if mode & 0o002:
        bad.append("spool %s mode %04o" % (spool, mode))
    assert nfiles >= 3, "expected queue, state, cache and TLS-RPT files"
    assert not bad, "\n".join(bad)
    # the queued one is in queue/ and private
    for n in os.listdir(os.path.join(spool, "queue")):
        assert stat.S_IMODE(os.lstat(os.path.join(spool, "queue", n)).st_mode) == 0o600
    finish(r)
