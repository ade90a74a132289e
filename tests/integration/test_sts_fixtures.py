# The public postfix-mta-sts-resolver end-to-end fixtures (TXT records, policy
# server answers, expected verdicts) rebuilt with Unbound + nginx, checked with `stsrelay sts check`.
#
# Source: ../shared/vectors/postfix-mta-sts-resolver-fixtures/ (dnsmasq.conf.appendix,
# nginx.conf, refdata*.tsv). Their domains live under ".loc"; here every
# "X.loc" becomes "X.test" (the world's Unbound serves the static zone "test.")
# and the policy bodies are rewritten the same way ("mx: mail.loc" ->
# "mx: mail.test"). The TXT records and the policy answers are read from the
# fixture files themselves, not retyped.
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

SRC = os.environ.get("STSRELAY_SRC", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("STSRELAY_BIN", "stsrelay")
sys.path.insert(0, os.path.join(SRC, "tests"))

from world.ca import TestCA  # noqa: E402
from world.dns import UNSIGNED_DANE, UnboundDNS  # noqa: E402
from world.https import PolicyHost  # noqa: E402
from world.util import wait_until  # noqa: E402

FIX = os.path.join(SRC, "..", "shared", "vectors", "postfix-mta-sts-resolver-fixtures")
EX_DATAERR = 65


def to_test(name):
    """X.loc -> X.test (the mapping used throughout this file)."""
    return re.sub(r"\.loc\b", ".test", name)


def read_fixture(name):
    with open(os.path.join(FIX, name)) as f:
        return f.read()


def fixture_txt_records():
    """domain -> TXT text, from the dnsmasq appendix."""
    out = {}
    for line in read_fixture("dnsmasq.conf.appendix").splitlines():
        m = re.match(r'^txt-record=_mta-sts\.([^,]+),"(.*)"$', line.strip())
        if m:
            out[to_test(m.group(1))] = m.group(2)
    return out


def fixture_address_names():
    """Names dnsmasq answers A for explicitly (address=/NAME/ip)."""
    out = []
    for line in read_fixture("dnsmasq.conf.appendix").splitlines():
        m = re.match(r"^address=/([^/]+)/([0-9.]+)$", line.strip())
        if m and m.group(1) != "loc":
            out.append(to_test(m.group(1)))
    return out


def nginx_unquote(s):
    return s.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def fixture_policies():
    """domain -> dict(body, status, content_type, cert_kind, oversize), from
    the fixture nginx.conf server blocks."""
    conf = read_fixture("nginx.conf")
    out = {}
    for block in re.split(r"\n    server \{", conf)[1:]:
        name = re.search(r"server_name mta-sts\.(\S+);", block).group(1)
        cert = re.search(r"ssl_certificate (\S+);", block).group(1)
        domain = to_test(name)
        pol = {"body": "", "status": 200, "content_type": "text/plain",
               "cert_kind": "good", "oversize": None}
        # /tmp/bad-certs is signed by a CA nobody trusts (their mkcerts.py
        # run with its own CA); bad-cert2.loc's certificate in /tmp/certs
        # names only "bad-cert2.loc", not "mta-sts.bad-cert2.loc".
        if cert.startswith("/tmp/bad-certs/"):
            pol["cert_kind"] = "untrusted"
        elif name == "bad-cert2.loc":
            pol["cert_kind"] = "wrongname"
        loc = block.split("location = /.well-known/mta-sts.txt", 1)[1]
        m = re.search(r'return (\d+) "((?:[^"\\]|\\.)*)";', loc)
        if m:
            pol["status"] = int(m.group(1))
            pol["body"] = to_test(nginx_unquote(m.group(2)))
        t = re.search(r"types \{\s*(\S+) txt;", loc)
        if t:
            pol["content_type"] = t.group(1)
        if "content_by_lua_block" in loc:
            # Lua is not in nginx-light: the same policy head followed by
            # 2049 x 64 bytes of padding, served statically (Content-Length
            # 131193). chunked-overlength sends the same bytes chunked; with
            # a static file the body cap is exercised on the Content-Length
            # path, the unit of http.c that counts written bytes covers both.
            pol["body"] = "version: STSv1\nmode: enforce\nmax_age: 86400\nmx: mail.test\n"
            pol["oversize"] = 131193
        out[domain] = pol
    return out


# What every fixture domain must give, per RFC 8461 / RFC 8460. `their` is
# the postfix-mta-sts-resolver status from its test_resolver.py, for the
# record; where ours differs in kind the comment says why.
EXPECTED = {
    "good.test": dict(decision="enforce", error=None),
    "testing.test": dict(decision="testing", error=None),
    "valid-none.test": dict(decision="none", error=None),
    "fast-expire.test": dict(decision="enforce", error=None),
    "no-record.test": dict(decision="absent", error=None, txt_status="nxdomain"),
    # _mta-sts.no-data.loc has an A record but no TXT.
    "no-data.test": dict(decision="absent", error=None, txt_status="nodata"),
    # "id=...; v=STSv1;": the record must begin with v=STSv1 (RFC 8461 §3.1).
    "bad-record1.test": dict(decision="absent", error=None, txt_status="none"),
    "bad-record2.test": dict(decision="absent", error=None, txt_status="none"),
    # "v=STSv12" is another version tag, not STSv1.
    "bad-record3.test": dict(decision="absent", error=None, txt_status="none"),
    "bad-policy1.test": dict(decision="absent", error="sts-policy-invalid"),   # garbage
    "bad-policy2.test": dict(decision="absent", error="sts-policy-invalid"),   # no mx
    # A fetch that fails (media type, HTTP status, size, network) with nothing
    # cached: the policy is unknown for now (the daemon delivers as absent
    # and fetches again after 5 minutes): decision tempfail, exit 75.
    "bad-policy3.test": dict(decision="tempfail", error="sts-policy-fetch-error", rc=75),  # text/html
    "bad-policy4.test": dict(decision="tempfail", error="sts-policy-fetch-error", rc=75),  # 404
    "bad-policy5.test": dict(decision="absent", error="sts-policy-invalid"),   # max_age: xxx
    # max_age: 31557601: the fixture's resolver rejects it; stsrelay clamps it
    # to 31557600 and keeps the policy (an enforce domain stays protected)
    "bad-policy6.test": dict(decision="enforce", error=None, max_age=31557600),
    "bad-policy7.test": dict(decision="absent", error="sts-policy-invalid"),   # no mode
    "bad-policy8.test": dict(decision="absent", error="sts-policy-invalid"),   # mode: doubt
    "bad-cert1.test": dict(decision="absent", error="sts-webpki-invalid"),     # untrusted CA
    "bad-cert2.test": dict(decision="absent", error="sts-webpki-invalid"),     # wrong name
    "static-overlength.test": dict(decision="tempfail", error="sts-policy-fetch-error", rc=75),
    "chunked-overlength.test": dict(decision="tempfail", error="sts-policy-fetch-error", rc=75),
    # The fixture's blackhole.loc forwards to an address that never answers:
    # their resolver reports FETCH_ERROR. RFC 8461 §5.1 has no fetch without
    # a TXT record: a failed TXT lookup with nothing cached means no policy
    # can be known now: decision tempfail (exit 75) with txt_status tempfail,
    # not a fetch error; the daemon meanwhile delivers as absent.
    "blackhole.test": dict(decision="tempfail", error=None, txt_status="tempfail", rc=75),
}


@pytest.fixture(scope="module")
def world():
    # nginx workers run as "nobody": the tree they read must be searchable.
    base = tempfile.mkdtemp(prefix="sts-fixtures-")
    os.chmod(base, 0o755)
    ca = TestCA(os.path.join(base, "ca"))
    dns = UnboundDNS(os.path.join(base, "dns"))
    host = PolicyHost(os.path.join(base, "nginx"), ca)
    txt = fixture_txt_records()
    for domain, text in txt.items():
        dns.add("_mta-sts." + domain, "TXT", text, live=False)
    for name in fixture_address_names():
        dns.add(name, "A", "127.0.0.1", live=False)
    # Addition to the fixtures (they have no MX records): one MX per domain,
    # the host their policies name, so `sts check` can show a match.
    for domain in EXPECTED:
        dns.add(domain, "MX", "10 mail.test.", live=False)
    dns.add("mail.test", "A", "127.0.0.1", live=False)
    dns.fail("blackhole.test", "servfail")
    dns.start()
    host.start()
    for domain, pol in fixture_policies().items():
        kw = dict(status=pol["status"], content_type=pol["content_type"],
                  cert_kind=pol["cert_kind"])
        if pol["oversize"]:
            kw["oversize"] = pol["oversize"]
        host.serve(domain, pol["body"], **kw)
    host.wait_settled()
    spool = os.path.join(base, "spool")
    os.makedirs(spool)
    conf = os.path.join(base, "stsrelay.conf")
    with open(conf, "w") as f:
        f.write("spool_dir = %s\ndns_servers = %s\nca_file = %s\nsts_https_port = %d\n"
                "sts_fetch_timeout = 10s\n" % (spool, dns.servers, ca.ca_file, host.port))
    w = dict(base=base, ca=ca, dns=dns, host=host, conf=conf, spool=spool, txt=txt)
    try:
        yield w
    finally:
        host.stop()
        dns.stop()
        shutil.rmtree(base, ignore_errors=True)


def sts_check(world, domain, *extra):
    p = subprocess.run([BIN, "sts", "check", domain, "--json", "-c", world["conf"]] + list(extra),
                       capture_output=True, text=True, timeout=90)
    return p


def wait_fetches(world, domain, n):
    # nginx writes its access log line once the response is out; give it a
    # moment after the client has finished, then require the exact count.
    wait_until(lambda: world["host"].fetch_count(domain) >= n, 5,
               what="%d fetches of %s" % (n, domain))
    assert world["host"].fetch_count(domain) == n


def check_json(world, domain):
    """The JSON verdict; the exit code must be the one EXPECTED names (0
    unless said): 75 exactly for the temporary failures."""
    p = sts_check(world, domain)
    want = EXPECTED.get(domain, {}).get("rc", 0)
    assert p.returncode == want, (domain, p.returncode, p.stdout, p.stderr)
    r = json.loads(p.stdout)
    assert (r["decision"] == "tempfail") == (want == 75), r
    assert r["result"].startswith("temporary failure" if want == 75 else "ok"), r
    return r


def test_fixture_files_fully_used(world):
    # Every TXT record and every policy server block of the fixtures is in
    # the world, and every domain has an expectation.
    assert set(world["txt"]) <= set(EXPECTED)
    assert set(fixture_policies()) <= set(EXPECTED)
    assert len(world["txt"]) == 19
    assert len(fixture_policies()) == 16


@pytest.mark.parametrize("domain", sorted(EXPECTED))
def test_fixture_domain(world, domain):
    want = EXPECTED[domain]
    before = world["host"].fetch_count(domain)
    r = check_json(world, domain)
    assert r["domain"] == domain
    assert r["decision"] == want["decision"], r
    if want["error"] is None:
        assert r["error"] is None, r
    else:
        assert r["error"]["result_type"] == want["error"], r
        assert r["error"]["detail"]
    if "txt_status" in want:
        assert r["txt_status"] == want["txt_status"], r
        assert r["txt"] is None
        # no usable TXT record: nothing may be fetched
        assert world["host"].fetch_count(domain) == before
    else:
        assert r["txt"] == {"record": world["txt"][domain], "id": "20180907T090909"}
        if want["error"] == "sts-webpki-invalid":
            # the handshake is refused: no request may reach the host
            assert world["host"].fetch_count(domain) == before
        else:
            wait_fetches(world, domain, before + 1)
    if want["decision"] in ("enforce", "testing", "none"):
        pol = r["policy"]
        assert pol["source"] == "fetched"
        assert pol["id"] == "20180907T090909"
        assert pol["mode"] == want["decision"]
        if "max_age" in want:
            assert pol["max_age"] == want["max_age"], pol
        if want["decision"] == "none":
            assert pol["mx"] == []
        else:
            assert pol["mx"] == ["mail.test"]
            assert r["mx"] == [{"host": "mail.test", "preference": 10, "policy_match": True,
                                "dane": UNSIGNED_DANE}]
    else:
        assert r["policy"] is None
        assert r["mx"] == [{"host": "mail.test", "preference": 10, "policy_match": False,
                            "dane": UNSIGNED_DANE}]
    # the policy host saw SNI mta-sts.DOMAIN on every request
    for host, sni, _req, _status in world["host"].requests(domain):
        assert sni == "mta-sts." + domain


def refdata_rows(name):
    rows = []
    for line in read_fixture(name).splitlines():
        if not line.strip():
            continue
        key, verdict = line.split("\t", 1)
        _map, nexthop = key.split(" ", 1)
        rows.append((nexthop, verdict.strip()))
    return rows


def nexthop_domain(nexthop):
    """Postfix nexthop forms of the socketmap queries: "[d]" (no MX lookup)
    and "d:port" / "[d]:port" select routing, not the policy domain; the
    MTA-STS domain is d either way (that is how the resolver treats them).
    Returns None for address literals."""
    m = re.match(r"^\[([^\]]*)\](?::\d+)?$", nexthop)
    if m:
        inner = m.group(1)
        if re.match(r"^[0-9.]+$", inner) or ":" in inner:
            return None
        return inner
    return re.sub(r":\d+$", "", nexthop)


@pytest.mark.parametrize("table", ["refdata.tsv", "refdata_nosni.tsv", "refdata_strict.tsv"])
def test_refdata_verdicts(world, table):
    # "OK secure match=mail.loc" = an enforceable policy with those mx
    # patterns applies; "NOTFOUND" = no policy is enforced.
    rows = refdata_rows(table)
    assert rows
    for nexthop, verdict in rows:
        domain = nexthop_domain(nexthop)
        if domain is None:
            # [1.2.3.4], [a:bb:ccc::dddd]:123: an address literal has no
            # MTA-STS policy; `sts check` refuses it as not a domain.
            assert verdict == "NOTFOUND"
            p = sts_check(world, nexthop.strip("[]").rsplit("]", 1)[0])
            assert p.returncode == EX_DATAERR, (nexthop, p.stdout, p.stderr)
            continue
        domain = to_test(domain)
        if domain.startswith("."):
            # ".good.loc" is Postfix's parent-domain lookup form, not a name.
            assert verdict == "NOTFOUND"
            p = sts_check(world, domain)
            assert p.returncode == EX_DATAERR, (nexthop, p.stdout, p.stderr)
            continue
        r = check_json(world, domain)
        if verdict.startswith("OK secure"):
            m = re.search(r"match=(\S+)", verdict)
            if table == "refdata_strict.tsv" and domain == "testing.test":
                # The resolver's strict mode enforces `testing` policies.
                # RFC 8461 §5.2: under testing, failures are reported and
                # delivery goes on; we follow the RFC.
                assert r["decision"] == "testing", r
            else:
                assert r["decision"] == "enforce", (nexthop, r)
            assert r["policy"]["mx"] == [to_test(x) for x in m.group(1).split(":")]
        else:
            assert verdict == "NOTFOUND"
            assert r["decision"] != "enforce", (nexthop, r)


def test_fast_expire_refetched_each_time(world):
    # max_age: 1 -> the policy is used for the delivery that fetched it and
    # is stale a second later: the next check fetches again.
    d = "fast-expire.test"
    before = world["host"].fetch_count(d)
    r1 = check_json(world, d)
    time.sleep(1.2)
    r2 = check_json(world, d)
    assert r1["decision"] == r2["decision"] == "enforce"
    assert r2["policy"]["source"] == "fetched"
    wait_fetches(world, d, before + 2)


def test_human_output(world):
    p = subprocess.run([BIN, "sts", "check", "good.test", "-c", world["conf"]],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "decision:  enforce" in p.stdout
    assert "mail.test: matches the policy" in p.stdout
    p = subprocess.run([BIN, "sts", "check", "bad-cert2.test", "-c", world["conf"]],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "error:     sts-webpki-invalid" in p.stdout
    assert "decision:  absent" in p.stdout
    # a policy that cannot be fetched now is not shown as "absent"
    p = subprocess.run([BIN, "sts", "check", "bad-policy4.test", "-c", world["conf"]],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 75, (p.stdout, p.stderr)
    assert "decision:  tempfail" in p.stdout and "decision:  absent" not in p.stdout
    assert "result:    temporary failure: the policy could not be fetched" in p.stdout

