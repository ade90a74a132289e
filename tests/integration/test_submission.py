# SMTP submission to `stsrelay serve` with Python's smtplib, swaks and raw
# sockets; every accepted message is checked byte for byte in the spool.
import hashlib
import os
import pwd
import random
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time

import pytest

from serve_helpers import BIN, Daemon, crlf, split_received, submit

SWAKS_TIMEOUT = 300


@pytest.fixture
def daemon(tmp_path):
    d = Daemon(tmp_path).start()
    yield d
    if d.alive():
        assert d.stop() == 0, d.log()


def only_message(d):
    ids = d.queue_ids()
    assert len(ids) == 1, ids
    return (ids[0],) + d.queue_file(ids[0])


def check_stored(d, qid, sender, rcpts, original, helo=None, proto="ESMTP"):
    """The queue file holds exactly Received + the original message."""
    fields, stored_rcpts, data = d.queue_file(qid)
    assert fields["id"] == qid
    assert fields["sender"] == sender
    assert stored_rcpts == rcpts
    assert fields["client"] == "unknown[127.0.0.1]"
    m, rest = split_received(data)
    assert m.group("qid").decode() == qid
    assert m.group("proto").decode() == proto
    if helo:
        assert m.group("helo").decode() == helo
    if len(rcpts) == 1:
        assert m.group("rcpt").decode() == rcpts[0]
    else:
        assert m.group("rcpt") is None
    assert rest == original
    return fields


def swaks(d, args, timeout=SWAKS_TIMEOUT):
    p = subprocess.run(["swaks", "--server", "127.0.0.1:%d" % d.port, "--helo", "swaks.test",
                        "--timeout", "120"] + args,
                       capture_output=True, timeout=timeout)
    out = p.stdout.decode(errors="replace")
    assert p.returncode == 0, out + p.stderr.decode(errors="replace")
    m = re.findall(r"<-  250 2\.0\.0 Ok: queued as ([0-9A-F]{12})", out)
    assert len(m) == 1, out[-3000:]
    return m[0], out


def test_smtplib_two_recipients(daemon):
    msg = (b"From: a@sender.example\r\nTo: x@one.example, y@two.example\r\n"
           b"Subject: hello\r\nMessage-ID: <m1@sender.example>\r\n\r\nBody line 1\r\nBody line 2\r\n")
    with smtplib.SMTP("127.0.0.1", daemon.port, local_hostname="client.test", timeout=30) as s:
        code, banner = s.ehlo()
        assert code == 250
        for ext in ("pipelining", "size", "8bitmime", "enhancedstatuscodes"):
            assert s.has_extn(ext), ext
        assert s.esmtp_features["size"] == "52428800"
        assert not s.has_extn("starttls")
        assert s.sendmail("a@sender.example", ["x@one.example", "y@two.example"], msg) == {}
    qid, fields, rcpts, data = only_message(daemon)
    check_stored(daemon, qid, "a@sender.example", ["x@one.example", "y@two.example"], msg,
                 helo="client.test")
    assert daemon.wait_log("disconnect from unknown[127.0.0.1]")
    log = daemon.log()
    assert "%s: client=unknown[127.0.0.1]" % qid in log
    assert "%s: from=<a@sender.example>, size=%d, nrcpt=2 (queue active)" % (
        qid, len(data)) in log
    assert "connect from unknown[127.0.0.1]" in log


def test_smtplib_8bit_lone_dot_and_double_dot(daemon):
    # smtplib dot-stuffs on the wire; the queue must hold the original
    msg = ("From: a@s.example\r\nTo: r@d.example\r\nSubject: dots\r\n"
           "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
           "Grüße, naïve café\r\n.\r\n..\r\n..two dots\r\n.one dot\r\n. \r\nlast\r\n").encode()
    with smtplib.SMTP("127.0.0.1", daemon.port, timeout=30) as s:
        s.ehlo("client.test")
        assert s.sendmail("a@s.example", ["r@d.example"], msg,
                          mail_options=["BODY=8BITMIME"]) == {}
    qid, _, _, _ = only_message(daemon)
    check_stored(daemon, qid, "a@s.example", ["r@d.example"], msg)


