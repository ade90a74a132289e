# 8BITMIME end to end (RFC 6152): 8-bit mail in through the listener (with or
# without BODY=8BITMIME) and through sendmail, out to real Postfix MX hosts,
# one offering 8BITMIME and one that does not (smtpd_discard_ehlo_keywords).
# Postfix logs every client command of a debug peer, so its log shows what
# MAIL carried; its disconnect line counts the commands it got.
import hashlib
import os
import random
import re
import smtplib
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_delivery import (BIN, SENDER, dsn_for, log_lines, make_world,  # noqa: E402
                           queue_json, rcpt_line, wait_log)
from world.util import wait_until  # noqa: E402

MX8 = "mx8.eight.test"      # offers 8BITMIME (Postfix's default)
MX7 = "mx7.eight.test"      # does not
DEBUG = {"debug_peer_list": "127.0.0.0/8", "debug_peer_level": "2"}


@pytest.fixture(scope="module")
def dworld():
    w = make_world(["eight.test", "seven.test", "fallback8.test"],
                   {MX8: "good", MX7: "good"},
                   host_options={MX8: dict(DEBUG),
                                 MX7: dict(DEBUG, smtpd_discard_ehlo_keywords="8bitmime")})
    w.mx("eight.test", [(10, MX8)])
    w.mx("seven.test", [(10, MX7)])
    w.mx("fallback8.test", [(10, MX7), (20, MX8)])
    yield w
    w.close()


def body_8bit(seed, nlines=300):
    """Lines of random bytes 0x20..0xff (no CR/LF), some starting with '.'."""
    rnd = random.Random(seed)
    lines = []
    for i in range(nlines):
        n = rnd.randrange(0, 200)
        line = bytes(rnd.randrange(0x20, 0x100) for _ in range(n))
        if i % 17 == 0:
            line = b"." + line
        lines.append(line)
    return b"\r\n".join(lines) + b"\r\n"


def message(to, subject, body):
    return (b"From: Alice <alice@sender.test>\r\nTo: <%s>\r\nSubject: %s\r\n"
            b"Message-ID: <%s@sender.test>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=iso-8859-1\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n" % (
                to.encode(), subject.encode(), subject.encode())) + body


def sha(b):
    return hashlib.sha256(b).hexdigest()


def delivered_body(dworld, rcpt, subject):
    """The body (after the header block) of the message with that subject,
    as Postfix stored it (Maildir: LF line ends)."""
    def find():
        for m in dworld.postfix.messages(rcpt):
            if b"\nSubject: " + subject.encode() + b"\n" in m.raw:
                return m
        return None
    m = wait_until(find, 30, what="message %r for %s" % (subject, rcpt))
    return m.raw.partition(b"\n\n")[2]


def smtplib_send(d, rcpt, data, mail_options=()):
    with smtplib.SMTP("127.0.0.1", d.port, local_hostname="client.test", timeout=30) as s:
        s.ehlo()
        assert s.has_extn("8bitmime")
        s.mail(SENDER, list(mail_options))
        assert s.rcpt(rcpt)[0] == 250
        code, text = s.data(data)
        assert code == 250, text
        return re.search(rb"queued as ([0-9A-F]{12})", text).group(1).decode()


def mail_commands(dworld, host, sender=SENDER):
    """The MAIL commands Postfix's smtpd for host logged from the relay."""
    return re.findall(r"postfix/%s/smtpd\[\d+\]: < [^:]+: (MAIL FROM:<%s>[^\n]*)" % (
        re.escape(host), re.escape(sender)), dworld.postfix.log())


def flags_of(d, qid):
    return int(d.queue_file(qid)[0]["flags"])


