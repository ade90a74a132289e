# A DNSSEC-signed zone for the world: keys made with ldns-keygen, the zone
# signed with ldns-signzone on every change, served by an authoritative
# Unbound (auth-zone); the world's resolving Unbound validates it (trust anchor).
import base64
import hashlib
import os
import subprocess

from .dns import unbound_control, unbound_process_lines, unbound_start
from .util import WorldError, free_port, make_dir, port_free, run, stop_process

SIGNED_ZONE = "sec.test."


def spki_sha256(cert_pem):
    """SHA2-256 of a certificate's SubjectPublicKeyInfo (TLSA 3 1 1 / 2 1 1)."""
    pub = run(["openssl", "x509", "-in", cert_pem, "-pubkey", "-noout"]).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub,
                         capture_output=True, check=True).stdout
    return hashlib.sha256(der).hexdigest().upper()


def cert_sha256(cert_pem):
    """SHA2-256 of a certificate's DER (TLSA 3 0 1 / 2 0 1)."""
    der = run(["openssl", "x509", "-in", cert_pem, "-outform", "DER"]).stdout
    return hashlib.sha256(der).hexdigest().upper()


def tlsa_name(host, port):
    return "_%d._tcp.%s" % (port, host.rstrip("."))


class SignedZone:
    """Zone `sec.test.` under `directory`: KSK + ZSK (ECDSA P-256, algorithm
    13, made once), records kept in Python, re-signed and reloaded into the
    authoritative Unbound on each change. `trust_anchor` is the KSK's DS file
    for the resolver; `stub` is "127.0.0.1@PORT" of the authority.

    z.add(name, type, value); z.remove(name[, type]); z.bogus(name, type)
    makes that RRset's signature invalid (validators answer SERVFAIL)."""

    def __init__(self, directory, zone=SIGNED_ZONE):
        self.dir = make_dir(os.path.abspath(directory))
        self.zone = zone
        self.port = free_port("127.0.0.1", udp_too=True)
        self.records = []  # (name., TYPE, value, ttl)
        self.bogus_sets = set()  # (name., TYPE)
        self.proc = None
        self.conf = os.path.join(self.dir, "auth.conf")
        self.ctl = os.path.join(self.dir, "auth-control.sock")
        self.log = os.path.join(self.dir, "auth.log")
        self.zonefile = os.path.join(self.dir, "zone.db")
        self.signed = self.zonefile + ".signed"
        ksk = run(["ldns-keygen", "-a", "ECDSAP256SHA256", "-k", zone], cwd=self.dir)
        zsk = run(["ldns-keygen", "-a", "ECDSAP256SHA256", zone], cwd=self.dir)
        self.ksk = os.path.join(self.dir, ksk.stdout.decode().strip())
        self.zsk = os.path.join(self.dir, zsk.stdout.decode().strip())
        self.trust_anchor = self.ksk + ".ds"
        if not os.path.exists(self.trust_anchor):
            raise WorldError("ldns-keygen made no DS file for %s" % zone)
        self.resolver = None  # UnboundDNS, for cache flushes after changes

    @property
    def stub(self):
        return "127.0.0.1@%d" % self.port

    # --- records -------------------------------------------------------
    def _fqdn(self, name):
        name = name.strip().lower()
        return name if name.endswith(".") else name + "."

    def covers(self, name):
        n = self._fqdn(name)
        return n == self.zone or n.endswith("." + self.zone)

    def add(self, name, rtype, value, ttl=300, publish=True):
        if not self.covers(name):
            raise WorldError("%s is not in %s" % (name, self.zone))
        self.records.append((self._fqdn(name), rtype.upper(), value, ttl))
        if publish:
            self.publish()

    def remove(self, name, rtype=None, publish=True):
        n = self._fqdn(name)
        self.records = [r for r in self.records
                        if not (r[0] == n and (rtype is None or r[1] == rtype.upper()))]
        if publish:
            self.publish()

    def set(self, name, rtype, values, ttl=300):
        if isinstance(values, str):
            values = [values]
        self.remove(name, rtype, publish=False)
        for v in values:
            self.add(name, rtype, v, ttl, publish=False)
        self.publish()

    def bogus(self, name, rtype):
        """From now on the signature over name/rtype no longer verifies."""
        self.bogus_sets.add((self._fqdn(name), rtype.upper()))
        self.publish()

    def _zone_text(self):
        z = self.zone
        lines = ["$ORIGIN %s" % z, "$TTL 300",
                 "%s 300 IN SOA ns.%s hostmaster.%s 1 3600 600 86400 60" % (z, z, z),
                 "%s 300 IN NS ns.%s" % (z, z),
                 "ns.%s 300 IN A 127.0.0.1" % z]
        for name, rtype, value, ttl in self.records:
            lines.append("%s %d IN %s %s" % (name, ttl, rtype, value))
        return "\n".join(lines) + "\n"

    def _break_signatures(self):
        """Flip bits in the RRSIGs named by bogus(): the data stays, the
        signature over it is wrong, which a validator calls bogus."""
        if not self.bogus_sets:
            return
        out = []
        with open(self.signed) as f:
            for line in f:
                p = line.split()
                if len(p) > 5 and p[3] == "RRSIG" and \
                        (p[0].lower(), p[4].upper()) in self.bogus_sets:
                    sig = base64.b64decode("".join(p[12:]))
                    sig = bytes([sig[0] ^ 0x55]) + sig[1:]
                    line = " ".join(p[:12] + [base64.b64encode(sig).decode()]) + "\n"
                out.append(line)
        with open(self.signed, "w") as f:
            f.writelines(out)

    def publish(self):
        with open(self.zonefile, "w") as f:
            f.write(self._zone_text())
        # NSEC denial (default), signatures valid from now for 4 weeks
        run(["ldns-signzone", "-f", self.signed, self.zonefile, self.zsk, self.ksk],
            cwd=self.dir)
        self._break_signatures()
        if self.proc is not None:
            self.control("auth_zone_reload", self.zone)
        if self.resolver is not None and self.resolver.proc is not None:
            self.resolver.flush_zone(self.zone)

    # --- process -------------------------------------------------------
    def _config(self):
        q = lambda s: '"%s"' % s  # noqa: E731
        return "\n".join([
            "server:",
            "  interface: 127.0.0.1@%d" % self.port,
            "  port: %d" % self.port,
            "  do-ip6: no",
        ] + unbound_process_lines(self.dir, "auth.pid", self.log) + [
            '  module-config: "iterator"',
            # "test." is one of Unbound's default local zones (RFC 6761),
            # which would answer before the auth-zone
            '  local-zone: "test." nodefault',
            "auth-zone:",
            "  name: %s" % q(self.zone),
            "  zonefile: %s" % q(self.signed),
            "  for-downstream: yes",
            "  for-upstream: no",
            "remote-control:",
            "  control-enable: yes",
            "  control-interface: %s" % q(self.ctl),
            "  control-use-cert: no",
        ]) + "\n"

    def start(self, timeout=10):
        self.publish()
        self.proc = unbound_start(
            self.conf, self._config(), self.log, os.path.join(self.dir, "auth.stderr"),
            "authoritative unbound",
            lambda: os.path.exists(self.ctl) and not port_free("127.0.0.1", self.port),
            timeout)
        return self

    def control(self, *args):
        return unbound_control(self.conf, *args)

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
