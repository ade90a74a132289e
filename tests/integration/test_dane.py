# DANE (RFC 7672) end to end: a DNSSEC-signed zone (ldns-signzone, served by an
# authoritative Unbound, validated by the world's Unbound), Postfix MX hosts
# with TLSA records that match or not, and stsrelay delivering to them; the
# same scenarios through a Postfix 3.7 sender with smtp_tls_security_level = dane.
import json
import os
import re
import sys
import tempfile
import shutil
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
_ROOT = os.environ.get("STSRELAY_SRC") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.world import World, sample_message  # noqa: E402
from tests.world.dnssec import cert_sha256, spki_sha256, tlsa_name  # noqa: E402
from tests.world.postfix_sender import PostfixSender  # noqa: E402

SENDER = "alice@sender.test"

# scenario -> what both senders must do with the mail
EXPECT = {
    "ee-match": "delivered",       # DANE-EE(3) SPKI digest of the MX's key
    "mismatch": "deferred",        # TLSA of another key; a testing MTA-STS policy too
    "bogus": "deferred",           # the TLSA RRSIG does not verify: SERVFAIL
    "unsigned": "delivered",       # TLSA (wrong) in an unsigned zone: ignored
    "ta-wrongname": "deferred",    # DANE-TA(2) matches the CA, the leaf names another host
    "ta-good": "delivered",        # DANE-TA(2), the leaf names the MX host
    "ee-expired": "delivered",     # DANE-EE(3) of an expired certificate (RFC 7672 §3.1.1)
    # RFC 7672 §2.2.3: the MX host is an alias (a signed CNAME)
    "cname-target": "delivered",   # TLSA at the end of the chain (the ee-match host's)
    "cname-host": "delivered",     # none there: the TLSA at the alias name itself
}

# MX host names that are aliases: scenario -> (alias, the host it points to)
ALIASES = {
    "cname-target": ("alias.cname-target.sec.test", "mx.ee-match.sec.test"),
    "cname-host": ("alias.cname-host.sec.test", "mx.cname-host.sec.test"),
}


def domain_of(scn):
    return "unsigned-dane.test" if scn == "unsigned" else "%s.sec.test" % scn


def mx_of(scn):
    """The name in the domain's MX record."""
    return ALIASES[scn][0] if scn in ALIASES else "mx." + domain_of(scn)


def server_of(scn):
    """The name of the Postfix host that answers for the scenario."""
    return ALIASES[scn][1] if scn in ALIASES else "mx." + domain_of(scn)


def chain_with_ca(world, leaf, name):
    """key + leaf + CA certificate in one file: DANE-TA(2) 0 1 matches a
    certificate the server sends, so the trust anchor must be in the chain."""
    path = os.path.join(world.dir, "chain-%s.pem" % name)
    with open(path, "w") as out:
        for p in (leaf.chain, world.ca.ca_file):
            with open(p) as f:
                out.write(f.read())
    os.chmod(path, 0o644)
    return path


@pytest.fixture(scope="module")
def dane_world(world_ca):
    d = tempfile.mkdtemp(prefix="stsrelay-dane-")
    os.chmod(d, 0o755)
    w = World(d, world_ca, dnssec=True)
    try:
        port = w.smtp_port
        ca = w.ca
        leaves = {
            "ee-match": ca.leaf([mx_of("ee-match")], "good"),
            "mismatch": ca.leaf([mx_of("mismatch")], "good"),
            "bogus": ca.leaf([mx_of("bogus")], "good"),
            "unsigned": ca.leaf([mx_of("unsigned")], "good"),
            "ta-wrongname": ca.leaf([mx_of("ta-wrongname")], "wrongname"),
            "ta-good": ca.leaf([mx_of("ta-good")], "good"),
            "ee-expired": ca.leaf([mx_of("ee-expired")], "expired"),
            "cname-host": ca.leaf([server_of("cname-host")], "good"),
        }
        other = ca.leaf(["someone-else.sec.test"], "good")
        tls = {server_of(s): leaf for s, leaf in leaves.items()}
        opts = {mx_of(s): {"smtpd_tls_chain_files": chain_with_ca(w, leaves[s], s)}
                for s in ("ta-wrongname", "ta-good")}
        w.pf = w.postfix([domain_of(s) for s in EXPECT], sorted(tls), tls=tls, host_options=opts)
        for s in EXPECT:
            w.mx(domain_of(s), [mx_of(s)])
        for alias, target in ALIASES.values():
            w.signed.add(alias, "CNAME", target + ".")
        ee = lambda leaf: "3 1 1 " + spki_sha256(leaf.cert)  # noqa: E731
        z = w.signed
        z.add(tlsa_name(mx_of("ee-match"), port), "TLSA", ee(leaves["ee-match"]))
        z.add(tlsa_name(mx_of("mismatch"), port), "TLSA", ee(other))
        z.add(tlsa_name(mx_of("bogus"), port), "TLSA", ee(leaves["bogus"]))
        z.bogus(tlsa_name(mx_of("bogus"), port), "TLSA")
        z.add(tlsa_name(mx_of("ta-wrongname"), port), "TLSA", "2 0 1 " + cert_sha256(ca.ca_file))
        z.add(tlsa_name(mx_of("ta-good"), port), "TLSA", "2 0 1 " + cert_sha256(ca.ca_file))
        z.add(tlsa_name(mx_of("ee-expired"), port), "TLSA", ee(leaves["ee-expired"]))
        # cname-target has none of its own: the ee-match host's apply;
        # cname-host's server has none: the records at the alias apply
        z.add(tlsa_name(mx_of("cname-host"), port), "TLSA", ee(leaves["cname-host"]))
        # unsigned: plain local-data, a TLSA that matches nothing
        w.dns.add(tlsa_name(mx_of("unsigned"), port), "TLSA", ee(other))
        # the mismatch domain also has a testing MTA-STS policy, which alone
        # would deliver (RFC 8461 §2: it must not override DANE)
        w.sts(domain_of("mismatch"), "testing", [mx_of("mismatch")])
        for s in ("ee-match", "mismatch", "bogus"):
            w.tlsrpt(domain_of(s), "mailto:tlsrpt@" + domain_of(s))
        w.other = other
        yield w
    finally:
        w.close()
        shutil.rmtree(d, ignore_errors=True)


