# TLS-RPT proven from real deliveries: a day of mixed traffic through the
# relay to Postfix and misbehaving MX hosts, the daemon's own daily run, and
# the reports as they arrive in the Postfix mailbox, checked against RFC 8460.
#
# Unlike test_tlsrpt.py (sessions injected with the hidden `tlsrpt record`),
# every session here comes from a delivery the relay really made:
#   enf.test     enforce, MX 10 = fake MX with a wrong-name certificate, MX 20 =
#                Postfix: each message gives certificate-host-mismatch + success
#   exp.test     testing, expired certificate: delivered, certificate-expired
#   plain.test   testing, no STARTTLS offered: delivered, starttls-not-supported
#   self.test    enforce, self-signed certificate: deferred, certificate-not-trusted
#   nopol.test   no MTA-STS at all, good Postfix MX: no-policy-found, success
#   f404.test    policy host answers 404: sts-policy-fetch-error, then success
#   webpki.test  policy host with a wrong-name certificate: sts-webpki-invalid
#   invalid.test policy body invalid (mode: bogus): sts-policy-invalid
#                (a failed fetch counts once, not once per message: RFC 8460
#                counts the fetch, and a retry waits 5 minutes)
#   reports.test where the reports go (no _smtp._tls of its own)
# Report mail is DKIM-signed with a key from `stsrelay tlsrpt dkim-keygen`
# whose printed record is published in Unbound; dkimpy checks every report.
# The day is a fixed fake day (STSRELAY_FAKE_NOW), so the test never straddles
# a real midnight. The daily run is the daemon's own schedule: started at
# D+1 00:14:55 (before send_at 00:15) it must not send D; restarted at D+1
# 01:14:57 (send_at + the largest spread - 2 s) the run for D is due at its
# first look (or within 2 s by its timer). The hour-long sleep until a due
# time inside the spread is not waited for.
import datetime
import email
import email.policy
import gzip
import ipaddress
import json
import os
import re
import time

from tests.world import sample_message
from test_tlsrpt import Receiver     # the HTTPS report receiver helper
from test_tlsrpt_rfc import dkim_config, dkim_verifies, publish_dkim

DAY = "2026-06-18"
DAY_START = 1781740800                       # 2026-06-18T00:00:00Z
NEXT_DAY = "2026-06-19"
PREV_DAY = "2026-06-17"
T_EARLY = DAY_START + 86400 + 15 * 60 - 5      # D+1 00:14:55Z, before any due time
T_TRAFFIC = DAY_START + 10 * 3600             # D 10:00Z
T_RUN = DAY_START + 86400 + 15 * 60 + 3600 - 3   # D+1 01:14:57Z
SUBMITTER = "relay.world.test"
CONTACT = "tls-contact@" + SUBMITTER
ORG = "World Relay Org"
RUA = "tlsrpt@reports.test"
VECTORS = os.path.join(os.environ.get("STSRELAY_SRC", "."), "..", "shared", "vectors",
                       "stalwart-mail-auth-tlsrpt")

# ---------------------------------------------------------------------------
# RFC 8460 §4 field-list check, written from the RFC, independent of the C
# validator. Returns a list of problems ("path: reason"); [] = valid.

RESULT_TYPES = {   # RFC 8460 §4.3.1 (negotiation), §4.3.2.1 (DANE), §4.3.2.2 (MTA-STS)
    "starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
    "certificate-not-trusted", "validation-failure",
    "tlsa-invalid", "dnssec-invalid", "dane-required",
    "sts-policy-fetch-error", "sts-policy-invalid", "sts-webpki-invalid",
}
POLICY_TYPES = {"tlsa", "sts", "no-policy-found"}   # RFC 8460 §4.4 policy-type
TOP_KEYS = {"organization-name", "date-range", "contact-info", "report-id", "policies"}
POLICY_KEYS = {"policy-type", "policy-string", "policy-domain", "mx-host"}
DETAIL_KEYS = {"result-type", "sending-mta-ip", "receiving-mx-hostname", "receiving-mx-helo",
               "receiving-ip", "failed-session-count", "additional-information",
               "failure-reason-code"}
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _datetime(v):
    if not isinstance(v, str) or not RFC3339.match(v):
        return None
    try:
        return datetime.datetime.fromisoformat(v.upper().replace("Z", "+00:00"))
    except ValueError:
        return None


