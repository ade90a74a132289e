# Delivery paths not covered elsewhere: the RFC 8461 §5.2 policy re-check when
# no MX passes under enforce, and a domain whose MX hosts have no address.
import re
import smtplib
import time

from tests.world import sample_message
from tests.world.util import wait_until

SENDER = "alice@snd.test"


def submit(r, rcpt, subject):
    """Hands one message to the relay over SMTP; returns its queue id."""
    msg = sample_message(sender=SENDER, to=rcpt, subject=subject)
    with smtplib.SMTP(r.host, r.port, local_hostname="client.world.test", timeout=30) as s:
        s.ehlo()
        code, _ = s.mail(SENDER)
        assert code == 250
        code, _ = s.rcpt(rcpt)
        assert code == 250
        code, text = s.data(msg)
        assert code == 250, text
    m = re.search(rb"queued as ([0-9A-Z]+)", text)
    assert m, text
    return m.group(1).decode()


def rcpt_lines(r, qid, rcpt, status):
    rx = re.compile(r"%s: to=<%s>, .*status=%s " % (re.escape(qid), re.escape(rcpt), status))
    return [l for l in r.log().splitlines() if rx.search(l)]


def wait_rcpt(r, qid, rcpt, status, timeout=30):
    try:
        return wait_until(lambda: rcpt_lines(r, qid, rcpt, status) or None, timeout,
                          what="%s status=%s" % (rcpt, status))[-1]
    except Exception as e:
        raise AssertionError("%s\n--- relay log ---\n%s" % (e, r.log()[-6000:]))


def test_enforce_mx_mismatch_recheck_finds_new_policy(world, relay):
    """Under enforce the DNS MX (mx1) is not in the policy; while the one
    listed MX (slow) is being tried, the domain publishes a new id and a
    policy that lists mx1. The re-check after "no MX passes" fetches it
    (nginx sees the second request) and the message goes out in the same
    attempt, to mx1, under the new id."""
    dom = "recheck.test"
    old_id, new_id = "20260101000001", "20260101000002"
    pf = world.postfix([dom], ["mx1.recheck.test"])
    # the listed MX: the first session says nothing for longer than the
    # relay waits, later ones refuse at once with 421
    slow = world.fake_mx("slow.recheck.test",
                         [{"hang": "banner", "hang_seconds": 20},
                          {"reply": {"banner": "421 4.3.2 busy"}}])
    world.mx(dom, [(10, "slow.recheck.test"), (20, "mx1.recheck.test")])
    world.sts(dom, "enforce", ["slow.recheck.test"], id=old_id)
    r = relay({"retry_schedule": "1h"}, env={"STSRELAY_SMTP_TIMEOUT": "6"})

    qid = submit(r, "amy@" + dom, "recheck")
    # The attempt is now waiting for slow's greeting: publish the fix.
    slow.wait_sessions(1, timeout=20, closed=False)
    world.sts(dom, "enforce", ["slow.recheck.test", "mx1.recheck.test"], id=new_id)
    assert world.https.fetch_count(dom, 1) == 1

    line = wait_rcpt(r, qid, "amy@" + dom, "sent", timeout=40)
    assert "sts=enforce id=%s" % new_id in line
    assert "relay=mx1.recheck.test[" in line and "tls=TLSv1.3 verified" in line
    log = r.log()
    assert re.search(r"%s: .*MX host mx1\.recheck\.test does not match the MTA-STS policy"
                     % qid, log)
    assert re.search(r"%s: %s: MTA-STS policy changed \(id %s -> %s\): trying again"
                     % (qid, re.escape(dom), old_id, new_id), log)
    # one attempt: nothing was deferred before the message went out
    assert not rcpt_lines(r, qid, "amy@" + dom, "deferred")
    # nginx: the policy was fetched twice, the second time for the re-check
    assert world.https.fetch_count(dom, 2) == 2
    msgs = pf.wait_messages("amy@" + dom, timeout=20)
    assert len(msgs) == 1
    # the listed host never got a transaction
    for s in slow.sessions:
        assert not any(c.upper().startswith(("MAIL", "RCPT", "DATA")) for _t, c in s.commands)


def test_mx_host_without_address_bounces_with_dsn(world, relay):
    """MX records exist but no MX host has an A/AAAA record: relay/daemon/delivery.c
    treats DNS_NO_ADDRESS as permanent (like Postfix for a host that does
    not exist) and bounces at once with 5.1.2; the DSN goes to the sender."""
    dom = "noaddr.test"
    pf = world.postfix(["snd.test"], ["mx.snd.test"])
    world.mx("snd.test", ["mx.snd.test"])
    world.mx(dom, [(10, "ghost1.noaddr.test"), (20, "ghost2.noaddr.test")])  # no A records
    r = relay({"retry_schedule": "1h"})

    qid = submit(r, "bob@" + dom, "no address")
    line = wait_rcpt(r, qid, "bob@" + dom, "bounced")
    assert "dsn=5.1.2" in line
    assert "no address for any MX host" in line
    assert not rcpt_lines(r, qid, "bob@" + dom, "deferred")

    def dsn():
        for m in pf.messages(SENDER):
            if qid.encode() in m.raw and b"delivery-status" in m.raw:
                return m
        return None
    m = wait_until(dsn, 30, what="DSN about %s" % qid)
    raw = m.raw.replace(b"\r\n", b"\n")
    assert b"Action: failed" in raw
    assert b"Status: 5.1.2" in raw
    assert b"Final-Recipient: rfc822; bob@noaddr.test" in raw
    # the bounce is final: the message is gone from the queue
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        p = r.cli("queue", "list", "--json")
        if qid.encode() not in p.stdout:
            break
        time.sleep(0.2)
    assert qid.encode() not in p.stdout
