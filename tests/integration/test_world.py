# Self-test of the test world: each peer (Unbound, nginx, Postfix, the fake
# MX, the relay runner) does what the relay's integration tests rely on.
import smtplib
import socket
import ssl
import subprocess
import sys
import textwrap

import dnslib
import pytest

from tests.world import WorldError, free_port, policy_text


def txt_strings(rr):
    return [bytes(x) for x in rr.rdata.data]


# --- DNS -------------------------------------------------------------------

def test_dns_records_long_txt_live_changes_and_failures(world):
    dns = world.dns
    world.mx("example.test", ["mx1.example.test", "mx2.example.test"])
    ip = world.host("mx1.example.test")
    long_txt = "v=STSv1; id=" + "a" * 300 + ";"
    dns.add("_mta-sts.example.test", "TXT", long_txt)

    r = dns.query("example.test", "MX")
    assert sorted((x.rdata.preference, str(x.rdata.label)) for x in r.rr) == [
        (10, "mx1.example.test."), (20, "mx2.example.test.")]
    assert [str(x.rdata) for x in dns.query("mx1.example.test", "A").rr] == [ip]

    # >255 bytes arrive as two character-strings that join to the record.
    rr = dns.query("_mta-sts.example.test", "TXT").rr
    assert len(rr) == 1
    parts = txt_strings(rr[0])
    assert [len(p) for p in parts] == [255, len(long_txt) - 255]
    assert b"".join(parts).decode() == long_txt

    # Unknown names under test. are NXDOMAIN, not a timeout.
    assert dns.query("nothing.example.test", "MX").header.rcode == dnslib.RCODE.NXDOMAIN

    # Live changes through unbound-control, while Unbound keeps running.
    pid = dns.proc.pid
    dns.add("_mta-sts.example.test", "TXT", "v=STSv1; id=2;")
    assert len(dns.query("_mta-sts.example.test", "TXT").rr) == 2
    dns.remove("_mta-sts.example.test", "TXT", long_txt)
    rr = dns.query("_mta-sts.example.test", "TXT").rr
    assert [b"".join(txt_strings(x)) for x in rr] == [b"v=STSv1; id=2;"]
    dns.set("example.test", "MX", ["5 other.example.test."])
    assert [str(x.rdata.label) for x in dns.query("example.test", "MX").rr] == ["other.example.test."]
    assert dns.proc.pid == pid and dns.proc.poll() is None

    # Failures on demand, and back.
    dns.add("broken.test", "MX", "10 mx.broken.test.")
    dns.fail("broken.test", "servfail")
    assert dns.query("broken.test", "MX").header.rcode == dnslib.RCODE.SERVFAIL
    assert dns.query("x.broken.test", "A").header.rcode == dnslib.RCODE.SERVFAIL
    dns.fail("broken.test", "timeout")
    with pytest.raises(socket.timeout):
        dns.query("broken.test", "MX", timeout=1)
    dns.unfail("broken.test")
    assert [str(x.rdata.label) for x in dns.query("broken.test", "MX").rr] == ["mx.broken.test."]
    # Names outside test. never leave loopback: SERVFAIL from the fake upstream.
    assert dns.query("example.com", "A").header.rcode == dnslib.RCODE.SERVFAIL


def test_dns_over_tcp_and_ipv6(world):
    world.dns.add("t.test", "TXT", "hello")
    r = world.dns.query("t.test", "TXT", tcp=True)
    assert txt_strings(r.rr[0]) == [b"hello"]
    if world.dns.ipv6:
        q = dnslib.DNSRecord.question("t.test", "TXT")
        r = dnslib.DNSRecord.parse(q.send("::1", world.dns.port, timeout=3, ipv6=True))
        assert txt_strings(r.rr[0]) == [b"hello"]


# --- policy host -----------------------------------------------------------