def _count(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _ip(v):
    try:
        ipaddress.ip_address(v)
        return True
    except (ValueError, TypeError):
        return False


def _strings(v, nonempty=True):
    return isinstance(v, list) and (v or not nonempty) and all(isinstance(s, str) for s in v)


def rfc8460_problems(rep, whole_day=False):
    """All fields of RFC 8460 §4.4 in their types; required ones present;
    policy-type and result-type from the RFC's lists; date-range a valid
    RFC 3339 range (with whole_day: exactly one UTC day 00:00:00..23:59:59,
    what §4.1 asks of a daily report); unknown keys are problems."""
    p = []
    if not isinstance(rep, dict):
        return ["$: not an object"]
    for k in sorted(TOP_KEYS - set(rep)):
        p.append("$.%s: missing" % k)
    for k in sorted(set(rep) - TOP_KEYS):
        p.append("$.%s: unknown field" % k)
    for k in ("organization-name", "report-id"):
        if k in rep and (not isinstance(rep[k], str) or not rep[k]):
            p.append("$.%s: not a non-empty string" % k)
    if "contact-info" in rep and not (isinstance(rep["contact-info"], str) and
                                      re.match(r"^[^@\s]+@[^@\s]+$", rep["contact-info"])):
        p.append("$.contact-info: not an e-mail address")
    dr = rep.get("date-range")
    if "date-range" in rep:
        if not isinstance(dr, dict) or set(dr) != {"start-datetime", "end-datetime"}:
            p.append("$.date-range: want exactly start-datetime and end-datetime")
        else:
            s, e = _datetime(dr["start-datetime"]), _datetime(dr["end-datetime"])
            if s is None or e is None:
                p.append("$.date-range: not RFC 3339 date-times")
            elif s > e:
                p.append("$.date-range: start after end")
            elif whole_day:
                s, e = s.astimezone(datetime.timezone.utc), e.astimezone(datetime.timezone.utc)
                if (s.time() != datetime.time(0, 0, 0) or e - s != datetime.timedelta(
                        hours=23, minutes=59, seconds=59)):
                    p.append("$.date-range: not one whole UTC day")
    pols = rep.get("policies")
    if "policies" in rep and (not isinstance(pols, list) or not pols):
        p.append("$.policies: not a non-empty array")
        pols = []
    for i, ent in enumerate(pols or []):
        at = "$.policies[%d]" % i
        if not isinstance(ent, dict):
            p.append(at + ": not an object")
            continue
        for k in sorted(set(ent) - {"policy", "summary", "failure-details"}):
            p.append("%s.%s: unknown field" % (at, k))
        pol = ent.get("policy")
        if not isinstance(pol, dict):
            p.append(at + ".policy: missing or not an object")
        else:
            for k in sorted(set(pol) - POLICY_KEYS):
                p.append("%s.policy.%s: unknown field" % (at, k))
            if pol.get("policy-type") not in POLICY_TYPES:
                p.append("%s.policy.policy-type: %r not tlsa|sts|no-policy-found" % (
                    at, pol.get("policy-type")))
            if not isinstance(pol.get("policy-domain"), str) or not pol.get("policy-domain"):
                p.append(at + ".policy.policy-domain: missing")
            if "policy-string" in pol and not _strings(pol["policy-string"]):
                p.append(at + ".policy.policy-string: not an array of strings")
            if "mx-host" in pol and not _strings(pol["mx-host"]):   # erratum 6241: array
                p.append(at + ".policy.mx-host: not an array of strings")
        summ = ent.get("summary")
        if not isinstance(summ, dict):
            p.append(at + ".summary: missing or not an object")
        else:
            for k in ("total-successful-session-count", "total-failure-session-count"):
                if k not in summ:
                    p.append("%s.summary.%s: missing" % (at, k))
                elif not _count(summ[k]):
                    p.append("%s.summary.%s: not a non-negative integer" % (at, k))
            for k in sorted(set(summ) - {"total-successful-session-count",
                                         "total-failure-session-count"}):
                p.append("%s.summary.%s: unknown field" % (at, k))
        fds = ent.get("failure-details", [])
        if not isinstance(fds, list):
            p.append(at + ".failure-details: not an array")
            fds = []
        for j, fd in enumerate(fds):
            fat = "%s.failure-details[%d]" % (at, j)
            if not isinstance(fd, dict):
                p.append(fat + ": not an object")
                continue
            for k in sorted(set(fd) - DETAIL_KEYS):
                p.append("%s.%s: unknown field" % (fat, k))
            if fd.get("result-type") not in RESULT_TYPES:
                p.append("%s.result-type: %r not an RFC 8460 §4.3 result type" % (
                    fat, fd.get("result-type")))
            if not _count(fd.get("failed-session-count")):
                p.append(fat + ".failed-session-count: missing or not a non-negative integer")
            for k in ("sending-mta-ip", "receiving-ip"):
                if k in fd and not _ip(fd[k]):
                    p.append("%s.%s: %r not an IP address" % (fat, k, fd[k]))
            for k in ("receiving-mx-hostname", "receiving-mx-helo", "additional-information",
                      "failure-reason-code"):
                if k in fd and (not isinstance(fd[k], str) or not fd[k]):
                    p.append("%s.%s: not a non-empty string" % (fat, k))
        if (isinstance(summ, dict) and fds and _count(summ.get("total-failure-session-count"))
                and all(isinstance(fd, dict) and _count(fd.get("failed-session-count"))
                        for fd in fds)):
            if sum(fd["failed-session-count"] for fd in fds) != \
                    summ["total-failure-session-count"]:
                p.append(at + ": failed-session-counts do not add up to the failure total")
    return p


def test_checker_against_vectors():
    """The field-list checker itself: the stalwart example reports pass
    (rpt01 is the RFC's Appendix B example), rpt03 fails for the reasons
    its README gives, and single-field breakages of rpt01 are caught."""
    for name in ("rpt01.json", "rpt02.json"):
        with open(os.path.join(VECTORS, name), "rb") as f:
            assert rfc8460_problems(json.load(f)) == [], name
    with open(os.path.join(VECTORS, "rpt01.json"), "rb") as f:
        assert rfc8460_problems(json.load(f), whole_day=True) == []
    with open(os.path.join(VECTORS, "rpt02.json"), "rb") as f:   # a week, not a day
        assert rfc8460_problems(json.load(f), whole_day=True) == [
            "$.date-range: not one whole UTC day"]
    with open(os.path.join(VECTORS, "rpt03.json"), "rb") as f:
        probs = rfc8460_problems(json.load(f))
    assert "$.policies[0].policy.policy-domain: missing" in probs
    assert "$.policies[0].summary.total-failure-session-count: missing" in probs
    assert any(x.startswith("$.policies[1].policy.policy-type: 'invalid-policy-type'")
               for x in probs)
    for name in ("rpt01.eml", "rpt02.eml"):
        with open(os.path.join(VECTORS, name), "rb") as f:
            msg = email.message_from_bytes(f.read(), policy=email.policy.compat32)
        # rpt02.eml carries plain JSON as "application/tlsrpt" (a pre-RFC name)
        att = [part for part in msg.walk() if part.get_content_type() in (
            "application/tlsrpt+gzip", "application/tlsrpt+json", "application/tlsrpt")]
        assert len(att) == 1, name
        data = att[0].get_payload(decode=True)
        if att[0].get_content_type() == "application/tlsrpt+gzip":
            data = gzip.decompress(data)
        assert rfc8460_problems(json.loads(data)) == [], name

    with open(os.path.join(VECTORS, "rpt01.json"), "rb") as f:
        good = json.load(f)
    fd0 = ("policies", 0, "failure-details", 0)
    breakages = [
        (("report-id",), None, "$.report-id: missing"),
        (("contact-info",), "nobody", "$.contact-info: not an e-mail address"),
        (("date-range", "end-datetime"), "2016-04-01 23:59:59", "$.date-range: not RFC 3339"),
        (("policies", 0, "summary", "total-successful-session-count"), "5326", "not a non-neg"),
        (("policies", 0, "summary", "total-failure-session-count"), 304, "do not add up"),
        (("policies", 0, "policy", "policy-type"), "dane", "policy-type: 'dane'"),
        (("policies", 0, "policy", "mx-host"), "*.mail.company-y.example", "mx-host: not an"),
        (fd0 + ("result-type",), "certificate-revoked", "result-type: 'certificate-revoked'"),
        (fd0 + ("sending-mta-ip",), "2001:db8::zz", "sending-mta-ip: '2001:db8::zz'"),
        (fd0 + ("failed-session-count",), True, "failed-session-count: missing or not"),
        (fd0 + ("colour",), "blue", "colour: unknown field"),
    ]
    for path, value, want in breakages:
        bad = json.loads(json.dumps(good))
        o = bad
        for k in path[:-1]:
            o = o[k]
        if value is None:
            del o[path[-1]]
        else:
            o[path[-1]] = value
        probs = rfc8460_problems(bad, whole_day=True)
        assert any(want in x for x in probs), (path, value, probs)


# ---------------------------------------------------------------------------
# The world and the day's traffic.

COUNTS = {"enf.test": 3, "exp.test": 2, "plain.test": 4, "self.test": 2, "nopol.test": 1,
          "f404.test": 2, "webpki.test": 3, "invalid.test": 1}
DELIVERED = [d for d in COUNTS if d != "self.test"]
POLICIES = {   # domain -> (mode, mx patterns) of the policies that are served correctly
    "enf.test": ("enforce", ["*.enf.test"]),
    "exp.test": ("testing", ["mx.exp.test"]),
    "plain.test": ("testing", ["mx.plain.test"]),
    "self.test": ("enforce", ["mx.self.test"]),
}
FETCH_FAIL = {"f404.test": "sts-policy-fetch-error", "webpki.test": "sts-webpki-invalid",
              "invalid.test": "sts-policy-invalid"}
GOOD_MX = "mx.good.test"


def build_world(world):
    ca = world.ca
    pf = world.postfix(["enf.test", "nopol.test", "f404.test", "webpki.test", "invalid.test",
                        "reports.test"], ["mx2.enf.test", GOOD_MX])
    fakes = {
        "mx1.enf.test": world.fake_mx("mx1.enf.test",
                                      {"cert": ca.leaf(["mx1.enf.test"], "wrongname")}),
        "mx.exp.test": world.fake_mx("mx.exp.test", {"cert": ca.leaf(["mx.exp.test"], "expired")}),
        "mx.plain.test": world.fake_mx("mx.plain.test", {"starttls": "none"}),
        "mx.self.test": world.fake_mx("mx.self.test",
                                      {"cert": ca.leaf(["mx.self.test"], "selfsigned")}),
    }
    world.mx("enf.test", [(10, "mx1.enf.test"), (20, "mx2.enf.test")])
    for d in ("exp.test", "plain.test", "self.test"):
        world.mx(d, ["mx." + d])
    for d in ("nopol.test", "f404.test", "webpki.test", "invalid.test", "reports.test"):
        world.mx(d, [GOOD_MX])
    with world.https.batch():
        for d, (mode, mx) in POLICIES.items():
            world.sts(d, mode, mx)
        world.sts("f404.test", "enforce", [GOOD_MX], status=404)
        world.sts("webpki.test", "enforce", [GOOD_MX], cert_kind="wrongname")
        world.sts("invalid.test", body="version: STSv1\nmode: bogus\nmx: %s\nmax_age: 86400\n"
                  % GOOD_MX)
    rcv = Receiver(world, "reports-https.reports.test", [])
    for d in COUNTS:
        world.tlsrpt(d, ["mailto:" + RUA, rcv.url] if d == "enf.test" else "mailto:" + RUA)
    return pf, fakes, rcv


def expected_policy(domain):
    mode, mx = POLICIES[domain]
    return {"policy-type": "sts",
            "policy-string": ["version: STSv1", "mode: " + mode] + ["mx: " + m for m in mx]
            + ["max_age: 86400"],
            "policy-domain": domain, "mx-host": mx}


def new_connections(relay):
    """domain -> deliveries logged sent that opened their own connection (no
    conn_use=): with connection reuse (issue 6) a TLS session is one
    connection, which may carry several messages (RFC 8460 §4.4)."""
    out = dict.fromkeys(COUNTS, 0)
    for m in re.finditer(r"to=<[^>@]*@([^>]+)>, relay=[^,]*, (conn_use=\d+, )?delay=[^\n]*"
                         r"status=sent", relay.log()):
        if m.group(1) in out and not m.group(2):
            out[m.group(1)] += 1
    return out


def expected(world, conns):
    """domain -> {policy-key: (success, failure, {(rt, sip, mxhost, mxip): n})}, from
    RFC 8460: one session per connection to an MX (§4.2), failures by their §4.3
    type. policy-key is the policy object as sorted JSON. The policy-fetch
    failures (§4.3.2.2) are checked by check_fetch_failure instead. conns:
    new_connections() -- a connection that carried mail may have been reused;
    one that failed its TLS check never is."""
    ip = world.ips
    s = "127.0.0.1"
    n = COUNTS
    c = conns
    pk = lambda d: json.dumps(expected_policy(d), sort_keys=True)  # noqa: E731
    return {
        "enf.test": {pk("enf.test"): (c["enf.test"], n["enf.test"], {
            ("certificate-host-mismatch", s, "mx1.enf.test", ip["mx1.enf.test"]):
                n["enf.test"]})},
        "exp.test": {pk("exp.test"): (0, c["exp.test"], {
            ("certificate-expired", s, "mx.exp.test", ip["mx.exp.test"]): c["exp.test"]})},
        "plain.test": {pk("plain.test"): (0, c["plain.test"], {
            ("starttls-not-supported", s, "mx.plain.test", ip["mx.plain.test"]):
                c["plain.test"]})},
        "self.test": {pk("self.test"): (0, n["self.test"], {
            ("certificate-not-trusted", s, "mx.self.test", ip["mx.self.test"]):
                n["self.test"]})},
        "nopol.test": {json.dumps({"policy-type": "no-policy-found",
                                   "policy-domain": "nopol.test"}, sort_keys=True):
                       (c["nopol.test"], 0, {})},
    }


def detail_key(fd):
    return (fd["result-type"], fd.get("sending-mta-ip"), fd.get("receiving-mx-hostname"),
            fd.get("receiving-ip"))


def summarize(rep, grouping_errors):
    """policy-key -> (success, failure, {detail key: count}); a detail key
    appearing twice in one policy is a grouping error (issue 5: grouped by
    result-type/sending-mta-ip/receiving-mx-hostname/receiving-ip): noted in
    grouping_errors (asserted at the end, so the other checks still run) and
    summed."""
    out = {}
    for ent in rep["policies"]:
        details = {}
        for fd in ent.get("failure-details", []):
            k = detail_key(fd)
            if k in details:
                grouping_errors.append((rep["report-id"], fd))
            details[k] = details.get(k, 0) + fd["failed-session-count"]
        key = json.dumps(ent["policy"], sort_keys=True)
        assert key not in out, ("policy listed twice", ent["policy"])
        out[key] = (ent["summary"]["total-successful-session-count"],
                    ent["summary"]["total-failure-session-count"], details)
    return out


def check_fetch_failure(rep, domain, grouping_errors, conns):
    """A policy that could not be fetched (RFC 8460 §4.3.2.2): one failure of
    that type per fetch (the messages of the day all fell into one fetch or
    its 5-minute back-off), with no MX (nothing was connected), filed under
    policy-type sts; the delivery then went on without a policy over verified
    TLS to a good MX: one success per connection (filed under sts without a
    policy-string, or under no-policy-found: the RFC leaves that open)."""
    n = 1
    succ = fail = 0
    fetch_details = []
    for ent in rep["policies"]:
        pol = ent["policy"]
        assert pol["policy-domain"] == domain
        assert pol["policy-type"] in ("sts", "no-policy-found"), pol
        assert "policy-string" not in pol and "mx-host" not in pol, pol  # none was applied
        succ += ent["summary"]["total-successful-session-count"]
        fail += ent["summary"]["total-failure-session-count"]
        for fd in ent.get("failure-details", []):
            assert pol["policy-type"] == "sts", (domain, pol, fd)
            fetch_details.append(fd)
    assert (succ, fail) == (conns[domain], n), (domain, rep)
    assert fetch_details and {fd["result-type"] for fd in fetch_details} == {FETCH_FAIL[domain]}
    assert sum(fd["failed-session-count"] for fd in fetch_details) == n
    for fd in fetch_details:
        assert "receiving-mx-hostname" not in fd and "receiving-ip" not in fd, fd
    grouping_errors.extend((rep["report-id"], fd) for fd in fetch_details[1:])


def check_report(world, rep, domain, grouping_errors, conns):
    assert rfc8460_problems(rep, whole_day=True) == [], (domain, rep)
    assert rep["organization-name"] == ORG
    assert rep["contact-info"] == CONTACT
    assert rep["date-range"] == {"start-datetime": DAY + "T00:00:00Z",
                                 "end-datetime": DAY + "T23:59:59Z"}
    assert all(e["policy"]["policy-domain"] == domain for e in rep["policies"])
    if domain in FETCH_FAIL:
        check_fetch_failure(rep, domain, grouping_errors, conns)
    else:
        assert summarize(rep, grouping_errors) == expected(world, conns)[domain], (domain, rep)


def report_mail(m):
    """Checks one report as it arrived in the Maildir (RFC 8460 §5.3,
    RFC 6522, RFC 8689) -> (domain, report dict, gzip bytes)."""
    msg = m.msg
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type").lower() == "tlsrpt"
    domain = msg["TLS-Report-Domain"].strip()
    assert msg["TLS-Report-Submitter"].strip() == SUBMITTER
    assert msg["TLS-Required"].strip().lower() == "no"
    # RFC 5321 §4.5.5: not a DSN, so a real sender: the contact address
    assert msg["Return-Path"].strip() == "<%s>" % CONTACT
    assert msg["To"].strip().strip("<>") == RUA
    parts = msg.get_payload()
    assert isinstance(parts, list) and len(parts) == 2
    assert parts[0].get_content_type() == "text/plain"     # the human-readable part
    att = parts[1]
    assert att.get_content_type() == "application/tlsrpt+gzip"
    assert (att.get("Content-Disposition") or "").split(";")[0].strip().lower() == "attachment"
    gz = att.get_payload(decode=True)
    assert gz[:2] == b"\x1f\x8b"
    rep = json.loads(gzip.decompress(gz))
    subject = " ".join(msg["Subject"].split())
    assert subject == "Report Domain: %s Submitter: %s Report-ID: <%s>" % (
        domain, SUBMITTER, rep["report-id"])
    # §5.1: submitter!policy-domain!begin-timestamp!end-timestamp[!unique-id].json.gz,
    # the timestamps those of the report's date-range
    fm = re.match(r"^([^!]+)!([^!]+)!(\d+)!(\d+)(![A-Za-z0-9._-]+)?\.json\.gz$",
                  att.get_filename() or "")
    assert fm, att.get_filename()
    assert fm.group(1) == SUBMITTER and fm.group(2) == domain
    assert (int(fm.group(3)), int(fm.group(4))) == (DAY_START, DAY_START + 86399)
    return domain, rep, gz


def wait_delivered(relay):
    for d in DELIVERED:
        relay.wait_log(r"to=<[^>]*@%s>, .*status=sent" % re.escape(d), timeout=30,
                       count=COUNTS[d])
    relay.wait_log(r"to=<[^>]*@self\.test>, .*status=deferred", timeout=30,
                   count=COUNTS["self.test"])
    relay.wait_log(r"to=<postmaster@reports\.test>, .*status=sent", timeout=30)


def show(relay, day, now):
    p = relay.cli("tlsrpt", "show", "--day", day, "--json",
                  env={"STSRELAY_FAKE_NOW": str(now)})
    assert p.returncode == 0, p.stderr.decode()
    return {r["policies"][0]["policy"]["policy-domain"]: r for r in json.loads(p.stdout)}


def test_mixed_day_to_postfix_mailbox(world, relay):
    pf, fakes, rcv = build_world(world)
    try:
        r = relay({"tlsrpt_org_name": ORG, "tlsrpt_contact": CONTACT,
                   "tlsrpt_send_at": "00:15", "retry_schedule": "1h"},
                  start=False, env={"STSRELAY_FAKE_NOW": str(T_TRAFFIC)})
        r.config.update(dkim_config(publish_dkim(world, r, "e2e"), "e2e"))
        r.start()

        # --- day D: the traffic ---
        for d, n in COUNTS.items():
            for i in range(n):
                rcpt = "user%d@%s" % (i, d)
                assert r.send("sender@client.world.test", [rcpt],
                              sample_message(to=rcpt, subject="%s %d" % (d, i))) == {}
        # proof that deliveries to reports.test are counted when they are not reports
        assert r.send("sender@client.world.test", ["postmaster@reports.test"],
                      sample_message(to="postmaster@reports.test")) == {}
        wait_delivered(r)
        conns = new_connections(r)
        # one policy fetch reached each failing policy host that nginx logs
        # (the later messages fell into the 5-minute back-off): the reports
        # count that one fetch, not the messages
        for d in ("f404.test", "invalid.test"):
            assert world.https.fetch_count(d, 1) == 1, d

        # each MX saw what the expectations assume (Postfix's own local
        # delivery may lag the relay's "sent" by a moment)
        for d in ("enf.test", "nopol.test", "f404.test", "webpki.test", "invalid.test"):
            assert len(pf.wait_messages(domain=d, count=COUNTS[d], timeout=15)) == COUNTS[d], d
        assert sum(len(s.messages) for s in fakes["mx1.enf.test"].sessions) == 0
        assert len(fakes["mx1.enf.test"].sessions) == COUNTS["enf.test"]
        for h in ("mx.exp.test", "mx.plain.test"):
            assert sum(len(s.messages) for s in fakes[h].sessions) == COUNTS[h[3:]], h
        assert sum(len(s.messages) for s in fakes["mx.self.test"].sessions) == 0
        assert len(fakes["mx.self.test"].sessions) == COUNTS["self.test"]

        day_before = show(r, DAY, T_TRAFFIC)
        assert sorted(day_before) == sorted(list(COUNTS) + ["reports.test"])
        rp = day_before["reports.test"]["policies"]
        assert [(e["policy"]["policy-type"], e["summary"]["total-successful-session-count"])
                for e in rp] == [("no-policy-found", 1)]
        assert r.stop() == 0

        # --- D+1 00:14:55, before send_at: the daemon looks (and runs the
        # empty D-1, still in its window) but does not send D early ---
        r.env["STSRELAY_FAKE_NOW"] = str(T_EARLY)
        r.start()
        r.wait_log(r"tlsrpt %s: run complete: 0 domains" % PREV_DAY, timeout=15)
        time.sleep(1.5)
        assert not re.search(r"tlsrpt %s: sending" % DAY, r.log()), r.log(3000)
        assert r.stop() == 0
        assert pf.messages(RUA) == []

        # --- D+1: the daemon's own daily run sends day D ---
        r.env["STSRELAY_FAKE_NOW"] = str(T_RUN)
        r.start()
        r.wait_log(r"tlsrpt %s: sending reports" % DAY, timeout=15)
        r.wait_log(r"tlsrpt %s: run complete: 9 domains, 9 sent, 0 already sent, "
                   r"1 without _smtp._tls" % DAY, timeout=30)
        mails = pf.wait_messages(RUA, count=len(COUNTS), timeout=30)
        assert len(mails) == len(COUNTS)
        r.wait_log(r"to=<%s>, .*status=sent" % re.escape(RUA), timeout=15, count=len(COUNTS))

        got = {}
        for m in mails:
            assert dkim_verifies(world, m.raw)
            domain, rep, gz = report_mail(m)
            assert domain not in got, "two reports for %s" % domain
            got[domain] = (rep, gz)
        assert sorted(got) == sorted(COUNTS)
        grouping_errors = []
        for domain, (rep, _) in got.items():
            check_report(world, rep, domain, grouping_errors, conns)
            assert rep["report-id"] != day_before["reports.test"]["report-id"]
            assert rep == day_before[domain], domain   # same data as `show` on day D
        assert len({rep["report-id"] for rep, _ in got.values()}) == len(got)

        # the https: rua of enf.test got the same report, gzip'd, right media type
        assert len(rcv.posts) == 1
        path, ctype, body = rcv.posts[0]
        assert path == "/v1/tlsrpt" and ctype == "application/tlsrpt+gzip"
        assert json.loads(gzip.decompress(body)) == got["enf.test"][0]

        # the report mails' own deliveries are not in D+1's data; a manual
        # send of D afterwards sends nothing twice
        nxt = show(r, NEXT_DAY, T_RUN + 120)
        assert "reports.test" not in nxt, nxt.get("reports.test")
        assert show(r, DAY, T_RUN + 120) == day_before    # D is unchanged
        p = r.cli("tlsrpt", "send", "--day", DAY, env={"STSRELAY_FAKE_NOW": str(T_RUN + 120)})
        assert p.returncode == 0, p.stdout + p.stderr
        assert b"0 sent, 9 already sent" in p.stdout, p.stdout
        assert r.stop() == 0
        assert len(pf.messages(RUA)) == len(COUNTS) and len(rcv.posts) == 1
        # issue 5: failure-details grouped by result-type, sending-mta-ip,
        # receiving-mx-hostname, receiving-ip - one entry each, whatever the
        # reason text said
        assert grouping_errors == [], "failure-details split: %r" % grouping_errors
    finally:
        rcv.close()
