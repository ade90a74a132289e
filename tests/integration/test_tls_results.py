# One test per RFC 8460 result type the TLS layer produces, against Postfix MX
# hosts with broken certificates or no STARTTLS: log line, queue, TLS-RPT record.
import glob
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_delivery import log_lines, make_world, rcpt_line, send, wait_log  # noqa: E402

# domain -> (MX host certificate kind, the result type it must produce)
CASES = {
    "hostmismatch.test": ("wrongname", "certificate-host-mismatch"),
    "expired.test": ("expired", "certificate-expired"),
    "untrusted.test": ("untrusted", "certificate-not-trusted"),
    "selfsigned.test": ("selfsigned", "certificate-not-trusted"),
    "notls.test": ("notls", "starttls-not-supported"),
}


@pytest.fixture(scope="module")
def dworld():
    hosts = {"mx1.example.test": "good"}
    hosts.update({"mx." + dom: kind for dom, (kind, _) in CASES.items()})
    w = make_world(["example.test"] + list(CASES), hosts)
    w.mx("example.test", [(10, "mx1.example.test")])
    for dom in CASES:
        w.mx(dom, [(10, "mx." + dom)])
    yield w
    w.close()


def tlsrpt_sessions(daemon, domain):
    """(result type, mx host) of every recorded TLS-RPT session for domain."""
    out = []
    for path in glob.glob(os.path.join(daemon.spool, "tlsrpt", "*", "sessions")):
        with open(path) as f:
            for line in f:
                fields = line.rstrip("\n").split("\t")
                # T2 lines carry the policy text's hash after the mx list
                shift = 1 if fields[0] == "T2" else 0
                if len(fields) > 9 + shift and fields[2] == domain:
                    out.append((fields[7 + shift], fields[9 + shift]))
    return out


@pytest.mark.parametrize("domain", sorted(CASES))
def test_verify_defers_with_result_type(dworld, tmp_path, domain):
    kind, rtype = CASES[domain]
    rcpt = "user@" + domain
    d = dworld.relay(tmp_path, tls_default="verify", retry_schedule="1h")
    try:
        qid = send(d, rcpt, "verify " + kind)
        line = rcpt_line(d, qid, rcpt, "deferred")
        assert "sts_result=%s" % rtype in line, line
        assert "dsn=4.7.5" in line
        assert "relay=mx.%s[%s]" % (domain, dworld.ips["mx." + domain]) in line
        assert "sts=absent" in line
        # nothing reached the mailbox, the message stays queued
        assert dworld.postfix.messages(rcpt) == []
        assert d.queue_ids() == [qid]
        if rtype == "starttls-not-supported":
            assert "tls=none" in line
            # failed closed before MAIL: the MX never saw our envelope
            assert "from=<alice@sender.test>" not in dworld.postfix.log()
        d.stop()
        assert (rtype, "mx." + domain) in tlsrpt_sessions(d, domain)
    finally:
        d.stop()


@pytest.mark.parametrize("domain", sorted(CASES))
def test_opportunistic_delivers_and_says_so(dworld, tmp_path, domain):
    kind, rtype = CASES[domain]
    rcpt = "opp@" + domain
    d = dworld.relay(tmp_path, tls_default="opportunistic")
    try:
        qid = send(d, rcpt, "opportunistic " + kind)
        line = rcpt_line(d, qid, rcpt, "sent")
        if kind == "notls":
            assert "tls=none" in line
        else:
            assert "tls=TLSv1.3 unverified" in line
        assert "sts_result=" not in line  # nothing was required, nothing failed
        dworld.postfix.wait_messages(rcpt)
        d.stop()
        # TLS-RPT still learns what a check would have said
        assert (rtype, "mx." + domain) in tlsrpt_sessions(d, domain)
    finally:
        d.stop()


def test_verify_good_certificate_records_success(dworld, tmp_path):
    d = dworld.relay(tmp_path, tls_default="verify")
    try:
        qid = send(d, "good@example.test", "verify good")
        line = rcpt_line(d, qid, "good@example.test", "sent")
        assert "tls=TLSv1.3 verified" in line and "sts_result=" not in line
        d.stop()
        assert ("success", "mx1.example.test") in tlsrpt_sessions(d, "example.test")
    finally:
        d.stop()
