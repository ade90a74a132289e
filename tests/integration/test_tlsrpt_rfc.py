# RFC 8460 to the letter (issue 11), report side, against the loopback
# world (Unbound, Postfix, fake MX, an HTTPS receiver, dkimpy):
#   - report mail reaches a domain whose only MX fails its enforce policy:
#     TLS-Required: No is honoured (opportunistic TLS, logged as such)
#   - report mail that cannot be delivered is gone after 24 hours, no bounce
#   - without a DKIM key mailto: ruas are skipped (log, `tlsrpt show`) while
#     https: ruas get the report; `tlsrpt dkim-keygen`'s record published in
#     Unbound makes the next report verify with dkimpy
#   - the envelope sender is the contact address (RFC 5321 §4.5.5)
import email
import email.policy
import gzip
import json
import os
import re

import pytest

from tests.world import sample_message
from test_tlsrpt import Receiver     # the HTTPS report receiver helper

DAY = "2026-06-18"
DAY_START = 1781740800                       # 2026-06-18T00:00:00Z
T_TRAFFIC = DAY_START + 10 * 3600
T_SEND = DAY_START + 86400 + 1800            # D+1 00:30Z
SUBMITTER = "relay.world.test"
CONTACT = "tls-contact@" + SUBMITTER
CONF = {"tlsrpt_org_name": "Relay Org", "tlsrpt_contact": CONTACT, "retry_schedule": "1s,2s,5s"}


def now_env(t):
    return {"STSRELAY_FAKE_NOW": str(t)}


def cli(r, *args, now=T_SEND):
    p = r.cli(*args, env=now_env(now))
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def record(r, domain, result="success", now=T_TRAFFIC, **kw):
    args = ["tlsrpt", "record", "--domain", domain, "--result", result,
            "--sending-ip", "127.0.0.1", "--when", str(now)]
    for k, v in kw.items():
        args += ["--" + k.replace("_", "-"), str(v)]
    rc, out, err = cli(r, *args, now=now)
    assert rc == 0, err


def publish_dkim(world, r, selector):
    """`tlsrpt dkim-keygen` into a 0700 directory; its stdout line published
    in the world's Unbound as printed (name, split strings). -> key path."""
    d = os.path.join(r.dir, "dkim")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o700)
    key = os.path.join(d, "report.key")
    rc, out, err = cli(r, "tlsrpt", "dkim-keygen", "--selector", selector, "--out", key)
    assert rc == 0, err
    assert oct(os.stat(key).st_mode & 0o777) == "0o600"
    line, = out.splitlines()
    m = re.match(r'^(%s\._domainkey\.%s)\. IN TXT ((?:"[^"]*" ?)+)$' % (
        re.escape(selector), re.escape(SUBMITTER)), line)
    assert m, line
    strings = re.findall(r'"([^"]*)"', m.group(2))
    assert len(strings) >= 2 and all(len(s) <= 255 for s in strings), strings
    assert strings[0].startswith("v=DKIM1; k=rsa; p=")
    world.dns.set(m.group(1), "TXT", [strings])    # one record of several strings
    return key


def dkim_config(key, selector):
    return {"dkim_domain": SUBMITTER, "dkim_selector": selector, "dkim_key_file": key}


def dkim_verifies(world, raw):
    """dkimpy's verdict, the key looked up in the world's Unbound."""
    dkim = pytest.importorskip("dkim")

    def dnsfunc(name, timeout=5):
        q = world.dns.query(name.decode().rstrip("."), "TXT")
        txt = [b"".join(rr.rdata.data) for rr in q.rr if rr.rtype == 16]
        return txt[0] if txt else None
    return dkim.verify(raw, dnsfunc=dnsfunc)


def report_of(raw):
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report"
    att = msg.get_payload()[1]
    assert att.get_content_type() == "application/tlsrpt+gzip"
    return msg, json.loads(gzip.decompress(att.get_payload(decode=True)))


def queued(r, now):
    rc, out, err = cli(r, "queue", "list", "--json", now=now)
    assert rc == 0, err
    return json.loads(out)["messages"]