def test_8bit_without_body_param_goes_out_with_8bitmime(dworld, tmp_path):
    """smtplib sends 8-bit bytes without BODY=8BITMIME (Postfix accepts that
    and treats it as 8-bit; so do we): the queue file is flagged, MAIL to
    the MX carries BODY=8BITMIME, the body arrives byte-identical."""
    d = dworld.relay(tmp_path, retry_schedule="1h")
    try:
        body = body_8bit(6152)
        before = len(mail_commands(dworld, MX8))
        qid = smtplib_send(d, "anna@eight.test", message("anna@eight.test", "undeclared", body))
        rcpt_line(d, qid, "anna@eight.test", "sent", timeout=30)
        got = delivered_body(dworld, "anna@eight.test", "undeclared")
        assert sha(got) == sha(body.replace(b"\r\n", b"\n"))
        cmds = mail_commands(dworld, MX8)[before:]
        assert len(cmds) == 1, cmds
        assert re.fullmatch(r"MAIL FROM:<%s> SIZE=\d+ BODY=8BITMIME" % re.escape(SENDER),
                            cmds[0]), cmds
    finally:
        d.stop()


def test_flag_follows_the_bytes_and_7bit_gets_no_body(dworld, tmp_path):
    """BODY=8BITMIME declared with 8-bit data: flagged. Declared but only
    7-bit bytes, or plain 7-bit: not flagged, and MAIL has no BODY=."""
    d = dworld.relay(tmp_path, retry_schedule="1h")
    try:
        before = len(mail_commands(dworld, MX8))
        q8 = smtplib_send(d, "bea@eight.test", message("bea@eight.test", "declared8",
                                                        body_8bit(1)), ["BODY=8BITMIME"])
        q7d = smtplib_send(d, "bea@eight.test", message("bea@eight.test", "declared7",
                                                         b"only ascii\r\n"), ["BODY=8BITMIME"])
        q7 = smtplib_send(d, "bea@eight.test", message("bea@eight.test", "plain7",
                                                        b"only ascii\r\n"))
        for qid in (q8, q7d, q7):
            rcpt_line(d, qid, "bea@eight.test", "sent", timeout=30)
        for subj, body in (("declared8", body_8bit(1)), ("declared7", b"only ascii\r\n"),
                           ("plain7", b"only ascii\r\n")):
            assert sha(delivered_body(dworld, "bea@eight.test", subj)) == \
                sha(body.replace(b"\r\n", b"\n"))
        cmds = mail_commands(dworld, MX8)[before:]
        assert len(cmds) == 3, cmds
        assert sum(c.endswith(" BODY=8BITMIME") for c in cmds) == 1, cmds
        assert sum("BODY=" in c for c in cmds) == 1, cmds
    finally:
        d.stop()


def test_queue_file_flag(tmp_path):
    """What is stored: flags 4 exactly for data with a byte >= 0x80."""
    from serve_helpers import Daemon
    d = Daemon(tmp_path).start()
    try:
        q8 = smtplib_send(d, "x@nowhere.test", message("x@nowhere.test", "f8", b"\xe9\r\n"))
        q7 = smtplib_send(d, "x@nowhere.test", message("x@nowhere.test", "f7", b"e\r\n"),
                          ["BODY=8BITMIME"])
        assert flags_of(d, q8) == 4
        assert flags_of(d, q7) == 0
    finally:
        assert d.stop() == 0


def test_8bit_through_sendmail(dworld, tmp_path):
    """sendmail reads raw stdin: 8-bit bytes there make an 8-bit message."""
    d = dworld.relay(tmp_path, retry_schedule="1h")
    try:
        before = len(mail_commands(dworld, MX8))
        body = body_8bit(3464)
        data = (b"From: alice@sender.test\r\nTo: cleo@eight.test\r\nSubject: via sendmail\r\n"
                b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
                b"Message-ID: <sm8@sender.test>\r\n\r\n") + body
        p = subprocess.run([BIN, "sendmail", "-C", d.conf_path, "-i", "-f", SENDER,
                            "cleo@eight.test"], input=data, capture_output=True, timeout=60)
        assert p.returncode == 0, p.stderr
        wait_log(d, r"to=<cleo@eight\.test>, .*status=sent", timeout=30)
        got = delivered_body(dworld, "cleo@eight.test", "via sendmail")
        assert sha(got) == sha(body.replace(b"\r\n", b"\n"))
        cmds = mail_commands(dworld, MX8)[before:]
        assert len(cmds) == 1 and cmds[0].endswith(" BODY=8BITMIME"), cmds
    finally:
        d.stop()


