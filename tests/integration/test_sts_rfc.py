# RFC 8461 / RFC 8460 to the letter (issue 11), MTA-STS side, against the
# loopback world: Unbound, nginx (policy host, access log), Postfix, fake MX.
#   - an mx value of digits (212.114.86.56) keeps an enforce policy in force
#   - max_age above a year is clamped, the policy kept
#   - §10.2: with the TXT record suppressed (SERVFAIL, NXDOMAIN) the
#     background refresh still fetches over HTTPS and the expiry moves on
#   - §4.2: a certificate without a SAN DNS-ID is refused under enforce even
#     when its CN names the MX
#   - a policy update that fails to parse is reported against the cached
#     policy, once per fetch, with the policy-string as published
#   - testing: an MX outside the policy is one session, not two
import datetime
import json
import re
import time

from tests.world import sample_message
from tests.world.dns import UNSIGNED_DANE
from tests.world.util import wait_until

SENDER = "sender@client.world.test"
DAY_S = 86400
YEAR = 31557600


def today():
    return time.strftime("%Y-%m-%d", time.gmtime())


def ts(rfc3339):
    return int(datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp())


def cli_json(r, *args, now=None, rc=0):
    p = r.cli(*args, env={"STSRELAY_FAKE_NOW": str(now)} if now else None)
    assert p.returncode == rc, (args, p.stdout, p.stderr)
    return json.loads(p.stdout)


def report_for(r, domain, day=None):
    reps = [x for x in cli_json(r, "tlsrpt", "show", "--day", day or today(), "--json")
            if x["policies"][0]["policy"]["policy-domain"] == domain]
    assert len(reps) == 1, reps
    return reps[0]


def send(r, rcpt, subject):
    assert r.send(SENDER, [rcpt], sample_message(to=rcpt, subject=subject)) == {}


def test_numeric_mx_pattern_keeps_enforce_policy(world, relay):
    """A real enforce domain publishes `mx: 212.114.86.56`: the policy stays
    in force (before: thrown away, the domain unprotected); the pattern
    matches no MX host name, so a delivery is deferred 4.4.8 without any
    connection; the pattern is logged once per fetched policy."""
    fake = world.fake_mx("mx.num.test", {})
    world.mx("num.test", ["mx.num.test"])
    world.sts("num.test", body="version: STSv1\r\nmode: enforce\r\nmx: 212.114.86.56\r\n"
              "max_age: 86400\r\n")
    world.https.wait_settled()
    r = relay({"retry_schedule": "1h"})
    # exit 1: no MX host can meet this enforce policy
    chk = cli_json(r, "sts", "check", "num.test", "--json", rc=1)
    assert chk["decision"] == "enforce" and chk["error"] is None, chk
    assert chk["result"].startswith("fails: no MX host matches the enforce policy"), chk
    assert chk["policy"]["mx"] == ["212.114.86.56"]
    assert chk["mx"] == [{"host": "mx.num.test", "preference": 10, "policy_match": False,
                          "dane": UNSIGNED_DANE}]

    send(r, "ann@num.test", "numeric mx")
    line = r.wait_log(r"to=<ann@num\.test>, .*status=deferred")[0]
    assert "dsn=4.4.8" in line and "sts=enforce id=20260101000001" in line, line
    assert "sts_result=validation-failure" in line
    assert fake.sessions == []
    hits = re.findall(r"mx pattern 212\.114\.86\.56 is all digits", r.log())
    assert len(hits) == 1, r.log(3000)
    # a policy with a name as well is simply used for that name
    world.sts("num.test", body="version: STSv1\r\nmode: enforce\r\nmx: 212.114.86.56\r\n"
              "mx: mx.num.test\r\nmax_age: 86400\r\n", id="20260101000002")
    world.https.wait_settled()
    chk = cli_json(r, "sts", "check", "num.test", "--json")
    assert chk["policy"]["mx"] == ["212.114.86.56", "mx.num.test"]
    assert chk["mx"][0]["policy_match"] is True


def test_max_age_above_a_year_is_clamped(world, relay):
    """max_age: 63072000 (two years) under enforce: kept, clamped to
    31557600; the cached policy expires a year after its fetch."""
    world.mx("long.test", ["mx.long.test"])
    world.host("mx.long.test")
    world.sts("long.test", "enforce", ["mx.long.test"], max_age=63072000)
    world.https.wait_settled()
    r = relay(start=False)
    chk = cli_json(r, "sts", "check", "long.test", "--json", "--update-cache")
    assert chk["decision"] == "enforce" and chk["error"] is None, chk
    assert chk["policy"]["max_age"] == YEAR
    assert ts(chk["policy"]["expires_at"]) - ts(chk["policy"]["fetched_at"]) == YEAR
    pols = cli_json(r, "sts", "cache", "--json")["policies"]
    assert [(p["domain"], p["mode"], p["max_age"]) for p in pols] == \
        [("long.test", "enforce", YEAR)]
    # more than 10 digits is still an error
    world.sts("long.test", "enforce", ["mx.long.test"], max_age=10 ** 10, id="2")
    world.https.wait_settled()
    chk = cli_json(r, "sts", "check", "long.test", "--json")
    assert chk["error"]["result_type"] == "sts-policy-invalid", chk