def curl(world, domain, *extra):
    host = "mta-sts." + domain
    p = subprocess.run(
        ["curl", "-sS", "-D", "-", "--max-time", "10", "--cacert", world.ca.ca_file,
         "--resolve", "%s:%d:127.0.0.1" % (host, world.https.port)] + list(extra) +
        [world.https.url(domain)], capture_output=True, timeout=20)
    head, _, body = p.stdout.partition(b"\r\n\r\n")
    return p.returncode, head.decode(errors="replace"), body, p.stderr.decode(errors="replace")


def test_policy_host_variants(world):
    h = world.https
    pol = policy_text("enforce", ["mx1.good.test", "*.good.test"], 604800)
    world.sts("good.test", mx=["mx1.good.test", "*.good.test"], max_age=604800)
    with h.batch():
        h.serve("html.test", pol, content_type="text/html")
        h.serve("redir.test", redirect="https://mta-sts.good.test/.well-known/mta-sts.txt")
        h.serve("missing.test", status=404)
        h.serve("big.test", pol, oversize=70000)
        h.serve("expired.test", pol, cert_kind="expired")
        h.serve("untrusted.test", pol, cert_kind="untrusted")

    rc, head, body, _ = curl(world, "good.test")
    assert rc == 0 and head.startswith("HTTP/1.1 200")
    assert "Content-Type: text/plain" in head
    assert body == pol.encode()
    # world.sts also publishes the TXT record and the policy host's address
    txt = world.dns.query("_mta-sts.good.test", "TXT").rr
    assert b"".join(txt_strings(txt[0])).startswith(b"v=STSv1; id=")
    assert [str(x.rdata) for x in world.dns.query("mta-sts.good.test", "A").rr] == ["127.0.0.1"]

    rc, head, body, _ = curl(world, "html.test")
    assert rc == 0 and "Content-Type: text/html" in head and body == pol.encode()

    rc, head, _, _ = curl(world, "redir.test")
    assert rc == 0 and head.startswith("HTTP/1.1 301")
    assert "Location: https://mta-sts.good.test/.well-known/mta-sts.txt" in head

    rc, head, _, _ = curl(world, "missing.test")
    assert rc == 0 and head.startswith("HTTP/1.1 404")

    rc, head, body, _ = curl(world, "big.test")
    assert rc == 0 and len(body) == 70000 and body.startswith(pol.encode())

    rc, _, _, err = curl(world, "expired.test")
    assert rc == 60 and "expired" in err
    rc, _, _, err = curl(world, "untrusted.test")
    assert rc == 60

    # A name without a server block gets the default certificate.
    rc, _, _, err = curl(world, "nosuch.test")
    assert rc == 60 and "nosuch" in err

    # The access log counts fetches per domain.
    assert h.fetch_count("good.test", 1) == 1
    curl(world, "good.test")
    assert h.fetch_count("good.test", 2) == 2
    assert h.fetch_count("html.test", 1) == 1
    assert h.fetch_count("expired.test") == 0  # TLS failed: no request

    # Changing a policy reloads nginx; unserve removes the server block.
    world.sts("good.test", mode="testing", mx=["mx1.good.test"])
    _, _, body, _ = curl(world, "good.test")
    assert b"mode: testing" in body
    h.unserve("good.test")
    rc, _, _, _ = curl(world, "good.test")
    assert rc == 60


# --- Postfix MX ------------------------------------------------------------

def swaks(world, ip, to, ca_file, *extra):
    return subprocess.run(
        ["swaks", "--server", ip, "--port", str(world.smtp_port), "--to", to,
         "--from", "sender@client.test", "--helo", "client.test", "--tls", "--tls-verify",
         "--tls-ca-path", ca_file, "--timeout", "10",
         "--header", "Subject: world self-test"] + list(extra),
        capture_output=True, timeout=30)


