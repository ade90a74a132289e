# The whole loopback mail world in one object (DNS, policy host, MX hosts,
# the relay) and `python3 -m tests.world.world up` to run one by hand.
import argparse
import os
import signal
import sys
import tempfile
import threading

from .ca import TestCA
from .dns import UnboundDNS, fqdn
from .dnssec import SignedZone
from .fakemx import FakeMX
from .https import PolicyHost, policy_text
from .postfix import PostfixMX
from .redis import RedisServer
from .relay import Relay
from .util import free_ip, free_port, make_dir


class World:
    """One world under `directory`. Unbound and nginx start at once; MX
    hosts and the relay on demand. All MX hosts listen on `smtp_port`, each
    on its own random 127.x.y.z address. close() stops everything."""

    def __init__(self, directory, ca=None, smtp_port=None, dnssec=False):
        self.dir = make_dir(os.path.abspath(directory))
        self.ca = ca or TestCA(os.path.join(self.dir, "ca"))
        self.smtp_port = smtp_port or free_port()
        self.ips = {}  # host name -> ip
        self._stoppers = []
        self._n = 0
        # dnssec: the zone sec.test. is signed (tests/world/dnssec.py) and
        # the resolver validates it; host() and mx() put names below it there.
        self.signed = None
        try:
            if dnssec:
                self.signed = SignedZone(os.path.join(self.dir, "signed"))
                self.signed.start()
                self._stoppers.append(self.signed.stop)
            self.dns = UnboundDNS(os.path.join(self.dir, "dns"), signed=self.signed)
            self.dns.start()
            self._stoppers.append(self.dns.stop)
            self.https = PolicyHost(os.path.join(self.dir, "https"), self.ca)
            self.https.start()
            self._stoppers.append(self.https.stop)
        except BaseException:
            self.close()
            raise

    def _subdir(self, tag):
        self._n += 1
        return os.path.join(self.dir, "%s-%d" % (tag, self._n))

    # --- DNS helpers ---------------------------------------------------
    def host(self, name, ip=None):
        """Give host `name` an address (A record); returns the ip."""
        name = name.lower().rstrip(".")
        if name not in self.ips:
            self.ips[name] = ip or free_ip(self.smtp_port, used=set(self.ips.values()))
            self._zone_of(name).add(name, "A", self.ips[name])
        return self.ips[name]

    def _zone_of(self, name):
        """Where records of name live: the signed zone or the plain one."""
        if self.signed is not None and self.signed.covers(name):
            return self.signed
        return self.dns

    def mx(self, domain, hosts):
        """Set domain's MX records: hosts is a list of names (preference
        10, 20, ...) or of (preference, name)."""
        vals = []
        for i, h in enumerate(hosts):
            pref, name = h if isinstance(h, tuple) else (10 * (i + 1), h)
            vals.append("%d %s" % (pref, fqdn(name)))
        self._zone_of(domain).set(domain, "MX", vals)

    def sts(self, domain, mode="enforce", mx=None, max_age=86400, id="20260101000001",
            txt=None, body=None, **policy_kw):
        """Publish an MTA-STS policy: TXT _mta-sts.domain and the policy
        file (mx defaults to the domain's MX hosts added through mx()).
        txt/body override the generated record/file text; policy_kw go to
        PolicyHost.serve (status, content_type, redirect, cert_kind, ...)."""
        if mx is None:
            mx = [r[2].split()[1].rstrip(".") for r in self.dns.records
                  if r[0] == fqdn(domain) and r[1] == "MX"]
        self.dns.set("mta-sts." + domain, "A", "127.0.0.1")
        if txt is not False:
            self.dns.set("_mta-sts." + domain, "TXT", txt or "v=STSv1; id=%s;" % id)
        if body is None:
            body = policy_text(mode, mx, max_age)
        self.https.serve(domain, body, **policy_kw)

    def tlsrpt(self, domain, rua):
        """Publish _smtp._tls.domain with the given rua (str or list)."""
        if isinstance(rua, (list, tuple)):
            rua = ",".join(rua)
        self.dns.set("_smtp._tls." + domain, "TXT", "v=TLSRPTv1; rua=%s" % rua)

    # --- MX hosts ------------------------------------------------------
    def postfix(self, domains, hosts, tls=None, host_options=None, main_extra=None,
                port=None, sasl_users=None):
        """Start a Postfix instance accepting mail for `domains` on MX
        `hosts` (names; each gets an A record) on `port` (default
        smtp_port; another port gets addresses where it is free).
        tls: {host: ca.Leaf}; sasl_users: {name: password} requires AUTH
        over TLS (PostfixMX)."""
        port = port or self.smtp_port
        ips = {}
        for h in hosts:
            if port != self.smtp_port and h.lower().rstrip(".") not in self.ips:
                self.host(h, free_ip(port, used=set(self.ips.values())))
            ips[h] = self.host(h)
        pf = PostfixMX(self._subdir("postfix"), self.ca, ips, port, domains,
                       tls=tls, host_options=host_options, main_extra=main_extra,
                       sasl_users=sasl_users)
        self._stoppers.append(pf.stop)
        pf.start()
        return pf

    def fake_mx(self, hostname, script=None):
        """Start a scriptable fake MX for `hostname` (gets an A record)."""
        m = FakeMX(self.host(hostname), self.smtp_port, hostname, self.ca, script)
        self._stoppers.append(m.stop)
        return m.start()

    # --- the relay -----------------------------------------------------
    def redis(self):
        """Start a redis-server of its own (a fleet's shared store)."""
        rs = RedisServer(self._subdir("redis"))
        self._stoppers.append(rs.stop)
        return rs.start()

    def relay_config(self, **overrides):
        """Relay settings that point it at this world."""
        cfg = {"dns_servers": self.dns.servers, "ca_file": self.ca.ca_file,
               "smtp_port": self.smtp_port, "sts_https_port": self.https.port,
               "sts_fetch_timeout": "5s", "retry_schedule": "1s,2s,5s"}
        cfg.update(overrides)
        return cfg

    def relay(self, config=None, start=True, env=None, binary=None):
        cfg = self.relay_config()
        cfg.update(config or {})
        r = Relay(self._subdir("relay"), cfg, binary=binary, env=env)
        self._stoppers.append(r.stop)
        return r.start() if start else r

    def close(self):
        errors = []
        while self._stoppers:
            stop = self._stoppers.pop()
            try:
                stop()
            except Exception as e:  # keep stopping the rest
                errors.append(e)
        if errors:
            raise errors[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _demo(world, domain):
    """The hand-run world: domain with two Postfix MX hosts, an enforce
    policy and a TLS-RPT record; bad.<domain> pointing at a fake MX with
    an expired certificate."""
    mx1, mx2 = "mx1." + domain, "mx2." + domain
    pf = world.postfix([domain], [mx1, mx2])
    world.mx(domain, [mx1, mx2])
    world.sts(domain, "enforce", ["*." + domain])
    world.tlsrpt(domain, "mailto:tlsrpt@" + domain)
    bad = "bad." + domain
    fm = world.fake_mx("mx." + bad, {"cert": world.ca.leaf(["mx." + bad], "expired")})
    world.mx(bad, ["mx." + bad])
    world.sts(bad, "enforce", ["mx." + bad])
    return pf, fm


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m tests.world.world")
    ap.add_argument("command", choices=["up"])
    ap.add_argument("--dir", help="world directory (default: a new temp dir)")
    ap.add_argument("--domain", default="example.test")
    ap.add_argument("--relay", action="store_true",
                    help="also start $STSRELAY_BIN pointed at the world")
    a = ap.parse_args(argv)
    d = a.dir or tempfile.mkdtemp(prefix="world-")
    make_dir(d)
    with World(d) as w:
        pf, fm = _demo(w, a.domain)
        print("world directory: %s" % w.dir)
        print("DNS (unbound):   %s   e.g. python3 -c 'import dnslib; print(dnslib.DNSRecord"
              ".question(\"%s\",\"MX\").send(\"127.0.0.1\",%d))'" % (w.dns.servers, a.domain, w.dns.port))
        print("policy host:     %s (curl --cacert %s --resolve mta-sts.%s:%d:127.0.0.1 %s)" % (
            w.https.url(a.domain), w.ca.ca_file, a.domain, w.https.port, w.https.url(a.domain)))
        for h, ip in sorted(w.ips.items()):
            print("MX host:         %-24s %s:%d" % (h, ip, w.smtp_port))
        print("Postfix maildirs: %s   log: %s" % (pf.mail_dir, pf.maillog))
        print("CA:              %s" % w.ca.ca_file)
        print("relay config:")
        for k, v in w.relay_config().items():
            print("  %s = %s" % (k, v))
        if a.relay:
            r = w.relay()
            print("relay:           %s:%d  log: %s" % (r.host, r.port, r.log_path))
        print("running; Ctrl-C to stop")
        sys.stdout.flush()
        done = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: done.set())
        try:
            while not done.wait(1):
                pass
        except KeyboardInterrupt:
            pass
        print("stopping")
    return 0


if __name__ == "__main__":
    sys.exit(main())