def test_report_reaches_mx_that_fails_enforce(world, relay):
    """The rua's domain has one MX, and it fails the domain's enforce policy
    (certificate for the wrong name). Ordinary mail to it is deferred 4.7.5;
    the report about exactly that failure is delivered there anyway, over
    opportunistic TLS (RFC 8460 §5.3.1, RFC 8689 §5), logged as such,
    DKIM-signed, with the contact as envelope sender."""
    leaf = world.ca.leaf(["mx.broken.test"], "wrongname")
    fake = world.fake_mx("mx.broken.test", {"cert": leaf})
    world.mx("broken.test", ["mx.broken.test"])
    world.sts("broken.test", "enforce", ["mx.broken.test"])
    world.tlsrpt("broken.test", "mailto:tlsrpt@broken.test")
    world.https.wait_settled()
    r = relay(dict(CONF, retry_schedule="1h"), start=False, env=now_env(T_TRAFFIC))
    key = publish_dkim(world, r, "rpt1")
    r.config.update(dkim_config(key, "rpt1"))
    r.start()

    assert r.send("s@client.world.test", ["kim@broken.test"],
                  sample_message(to="kim@broken.test")) == {}
    line = r.wait_log(r"to=<kim@broken\.test>, .*status=deferred")[0]
    assert "dsn=4.7.5" in line and "sts_result=certificate-host-mismatch" in line, line

    rc, out, err = cli(r, "tlsrpt", "send", "--day", DAY, now=T_TRAFFIC + 60)
    assert rc == 0, out + err
    assert "1 sent, 0 already sent, 0 failed" in out, out
    qid = re.search(r"rua=mailto:tlsrpt@broken\.test, status=sent \(queued as (\w+)\)", err).group(1)
    line = r.wait_log(r"%s: to=<tlsrpt@broken\.test>, .*status=sent" % qid)[0]
    assert "tls=TLSv1.3 unverified" in line and "sts=none tls_required=no" in line, line
    assert "sts_result" not in line
    r.wait_log(r"%s: broken\.test: TLS-RPT report mail \(TLS-Required: No\): no MTA-STS, "
               r"opportunistic TLS" % qid)

    got = [(s, e) for s in fake.sessions for e in s.messages]
    assert len(got) == 1, fake.sessions
    sess, env = got[0]
    assert env.rcpts == ["tlsrpt@broken.test"] and env.tls and sess.sni == "mx.broken.test"
    assert env.mail_from == CONTACT
    msg, rep = report_of(env.data)
    assert msg["TLS-Required"].strip() == "No"
    assert msg["TLS-Report-Domain"].strip() == "broken.test"
    assert dkim_verifies(world, env.data)
    ent, = rep["policies"]
    assert ent["summary"] == {"total-successful-session-count": 0,
                              "total-failure-session-count": 1}
    assert [(f["result-type"], f["receiving-mx-hostname"]) for f in ent["failure-details"]] == \
        [("certificate-host-mismatch", "mx.broken.test")]
    # the ordinary message still waits: the policy was not relaxed for it
    left = queued(r, T_TRAFFIC + 120)
    assert [m["recipients"][0]["address"] for m in left] == ["kim@broken.test"]
    assert r.stop() == 0


def test_undeliverable_report_dropped_after_24_hours(world, relay):
    """Report mail the rua's MX keeps refusing (451) is retried for 24
    hours (RFC 8460 §5.5), then dropped: no bounce is made for it."""
    fake = world.fake_mx("mx.dead.test", {"reply": {"rcpt": "451 4.3.0 mailbox busy"}})
    world.mx("dead.test", ["mx.dead.test"])
    world.tlsrpt("dead.test", "mailto:tlsrpt@dead.test")
    r = relay(dict(CONF, retry_schedule="1h"), start=False, env=now_env(T_SEND))
    key = publish_dkim(world, r, "rpt2")
    r.config.update(dkim_config(key, "rpt2"))
    record(r, "dead.test", mx="mx.dead.test", mx_ip=world.ips["mx.dead.test"])
    r.start()
    rc, out, err = cli(r, "tlsrpt", "send", "--day", DAY)
    assert rc == 0 and "1 sent" in out, out + err
    qid = re.search(r"queued as (\w+)", err).group(1)
    r.wait_log(r"%s: to=<tlsrpt@dead\.test>, .*status=deferred \(.*451" % qid)
    msgs = queued(r, T_SEND + 60)
    assert [(m["id"], m["sender"]) for m in msgs] == [(qid, CONTACT)]
    assert r.stop() == 0

    # 23 hours on: still tried, still kept
    r.env["STSRELAY_FAKE_NOW"] = str(T_SEND + 23 * 3600)
    r.start()
    r.wait_log(r"%s: to=<tlsrpt@dead\.test>, .*status=deferred" % qid, count=2)
    assert [m["id"] for m in queued(r, T_SEND + 23 * 3600 + 60)] == [qid]
    assert r.stop() == 0

    # 25 hours on: one more refusal, then gone, without a bounce
    r.env["STSRELAY_FAKE_NOW"] = str(T_SEND + 25 * 3600)
    r.start()
    line = r.wait_log(r"%s: to=<tlsrpt@dead\.test>, .*status=bounced" % qid)[0]
    assert "TLS-RPT report mail dropped after 24 hours" in line, line
    r.wait_log(r"%s: no bounce for a message flagged no-bounce" % qid)
    r.wait_log(r"%s: removed" % qid)
    assert queued(r, T_SEND + 25 * 3600 + 60) == []      # no DSN was queued either
    assert r.stop() == 0
    assert len(fake.sessions) == 3      # one attempt per run: 1 h retry steps


