# alias_root: cron and system mail reach a person. Cron (Debian's cron
# 3.0pl1, /usr/sbin/cron) runs "/usr/sbin/sendmail -FCronDaemon -i
# -B8BITMIME -oem <MAILTO or the crontab's owner>"; root, postmaster and
# any name without a domain go to alias_root, or are refused at once.
import os
import re

import pytest

from faults_util import SAN_ENV, RawSMTP, assert_no_sanitizer_report

# what cron's do_command.c writes on the command's stdout pipe to sendmail
CRON_MAIL = (
    "From: root (Cron Daemon)\n"
    "To: root\n"
    "Subject: Cron <root@relay> /usr/local/bin/backup\n"
    "MIME-Version: 1.0\n"
    "Content-Type: text/plain; charset=UTF-8\n"
    "Content-Transfer-Encoding: 8bit\n"
    "X-Cron-Env: <SHELL=/bin/sh>\n"
    "X-Cron-Env: <HOME=/root>\n"
    "X-Cron-Env: <LOGNAME=root>\n"
    "\n"
    "backup: disk /srv is 97% full\n")
CRON_ARGS = ["-FCronDaemon", "-i", "-B8BITMIME", "-oem"]


def world_ops(world):
    pf = world.postfix(["ops.test"], ["mx.ops.test"])
    world.mx("ops.test", ["mx.ops.test"])
    return pf


def test_cron_mail_to_root_reaches_alias_root(world, relay):
    pf = world_ops(world)
    r = relay({"alias_root": "admin@ops.test"}, env=SAN_ENV)
    p = r.cli("sendmail", *CRON_ARGS, "root", input=CRON_MAIL.encode())
    assert p.returncode == 0, p.stderr
    m = pf.wait_messages("admin@ops.test", 1, timeout=30)[0]
    assert b"backup: disk /srv is 97% full" in m.raw
    assert m.msg["Subject"] == "Cron <root@relay> /usr/local/bin/backup"
    # the header stays as cron wrote it (only the envelope changed; the
    # receiving Postfix qualifies a bare name with its own domain)
    assert m.msg["To"].split("@")[0] == "root", m.msg["To"]
    # MAILTO= a local user (cron's default is the crontab's owner): the same
    p = r.cli("sendmail", *CRON_ARGS, "www-data", input=CRON_MAIL.encode())
    assert p.returncode == 0, p.stderr
    pf.wait_messages("admin@ops.test", 2, timeout=30)
    assert r.stop() == 0
    assert_no_sanitizer_report(r.log())


def test_cron_mail_without_alias_root_is_refused_at_once(world, relay):
    r = relay({}, env=SAN_ENV)
    for rcpt in ("root", "root@localhost", "postmaster@relay.world.test"):
        p = r.cli("sendmail", *CRON_ARGS, rcpt, input=CRON_MAIL.encode())
        assert p.returncode == 67, (rcpt, p.returncode, p.stderr)   # EX_NOUSER
        assert p.stderr.decode() == (
            "sendmail: %s: local recipient refused: no alias_root in the configuration (set "
            "alias_root = the address of the person who reads root's mail)\n" % rcpt)
    # -t reads the same To: root
    p = r.cli("sendmail", "-t", "-i", input=CRON_MAIL.encode())
    assert p.returncode == 67 and b"no alias_root" in p.stderr, p.stderr
    maildrop = os.path.join(r.config["spool_dir"], "maildrop")
    assert os.listdir(maildrop) == []
    assert r.stop() == 0


def smtp_rcpts(r, rcpts):
    """MAIL, then each RCPT: the replies; a message is sent if any passed."""
    with RawSMTP(r.host, r.port, 30) as c:
        assert c.reply()[0] == 220
        assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd("MAIL FROM:<app@client.test>")[0] == 250
        out = [c.cmd("RCPT TO:<%s>" % x) for x in rcpts]
        if any(code == 250 for code, _ in out):
            assert c.cmd("DATA")[0] == 354
            code, text = c.cmd(b"Subject: alias\r\n\r\nhi\r\n.\r\n")
            assert code == 250, text
        c.cmd("QUIT")
    return out


@pytest.mark.parametrize("alias", ["", "admin@ops.test"])
def test_listener_local_recipients(world, relay, alias):
    pf = world_ops(world)
    r = relay({"alias_root": alias}, env=SAN_ENV)
    host = r.config["hostname"]
    rcpts = ["root@%s" % host, "postmaster", "Abuse@%s" % host.upper(), "x@localhost",
             "bob@%s" % host]
    replies = smtp_rcpts(r, rcpts)
    # bob@hostname is not a system mailbox: hostname may be a real mail domain
    assert replies[4][0] == 250
    if alias:
        assert [code for code, _ in replies] == [250] * 5
        pf.wait_messages("admin@ops.test", 1, timeout=30)
        # four local recipients, one address: one copy
        r.wait_log(r"to=<admin@ops\.test>, .*status=sent", timeout=15)
        r.wait_log(r": removed$", timeout=15)
        assert len(pf.messages("admin@ops.test")) == 1
        assert len(re.findall(r"to=<admin@ops\.test>", r.log())) == 1
    else:
        for (code, text), rcpt in zip(replies[:4], rcpts):
            assert code == 550, (rcpt, code, text)
            assert text == ("550 5.1.1 <%s>: Recipient address rejected: local recipient and "
                            "no alias_root configured" % rcpt), text
        assert re.search(r"stsrelay/smtpd\[\d+\]: NOQUEUE: reject: RCPT from \S+: 550 5\.1\.1 "
                         r"<root@%s>: " % re.escape(host), r.log()), r.log()
    assert r.stop() == 0
