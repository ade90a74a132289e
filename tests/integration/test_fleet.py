# A fleet: three stsrelay daemons on one Redis (Debian's redis-server,
# started by the test) in the loopback world. Proven from real deliveries:
# each MTA-STS policy is fetched once for the whole fleet (nginx's access
# log), Redis killed with -9 mid-run stops no mail and costs one warning per
# node, and the next day exactly one TLS-RPT report per (domain, rua) goes
# out for the fleet, its counts the sum of every node's own record.
import calendar
import gzip
import json
import re
import smtplib
import threading
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.world import free_port, sample_message, wait_until
from test_tlsrpt_rfc import dkim_config, publish_dkim

DAY = "2026-07-08"
DAY_START = calendar.timegm((2026, 7, 8, 0, 0, 0))
T_TRAFFIC = DAY_START + 10 * 3600                 # D 10:00Z
# D+1 01:14:57Z: send_at 00:15 plus the largest spread (1 h) minus 3 s, so
# the daily run of D is due at the first look of a restarted daemon
T_RUN = DAY_START + 86400 + 15 * 60 + 3600 - 3
DOMAINS = ["d%d.fleet.test" % i for i in range(10)]
LATE = "late.fleet.test"     # first mailed while Redis is down
GOOD_MX = "mx.fleet.test"
RUA = "tlsrpt@reports.test"
NODES = 3
PER_PHASE = 150      # messages before and during the Redis outage


def fleet_world(world):
    pf = world.postfix(DOMAINS + [LATE, "reports.test"], [GOOD_MX])
    with world.https.batch():
        for d in DOMAINS + [LATE]:
            world.sts(d, "enforce", [GOOD_MX])
    for d in DOMAINS + [LATE, "reports.test"]:
        world.mx(d, [GOOD_MX])
    for d in DOMAINS + [LATE]:
        world.tlsrpt(d, "mailto:" + RUA)
    return pf


def metrics(port):
    """{(sample name, sorted labels): value} of GET /metrics."""
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def start_nodes(world, relay, redis):
    """Three nodes of one organisation: one hostname, one DKIM key, their
    own spools and node names."""
    nodes, dkim = [], None
    for i in range(NODES):
        r = relay({"redis_url": redis.url, "node_name": "node%d" % (i + 1),
                   "metrics_listen": str(free_port()),
                   "tlsrpt_org_name": "Fleet Org", "tlsrpt_contact": "tls@relay.world.test",
                   "tlsrpt_send_at": "00:15", "retry_schedule": "1s,2s,5s"},
                  start=False, env={"STSRELAY_FAKE_NOW": str(T_TRAFFIC)})
        if dkim is None:
            dkim = dkim_config(publish_dkim(world, r, "fleet"), "fleet")
        r.config.update(dkim)
        r.start()
        r.wait_log(r"redis 127\.0\.0\.1:%d: connected" % redis.port, timeout=15)
        nodes.append(r)
    return nodes


def send_batch(nodes, start, n):
    """n messages, message k to DOMAINS[k % 10] through node k % 3: the
    nodes at the same time (one thread and SMTP connection each), so the
    first message for a domain reaches several nodes at once."""
    per_node = {}
    for k in range(start, start + n):
        per_node.setdefault(k % len(nodes), []).append(k)
    errors = []

    def submit(r, ks):
        try:
            with smtplib.SMTP(r.host, r.port, local_hostname="client.world.test",
                              timeout=30) as s:
                for k in ks:
                    rcpt = "user%d@%s" % (k, DOMAINS[k % len(DOMAINS)])
                    refused = s.sendmail("sender@client.world.test", [rcpt],
                                         sample_message(to=rcpt, subject="fleet %d" % k))
                    if refused:
                        errors.append(refused)
        except (OSError, smtplib.SMTPException) as e:
            errors.append(e)
    threads = [threading.Thread(target=submit, args=(nodes[i], ks))
               for i, ks in per_node.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads) and errors == [], errors