def test_no_dkim_key_https_only_then_keygen_verifies(world, relay):
    """Without a DKIM key: `tlsrpt send` posts the report to the https: rua,
    skips the mailto: rua with an error in the log, and `tlsrpt show` names
    it. Then `tlsrpt dkim-keygen` writes a key and prints the record; once
    it is published in Unbound and configured, the next send queues the
    mail, the daemon delivers it to Postfix, and dkimpy verifies it."""
    pf = world.postfix(["rcv.test"], ["mx.rcv.test"])
    world.mx("rcv.test", ["mx.rcv.test"])
    rcv = Receiver(world, "reports.rcv.test", [])
    try:
        world.tlsrpt("a.test", ["mailto:tlsrpt@rcv.test", rcv.url])
        r = relay(CONF, start=False, env=now_env(T_SEND))
        record(r, "a.test", mx="mx.a.test", mx_ip="127.0.9.1")

        rc, out, err = cli(r, "tlsrpt", "send", "--day", DAY)
        assert rc == 0, out + err
        assert ("1 sent, 0 already sent, 0 failed, 0 without _smtp._tls, "
                "1 skipped (no DKIM key)") in out, out
        assert re.search(r"error: tlsrpt=a\.test, day=%s, rua=mailto:tlsrpt@rcv\.test, "
                         r"status=skipped \(report mail needs a DKIM signature" % DAY, err), err
        assert len(rcv.posts) == 1 and rcv.posts[0][1] == "application/tlsrpt+gzip"
        assert queued(r, T_SEND) == []
        rc, out, err = cli(r, "tlsrpt", "show", "--day", DAY)
        assert rc == 0, err
        assert "note: no DKIM key configured" in out
        assert "rua mailto:tlsrpt@rcv.test skipped: report mail needs a DKIM key" in out, out

        key = publish_dkim(world, r, "s2026")
        r.config.update(dkim_config(key, "s2026"))
        r.write_config()
        rc, out, err = cli(r, "tlsrpt", "send", "--day", DAY, now=T_SEND + 60)
        assert rc == 0, out + err
        assert "1 sent, 1 already sent, 0 failed, 0 without _smtp._tls, 0 skipped" in out, out
        assert len(rcv.posts) == 1
        rc, out, err = cli(r, "tlsrpt", "show", "--day", DAY, now=T_SEND + 60)
        assert "skipped" not in out and "note:" not in out, out

        r.env["STSRELAY_FAKE_NOW"] = str(T_SEND + 120)
        r.start()
        m, = pf.wait_messages("tlsrpt@rcv.test", timeout=30)
        assert m.msg["Return-Path"].strip() == "<%s>" % CONTACT
        sig = " ".join(m.msg["DKIM-Signature"].split())
        assert "d=%s;" % SUBMITTER in sig and "s=s2026;" in sig, sig
        assert dkim_verifies(world, m.raw)
        # a verification that cannot fail proves nothing: a changed byte fails
        assert not dkim_verifies(world, m.raw.replace(b"Report Domain: a.test",
                                                      b"Report Domain: b.test"))
        _, rep = report_of(m.raw)
        assert rep["policies"][0]["policy"]["policy-domain"] == "a.test"
        assert json.loads(gzip.decompress(rcv.posts[0][2])) == rep
        assert r.stop() == 0
    finally:
        rcv.close()