def rcpt(scn):
    return "%s-user@%s" % (scn.replace("-", ""), domain_of(scn))


def delivery_line(r, to, timeout=30):
    return r.wait_log(r"to=<%s>, .*status=(sent|deferred|bounced)" % re.escape(to),
                      timeout=timeout)[0]


@pytest.fixture(scope="module")
def relay_run(dane_world, stsrelay_bin):
    """One stsrelay, every scenario sent once; the lines it logged."""
    w = dane_world
    r = w.relay({"retry_schedule": "1h", "hostname": "relay.world.test"},
                binary=stsrelay_bin)
    lines = {}
    for scn in EXPECT:
        r.send(SENDER, [rcpt(scn)], sample_message(SENDER, rcpt(scn), "dane " + scn))
    for scn in EXPECT:
        lines[scn] = delivery_line(r, rcpt(scn))
    yield r, lines
    r.stop()


def outcome(line):
    return "delivered" if "status=sent" in line else \
        "deferred" if "status=deferred" in line else "other"


@pytest.mark.parametrize("scn", sorted(EXPECT))
def test_stsrelay_dane_scenario(dane_world, relay_run, scn):
    r, lines = relay_run
    line = lines[scn]
    assert outcome(line) == EXPECT[scn], line
    if EXPECT[scn] == "delivered":
        msgs = dane_world.pf.wait_messages(rcpt(scn))
        assert dane_world.pf.tls_received(msgs[0])
        if scn in ALIASES:
            # the TLSA base domain the daemon used (RFC 7672 §2.2.3)
            base = ALIASES[scn][1] if scn == "cname-target" else ALIASES[scn][0]
            r.wait_log(r"MX host %s: DANE applies: 1 usable TLSA record\(s\) at %s$" % (
                re.escape(mx_of(scn)), re.escape(tlsa_name(base, dane_world.smtp_port))))
    else:
        time.sleep(0.5)
        assert dane_world.pf.messages(rcpt(scn)) == []
        assert "dsn=4.7.5" in line, line
    # every delivery line says whether DANE judged the MX host
    want = "dane=no" if scn == "unsigned" else "dane=yes"
    assert want in line, line
    if scn in ("ee-match", "ta-good", "ee-expired", "cname-target", "cname-host"):
        assert "tls=TLSv1.3 verified" in line, line
    if scn == "mismatch":
        assert "sts=testing id=" in line and "sts_result=tlsa-invalid" in line, line
        # the testing policy's "delivery goes on" would be false here
        assert not [x for x in r.log().splitlines()
                    if domain_of(scn) in x and "delivery goes on" in x]
    if scn == "bogus":
        assert "sts_result=dnssec-invalid" in line, line
        assert "relay=none" in line, line  # never connected, never plaintext
    if scn == "ta-wrongname":
        assert "sts_result=certificate-host-mismatch" in line, line
    if scn == "unsigned":
        assert "tls=TLSv1.3 unverified" in line or "tls=TLSv1.3 verified" in line, line