def test_refresh_fetches_while_txt_suppressed(world, relay):
    """RFC 8461 §10.2: an attacker who can only suppress the TXT record must
    not let a cached enforce policy age out. A year-long policy is cached;
    8 days later (STSRELAY_FAKE_NOW) the daemon's refresh fetches it over
    HTTPS while _mta-sts answers SERVFAIL, and 8 days after that while it
    is NXDOMAIN: nginx's access log shows each fetch and the cache's expiry
    moves forward each time."""
    world.mx("aging.test", ["mx.aging.test"])
    world.host("mx.aging.test")
    world.sts("aging.test", "enforce", ["mx.aging.test"], max_age=YEAR, id="20260701")
    world.https.wait_settled()
    t0 = int(time.time())
    r = relay(start=False, env={"STSRELAY_STS_REFRESH_TICK": "0.2"})
    chk = cli_json(r, "sts", "check", "aging.test", "--json", "--update-cache", now=t0)
    assert chk["policy"]["source"] == "fetched", chk
    wait_until(lambda: world.https.fetch_count("aging.test") == 1, 5, what="first fetch")

    def cached(now):
        pols = cli_json(r, "sts", "cache", "--json", now=now)["policies"]
        assert [p["domain"] for p in pols] == ["aging.test"], pols
        assert pols[0]["id"] == "20260701" and pols[0]["mode"] == "enforce"
        return ts(pols[0]["fetched_at"]), ts(pols[0]["expires_at"])

    fetched0, expires0 = cached(t0)
    assert expires0 - fetched0 == YEAR

    steps = [("servfail", t0 + 8 * DAY_S), ("nxdomain", t0 + 16 * DAY_S)]
    expires_prev = expires0
    for n, (how, now) in enumerate(steps, start=2):
        if how == "servfail":
            world.dns.fail("_mta-sts.aging.test", "servfail")
        else:
            world.dns.unfail("_mta-sts.aging.test")
            world.dns.remove("_mta-sts.aging.test", "TXT")
        q = world.dns.query("_mta-sts.aging.test", "TXT")
        assert q.header.rcode == (2 if how == "servfail" else 3), q  # SERVFAIL / NXDOMAIN
        r.env["STSRELAY_FAKE_NOW"] = str(now)
        r.start()
        wait_until(lambda: world.https.fetch_count("aging.test") == n, 20,
                   what="refresh fetch %d (%s)" % (n, how))
        r.wait_log(r"sts: aging\.test: fetched policy id=20260701 mode=enforce "
                   r"max_age=31557600 \(refresh without a TXT record\)", count=n - 1)
        assert r.stop() == 0
        # the fetch went to the policy host by name, over HTTPS with SNI
        host, sni, req, status = world.https.requests("aging.test")[-1]
        assert (host, sni, status) == ("mta-sts.aging.test", "mta-sts.aging.test", 200)
        assert req.startswith("GET /.well-known/mta-sts.txt ")
        fetched, expires = cached(now)
        assert now <= fetched <= now + 60, (now, fetched)
        assert expires == fetched + YEAR and expires >= expires_prev + 8 * DAY_S - 60
        expires_prev = expires
    time.sleep(0.5)
    assert world.https.fetch_count("aging.test") == 3


def test_cn_only_certificate_refused_under_enforce(world, relay):
    """RFC 8461 §4.2: the MX certificate must carry a matching SAN DNS-ID.
    A certificate with no SAN whose CN is exactly the MX name is a
    certificate-host-mismatch under enforce (deferred 4.7.5, no mail
    handed over); without a policy the same MX gets the mail, logged as
    unverified TLS."""
    leaf = world.ca.leaf(["mx.cn.test"], "cnonly")
    fake = world.fake_mx("mx.cn.test", {"cert": leaf})
    world.mx("cn.test", ["mx.cn.test"])
    world.mx("cnopen.test", ["mx.cn.test"])
    world.sts("cn.test", "enforce", ["mx.cn.test"])
    world.https.wait_settled()
    r = relay({"retry_schedule": "1h"})
    send(r, "bea@cn.test", "cn only")
    line = r.wait_log(r"to=<bea@cn\.test>, .*status=deferred")[0]
    assert "dsn=4.7.5" in line and "sts_result=certificate-host-mismatch" in line, line
    assert "hostname mismatch" in line
    assert [m for s in fake.sessions for m in s.messages] == []
    send(r, "cid@cnopen.test", "cn only, no policy")
    line = r.wait_log(r"to=<cid@cnopen\.test>, .*status=sent")[0]
    assert "tls=TLSv1.3 unverified" in line and "sts=absent" in line, line
    assert [e.rcpts for s in fake.sessions for e in s.messages] == [["cid@cnopen.test"]]
    rep = report_for(r, "cn.test")
    fds = rep["policies"][0]["failure-details"]
    assert [(f["result-type"], f["receiving-mx-hostname"], f["failed-session-count"])
            for f in fds] == [("certificate-host-mismatch", "mx.cn.test", 1)], rep


