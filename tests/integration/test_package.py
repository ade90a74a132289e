# The Debian package end to end, as an operator meets it: scripts/package
# builds the .deb; it is installed with dpkg into a copy-on-write view of
# this machine (overlayfs over / in a private mount namespace, entered with
# chroot), the daemon is started the way the installed unit says, a non-root
# user submits with sendmail and with mail (bsd-mailx), both messages reach
# a Postfix MX of the test world byte for byte, and the package is purged.
# The real machine (its Postfix, its /usr/sbin/sendmail) is never touched.
import grp
import hashlib
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from conftest import free_port
from mountns import anchor, propagation, release

SRC = os.environ.get("STSRELAY_SRC",
                     os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
UNIT = "/lib/systemd/system/stsrelay.service"
CONF = "/etc/stsrelay/stsrelay.conf"
USER = "pkgtester"          # the non-root submitter, made inside the overlay
DOMAIN = "pkg.test"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"),
                                reason="needs root and unshare (mount namespace, overlayfs)")


# ------------------------------------------------------------------ overlay
class Overlay:
    """/ seen through overlayfs in a private mount namespace: a `sleep`
    holds the namespace; commands enter it with nsenter and chroot into the
    merged tree; files are reached from here through /proc/PID/root. Every
    change lands in a tmpfs that vanishes with the namespace."""

    def __init__(self):
        self.base = tempfile.mkdtemp(prefix="stsrelay-overlay-")
        self.merged = os.path.join(self.base, "m")
        self.procs = []
        b = self.base
        setup = " && ".join([
            anchor(b), "echo anchored", "read go",
            "mount -t tmpfs tmpfs %s" % b,
            "mkdir %s/u %s/w %s/m" % (b, b, b),
            "mount -t overlay overlay -o lowerdir=/,upperdir=%s/u,workdir=%s/w %s/m" % (b, b, b),
            "mount -t proc proc %s/m/proc" % b,
            "mount --rbind /dev %s/m/dev" % b,
            "mount --rbind /sys %s/m/sys" % b,
            # fresh /run (no /run/systemd/system: systemd is not running
            # here, as in a container) and /tmp
            "mount -t tmpfs tmpfs %s/m/run" % b,
            "mount -t tmpfs -o mode=1777 tmpfs %s/m/tmp" % b,
            "echo ready", "exec sleep 3600"])
        self.holder = subprocess.Popen(["unshare", "-m", "--propagation", propagation(),
                                        "/bin/sh", "-c", setup], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self.holder.stdout.readline()
        try:
            release(b)
        finally:
            if line.strip() == b"anchored":
                self.holder.stdin.write(b"go\n")
                self.holder.stdin.flush()
                line = self.holder.stdout.readline()
        if line.strip() != b"ready":
            err = self.holder.stderr.read().decode(errors="replace") if self.holder.poll() \
                is not None else ""
            self.close()
            raise RuntimeError("overlay setup failed: %r %s" % (line, err))

    def path(self, p):
        """Path of p (inside the overlay) as seen from this process."""
        return "/proc/%d/root%s%s" % (self.holder.pid, self.merged, p)

    def argv(self, argv, user=None, env=None):
        e = ["PATH=" + PATH, "LANG=C.UTF-8", "HOME=" + ("/home/" + user if user else "/root")]
        e += ["%s=%s" % kv for kv in (env or {}).items()]
        inner = ["env", "-i"] + e + list(argv)
        if user:
            inner = ["runuser", "-u", user, "--"] + inner
        # -r: the holder's root directory, not the namespace's: when the
        # suite itself runs in a chroot (CI), they differ.
        return ["nsenter", "-t", str(self.holder.pid), "-m", "-r", "--",
                "chroot", self.merged] + inner

    def run(self, argv, user=None, env=None, input=None, timeout=120):
        return subprocess.run(self.argv(argv, user, env), input=input, capture_output=True,
                              timeout=timeout)

    def ok(self, argv, **kw):
        p = self.run(argv, **kw)
        assert p.returncode == 0, "%s: rc=%d\n%s%s" % (
            " ".join(argv), p.returncode, p.stdout.decode(errors="replace"),
            p.stderr.decode(errors="replace"))
        return p.stdout.decode()

    def spawn(self, argv, log, env=None):
        p = subprocess.Popen(self.argv(argv, env=env), stdout=log, stderr=log)
        self.procs.append(p)
        return p

    def read(self, p):
        with open(self.path(p), "rb") as f:
            return f.read()

    def write(self, p, data, mode=0o644):
        with open(self.path(p), "wb") as f:
            f.write(data)
        os.chmod(self.path(p), mode)

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
        if self.holder.poll() is None:
            self.holder.kill()
        self.holder.wait(timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)


# ------------------------------------------------------------- sd_notify
class NotifySocket:
    """The service manager's end of sd_notify: an abstract datagram socket
    (abstract names are shared across mount namespaces and chroots)."""

    def __init__(self):
        self.name = "stsrelay-test-notify-%d-%d" % (os.getpid(), time.monotonic_ns())
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.messages = []

    @property
    def env(self):
        return "@" + self.name

    def wait_for(self, field, timeout=30):
        """Wait for a datagram holding the line `field` (e.g. READY=1)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                break
            self.messages.append(data)
            if field in data.split("\n"):
                return data
        raise AssertionError("no %s from the daemon within %ds; got %r" %
                             (field, timeout, self.messages))

    def close(self):
        self.sock.close()


# ------------------------------------------------------------- the unit
def unit_settings(text):
    """The [Service] settings of a unit file: name -> list of values."""
    out, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            k, _, v = line.partition("=")
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def exec_argv(value, mainpid=None):
    """ExecStart= style value -> argv (no prefixes such as '-' in our unit)."""
    assert value[0] not in "-@:+!", value
    if mainpid is not None:
        value = value.replace("$MAINPID", str(mainpid))
    assert "$" not in value and "%" not in value, value
    return shlex.split(value)


def sandboxed(settings, argv):
    """argv run the way systemd would, as far as a chroot can show it: the
    capability bounding set (what root keeps until it becomes `user`),
    NoNewPrivileges and UMask. The rest of the sandbox (ProtectSystem, ...)
    needs systemd itself; systemd-analyze checks those lines."""
    caps = settings["CapabilityBoundingSet"][-1].split()
    bset = "-all," + ",".join("+" + c.lower().replace("cap_", "") for c in caps)
    inner = ["setpriv", "--bounding-set", bset]
    if settings.get("NoNewPrivileges", ["no"])[-1] == "yes":
        inner.append("--no-new-privs")
    umask = settings.get("UMask", ["0022"])[-1]
    return ["sh", "-c", 'umask %s && exec "$@"' % umask, "sh"] + inner + ["--"] + argv


def set_key(conf, key, value):
    """conf bytes with `key = value` (replacing the line, or appended)."""
    lines = conf.decode().split("\n")
    rx = re.compile(r"^#?\s*%s\s*=" % re.escape(key))
    for i, l in enumerate(lines):
        if rx.match(l):
            lines[i] = "%s = %s" % (key, value)
            break
    else:
        lines.insert(len(lines) - 1, "%s = %s" % (key, value))
    return "\n".join(lines).encode()


def sha(b):
    return hashlib.sha256(b).hexdigest()


def body_of(raw):
    """The body of a stored message, line ends as LF (Postfix's maildir)."""
    raw = raw.replace(b"\r\n", b"\n")
    return raw.split(b"\n\n", 1)[1]


def host_state():
    """What must not change on the real machine."""
    def q(argv):
        return subprocess.run(argv, capture_output=True).stdout
    st = os.lstat("/usr/sbin/sendmail") if os.path.lexists("/usr/sbin/sendmail") else None
    return {"sendmail": (st.st_ino, st.st_size, st.st_mode) if st else None,
            "sendmail_pkg": q(["dpkg", "-S", "/usr/sbin/sendmail"]),
            "postfix": q(["dpkg-query", "-W", "-f=${Status}", "postfix"]),
            "stsrelay_pkg": q(["dpkg-query", "-W", "-f=${Status}", "stsrelay"]),
            "user": q(["getent", "passwd", "stsrelay"]),
            "spool": os.path.lexists("/var/spool/stsrelay"),
            "etc": os.path.lexists("/etc/stsrelay")}


# ------------------------------------------------------------------ test
def mailq_as_user_hook(ov, user):
    """Issue 10's non-root mailq: a message to an address nobody answers at
    (an address literal in TEST-NET-1) defers, and `mailq` run by the
    non-root user lists it with the reason, through the daemon's public
    showq socket (the user cannot read the spool)."""
    ov.ok(["/usr/sbin/sendmail", "-i", "someone@[192.0.2.1]"], user=user,
          input=b"Subject: stays in the queue\n\nx\n")
    deadline = time.monotonic() + 90
    out = ""
    while time.monotonic() < deadline:
        p = ov.run(["/usr/bin/mailq"], user=user)
        out = p.stdout.decode(errors="replace")
        assert p.returncode == 0, (p.returncode, out, p.stderr)
        if "someone@[192.0.2.1] (deferred" in out:
            break
        time.sleep(0.5)
    assert "someone@[192.0.2.1] (deferred" in out, out
    assert re.search(r"^ +4\.4\.1 connect to 192\.0\.2\.1\[192\.0\.2\.1\]:\d+: ", out, re.M), out
    assert ov.run(["ls", "/var/spool/stsrelay/queue"], user=user).returncode != 0


def test_deb_install_use_purge(world, world_ca):
    before = host_state()
    out = tempfile.mkdtemp(prefix="stsrelay-deb-")
    t0 = time.monotonic()
    p = subprocess.run([os.path.join(SRC, "scripts", "package"), "--out", out],
                       capture_output=True, timeout=900, cwd=SRC)
    assert p.returncode == 0, p.stderr.decode(errors="replace")[-4000:]
    build_s = time.monotonic() - t0
    debs = [f for f in os.listdir(out) if f.endswith(".deb")]
    version = subprocess.run([os.environ["STSRELAY_BIN"], "--version"], capture_output=True,
                             check=True).stdout.decode().split()[1]
    assert re.fullmatch(r"stsrelay_%s_[a-z0-9]+\.deb" % re.escape(version), debs[0]), debs
    deb = os.path.join(out, debs[0])
    fields = subprocess.run(["dpkg-deb", "-f", deb], capture_output=True,
                            check=True).stdout.decode()
    for f in ("Provides: mail-transport-agent", "Conflicts: mail-transport-agent",
              "Replaces: mail-transport-agent"):
        assert f in fields, fields
    depends = re.search(r"^Depends: (.*)$", fields, re.M).group(1)
    for lib in ("libc6", "libuv1", "libc-ares2", "libcurl4", "libssl3", "libjansson4",
                "zlib1g", "libsystemd0", "libcrypt1", "libhiredis0.14", "libmicrohttpd12"):
        assert re.search(r"(^|, )%s( \(|,|$)" % re.escape(lib), depends), depends

    # The world: a Postfix MX for pkg.test on the real machine, same network.
    leaf = world_ca.leaf(["mx1." + DOMAIN], "good")
    pf = world.postfix([DOMAIN], ["mx1." + DOMAIN], tls={"mx1." + DOMAIN: leaf})
    world.mx(DOMAIN, ["mx1." + DOMAIN])
    cfg = world.relay_config()

    ov = Overlay()
    notify = NotifySocket()
    daemon = None
    try:
        # Another MTA is installed (Postfix, the world's peer): the package
        # conflicts with it, so it goes first, in the overlay only. A
        # policy-rc.d keeps its scripts from touching any running service.
        ov.write("/usr/sbin/policy-rc.d", b"#!/bin/sh\nexit 101\n", 0o755)
        if ov.run(["dpkg-query", "-W", "postfix"]).returncode == 0:
            ov.ok(["dpkg", "--purge", "--force-depends", "postfix"])
        ov.write("/root/stsrelay.deb", open(deb, "rb").read())
        ov.ok(["dpkg", "-i", "/root/stsrelay.deb"])
        status = ov.ok(["dpkg-query", "-W", "-f=${Status} ${Version}", "stsrelay"])
        assert status == "install ok installed %s" % version, status

        # What the maintainer scripts made.
        pw = ov.ok(["getent", "passwd", "stsrelay"]).strip().split(":")
        assert pw[5] == "/var/spool/stsrelay" and pw[6] == "/usr/sbin/nologin", pw
        assert int(pw[2]) < 1000, pw  # a system user
        drop = ov.ok(["getent", "group", "stsrelay-drop"]).strip().split(":")
        ov.ok(["getent", "group", "stsrelay"])
        assert "stsrelay-drop" in ov.ok(["id", "-nG", "stsrelay"]).split()
        st = os.stat(ov.path("/usr/sbin/stsrelay"))
        assert oct(st.st_mode & 0o7777) == "0o2755" and st.st_uid == 0, oct(st.st_mode)
        assert st.st_gid == int(drop[2])
        for link, target in (("/usr/sbin/sendmail", "stsrelay"),
                             ("/usr/lib/sendmail", "../sbin/stsrelay"),
                             ("/usr/bin/mailq", "../sbin/stsrelay")):
            assert os.readlink(ov.path(link)) == target, link
        assert ov.ok(["dpkg", "-S", "/usr/sbin/sendmail"]).startswith("stsrelay:")
        conffiles = ov.ok(["dpkg-query", "-W", "-f=${Conffiles}", "stsrelay"])
        assert re.search(r"^ %s [0-9a-f]{32}$" % re.escape(CONF), conffiles, re.M), conffiles
        conf0 = ov.read(CONF)
        assert re.search(rb"^spool_dir = /var/spool/stsrelay$", conf0, re.M)
        assert re.search(rb"^user = stsrelay$", conf0, re.M)
        sp = os.stat(ov.path("/var/spool/stsrelay"))
        assert sp.st_uid == int(pw[2]) and oct(sp.st_mode & 0o7777) == "0o755"
        wants = "/etc/systemd/system/multi-user.target.wants/stsrelay.service"
        assert os.readlink(ov.path(wants)) == UNIT
        assert ov.ok(["man", "-w", "stsrelay.conf"]).strip() == \
            "/usr/share/man/man5/stsrelay.conf.5.gz"
        assert os.readlink(ov.path("/usr/share/man/man1/sendmail.1.gz")) == \
            "stsrelay-sendmail.1.gz"
        assert ov.ok(["man", "-w", "sendmail"]).strip() == \
            "/usr/share/man/man1/stsrelay-sendmail.1.gz"
        # The installed unit, checked by systemd itself with the real paths
        # (ExecStart binaries, the man pages of Documentation=).
        ov.ok(["systemd-analyze", "verify", UNIT])
        assert ov.ok(["stsrelay", "--version"]).strip() == "stsrelay " + version

        # Point the packaged configuration at the test world.
        port = free_port()
        conf = conf0
        for k, v in (("listen", "127.0.0.1:%d" % port), ("hostname", "relay." + DOMAIN),
                     ("dns_servers", cfg["dns_servers"]),
                     ("ca_file", "/etc/stsrelay/test-ca.pem"),
                     ("smtp_port", cfg["smtp_port"]), ("sts_https_port", cfg["sts_https_port"]),
                     ("retry_schedule", "1s,2s,5s")):
            conf = set_key(conf, k, v)
        ov.write("/etc/stsrelay/test-ca.pem", open(world_ca.ca_file, "rb").read())
        ov.write(CONF, conf)

        # Start it exactly as the unit does: ExecStartPre, then ExecStart,
        # with its capability bounding set, NoNewPrivileges and UMask.
        unit = unit_settings(ov.read(UNIT).decode())
        assert unit["Type"] == ["notify"]
        for pre in unit["ExecStartPre"]:
            ov.ok(sandboxed(unit, exec_argv(pre)))
        log = open(os.path.join(out, "daemon.log"), "wb")
        daemon = ov.spawn(sandboxed(unit, exec_argv(unit["ExecStart"][0])), log,
                          env={"NOTIFY_SOCKET": notify.env})
        ready = notify.wait_for("READY=1")
        assert daemon.poll() is None
        assert "STATUS=running" in ready.split("\n")
        log_text = open(os.path.join(out, "daemon.log")).read()
        assert "started: stsrelay %s, config %s" % (version, CONF) in log_text, log_text
        assert "running as user stsrelay" in log_text, log_text

        # A local user who is not root submits, with sendmail and with mail.
        ov.ok(["useradd", "--create-home", USER])
        uid = int(ov.ok(["id", "-u", USER]))
        body1 = b"Hello from sendmail in the package test.\n.leading dot kept\nlast line\n"
        msg1 = (b"From: %s@relay.pkg.test\nTo: one@pkg.test\nSubject: pkg sendmail\n\n"
                % USER.encode()) + body1
        ov.ok(["/usr/sbin/sendmail", "-i", "one@" + DOMAIN], user=USER, input=msg1)
        body2 = b"Hello from bsd-mailx.\nSecond line.\n"
        ov.ok(["mail", "-s", "pkg mailx", "two@" + DOMAIN], user=USER, input=body2)

        got1 = pf.wait_messages("one@" + DOMAIN, 1, timeout=60)[0]
        got2 = pf.wait_messages("two@" + DOMAIN, 1, timeout=60)[0]
        assert sha(body_of(got1.raw)) == sha(body1), got1.raw
        assert sha(body_of(got2.raw)) == sha(body2), got2.raw
        assert got1.msg["Subject"] == "pkg sendmail" and got2.msg["Subject"] == "pkg mailx"
        for got in (got1, got2):
            assert any("stsrelay, from userid %d" % uid in r for r in got.received()), \
                got.received()
        mailq_as_user_hook(ov, USER)

        # `systemctl reload`: ExecReload runs check, then signals the daemon.
        bad = conf + b"no_such_key = 1\n"
        ov.write(CONF, bad)
        chk = ov.run(exec_argv(unit["ExecReload"][0]))
        nlines = bad.count(b"\n")
        assert chk.returncode == 78, chk
        assert chk.stderr.decode().strip() == "%s:%d: unknown key 'no_such_key'" % (CONF, nlines)
        ov.write(CONF, conf)
        for cmd in unit["ExecReload"]:
            ov.ok(exec_argv(cmd, mainpid=daemon.pid))
        notify.wait_for("RELOADING=1")
        notify.wait_for("READY=1")

        daemon.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        assert daemon.wait(timeout=60) == 0
        log.close()

        # Purge removes the files, the unit's enable link, the spool and the
        # packaged configuration; the system user and groups stay (Debian practice).
        # (bsd-mailx needs some MTA: it goes first, as apt would do it)
        ov.ok(["dpkg", "--purge", "bsd-mailx"])
        ov.ok(["dpkg", "--purge", "stsrelay"])
        assert ov.run(["dpkg-query", "-W", "-f=${Status}", "stsrelay"]).stdout in (
            b"", b"unknown ok not-installed")
        for gone in ("/usr/sbin/stsrelay", "/usr/sbin/sendmail", "/usr/lib/sendmail",
                     "/usr/bin/mailq", UNIT, wants, "/var/spool/stsrelay", CONF,
                     "/usr/share/man/man8/stsrelay.8.gz"):
            assert not os.path.lexists(ov.path(gone)), gone
        # a file the operator put there is theirs: it stays
        assert os.listdir(ov.path("/etc/stsrelay")) == ["test-ca.pem"]
    finally:
        logpath = os.path.join(out, "daemon.log")
        if os.path.exists(logpath):  # shown by pytest when the test fails
            print("---- daemon log ----\n" + open(logpath, errors="replace").read()[-6000:])
        notify.close()
        ov.close()
        shutil.rmtree(out, ignore_errors=True)
    after = host_state()
    assert after == before, (before, after)
    print("package built in %.1fs" % build_s)