def test_dane_log_order_and_json(dane_world, relay_run):
    """dane= comes after sts= (DESIGN.md: tls=, sts= and dane= after status=)."""
    r, lines = relay_run
    line = lines["ee-match"]
    assert line.index("status=") < line.index("tls=") < line.index("sts=") < \
        line.index("dane=")


def test_tlsrpt_records_tlsa_policies(dane_world, relay_run):
    """The sessions of DANE hosts are reported under policy-type tlsa with
    the records as policy-string (RFC 8460 §4.4), failures with the DANE
    result types."""
    r, _ = relay_run
    p = r.cli("tlsrpt", "show", "--json", "--day", time.strftime("%Y-%m-%d", time.gmtime()))
    assert p.returncode == 0, p.stderr
    reports = {rep["policies"][0]["policy"]["policy-domain"]: rep for rep in json.loads(p.stdout)}

    def pol(domain):
        return [x for x in reports[domain]["policies"] if x["policy"]["policy-type"] == "tlsa"]
    ok = pol(domain_of("ee-match"))
    assert len(ok) == 1, reports[domain_of("ee-match")]
    want = "3 1 1 " + spki_sha256(dane_world.pf.tls[mx_of("ee-match")].cert)
    assert ok[0]["policy"]["policy-string"] == [want]
    assert ok[0]["policy"]["mx-host"] == [mx_of("ee-match")]
    assert ok[0]["summary"] == {"total-successful-session-count": 1,
                                "total-failure-session-count": 0}
    bad = pol(domain_of("mismatch"))
    assert bad[0]["summary"]["total-failure-session-count"] == 1
    assert bad[0]["failure-details"][0]["result-type"] == "tlsa-invalid"
    assert bad[0]["policy"]["policy-string"] == ["3 1 1 " + spki_sha256(dane_world.other.cert)]
    bog = pol(domain_of("bogus"))
    assert bog[0]["failure-details"][0]["result-type"] == "dnssec-invalid"
    assert bog[0]["policy"]["policy-string"] == []


def test_sts_check_shows_dane(dane_world, relay_run):
    r, _ = relay_run
    p = r.cli("sts", "check", domain_of("ee-match"), "--json", "--probe")
    assert p.returncode == 0, p.stdout
    out = json.loads(p.stdout)
    d = out["mx"][0]["dane"]
    assert d["secure"] is True and d["result"] == "verified", out
    assert d["tlsa"] == ["3 1 1 " + spki_sha256(dane_world.pf.tls[mx_of("ee-match")].cert)]
    assert out["mx"][0]["probe"]["dane"] is True and out["mx"][0]["probe"]["verified"] is True
    # without --probe the records are usable and nothing is known to fail
    p = r.cli("sts", "check", domain_of("mismatch"), "--json")
    assert p.returncode == 0, p.stdout
    assert json.loads(p.stdout)["mx"][0]["dane"]["result"] == "usable"
    # probed, the records match nothing: the testing policy would deliver,
    # DANE does not (exit 1, as for an enforce policy nothing meets)
    p = r.cli("sts", "check", domain_of("mismatch"), "--json", "--probe")
    out = json.loads(p.stdout)
    d = out["mx"][0]["dane"]
    assert d["result"] == "tlsa-invalid", d
    assert p.returncode == 1 and out["result"].startswith("fails: DANE refuses every MX host"), out
    p = r.cli("sts", "check", domain_of("bogus"), "--json")
    out = json.loads(p.stdout)
    d = out["mx"][0]["dane"]
    assert d["result"] == "dnssec-invalid" and d["tlsa"] == [], d
    assert p.returncode == 1 and out["result"].startswith("fails: DANE refuses"), out
    p = r.cli("sts", "check", domain_of("unsigned"), "--json")
    d = json.loads(p.stdout)["mx"][0]["dane"]
    assert d["result"] == "none" and d["secure"] is False, d
    assert p.returncode == 0, p.stdout
    p = r.cli("sts", "check", domain_of("ee-match"), "--probe")
    assert re.search(r"dane: verified \(1 usable TLSA record at _%d\._tcp\.%s\)" % (
        dane_world.smtp_port, re.escape(mx_of("ee-match"))), p.stdout.decode()), p.stdout


