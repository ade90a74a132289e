# The MTA-STS policy cache against Unbound + nginx: id change and max_age
# expiry refetch, persistence across processes, failure cases that keep a cached policy.
#
# `sts check` reads the on-disk cache (spool_dir/sts/*.policy) and writes it
# only with --update-cache; each `sts check` is a new process, so a policy
# served from the cache by a later process proves the cache survived restart.
import json
import os
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
from world.https import PolicyHost, policy_text  # noqa: E402
from world.util import wait_until  # noqa: E402


@pytest.fixture(scope="module")
def shared():
    base = tempfile.mkdtemp(prefix="sts-cache-")
    os.chmod(base, 0o755)  # nginx workers (nobody) read below it
    ca = TestCA(os.path.join(base, "ca"))
    dns = UnboundDNS(os.path.join(base, "dns"))
    dns.start()
    host = PolicyHost(os.path.join(base, "nginx"), ca)
    host.start()
    try:
        yield dict(base=base, ca=ca, dns=dns, host=host)
    finally:
        host.stop()
        dns.stop()
        shutil.rmtree(base, ignore_errors=True)


class StsWorld:
    """One test's domain, spool and config on the shared Unbound + nginx."""

    counter = 0

    def __init__(self, shared, mx=("mx1.{d}",), mode="enforce", max_age=86400, sid="id1"):
        StsWorld.counter += 1
        self.s = shared
        self.dns, self.host = shared["dns"], shared["host"]
        self.domain = "c%d-%d.test" % (os.getpid() % 10000, StsWorld.counter)
        self.dir = tempfile.mkdtemp(prefix="w", dir=shared["base"])
        self.spool = os.path.join(self.dir, "spool")
        os.makedirs(self.spool)
        self.cache_dir = os.path.join(self.spool, "sts")
        self.conf = os.path.join(self.dir, "stsrelay.conf")
        with open(self.conf, "w") as f:
            f.write("spool_dir = %s\ndns_servers = %s\nca_file = %s\nsts_https_port = %d\n"
                    "sts_fetch_timeout = 5s\n" % (self.spool, self.dns.servers,
                                                    shared["ca"].ca_file, self.host.port))
        self.mx = [m.format(d=self.domain) for m in mx]
        self.dns.add("mta-sts." + self.domain, "A", "127.0.0.1")
        self.dns.add(self.domain, "MX", "10 %s." % self.mx[0])
        self.dns.add(self.mx[0], "A", "127.0.0.1")
        self.set_id(sid)
        self.serve(mode=mode, max_age=max_age)

    def set_id(self, sid):
        self.dns.set("_mta-sts." + self.domain, "TXT", "v=STSv1; id=%s" % sid)

    def serve(self, mode="enforce", max_age=86400, mx=None, **kw):
        self.host.serve(self.domain, policy_text(mode=mode, mx=mx or self.mx, max_age=max_age), **kw)
        self.host.wait_settled()

    def fetches(self):
        return self.host.fetch_count(self.domain)

    def wait_fetches(self, n):
        wait_until(lambda: self.fetches() >= n, 5, what="%d fetches" % n)
        assert self.fetches() == n

    def run(self, *args, env=None):
        e = dict(os.environ)
        e.update(env or {})
        return subprocess.run([BIN, "sts"] + list(args) + ["-c", self.conf],
                              capture_output=True, text=True, timeout=90, env=e)

    def check(self, update=False, now=None, rc=0):
        args = ["check", self.domain, "--json"] + (["--update-cache"] if update else [])
        p = self.run(*args, env={"STSRELAY_FAKE_NOW": str(now)} if now else None)
        assert p.returncode == rc, (p.returncode, p.stderr)
        self.last_stderr = p.stderr
        return json.loads(p.stdout)

    def cache_files(self):
        if not os.path.isdir(self.cache_dir):
            return []
        return sorted(os.listdir(self.cache_dir))

    def cache_file(self):
        return os.path.join(self.cache_dir, self.domain + ".policy")


def test_check_does_not_write_without_update(shared):
    w = StsWorld(shared)
    r = w.check()
    assert r["decision"] == "enforce" and r["policy"]["source"] == "fetched"
    assert w.cache_files() == []
    # so the next process fetches again
    r = w.check()
    assert r["policy"]["source"] == "fetched"
    w.wait_fetches(2)


