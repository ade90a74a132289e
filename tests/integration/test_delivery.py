# Delivery end to end against the loopback world: swaks -> stsrelay -> Postfix
# MX over verified STARTTLS, MX order and fallback, implicit/null MX, DNS errors.
#
# The helpers at the top (DeliveryWorld, FakeMX, relay(), ...) are shared with
# test_delivery_faults.py, test_tls_results.py and test_sts_enforce.py, which
# import them from this module.
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest

SRC = os.environ.get("STSRELAY_SRC",
                     os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("STSRELAY_BIN", "stsrelay")
sys.path.insert(0, os.path.join(SRC, "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from serve_helpers import Daemon, submit  # noqa: E402
from world.ca import TestCA  # noqa: E402
from world.dns import UnboundDNS  # noqa: E402
from world.postfix import PostfixMX  # noqa: E402
from world.util import close_quietly, free_ip, free_port, serve_tcp, wait_until  # noqa: E402

SENDER = "alice@sender.test"


# ---------------------------------------------------------------- the world
class DeliveryWorld:
    """Unbound + a Postfix instance with several MX host names (each its own
    127.x address and certificate) on one smtp_port, the test CA, and
    scripted fake MX servers on the same port. `hosts` maps MX host name to
    certificate kind ("good", "wrongname", ...) or to "notls" (no STARTTLS);
    `host_options` adds smtpd -o settings per host name."""

    def __init__(self, base, domains, hosts, host_options=None):
        self.base = base
        self.ca = TestCA(os.path.join(base, "ca"))
        self.port = free_port()
        self.used_ips = []
        self.dns = UnboundDNS(os.path.join(base, "dns"))
        self.ips = {}
        tls, opts = {}, {}
        for name, kind in hosts.items():
            self.ips[name] = self.new_ip()
            if kind == "notls":
                opts[name] = {"smtpd_tls_security_level": "none"}
            else:
                tls[name] = self.ca.leaf([name], kind)
            opts.setdefault(name, {}).update((host_options or {}).get(name, {}))
            self.dns.add(name, "A", self.ips[name], ttl=1, live=False)
        self.dns.start()
        self.postfix = PostfixMX(os.path.join(base, "postfix"), self.ca, self.ips, self.port,
                                 list(domains) + ["sender.test"], tls=tls, host_options=opts)
        self.postfix.start()
        # bounces go back to the sender's domain, which lives at the Postfix MX
        self.mx("sender.test", [(10, next(iter(hosts)))])
        self.fakes = []

    def new_ip(self):
        ip = free_ip(self.port, used=self.used_ips)
        self.used_ips.append(ip)
        return ip

    def mx(self, domain, mxs, addrs=None):
        """MX records [(pref, host)] for domain, A records {host: ip}."""
        self.dns.set(domain, "MX", ["%d %s." % (p, h.rstrip(".")) for p, h in mxs], ttl=1)
        for h, ip in (addrs or {}).items():
            self.dns.set(h, "A", ip, ttl=1)

    def fake(self, **script):
        f = FakeMX(self.new_ip(), self.port, **script)
        self.fakes.append(f)
        return f

    def relay(self, tmp_path, env=None, **conf):
        c = {"dns_servers": self.dns.servers, "smtp_port": self.port,
             "ca_file": self.ca.ca_file, "retry_schedule": "2s,3s",
             "queue_lifetime": "1h"}
        c.update(conf)
        e = {"STSRELAY_SMTP_TIMEOUT": "5"}
        e.update(env or {})
        return Daemon(tmp_path, env=e, **c).start()

    def close(self):
        for f in self.fakes:
            f.close()
        self.postfix.stop()
        self.dns.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def make_world(domains, hosts, host_options=None):
    base = tempfile.mkdtemp(prefix="stsrelay-delivery-")
    os.chmod(base, 0o755)  # Postfix's own users must reach their directories
    return DeliveryWorld(base, domains, hosts, host_options)


# ---------------------------------------------------------------- fake MX
class FakeMX:
    """A scripted SMTP server on ip:port (one thread per connection), for the
    faults Postfix will not produce. Script keys: banner, ehlo (list of
    extension lines), mail, rcpt (str or fn(addr) -> str), data, eod (reply
    lines without CRLF), hang_banner (seconds of silence before the banner),
    drop_in_data (close after that many message bytes), hang_eod (seconds
    of silence before the reply to the final dot). Every session is
    recorded: {"cmds": [...], "data": bytes, "ended": str}."""

    def __init__(self, ip, port, **script):
        self.ip, self.port = ip, port
        self.script = {"banner": "220 fake.test ESMTP", "ehlo": ["PIPELINING", "8BITMIME"],
                       "mail": "250 2.1.0 ok", "rcpt": "250 2.1.5 ok", "data": "354 go on",
                       "eod": "250 2.0.0 queued", "hang_banner": 0, "drop_in_data": None,
                       "hang_eod": 0}
        self.script.update(script)
        self.sessions = []
        self.sock = serve_tcp(ip, port, self._session)

    def _session(self, conn):
        rec = {"cmds": [], "data": b"", "ended": "", "start": time.monotonic(), "end": None}
        self.sessions.append(rec)
        conn.settimeout(30)
        f = conn.makefile("rb")

        def say(line):
            conn.sendall(line.encode() + b"\r\n")
        accepted = 0
        try:
            if self.script["hang_banner"]:
                time.sleep(self.script["hang_banner"])
            say(self.script["banner"])
            while True:
                line = f.readline(4096)
                if not line:
                    rec["ended"] = "eof"
                    return
                cmd = line.rstrip(b"\r\n").decode(errors="replace")
                rec["cmds"].append(cmd)
                verb = cmd.split(" ", 1)[0].upper()
                if verb == "EHLO":
                    ext = self.script["ehlo"]
                    say("\r\n".join(["250-fake.test"] + ["250-" + e for e in ext[:-1]] +
                                    ["250 " + ext[-1]] if ext else ["250 fake.test"]))
                elif verb == "HELO":
                    say("250 fake.test")
                elif verb == "MAIL":
                    say(self.script["mail"])
                elif verb == "RCPT":
                    r = self.script["rcpt"]
                    addr = cmd.split(":", 1)[1].strip().strip("<>") if ":" in cmd else ""
                    reply = r(addr) if callable(r) else r
                    accepted += reply.startswith("2")
                    say(reply)
                elif verb == "DATA":
                    if not accepted:
                        say("554 5.5.1 Error: no valid recipients")
                        continue
                    say(self.script["data"])
                    if not self.script["data"].startswith("354"):
                        continue
                    data = b""
                    while data != b".\r\n" and not data.endswith(b"\r\n.\r\n"):
                        chunk = f.readline(65536)
                        if not chunk:
                            rec["ended"] = "eof in data"
                            return
                        data += chunk
                        lim = self.script["drop_in_data"]
                        if lim is not None and len(data) >= lim:
                            rec["data"] = data
                            rec["ended"] = "dropped in data"
                            conn.shutdown(socket.SHUT_RDWR)
                            return
                    rec["data"] = data
                    if self.script["hang_eod"]:
                        time.sleep(self.script["hang_eod"])
                    say(self.script["eod"])
                elif verb == "QUIT":
                    say("221 bye")
                    rec["ended"] = "quit"
                    return
                elif verb == "RSET":
                    accepted = 0
                    say("250 ok")
                elif verb == "NOOP":
                    say("250 ok")
                else:
                    say("502 5.5.2 not implemented")
        except OSError:
            rec["ended"] = rec["ended"] or "error"
        finally:
            rec["end"] = time.monotonic()
            close_quietly(conn)

    def close(self):
        close_quietly(self.sock)


# ---------------------------------------------------------------- helpers
def message(subject, to, extra=b""):
    return (b"From: Alice <alice@sender.test>\r\nTo: <%s>\r\nSubject: %s\r\n"
            b"Message-ID: <%s@sender.test>\r\n\r\nHello %s.\r\n%s" % (
                to.encode(), subject.encode(), subject.encode(), to.encode(), extra))


def send(daemon, rcpts, subject="test", sender=SENDER, data=None):
    if isinstance(rcpts, str):
        rcpts = [rcpts]
    return submit(daemon, sender, rcpts, data or message(subject, rcpts[0]))


def log_lines(daemon, qid=None, pattern=None):
    out = []
    for line in daemon.log().splitlines():
        if qid and (qid + ": ") not in line:
            continue
        if pattern and not re.search(pattern, line):
            continue
        out.append(line)
    return out


def wait_log(daemon, pattern, qid=None, timeout=20, count=1):
    try:
        return wait_until(lambda: (lambda ls: ls if len(ls) >= count else None)(
            log_lines(daemon, qid, pattern)), timeout, what="log line %r" % pattern)
    except Exception as e:
        raise AssertionError("%s\n--- daemon log ---\n%s" % (e, daemon.log()[-6000:]))


def rcpt_line(daemon, qid, rcpt, status, timeout=20):
    return wait_log(daemon, r"to=<%s>, .*status=%s " % (re.escape(rcpt), status), qid,
                    timeout)[-1]


def queue_json(daemon):
    p = subprocess.run([BIN, "queue", "list", "--json", "-c", daemon.conf_path],
                       capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def log_time(line):
    """Seconds (float) of a text log line's timestamp."""
    m = re.match(r"\d{4}-\d\d-\d\dT(\d\d):(\d\d):(\d\d\.\d+)Z", line)
    assert m, line
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))


def max_overlap(sessions):
    """Most FakeMX sessions open at the same time."""
    ev = sorted([(s["start"], 1) for s in sessions] + [(s["end"], -1) for s in sessions])
    cur = best = 0
    for _, k in ev:
        cur += k
        best = max(best, cur)
    return best


def dsn_for(dworld, qid, timeout=20):
    """The bounce about qid in the sender's mailbox."""
    def find():
        for m in dworld.postfix.messages(SENDER):
            if qid.encode() in m.raw and b"delivery-status" in m.raw:
                return m
        return None
    return wait_until(find, timeout, what="DSN about %s" % qid)


# ---------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def dworld():
    w = make_world(["example.test", "implicit.test", "fallback.test", "order.test", "sf.test"],
                   {"mx1.example.test": "good", "mx2.example.test": "good",
                    "implicit.test": "good"})
    w.mx("example.test", [(10, "mx1.example.test")])
    yield w
    w.close()


def test_end_to_end_swaks_verified_tls(dworld, tmp_path):
    d = dworld.relay(tmp_path)
    try:
        body = (b"From: Alice <alice@sender.test>\r\nTo: bob@example.test\r\n"
                b"Subject: end to end\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
                b"Message-ID: <e2e-1@sender.test>\r\n\r\n"
                b"line one\r\n.leading dot\r\n\r\nlast line: \xc3\xa9\r\n")
        data_file = tmp_path / "msg.eml"
        # swaks adds CRLF . CRLF after the file: give it without the last CRLF
        data_file.write_bytes(body[:-2])
        p = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % d.port, "--from", SENDER,
                            "--to", "bob@example.test", "--data", str(data_file),
                            "--helo", "client.test", "--timeout", "20"],
                           capture_output=True, timeout=60)
        assert p.returncode == 0, p.stdout + p.stderr
        qid = re.search(rb"queued as ([0-9A-F]{12})", p.stdout).group(1).decode()
        msgs = dworld.postfix.wait_messages("bob@example.test", timeout=20)
        assert len(msgs) == 1
        raw = msgs[0].raw
        # Maildir stores LF line ends; everything from the original headers on
        # is byte-identical, only trace headers come before it.
        want = body.replace(b"\r\n", b"\n")
        assert raw.endswith(want), raw
        added = raw[:-len(want)]
        for line in re.split(rb"\n(?![ \t])", added.rstrip(b"\n")):
            assert re.match(rb"(Return-Path|X-Original-To|Delivered-To|Received):", line), line
        assert dworld.postfix.tls_received(msgs[0])
        line = rcpt_line(d, qid, "bob@example.test", "sent")
        assert "relay=mx1.example.test[%s]:%d" % (dworld.ips["mx1.example.test"], dworld.port) in line
        assert "tls=TLSv1.3 verified" in line
        assert "sts=absent" in line
        assert "dsn=2.0.0" in line
        assert re.search(r"delay=\d+\.\d, ", line)
        wait_log(d, r"%s: removed$" % qid)
        assert d.queue_ids() == []
    finally:
        assert d.stop() == 0


