# Bad input against `stsrelay serve`: over-long lines, garbage, NUL bytes,
# wrong command order, 10001 recipients, disconnects, relay attempts, too
# many sessions, timeouts, bad config. After each: the right reply codes,
# the daemon alive, and nothing already queued lost.
import os
import random
import re
import subprocess
import threading
import time

import pytest

from serve_helpers import BIN, Daemon, split_received, submit


def check_healthy(d, before):
    """Daemon alive, queued mail intact, and a normal submission works."""
    assert d.alive(), d.log()
    for qid, content in before.items():
        assert d.queue_file(qid) == content
    qid = submit(d, "ok@a.example", ["ok@b.example"], b"Subject: still fine\r\n\r\nok\r\n")
    assert split_received(d.queue_file(qid)[2])[1] == b"Subject: still fine\r\n\r\nok\r\n"
    assert d.wait_tmp_empty(), d.tmp_files()


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path).start()
    qid = submit(d, "pre@a.example", ["pre@b.example"], b"Subject: pre\r\n\r\nqueued before\r\n")
    d.before = {qid: d.queue_file(qid)}
    yield d
    try:
        check_healthy(d, d.before)
    finally:
        if d.alive():
            assert d.stop() == 0, d.log()


def greeted(d):
    c = d.connect()
    assert c.reply()[0] == 220
    return c


def test_oversized_command_lines(daemon):
    c = greeted(daemon)
    assert c.cmd("EHLO c.test")[0] == 250
    # exactly 512 octets with CRLF: accepted; 513: too long
    assert c.cmd(b"NOOP " + b"x" * 505 + b"\r\n")[0] == 250
    code, text = c.cmd(b"NOOP " + b"x" * 506 + b"\r\n")
    assert code == 500 and "5.5.2" in text and "too long" in text
    # far over any buffer: one 500, the session goes on
    code, text = c.cmd(b"MAIL FROM:<" + b"a" * 100000 + b"@x.example>\r\n")
    assert code == 500 and "5.5.2" in text
    assert c.cmd("NOOP")[0] == 250
    # an over-long RCPT does not add a recipient
    assert c.cmd("MAIL FROM:<a@x.example>")[0] == 250
    assert c.cmd(b"RCPT TO:<" + b"b" * 600 + b"@y.example>\r\n")[0] == 500
    assert c.cmd("DATA")[0] == 503
    assert c.cmd("QUIT")[0] == 221
    c.close()


def test_binary_garbage(daemon):
    rnd = random.Random(7)
    for n in range(3):
        c = greeted(daemon)
        garbage = bytes(rnd.getrandbits(8) for _ in range(200000))
        try:
            c.send(garbage + b"\r\n")
        except OSError:
            pass                              # closed for too many errors
        codes = []
        try:
            while True:
                code, text = c.reply()
                codes.append(code)
                if code == 421:
                    assert "too many errors" in text
                    break
        except (ConnectionError, OSError):
            pass
        assert codes, "no reply to garbage"
        assert all(code in (500, 501, 502, 503, 555, 421, 250, 252, 214) for code in codes), codes
        assert 500 in codes
        c.close()


def test_nul_bytes_in_commands(daemon):
    c = greeted(daemon)
    code, text = c.cmd(b"EHLO c\x00.test\r\n")
    assert code == 500 and "5.5.2" in text
    assert c.cmd("EHLO c.test")[0] == 250
    assert c.cmd(b"MAIL FROM:<a@x.example>\x00 SIZE=1\r\n")[0] == 500
    assert c.cmd(b"\x00\x00\x00\r\n")[0] == 500
    assert c.cmd("QUIT")[0] == 221
    c.close()


def test_data_without_rcpt_and_bad_sequence(daemon):
    c = greeted(daemon)
    assert c.cmd("EHLO c.test")[0] == 250
    code, text = c.cmd("DATA")
    assert code == 503 and "5.5.1" in text
    assert c.cmd("MAIL FROM:<a@x.example>")[0] == 250
    code, text = c.cmd("DATA")
    assert code == 503 and "5.5.1" in text
    assert c.cmd("RCPT TO:<not an address>")[0] == 501
    assert c.cmd("DATA")[0] == 503
    assert c.cmd("RCPT TO:<>")[0] == 501
    assert c.cmd("QUIT")[0] == 221
    c.close()
    assert len(daemon.queue_ids()) == 1


def test_10001_recipients(daemon):
    c = greeted(daemon)
    assert c.cmd("EHLO c.test")[0] == 250
    assert c.cmd("MAIL FROM:<many@a.example>")[0] == 250
    n = 10001
    lines = b"".join(b"RCPT TO:<r%d@many.example>\r\n" % i for i in range(n))
    # pipelined in one stream; a thread writes while we read the replies
    t = threading.Thread(target=c.send, args=(lines,))
    t.start()
    codes = [c.reply() for _ in range(n)]
    t.join(60)
    assert all(code == 250 for code, _ in codes[:10000])
    code, text = codes[10000]
    assert code == 452 and "4.5.3" in text, text
    assert c.cmd("DATA")[0] == 354
    code, text = c.cmd(b"Subject: many\r\n\r\nto 10000\r\n.\r\n")
    assert code == 250, text
    qid = text.split()[-1]
    c.close()
    fields, rcpts, data = daemon.queue_file(qid)
    assert rcpts == ["r%d@many.example" % i for i in range(10000)]
    m, rest = split_received(data)
    assert m.group("rcpt") is None
    assert rest == b"Subject: many\r\n\r\nto 10000\r\n"


