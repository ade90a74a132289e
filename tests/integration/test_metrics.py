# metrics_listen proven from a test-world run: GET /metrics parsed by
# python3-prometheus-client's text-format parser (every family of DESIGN.md
# with its type), its counters equal to what the delivery log and the
# TLS-RPT record of the same run say, kept across a reload; GET /healthz.
import json
import re
import socket
import time
import urllib.error
import urllib.request

import pytest

from tests.world import free_port, sample_message, wait_until

parser = pytest.importorskip("prometheus_client.parser")

# DESIGN.md "metrics_listen": family (as the parser names it: a counter's
# family drops _total) -> type
FAMILIES = {
    "stsrelay_queue_messages": "gauge",
    "stsrelay_queue_recipients": "gauge",
    "stsrelay_accepted_messages": "counter",
    "stsrelay_deliveries": "counter",
    "stsrelay_tls_sessions": "counter",
    "stsrelay_sts_decisions": "counter",
    "stsrelay_policy_fetches": "counter",
    "stsrelay_tlsrpt_reports": "counter",
    "stsrelay_delivery_seconds": "histogram",
    "stsrelay_accept_seconds": "histogram",
}
RFC8460_TYPES = {"starttls-not-supported", "certificate-host-mismatch", "certificate-expired",
                 "certificate-not-trusted", "validation-failure", "sts-policy-fetch-error",
                 "sts-policy-invalid", "sts-webpki-invalid"}
# domain -> messages; what each MX does is set up in the test
TRAFFIC = {"good.test": 4, "exp.test": 2, "plain.test": 2, "nopol.test": 3, "bounce.test": 2,
           "defer.test": 2}


def get(url, timeout=10):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type"), resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read().decode()


def scrape(base):
    """{family: (type, {(sample name, sorted labels): value})} via the parser."""
    status, ctype, text = get(base + "/metrics")
    assert status == 200, text
    assert ctype.startswith("text/plain") and "version=0.0.4" in ctype, ctype
    out = {}
    for fam in parser.text_string_to_metric_families(text):
        assert fam.name not in out, "family %s twice" % fam.name
        out[fam.name] = (fam.type, {(s.name, tuple(sorted(s.labels.items()))): s.value
                                    for s in fam.samples})
    return out


def value(m, fam, sample, **labels):
    return m[fam][1].get((sample, tuple(sorted(labels.items()))), 0)


def log_statuses(relay):
    out = {"sent": 0, "deferred": 0, "bounced": 0}
    for s in re.findall(r"to=<[^>]+>, relay=.*, status=(sent|deferred|bounced) ", relay.log()):
        out[s] += 1
    return out


def tls_record(relay):
    """result -> sessions in today's TLS-RPT record (`tlsrpt show --local`)."""
    p = relay.cli("tlsrpt", "show", "--day", time.strftime("%Y-%m-%d", time.gmtime()),
                  "--json")
    assert p.returncode == 0, p.stderr.decode()
    out = {}
    for rep in json.loads(p.stdout):
        for ent in rep["policies"]:
            out["success"] = out.get("success", 0) + \
                ent["summary"]["total-successful-session-count"]
            for fd in ent.get("failure-details", []):
                out[fd["result-type"]] = out.get(fd["result-type"], 0) + \
                    fd["failed-session-count"]
    return out