def test_mx_preference_order(dworld, tmp_path):
    fake = dworld.fake()
    dworld.mx("order.test", [(20, "mx-fake.order.test"), (10, "mx1.example.test")],
             {"mx-fake.order.test": fake.ip})
    d = dworld.relay(tmp_path)
    try:
        qid = send(d, "carol@order.test", "order")
        line = rcpt_line(d, qid, "carol@order.test", "sent")
        assert "relay=mx1.example.test[" in line
        dworld.postfix.wait_messages("carol@order.test")
        assert fake.sessions == []  # the less preferred MX was never needed
    finally:
        d.stop()


@pytest.mark.parametrize("how", ["554-banner", "421-banner", "closed-port"])
def test_fallback_to_second_mx(dworld, tmp_path, how):
    rcpt = "dave-%s@fallback.test" % how
    if how == "closed-port":
        first_ip = dworld.new_ip()   # nothing listens there
        fake = None
    else:
        fake = dworld.fake(banner=how[:3] + " fake.test go away")
        first_ip = fake.ip
    dworld.mx("fallback.test", [(10, "first.fallback.test"), (20, "mx1.example.test")],
             {"first.fallback.test": first_ip})
    d = dworld.relay(tmp_path)
    try:
        qid = send(d, rcpt, "fallback " + how)
        line = rcpt_line(d, qid, rcpt, "sent")
        assert "relay=mx1.example.test[" in line
        assert len(dworld.postfix.wait_messages(rcpt)) == 1
        if fake is not None:
            assert len(fake.sessions) >= 1
            assert not any(c.upper().startswith("MAIL") for s in fake.sessions
                           for c in s["cmds"])
            wait_log(d, r"first\.fallback\.test\[.*refused to talk to me: %s" % how[:3], qid)
        else:
            wait_log(d, r"connect to first\.fallback\.test\[%s\]:%d: " % (
                re.escape(first_ip), dworld.port), qid)
    finally:
        d.stop()


