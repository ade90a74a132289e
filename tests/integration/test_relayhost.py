# Relay host mode (issue 13 #4, DESIGN "Remote submission"): every message goes
# to one upstream, a Postfix of the world that wants AUTH over TLS (Cyrus SASL,
# sasldb2 made by saslpasswd2), over verified TLS only; the recipient domains'
# own MX (a fake MX that records every connection) is never contacted.
import base64
import datetime
import hashlib
import json
import os
import pwd
import re
import shutil
import smtplib
import subprocess
import tempfile
import time

import pytest

from serve_helpers import TEST_USER, ensure_test_user
from tests.world.util import free_ip, free_port, wait_until

USER, PASSWORD = "relayuser", "Up:stream pass 7"
DOMAINS = ["d1.test", "d2.test", "d3.test", "d4.test"]
UP = "smtp.upstream.test"              # good certificate, enforce policy of its own
WRONGNAME = "wrongname.upstream.test"  # certificate for another name
EXPIRED = "expired.upstream.test"      # expired certificate, enforce policy
SMTPS = "smtps.upstream.test"          # implicit TLS on 465
FAKE = "mx.elsewhere.test"             # the MX of every recipient domain
POLICY_ID = "20261203000001"
REFUSED = "gone@d3.test"               # the upstream says 554 5.1.1 to it
README_USER, README_PASSWORD = "apikey", "the password from the provider"
SRC = os.environ.get("STSRELAY_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))


class Up:
    """The module's world: the upstream Postfix instances and the fake MX."""


@pytest.fixture(scope="module")
def up(module_world):
    w = module_world
    u = Up()
    u.w = w
    u.port = free_port()
    # one recipient the upstream refuses for good (5xx at RCPT)
    access = os.path.join(w.dir, "rcpt_access")
    with open(access, "w") as f:
        f.write("%s REJECT 5.1.1 no such user here\n" % REFUSED)
    os.chmod(access, 0o644)
    u.pf = w.postfix(DOMAINS, [UP, WRONGNAME, EXPIRED], port=u.port,
                     main_extra={"smtpd_recipient_restrictions":
                                 "check_recipient_access texthash:%s, "
                                 "permit_sasl_authenticated, reject" % access},
                     tls={WRONGNAME: w.ca.leaf([WRONGNAME], "wrongname"),
                          EXPIRED: w.ca.leaf([EXPIRED], "expired")},
                     sasl_users={USER: PASSWORD, README_USER: README_PASSWORD})
    # implicit TLS (RFC 8314): its own instance on port 465, same account
    w.host(SMTPS, free_ip(465, used=set(w.ips.values())))
    u.pf465 = w.postfix(DOMAINS, [SMTPS], port=465, sasl_users={USER: PASSWORD},
                        host_options={SMTPS: {"smtpd_tls_wrappermode": "yes"}})
    u.fake = w.fake_mx(FAKE)
    for d in DOMAINS:
        w.mx(d, [FAKE])
    # RFC 8461 §3.4: the relay host's own name is the policy domain
    w.sts(UP, "enforce", [UP], id=POLICY_ID)
    w.sts(EXPIRED, "enforce", [EXPIRED], id=POLICY_ID)
    # relayhost = name (no brackets): the MX hosts of that name
    w.mx("relay-mx.test", [UP])
    return u


def auth_file(tmp_path, user=USER, password=PASSWORD, mode=0o640, name="relay_auth"):
    p = tmp_path / name
    p.write_text("# relay host account\n%s:%s\n" % (user, password))
    os.chmod(p, mode)
    return str(p)


def relay_for(up, tmp_path, relayhost, password=PASSWORD, start=True, **over):
    cfg = {"relayhost": relayhost,
           "relayhost_auth_file": auth_file(tmp_path, password=password)}
    cfg.update(over)
    return up.w.relay(cfg, start=start, env={"STSRELAY_SMTP_TIMEOUT": "10"})


def submit(relay, rcpts, subject, body=None):
    """One message over SMTP; returns (queue id, the message bytes)."""
    body = body or ("Body of %s.\r\n..leading dot line\r\nend\r\n" % subject).encode()
    msg = (b"From: <app@client.test>\r\nTo: <%s>\r\nSubject: %s\r\n"
           b"Message-ID: <%d@client.test>\r\n\r\n" % (
               rcpts[0].encode(), subject.encode(), time.time_ns())) + body
    with smtplib.SMTP(relay.host, relay.port, local_hostname="client.test", timeout=30) as s:
        s.ehlo()
        assert s.mail("app@client.test")[0] == 250
        for r in rcpts:
            assert s.rcpt(r)[0] == 250
        code, text = s.data(msg)
        assert code == 250, text
        return re.search(rb"queued as ([0-9A-F]{12})", text).group(1).decode(), msg


def rcpt_lines(relay, qid, status):
    return [l for l in relay.log().splitlines()
            if (qid + ": to=<") in l and ("status=%s " % status) in l]


def wait_rcpt_lines(relay, qid, status, count, timeout=30):
    try:
        return wait_until(lambda: (lambda ls: ls if len(ls) >= count else None)(
            rcpt_lines(relay, qid, status)), timeout, error=AssertionError,
            what="%d status=%s lines of %s" % (count, status, qid))
    except AssertionError as e:
        raise AssertionError("%s\n%s" % (e, relay.log()[-4000:])) from None


def queue_entry(relay, qid):
    p = relay.cli("queue", "list", "--json")
    assert p.returncode == 0, p.stderr
    return [m for m in json.loads(p.stdout)["messages"] if m["id"] == qid][0]


def mailq_reasons(relay, qid):
    """What `mailq` (Postfix's layout) says for qid: {recipient: reason},
    the reason being the indented line under each deferred recipient."""
    p = relay.cli("mailq")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.decode().splitlines()
    start = [i for i, l in enumerate(lines) if l.startswith(qid + " ")]
    assert start, p.stdout
    out, rcpt = {}, None
    for l in lines[start[0] + 1:]:
        if not l.strip():
            break
        m = re.match(r"^ {20,}(\S+@\S+) \(deferred", l)
        if m:
            rcpt = m.group(1)
        elif rcpt is not None:
            out[rcpt] = l.strip()
    return out


def delivered(pf, rcpt, subject):
    """The message with that subject in rcpt's maildir at Postfix."""
    def find():
        for m in pf.messages(rcpt):
            if m.msg["Subject"] == subject:
                return m
        return None
    return wait_until(find, 30, error=AssertionError, what="%s for %s" % (subject, rcpt))


def body_sha(raw):
    """SHA-256 of the body after the header block, line ends as LF (Maildir)."""
    return hashlib.sha256(raw.replace(b"\r\n", b"\n").partition(b"\n\n")[2]).hexdigest()


def credentials_b64():
    return base64.b64encode(b"\0%s\0%s" % (USER.encode(), PASSWORD.encode()))


def test_all_domains_through_authenticated_upstream(up, tmp_path):
    rcpts = ["a@d1.test", "b@d2.test", "c@d3.test", "d@d4.test", "e@d1.test"]
    r = relay_for(up, tmp_path, "[%s]:%d" % (UP, up.port))
    qid, msg = submit(r, rcpts, "via upstream")
    lines = wait_rcpt_lines(r, qid, "sent", len(rcpts))
    for line in lines:
        assert "relay=%s[%s]:%d," % (UP, up.w.ips[UP], up.port) in line
        assert "tls=TLSv1.3 verified" in line
        assert "sts=enforce id=%s" % POLICY_ID in line   # the relay host's own policy
    for rc in rcpts:
        m = delivered(up.pf, rc, "via upstream")
        assert body_sha(m.raw) == body_sha(msg)
        # Postfix says how it got it: SMTP + TLS + AUTH (RFC 3848)
        assert re.search(r"\bwith ESMTPSA\b", m.received()[0]), m.received()[0]
    log = up.pf.log()
    assert "sasl_method=PLAIN, sasl_username=%s@%s" % (USER, up.pf.SASL_REALM) in log or \
        "sasl_method=PLAIN, sasl_username=%s" % USER in log, log[-3000:]
    # one transaction for all five recipients of three... four domains
    assert re.search(r"nrcpt=5 \(queue active\)", log), log[-3000:]
    # the domains' own MX never saw a connection
    assert up.fake.sessions == []
    # the credentials appear nowhere in the relay's log
    text = r.log()
    assert PASSWORD not in text and credentials_b64().decode() not in text


def test_implicit_tls_on_465(up, tmp_path):
    r = relay_for(up, tmp_path, "[%s]:465" % SMTPS)
    qid, msg = submit(r, ["f@d2.test", "g@d3.test"], "implicit tls")
    for line in wait_rcpt_lines(r, qid, "sent", 2):
        assert "relay=%s[%s]:465," % (SMTPS, up.w.ips[SMTPS]) in line
        assert re.search(r"tls=TLSv1\.[23] verified", line), line
        assert "sts=absent" in line
    m = delivered(up.pf465, "f@d2.test", "implicit tls")
    assert body_sha(m.raw) == body_sha(msg)
    assert re.search(r"\bwith ESMTPSA\b", m.received()[0])
    assert "implicit TLS" in r.log()
    assert up.fake.sessions == []


def test_mx_lookup_of_relayhost_name(up, tmp_path):
    """relayhost = name:port (no brackets): the MX hosts of that name, the
    certificate checked against the MX host's name."""
    r = relay_for(up, tmp_path, "relay-mx.test:%d" % up.port)
    qid, msg = submit(r, ["h@d4.test"], "mx lookup")
    line = wait_rcpt_lines(r, qid, "sent", 1)[0]
    assert "relay=%s[%s]:%d," % (UP, up.w.ips[UP], up.port) in line
    assert "tls=TLSv1.3 verified" in line
    assert "sts=absent" in line     # relay-mx.test publishes no policy
    assert body_sha(delivered(up.pf, "h@d4.test", "mx lookup").raw) == body_sha(msg)
    assert up.fake.sessions == []


def test_wrong_password_defers_and_sighup_fixes_it(up, tmp_path):
    before = len(up.pf.messages())
    r = relay_for(up, tmp_path, "[%s]:%d" % (UP, up.port), password="not the password",
                  retry_schedule="1h")
    qid, msg = submit(r, ["i@d1.test", "j@d2.test"], "wrong password")
    lines = wait_rcpt_lines(r, qid, "deferred", 2)
    for line in lines:
        assert "dsn=4.7.8" in line, line
        assert "SASL authentication failed; server %s[%s] said: 535 5.7.8" % (
            UP, up.w.ips[UP]) in line, line
    for rc in queue_entry(r, qid)["recipients"]:
        assert rc["status"] == "deferred"
        assert rc["last_error"].startswith("4.7.8 SASL authentication failed"), rc
    reasons = mailq_reasons(r, qid)
    assert set(reasons) == {"i@d1.test", "j@d2.test"}, reasons
    for why in reasons.values():
        assert why.startswith("4.7.8 SASL authentication failed; server %s[%s] said: 535" % (
            UP, up.w.ips[UP])), why
    assert len(up.pf.messages()) == before        # nothing was sent
    assert "not the password" not in r.log()
    assert up.fake.sessions == []
    # the right password, read again on SIGHUP: the next try delivers
    auth_file(tmp_path, password=PASSWORD)
    r.reload()
    r.wait_log(r"configuration reloaded")
    assert r.cli("queue", "flush", qid).returncode == 0
    wait_rcpt_lines(r, qid, "sent", 2)
    assert body_sha(delivered(up.pf, "j@d2.test", "wrong password").raw) == body_sha(msg)


def test_wrong_certificate_defers_and_sends_nothing(up, tmp_path):
    r = relay_for(up, tmp_path, "[%s]:%d" % (WRONGNAME, up.port), retry_schedule="1h")
    qid, _ = submit(r, ["k@d3.test"], "wrong certificate")
    line = wait_rcpt_lines(r, qid, "deferred", 1)[0]
    assert "dsn=4.7.5" in line and "sts_result=certificate-host-mismatch" in line, line
    err = queue_entry(r, qid)["recipients"][0]["last_error"]
    assert err.startswith("4.7.5 ") and "certificate-host-mismatch" in err, err
    why = mailq_reasons(r, qid)["k@d3.test"]
    assert why.startswith("4.7.5 ") and "certificate-host-mismatch" in why, why
    # Postfix saw a TLS handshake end, and neither AUTH nor MAIL
    log = [l for l in up.pf.log().splitlines() if "postfix/%s/" % WRONGNAME in l]
    assert any("connect from" in l for l in log), log
    assert not any("sasl_" in l or "authentication failed" in l or "client=" in l
                   for l in log), log
    assert not up.pf.messages("k@d3.test")
    assert up.fake.sessions == []


def test_untrusted_upstream_never_gets_credentials(module_world, up, tmp_path):
    """A peer whose certificate does not verify gets no byte of AUTH or of
    the message, in plaintext or in TLS (the fake MX records every byte)."""
    w = module_world
    fm = w.fake_mx("selfsigned.upstream.test",
                   {"cert": w.ca.leaf(["selfsigned.upstream.test"], "selfsigned")})
    r = relay_for(up, tmp_path, "[selfsigned.upstream.test]:%d" % w.smtp_port,
                  retry_schedule="1h")
    qid, _ = submit(r, ["l@d4.test"], "untrusted")
    line = wait_rcpt_lines(r, qid, "deferred", 1)[0]
    assert "dsn=4.7.5" in line and "sts_result=certificate-not-trusted" in line, line
    fm.wait_sessions(1)
    for s in fm.sessions:
        seen = bytes(s.plain) + bytes(s.tls_bytes)
        assert b"AUTH" not in seen.upper() and b"MAIL FROM" not in seen.upper(), seen
        assert credentials_b64() not in seen and PASSWORD.encode() not in seen
        assert [c for _, c in s.commands] == ["EHLO relay.world.test", "STARTTLS"], s.commands


def test_enforce_policy_of_relayhost_domain_defers_475(up, tmp_path):
    r = relay_for(up, tmp_path, "[%s]:%d" % (EXPIRED, up.port), retry_schedule="1h")
    qid, _ = submit(r, ["m@d1.test", "n@d2.test"], "enforce expired")
    for line in wait_rcpt_lines(r, qid, "deferred", 2):
        assert "dsn=4.7.5" in line, line
        assert "sts=enforce id=%s" % POLICY_ID in line, line
        assert "sts_result=certificate-expired" in line, line
    # RFC 8461 §5.2: the relay host's policy was looked at once more
    r.wait_log(r"%s: MTA-STS policy re-checked: unchanged" % re.escape(EXPIRED))
    for rc in queue_entry(r, qid)["recipients"]:
        assert rc["last_error"].startswith("4.7.5 "), rc
    # the policy fetched was the relay host's, not a recipient domain's
    assert up.w.https.fetch_count(EXPIRED) >= 1
    assert all(up.w.https.fetch_count(d) == 0 for d in DOMAINS)
    assert up.fake.sessions == []
    # TLS-RPT files the failed sessions under the relay host's name
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    p = r.cli("tlsrpt", "show", "--json", "--day", today)
    assert p.returncode == 0, p.stderr
    reports = {rep["policies"][0]["policy"]["policy-domain"]: rep
               for rep in json.loads(p.stdout)}
    assert set(reports) == {EXPIRED}, reports
    pol = reports[EXPIRED]["policies"][0]
    assert pol["policy"]["policy-type"] == "sts"
    assert pol["summary"]["total-successful-session-count"] == 0
    assert pol["summary"]["total-failure-session-count"] >= 1
    assert {f["result-type"] for f in pol["failure-details"]} == {"certificate-expired"}
    assert all(f["receiving-mx-hostname"] == EXPIRED for f in pol["failure-details"])


def test_tlsrpt_against_relayhost_and_report_via_relayhost(up, tmp_path):
    """TLS-RPT files the sessions under the relay host's name, and the
    report mail (TLS-Required: No) goes through the relay host too."""
    w = up.w
    key = tmp_path / "keys"
    key.mkdir(mode=0o700)
    key = str(key / "dkim.key")
    r = relay_for(up, tmp_path, "[%s]:%d" % (UP, up.port),
                  dkim_domain="relay.world.test", dkim_selector="s1", dkim_key_file=key,
                  tlsrpt_contact="tlsrpt@relay.world.test", start=False)
    p = r.cli("tlsrpt", "dkim-keygen", "--selector", "s1", "--out", key)
    assert p.returncode == 0, p.stderr
    r.start()
    qid, _ = submit(r, ["o@d3.test"], "for the report")
    wait_rcpt_lines(r, qid, "sent", 1)
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    p = r.cli("tlsrpt", "show", "--json", "--day", today)
    assert p.returncode == 0, p.stderr
    reports = {rep["policies"][0]["policy"]["policy-domain"]: rep
               for rep in json.loads(p.stdout)}
    assert set(reports) == {UP}, reports
    pol = reports[UP]["policies"][0]
    assert pol["policy"]["policy-type"] == "sts"
    assert pol["summary"]["total-successful-session-count"] >= 1
    assert pol["summary"]["total-failure-session-count"] == 0
    # a report to d1.test (whose MX is the fake one) goes to the relay host
    w.tlsrpt(UP, "mailto:reports@d1.test")
    p = r.cli("tlsrpt", "send", "--day", today)
    assert p.returncode == 0, p.stdout + p.stderr
    m = wait_until(lambda: [m for m in up.pf.messages("reports@d1.test")
                            if m.msg["TLS-Report-Domain"] == UP], 30,
                   error=AssertionError, what="report mail at the upstream")[0]
    assert m.msg["TLS-Required"] == "No"
    line = [l for l in r.log().splitlines()
            if "to=<reports@d1.test>" in l and "status=sent" in l][0]
    assert "relay=%s[%s]:%d," % (UP, w.ips[UP], up.port) in line
    assert "tls=TLSv1.3 verified" in line and "sts=none tls_required=no" in line
    assert up.fake.sessions == []


def test_auth_file_mode_and_check(up, tmp_path):
    """A password file other users can read: `stsrelay check` names it and
    the daemon refuses to start (78), as it refuses a file it cannot parse."""
    r = up.w.relay({"relayhost": "[%s]:%d" % (UP, up.port),
                    "relayhost_auth_file": auth_file(tmp_path, mode=0o644)}, start=False)
    p = r.cli("check")
    assert p.returncode == 78, p.stdout + p.stderr
    assert re.search(r"stsrelay\.conf:\d+: relayhost_auth_file .*other users have access to "
                     r"it \(mode 0644\)", p.stderr.decode()), p.stderr
    s = subprocess.run([r.binary, "serve", "-c", r.conf], capture_output=True, timeout=60,
                       env=r.env)
    assert s.returncode == 78, s.stderr
    out = s.stderr.decode()
    assert re.search(r"cannot start: relayhost_auth_file \S+: other users have access to it",
                     out), out
    assert PASSWORD not in out and PASSWORD not in p.stderr.decode()
    os.chmod(r.config["relayhost_auth_file"], 0o640)
    p = r.cli("check")
    assert b"relayhost_auth_file" not in p.stderr, p.stderr


def check_errors(relay, conf_lines):
    """`stsrelay check` of the relay's config with conf_lines at its end
    (replacing the keys they set): (exit code, its stderr lines about
    relayhost_auth_file, the config path)."""
    path = os.path.join(relay.dir, "check.conf")
    keys = {l.split("=")[0].strip() for l in conf_lines}
    with open(relay.conf) as f:
        base = "".join(l for l in f if l.split("=")[0].strip() not in keys)
    with open(path, "w") as f:
        f.write(base + "".join(l + "\n" for l in conf_lines))
    p = relay.cli("check", "-c", path)
    err = p.stderr.decode()
    assert PASSWORD not in err and "s3cret" not in err, err
    return p.returncode, [l for l in err.splitlines() if "relayhost_auth_file" in l], path


def test_check_validates_relayhost_auth_file(up, tmp_path):
    """`stsrelay check`: the file exists, has the format, and `user` can
    read it (tried as that user), each error as FILE:LINE: reason."""
    r = up.w.relay({"relayhost": "[%s]:%d" % (UP, up.port)}, start=False)
    n = len(open(r.conf).read().splitlines())   # the added keys follow
    d = tempfile.mkdtemp(prefix="stsrelay-relayhost-check-")
    try:
        os.chmod(d, 0o755)      # TEST_USER may enter
        missing = os.path.join(d, "missing")
        rc, lines, conf = check_errors(r, ["relayhost_auth_file = " + missing])
        assert rc == 78
        assert lines == ["%s:%d: relayhost_auth_file %s: No such file or directory" % (
            conf, n + 1, missing)], lines
        bad = os.path.join(d, "bad")
        for content, why in [("# comment\nuser-without-password\n",
                              "%s:2: " % bad),
                             ("a:s3cret\nb:s3cret\n", "%s:2: more than one credentials line" % bad),
                             ("# only a comment\n\n", "%s: no user:password line" % bad),
                             (":s3cret\n", "%s:1: " % bad)]:
            with open(bad, "w") as f:
                f.write(content)
            os.chmod(bad, 0o600)
            rc, lines, conf = check_errors(r, ["relayhost_auth_file = " + bad])
            assert rc == 78, content
            assert len(lines) == 1 and lines[0].startswith(
                "%s:%d: relayhost_auth_file %s" % (conf, n + 1, why)), (content, lines)
        # root's file, 0600: the daemon as TEST_USER could not read it
        ensure_test_user()
        good = os.path.join(d, "good")
        with open(good, "w") as f:
            f.write("%s:%s\n" % (USER, PASSWORD))
        os.chmod(good, 0o600)
        rc, lines, conf = check_errors(r, ["user = " + TEST_USER,
                                           "relayhost_auth_file = " + good])
        assert rc == 78
        assert lines == ["%s:%d: relayhost_auth_file %s is not readable by user %s: "
                         "Permission denied" % (conf, n + 2, good, TEST_USER)], lines
        os.chown(good, pwd.getpwnam(TEST_USER).pw_uid, -1)
        rc, lines, conf = check_errors(r, ["user = " + TEST_USER,
                                           "relayhost_auth_file = " + good])
        assert lines == [], lines
        # the file without relayhost: a warning, not an error
        rc, lines, conf = check_errors(r, ["relayhost =", "user = " + TEST_USER,
                                           "relayhost_auth_file = " + good])
        assert lines == ["%s:%d: warning: relayhost_auth_file is set but relayhost is not: "
                         "it is not used" % (conf, n + 2)], lines
    finally:
        shutil.rmtree(d)


def test_readme_cloud_host_config_as_written(up, tmp_path):
    """README "Cloud host with port 25 blocked": its two keys and its
    password line, only the provider's name and port swapped for the
    world's upstream, deliver through it."""
    text = open(os.path.join(SRC, "README.md")).read()
    sec = text.split("### Cloud host with port 25 blocked", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```\n(.*?)```", sec, re.S)
    keys = dict(re.match(r"^(\w+) = (\S+)$", l).groups()
                for l in blocks[0].splitlines() if l and not l.startswith("#"))
    assert keys == {"relayhost": "[smtp.example.net]:587",
                    "relayhost_auth_file": "/etc/stsrelay/relayhost_auth"}, keys
    line = re.search(r"printf '%s\\n' '([^']*)' > (\S+)", blocks[1])
    assert line and line.group(2) == keys["relayhost_auth_file"], blocks[1]
    assert line.group(1) == "%s:%s" % (README_USER, README_PASSWORD)
    assert "install -m 0640 " in blocks[1]
    pw = tmp_path / "relayhost_auth"
    pw.write_text(line.group(1) + "\n")
    os.chmod(pw, 0o640)
    relayhost = keys["relayhost"].replace("smtp.example.net", UP).replace(
        ":587", ":%d" % up.port)
    r = up.w.relay({"relayhost": relayhost, "relayhost_auth_file": str(pw)})
    p = r.cli("check")
    assert p.returncode == 0, p.stderr
    qid, msg = submit(r, ["readme@d2.test"], "readme config")
    wait_rcpt_lines(r, qid, "sent", 1)
    assert body_sha(delivered(up.pf, "readme@d2.test", "readme config").raw) == body_sha(msg)
    assert "sasl_username=%s@" % README_USER in up.pf.log()
    assert README_PASSWORD not in r.log()


def test_upstream_5xx_bounces_through_the_relay_host(up, tmp_path):
    """Bounces as without relayhost: a recipient the upstream refuses with
    5xx bounces, the others of the transaction are sent, and the DSN to
    the sender goes out through the relay host as well."""
    r = relay_for(up, tmp_path, "[%s]:%d" % (UP, up.port))
    body = b"bounce test body\r\n"
    msg = (b"From: <app@d4.test>\r\nTo: <%s>\r\nSubject: partly refused\r\n"
           b"Message-ID: <%d@d4.test>\r\n\r\n" % (REFUSED.encode(), time.time_ns())) + body
    with smtplib.SMTP(r.host, r.port, local_hostname="client.test", timeout=30) as s:
        s.ehlo()
        assert s.mail("app@d4.test")[0] == 250
        for rc in (REFUSED, "p@d1.test"):
            assert s.rcpt(rc)[0] == 250
        code, text = s.data(msg)
        assert code == 250, text
        qid = re.search(rb"queued as ([0-9A-F]{12})", text).group(1).decode()
    line = wait_rcpt_lines(r, qid, "bounced", 1)[0]
    assert "to=<%s>" % REFUSED in line and "dsn=5.1.1" in line, line
    assert "relay=%s[%s]:%d," % (UP, up.w.ips[UP], up.port) in line, line
    assert "said: 554 5.1.1" in line and "no such user here" in line, line
    assert "to=<p@d1.test>" in wait_rcpt_lines(r, qid, "sent", 1)[0]
    # the DSN: from <> to app@d4.test, via the upstream into d4.test's box
    dsn = wait_until(lambda: [m for m in up.pf.messages("app@d4.test")
                              if "Undelivered" in (m.msg["Subject"] or "")
                              or m.msg.get_content_type() == "multipart/report"], 30,
                     error=AssertionError, what="the DSN at the upstream")[0]
    assert REFUSED.encode() in dsn.raw and b"no such user here" in dsn.raw
    assert re.search(r"\bwith ESMTPSA\b", dsn.received()[0])
    assert not up.pf.messages(REFUSED)
    assert up.fake.sessions == []


def test_relayhost_name_not_found_defers(up, tmp_path):
    """A relay host name that does not resolve is our configuration's
    fault, not the recipients': the mail waits (4.4.4), never bounces."""
    r = relay_for(up, tmp_path, "[nosuch.upstream.test]:%d" % up.port, retry_schedule="1h")
    qid, _ = submit(r, ["q@d1.test", "s@d2.test"], "no such relay host")
    for line in wait_rcpt_lines(r, qid, "deferred", 2):
        assert "dsn=4.4.4" in line, line
        assert "Name service error for relayhost name=nosuch.upstream.test type=A" in line, line
    assert not rcpt_lines(r, qid, "bounced")
    assert set(mailq_reasons(r, qid)) == {"q@d1.test", "s@d2.test"}
    assert up.fake.sessions == []