def disconnects(dworld, host):
    return re.findall(r"postfix/%s/smtpd\[\d+\]: disconnect from [^\n]*" % re.escape(host),
                      dworld.postfix.log())


def test_mx_without_8bitmime_gets_no_mail_and_recipient_defers(dworld, tmp_path):
    d = dworld.relay(tmp_path, retry_schedule="1h")
    try:
        before = len(disconnects(dworld, MX7))
        before_mail = len(mail_commands(dworld, MX7))
        qid = smtplib_send(d, "dora@seven.test", message("dora@seven.test", "to7",
                                                          body_8bit(7)))
        line = rcpt_line(d, qid, "dora@seven.test", "deferred", timeout=30)
        assert "dsn=4.6.3" in line, line
        assert "does not offer 8BITMIME" in line, line
        st = [r for m in queue_json(d)["messages"] if m["id"] == qid
              for r in m["recipients"]][0]
        assert st["status"] == "deferred"
        assert st["last_error"].startswith("4.6.3 "), st
        assert "host %s[%s] does not offer 8BITMIME and the message has 8-bit data" % (
            MX7, dworld.ips[MX7]) in st["last_error"], st
        # the MX saw EHLO, STARTTLS, EHLO, QUIT: no MAIL
        dis = wait_until(lambda: disconnects(dworld, MX7)[before:] or None, 15,
                         what="disconnect at %s" % MX7)
        assert len(dis) == 1, dis
        assert "ehlo=2 starttls=1 quit=1 commands=4" in dis[0], dis
        assert mail_commands(dworld, MX7)[before_mail:] == []
        # a 7-bit message to the same MX goes out
        q7 = smtplib_send(d, "dora@seven.test", message("dora@seven.test", "to7 ascii",
                                                         b"ascii\r\n"))
        rcpt_line(d, q7, "dora@seven.test", "sent", timeout=30)
        assert sha(delivered_body(dworld, "dora@seven.test", "to7 ascii")) == sha(b"ascii\n")
    finally:
        d.stop()


def test_next_mx_offering_8bitmime_takes_it(dworld, tmp_path):
    d = dworld.relay(tmp_path, retry_schedule="1h")
    try:
        before7 = len(disconnects(dworld, MX7))
        body = body_8bit(20)
        qid = smtplib_send(d, "emil@fallback8.test",
                           message("emil@fallback8.test", "fallback8", body))
        line = rcpt_line(d, qid, "emil@fallback8.test", "sent", timeout=30)
        assert "relay=%s[" % MX8 in line, line
        assert sha(delivered_body(dworld, "emil@fallback8.test", "fallback8")) == \
            sha(body.replace(b"\r\n", b"\n"))
        dis = disconnects(dworld, MX7)[before7:]
        assert dis and all(" mail=" not in x for x in dis), dis
        assert log_lines(d, qid, r"%s\[.*does not offer 8BITMIME" % re.escape(MX7))
    finally:
        d.stop()


def test_lifetime_bounce_says_5_6_3(dworld, tmp_path):
    d = dworld.relay(tmp_path, retry_schedule="1s", queue_lifetime="4s")
    try:
        before = len(mail_commands(dworld, MX7))
        qid = smtplib_send(d, "finn@seven.test", message("finn@seven.test", "expire8",
                                                          body_8bit(9, 5)))
        line = rcpt_line(d, qid, "finn@seven.test", "bounced", timeout=30)
        assert "dsn=5.6.3" in line and "delivery time expired" in line, line
        assert "does not offer 8BITMIME" in line
        dsn = dsn_for(dworld, qid)
        assert b"Status: 5.6.3" in dsn.raw
        assert b"does not offer 8BITMIME" in dsn.raw
        wait_log(d, r"%s: removed$" % qid)
        assert len(log_lines(d, qid, r"to=<finn@seven\.test>, .*status=deferred")) >= 2
        assert mail_commands(dworld, MX7)[before:] == []
    finally:
        d.stop()