def sent_count(r):
    return len(re.findall(r"to=<user\d+@(d\d|late)\.fleet\.test>, .*status=sent", r.log()))


def wait_all_sent(nodes, total, timeout=120):
    wait_until(lambda: sum(sent_count(r) for r in nodes) >= total, timeout,
               what="%d deliveries logged sent" % total, error=AssertionError)
    assert sum(sent_count(r) for r in nodes) == total


def show(r, local, now):
    args = ["tlsrpt", "show", "--day", DAY, "--json"] + (["--local"] if local else [])
    p = r.cli(*args, env={"STSRELAY_FAKE_NOW": str(now)})
    assert p.returncode == 0, p.stderr.decode()
    return {rep["policies"][0]["policy"]["policy-domain"]: rep for rep in json.loads(p.stdout)}


def summarize(rep):
    """policy object (sorted JSON) -> [success, failure, {detail: count}]."""
    out = {}
    for ent in rep["policies"]:
        key = json.dumps(ent["policy"], sort_keys=True)
        e = out.setdefault(key, [0, 0, {}])
        e[0] += ent["summary"]["total-successful-session-count"]
        e[1] += ent["summary"]["total-failure-session-count"]
        for fd in ent.get("failure-details", []):
            dk = (fd["result-type"], fd.get("sending-mta-ip"), fd.get("receiving-ip"))
            e[2][dk] = e[2].get(dk, 0) + fd["failed-session-count"]
    return out


def add_summaries(a, b):
    for key, (s, f, det) in b.items():
        e = a.setdefault(key, [0, 0, {}])
        e[0] += s
        e[1] += f
        for dk, n in det.items():
            e[2][dk] = e[2].get(dk, 0) + n
    return a


def lines(r, rx):
    return [l for l in r.log().splitlines() if re.search(rx, l)]