def test_cache_survives_restart_no_refetch_while_fresh(shared):
    w = StsWorld(shared)
    r1 = w.check(update=True)
    assert r1["policy"] is not None, (r1, w.last_stderr)
    assert r1["policy"]["source"] == "fetched"
    w.wait_fetches(1)
    assert w.cache_files() == [w.domain + ".policy"]
    assert oct(os.stat(w.cache_file()).st_mode & 0o777) == "0o600"
    # new processes: served from disk, nginx sees nothing new
    for update in (False, True):
        r = w.check(update=update)
        assert r["decision"] == "enforce"
        assert r["policy"]["source"] == "cache"
        assert r["policy"]["fetched_at"] == r1["policy"]["fetched_at"]
        assert r["policy"]["expires_at"] == r1["policy"]["expires_at"]
        assert r["mx"] == [{"host": w.mx[0], "preference": 10, "policy_match": True,
                                "dane": UNSIGNED_DANE}]
    time.sleep(0.3)
    assert w.fetches() == 1
    # and `sts cache` lists it
    p = w.run("cache", "--json")
    assert p.returncode == 0, p.stderr
    pols = json.loads(p.stdout)["policies"]
    assert [x["domain"] for x in pols] == [w.domain]
    assert pols[0]["id"] == "id1" and pols[0]["mode"] == "enforce"
    assert pols[0]["mx"] == w.mx and pols[0]["max_age"] == 86400
    assert pols[0]["expires_at"] == r1["policy"]["expires_at"]
    assert pols[0]["expired"] is False
    p = w.run("cache")
    assert p.returncode == 0 and w.domain in p.stdout and "enforce" in p.stdout


def test_id_change_refetches(shared):
    w = StsWorld(shared)
    w.check(update=True)
    w.wait_fetches(1)
    w.serve(mode="testing")
    w.set_id("id2")
    r = w.check(update=True)
    w.wait_fetches(2)
    assert r["policy"]["source"] == "fetched"
    assert r["policy"]["id"] == "id2" and r["policy"]["mode"] == "testing"
    assert r["decision"] == "testing"
    # the new policy replaced the old one on disk
    r = w.check()
    assert r["policy"]["source"] == "cache" and r["policy"]["id"] == "id2"
    time.sleep(0.3)
    assert w.fetches() == 2


def test_max_age_expiry_refetches(shared):
    w = StsWorld(shared, max_age=600)
    r1 = w.check(update=True)
    w.wait_fetches(1)
    t0 = int(time.time())
    # still fresh 5 minutes later: no fetch
    r = w.check(now=t0 + 300)
    assert r["policy"]["source"] == "cache"
    time.sleep(0.3)
    assert w.fetches() == 1
    # past max_age: same id, but the policy is stale -> fetched again
    r = w.check(update=True, now=t0 + 700)
    w.wait_fetches(2)
    assert r["policy"]["source"] == "fetched"
    assert r["policy"]["fetched_at"] != r1["policy"]["fetched_at"]
    # expired, TXT gone and nothing to fetch: no policy any more
    w.dns.remove("_mta-sts." + w.domain, "TXT")
    r = w.check(now=t0 + 700 + 601)
    assert r["decision"] == "absent" and r["policy"] is None


def test_txt_removed_keeps_cached_policy(shared):
    w = StsWorld(shared)
    w.check(update=True)
    w.wait_fetches(1)
    w.dns.remove("_mta-sts." + w.domain, "TXT")
    r = w.check()
    assert r["txt"] is None and r["txt_status"] == "nxdomain"
    assert r["decision"] == "enforce"
    assert r["policy"]["source"] == "cache" and r["policy"]["id"] == "id1"
    assert r["error"] is None
    # several v=STSv1 records count as none, too
    w.dns.set("_mta-sts." + w.domain, "TXT", ["v=STSv1; id=a1", "v=STSv1; id=b2"])
    r = w.check()
    assert r["txt_status"] == "multiple" and r["decision"] == "enforce"
    # and a DNS failure of the TXT lookup
    w.dns.remove("_mta-sts." + w.domain, "TXT")
    w.dns.fail("_mta-sts." + w.domain, "servfail")
    try:
        r = w.check()
        assert r["txt_status"] == "tempfail" and r["decision"] == "enforce"
        assert r["policy"]["source"] == "cache"
    finally:
        w.dns.unfail("_mta-sts." + w.domain)
    time.sleep(0.3)
    assert w.fetches() == 1


