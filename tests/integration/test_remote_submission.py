# Remote submission end to end (RFC 6409 STARTTLS + AUTH, RFC 8314 implicit
# TLS): swaks and smtplib from 127.0.0.x addresses outside mynetworks,
# delivered through stsrelay to the world's Postfix MX; refusals, the
# failure block, the certificate swap on SIGHUP and AUTH under load.
import base64
import hashlib
import json
import os
import random
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import time

import pytest

from faults_util import SAN_ENV, assert_no_sanitizer_report
from smtp_util import RawSMTP
from tests.world import free_port

HOST = "relay.world.test"  # the Relay runner's hostname: the certificate's name
DOMAIN = "example.test"
MX = "mx.example.test"
SENDER = "app@client.world.test"
LOAD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "auth_load.py")
PASSWORDS = {"alice": "alice secret 1", "bob": "b0b:pass word"}


class Sources:
    """Client addresses 127.0.0.x (mynetworks is 127.0.0.1/32 here), each
    handed out once per test: a failure block on one never touches the
    next check."""

    def __init__(self):
        self.left = random.sample(range(10, 250), 200)

    def next(self):
        return "127.0.0.%d" % self.left.pop()


class Submission:
    def __init__(self, world, relay, **extra):
        self.world = world
        self.pf = world.postfix([DOMAIN], [MX])
        world.mx(DOMAIN, [MX])
        self.dir = os.path.join(world.dir, "submission")
        os.makedirs(self.dir)
        self.cert = os.path.join(self.dir, "cert.pem")
        self.key = os.path.join(self.dir, "key.pem")
        self.install_leaf(world.ca.leaf([HOST]))
        self.users = os.path.join(self.dir, "users")
        self.sub_port, self.smtps_port = free_port(), free_port()
        cfg = {"submission_listen": "127.0.0.1:%d" % self.sub_port,
               "smtps_listen": "127.0.0.1:%d" % self.smtps_port,
               "tls_cert_file": self.cert, "tls_key_file": self.key,
               "auth_users_file": self.users, "mynetworks": "127.0.0.1/32",
               "max_sessions": 400}
        cfg.update(extra)
        self.r = relay(cfg, start=False, env=SAN_ENV)
        self.user_add("alice", "--sender", "*@client.world.test", "--sender",
                      "boss@elsewhere.test")
        self.user_add("bob")
        self.r.start()
        self.sources = Sources()

    def install_leaf(self, leaf):
        """Writes the certificate and key in place (what certbot's renewal
        does to the files the config names)."""
        for src, dst in ((leaf.cert, self.cert), (leaf.key, self.key)):
            shutil.copyfile(src, dst + ".new")
            os.replace(dst + ".new", dst)
        with open(leaf.cert, "rb") as f:
            return hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read().decode())).hexdigest()

    def user_add(self, name, *senders):
        p = self.r.cli("user", "add", name, *senders,
                       input=(PASSWORDS[name] + "\n").encode())
        assert p.returncode == 0, p
        return p

    def context(self):
        return ssl.create_default_context(cafile=self.world.ca.ca_file)

    def swaks(self, src, *args, to="rcpt@" + DOMAIN, sender=SENDER, timeout=60):
        """swaks from src to the submission port: (exit code, output)."""
        p = subprocess.run(
            ["swaks", "--server", "127.0.0.1", "--port", str(self.sub_port),
             "--local-interface", src, "--helo", "app.client.test", "--from", sender,
             "--to", to, "--timeout", "20", "--tls-ca-path", self.world.ca.ca_file]
            + list(args), capture_output=True, timeout=timeout)
        return p.returncode, p.stdout.decode(errors="replace") + p.stderr.decode(
            errors="replace")

    def auth_args(self, mech, user="alice", password=None):
        return ["--tls", "--tls-verify", "--auth", mech, "--auth-user", user,
                "--auth-password", PASSWORDS[user] if password is None else password]