def test_implicit_mx(dworld, tmp_path):
    # no MX record: the domain's own A record is the MX (RFC 5321 §5.1)
    dworld.dns.remove("implicit.test", "MX")
    d = dworld.relay(tmp_path)
    try:
        qid = send(d, "erin@implicit.test", "implicit")
        line = rcpt_line(d, qid, "erin@implicit.test", "sent")
        assert "relay=implicit.test[%s]" % dworld.ips["implicit.test"] in line
        assert "tls=TLSv1.3 verified" in line
        dworld.postfix.wait_messages("erin@implicit.test")
    finally:
        d.stop()


def test_null_mx_bounces_with_dsn(dworld, tmp_path):
    dworld.dns.set("nullmx.test", "MX", "0 .", ttl=1)
    d = dworld.relay(tmp_path)
    try:
        qid = send(d, "frank@nullmx.test", "nullmx")
        line = rcpt_line(d, qid, "frank@nullmx.test", "bounced")
        assert "dsn=5.1.10" in line and "nullMX" in line
        dsn = dsn_for(dworld, qid)
        assert b"Status: 5.1.10" in dsn.raw
        assert b"frank@nullmx.test" in dsn.raw
        assert b"Subject: nullmx" in dsn.raw  # the original headers are attached
        assert dsn.msg["Return-Path"].strip() == "<>"
        wait_log(d, r"%s: removed$" % qid)
    finally:
        d.stop()


