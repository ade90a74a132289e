# Test certificate authority built with the openssl CLI: a trusted root,
# leaves for given DNS names, and the broken kinds the MTA-STS tests need.
import hashlib
import os
import threading

from .util import make_dir, run

# Kinds of leaf certificate a test can ask for:
#   good        - signed by the trusted root, SAN = the given names
#   expired     - as good but validity 2020-01-01..2021-01-01
#   notyet      - as good but valid only from 2099
#   wrongname   - signed by the root, SAN = wrong-name.invalid only
#   selfsigned  - SAN = the names, signed by its own key
#   untrusted   - SAN = the names, signed by a second CA nobody trusts
#   cnonly      - signed by the root, no subjectAltName at all, CN = the
#                 first name (a host check that falls back to the CN passes;
#                 RFC 8461 §4.2 requires a SAN DNS-ID, so MTA-STS must refuse it)
KINDS = ("good", "expired", "notyet", "wrongname", "selfsigned", "untrusted", "cnonly")


class Leaf:
    """Files of one issued certificate: cert (leaf PEM), key, chain
    (key + leaf in one file, for Postfix smtpd_tls_chain_files), names."""

    def __init__(self, cert, key, chain, names, kind):
        self.cert = cert
        self.key = key
        self.chain = chain
        self.names = list(names)
        self.kind = kind

    def __repr__(self):
        return "Leaf(%s, %s)" % (self.kind, ",".join(self.names))


_CA_CONF = """\
[ ca ]
default_ca = world_ca
[ world_ca ]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}/newcerts
serial = {dir}/serial
default_md = sha256
policy = policy_any
unique_subject = no
copy_extensions = none
[ policy_any ]
commonName = supplied
"""


class TestCA:
    """A root CA in `directory`; `ca_file` is the PEM trust anchor to give
    the relay (ca_file), curl (--cacert) and swaks (--tls-ca-path).
    Leaves are cached by (names, kind): ask as often as you like."""

    __test__ = False  # not a pytest test class

    def __init__(self, directory):
        self.dir = make_dir(os.path.abspath(directory))
        self._lock = threading.Lock()
        self._cache = {}
        self.ca_key, self.ca_file = self._make_root("root", "World Test Root CA")
        self.other_key, self.other_file = self._make_root("other", "Untrusted Other CA")

    def _make_root(self, tag, cn):
        d = make_dir(os.path.join(self.dir, tag))
        key, pem = os.path.join(d, "ca.key"), os.path.join(d, "ca.pem")
        if not os.path.exists(pem):
            run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                 "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", pem,
                 "-days", "3650", "-subj", "/CN=" + cn, "-sha256",
                 "-addext", "basicConstraints=critical,CA:true",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 "-addext", "subjectKeyIdentifier=hash"])
            make_dir(os.path.join(d, "newcerts"))
            open(os.path.join(d, "index.txt"), "w").close()
            with open(os.path.join(d, "serial"), "w") as f:
                f.write("1000\n")
            with open(os.path.join(d, "ca.cnf"), "w") as f:
                f.write(_CA_CONF.format(dir=d))
        return key, pem

    def leaf(self, names, kind="good"):
        """Issue (or return the cached) certificate for DNS `names`."""
        if isinstance(names, str):
            names = [names]
        names = [n.rstrip(".").lower() for n in names]
        if kind not in KINDS:
            raise ValueError("unknown certificate kind %r" % kind)
        ck = (tuple(names), kind)
        with self._lock:
            if ck not in self._cache:
                self._cache[ck] = self._issue(names, kind)
            return self._cache[ck]

    def _issue(self, names, kind):
        tag = hashlib.sha1(("%s|%s" % (",".join(names), kind)).encode()).hexdigest()[:12]
        d = make_dir(os.path.join(self.dir, "leaves", "%s-%s" % (kind, tag)))
        key, cert, csr = (os.path.join(d, x) for x in ("key.pem", "cert.pem", "req.csr"))
        chain, ext = os.path.join(d, "chain.pem"), os.path.join(d, "ext.cnf")
        san_names = ["wrong-name.invalid"] if kind == "wrongname" else names
        with open(ext, "w") as f:
            f.write("[ v3 ]\nbasicConstraints = critical,CA:false\n"
                    "keyUsage = critical,digitalSignature\n"
                    "extendedKeyUsage = serverAuth\n"
                    "subjectKeyIdentifier = hash\n")
            if kind != "cnonly":
                f.write("subjectAltName = %s\n" % ",".join("DNS:" + n for n in san_names))
        run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=" + san_names[0]])
        if kind == "selfsigned":
            run(["openssl", "x509", "-req", "-in", csr, "-signkey", key, "-out", cert,
                 "-days", "365", "-sha256", "-extfile", ext, "-extensions", "v3"])
        elif kind in ("good", "wrongname", "untrusted", "cnonly"):
            cakey, cafile = (self.other_key, self.other_file) if kind == "untrusted" \
                else (self.ca_key, self.ca_file)
            run(["openssl", "x509", "-req", "-in", csr, "-CA", cafile, "-CAkey", cakey,
                 "-set_serial", str(int(tag, 16)), "-out", cert, "-days", "365",
                 "-sha256", "-extfile", ext, "-extensions", "v3"])
        else:
            # OpenSSL 3.0's x509 cannot set validity dates: use `openssl ca`.
            start, end = (("20200101000000Z", "20210101000000Z") if kind == "expired"
                          else ("20990101000000Z", "20991231000000Z"))
            run(["openssl", "ca", "-batch", "-notext", "-config",
                 os.path.join(self.dir, "root", "ca.cnf"), "-cert", self.ca_file,
                 "-keyfile", self.ca_key, "-in", csr, "-out", cert,
                 "-startdate", start, "-enddate", end, "-extfile", ext,
                 "-extensions", "v3", "-md", "sha256"])
        with open(chain, "w") as out:
            for p in (key, cert):
                with open(p) as f:
                    out.write(f.read())
        os.chmod(d, 0o755)
        return Leaf(cert, key, chain, names, kind)