@pytest.fixture
def make_sub(world, relay):
    """Submission(world, relay, **config); each one is stopped at the end:
    exit 0 and no sanitizer report (sessions of every kind were open)."""
    made = []

    def make(**extra):
        made.append(Submission(world, relay, **extra))
        return made[-1]
    yield make
    for s in made:
        assert s.r.stop() == 0, s.r.log(4000)
        assert_no_sanitizer_report(s.r.log())


@pytest.fixture
def sub(make_sub):
    return make_sub()


def queued_id(out):
    m = re.findall(r"<~  250 2\.0\.0 Ok: queued as ([0-9A-F]{12})", out)
    assert len(m) == 1, out[-3000:]
    return m[0]


def stsrelay_received(msg):
    """The Received: header stsrelay added (the one below Postfix's)."""
    recs = [r for r in msg.received() if "(stsrelay)" in r]
    assert len(recs) == 1, msg.received()
    return " ".join(recs[0].split())


def test_swaks_plain_and_login_delivered_to_the_mx(sub):
    r, pf = sub.r, sub.pf
    for mech, user, rcpt in (("PLAIN", "alice", "p@" + DOMAIN), ("LOGIN", "bob", "l@" + DOMAIN)):
        src = sub.sources.next()
        rc, out = sub.swaks(src, *sub.auth_args(mech, user), to=rcpt)
        assert rc == 0, out
        # AUTH is offered inside TLS only, with both mechanisms
        assert re.search(r"<~  250-AUTH PLAIN LOGIN", out), out
        assert "<~  235 2.7.0 Authentication successful" in out, out
        qid = queued_id(out)
        msg = pf.wait_messages(rcpt, timeout=30)[0]
        rec = stsrelay_received(msg)
        assert "from app.client.test (unknown [%s])" % src in rec, rec
        assert "with ESMTPSA id %s" % qid in rec, rec
        assert "Authenticated sender" not in rec, rec   # received_show_auth = no
        assert pf.tls_received(msg)    # stsrelay -> Postfix over TLS too
        line = r.wait_log(r"%s: client=unknown\[%s\]" % (qid, re.escape(src)))[0]
        assert "sasl_method=%s, sasl_username=%s" % (mech, user) in line, line
        log = r.log()
        assert "status=sent" in log
    # never a password in the log, in whatever form the client sent it
    log = r.log()
    for user, pw in PASSWORDS.items():
        assert pw not in log
        for form in (pw.encode(), b"\0%s\0%s" % (user.encode(), pw.encode())):
            assert base64.b64encode(form).decode() not in log


def test_received_names_the_user_only_when_configured(sub):
    r = sub.r
    r.config["received_show_auth"] = True
    r.reload()
    r.wait_log(r"reload: auth_users_file .*: 2 user\(s\)")
    rc, out = sub.swaks(sub.sources.next(), *sub.auth_args("PLAIN"), to="shown@" + DOMAIN)
    assert rc == 0, out
    rec = stsrelay_received(sub.pf.wait_messages("shown@" + DOMAIN, timeout=30)[0])
    assert "(Authenticated sender: alice)" in rec and "with ESMTPSA" in rec, rec


def test_mynetworks_client_over_starttls_without_auth_gets_esmtps(sub):
    """127.0.0.1 is mynetworks: on the submission port it still needs TLS
    before MAIL, but not AUTH; the header says ESMTPS (RFC 3848)."""
    with smtplib.SMTP("127.0.0.1", sub.sub_port, local_hostname="local.test",
                      timeout=30) as s:
        s.ehlo()
        assert s.has_extn("starttls") and not s.has_extn("auth")
        code, text = s.mail(SENDER)
        assert code == 530 and b"STARTTLS" in text, (code, text)
        s.rset()
        s._host = HOST
        s.starttls(context=sub.context())
        s.ehlo()
        assert s.has_extn("auth")
        assert s.sendmail(SENDER, ["local@" + DOMAIN], b"Subject: local\r\n\r\nhi\r\n") == {}
    rec = stsrelay_received(sub.pf.wait_messages("local@" + DOMAIN, timeout=30)[0])
    assert "with ESMTPS id" in rec and "ESMTPSA" not in rec, rec