def test_metrics_scraped_and_parsed(world, relay):
    ca = world.ca
    pf = world.postfix(["good.test", "nopol.test"], ["mx.good.test"])
    world.fake_mx("mx.exp.test", {"cert": ca.leaf(["mx.exp.test"], "expired")})
    world.fake_mx("mx.plain.test", {"starttls": "none"})
    world.fake_mx("mx.bounce.test", {"reply": {"rcpt": "550 5.1.1 no such user"}})
    world.fake_mx("mx.defer.test", {"reply": {"rcpt": "451 4.3.0 try later"}})
    world.mx("good.test", ["mx.good.test"])
    world.mx("nopol.test", ["mx.good.test"])
    for d in ("exp.test", "plain.test", "bounce.test", "defer.test"):
        world.mx(d, ["mx." + d])
    with world.https.batch():
        world.sts("good.test", "enforce", ["mx.good.test"])
        world.sts("exp.test", "testing", ["mx.exp.test"])
        world.sts("plain.test", "testing", ["mx.plain.test"])
    port = free_port()
    base = "http://127.0.0.1:%d" % port
    # retries an hour apart: every delivery is logged once while the test looks
    r = relay({"metrics_listen": "127.0.0.1:%d" % port, "retry_schedule": "1h"})
    r.wait_log(r"metrics: serving /metrics and /healthz on 127\.0\.0\.1:%d" % port)

    # the first spool check runs at start; /healthz says ok once it is done
    wait_until(lambda: get(base + "/healthz")[0] == 200, 10, what="/healthz 200",
               error=AssertionError)
    assert get(base + "/healthz")[2] == "ok\n"
    assert get(base + "/nothing")[0] == 404
    # a request head larger than the server's bound is refused, not stored
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 65536 +
                  b"\r\n\r\n")
        head = b""
        try:
            while b"\r\n" not in head:
                chunk = c.recv(4096)
                if not chunk:
                    break
                head += chunk
        except ConnectionResetError:
            pass
    assert head == b"" or re.match(rb"HTTP/1\.1 4\d\d ", head), head[:100]
    assert get(base + "/healthz")[0] == 200

    total = 0
    for d, n in TRAFFIC.items():
        for i in range(n):
            rcpt = "user%d@%s" % (i, d)
            assert r.send("sender@client.world.test", [rcpt], sample_message(to=rcpt)) == {}
            total += 1
    # and one through the sendmail command (the maildrop, picked up)
    p = r.cli("sendmail", "-f", "sender@client.world.test", "viasendmail@good.test",
              input=sample_message(to="viasendmail@good.test"))
    assert p.returncode == 0, p.stderr
    r.wait_log(r"status=sent", count=TRAFFIC["good.test"] + TRAFFIC["exp.test"] +
               TRAFFIC["plain.test"] + TRAFFIC["nopol.test"] + 1, timeout=60)
    r.wait_log(r"status=bounced", count=TRAFFIC["bounce.test"], timeout=30)
    r.wait_log(r"status=deferred", count=TRAFFIC["defer.test"], timeout=30)
    # the bounce notices to sender@client.world.test bounce too (the name
    # does not exist) and are dropped: let them be logged before comparing
    wait_until(lambda: log_statuses(r)["bounced"] >= 2 * TRAFFIC["bounce.test"], 30,
               what="the bounce notices' own bounces", error=AssertionError)
    pf.wait_messages(domain="good.test", count=TRAFFIC["good.test"] + 1, timeout=15)

    m = scrape(base)
    for fam, typ in FAMILIES.items():
        assert fam in m, "family %s missing; got %s" % (fam, sorted(m))
        assert m[fam][0] == typ, (fam, m[fam][0])

    # counters against the log of the same run
    st = log_statuses(r)
    for s in ("sent", "deferred", "bounced"):
        assert value(m, "stsrelay_deliveries", "stsrelay_deliveries_total", status=s) == st[s], s
    assert value(m, "stsrelay_accepted_messages", "stsrelay_accepted_messages_total",
                 source="smtp") == total
    assert value(m, "stsrelay_accepted_messages", "stsrelay_accepted_messages_total",
                 source="sendmail") == 1
    assert value(m, "stsrelay_accepted_messages", "stsrelay_accepted_messages_total",
                 source="submission") == 0
    # bounce notices are made inside: not accepted from anyone
    assert sum(v for (name, _), v in m["stsrelay_accepted_messages"][1].items()
               if name.endswith("_total")) == total + 1
    # the 250 after DATA: SMTP sessions only (a sendmail drop has no DATA)
    assert value(m, "stsrelay_accept_seconds", "stsrelay_accept_seconds_count") == total
    assert value(m, "stsrelay_delivery_seconds", "stsrelay_delivery_seconds_count") == st["sent"]
    buckets = sorted((float(dict(lbl)["le"]), v) for (name, lbl), v in
                     m["stsrelay_delivery_seconds"][1].items() if name.endswith("_bucket"))
    assert buckets[-1] == (float("inf"), st["sent"])
    assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:]))   # cumulative

    # TLS results: the same sessions the TLS-RPT record holds
    rec = tls_record(r)
    assert rec.get("certificate-expired", 0) >= 1 and rec.get("starttls-not-supported", 0) >= 1
    for result in set(rec) | RFC8460_TYPES | {"success"}:
        assert value(m, "stsrelay_tls_sessions", "stsrelay_tls_sessions_total",
                     result=result) == rec.get(result, 0), result
    dec = {dict(lbl)["decision"]: v for (name, lbl), v in m["stsrelay_sts_decisions"][1].items()
           if name.endswith("_total")}
    assert dec.get("enforce", 0) >= TRAFFIC["good.test"]
    assert dec.get("testing", 0) >= TRAFFIC["exp.test"] + TRAFFIC["plain.test"]
    fetched = value(m, "stsrelay_policy_fetches", "stsrelay_policy_fetches_total",
                    result="success")
    assert fetched == sum(world.https.fetch_count(d) for d in ("good.test", "exp.test",
                                                                "plain.test")) == 3
    # the queue holds the deferred messages
    wait_until(lambda: value(scrape(base), "stsrelay_queue_messages",
                             "stsrelay_queue_messages") == TRAFFIC["defer.test"], 10,
               what="queue_messages to be the deferred ones", error=AssertionError)

    # a reload keeps every counter (Prometheus's rate() needs that)
    r.reload()
    r.wait_log(r"configuration reloaded from", timeout=15)
    m2 = scrape(base)
    for fam in ("stsrelay_deliveries", "stsrelay_accepted_messages", "stsrelay_tls_sessions"):
        for k, v in m[fam][1].items():
            assert m2[fam][1].get(k, 0) >= v, (fam, k)
    assert value(m2, "stsrelay_deliveries", "stsrelay_deliveries_total", status="sent") == \
        st["sent"]
    status, _, body = get(base + "/healthz")
    assert status == 200, body