@pytest.mark.parametrize("how,result_type", [
    ("redirect", "sts-policy-fetch-error"),
    ("media-type", "sts-policy-fetch-error"),
    ("404", "sts-policy-fetch-error"),
    ("oversize", "sts-policy-fetch-error"),
    ("invalid", "sts-policy-invalid"),
    ("expired-cert", "sts-webpki-invalid"),
    ("no-host", "sts-policy-fetch-error"),
])
def test_failed_refetch_keeps_cached_policy(shared, how, result_type):
    w = StsWorld(shared)
    w.check(update=True)
    w.wait_fetches(1)
    with open(w.cache_file(), "rb") as f:
        stored = f.read()
    good = policy_text(mode="enforce", mx=w.mx, max_age=86400)
    if how == "redirect":
        w.host.serve(w.domain, redirect="https://mta-sts.%s:%d/.well-known/mta-sts.txt"
                     % (w.domain, w.host.port))
    elif how == "media-type":
        w.host.serve(w.domain, good, content_type="text/html")
    elif how == "404":
        w.host.serve(w.domain, status=404)
    elif how == "oversize":
        w.host.serve(w.domain, good, oversize=65537)
    elif how == "invalid":
        w.host.serve(w.domain, "version: STSv1\nmode: enforce\nmax_age: 86400\n")
    elif how == "expired-cert":
        w.host.serve(w.domain, good, cert_kind="expired")
    elif how == "no-host":
        w.dns.remove("mta-sts." + w.domain, "A")
    w.host.wait_settled()
    w.set_id("id2")
    r = w.check(update=True)
    assert r["error"] is not None, r
    assert r["error"]["result_type"] == result_type, r
    assert r["txt"]["id"] == "id2"
    # RFC 8461 §5.1: the unexpired cached policy keeps applying
    assert r["decision"] == "enforce"
    assert r["policy"]["source"] == "cache" and r["policy"]["id"] == "id1"
    with open(w.cache_file(), "rb") as f:
        assert f.read() == stored
    if how in ("redirect", "media-type", "404", "oversize", "invalid"):
        w.wait_fetches(2)  # it was asked once, and the redirect not followed


def test_oversize_limit_exact(shared):
    # 64 KiB is accepted, one byte more is not. The padding is unknown
    # `key: value` lines, which a valid policy may carry (RFC 8461 §3.2).
    w = StsWorld(shared)
    body = policy_text(mode="enforce", mx=w.mx, max_age=86400)
    pad_line = "x-pad: " + "a" * 60 + "\r\n"
    text = body
    while len(text) + len(pad_line) <= 65536:
        text += pad_line
    text += "x: " + "b" * (65536 - len(text) - 5) + "\r\n"
    assert len(text) == 65536
    w.host.serve(w.domain, text)
    w.host.wait_settled()
    r = w.check()
    assert r["error"] is None, r
    assert r["decision"] == "enforce"
    w.host.serve(w.domain, text + "\n")
    w.host.wait_settled()
    w.set_id("id2")
    # nothing cached (check without --update-cache): no policy can be known
    # now, exit 75 (EX_TEMPFAIL), not "absent"
    r = w.check(rc=75)
    assert r["error"]["result_type"] == "sts-policy-fetch-error"
    assert "larger than 65536" in r["error"]["detail"]
    assert r["decision"] == "tempfail" and r["policy"] is None


def test_corrupt_cache_file_ignored(shared):
    w = StsWorld(shared)
    w.check(update=True)
    w.wait_fetches(1)
    with open(w.cache_file(), "r+b") as f:
        data = f.read()
        f.seek(0)
        f.truncate()
        f.write(data[:-10])
    p = w.run("check", w.domain, "--json")
    assert p.returncode == 0
    assert "ignoring corrupt" in p.stderr
    r = json.loads(p.stdout)
    assert r["policy"]["source"] == "fetched"
    p = w.run("cache", "--json")
    assert p.returncode == 0
    assert json.loads(p.stdout)["policies"] == []
    assert "ignored" in p.stderr
    # --update-cache repairs it
    w.check(update=True)
    r = w.check()
    assert r["policy"]["source"] == "cache"


def test_invalid_arguments(shared):
    w = StsWorld(shared)
    for bad in ("[1.2.3.4]", "1.2.3.4", ".x.test", "a..b.test", "*.x.test"):
        p = w.run("check", bad)
        assert p.returncode == 65, (bad, p.stdout, p.stderr)
    assert w.run("check").returncode == 64
    assert w.run("frob").returncode == 64
    assert w.run("cache", "--nope").returncode == 64