def test_refusals_530_535_553_538(sub):
    src = sub.sources.next()
    # without TLS: STARTTLS offered, AUTH not
    rc, out = sub.swaks(src, "--auth", "PLAIN", "--auth-user", "alice", "--auth-password",
                        PASSWORDS["alice"])
    assert rc != 0
    assert "<-  250-STARTTLS" in out and "AUTH" not in "".join(
        l for l in out.splitlines() if l.startswith("<-  250")), out
    assert "Host did not advertise authentication" in out, out
    c = RawSMTP("127.0.0.1", sub.sub_port, timeout=20, source=src)
    assert c.reply()[0] == 220
    assert c.cmd("EHLO raw.test")[0] == 250
    code, text = c.cmd("AUTH PLAIN " + base64.b64encode(b"\0alice\0x").decode())
    assert code == 538 and "5.7.11" in text, text
    code, text = c.cmd("MAIL FROM:<%s>" % SENDER)
    assert code == 530 and "5.7.0" in text, text
    c.cmd("QUIT")
    # TLS but no AUTH: 530
    rc, out = sub.swaks(src, "--tls", "--tls-verify")
    assert rc != 0
    assert re.search(r"<~\* 530 5\.7\.0 Authentication required", out), out
    # a bad password: 535 (after the failure delay)
    t0 = time.monotonic()
    rc, out = sub.swaks(src, *sub.auth_args("PLAIN", password="wrong"))
    assert rc != 0
    assert time.monotonic() - t0 >= 1.0
    assert re.search(r"<~\* 535 5\.7\.8 Error: authentication failed", out), out
    sub.r.wait_log(r"unknown\[%s\]: SASL PLAIN authentication failed: authentication "
                   r"failure, sasl_username=alice$" % re.escape(src))
    # a sender alice may not use: 553; a listed address and bob (any) pass
    rc, out = sub.swaks(src, *sub.auth_args("LOGIN"), sender="mallory@other.test")
    assert rc != 0
    assert re.search(r"<~\* 553 5\.7\.1 <mallory@other\.test>: Sender address rejected: "
                     r"not owned by user alice", out), out
    rc, out = sub.swaks(src, *sub.auth_args("LOGIN"), sender="boss@elsewhere.test",
                        to="boss@" + DOMAIN)
    assert rc == 0, out
    rc, out = sub.swaks(src, *sub.auth_args("PLAIN", "bob"), sender="any@other.test",
                        to="bob@" + DOMAIN)
    assert rc == 0, out
    assert len(sub.pf.wait_messages(domain=DOMAIN, count=2, timeout=30)) == 2
    assert "NOQUEUE: reject: MAIL from unknown[%s]: 553 5.7.1" % src in sub.r.log()


def test_auth_lines_are_bounded(sub):
    """An AUTH command or SASL response over 1000 octets is refused whole
    (not a failed authentication); the session goes on."""
    c = RawSMTP("127.0.0.1", sub.sub_port, timeout=20, source=sub.sources.next())
    assert c.reply()[0] == 220
    assert c.cmd("EHLO raw.test")[0] == 250
    assert c.cmd("STARTTLS")[0] == 220
    c.sock = sub.context().wrap_socket(c.sock, server_hostname=HOST)
    assert c.cmd("EHLO raw.test")[0] == 250
    code, text = c.cmd("AUTH PLAIN " + "A" * 2000)
    assert code == 500, text
    assert c.cmd("AUTH LOGIN")[0] == 334
    code, text = c.cmd("B" * 5000)
    assert code == 500 and "5.5.6" in text, text
    token = base64.b64encode(b"\0alice\0" + PASSWORDS["alice"].encode()).decode()
    assert c.cmd("AUTH PLAIN " + token)[0] == 235
    assert c.cmd("MAIL FROM:<%s>" % SENDER)[0] == 250
    c.cmd("QUIT")
    assert "authentication failed" not in sub.r.log()