def test_raw_unstuffing_and_line_ends(daemon):
    """The exact bytes on the wire and what must be stored for each line."""
    wire = (b"Subject: raw\r\n\r\n"
            b"..\r\n"              # stuffed lone dot  -> "."
            b"...x\r\n"            # stuffed "..x"     -> "..x"
            b".y\r\n"              # unstuffed anyway  -> "y" (leading dot removed)
            b"bare lf\n"           # bare LF           -> CRLF
            b"..after lf\n"        # stuffed after LF  -> ".after lf" (smtplib stuffs after LF)
            b".\n"                 # lone dot after LF -> "." (data, never an end)
            b".\r\n"               # LF . CRLF         -> "." (data, never an end)
            b"cr\rinside\r\n"      # lone CR is data
            b"nul\x00byte\r\n"     # NUL kept as data
            + b"L" * 5000 + b"\r\n"  # long text lines are accepted as they are
            + b"\xff\xfe 8bit\r\n")
    stored = (b"Subject: raw\r\n\r\n.\r\n..x\r\ny\r\nbare lf\r\n.after lf\r\n.\r\n.\r\n"
              b"cr\rinside\r\nnul\x00byte\r\n"
              + b"L" * 5000 + b"\r\n\xff\xfe 8bit\r\n")
    qid = submit(daemon, "s@a.example", ["r@b.example"], wire)
    check_stored(daemon, qid, "s@a.example", ["r@b.example"], stored, helo="client.test")


def test_bare_lf_never_ends_data_and_pipelined_next_transaction(daemon):
    """A client using bare LF: commands work, its line ends are stored as
    CRLF, but only CRLF.CRLF ends DATA (RFC 5321 4.1.1.4), so LF.LF cannot
    smuggle a second transaction; then two transactions pipelined."""
    c = daemon.connect()
    assert c.reply()[0] == 220
    c.send(b"EHLO lf.test\nMAIL FROM:<a@x.example>\nRCPT TO:<b@y.example>\nDATA\n")
    assert c.reply()[0] == 250
    assert c.reply()[0] == 250
    assert c.reply()[0] == 250
    assert c.reply()[0] == 354
    # LF.LF and LF.CRLF are message text, not the end of DATA
    c.send(b"Subject: one\n\nfirst\n.\nMAIL FROM:<>\nRCPT TO:<c@z.example>\nDATA\n"
           b"smuggled\n.\r\n")
    c.send(b".\r\nMAIL FROM:<>\r\nRCPT TO:<c@z.example>\r\nDATA\r\n")
    code, text = c.reply()
    assert code == 250 and "queued as" in text
    qid1 = text.split()[-1]
    assert c.reply()[0] == 250
    assert c.reply()[0] == 250
    assert c.reply()[0] == 354
    c.send(b"Subject: two\r\n\r\nsecond\r\n.\r\nQUIT\r\n")
    code, text = c.reply()
    assert code == 250
    qid2 = text.split()[-1]
    assert c.reply()[0] == 221
    c.close()
    check_stored(daemon, qid1, "a@x.example", ["b@y.example"],
                 b"Subject: one\r\n\r\nfirst\r\n.\r\nMAIL FROM:<>\r\n"
                 b"RCPT TO:<c@z.example>\r\nDATA\r\nsmuggled\r\n.\r\n", helo="lf.test")
    check_stored(daemon, qid2, "", ["c@z.example"], b"Subject: two\r\n\r\nsecond\r\n")


def test_helo_gives_smtp_protocol(daemon):
    c = daemon.connect()
    assert c.reply()[0] == 220
    code, text = c.cmd("HELO old.test")
    assert code == 250 and text == "250 relay.test"
    assert c.cmd("MAIL FROM:<a@x.example>")[0] == 250
    assert c.cmd("RCPT TO:<b@y.example>")[0] == 250
    assert c.cmd("DATA")[0] == 354
    code, text = c.cmd(b"Subject: helo\r\n\r\nx\r\n.\r\n")
    assert code == 250
    c.close()
    qid = text.split()[-1]
    check_stored(daemon, qid, "a@x.example", ["b@y.example"], b"Subject: helo\r\n\r\nx\r\n",
                 helo="old.test", proto="SMTP")