def test_postfix_delivers_over_tls_to_maildir(world):
    pf = world.postfix(["pf.test", "pf2.test"], ["mx1.pf.test", "mx2.pf.test"])
    world.mx("pf.test", ["mx1.pf.test", "mx2.pf.test"])
    for n, host in enumerate(["mx1.pf.test", "mx2.pf.test"]):
        rcpt = "user%d@pf.test" % n
        p = swaks(world, world.ips[host], rcpt, world.ca.ca_file, "--tls-sni", host)
        assert p.returncode == 0, p.stdout.decode(errors="replace")
        msgs = pf.wait_messages(rcpt, timeout=15)
        assert len(msgs) == 1
        m = msgs[0]
        assert m.recipient == rcpt
        assert m.msg["Subject"] == "world self-test"
        rec = m.received()[0]
        assert "with ESMTPS" in rec and "by %s (Postfix)" % host in rec, rec
        assert pf.tls_received(m)
    # Each MX presents its own certificate (SAN = its name).
    ctx = ssl.create_default_context(cafile=world.ca.ca_file)
    with smtplib.SMTP(world.ips["mx2.pf.test"], world.smtp_port, timeout=10) as s:
        s._host = "mx2.pf.test"  # smtplib uses it for SNI and the name check
        s.starttls(context=ctx)
        assert s.sock.version() in ("TLSv1.2", "TLSv1.3")
    with pytest.raises(ssl.SSLCertVerificationError):
        with smtplib.SMTP(world.ips["mx2.pf.test"], world.smtp_port, timeout=10) as s:
            s._host = "mx1.pf.test"
            s.starttls(context=ctx)
    # swaks really verifies: a CA that did not sign the MX cert fails.
    p = swaks(world, world.ips["mx1.pf.test"], "x@pf.test", world.ca.other_file)
    assert p.returncode != 0
    assert pf.messages("x@pf.test") == []
    # The second domain has its own maildir.
    p = swaks(world, world.ips["mx1.pf.test"], "y@pf2.test", world.ca.ca_file)
    assert p.returncode == 0
    assert len(pf.wait_messages("y@pf2.test")) == 1
    assert len(pf.messages(domain="pf.test")) == 2


def test_two_postfix_instances_and_no_tls_option(world):
    a = world.postfix(["a.test"], ["mx.a.test"])
    b = world.postfix(["b.test"], ["mx.b.test"],
                      host_options={"mx.b.test": {"smtpd_tls_security_level": "none"}})
    with smtplib.SMTP(world.ips["mx.b.test"], world.smtp_port, timeout=10) as s:
        s.ehlo("client.test")
        assert not s.has_extn("starttls")
        s.sendmail("s@client.test", ["r@b.test"], b"Subject: plain\r\n\r\nhi\r\n")
    m = b.wait_messages("r@b.test")[0]
    assert "with ESMTP " in m.received()[0] and not b.tls_received(m)
    assert a.messages() == []
    assert a.master_pid != b.master_pid


def test_postfix_sasl_submission_server(world):
    """sasl_users: AUTH (Cyrus SASL, sasldb2 by saslpasswd2) only after
    STARTTLS, nothing relayed without it, a wrong password 535."""
    port = free_port()
    pf = world.postfix(["sub.test"], ["smtp.sub.test"], port=port,
                       sasl_users={"u1": "pass word:1"})
    ip = world.ips["smtp.sub.test"]
    with smtplib.SMTP(ip, port, timeout=10) as s:
        s.ehlo("client.test")
        assert not s.has_extn("auth")          # smtpd_tls_auth_only
        code, _ = s.docmd("AUTH", "PLAIN AHUxAHBhc3Mgd29yZDox")
        assert code == 503 or code == 538, code
        s.mail("s@client.test")
        assert s.rcpt("r@sub.test")[0] == 554   # no relaying without AUTH
    base = ["swaks", "--server", ip, "--port", str(port), "--to", "r@sub.test",
            "--from", "s@client.test", "--helo", "client.test", "--tls", "--tls-verify",
            "--tls-ca-path", world.ca.ca_file, "--tls-sni", "smtp.sub.test",
            "--timeout", "10", "--header", "Subject: sasl self-test", "--auth", "PLAIN",
            "--auth-user", "u1"]
    p = subprocess.run(base + ["--auth-password", "wrong"], capture_output=True, timeout=30)
    assert p.returncode != 0 and b"535 5.7.8" in p.stdout, p.stdout
    p = subprocess.run(base + ["--auth-password", "pass word:1"], capture_output=True,
                       timeout=30)
    assert p.returncode == 0, p.stdout.decode(errors="replace")
    m = pf.wait_messages("r@sub.test")[0]
    assert "with ESMTPSA" in m.received()[0], m.received()[0]
    assert "sasl_method=PLAIN, sasl_username=u1@" in pf.log()
    assert len(pf.messages()) == 1