def test_five_failures_block_the_address_with_421(sub):
    src, other = sub.sources.next(), sub.sources.next()
    for i in range(5):
        rc, out = sub.swaks(src, *sub.auth_args("LOGIN", password="guess%d" % i))
        assert re.search(r"<~\* 535 5\.7\.8", out), (i, out)
    sub.r.wait_log(r"5 failed authentications: AUTH and new sessions from %s refused"
                   % re.escape(src))
    # the next session from that address: 421 at the greeting
    rc, out = sub.swaks(src, *sub.auth_args("LOGIN"))
    assert rc != 0
    assert re.search(r"<\*\* 421 4\.7\.0 .*too many failed authentications", out), out
    c = RawSMTP("127.0.0.1", sub.smtps_port, timeout=20, source=src)
    s = sub.context().wrap_socket(c.sock, server_hostname=HOST)
    assert s.recv(200).startswith(b"421 4.7.0 ")  # smtps: inside TLS, so it can be read
    s.close()
    # another address is not affected, nor the right password from it
    rc, out = sub.swaks(other, *sub.auth_args("LOGIN"), to="after@" + DOMAIN)
    assert rc == 0, out
    assert sub.pf.wait_messages("after@" + DOMAIN, timeout=30)


def test_sessions_per_ip_limit(make_sub):
    sub = make_sub(max_sessions_per_ip=3)
    src = sub.sources.next()
    conns = [RawSMTP("127.0.0.1", sub.sub_port, timeout=20, source=src) for _ in range(3)]
    for c in conns:
        assert c.reply()[0] == 220
    extra = RawSMTP("127.0.0.1", sub.sub_port, timeout=20, source=src)
    code, text = extra.reply()
    assert code == 421 and "too many connections from %s" % src in text, text
    assert extra.closed()
    # mynetworks is not limited; the limit counts open sessions only
    local = [RawSMTP("127.0.0.1", sub.sub_port, timeout=20) for _ in range(4)]
    for c in local:
        assert c.reply()[0] == 220
    conns[0].cmd("QUIT")
    assert conns[0].closed()
    again = RawSMTP("127.0.0.1", sub.sub_port, timeout=20, source=src)
    assert again.reply()[0] == 220
    sub.r.wait_log(r"Connection concurrency limit exceeded: 4 from unknown\[%s\] for "
                   r"service submission" % re.escape(src))


class SMTPS(smtplib.SMTP_SSL):
    """smtplib's SMTP_SSL connecting to an address but checking the
    certificate against HOST (the name a client would have used)."""

    def _get_socket(self, host, port, timeout):
        sock = socket.create_connection((host, port), timeout, self.source_address)
        return self.context.wrap_socket(sock, server_hostname=HOST)


def peer_fingerprint(smtp):
    return hashlib.sha256(smtp.sock.getpeercert(binary_form=True)).hexdigest()