def test_other_commands(daemon):
    c = daemon.connect()
    assert c.reply()[0] == 220
    assert c.cmd("MAIL FROM:<a@x.example>")[0] == 503      # before EHLO
    assert c.cmd("EHLO c.test")[0] == 250
    assert c.cmd("NOOP")[0] == 250
    assert c.cmd("VRFY someone")[0] == 252
    assert c.cmd("EXPN list")[0] == 502
    assert c.cmd("HELP")[0] == 214
    assert c.cmd("STARTTLS")[0] == 502
    assert c.cmd("RCPT TO:<b@y.example>")[0] == 503        # before MAIL
    assert c.cmd("DATA")[0] == 503
    assert c.cmd("MAIL FROM:<a@x.example> BODY=7BIT")[0] == 250
    assert c.cmd("MAIL FROM:<a@x.example>")[0] == 503      # nested
    assert c.cmd("DATA")[0] == 503                          # no RCPT
    assert c.cmd("RSET")[0] == 250
    assert c.cmd("RCPT TO:<b@y.example>")[0] == 503        # RSET cleared MAIL
    assert c.cmd("MAIL FROM:<a@x.example> SMTPUTF8")[0] == 555
    assert c.cmd("FOO")[0] == 500
    assert c.cmd("QUIT")[0] == 221
    assert c.closed()
    assert daemon.queue_ids() == []


def test_swaks_pipelining_lone_dot(daemon, tmp_path):
    body = (b"From: s@a.example\nTo: r@b.example\nSubject: swaks dots\nMessage-ID: <sw1@a.example>\n\n"
            b"line one\n.\n..\n..starts with two dots\n.starts with one\nlast line")
    f = tmp_path / "m.eml"
    f.write_bytes(body)
    qid, out = swaks(daemon, ["--from", "s@a.example", "--to", "r@b.example,t@c.example",
                              "--pipeline", "--data", "@%s" % f])
    # really pipelined: MAIL, RCPT, RCPT, DATA sent before the first reply
    assert re.search(r" -> MAIL FROM:<s@a\.example>\n -> RCPT TO:<r@b\.example>\n"
                     r" -> RCPT TO:<t@c\.example>\n -> DATA\n<-  250", out), out
    assert re.search(r"\n -> \.\.\r?\n", out), out   # the lone dot was stuffed on the wire
    check_stored(daemon, qid, "s@a.example", ["r@b.example", "t@c.example"], crlf(body),
                 helo="swaks.test")


def test_swaks_8bitmime(daemon, tmp_path):
    body = ("From: s@a.example\nTo: r@b.example\nSubject: 8bit\n"
            "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
            "Fünf Äpfel – ∑ ünïcödé\nend").encode()
    f = tmp_path / "m.eml"
    f.write_bytes(body)
    qid, out = swaks(daemon, ["--from", "s@a.example", "--to", "r@b.example",
                              "--pipeline", "--data", "@%s" % f])
    check_stored(daemon, qid, "s@a.example", ["r@b.example"], crlf(body))


