# The policy HTTPS host: a private nginx serving
# https://mta-sts.<domain>:<port>/.well-known/mta-sts.txt per domain (SNI,
# one certificate per name), with knobs for the failure cases of RFC 8461.
import contextlib
import os
import re
import time
import urllib.request

from .util import (WorldError, free_port, make_dir, read_text, run, spawn,
                   stop_process, wait_until)

POLICY_PATH = "/.well-known/mta-sts.txt"


def policy_text(mode="enforce", mx=(), max_age=86400, version="STSv1", eol="\r\n"):
    """A well-formed policy body (str)."""
    lines = ["version: %s" % version, "mode: %s" % mode]
    lines += ["mx: %s" % m for m in mx]
    lines.append("max_age: %d" % max_age)
    return eol.join(lines) + eol


class Policy:
    """What nginx serves for one domain. status != 200 serves nginx's own
    body with that status; redirect (a URL) answers 301 to it; oversize
    (bytes) pads the body to that size; cert_kind selects the certificate
    (see ca.KINDS); content_type is sent verbatim; limit_rate (bytes/s)
    makes the body slow, for fetch time-outs."""

    def __init__(self, body="", status=200, content_type="text/plain",
                 redirect=None, oversize=None, cert_kind="good", limit_rate=None,
                 extra_headers=None):
        self.body = body.encode() if isinstance(body, str) else body
        self.status = status
        self.content_type = content_type
        self.redirect = redirect
        self.oversize = oversize
        self.cert_kind = cert_kind
        self.limit_rate = limit_rate
        self.extra_headers = extra_headers or {}


def _ngx_str(s, variables=False):
    """An nginx string literal; in directives that expand variables a "$"
    is written as ${dollar} (set by the geo block), elsewhere refused."""
    if "$" in s and not variables:
        raise WorldError("'$' not allowed here: %r" % s)
    s = s.replace("\\", "\\\\").replace('"', '\\"')
    return '"%s"' % (s.replace("$", "${dollar}") if variables else s)