def test_smtps_and_certificate_swap_on_sighup(sub):
    r, ctx = sub.r, sub.context()
    with open(sub.cert, "rb") as f:
        old = hashlib.sha256(ssl.PEM_cert_to_DER_cert(f.read().decode())).hexdigest()
    src = sub.sources.next()
    a = SMTPS("127.0.0.1", sub.smtps_port, local_hostname="a.test", timeout=30,
                         context=ctx, source_address=(src, 0))
    try:
        assert peer_fingerprint(a) == old
        a.ehlo()
        assert not a.has_extn("starttls") and a.has_extn("auth")
        a.login("alice", PASSWORDS["alice"])
        # mid-session: a new certificate (another name set) and SIGHUP
        new = sub.install_leaf(sub.world.ca.leaf([HOST, "smtp.world.test"]))
        assert new != old
        r.reload()
        r.wait_log(r"reload: submission certificate %s" % re.escape(sub.cert))
        # the open session goes on with what it has
        assert a.sendmail(SENDER, ["open@" + DOMAIN], b"Subject: open\r\n\r\nkept\r\n") == {}
        assert peer_fingerprint(a) == old
    finally:
        a.quit()
    with SMTPS("127.0.0.1", sub.smtps_port, timeout=30, context=ctx,
                          source_address=(src, 0)) as b:
        assert peer_fingerprint(b) == new
        b.login("bob", PASSWORDS["bob"])
        assert b.sendmail(SENDER, ["next@" + DOMAIN], b"Subject: next\r\n\r\nnew\r\n") == {}
    for rcpt in ("open@" + DOMAIN, "next@" + DOMAIN):
        rec = stsrelay_received(sub.pf.wait_messages(rcpt, timeout=30)[0])
        assert "with ESMTPSA" in rec and "using TLSv1.3" in rec, rec
    # a bad certificate on reload: logged, the previous one stays
    with open(sub.cert, "w") as f:
        f.write("not a certificate\n")
    r.reload()
    r.wait_log(r"reload: .*new sessions keep the previous certificate")
    with SMTPS("127.0.0.1", sub.smtps_port, timeout=30, context=ctx,
                          source_address=(src, 0)) as c:
        assert peer_fingerprint(c) == new
    # and smtps refuses to talk in plaintext
    p = RawSMTP("127.0.0.1", sub.smtps_port, timeout=10, source=src)
    p.send(b"EHLO plain.test\r\n")
    assert p.closed()