def test_sni_names_the_tlsa_base_domain(dane_world, stsrelay_bin):
    """RFC 7672 §8.1: behind a signed CNAME whose target has the TLSA
    records, the client names the target (the TLSA base domain) in SNI."""
    w = dane_world
    leaf = w.ca.leaf(["sni-target.sec.test"], "good")
    fm = w.fake_mx("sni-target.sec.test", {"cert": leaf})
    w.signed.add("alias.sni.sec.test", "CNAME", "sni-target.sec.test.")
    w.mx("sni.sec.test", ["alias.sni.sec.test"])
    w.signed.add(tlsa_name("sni-target.sec.test", w.smtp_port), "TLSA",
                 "3 1 1 " + spki_sha256(leaf.cert))
    r = w.relay({"retry_schedule": "1h"}, binary=stsrelay_bin)
    try:
        to = "sni@sni.sec.test"
        r.send(SENDER, [to], sample_message(SENDER, to, "sni"))
        line = delivery_line(r, to)
        assert "status=sent" in line and "dane=yes" in line, line
        assert [s.sni for s in fm.sessions if s.messages] == ["sni-target.sec.test"]
    finally:
        r.stop()


def test_dane_off_ignores_tlsa(dane_world, stsrelay_bin):
    """dane = off: the mismatching TLSA records play no part (the testing
    MTA-STS policy delivers)."""
    w = dane_world
    r = w.relay({"dane": "off", "retry_schedule": "1h"}, binary=stsrelay_bin)
    try:
        to = "off@" + domain_of("mismatch")
        r.send(SENDER, [to], sample_message(SENDER, to, "dane off"))
        line = delivery_line(r, to)
        assert "status=sent" in line and "dane=no" in line, line
    finally:
        r.stop()


def test_levels_dane_and_sts_only(dane_world, stsrelay_bin):
    """tls_policy_file: level dane refuses an MX host without validated TLSA
    records (dane-required, never a connection); level sts-only skips the
    TLSA lookup, so the mismatching records play no part and the testing
    MTA-STS policy delivers."""
    w = dane_world
    pol = os.path.join(w.dir, "tls_policy_dane")
    with open(pol, "w") as f:
        f.write("%s dane\n%s sts-only\n" % (domain_of("unsigned"), domain_of("mismatch")))
    r = w.relay({"tls_policy_file": pol, "retry_schedule": "1h"}, binary=stsrelay_bin)
    try:
        to = "required@" + domain_of("unsigned")
        r.send(SENDER, [to], sample_message(SENDER, to, "level dane"))
        line = delivery_line(r, to)
        assert "status=deferred" in line and "dsn=4.7.5" in line, line
        assert "relay=none" in line and "dane=yes" in line, line
        assert "sts_result=dane-required" in line, line
        time.sleep(0.5)
        assert w.pf.messages(to) == []
        to2 = "stsonly@" + domain_of("mismatch")
        r.send(SENDER, [to2], sample_message(SENDER, to2, "level sts-only"))
        line = delivery_line(r, to2)
        assert "status=sent" in line and "dane=no" in line, line
        assert w.pf.wait_messages(to2)
        # sts check knows the levels too
        p = r.cli("sts", "check", domain_of("unsigned"))
        out = p.stdout.decode()
        assert p.returncode == 1, out
        assert "fails: DANE refuses every MX host (level dane needs" in out, out
        p = r.cli("sts", "check", domain_of("mismatch"), "--json", "--probe")
        d = json.loads(p.stdout)["mx"][0]["dane"]
        assert p.returncode == 0 and d["result"] == "none", d
    finally:
        r.stop()


# ---- the same scenarios through Postfix 3.7 (smtp_tls_security_level = dane)

@pytest.fixture(scope="module")
def postfix_run(dane_world):
    w = dane_world
    pf = PostfixSender(os.path.join(w.dir, "pfsender"), w.ca, w.dns, w.smtp_port)
    pf.start()
    try:
        for scn in EXPECT:
            pf.send(SENDER, rcpt(scn), sample_message(SENDER, rcpt(scn), "postfix " + scn))
        out = {}
        for scn in EXPECT:
            out[scn] = pf.wait_outcome(rcpt(scn))
        yield pf, out
    finally:
        pf.stop()


@pytest.mark.parametrize("scn", sorted(EXPECT))
def test_postfix_dane_scenario(postfix_run, scn):
    pf, out = postfix_run
    status, line = out[scn]
    assert status == EXPECT[scn], "%s: %s" % (scn, line)


def test_outcome_table(relay_run, postfix_run):
    """The README's table, as measured: both senders agree on every row."""
    _, lines = relay_run
    _, pout = postfix_run
    rows = []
    for scn in EXPECT:
        rows.append("| %s | %s | %s |" % (scn, outcome(lines[scn]), pout[scn][0]))
    sys.stderr.write("\n".join(["", "| scenario | stsrelay | Postfix 3.7 (dane) |",
                                "| --- | --- | --- |"] + rows) + "\n")
    assert all(outcome(lines[s]) == pout[s][0] for s in EXPECT)
