# SMTP connection reuse (issue 6): idle connections kept per recipient
# domain, checked against Postfix's own connection log and scripted MX hosts.
import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_delivery import (BIN, log_lines, make_world, rcpt_line, send,  # noqa: E402
                           wait_log)
from world.https import PolicyHost, policy_text  # noqa: E402
from world.util import close_quietly, serve_tcp, wait_until  # noqa: E402

N = 20


@pytest.fixture(scope="module")
def rworld():
    w = make_world(["reuse.test", "enf.test", "a.test", "b.test"],
                   {"mx1.reuse.test": "good", "mx.enf.test": "good"})
    w.mx("reuse.test", [(10, "mx1.reuse.test")])
    w.policy = PolicyHost(os.path.join(w.base, "nginx"), w.ca).start()
    yield w
    w.policy.stop()
    w.close()


def postfix_sessions(w, host, mails):
    """The finished smtpd sessions of MX `host` that ran a transaction, as
    the MAIL count of each (from Postfix's "disconnect from ... mail=N"
    lines; its start-up probes have no EHLO). Waits, bounded, until they
    add up to `mails`: Postfix writes its log asynchronously."""
    pat = re.compile(r"postfix/%s/smtpd\[\d+\]: disconnect from \S+ ehlo=\S+ .*?mail=(\d+)"
                     % re.escape(host))

    def get():
        got = [int(m.group(1)) for m in pat.finditer(w.postfix.log())]
        return got if sum(got) >= mails else None
    return wait_until(get, 20, what="Postfix sessions of %s" % host)


def sent_lines(d, qids, rcpt_fmt, timeout=60):
    return [rcpt_line(d, q, rcpt_fmt % i, "sent", timeout=timeout) for i, q in enumerate(qids)]


def conn_uses(lines):
    return [int(m.group(1)) if m else 1
            for m in (re.search(r", conn_use=(\d+), ", x) for x in lines)]


def test_twenty_messages_few_connections(rworld, tmp_path):
    d = rworld.relay(tmp_path, max_connections_per_domain="2")
    try:
        qids = [send(d, "u%d@reuse.test" % i, "reuse %d" % i) for i in range(N)]
        lines = sent_lines(d, qids, "u%d@reuse.test")
        assert len(rworld.postfix.wait_messages(domain="reuse.test", count=N, timeout=30)) >= N
        for x in lines:
            assert "tls=TLSv1.3 verified" in x, x
            # Postfix order: relay=, conn_use=, delay=
            assert re.search(r"relay=mx1\.reuse\.test\[[^]]+\]:\d+, (conn_use=\d+, )?delay=", x), x
        uses = conn_uses(lines)
        assert max(uses) >= 2, lines
    finally:
        assert d.stop() == 0  # closes the idle connections: Postfix logs them
    sessions = postfix_sessions(rworld, "mx1.reuse.test", N)
    assert sum(sessions) == N and 1 <= len(sessions) <= 5, (sessions, uses)
    # every connection shows up once with conn_use 1 (no field)
    assert uses.count(1) == len(sessions), (sessions, uses)


def publish(w, domain, mode, mx, policy_id="20260618001"):
    w.dns.set("mta-sts." + domain, "A", "127.0.0.1", ttl=1)
    w.dns.set("_mta-sts." + domain, "TXT", "v=STSv1; id=%s;" % policy_id, ttl=1)
    w.policy.serve(domain, policy_text(mode=mode, mx=mx))


