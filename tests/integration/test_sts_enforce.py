# MTA-STS in the delivery path (RFC 8461 §4-§5), attack scenarios against the
# loopback world: Unbound (TXT/MX), nginx (policy host), Postfix and fake MXs.
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_delivery import (dsn_for, log_lines, make_world, rcpt_line, send,  # noqa: E402
                           wait_log)
from world.https import PolicyHost, policy_text  # noqa: E402

BROKEN = {"wrongname": "certificate-host-mismatch", "expired": "certificate-expired",
          "selfsigned": "certificate-not-trusted"}
TRANSACTION = ("MAIL", "RCPT", "DATA")


@pytest.fixture(scope="module")
def dworld():
    hosts = {"mx.enforce.test": "good"}
    hosts.update({"mx-%s.sts.test" % k: k for k in BROKEN})
    doms = ["enforce.test", "cache.test"] + ["t-%s.test" % k for k in BROKEN]
    w = make_world(doms, hosts)
    w.policy = PolicyHost(os.path.join(w.base, "nginx"), w.ca).start()
    yield w
    w.policy.stop()
    w.close()


def publish(dworld, domain, mode, mx, policy_id="20260618001"):
    dworld.dns.set("mta-sts." + domain, "A", "127.0.0.1", ttl=1)
    dworld.dns.set("_mta-sts." + domain, "TXT", "v=STSv1; id=%s;" % policy_id, ttl=1)
    dworld.policy.serve(domain, policy_text(mode=mode, mx=mx))


def relay(dworld, tmp_path, **conf):
    return dworld.relay(tmp_path, sts_https_port=dworld.policy.port, **conf)


def transaction_cmds(fake):
    return [c for s in fake.sessions for c in s["cmds"] if c.upper().startswith(TRANSACTION)]


def test_enforce_good_mx_delivers_verified(dworld, tmp_path):
    dworld.mx("enforce.test", [(10, "mx.enforce.test")])
    publish(dworld, "enforce.test", "enforce", ["mx.enforce.test"])
    d = relay(dworld, tmp_path)
    try:
        qid = send(d, "amy@enforce.test", "enforce good")
        line = rcpt_line(d, qid, "amy@enforce.test", "sent")
        assert "tls=TLSv1.3 verified" in line
        assert "sts=enforce id=20260618001" in line
        assert "sts_result=" not in line
        dworld.postfix.wait_messages("amy@enforce.test")
        # the policy was fetched with SNI mta-sts.DOMAIN
        assert any(sni == "mta-sts.enforce.test"
                   for _, sni, _, _ in dworld.policy.requests("enforce.test"))
    finally:
        d.stop()


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_enforce_bad_certificate_defers(dworld, tmp_path, kind):
    dom, host = "e-%s.test" % kind, "mx-%s.sts.test" % kind
    dworld.mx(dom, [(10, host)])
    publish(dworld, dom, "enforce", [host])
    d = relay(dworld, tmp_path, retry_schedule="1h")
    try:
        qid = send(d, "bob@" + dom, "enforce " + kind)
        line = rcpt_line(d, qid, "bob@" + dom, "deferred")
        assert "dsn=4.7.5" in line
        assert "sts=enforce id=20260618001" in line
        assert "sts_result=%s" % BROKEN[kind] in line
        # RFC 8461 §5.2: the policy is looked at once more before deferring
        wait_log(d, r"%s: MTA-STS policy re-checked: unchanged" % dom, qid)
        assert d.queue_ids() == [qid]
    finally:
        d.stop()


@pytest.mark.parametrize("kind", sorted(BROKEN))
def test_testing_bad_certificate_delivers_and_records(dworld, tmp_path, kind):
    dom, host = "t-%s.test" % kind, "mx-%s.sts.test" % kind
    dworld.mx(dom, [(10, host)])
    publish(dworld, dom, "testing", [host])
    d = relay(dworld, tmp_path)
    try:
        qid = send(d, "cat@" + dom, "testing " + kind)
        line = rcpt_line(d, qid, "cat@" + dom, "sent")
        assert "tls=TLSv1.3 unverified" in line
        assert "sts=testing id=20260618001" in line
        assert "sts_result=%s" % BROKEN[kind] in line
        dworld.postfix.wait_messages("cat@" + dom)
    finally:
        d.stop()


