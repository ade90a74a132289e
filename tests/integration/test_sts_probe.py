# `stsrelay sts check DOMAIN --probe`: the STARTTLS + certificate check of each
# MX host against Postfix (good cert) and fake MX hosts with broken TLS.
import json
import re

import pytest

DOMAIN = "probe.test"
POLICY_ID = "20260701001"

# host -> (preference, how it is served, expected probe fields)
GOOD = {"starttls": True, "tls_version": "TLSv1.3", "verified": True, "result_type": None}


def broken(rt):
    return {"starttls": True, "tls_version": "TLSv1.3", "verified": False, "result_type": rt}


NO_TLS = {"starttls": False, "tls_version": None, "verified": False,
          "result_type": "starttls-not-supported"}

HOSTS = {
    "mx1.probe.test": (10, "postfix", GOOD),
    "wrong.probe.test": (20, {"kind": "wrongname"}, broken("certificate-host-mismatch")),
    "expired.probe.test": (30, {"kind": "expired"}, broken("certificate-expired")),
    "self.probe.test": (40, {"kind": "selfsigned"}, broken("certificate-not-trusted")),
    "plain.probe.test": (50, {"starttls": "none"}, NO_TLS),
    "refuse.probe.test": (60, {"starttls": "refuse"}, NO_TLS),
    "mx.rogue.test": (70, {"kind": "good"}, GOOD),   # valid TLS, but not in the policy
}
NOADDR = "noaddr.probe.test"   # MX record, no A/AAAA
DEAD = "dead.probe.test"       # an address, nothing listening


@pytest.fixture(scope="module")
def pw(module_world, stsrelay_bin):
    w = module_world
    w.pf = w.postfix([DOMAIN], ["mx1.probe.test"])
    w.fakes = {}
    for host, (_pref, how, _exp) in HOSTS.items():
        if how == "postfix":
            continue
        script = {}
        if "kind" in how:
            script["cert"] = w.ca.leaf([host], how["kind"])
        if "starttls" in how:
            script["starttls"] = how["starttls"]
        w.fakes[host] = w.fake_mx(host, script)
    w.fakes["hang.probe.test"] = w.fake_mx("hang.probe.test", {"hang": "tls", "hang_seconds": 10})
    w.host(DEAD)
    w.mx(DOMAIN, [(p, h) for h, (p, _how, _e) in HOSTS.items()] + [(80, NOADDR), (90, DEAD)])
    w.sts(DOMAIN, "enforce", ["mx1.probe.test", "*.probe.test"], id=POLICY_ID)
    # hang.test: a host that accepts STARTTLS and then never starts the handshake
    w.mx("hang.test", [(10, "hang.probe.test")])
    w.relay_obj = w.relay(start=False, binary=stsrelay_bin)
    return w


def run_check(pw, domain, *extra, env=None):
    p = pw.relay_obj.cli("sts", "check", domain, "--probe", *extra, timeout=120, env=env)
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout.decode()


@pytest.fixture(scope="module")
def probe_json(pw):
    return json.loads(run_check(pw, DOMAIN, "--json"))


def test_json_probe_fields_per_mx(probe_json):
    j = probe_json
    assert j["domain"] == DOMAIN
    assert j["policy"]["id"] == POLICY_ID and j["decision"] == "enforce"
    by_host = {m["host"]: m for m in j["mx"]}
    assert set(by_host) == set(HOSTS) | {NOADDR, DEAD}
    for host, (pref, _how, exp) in HOSTS.items():
        m = by_host[host]
        assert m["preference"] == pref
        assert m["policy_match"] == host.endswith(".probe.test"), host
        probe = m["probe"]
        got = {k: probe[k] for k in exp}
        assert got == exp, (host, probe)
        assert probe["connected"] is True
        assert probe["address"].startswith(pw_ip(host))


def pw_ip(host):
    return _IPS[host]


_IPS = {}


@pytest.fixture(scope="module", autouse=True)
def _remember_ips(pw):
    _IPS.update(pw.ips)


def test_json_probe_detail_says_why(probe_json):
    by_host = {m["host"]: m["probe"] for m in probe_json["mx"]}
    assert by_host["mx1.probe.test"]["detail"] == ""
    assert "mismatch" in by_host["wrong.probe.test"]["detail"]
    assert "expired" in by_host["expired.probe.test"]["detail"]
    assert "STARTTLS not offered" in by_host["plain.probe.test"]["detail"]
    assert "STARTTLS refused: 454" in by_host["refuse.probe.test"]["detail"]
    na = by_host[NOADDR]
    assert na["connected"] is False and na["starttls"] is False
    assert na["verified"] is False and na["result_type"] is None
    dead = by_host[DEAD]
    assert dead["connected"] is False and dead["result_type"] is None
    assert "Connection refused" in dead["detail"] or "connection refused" in dead["detail"]


