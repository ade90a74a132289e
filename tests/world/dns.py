# The world's DNS: a private Unbound serving local-data records from a
# Python API (live changes through unbound-control), plus a tiny upstream
# that makes chosen names fail with SERVFAIL, REFUSED, garbage or silence.
import os
import socket
import threading

import dnslib

from .util import (WorldError, free_ip, free_port, listen_tcp, make_dir, port_free, run, spawn,
                   stop_process, wait_until, read_text)

ZONE = "test."

# `sts check --json`'s mx[].dane for an MX host of this (unsigned) zone:
# DANE does not apply (the signed zone is tests/world/dnssec.py).
UNSIGNED_DANE = {"tlsa": [], "secure": False, "result": "none",
                 "detail": "the MX records are not DNSSEC-validated", "name": None}


def fqdn(name):
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


def txt_rdata(text):
    """TXT text as quoted <=255-byte strings (RFC 1035 character-strings);
    a list/tuple is taken as the strings themselves, unsplit."""
    if isinstance(text, (list, tuple)):
        parts = [p.encode() if isinstance(p, str) else p for p in text]
    else:
        raw = text.encode() if isinstance(text, str) else text
        parts = [raw[i:i + 255] for i in range(0, len(raw), 255)] or [b""]
    out = []
    for p in parts:
        if len(p) > 255:
            raise ValueError("TXT string longer than 255 bytes")
        s = "".join(chr(b) if 32 <= b < 127 and chr(b) not in '"\\' else "\\%03d" % b
                    for b in p)
        out.append('"%s"' % s)
    return " ".join(out)



def unbound_process_lines(directory, pidfile, log):
    """The `server:` lines every Unbound of the world has: in the foreground,
    as the caller, its files in `directory`, one thread, loopback clients."""
    q = lambda s: '"%s"' % s  # noqa: E731
    return [
        "  do-daemonize: no",
        '  username: ""',
        '  chroot: ""',
        "  directory: %s" % q(directory),
        "  pidfile: %s" % q(os.path.join(directory, pidfile)),
        "  use-syslog: no",
        "  logfile: %s" % q(log),
        "  verbosity: 1",
        "  num-threads: 1",
        "  access-control: 127.0.0.0/8 allow",
        "  so-reuseport: no",
    ]


def unbound_start(conf, text, log, stderr_path, what, answering, timeout):
    """Writes `text` to `conf`, checks it, starts `unbound -d` and waits
    until answering() says it serves (raising with its logs should it exit
    first). Returns the process. The world's resolver and the signed zone's
    authoritative server both start this way."""
    with open(conf, "w") as f:
        f.write(text)
    run(["unbound-checkconf", conf])
    proc = spawn(["unbound", "-d", "-c", conf], stderr_path)

    def ready():
        if proc.poll() is not None:
            raise WorldError("%s exited (%s): %s %s" % (
                what, proc.returncode, read_text(log), read_text(stderr_path)))
        return answering()
    wait_until(ready, timeout, what="%s to answer" % what)
    return proc


def unbound_control(conf, *args):
    p = run(["unbound-control", "-c", conf] + list(args), timeout=10)
    out = p.stdout.decode(errors="replace")
    if out.startswith("error"):
        raise WorldError("unbound-control %s: %s" % (" ".join(args), out))
    return out


class FailUpstream:
    """UDP+TCP DNS responder Unbound forwards 'broken' names to. Mode per
    query name: servfail, refused, garbage (unparseable bytes), drop."""

    def __init__(self):
        self.port = free_port("127.0.0.1", udp_too=True)
        self.modes = {}
        self._stop = threading.Event()
        self._udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._udp.bind(("127.0.0.1", self.port))
        self._udp.settimeout(0.2)
        self._tcp = listen_tcp("127.0.0.1", self.port, timeout=0.2)
        self._threads = [threading.Thread(target=f, daemon=True)
                         for f in (self._serve_udp, self._serve_tcp)]
        for t in self._threads:
            t.start()

    def _answer(self, data):
        try:
            q = dnslib.DNSRecord.parse(data)
        except Exception:
            return None
        name = str(q.q.qname).lower()
        mode = None
        for zone, m in self.modes.items():
            if name == zone or name.endswith("." + zone):
                mode = m
        if mode == "drop":
            return None
        if mode == "garbage":
            return data[:2] + b"\x81\x80\x00\x01\x00\x05\x00\x00\x00\x00\xff\xff"
        r = q.reply()
        r.header.rcode = dnslib.RCODE.REFUSED if mode == "refused" else dnslib.RCODE.SERVFAIL
        return r.pack()

    def _serve_udp(self):
        while not self._stop.is_set():
            try:
                data, addr = self._udp.recvfrom(4096)
            except OSError:
                continue
            ans = self._answer(data)
            if ans is not None:
                self._udp.sendto(ans, addr)

    def _serve_tcp(self):
        while not self._stop.is_set():
            try:
                c, _ = self._tcp.accept()
            except OSError:
                continue
            with c:
                c.settimeout(1)
                try:
                    hdr = c.recv(2)
                    data = c.recv(int.from_bytes(hdr, "big")) if len(hdr) == 2 else b""
                    ans = self._answer(data)
                    if ans is not None:
                        c.sendall(len(ans).to_bytes(2, "big") + ans)
                except OSError:
                    pass

    def close(self):
        self._stop.set()
        for t in self._threads:
            t.join(2)
        self._udp.close()
        self._tcp.close()


