# Recipients at an address literal (RFC 5321 §4.1.3), as Postfix delivers
# them: no DNS, no MTA-STS (there is no domain), no SNI (RFC 6066 §3), and a
# deferral with the reason when nothing answers (the README's first example).
import re

from faults_util import SAN_ENV, assert_no_sanitizer_report, msgid_message, smtp_submit


def test_literal_recipient_goes_to_that_address(world, relay):
    fm = world.fake_mx("literal-mx.test")
    r = relay({}, env=SAN_ENV)
    rcpt = "someone@[%s]" % fm.ip
    code, text = smtp_submit(r.host, r.port, "a@client.test", [rcpt],
                             msgid_message("lit", to=rcpt, sender="a@client.test"))
    assert code == 250, text
    qid = re.search(r"queued as ([0-9A-F]{12})", text).group(1)
    line = r.wait_log(r"%s: to=<%s>, .*status=sent" % (qid, re.escape(rcpt)), timeout=30)[0]
    assert "relay=%s[%s]:%d, " % (fm.ip, fm.ip, world.smtp_port) in line, line
    assert "sts=absent" in line and "tls=TLSv1.3 unverified" in line, line
    fm.wait_sessions(1)
    s = fm.sessions[0]
    assert s.tls and s.sni is None, (s.tls_version, s.sni)
    assert s.messages[0].rcpts == [rcpt]
    # no policy lookup and nothing for TLS-RPT: there is no domain
    assert "_mta-sts" not in r.log() and "MTA-STS" not in r.log()
    assert r.stop() == 0
    assert_no_sanitizer_report(r.log())


def test_literal_nobody_answers_is_deferred_with_the_reason(world, relay):
    r = relay({"retry_schedule": "1h"}, env=dict(SAN_ENV, STSRELAY_CONNECT_TIMEOUT="2"))
    rcpt = "someone@[192.0.2.1]"   # TEST-NET-1 (RFC 5737): no host has it
    code, text = smtp_submit(r.host, r.port, "a@client.test", [rcpt],
                             msgid_message("lit2", to=rcpt, sender="a@client.test"))
    assert code == 250, text
    line = r.wait_log(r"to=<someone@\[192\.0\.2\.1\]>, .*status=deferred", timeout=30)[0]
    # refused, unreachable or timed out: whatever this machine's network says
    assert ("status=deferred (connect to 192.0.2.1[192.0.2.1]:%d: " % world.smtp_port) in line, line
    p = r.cli("queue", "list")
    assert p.returncode == 0 and "someone@[192.0.2.1] (deferred, 1 attempt" in p.stdout.decode()
    assert r.stop() == 0
