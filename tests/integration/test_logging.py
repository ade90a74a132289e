# Logs an operator can use: a day of mail in the test world (sent, deferred,
# bounced, local submissions) logged through a real rsyslogd into a Debian-
# style mail.log, and as stderr lines; Debian's pflogsumm must count exactly
# what happened. Also the journal target (journald's native protocol, read
# from a socket standing in for journald), its stderr fallback and default,
# and JSON lines with typed values.
import json
import os
import re
import socket
import subprocess
import time

import pytest

from faults_util import SAN_ENV, assert_no_sanitizer_report, msgid_message, smtp_submit
from tests.world.syslog import RSyslog
from tests.world.util import wait_until

SENDER = "alice@sent.test"
PROGRAMS = {"stsrelay/master", "stsrelay/smtpd", "stsrelay/qmgr", "stsrelay/smtp",
            "stsrelay/pickup", "stsrelay/tlsrpt"}


def day_world(world):
    """sent.test on Postfix; defer.test answers 451 and bounce.test 550 at
    RCPT (fake MX hosts)."""
    pf = world.postfix(["sent.test"], ["mx.sent.test"])
    world.mx("sent.test", ["mx.sent.test"])
    defer = world.fake_mx("mx.defer.test", {"reply": {"rcpt": "451 4.3.0 try again later"}})
    world.mx("defer.test", ["mx.defer.test"])
    bounce = world.fake_mx("mx.bounce.test", {"reply": {"rcpt": "550 5.1.1 no such user"}})
    world.mx("bounce.test", ["mx.bounce.test"])
    return pf, defer, bounce


def rcpt_commands(fm):
    """Every RCPT a fake MX was sent (each one answered as its script says)."""
    return [c for s in fm.sessions for _tls, c in s.commands if c.upper().startswith("RCPT TO")]


def run_day(world, r, pf, defer, bounce):
    """The day's mail, and what really happened (from the peers):
    received (SMTP + sendmail), delivered (Postfix got it, bounces'
    notices included), deferred (messages with a deferred recipient) and
    bounced (recipients refused with 5xx)."""
    tag = iter(range(1000))
    qids = []

    def smtp(rcpts):
        code, text = smtp_submit(r.host, r.port, SENDER, rcpts,
                                 msgid_message("day%d" % next(tag), to=rcpts[0], sender=SENDER))
        assert code == 250, text
        qids.append(text)

    for _ in range(4):
        smtp(["a@sent.test"])
    for i in range(2):
        p = r.cli("sendmail", "-i", "-f", SENDER, "b@sent.test",
                  input=msgid_message("local%d" % i, to="b@sent.test", sender=SENDER))
        assert p.returncode == 0, p.stderr
    for _ in range(3):
        smtp(["x@defer.test"])
    for _ in range(2):
        smtp(["y@bounce.test"])
    smtp(["c@sent.test", "z@defer.test"])
    # Postfix: 4 + 2 + 1 messages, and one notice to alice per bounce
    pf.wait_messages(domain="sent.test", count=9, timeout=60)
    wait_until(lambda: len(rcpt_commands(defer)) >= 4, 30, what="4 tries at defer.test")
    truth = {
        "received": 4 + 2 + 3 + 2 + 1,
        "delivered": len(pf.messages(domain="sent.test")),
        "deferred": len(rcpt_commands(defer)),
        "bounced": len(rcpt_commands(bounce)),
    }
    assert (truth["delivered"], truth["deferred"], truth["bounced"]) == (9, 4, 2), truth
    assert sum(1 for m in pf.messages(domain="sent.test")
               if m.recipient == SENDER) == 2, "one bounce notice per bounced message"

    # every deferred message tried exactly once (retry_schedule is 1h)
    def deferred_once():
        msgs = json.loads(r.cli("queue", "list", "--json").stdout)["messages"]
        rc = [x for m in msgs for x in m["recipients"] if x["status"] != "sent"]
        return len(msgs) == 4 and len(rc) == 4 and all(
            x["status"] == "deferred" and x["attempts"] == 1 for x in rc)
    wait_until(deferred_once, 30, what="4 messages deferred once each")
    # a moment for the last log lines (state saves come before them)
    time.sleep(1)
    return truth