# --- fake MX ---------------------------------------------------------------

def _client(mx, timeout=5):
    return smtplib.SMTP(mx.ip, mx.port, local_hostname="client.test", timeout=timeout)


def test_fake_mx_records_plaintext_and_tls(world):
    mx = world.fake_mx("mx.fake.test")
    ctx = ssl.create_default_context(cafile=world.ca.ca_file)
    with _client(mx) as s:
        s._host = "mx.fake.test"
        s.starttls(context=ctx)
        s.ehlo("client.test")
        s.sendmail("a@client.test", ["b@fake.test"], b"Subject: secret-subject\r\n\r\nbody\r\n")
    sess = mx.wait_sessions(1)[0]
    assert sess.tls_version in ("TLSv1.2", "TLSv1.3") and sess.sni == "mx.fake.test"
    assert b"secret-subject" not in bytes(sess.plain)
    assert bytes(sess.plain).upper().endswith(b"STARTTLS\r\n")
    assert b"secret-subject" in bytes(sess.tls_bytes)
    env = mx.messages()[0]
    assert env.tls and env.rcpts == ["b@fake.test"] and env.data.endswith(b"body\r\n")

    # No STARTTLS offered: a client that goes on sends everything in clear.
    mx.script = {"starttls": "none"}
    with _client(mx) as s:
        s.ehlo("client.test")
        assert not s.has_extn("starttls")
        s.sendmail("a@client.test", ["b@fake.test"], b"Subject: clear\r\n\r\nx\r\n")
    assert b"Subject: clear" in mx.plaintext()

    # Advertised but refused.
    mx.script = {"starttls": "refuse"}
    with _client(mx) as s:
        s.ehlo("client.test")
        assert s.has_extn("starttls")
        code, _ = s.docmd("STARTTLS")
        assert code == 454


@pytest.mark.parametrize("kind,err", [("expired", "expired"), ("wrongname", "match"),
                                      ("selfsigned", "self-signed"),
                                      ("untrusted", "local issuer")])
def test_fake_mx_bad_certificates(world, kind, err):
    mx = world.fake_mx("mx.cert.test", {"cert": world.ca.leaf(["mx.cert.test"], kind)})
    ctx = ssl.create_default_context(cafile=world.ca.ca_file)
    with _client(mx) as s:
        s._host = "mx.cert.test"
        with pytest.raises(ssl.SSLCertVerificationError) as e:
            s.starttls(context=ctx)
    assert err in str(e.value)
    assert mx.wait_sessions(1)[0].sni == "mx.cert.test"