def test_200_concurrent_auth_do_not_block_the_loop(sub):
    """200 sessions send AUTH PLAIN at once (200 yescrypt checks, in the
    thread pool two at a time); meanwhile a plain submission on `listen`
    from mynetworks gets every reply within 100 ms."""
    sources = [sub.sources.next() for _ in range(8)]  # 25 each, under max_sessions_per_ip
    load = subprocess.Popen(
        [sys.executable, LOAD, "--host", "127.0.0.1", "--port", str(sub.sub_port),
         "--ca", sub.world.ca.ca_file, "--name", HOST, "--user", "alice",
         "--password", PASSWORDS["alice"], "--sessions", "200", "--sources", ",".join(sources)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert load.stdout.readline().strip() == b"ready"
        sent = load.stdout.readline().split()
        assert sent[0] == b"sent", sent
        time.sleep(0.05)  # the AUTH lines are in; checks are queued
        lat = []
        start = time.monotonic()
        c = RawSMTP(sub.r.host, sub.r.port, timeout=10)

        def timed(line=None):
            t = time.monotonic()
            code, text = c.reply() if line is None else c.cmd(line)
            lat.append((line, time.monotonic() - t))
            return code, text
        lat_connect = time.monotonic() - start
        assert timed()[0] == 220
        assert timed("EHLO local.test")[0] == 250
        assert timed("MAIL FROM:<%s>" % SENDER)[0] == 250
        assert timed("RCPT TO:<during@%s>" % DOMAIN)[0] == 250
        assert timed("DATA")[0] == 354
        code, text = timed(b"Subject: during the AUTH burst\r\n\r\nquick\r\n.\r\n")
        assert code == 250, text
        done = time.monotonic()
        c.cmd("QUIT")
        out, err = load.communicate(timeout=180)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    assert load.returncode == 0, (out, err)
    res = json.loads(out.decode().strip().splitlines()[-1])
    assert res["codes"] == [235] * 200, res["lines"]
    # the submission really ran while checks were still going on
    assert sum(1 for t in res["times"] if t > done) >= 20, (done, sorted(res["times"])[-5:])
    worst = max(l for _, l in lat)
    print("connect %.1f ms, replies %s ms; 235s from %.3f to %.3f s after ours" % (
        lat_connect * 1000, ["%.1f" % (l * 1000) for _, l in lat],
        min(res["times"]) - done, max(res["times"]) - done))
    assert lat_connect < 0.1 and worst < 0.1, (lat_connect, lat)
    assert sub.pf.wait_messages("during@" + DOMAIN, timeout=30)


def test_user_command_add_list_del(sub):
    r = sub.r
    p = r.cli("user", "list", "--json")
    assert p.returncode == 0, p
    doc = json.loads(p.stdout)
    assert doc["file"] == sub.users
    assert doc["users"] == [
        {"name": "alice", "scheme": "yescrypt",
         "senders": ["*@client.world.test", "boss@elsewhere.test"]},
        {"name": "bob", "scheme": "yescrypt", "senders": []}], doc
    text = open(sub.users).read()
    assert "alice secret" not in text
    assert re.search(r"^alice:\$y\$[^:]+:\*@client\.world\.test,boss@elsewhere\.test$", text,
                     re.M), text
    assert os.stat(sub.users).st_mode & 0o777 == 0o640
    p = r.cli("user", "del", "nobody-here")
    assert p.returncode == 67, p
    p = r.cli("user", "add", "bad:name", input=b"pw\n")
    assert p.returncode == 65, p
    assert r.cli("user", "del", "bob").returncode == 0
    r.reload()
    r.wait_log(r"reload: auth_users_file .*: 1 user\(s\)")
    rc, out = sub.swaks(sub.sources.next(), *sub.auth_args("PLAIN", "bob"))
    assert re.search(r"<~\* 535 5\.7\.8", out), out
    # an unknown name is not logged (it may be a password typed there)
    assert re.search(r"SASL PLAIN authentication failed: authentication failure$",
                     r.log(), re.M), r.log()[-2000:]


def test_check_loads_certificate_key_and_users(sub):
    r = sub.r
    p = r.cli("check")
    assert p.returncode == 0, p
    # the key of another certificate: refused, naming the key
    shutil.copyfile(sub.world.ca.leaf(["other.world.test"]).key, sub.key)
    p = r.cli("check")
    assert p.returncode == 78, p
    assert re.search(rb"tls_key_file", p.stderr), p.stderr
    # and the running daemon keeps its certificate when reloaded with it
    r.reload()
    r.wait_log(r"reload: .*new sessions keep the previous certificate")
    with open(sub.users, "a") as f:
        f.write("carol:not-a-hash\n")
    p = r.cli("check")
    assert p.returncode == 78, p
    assert ("%s:3:" % sub.users).encode() in p.stderr, p.stderr
    # one loader (smtp_users_load) for check, `stsrelay user` and the daemon:
    # the same line named by each, and the running table kept on reload
    p = r.cli("user", "list")
    assert p.returncode == 78, p
    assert ("%s:3:" % sub.users).encode() in p.stderr, p.stderr
    assert b"fix it by hand" in p.stderr, p.stderr
    r.reload()
    r.wait_log(r"%s:3:" % re.escape(sub.users))
    # over the size limit: refused by all three with the same words
    with open(sub.users, "a") as f:
        f.write("#" * (4 * 1024 * 1024) + "\n")
    for args, code in ((("check",), 78), (("user", "list"), 74)):
        p = r.cli(*args)
        assert p.returncode == code, p
        assert b"larger than 4 MiB" in p.stderr, p.stderr
    # missing: a warning for check (nobody can authenticate), an empty list
    os.unlink(sub.users)
    p = r.cli("check")  # still 78: the wrong key from above
    assert b"does not exist: nobody can authenticate" in p.stderr, p.stderr
    p = r.cli("user", "list", "--json")
    assert p.returncode == 0, p
    assert json.loads(p.stdout)["users"] == [], p.stdout