def pflogsumm(path):
    """Debian's pflogsumm on a log file: the Grand Totals it prints."""
    p = subprocess.run(["pflogsumm", "--syslog-name=stsrelay", "--smtpd-stats", path],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    got = {}
    for key in ("received", "delivered", "deferred", "bounced", "rejected"):
        m = re.search(r"^\s*(\d+)\s+%s\b" % key, p.stdout, re.M)
        assert m, (key, p.stdout)
        got[key] = int(m.group(1))
    m = re.search(r"^\s*\d+\s+deferred\s+\((\d+)\s+deferrals\)", p.stdout, re.M)
    got["deferrals"] = int(m.group(1)) if m else 0
    return got, p.stdout


@pytest.mark.parametrize("target", ["syslog", "stderr"])
def test_pflogsumm_counts_a_day_exactly(world, relay, target):
    """The syslog case is what /var/log/mail.log holds on Debian: the
    daemon's datagrams (log_target = syslog) through rsyslogd's imuxsock into
    a file in rsyslog's traditional format. The stderr case is the daemon's
    own stderr lines (a foreground run, a container log), unchanged."""
    pf, defer, bounce = day_world(world)
    env = dict(SAN_ENV)
    syslog = None
    if target == "syslog":
        syslog = RSyslog(os.path.join(world.dir, "rsyslog")).start()
        env["STSRELAY_SYSLOG_SOCKET"] = syslog.socket
    r = relay({"log_target": target, "retry_schedule": "1h"}, env=env)
    truth = run_day(world, r, pf, defer, bounce)
    assert r.stop() == 0
    if syslog is not None:
        syslog.stop()
        path, text = syslog.mail_log, syslog.text()
        # nothing else went to stderr
        assert "stsrelay/" not in r.log(), r.log()
    else:
        path, text = r.log_path, r.log()
    assert_no_sanitizer_report(r.log())
    got, report = pflogsumm(path)
    assert {k: got[k] for k in truth} == truth, (got, truth, report)
    assert got["deferrals"] == 4 and got["rejected"] == 0, report
    # Postfix's program names, one per part, and its field order
    progs = set(re.findall(r" (stsrelay/[a-z]+)\[\d+\]: ", text))
    assert progs <= PROGRAMS and {"stsrelay/smtpd", "stsrelay/qmgr", "stsrelay/smtp",
                                  "stsrelay/pickup", "stsrelay/master"} <= progs, progs
    # every received message: client= or uid=, its message-id=, the qmgr line
    assert len(re.findall(r"stsrelay/(?:smtpd|pickup)\[\d+\]: [0-9A-F]{12}: message-id=<[^>]+>$",
                          text, re.M)) == truth["received"], text
    assert len(re.findall(r"stsrelay/qmgr\[\d+\]: [0-9A-F]{12}: from=<[^>]*>, size=\d+, "
                          r"nrcpt=\d \(queue active\)$", text, re.M)) == truth["received"] + 2
    delivery = re.findall(r"stsrelay/smtp\[\d+\]: [0-9A-F]{12}: (to=<.*)$", text, re.M)
    assert len(delivery) == 9 + 4 + 2
    for line in delivery:
        # conn_use= (Postfix's place) only when the connection was reused
        assert re.match(r"to=<[^>]+>, relay=[^,]+, (?:conn_use=\d+, )?delay=\d+\.\d, "
                        r"dsn=\d\.\d+\.\d+, "
                        r"status=(sent|deferred|bounced) \(.*\), tls=[^,]+, sts=\S+", line), line
    if target == "syslog":
        assert re.search(r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \S+ stsrelay/master\[\d+\]: "
                         r"started: ", text, re.M), text[:2000]
    else:
        assert re.search(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S+ stsrelay/master\[\d+\]: "
                         r"started: ", text, re.M), text[:2000]


def test_json_lines_have_typed_values(world, relay):
    pf, defer, bounce = day_world(world)
    r = relay({"log_format": "json", "retry_schedule": "1h"}, env=SAN_ENV)
    code, text = smtp_submit(r.host, r.port, SENDER, ["a@sent.test"],
                             msgid_message("j1", to="a@sent.test", sender=SENDER))
    assert code == 250, text
    code, text = smtp_submit(r.host, r.port, SENDER, ["x@defer.test"],
                             msgid_message("j2", to="x@defer.test", sender=SENDER))
    assert code == 250, text
    pf.wait_messages("a@sent.test", 1, timeout=30)
    r.wait_log(r'"status":"deferred"', timeout=30)
    assert r.stop() == 0
    lines = [json.loads(x) for x in r.log().splitlines() if x.startswith("{")]
    assert lines and all(isinstance(x["pid"], int) and x["process"] in PROGRAMS and
                         x["level"] in ("debug", "info", "warning", "error", "fatal")
                         for x in lines), lines[:3]
    queued = [x for x in lines if "nrcpt" in x]
    assert len(queued) == 2
    for q in queued:
        assert q["process"] == "stsrelay/qmgr" and q["from"] == SENDER
        assert isinstance(q["size"], int) and q["size"] > 100 and q["nrcpt"] == 1
    sent = [x for x in lines if x.get("status") == "sent"]
    deferred = [x for x in lines if x.get("status") == "deferred"]
    assert len(sent) == 1 and len(deferred) == 1
    for d in sent + deferred:
        assert d["process"] == "stsrelay/smtp" and re.fullmatch(r"[0-9A-F]{12}", d["queue_id"])
        assert isinstance(d["delay"], float) and d["delay"] >= 0
        assert d["to"] in ("a@sent.test", "x@defer.test")
        assert d["sts"] == "absent" and isinstance(d["reason"], str)
    assert sent[0]["dsn"] == "2.0.0" and sent[0]["reason"].startswith("250 ")
    assert deferred[0]["dsn"] == "4.3.0" and "451 4.3.0 try again later" in deferred[0]["reason"]
    assert "(" not in deferred[0]["status"]


class JournalSocket:
    """Stands in for journald's /run/systemd/journal/socket: a datagram
    socket that keeps each entry as a dict of its fields."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.entries = []

    def drain(self):
        while True:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return self.entries
            fields = {}
            for line in data.decode().split("\n"):
                if line:
                    k, _, v = line.partition("=")
                    assert k not in fields, data
                    fields[k] = v
            self.entries.append(fields)

    def close(self):
        self.sock.close()


def test_journal_target(world, relay):
    """log_target = journal: one entry per line with PRIORITY, facility
    mail, the program name as SYSLOG_IDENTIFIER and the queue id as a
    field; the message has no time or pid of its own."""
    pf, defer, bounce = day_world(world)
    js = JournalSocket(os.path.join(world.dir, "journal.sock"))
    try:
        env = dict(SAN_ENV, STSRELAY_JOURNAL_SOCKET=js.path)
        r = relay({"log_target": "journal", "retry_schedule": "1h"}, env=env)
        code, text = smtp_submit(r.host, r.port, SENDER, ["x@defer.test"],
                                 msgid_message("jr", to="x@defer.test", sender=SENDER))
        assert code == 250, text
        qid = re.search(r"queued as ([0-9A-F]{12})", text).group(1)
        wait_until(lambda: any("status=deferred" in e.get("MESSAGE", "") for e in js.drain()),
                   30, what="the deferred line in the journal")
        assert r.stop() == 0
        entries = js.drain()
    finally:
        js.close()
    assert "stsrelay/" not in r.log(), r.log()
    for e in entries:
        assert set(e) >= {"MESSAGE", "PRIORITY", "SYSLOG_FACILITY", "SYSLOG_IDENTIFIER",
                          "SYSLOG_PID"}, e
        assert e["SYSLOG_FACILITY"] == "2" and e["SYSLOG_IDENTIFIER"] in PROGRAMS, e
        assert not re.match(r"\d{4}-\d\d-\d\dT", e["MESSAGE"]), e
    by_msg = {e["MESSAGE"]: e for e in entries}
    started = [e for e in entries if e["MESSAGE"].startswith("started: ")]
    assert started and started[0]["SYSLOG_IDENTIFIER"] == "stsrelay/master"
    assert started[0]["PRIORITY"] == "6"
    # the unsigned-reports warning at start: priority 4, so journalctl -p warning finds it
    warn = [e for e in entries if e["MESSAGE"].startswith("warning: tlsrpt:")]
    assert warn and warn[0]["PRIORITY"] == "4" and warn[0]["SYSLOG_IDENTIFIER"] == "stsrelay/tlsrpt"
    line = [m for m in by_msg if m.startswith("%s: to=<x@defer.test>" % qid)]
    assert line, entries
    e = by_msg[line[0]]
    assert e["SYSLOG_IDENTIFIER"] == "stsrelay/smtp" and e["STSRELAY_QUEUE_ID"] == qid
    assert e["PRIORITY"] == "6"


def test_journal_by_default_under_systemd_and_fallback(world, relay):
    """No log_target: with $JOURNAL_STREAM naming stderr (what systemd sets
    when stderr is the journal) the journal is used; when its socket is
    missing, stderr lines carry sd-daemon(3) <N> priority prefixes and no
    time or pid."""
    js = JournalSocket(os.path.join(world.dir, "journal.sock"))
    try:
        r = relay({}, start=False, env=dict(SAN_ENV, STSRELAY_JOURNAL_SOCKET=js.path))
        # stderr is r.log_path: name it the way systemd does
        open(r.log_path, "ab").close()
        st = os.stat(r.log_path)
        r.env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
        r.start()
        wait_until(lambda: any(e["MESSAGE"].startswith("started: ") for e in js.drain()), 15,
                   what="the start line in the journal")
        assert r.stop() == 0
    finally:
        js.close()
    assert "stsrelay/" not in r.log()

    # journald not there: stderr with priority prefixes
    r2 = relay({}, start=False, env=dict(SAN_ENV, STSRELAY_JOURNAL_SOCKET=js.path + ".none"))
    open(r2.log_path, "ab").close()
    st = os.stat(r2.log_path)
    r2.env["JOURNAL_STREAM"] = "%d:%d" % (st.st_dev, st.st_ino)
    r2.start()
    r2.wait_log(r"^<6>started: ", timeout=15)
    assert r2.stop() == 0
    log = r2.log()
    assert re.search(r"^<4>warning: tlsrpt: ", log, re.M), log
    assert "cannot reach the journal at %s.none" % js.path in log
    for line in log.splitlines():
        assert re.match(r"^<[0-7]>", line) or "cannot reach the journal" in line, line