class PolicyHost:
    """nginx on 127.0.0.1:port. Use:
        host.serve("example.test", policy_text(...))          # 200 text/plain
        host.serve("example.test", body, content_type="text/html")
        host.serve("example.test", status=404) / redirect=URL / oversize=70000
        host.serve("example.test", body, cert_kind="expired")
        host.unserve("example.test")        # no server block: unknown name
        host.fetch_count("example.test")    # requests seen in the access log
    Every change rewrites nginx.conf and reloads, waiting until it applied.
    """

    def __init__(self, directory, ca):
        self.dir = make_dir(os.path.abspath(directory))
        self.ca = ca
        self.port = free_port()
        self.ctl_port = free_port()  # plain HTTP, tells which config is live
        self.policies = {}
        self.generation = 0
        self.conf = os.path.join(self.dir, "nginx.conf")
        self.access_log = os.path.join(self.dir, "access.log")
        self.error_log = os.path.join(self.dir, "error.log")
        self.proc = None
        self._batch = 0
        for sub in ("docs", "tmp", "logs"):
            make_dir(os.path.join(self.dir, sub))

    # --- content -------------------------------------------------------
    def serve(self, domain, body="", **kw):
        self.policies[domain.lower().rstrip(".")] = Policy(body, **kw)
        self._apply()

    def unserve(self, domain):
        self.policies.pop(domain.lower().rstrip("."), None)
        self._apply()

    def url(self, domain):
        return "https://mta-sts.%s:%d%s" % (domain, self.port, POLICY_PATH)

    def _server_block(self, domain, pol):
        host = "mta-sts." + domain
        leaf = self.ca.leaf([host], pol.cert_kind)
        d = make_dir(os.path.join(self.dir, "docs", domain))
        body = pol.body
        if pol.oversize:
            pad = b"# padding\n"
            body = body + pad * ((pol.oversize - len(body)) // len(pad) + 1)
            body = body[:max(pol.oversize, len(pol.body))]
        path = os.path.join(d, "mta-sts.txt")
        with open(path, "wb") as f:
            f.write(body)
        loc = []
        if pol.redirect:
            loc.append("return 301 %s;" % _ngx_str(pol.redirect, True))
        elif pol.status != 200:
            loc.append("return %d;" % pol.status)
        else:
            loc += ["alias %s;" % _ngx_str(path),
                    "types { }",
                    "default_type %s;" % _ngx_str(pol.content_type)]
            if pol.limit_rate:
                loc.append("limit_rate %d;" % pol.limit_rate)
        for k, v in pol.extra_headers.items():
            loc.append("add_header %s %s always;" % (k, _ngx_str(v, True)))
        return """
    server {
        listen 127.0.0.1:%d ssl;
        server_name %s;
        ssl_certificate %s;
        ssl_certificate_key %s;
        location = %s { %s }
        location / { return 404; }
    }""" % (self.port, host, leaf.cert, leaf.key, POLICY_PATH, " ".join(loc))

    def _config(self):
        default = self.ca.leaf(["nginx-default.invalid"], "good")
        servers = "".join(self._server_block(d, p) for d, p in sorted(self.policies.items()))
        tmp = os.path.join(self.dir, "tmp")
        return """# generated by tests/world/https.py
daemon off;
master_process on;
worker_processes 1;
pid %(dir)s/nginx.pid;
error_log %(error_log)s info;
events { worker_connections 256; }
http {
    log_format world '$host $ssl_server_name "$request" $status $body_bytes_sent';
    access_log %(access_log)s world;
    client_body_temp_path %(tmp)s/body;
    proxy_temp_path %(tmp)s/proxy;
    fastcgi_temp_path %(tmp)s/fastcgi;
    uwsgi_temp_path %(tmp)s/uwsgi;
    scgi_temp_path %(tmp)s/scgi;
    default_type text/plain;
    server_tokens off;
    ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_timeout 5;
    geo $dollar { default "$"; }
    server {
        listen 127.0.0.1:%(ctl)d;
        access_log off;
        location = /generation { return 200 "%(gen)d"; }
    }
    server {
        listen 127.0.0.1:%(port)d ssl default_server;
        server_name _;
        ssl_certificate %(dcert)s;
        ssl_certificate_key %(dkey)s;
        return 421;
    }%(servers)s
}
""" % dict(dir=self.dir, error_log=self.error_log, access_log=self.access_log,
           tmp=tmp, ctl=self.ctl_port, gen=self.generation, port=self.port,
           dcert=default.cert, dkey=default.key, servers=servers)

    def _write(self):
        self.generation += 1
        with open(self.conf, "w") as f:
            f.write(self._config())
        run(["nginx", "-t", "-q", "-p", self.dir, "-c", self.conf])

    def _live_generation(self):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d/generation" % self.ctl_port,
                                        timeout=1) as r:
                return int(r.read().decode())
        except (OSError, ValueError):
            return None

    def _workers(self):
        """Number of child processes of the nginx master."""
        n = 0
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[1] == str(self.proc.pid) and fields[0] != "Z":
                n += 1
        return n

    def _wait_generation(self, timeout):
        # The new config answers on the control port once a new worker runs;
        # old workers still accept on the shared listening sockets until
        # they have handled the reload, so also wait for them to be gone.
        def ready():
            if self.proc.poll() is not None:
                raise WorldError("nginx exited (%s): %s" % (
                    self.proc.returncode, read_text(self.error_log) +
                    read_text(os.path.join(self.dir, "nginx.stderr"))))
            return self._live_generation() == self.generation and self._workers() == 1
        wait_until(ready, timeout, what="nginx config generation %d" % self.generation)

    def wait_settled(self, timeout=10):
        """Until the master has a single worker left: after a reload the
        old worker keeps accepting until it has shut down, and may answer
        with the previous configuration (seen: the old certificate)."""
        wait_until(lambda: self._workers() == 1, timeout, what="nginx old workers to exit")

    @contextlib.contextmanager
    def batch(self):
        """Several serve()/unserve() calls with one reload at the end."""
        self._batch += 1
        try:
            yield self
        finally:
            self._batch -= 1
        self._apply()

    def _apply(self, timeout=10):
        if self.proc is None or self._batch:
            return
        self._write()
        run(["nginx", "-p", self.dir, "-c", self.conf, "-s", "reload"])
        self._wait_generation(timeout)

    # --- process -------------------------------------------------------
    def start(self, timeout=10):
        self._write()
        self.proc = spawn(["nginx", "-p", self.dir, "-c", self.conf],
                          os.path.join(self.dir, "nginx.stderr"))
        self._wait_generation(timeout)
        return self

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc, sig=15)
            self.proc = None

    # --- observation ---------------------------------------------------
    def requests(self, domain=None):
        """Access-log entries as (host, sni, request line, status)."""
        out = []
        pat = re.compile(r'^(\S+) (\S+) "([^"]*)" (\d+) ')
        for line in read_text(self.access_log, limit=10 ** 8).splitlines():
            m = pat.match(line)
            if not m:
                continue
            host, sni, req, status = m.group(1), m.group(2), m.group(3), int(m.group(4))
            if domain is None or host.lower() == "mta-sts." + domain.lower():
                out.append((host, sni, req, status))
        return out

    def fetch_count(self, domain, at_least=0, timeout=5.0):
        """How many policy fetches for domain reached nginx.

        nginx writes the access-log line after the last byte of the response
        has gone out, so a client can finish before its line exists: with
        at_least, wait (bounded) until that many lines are there."""
        deadline = time.monotonic() + timeout
        while True:
            n = sum(1 for r in self.requests(domain) if (" " + POLICY_PATH + " ") in r[2])
            if n >= at_least or time.monotonic() >= deadline:
                return n
            time.sleep(0.02)