UPD_POLICY = ("version: STSv1\r\nmode: enforce\r\nmx: MX.Upd.TEST.\r\n"
              "x-note: served exactly like this\r\nmax_age: 86400\r\n")


def test_invalid_policy_update_reported_against_cached_policy(world, relay):
    """The domain announces a new policy id but serves a body that fails to
    parse: delivery goes on under the cached policy, and the report shows
    one sts-policy-invalid failure filed under that cached policy (RFC 8460
    §4.3.2.2), whose policy-string is the policy's own lines as served
    (extension field, spelling); two deliveries in the 5-minute back-off
    count the one fetch once."""
    pf = world.postfix(["upd.test"], ["mx.upd.test"])
    world.mx("upd.test", ["mx.upd.test"])
    world.sts("upd.test", body=UPD_POLICY, id="id1")
    world.https.wait_settled()
    r = relay({"retry_schedule": "1h"})
    send(r, "dan@upd.test", "before the update")
    r.wait_log(r"to=<dan@upd\.test>, .*status=sent .*tls=TLSv1\.3 verified, sts=enforce id=id1")
    assert world.https.fetch_count("upd.test", 1) == 1

    world.sts("upd.test", body="version: STSv1\r\nmode: enforce\r\nmx: mx.upd.test\r\n"
              "max_age: soon\r\n", id="id2")
    world.https.wait_settled()
    for who in ("eve", "fay"):
        send(r, "%s@upd.test" % who, "after the update")
        r.wait_log(r"to=<%s@upd\.test>, .*status=sent .*verified, sts=enforce id=id1" % who)
    pf.wait_messages(domain="upd.test", count=3, timeout=15)
    assert world.https.fetch_count("upd.test", 2) == 2
    assert len(re.findall(r"upd\.test: MTA-STS policy problem: sts-policy-invalid",
                          r.log())) == 2

    rep = report_for(r, "upd.test")
    assert len(rep["policies"]) == 1, rep
    ent = rep["policies"][0]
    assert ent["policy"] == {
        "policy-type": "sts", "policy-domain": "upd.test", "mx-host": ["mx.upd.test"],
        "policy-string": ["version: STSv1", "mode: enforce", "mx: MX.Upd.TEST.",
                          "x-note: served exactly like this", "max_age: 86400"]}
    fds = ent["failure-details"]
    assert [(f["result-type"], f["failed-session-count"]) for f in fds] == \
        [("sts-policy-invalid", 1)], fds
    assert "max_age" in fds[0]["failure-reason-code"]
    assert "receiving-mx-hostname" not in fds[0]
    assert ent["summary"]["total-failure-session-count"] == 1
    assert ent["summary"]["total-successful-session-count"] >= 1


def test_testing_mismatch_is_one_session(world, relay):
    """testing: the MX matches no pattern, is used anyway; its connection is
    one session whose failure detail is the mismatch (RFC 8460 §4.4), not a
    failed session plus a successful one."""
    pf = world.postfix(["tmx.test"], ["other.tmx.test"])
    world.mx("tmx.test", ["other.tmx.test"])
    world.sts("tmx.test", "testing", ["mx.tmx.test"])
    world.https.wait_settled()
    r = relay()
    send(r, "gil@tmx.test", "testing mismatch")
    line = r.wait_log(r"to=<gil@tmx\.test>, .*status=sent")[0]
    assert "sts=testing id=20260101000001" in line, line
    r.wait_log(r"MX host other\.tmx\.test does not match .*testing: used anyway")
    pf.wait_messages("gil@tmx.test")
    ent = report_for(r, "tmx.test")["policies"][0]
    assert ent["summary"] == {"total-successful-session-count": 0,
                              "total-failure-session-count": 1}, ent
    fd, = ent["failure-details"]
    assert fd["result-type"] == "validation-failure"
    assert fd["receiving-mx-hostname"] == "other.tmx.test"
    assert fd["receiving-ip"] == world.ips["other.tmx.test"]
    assert fd["failure-reason-code"] == "mx-mismatch: other.tmx.test not in the policy"
    assert fd["failed-session-count"] == 1