def test_probe_sends_no_transaction_and_uses_sni(pw, probe_json):
    """A probe is EHLO, STARTTLS, (TLS) EHLO, QUIT and nothing else."""
    assert probe_json  # the probe has run
    for host, fm in pw.fakes.items():
        if host == "hang.probe.test":
            continue
        fm.wait_sessions(1)
        for s in fm.sessions:
            verbs = [line.split(" ", 1)[0].upper() for _tls, line in s.commands]
            assert not any(v in ("MAIL", "RCPT", "DATA") for v in verbs), (host, s.commands)
            assert b"MAIL FROM" not in bytes(s.plain).upper()
            assert b"MAIL FROM" not in bytes(s.tls_bytes).upper()
            if HOSTS[host][2]["starttls"]:
                assert verbs == ["EHLO", "STARTTLS", "EHLO", "QUIT"], (host, s.commands)
                assert [t for t, _ in s.commands] == [False, False, True, True]
                assert s.sni == host
            else:
                assert verbs[0] == "EHLO" and verbs[-1] == "QUIT", (host, s.commands)
                assert "EHLO" not in verbs[1:]   # no second EHLO without TLS
    # Postfix got no message either
    assert pw.pf.messages() == []


def test_human_output_lines(pw):
    out = run_check(pw, DOMAIN)
    lines = out.splitlines()

    def line_for(host):
        hits = [l for l in lines if re.match(r"^\s+%s  pref " % re.escape(host), l)]
        assert len(hits) == 1, (host, out)
        return hits[0]

    good = line_for("mx1.probe.test")
    assert "pref 10  policy match: yes" in good
    assert "STARTTLS: yes  TLSv1.3  certificate: verified" in good
    assert good.rstrip().endswith("certificate: verified")
    assert ("STARTTLS: yes  TLSv1.3  certificate: certificate-host-mismatch (hostname mismatch)"
            in line_for("wrong.probe.test"))
    assert "certificate: certificate-expired (" in line_for("expired.probe.test")
    assert "certificate: certificate-not-trusted (" in line_for("self.probe.test")
    assert ("STARTTLS: no  (starttls-not-supported: STARTTLS not offered"
            in line_for("plain.probe.test"))
    assert "STARTTLS: no  (starttls-not-supported: STARTTLS refused: 454" in line_for(
        "refuse.probe.test")
    rogue = line_for("mx.rogue.test")
    assert "policy match: no (not used under enforce)" in rogue
    assert "certificate: verified" in rogue
    assert "not probed: no address" in line_for(NOADDR)
    assert "connection failed: connect to dead.probe.test[" in line_for(DEAD)
    assert re.search(r"^decision:\s+enforce$", out, re.M)


def test_probe_stage_timeout_is_bounded(pw):
    """A host that accepts STARTTLS and never handshakes: the probe gives up
    after STSRELAY_SMTP_TIMEOUT and says so."""
    import time
    t0 = time.monotonic()
    j = json.loads(run_check(pw, "hang.test", "--json", env={"STSRELAY_SMTP_TIMEOUT": "1"}))
    assert time.monotonic() - t0 < 8
    probe = j["mx"][0]["probe"]
    assert probe["starttls"] is True and probe["tls_version"] is None
    assert probe["verified"] is False and probe["result_type"] == "validation-failure"
    assert "timed out during the TLS handshake" in probe["detail"]
    assert j["decision"] == "absent"


def test_without_probe_no_connection(pw):
    before = {h: len(f.sessions) for h, f in pw.fakes.items()}
    p = pw.relay_obj.cli("sts", "check", DOMAIN, "--json", timeout=60)
    assert p.returncode == 0, p.stderr.decode()
    j = json.loads(p.stdout)
    assert all("probe" not in m for m in j["mx"])
    assert {h: len(f.sessions) for h, f in pw.fakes.items()} == before


def test_help_documents_probe_and_update_cache(pw):
    p = pw.relay_obj.cli("sts", "--help")
    assert p.returncode == 0
    out = p.stdout.decode()
    assert "--probe" in out and "--update-cache" in out
    assert "STSRELAY_SMTP_TIMEOUT" in out


def test_exit_1_when_an_enforce_policy_cannot_be_met(pw):
    """Exit 1: under enforce no MX matches the policy (known without a
    probe), or the matching ones all fail the TLS checks (known with
    --probe); 0 when one MX passes."""
    w = pw
    w.mx("nomatch.test", [(10, "mx.rogue.test")])
    w.sts("nomatch.test", "enforce", ["mx.nomatch.test"], id="20260701002")
    w.mx("expiredonly.test", [(10, "expired.probe.test")])
    w.sts("expiredonly.test", "enforce", ["*.probe.test"], id="20260701003")
    w.https.wait_settled()

    def check(domain, *extra):
        p = pw.relay_obj.cli("sts", "check", domain, *extra, timeout=120)
        return p.returncode, p.stdout.decode()

    rc, out = check("nomatch.test")
    assert rc == 1, out
    assert "decision:  enforce" in out
    assert "result:    fails: no MX host matches the enforce policy" in out, out
    rc, out = check("expiredonly.test")
    assert rc == 0 and "result:    ok: expired.probe.test matches the enforce policy" in out, out
    rc, out = check("expiredonly.test", "--probe", "--json")
    assert rc == 1, out
    j = json.loads(out)
    assert j["decision"] == "enforce" and j["mx"][0]["probe"]["result_type"] == \
        "certificate-expired"
    assert j["result"].startswith("fails: no MX host both matches the enforce policy and "
                                  "passes the TLS checks"), j["result"]
    rc, out = check(DOMAIN, "--probe")
    assert rc == 0 and "result:    ok: mx1.probe.test matches the enforce policy and passed " \
        "the TLS checks" in out, out