def test_nxdomain_bounces(dworld, tmp_path):
    d = dworld.relay(tmp_path)
    try:
        qid = send(d, "gina@no-such-domain.test", "nxdomain")
        line = rcpt_line(d, qid, "gina@no-such-domain.test", "bounced")
        assert "dsn=5.1.2" in line and "Host or domain name not found" in line
        assert "relay=none" in line
        dsn = dsn_for(dworld, qid)
        assert b"Status: 5.1.2" in dsn.raw
    finally:
        d.stop()


def test_servfail_defers_then_delivers_after_dns_fix(dworld, tmp_path):
    dworld.dns.fail("sf.test", "servfail")
    d = dworld.relay(tmp_path, retry_schedule="2s")
    try:
        qid = send(d, "hank@sf.test", "servfail")
        line = rcpt_line(d, qid, "hank@sf.test", "deferred")
        assert "dsn=4.4.3" in line
        assert d.queue_ids() == [qid]
        # the DNS comes back, with a usable MX
        dworld.dns.unfail("sf.test")
        dworld.mx("sf.test", [(10, "mx1.example.test")])
        line = rcpt_line(d, qid, "hank@sf.test", "sent", timeout=30)
        assert "tls=TLSv1.3 verified" in line
        dworld.postfix.wait_messages("hank@sf.test")
        q = [m for m in queue_json(d)["messages"] if m["id"] == qid]
        assert q == []
    finally:
        d.stop()


def test_bounce_of_a_bounce_is_dropped(dworld, tmp_path):
    dworld.dns.set("nullmx2.test", "MX", "0 .", ttl=1)
    d = dworld.relay(tmp_path)
    try:
        # the sender's domain does not exist: its DSN cannot be delivered
        qid = send(d, "ursula@nullmx2.test", "double bounce", sender="zed@no-sender.test")
        rcpt_line(d, qid, "ursula@nullmx2.test", "bounced")
        bid = wait_log(d, r"%s: sender non-delivery notification: ([0-9A-F]{12})" % qid,
                       qid)[0].rsplit(" ", 1)[1]
        rcpt_line(d, bid, "zed@no-sender.test", "bounced")
        wait_log(d, r"%s: no bounce for a null sender" % bid, bid)
        wait_log(d, r"%s: removed$" % bid, bid)
        wait_until(lambda: d.queue_ids() == [], 10, what="empty queue")
        assert not log_lines(d, bid, "sender non-delivery notification")
    finally:
        d.stop()