def test_fake_mx_reply_codes_hangs_and_disconnects(world):
    mx = world.fake_mx("mx.script.test", [
        {"reply": {"banner": "421 4.3.2 go away"}},
        {"reply": {"rcpt": ["250 ok", "550 5.1.1 no such user"], "eod": "452 4.3.1 full"}},
        {"hang": "mail", "hang_seconds": 5},
        {"disconnect": "mid-data"},
        {"reply": {"ehlo": "554 5.7.1 no"}},
    ])
    with pytest.raises(smtplib.SMTPConnectError):
        _client(mx)
    with _client(mx) as s:
        with pytest.raises(smtplib.SMTPDataError) as e:
            s.sendmail("a@c.test", ["x@s.test", "y@s.test"], b"m\r\n")
        assert e.value.smtp_code == 452
    s = _client(mx, timeout=1)
    s.ehlo("client.test")
    with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
        s.mail("a@c.test")
    s.close()
    s = _client(mx)
    s.ehlo("client.test")
    s.mail("a@c.test")
    s.rcpt("x@s.test")
    s.putcmd("data")
    assert s.getreply()[0] == 354
    s.send(b"Subject: half\r\n")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        s.send(b"more\r\n" * 1000)
        s.getreply()
    s.close()
    with _client(mx) as s:
        assert s.ehlo("client.test")[0] == 554
    sessions = mx.wait_sessions(5, timeout=15)
    assert sessions[1].attempted[0].rcpts == ["x@s.test"] and sessions[1].messages == []
    assert sessions[3].attempted == [] and b"Subject: half" in bytes(sessions[3].plain)
    assert mx.messages() == []


def test_slow_peers_for_timeouts(world):
    # A fake MX that accepts STARTTLS and then never does the handshake.
    mx = world.fake_mx("mx.slow.test", {"hang": "tls", "hang_seconds": 3})
    ctx = ssl.create_default_context(cafile=world.ca.ca_file)
    s = _client(mx, timeout=1)
    s._host = "mx.slow.test"
    with pytest.raises((socket.timeout, ssl.SSLError, OSError)):
        s.starttls(context=ctx)
    s.close()
    # A policy body that trickles at 1 KB/s hits a 1 s client time-out.
    world.sts("slow.test", mx=["mx.slow.test"], oversize=10000, limit_rate=1000)
    rc, _, _, _ = curl(world, "slow.test", "--max-time", "1")
    assert rc == 28


# --- relay runner ----------------------------------------------------------

STAND_IN = textwrap.dedent("""\
    import signal, socket, sys
    # stand-in for stsrelay: `serve -c FILE`, listens where FILE says
    assert sys.argv[1:3] == ["serve", "-c"], sys.argv
    cfg = dict(l.split(" = ", 1) for l in open(sys.argv[3]).read().splitlines()
               if " = " in l and not l.startswith("#"))
    host, port = cfg["listen"].rsplit(":", 1)
    s = socket.socket(); s.bind((host, int(port))); s.listen(1)
    sys.stderr.write("stand-in up dns=%s\\n" % cfg["dns_servers"]); sys.stderr.flush()
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    signal.pause()
    """)


def test_relay_runner_with_stand_in(world, tmp_path):
    script = tmp_path / "fake-stsrelay"
    script.write_text("#!%s\n%s" % (sys.executable, STAND_IN))
    script.chmod(0o755)
    r = world.relay({"max_sessions": 7}, binary=str(script))
    assert r.running
    conf = open(r.conf).read()
    assert "dns_servers = %s" % world.dns.servers in conf
    assert "smtp_port = %d" % world.smtp_port in conf
    assert "max_sessions = 7" in conf
    assert r.wait_log(r"stand-in up dns=127\.0\.0\.1:\d+", timeout=5)
    assert r.stop() == 0
    assert not r.running
    # A daemon that never listens is reported, with its log, in bounded time.
    bad = tmp_path / "never-listens"
    bad.write_text("#!/bin/sh\necho broken config >&2\nexit 78\n")
    bad.chmod(0o755)
    with pytest.raises(WorldError, match="broken config"):
        world.relay(binary=str(bad))


def test_real_relay_starts_and_stops(world, relay):
    r = relay()
    assert r.running
    assert r.stop() == 0, r.log()


def test_free_port_is_bindable():
    p = free_port()
    s = socket.socket()
    s.bind(("127.0.0.1", p))
    s.close()