def vm_hwm_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_swaks_20mb_message(daemon, tmp_path):
    rnd = random.Random(20)
    lines = [b"From: big@a.example", b"To: r@b.example", b"Subject: 20 MB", b""]
    size = 0
    alphabet = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:-+"
    while size < 20 * 1024 * 1024:
        n = rnd.randint(1, 200)
        line = bytes(rnd.choice(alphabet) for _ in range(16)) * (n // 16 + 1)
        line = line[:n]
        if rnd.random() < 0.01:
            line = b"." + line       # leading dots must survive stuffing
        lines.append(line)
        size += len(line) + 2
    body = b"\n".join(lines)
    f = tmp_path / "big.eml"
    f.write_bytes(body)
    hwm_before = vm_hwm_kb(daemon.proc.pid)
    qid, _ = swaks(daemon, ["--from", "big@a.example", "--to", "r@b.example",
                            "--pipeline", "--data", "@%s" % f, "--suppress-data"])
    hwm_after = vm_hwm_kb(daemon.proc.pid)
    fields, rcpts, data = daemon.queue_file(qid)
    _, rest = split_received(data)
    want = crlf(body)
    assert len(rest) == len(want) and len(rest) > 20 * 1024 * 1024
    assert hashlib.sha256(rest).hexdigest() == hashlib.sha256(want).hexdigest()
    # streamed through a bounded buffer: peak memory grew far less than 20 MB
    assert hwm_after - hwm_before < 8 * 1024, (hwm_before, hwm_after)


def test_size_limits(tmp_path):
    d = Daemon(tmp_path, max_message_size="100000").start()
    try:
        c = d.connect()
        assert c.reply()[0] == 220
        code, text = c.cmd("EHLO c.test")
        assert "SIZE 100000" in text
        code, text = c.cmd("MAIL FROM:<a@x.example> SIZE=100001")
        assert code == 552 and "5.3.4" in text
        assert c.cmd("MAIL FROM:<a@x.example> SIZE=1000")[0] == 250  # SIZE is only a hint
        assert c.cmd("RCPT TO:<b@y.example>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        code, text = c.cmd(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 101 + b".\r\n")
        assert code == 552 and "5.3.4" in text, text
        # the session goes on; a message of exactly the limit is accepted
        assert c.cmd("MAIL FROM:<a@x.example>")[0] == 250
        assert c.cmd("RCPT TO:<b@y.example>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        exact = b"S: x\r\n\r\n" + b"y" * (100000 - 10) + b"\r\n"
        assert len(exact) == 100000
        code, text = c.cmd(exact + b".\r\n")
        assert code == 250, text
        c.close()
        ids = d.queue_ids()
        assert len(ids) == 1
        _, rest = split_received(d.queue_file(ids[0])[2])
        assert rest == exact
        assert d.wait_tmp_empty(), d.tmp_files()
        assert "552 5.3.4 Message size exceeds fixed limit" in d.log()
    finally:
        assert d.stop() == 0


def test_ipv6_listener(tmp_path):
    d = Daemon(tmp_path)
    d.conf["listen"] = "127.0.0.1:%d, [::1]:%d" % (d.port, d.port)
    d.write_conf()
    d.start()
    try:
        c = d.connect(host="::1")
        # RCPT accepted: ::1/128 is in mynetworks
        c.open_data("v6.test", "a@x.example", ["b@y.example"])
        code, text = c.cmd(b"Subject: v6\r\n\r\nhi\r\n.\r\n")
        assert code == 250
        c.close()
        data = d.queue_file(text.split()[-1])[2]
        m, rest = split_received(data)
        assert m.group("ip") == b"IPv6:::1"
        assert rest == b"Subject: v6\r\n\r\nhi\r\n"
    finally:
        assert d.stop() == 0


def test_restart_keeps_queue_and_sigterm_exit_0(tmp_path):
    d = Daemon(tmp_path).start()
    qid = submit(d, "a@x.example", ["b@y.example"], b"Subject: keep\r\n\r\nkeep me\r\n")
    assert d.stop(signal.SIGTERM) == 0
    assert "stopping (SIGTERM)" in d.log()
    d.start()
    assert d.queue_ids() == [qid]
    assert d.stop(signal.SIGINT) == 0
    assert d.queue_ids() == [qid]
    _, rest = split_received(d.queue_file(qid)[2])
    assert rest == b"Subject: keep\r\n\r\nkeep me\r\n"


def test_sighup_reload(tmp_path):
    d = Daemon(tmp_path).start()
    try:
        d.conf["max_message_size"] = "12345"
        d.write_conf()
        d.proc.send_signal(signal.SIGHUP)
        assert d.wait_log("configuration reloaded")
        c = d.connect()
        c.reply()
        assert "SIZE 12345" in c.cmd("EHLO c.test")[1]
        c.close()
        # a broken file changes nothing and the daemon keeps running
        with open(d.conf_path, "a") as f:
            f.write("no_such_key = 1\n")
        d.proc.send_signal(signal.SIGHUP)
        assert d.wait_log("reload failed")
        c = d.connect()
        c.reply()
        assert "SIZE 12345" in c.cmd("EHLO c.test")[1]
        c.close()
    finally:
        assert d.stop() == 0


def control(d, request):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(os.path.join(d.spool, "control"))
    s.sendall(request.encode() + b"\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(1024)
        if not chunk:
            break
        data += chunk
    s.close()
    return data.decode().rstrip("\n")


def test_control_socket(daemon):
    st = os.stat(os.path.join(daemon.spool, "control"))
    assert st.st_mode & 0o777 == 0o600
    qid = submit(daemon, "a@x.example", ["b@y.example"], b"Subject: c\r\n\r\nc\r\n")
    assert control(daemon, "flush") == "ok"
    assert control(daemon, "flush %s" % qid) == "ok"
    assert control(daemon, "wake") == "ok"
    assert control(daemon, "delete 0123456789AB").startswith("error")
    assert control(daemon, "delete nonsense").startswith("error")
    assert control(daemon, "launch missiles").startswith("error")
    assert daemon.queue_ids() == [qid]
    assert control(daemon, "delete %s" % qid) == "ok"
    # the removal runs in the thread pool right after the reply
    deadline = time.time() + 5
    while daemon.queue_ids() and time.time() < deadline:
        time.sleep(0.05)
    assert daemon.queue_ids() == []


def test_pickup_of_sendmail_drop(daemon):
    msg = b"From: local@a.example\nTo: r@b.example\nSubject: via sendmail\n\nhello\n"
    p = subprocess.run([BIN, "sendmail", "-C", daemon.conf_path, "-f", "local@a.example", "-i",
                        "r@b.example"], input=msg, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr
    def drops():
        return [n for n in os.listdir(os.path.join(daemon.spool, "maildrop"))
                if not n.startswith(".")]

    deadline = time.monotonic() + 15       # inotify, or the periodic rescan
    while (not daemon.queue_ids() or drops()) and time.monotonic() < deadline:
        time.sleep(0.05)
    ids = daemon.queue_ids()
    assert len(ids) == 1, daemon.log()
    fields, rcpts, data = daemon.queue_file(ids[0])
    assert fields["sender"] == "local@a.example"
    assert rcpts == ["r@b.example"]
    assert b"hello\r\n" in data
    assert drops() == []


def test_user_privilege_drop(tmp_path):
    if os.getuid() != 0:
        pytest.skip("needs root to switch users")
    # pytest's tmp_path lives under a 0700 directory that nobody cannot enter
    base = tempfile.mkdtemp(prefix="stsrelay-user-")
    os.chmod(base, 0o755)
    d = Daemon(base, user="nobody").start()
    try:
        with open("/proc/%d/status" % d.proc.pid) as f:
            uids = [l for l in f if l.startswith("Uid:")][0].split()[1:]
        nobody = pwd.getpwnam("nobody").pw_uid
        assert [int(u) for u in uids] == [nobody] * 4       # real, effective, saved, fs
        qid = submit(d, "a@x.example", ["b@y.example"], b"Subject: u\r\n\r\nu\r\n")
        assert os.stat(os.path.join(d.spool, "queue", qid)).st_uid == nobody
    finally:
        try:
            assert d.stop() == 0
        finally:
            shutil.rmtree(base, ignore_errors=True)


def test_disk_full_gives_452(tmp_path):
    """A spool on a 2 MB tmpfs: a 3 MB message cannot be stored; the client
    gets 452 4.3.1, nothing is queued, the temp file is gone, and a small
    message still works."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        d = Daemon(tmp_path, spool_dir=str(mnt / "spool")).start()
        try:
            c = d.connect()
            c.open_data("c.test", "a@x.example", ["b@y.example"])
            code, text = c.cmd(b"Subject: big\r\n\r\n" + (b"z" * 1000 + b"\r\n") * 3000 + b".\r\n")
            assert code == 452 and "4.3.1" in text, text
            c.close()
            assert d.queue_ids() == []
            assert d.wait_tmp_empty(), d.tmp_files()
            qid = submit(d, "a@x.example", ["b@y.example"], b"Subject: small\r\n\r\nfits\r\n")
            assert split_received(d.queue_file(qid)[2])[1] == b"Subject: small\r\n\r\nfits\r\n"
        finally:
            assert d.stop() == 0
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_sigterm_lets_data_finish(tmp_path):
    """SIGTERM: idle sessions get 421 at once; a session in DATA may finish
    its message (250) and is then closed with 421; exit code 0."""
    d = Daemon(tmp_path).start()
    idle = d.connect()
    assert idle.reply()[0] == 220
    busy = d.connect()
    assert busy.reply()[0] == 220
    assert busy.cmd("EHLO c.test")[0] == 250
    assert busy.cmd("MAIL FROM:<a@x.example>")[0] == 250
    assert busy.cmd("RCPT TO:<b@y.example>")[0] == 250
    assert busy.cmd("DATA")[0] == 354
    busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n")
    d.proc.send_signal(signal.SIGTERM)
    code, text = idle.reply()
    assert code == 421 and "4.3.2" in text
    assert idle.closed()
    busy.send(b"second half\r\n.\r\n")
    code, text = busy.reply()
    assert code == 250, text
    code, text = busy.reply()
    assert code == 421
    assert busy.closed()
    assert d.stop() == 0, d.log()
    ids = d.queue_ids()
    assert len(ids) == 1
    _, rest = split_received(d.queue_file(ids[0])[2])
    assert rest == b"Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n"