def test_enforce_starttls_stripped_nothing_in_plaintext(dworld, tmp_path):
    fake = dworld.fake(ehlo=["PIPELINING", "8BITMIME"])  # STARTTLS "stripped"
    dworld.mx("strip.test", [(10, "mx.strip.test")], {"mx.strip.test": fake.ip})
    publish(dworld, "strip.test", "enforce", ["mx.strip.test"])
    d = relay(dworld, tmp_path, retry_schedule="1h")
    try:
        qid = send(d, "dan@strip.test", "stripped")
        line = rcpt_line(d, qid, "dan@strip.test", "deferred")
        assert "dsn=4.7.5" in line and "sts_result=starttls-not-supported" in line
        assert len(fake.sessions) >= 1
        assert transaction_cmds(fake) == []
        assert all(s["data"] == b"" for s in fake.sessions)
    finally:
        d.stop()


def test_testing_starttls_stripped_delivers_plaintext(dworld, tmp_path):
    fake = dworld.fake(ehlo=["PIPELINING", "8BITMIME"])
    dworld.mx("tstrip.test", [(10, "mx.tstrip.test")], {"mx.tstrip.test": fake.ip})
    publish(dworld, "tstrip.test", "testing", ["mx.tstrip.test"])
    d = relay(dworld, tmp_path)
    try:
        qid = send(d, "eve@tstrip.test", "testing stripped")
        line = rcpt_line(d, qid, "eve@tstrip.test", "sent")
        assert "sts=testing id=20260618001" in line
        assert "sts_result=starttls-not-supported" in line and "tls=none" in line
        assert any(s["data"] for s in fake.sessions)
    finally:
        d.stop()


def test_enforce_mx_rewritten_to_unlisted_host_not_contacted(dworld, tmp_path):
    evil = dworld.fake()
    dworld.mx("rewrite.test", [(10, "evil.attacker.test")], {"evil.attacker.test": evil.ip})
    publish(dworld, "rewrite.test", "enforce", ["mx.enforce.test"])
    d = relay(dworld, tmp_path, retry_schedule="1h")
    try:
        qid = send(d, "fay@rewrite.test", "rewritten")
        line = rcpt_line(d, qid, "fay@rewrite.test", "deferred")
        assert "dsn=4.4.8" in line and "sts_result=validation-failure" in line
        wait_log(d, r"MX host evil\.attacker\.test does not match the MTA-STS policy", qid)
        assert evil.sessions == []
    finally:
        d.stop()


def test_testing_mx_mismatch_is_used_and_logged(dworld, tmp_path):
    other = dworld.fake(ehlo=["PIPELINING"])
    dworld.mx("tmis.test", [(10, "other.tmis.test")], {"other.tmis.test": other.ip})
    publish(dworld, "tmis.test", "testing", ["mx.tmis.test"])
    d = relay(dworld, tmp_path)
    try:
        qid = send(d, "gus@tmis.test", "testing mismatch")
        rcpt_line(d, qid, "gus@tmis.test", "sent")
        wait_log(d, r"MX host other\.tmis\.test does not match .*testing: used anyway", qid)
    finally:
        d.stop()


def test_txt_removed_after_caching_policy_still_enforced(dworld, tmp_path):
    dworld.mx("cache.test", [(10, "mx.enforce.test")])
    publish(dworld, "cache.test", "enforce", ["mx.enforce.test"])
    d = relay(dworld, tmp_path, retry_schedule="1h")
    try:
        q1 = send(d, "hal@cache.test", "cache first")
        assert "sts=enforce id=20260618001" in rcpt_line(d, q1, "hal@cache.test", "sent")
        # the attacker removes the TXT record and points the MX elsewhere
        evil = dworld.fake()
        dworld.dns.remove("_mta-sts.cache.test", "TXT")
        dworld.mx("cache.test", [(10, "evil.cache.test")], {"evil.cache.test": evil.ip})
        q2 = send(d, "ida@cache.test", "cache second")
        line = rcpt_line(d, q2, "ida@cache.test", "deferred")
        assert "sts=enforce id=20260618001" in line and "dsn=4.4.8" in line
        assert evil.sessions == []
    finally:
        d.stop()


def test_enforce_failure_bounces_at_lifetime_with_575(dworld, tmp_path):
    dom, host = "life.test", "mx-expired.sts.test"
    dworld.mx(dom, [(10, host)])
    publish(dworld, dom, "enforce", [host])
    d = relay(dworld, tmp_path, retry_schedule="1s", queue_lifetime="3s")
    try:
        qid = send(d, "jon@" + dom, "lifetime")
        line = rcpt_line(d, qid, "jon@" + dom, "bounced", timeout=30)
        assert "dsn=5.7.5" in line and "delivery time expired" in line
        assert "sts_result=certificate-expired" in line
        dsn = dsn_for(dworld, qid)
        assert b"Status: 5.7.5" in dsn.raw
        assert not log_lines(d, qid, "status=sent")
    finally:
        d.stop()