def test_three_nodes_one_redis(world, relay):
    pf = fleet_world(world)
    redis = world.redis()
    nodes = start_nodes(world, relay, redis)

    # --- phase 1, Redis up: 150 messages over three nodes ---
    send_batch(nodes, 0, PER_PHASE)
    wait_all_sent(nodes, PER_PHASE)
    for d in DOMAINS:
        # every node delivered to every domain, under the one fetch
        assert world.https.fetch_count(d, 1) == 1, (d, world.https.requests(d))
    for r in nodes:
        assert len(lines(r, r"to=<user\d+@d\d\.fleet\.test>, .*status=sent.*sts=enforce")) \
            == sent_count(r)
    # the fleet's copies came from Redis: the nodes that did not fetch count
    # them as hits, and all fetches together are one per domain
    assert len(redis.keys("stsrelay:sts:policy:*")) == len(DOMAINS), redis.keys("stsrelay:*")
    ms = [metrics(int(r.config["metrics_listen"])) for r in nodes]
    hits = [m.get(("stsrelay_fleet_policies_total", (("result", "hit"),)), 0) for m in ms]
    fetches = [m.get(("stsrelay_policy_fetches_total", (("result", "success"),)), 0)
               for m in ms]
    assert sum(fetches) == len(DOMAINS) and sum(hits) == (NODES - 1) * len(DOMAINS), \
        (fetches, hits)
    assert all(m[("stsrelay_redis_up", ())] == 1 for m in ms)

    # --- Redis killed mid-run: mail keeps flowing, one warning per node ---
    redis.kill9()
    for r in nodes:
        r.wait_log(r"warning: redis .*working from the local cache", timeout=20)
    send_batch(nodes, PER_PHASE, PER_PHASE)
    # a domain none of them knows yet: each node fetches its policy alone,
    # at once, instead of waiting for the fleet
    for i, r in enumerate(nodes):
        rcpt = "user%d@%s" % (1000 + i, LATE)
        assert r.send("sender@client.world.test", [rcpt], sample_message(to=rcpt)) == {}
    wait_all_sent(nodes, 2 * PER_PHASE + NODES)
    assert world.https.fetch_count(LATE, NODES) == NODES
    # the fleet's sums cannot be read now (75, the way to this node's own
    # record named); --local reads it
    p = nodes[0].cli("tlsrpt", "show", "--day", DAY, env={"STSRELAY_FAKE_NOW": str(T_TRAFFIC)})
    assert p.returncode == 75 and b"--local" in p.stderr, (p.returncode, p.stderr)
    p = nodes[0].cli("tlsrpt", "show", "--day", DAY, "--local",
                     env={"STSRELAY_FAKE_NOW": str(T_TRAFFIC)})
    assert p.returncode == 0, p.stderr
    time.sleep(1)    # several reconnect tries of each node fail meanwhile
    for r in nodes:
        assert len(lines(r, r"warning: redis ")) == 1, lines(r, r"warning: |error: ")
        assert metrics(int(r.config["metrics_listen"]))[("stsrelay_redis_up", ())] == 0
    assert len(pf.wait_messages(count=2 * PER_PHASE + NODES, timeout=30)) == \
        2 * PER_PHASE + NODES

    # --- Redis back (its append-only file): the counts merged once ---
    redis.start()
    for r in nodes:
        r.wait_log(r"redis 127\.0\.0\.1:%d.*: connected again" % redis.port, timeout=40)
    local = {}
    for r in nodes:
        for d, rep in show(r, True, T_TRAFFIC + 600).items():
            add_summaries(local.setdefault(d, {}), summarize(rep))
    assert sorted(local) == sorted(DOMAINS + [LATE])
    for d in DOMAINS + [LATE]:
        assert sum(s + f for s, f, _ in local[d].values()) >= 1

    def fleet_equals_local():
        fl = show(nodes[0], False, T_TRAFFIC + 600)
        return {d: summarize(rep) for d, rep in fl.items()} == local
    # the background merge runs every 2 s on each node
    wait_until(fleet_equals_local, 20, interval=0.5, what="the fleet's sums to equal the "
               "nodes' own records", error=AssertionError)
    for r in nodes:
        assert lines(r, r"error: ") == [], lines(r, r"error: ")
        assert r.stop() == 0

    # --- D+1: every node's daily run; one report per domain for the fleet ---
    for r in nodes:
        r.env["STSRELAY_FAKE_NOW"] = str(T_RUN)
        r.start()
    for r in nodes:
        r.wait_log(r"tlsrpt %s: run complete" % DAY, timeout=90)
    mails = pf.wait_messages(RUA, count=len(DOMAINS) + 1, timeout=60)
    time.sleep(3)    # a second copy would have arrived by now
    mails = pf.messages(RUA)
    got = {}
    for m in mails:
        domain = m.msg["TLS-Report-Domain"].strip()
        assert domain not in got, "two reports for %s" % domain
        att = [p for p in m.msg.walk() if p.get_content_type() == "application/tlsrpt+gzip"]
        assert len(att) == 1
        got[domain] = json.loads(gzip.decompress(att[0].get_payload(decode=True)))
    assert sorted(got) == sorted(DOMAINS + [LATE])
    for d, rep in got.items():
        assert summarize(rep) == local[d], d
    sent_by = [len(lines(r, r"tlsrpt=[^,]+, day=%s, rua=mailto:%s, status=sent" % (
        DAY, re.escape(RUA)))) for r in nodes]
    assert sum(sent_by) == len(DOMAINS) + 1, sent_by
    for r in nodes:
        assert r.stop() == 0
        assert lines(r, r"error: |Sanitizer|runtime error") == [], \
            lines(r, r"error: |Sanitizer|runtime error")
        # the outage's one warning is the only one of the whole run (a copy
        # another node was sending is not a failure)
        warnings = lines(r, r"warning: ")
        assert len(warnings) == 1 and "warning: redis " in warnings[0], warnings