class UnboundDNS:
    """Unbound on 127.0.0.1:port (and [::1]:port when available).

    dns.add("example.test", "MX", "10 mx1.example.test.")
    dns.add("_mta-sts.example.test", "TXT", "v=STSv1; id=1")   # split if >255
    dns.remove("example.test", "MX")             # all MX of the name
    dns.fail("broken.test", "servfail"|"refused"|"garbage"|"drop"|"timeout")
    dns.unfail("broken.test")
    Names not added under "test." get NXDOMAIN (static zone); names outside
    "test." are forwarded to a dead upstream (SERVFAIL), never the network.
    `servers` is the relay's dns_servers value.
    """

    def __init__(self, directory, records=None, ipv6=None, signed=None):
        self.dir = make_dir(os.path.abspath(directory))
        self.port = free_port("127.0.0.1", udp_too=True)
        # A dnssec.SignedZone: validated with its trust anchor, and the
        # resolver also answers on <ip>:53 (glibc's resolv.conf has no
        # port) for peers that use the system resolver (Postfix as sender).
        self.signed = signed
        self.resolv_ip = None
        if signed is not None:
            self.resolv_ip = free_ip(53, ())
            signed.resolver = self
        if ipv6 is None:
            ipv6 = port_free("::1", self.port) and port_free("::1", self.port, socket.SOCK_DGRAM)
        self.ipv6 = ipv6
        self.records = []  # list of (name, type, rdata-string, ttl)
        self.failing = {}  # zone -> mode
        self.upstream = FailUpstream()
        self.conf = os.path.join(self.dir, "unbound.conf")
        self.ctl = os.path.join(self.dir, "control.sock")
        self.log = os.path.join(self.dir, "unbound.log")
        self.proc = None
        for r in records or ():
            self.add(*r, live=False)

    @property
    def servers(self):
        return "127.0.0.1:%d" % self.port

    def resolv_conf(self, path):
        """Write a resolv.conf pointing at this resolver (port 53 address);
        trust-ad: glibc 2.31+ clears the AD bit of answers otherwise."""
        if self.resolv_ip is None:
            raise WorldError("this resolver has no port-53 address (no signed zone)")
        with open(path, "w") as f:
            f.write("nameserver %s\noptions trust-ad edns0\n" % self.resolv_ip)
        return path

    def flush_zone(self, zone):
        self.control("flush_zone", fqdn(zone))
        self.control("flush_bogus")
        self.control("flush_negative")

    # --- records -------------------------------------------------------
    @staticmethod
    def _line(name, rtype, value, ttl):
        rtype = rtype.upper()
        if rtype == "TXT":
            value = txt_rdata(value)
        return "%s %d IN %s %s" % (fqdn(name), ttl, rtype, value)

    def add(self, name, rtype, value, ttl=300, live=True):
        rec = (fqdn(name), rtype.upper(), value, ttl)
        self.records.append(rec)
        if live and self.proc is not None:
            self.control("local_data", self._line(*rec))
            self.control("flush", rec[0])

    def remove(self, name, rtype=None, value=None, live=True):
        """Remove records of `name` (all, or of one type, or one value)."""
        n = fqdn(name)

        def hit(r):
            return r[0] == n and (rtype is None or r[1] == rtype.upper()) and \
                (value is None or r[2] == value)
        self.records = [r for r in self.records if not hit(r)]
        if live and self.proc is not None:
            # unbound-control removes a whole name: put the rest back.
            self.control("local_data_remove", n)
            for r in self.records:
                if r[0] == n:
                    self.control("local_data", self._line(*r))
            self.control("flush", n)

    def set(self, name, rtype, values, ttl=300):
        """Replace all records of one name and type with `values`."""
        if isinstance(values, (str, bytes)):
            values = [values]
        self.remove(name, rtype)
        for v in values:
            self.add(name, rtype, v, ttl)

    def fail(self, zone, mode="servfail"):
        """Make `zone` and everything below it fail. servfail/refused/garbage
        come from the fake upstream (Unbound turns refused and garbage into
        SERVFAIL for its clients); drop makes the upstream silent; timeout
        makes Unbound itself drop the query (client sees a timeout)."""
        z = fqdn(zone)
        if self.proc is not None and z in self.failing:
            self.unfail(zone)
        self.failing[z] = mode
        if mode != "timeout":
            self.upstream.modes[z] = mode
        if self.proc is not None:
            if mode == "timeout":
                self.control("local_zone", z, "deny")
            else:
                self.control("local_zone", z, "transparent")
                self.control("forward_add", z, "127.0.0.1@%d" % self.upstream.port)
            self.control("flush_zone", z)
            self.control("flush_infra", "all")

    def unfail(self, zone):
        z = fqdn(zone)
        mode = self.failing.pop(z, None)
        self.upstream.modes.pop(z, None)
        if self.proc is not None and mode is not None:
            if mode != "timeout":
                self.control("forward_remove", z)
            self.control("local_zone_remove", z)
            self.control("flush_zone", z)
            self.control("flush_requestlist")

    # --- process -------------------------------------------------------
    def _config(self):
        q = lambda s: '"%s"' % s  # noqa: E731
        lines = ["server:",
                 "  interface: 127.0.0.1@%d" % self.port,
                 "  port: %d" % self.port]
        if self.ipv6:
            lines.append("  interface: ::1@%d" % self.port)
        if self.resolv_ip:
            lines.append("  interface: %s@53" % self.resolv_ip)
        lines += unbound_process_lines(self.dir, "unbound.pid", self.log) + [
            "  do-ip6: %s" % ("yes" if self.ipv6 else "no"),
            "  log-queries: yes",
            '  module-config: "%s"' % ("validator iterator" if self.signed else "iterator"),
            "  do-not-query-localhost: no",
            "  access-control: ::1/128 allow",
            "  outgoing-range: 64",
            "  cache-max-negative-ttl: 1",
            "  val-log-level: 0",
            "  local-zone: %s static" % q(ZONE),
        ]
        if self.signed:
            # the signed zone is resolved through its authority (names with
            # local-data under it are still answered from here, unsigned)
            lines += ["  local-zone: %s transparent" % q(self.signed.zone),
                      "  trust-anchor-file: %s" % q(self.signed.trust_anchor),
                      "  val-log-level: 2"]
        for z, mode in self.failing.items():
            lines.append("  local-zone: %s %s" % (q(z), "deny" if mode == "timeout" else "transparent"))
        for r in self.records:
            line = self._line(*r)
            # Unbound's config takes the record in single quotes so that the
            # TXT's double quotes survive.
            if "'" in line:
                raise WorldError("record with a single quote: %s" % line)
            lines.append("  local-data: '%s'" % line)
        lines += ["remote-control:",
                  "  control-enable: yes",
                  "  control-interface: %s" % q(self.ctl),
                  "  control-use-cert: no"]
        if self.signed:
            lines += ["stub-zone:", "  name: %s" % q(self.signed.zone),
                      "  stub-addr: %s" % self.signed.stub]
        for z, mode in self.failing.items():
            if mode != "timeout":
                lines += ["forward-zone:", "  name: %s" % q(z),
                          "  forward-addr: 127.0.0.1@%d" % self.upstream.port]
        # Everything else goes to the fake upstream with no failing mode for
        # it: it answers SERVFAIL, so nothing ever leaves loopback.
        lines += ["forward-zone:", '  name: "."',
                  "  forward-addr: 127.0.0.1@%d" % self.upstream.port]
        return "\n".join(lines) + "\n"

    def start(self, timeout=10):
        def answering():
            try:
                q = dnslib.DNSRecord.question("world-probe." + ZONE, "A")
                q.send("127.0.0.1", self.port, timeout=0.3)
                return os.path.exists(self.ctl)
            except (OSError, socket.timeout):
                return False
        self.proc = unbound_start(self.conf, self._config(), self.log,
                                  os.path.join(self.dir, "unbound.stderr"), "unbound",
                                  answering, timeout)
        return self

    def control(self, *args):
        if self.proc is None:
            raise WorldError("unbound not running")
        return unbound_control(self.conf, *args)

    def query(self, name, rtype="A", timeout=3, tcp=False):
        """Ask the world's Unbound; returns a dnslib.DNSRecord."""
        q = dnslib.DNSRecord.question(name, rtype)
        return dnslib.DNSRecord.parse(q.send("127.0.0.1", self.port, tcp=tcp, timeout=timeout))

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
        self.upstream.close()