def tlsrpt_show(d):
    day = time.strftime("%Y-%m-%d", time.gmtime())
    p = subprocess.run([BIN, "tlsrpt", "show", "--day", day, "--json", "-c", d.conf_path],
                       capture_output=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_enforce_with_reuse_stays_verified(rworld, tmp_path):
    rworld.mx("enf.test", [(10, "mx.enf.test")])
    publish(rworld, "enf.test", "enforce", ["mx.enf.test"])
    d = rworld.relay(tmp_path, sts_https_port=rworld.policy.port,
                     max_connections_per_domain="1")
    try:
        n = 8
        qids = [send(d, "e%d@enf.test" % i, "enforce %d" % i) for i in range(n)]
        lines = sent_lines(d, qids, "e%d@enf.test")
        for x in lines:
            assert "tls=TLSv1.3 verified" in x and "sts=enforce id=20260618001" in x, x
            assert "sts_result=" not in x, x
        uses = conn_uses(lines)
        assert max(uses) >= 2, lines
        # RFC 8460 §4.4: successful sessions are TLS connections, not messages
        rep = [r for r in tlsrpt_show(d)
               if r["policies"][0]["policy"]["policy-domain"] == "enf.test"]
        assert len(rep) == 1, rep
        summary = rep[0]["policies"][0]["summary"]
        assert summary["total-successful-session-count"] == uses.count(1), (summary, uses)
        assert summary["total-failure-session-count"] == 0
    finally:
        assert d.stop() == 0
    sessions = postfix_sessions(rworld, "mx.enf.test", n)
    assert sum(sessions) == n and len(sessions) == uses.count(1) < n, (sessions, uses)


# ---------------------------------------------------------------- scripted MX
class ScriptMX:
    """A small SMTP server (PIPELINING, no STARTTLS) recording each session:
    {"mails": n, "ended": "quit|eof|closed-by-us", "open": bool}.
    close_after_eod: close right after the first transaction's 250;
    die_on_second_mail: on the second MAIL of a session, close without a reply."""

    def __init__(self, ip, port, close_after_eod=False, die_on_second_mail=False):
        self.close_after_eod = close_after_eod
        self.die_on_second_mail = die_on_second_mail
        self.ip = ip
        self.sessions = []
        self.lock = threading.Lock()
        self.sock = serve_tcp(ip, port, self._session)

    def _session(self, conn):
        rec = {"mails": 0, "ended": "", "open": True}
        with self.lock:
            self.sessions.append(rec)
        conn.settimeout(30)
        f = conn.makefile("rb")

        def say(s):
            conn.sendall(s.encode() + b"\r\n")
        try:
            say("220 script.test ESMTP")
            while True:
                line = f.readline(4096)
                if not line:
                    rec["ended"] = "eof"
                    return
                verb = line[:4].upper()
                if verb == b"EHLO":
                    say("250-script.test\r\n250 PIPELINING")
                elif verb == b"MAIL":
                    rec["mails"] += 1
                    if self.die_on_second_mail and rec["mails"] == 2:
                        rec["ended"] = "closed-by-us"
                        return
                    say("250 2.1.0 ok")
                elif verb == b"RCPT":
                    say("250 2.1.5 ok")
                elif verb == b"DATA":
                    say("354 go")
                    while True:
                        chunk = f.readline(65536)
                        if not chunk:
                            rec["ended"] = "eof in data"
                            return
                        if chunk == b".\r\n":
                            break
                    say("250 2.0.0 queued")
                    if self.close_after_eod:
                        rec["ended"] = "closed-by-us"
                        return
                elif verb == b"QUIT":
                    say("221 bye")
                    rec["ended"] = "quit"
                    return
                else:
                    say("250 ok")
        except OSError:
            rec["ended"] = rec["ended"] or "error"
        finally:
            rec["open"] = False
            close_quietly(conn)

    def close(self):
        close_quietly(self.sock)


def script_mx(w, domain, **kw):
    f = ScriptMX(w.new_ip(), w.port, **kw)
    w.fakes.append(f)  # closed with the world
    host = "mx." + domain
    w.mx(domain, [(10, host)], {host: f.ip})
    return f


def test_server_closing_idle_connection_gets_a_new_one(rworld, tmp_path):
    fake = script_mx(rworld, "closer.test", close_after_eod=True)
    d = rworld.relay(tmp_path, max_connections_per_domain="1")
    try:
        qids = [send(d, "c%d@closer.test" % i, "closer %d" % i) for i in range(3)]
        lines = sent_lines(d, qids, "c%d@closer.test")
        assert len(fake.sessions) == 3
        assert all(s["mails"] == 1 for s in fake.sessions)
        assert not any("status=deferred" in x for x in log_lines(d, pattern="closer"))
        assert conn_uses(lines) == [1, 1, 1]
    finally:
        assert d.stop() == 0


def test_dead_reused_connection_falls_back_without_a_failed_attempt(rworld, tmp_path):
    fake = script_mx(rworld, "dier.test", die_on_second_mail=True)
    d = rworld.relay(tmp_path, max_connections_per_domain="1", retry_schedule="1h")
    try:
        q1 = send(d, "first@dier.test", "dier 1")
        rcpt_line(d, q1, "first@dier.test", "sent")
        q2 = send(d, "second@dier.test", "dier 2")
        rcpt_line(d, q2, "second@dier.test", "sent", timeout=30)
        wait_log(d, r"reused connection to mx\.dier\.test\[.*failed before MAIL was answered.*"
                 r"trying a new connection", q2)
        assert not log_lines(d, q2, r"status=deferred")
        assert [s["mails"] for s in fake.sessions] == [2, 1]
    finally:
        assert d.stop() == 0


def test_no_reuse_across_domains_sharing_an_mx(rworld, tmp_path):
    fake = script_mx(rworld, "a.test")
    rworld.mx("b.test", [(10, "mx.a.test")])
    d = rworld.relay(tmp_path)
    try:
        qa = send(d, "x@a.test", "domain a")
        la = rcpt_line(d, qa, "x@a.test", "sent")
        qb = send(d, "y@b.test", "domain b")
        lb = rcpt_line(d, qb, "y@b.test", "sent")
        qa2 = send(d, "z@a.test", "domain a again")
        la2 = rcpt_line(d, qa2, "z@a.test", "sent")
        # b.test never rode on a.test's connection, while a.test's second
        # message did reuse its own (so the pool was working all along)
        assert "conn_use=" not in la and "conn_use=" not in lb, (la, lb)
        assert "conn_use=2" in la2, la2
        assert len(fake.sessions) == 2
        assert sorted(s["mails"] for s in fake.sessions) == [1, 2]
    finally:
        assert d.stop() == 0
    # the stop closed the idle connections with QUIT
    wait_until(lambda: not any(s["open"] for s in fake.sessions), 10, what="sessions closed")
    assert all(s["ended"] == "quit" for s in fake.sessions), fake.sessions


def test_idle_connection_closed_after_idle_time(rworld, tmp_path):
    fake = script_mx(rworld, "idle.test")
    d = rworld.relay(tmp_path)
    try:
        q = send(d, "i@idle.test", "idle")
        rcpt_line(d, q, "i@idle.test", "sent")
        t0 = time.monotonic()
        assert fake.sessions[0]["open"]
        wait_until(lambda: not fake.sessions[0]["open"], 15, what="idle close")
        assert 3.0 <= time.monotonic() - t0 <= 10.0
        assert fake.sessions[0]["ended"] == "quit"
    finally:
        assert d.stop() == 0