def test_premature_disconnect_mid_data(daemon):
    for cut in (b"", b"Subject: cut\r\n", b"Subject: cut\r\n\r\nhalf a li", b"x\r\n" * 50000):
        c = greeted(daemon)
        assert c.cmd("EHLO c.test")[0] == 250
        assert c.cmd("MAIL FROM:<a@x.example>")[0] == 250
        assert c.cmd("RCPT TO:<b@y.example>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(cut)
        c.close()
    assert daemon.wait_tmp_empty(10), daemon.tmp_files()
    assert daemon.queue_ids() == sorted(daemon.before)
    assert "lost connection after DATA" in daemon.log()


def test_unknown_and_unsupported_commands(daemon):
    c = greeted(daemon)
    for line, want in (("GET / HTTP/1.0", 500), ("AUTH PLAIN AGEAYg==", 502),
                       ("BDAT 10 LAST", 502), ("STARTTLS", 502), ("EXPN all", 502),
                       ("EHLO", 501), ("MAIL FROM:<a@x.example>", 503)):
        assert c.cmd(line)[0] == want, line
    assert c.cmd("EHLO c.test")[0] == 250
    assert c.cmd("MAIL FROM:<a@x.example> RET=HDRS")[0] == 555
    assert c.cmd("MAIL FROM:<a@x.example> BODY=BINARYMIME")[0] == 501
    c.close()


def test_relay_denied_outside_mynetworks(tmp_path):
    d = Daemon(tmp_path, mynetworks="127.0.0.2/32").start()
    try:
        c = greeted(d)
        assert c.cmd("EHLO c.test")[0] == 250
        assert c.cmd("MAIL FROM:<a@x.example>")[0] == 250
        code, text = c.cmd("RCPT TO:<victim@elsewhere.example>")
        assert code == 554 and "5.7.1" in text and "Relay access denied" in text
        assert c.cmd("DATA")[0] == 503
        c.close()
        assert d.queue_ids() == []
        assert re.search(r"NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.1\]: 554 5\.7\.1 "
                         r"<victim@elsewhere\.example>: Relay access denied", d.log())
        assert d.alive()
    finally:
        assert d.stop() == 0


def test_too_many_sessions(tmp_path):
    d = Daemon(tmp_path, max_sessions="5").start()
    try:
        conns = []
        codes = []
        for _ in range(10):
            c = d.connect()
            code, text = c.reply()
            codes.append(code)
            conns.append(c)
            if code == 421:
                assert "4.7.0" in text
                assert c.closed()
        assert codes == [220] * 5 + [421] * 5
        for c in conns:
            c.close()
        # the slots come back once the server has seen the five disconnects
        deadline = time.monotonic() + 10
        while d.log().count("disconnect from") < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert d.log().count("disconnect from") == 5
        check_healthy(d, {})
    finally:
        assert d.stop() == 0


def test_command_timeout(tmp_path):
    d = Daemon(tmp_path, env={"STSRELAY_SMTPD_TIMEOUT": "2"}).start()
    try:
        c = greeted(d)
        assert c.cmd("EHLO c.test")[0] == 250
        t0 = time.monotonic()
        code, text = c.reply()
        assert code == 421 and "4.4.2" in text
        assert 1.5 < time.monotonic() - t0 < 10
        assert c.closed()
        # the DATA phase has its own (here also 2 s) inactivity timeout
        c = greeted(d)
        assert c.cmd("EHLO c.test")[0] == 250
        assert c.cmd("MAIL FROM:<a@x.example>")[0] == 250
        assert c.cmd("RCPT TO:<b@y.example>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.send(b"Subject: slow\r\n")
        code, text = c.reply()
        assert code == 421 and "4.4.2" in text
        assert c.closed()
        assert d.wait_tmp_empty() and d.queue_ids() == []
        check_healthy(d, {})
    finally:
        assert d.stop() == 0


def test_config_error_refuses_to_start(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("spool_dir = %s\n# comment\nmax_sessions = lots\n" % (tmp_path / "spool"))
    p = subprocess.run([BIN, "serve", "-c", str(conf)], capture_output=True, timeout=30)
    assert p.returncode != 0
    assert re.search(r"%s:3\b" % re.escape(str(conf)), p.stderr.decode()), p.stderr
    conf.write_text("no_such_key = 1\n")
    p = subprocess.run([BIN, "serve", "-c", str(conf)], capture_output=True, timeout=30)
    assert p.returncode != 0
    assert re.search(r"%s:1\b" % re.escape(str(conf)), p.stderr.decode()), p.stderr
    p = subprocess.run([BIN, "serve", "-c", str(tmp_path / "missing.conf")],
                       capture_output=True, timeout=30)
    assert p.returncode != 0 and b"missing.conf" in p.stderr


def test_unwritable_spool_refuses_to_start(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory\n")
    d = Daemon(tmp_path, spool_dir=str(blocker / "spool"))
    p = subprocess.run([BIN, "serve", "-c", d.conf_path], capture_output=True, timeout=30)
    assert p.returncode != 0
    assert b"spool" in p.stderr, p.stderr


def test_listen_address_in_use(tmp_path):
    d = Daemon(tmp_path).start()
    try:
        os.makedirs(tmp_path / "two", exist_ok=True)
        conf = tmp_path / "two" / "c.conf"
        conf.write_text("listen = 127.0.0.1:%d\nspool_dir = %s\n" % (d.port, tmp_path / "two" / "spool"))
        p = subprocess.run([BIN, "serve", "-c", str(conf)], capture_output=True, timeout=30)
        assert p.returncode != 0
        assert b"127.0.0.1:%d" % d.port in p.stderr, p.stderr
    finally:
        assert d.stop() == 0
