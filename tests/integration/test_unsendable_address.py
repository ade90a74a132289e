# One address never sinks its domain's batch: the listener refuses at RCPT /
# MAIL what the outbound client cannot send (smtp_address_sendable, the same
# function on both ends), and a queued recipient that is nevertheless
# unsendable (a queue file from before the check) bounces alone while the
# others of its domain are delivered to a real Postfix MX.
import os
import re
import smtplib
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_delivery import (SENDER, dsn_for, log_lines, make_world, queue_json,  # noqa: E402
                           rcpt_line, wait_log)
from world.util import wait_until  # noqa: E402

MX = "mx1.addr.test"
GOOD = "good@addr.test"
WEIRD = '"a>b"@addr.test'           # RFC 5321-valid, but never put between <>


@pytest.fixture(scope="module")
def dworld():
    w = make_world(["addr.test"], {MX: "good"})
    w.mx("addr.test", [(10, MX)])
    yield w
    w.close()


def test_listener_refuses_what_the_client_cannot_send(dworld, tmp_path):
    d = dworld.relay(tmp_path, retry_schedule="1h")
    try:
        msg = (b"From: alice@sender.test\r\nTo: good@addr.test\r\nSubject: weird rcpt\r\n"
               b"Message-ID: <weird-1@sender.test>\r\n\r\nhello\r\n")
        with smtplib.SMTP("127.0.0.1", d.port, local_hostname="client.test", timeout=30) as s:
            s.ehlo()
            assert s.mail('"x<y"@sender.test') == (501, b"5.1.7 Bad sender address syntax")
            assert s.mail(SENDER)[0] == 250
            assert s.rcpt(GOOD)[0] == 250
            for bad in (WEIRD, '"a<b"@addr.test', '"x@evil.test> NOTIFY=NEVER"@addr.test'):
                assert s.rcpt(bad) == (501, b"5.1.3 Bad recipient address syntax"), bad
            # RFC-valid quoted strings the client can send are still fine
            assert s.rcpt('"john doe"@addr.test')[0] == 250
            code, text = s.data(msg)
            assert code == 250, text
            qid = re.search(rb"queued as ([0-9A-F]{12})", text).group(1).decode()
        rcpt_line(d, qid, "good@addr.test", "sent", timeout=30)
        rcpt_line(d, qid, '"john doe"@addr.test', "sent", timeout=30)
        msgs = dworld.postfix.wait_messages(GOOD, timeout=20)
        assert any(b"Subject: weird rcpt" in m.raw for m in msgs)
        assert not log_lines(d, pattern="cannot start an SMTP session")
    finally:
        d.stop()


def old_queue_file(d, qid, sender, rcpts, subject):
    """A queue file as an older stsrelay wrote it (no address check at
    submission), put into the spool while the daemon is stopped."""
    head = ["STSRELAY-QUEUE 1", "id " + qid, "time 1700000000",
            "sender " + sender if sender else "sender", "submitter", "client", "flags 0"]
    head += ["rcpt " + r for r in rcpts]
    data = ("From: alice@sender.test\r\nTo: good@addr.test\r\nSubject: %s\r\n"
            "Message-ID: <%s@sender.test>\r\n\r\nbody\r\n" % (subject, qid)).encode()
    path = os.path.join(d.spool, "queue", qid)
    with open(path, "wb") as f:
        f.write(("\n".join(head) + "\nend\n").encode() + data)
    os.chmod(path, 0o600)


def test_queued_unsendable_recipient_fails_alone(dworld, tmp_path):
    d = dworld.relay(tmp_path, retry_schedule="1h", queue_lifetime="5d")
    d.stop()
    qid = "0A0A0A0A0A01"
    old_queue_file(d, qid, SENDER, ["one@addr.test", WEIRD, "two@addr.test", "a\\<b@addr.test"],
                   "old queue file")
    d.start()
    try:
        for r in ("one@addr.test", "two@addr.test"):
            line = rcpt_line(d, qid, r, "sent", timeout=30)
            assert "relay=%s[" % MX in line
        for r in (WEIRD, "a\\<b@addr.test"):
            line = rcpt_line(d, qid, r, "bounced", timeout=30)
            assert "dsn=5.1.3" in line and "bad address syntax: '<' or '>' in address" in line, line
            assert "relay=none" in line
        # the two good ones went out in one transaction
        assert len(log_lines(d, qid, r"status=sent")) == 2
        got = dworld.postfix.wait_messages("one@addr.test", timeout=20)
        assert any(b"Subject: old queue file" in m.raw for m in got)
        dsn = dsn_for(dworld, qid)
        assert b"Status: 5.1.3" in dsn.raw
        final = re.findall(rb"Final-Recipient: rfc822; ([^\r\n]+)", dsn.raw)
        assert sorted(final) == sorted([WEIRD.encode(), b"a\\<b@addr.test"]), final
        assert not log_lines(d, pattern="cannot start an SMTP session")
        wait_log(d, r"%s: removed$" % qid)
    finally:
        d.stop()


def test_queued_unsendable_sender_bounces_without_a_connection(dworld, tmp_path):
    d = dworld.relay(tmp_path, retry_schedule="1h")
    d.stop()
    qid = "0A0A0A0A0A02"
    before = dworld.postfix.log().count("connect from")
    old_queue_file(d, qid, '"x>y"@sender.test', ["three@addr.test", "four@addr.test"],
                   "bad sender")
    d.start()
    try:
        for r in ("three@addr.test", "four@addr.test"):
            line = rcpt_line(d, qid, r, "bounced", timeout=30)
            assert "dsn=5.1.7" in line and "bad sender address syntax" in line, line
        wait_log(d, r"%s: removed$" % qid)
        # the bounce goes to that very sender: it bounces alone, no loop
        assert log_lines(d, pattern=r'to=<"x>y"@sender\.test>, .*dsn=5\.1\.3, .*status=bounced')
        assert not log_lines(d, pattern="status=sent")
        wait_until(lambda: queue_json(d)["messages"] == [], 20, what="an empty queue")
        assert dworld.postfix.log().count("connect from") == before
    finally:
        d.stop()
