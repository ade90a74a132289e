# A private Postfix instance as the receiving MX: one smtpd per MX address
# (own certificate and myhostname, STARTTLS offered), virtual delivery into
# one Maildir per test domain, messages readable from Python.
import atexit
import email
import email.policy
import os
import pwd
import re
import shutil
import tempfile
import time

from .util import (WorldError, make_dir, port_accepts, read_text, run, run_tty,
                   wait_until, kill_pid, track_pid)

# Services the instance needs; chroot off everywhere so no /etc copies are
# needed under the queue directory.
_MASTER_BASE = """\
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Message:
    """One delivered message: path, raw bytes, parsed email.message."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            self.raw = f.read()
        self.msg = email.message_from_bytes(self.raw, policy=email.policy.compat32)

    @property
    def recipient(self):
        """Envelope recipient, from the Delivered-To header virtual(8) adds."""
        v = self.msg.get("Delivered-To", "")
        return v.strip().lower()

    def received(self):
        return self.msg.get_all("Received", [])

    def __repr__(self):
        return "Message(%s, %d bytes)" % (self.recipient, len(self.raw))


class PostfixMX:
    _queue_template = None  # fresh queue tree made by `postfix check`

    """Postfix instance under `directory`, with `hosts` = {mx host name: ip}
    all listening on `port`. `domains` are the mail domains it accepts
    (catch-all per domain). `tls` maps host name to a ca.Leaf (default: a
    good certificate for that name); `host_options` maps host name to extra
    smtpd -o settings, e.g. {"smtpd_tls_security_level": "none"}.
    `sasl_users` ({name: password}) makes it a submission server: Cyrus
    SASL (sasldb2 made by saslpasswd2, mechanisms PLAIN and LOGIN, realm
    SASL_REALM), AUTH offered only after STARTTLS, and every recipient
    refused unless the client authenticated (mynetworks grants nothing)."""

    SASL_REALM = "sasl.world.test"

    def __init__(self, directory, ca, hosts, port, domains, tls=None,
                 host_options=None, main_extra=None, sasl_users=None):
        self.dir = make_dir(os.path.abspath(directory))
        self.ca = ca
        self.hosts = dict(hosts)
        self.port = port
        self.domains = [d.lower().rstrip(".") for d in domains]
        self.tls = dict(tls or {})
        self.host_options = dict(host_options or {})
        self.main_extra = dict(main_extra or {})
        self.sasl_users = dict(sasl_users or {})
        self.conf_dir = make_dir(os.path.join(self.dir, "etc"))
        self.queue_dir = os.path.join(self.dir, "queue")
        self.data_dir = os.path.join(self.dir, "data")
        self.mail_dir = os.path.join(self.dir, "mail")
        self.maillog = os.path.join(self.dir, "maillog")
        self.master_pid = None
        nobody = pwd.getpwnam("nobody")
        self.uid, self.gid = nobody.pw_uid, nobody.pw_gid

    def _instance_main(self):
        """main.cf keys of every private instance: its own directories and
        log, loopback IPv4 only."""
        return {
            "compatibility_level": "3.6",
            "queue_directory": self.queue_dir,
            "data_directory": self.data_dir,
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "maillog_file": self.maillog,
            "maillog_file_prefixes": self.dir,
            # Postfix checks inet_interfaces against interface addresses
            # (only 127.0.0.1 is one); the per-address smtpd entries in
            # master.cf bind to 127.x.y.z regardless.
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            # no local delivery, no aliases: loopback clients relay, others
            # only to the instance's own domains
            "mydestination": "",
            "relay_domains": "",
            "mynetworks": "127.0.0.0/8",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "biff": "no",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "import_environment": "MAIL_CONFIG MAIL_DEBUG TZ LANG=C",
        }

    def _main_cf(self):
        vmap = os.path.join(self.conf_dir, "vmailbox")
        with open(vmap, "w") as f:
            for d in self.domains:
                f.write("@%s %s/\n" % (d, d))
        main = self._instance_main()
        main.update({
            "myhostname": "world-postfix.test",
            "mydomain": "test",
            "myorigin": "world-postfix.test",
            "smtputf8_enable": "yes",
            "smtpd_banner": "$myhostname ESMTP world",
            "smtpd_tls_security_level": "may",
            "smtpd_tls_received_header": "yes",
            "smtpd_tls_loglevel": "1",
            "virtual_mailbox_domains": ", ".join(self.domains) or "world-none.invalid",
            "virtual_mailbox_base": self.mail_dir,
            "virtual_mailbox_maps": "texthash:" + vmap,
            "virtual_uid_maps": "static:%d" % self.uid,
            "virtual_gid_maps": "static:%d" % self.gid,
            "virtual_mailbox_limit": "0",
            "message_size_limit": "104857600",
            # the receiving side must never try to send anything anywhere
            "default_transport": "error:world postfix sends nothing",
            "relay_transport": "error:world postfix sends nothing",
            "notify_classes": "",
            "bounce_queue_lifetime": "0",
            "delay_warning_time": "0",
            "queue_run_delay": "10s",
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
        })
        if self.sasl_users:
            main.update(self._sasl_main())
        main.update(self.main_extra)
        return "".join("%s = %s\n" % kv for kv in main.items())

    def _sasl_main(self):
        """Cyrus SASL for smtpd: <config dir>/sasl/smtpd.conf (named by
        smtpd_sasl_path; Debian's Postfix looks in $config_directory/sasl
        whatever cyrus_sasl_config_path says, upstream's through that
        parameter, so both point there) with an auxprop sasldb2 that
        saslpasswd2 fills, readable by smtpd (user postfix, no chroot) and
        kept out of the config directory (postfix-script wants that owned
        by root)."""
        sdir = make_dir(os.path.join(self.conf_dir, "sasl"), 0o755)
        db = os.path.join(make_dir(os.path.join(self.dir, "sasldb"), 0o755), "sasldb2")
        with open(os.path.join(sdir, "smtpd.conf"), "w") as f:
            f.write("pwcheck_method: auxprop\nauxprop_plugin: sasldb\n"
                    "sasldb_path: %s\nmech_list: PLAIN LOGIN\n" % db)
        for user, password in sorted(self.sasl_users.items()):
            run(["saslpasswd2", "-p", "-c", "-f", db, "-u", self.SASL_REALM, user],
                input=password.encode())
        pw = pwd.getpwnam("postfix")
        os.chown(db, pw.pw_uid, pw.pw_gid)
        os.chmod(db, 0o600)
        return {
            "smtpd_sasl_auth_enable": "yes",
            "smtpd_sasl_type": "cyrus",
            "smtpd_sasl_path": "smtpd",
            "cyrus_sasl_config_path": sdir,
            "smtpd_sasl_local_domain": self.SASL_REALM,
            "smtpd_sasl_security_options": "noanonymous",
            "smtpd_tls_auth_only": "yes",
            "smtpd_relay_restrictions": "permit_sasl_authenticated, reject",
            "smtpd_recipient_restrictions": "permit_sasl_authenticated, reject",
        }

    def _master_cf(self):
        lines = [_MASTER_BASE]
        for name, ip in sorted(self.hosts.items()):
            leaf = self.tls.get(name) or self.ca.leaf([name], "good")
            opts = {"myhostname": name, "smtpd_tls_chain_files": leaf.chain,
                    "syslog_name": "postfix/" + name}
            opts.update(self.host_options.get(name, {}))
            lines.append("%s:%d inet n - n - - smtpd\n" % (ip, self.port))
            for k, v in opts.items():
                lines.append("  -o %s=%s\n" % (k, v))
        return "".join(lines)

    def _postfix(self, *args, check=True, timeout=60):
        rc, out = run_tty(["postfix", "-c", self.conf_dir] + list(args), timeout=timeout)
        if check and (rc != 0 or "fatal:" in out):
            raise WorldError("postfix %s failed (rc=%s):\n%s\nmaillog:\n%s" % (
                " ".join(args), rc, out, read_text(self.maillog, 4000)))
        return out

    def start(self, timeout=20):
        for d in (self.queue_dir, self.data_dir):
            make_dir(d)
        make_dir(self.mail_dir)
        os.chown(self.mail_dir, self.uid, self.gid)
        os.chown(self.data_dir, pwd.getpwnam("postfix").pw_uid, -1)
        with open(os.path.join(self.conf_dir, "main.cf"), "w") as f:
            f.write(self._main_cf())
        with open(os.path.join(self.conf_dir, "master.cf"), "w") as f:
            f.write(self._master_cf())
        # Postfix re-reads a main.cf modified within the last second until
        # it is older (0.3 s polls): backdate both files to skip that wait.
        past = time.time() - 60
        for fn in ("main.cf", "master.cf"):
            os.utime(os.path.join(self.conf_dir, fn), (past, past))
        # `check` creates the queue subdirectories with the right owners
        # (slow: ~2 s), so the first instance's fresh tree is kept as a
        # template and copied (cp -a keeps owners) for the next ones; `start`
        # still runs Postfix's fatal-error checks and prints them to our pty.
        tmpl = PostfixMX._queue_template
        if tmpl and os.path.isdir(tmpl) and not os.listdir(self.queue_dir):
            os.rmdir(self.queue_dir)
            run(["cp", "-a", tmpl, self.queue_dir])
        else:
            self._postfix("check")
            if tmpl is None:
                PostfixMX._queue_template = tempfile.mkdtemp(prefix="world-pfq-")
                os.rmdir(PostfixMX._queue_template)
                run(["cp", "-a", self.queue_dir, PostfixMX._queue_template])
                atexit.register(shutil.rmtree, PostfixMX._queue_template, True)
        self._postfix("start")
        pidfile = os.path.join(self.queue_dir, "pid", "master.pid")

        def ready():
            if self.master_pid is None:
                try:
                    self.master_pid = int(open(pidfile).read().strip())
                    track_pid(self.master_pid)
                except (OSError, ValueError):
                    return False
            return all(port_accepts(ip, self.port) for ip in self.hosts.values())
        try:
            wait_until(ready, timeout, what="postfix smtpd on %s" % self.hosts)
        except WorldError as e:
            raise WorldError("%s\nmaillog:\n%s" % (e, read_text(self.maillog)))
        return self

    def stop(self):
        if self.master_pid is None:
            return
        self._postfix("stop", check=False, timeout=20)
        kill_pid(self.master_pid, timeout=10)
        self.master_pid = None

    # --- mailboxes -----------------------------------------------------
    def messages(self, recipient=None, domain=None):
        """Delivered messages (oldest first), optionally only those for one
        envelope recipient or one domain."""
        out = []
        doms = [domain.lower()] if domain else self.domains
        if recipient and not domain:
            doms = [recipient.rsplit("@", 1)[-1].lower()]
        for d in doms:
            md = os.path.join(self.mail_dir, d)
            for sub in ("new", "cur"):
                p = os.path.join(md, sub)
                if not os.path.isdir(p):
                    continue
                for fn in os.listdir(p):
                    out.append(Message(os.path.join(p, fn)))
        if recipient:
            out = [m for m in out if m.recipient == recipient.lower()]
        out.sort(key=lambda m: (os.stat(m.path).st_mtime_ns, m.path))
        return out

    def wait_messages(self, recipient=None, count=1, timeout=15, domain=None):
        """Wait until at least `count` messages arrived; returns them."""
        try:
            return wait_until(lambda: (lambda m: m if len(m) >= count else None)(
                self.messages(recipient, domain)), timeout,
                what="%d message(s) for %s" % (count, recipient or domain or "any"))
        except WorldError as e:
            raise WorldError("%s\nmaillog tail:\n%s" % (e, read_text(self.maillog, 4000)))

    def log(self):
        return read_text(self.maillog, limit=10 ** 7)

    def tls_received(self, message):
        """True if the message's newest Received header says ESMTPS."""
        rec = message.received()
        return bool(rec) and re.search(r"\bwith ESMTPS\b", rec[0]) is not None


class SendingPostfix(PostfixMX):
    """A private Postfix that SENDS: one smtpd on 127.0.0.1:`port` takes mail
    from mynetworks and its smtp(8) delivers it to the recipient domains' MX
    hosts. The main.cf every such sender shares is `_sender_main()`; the
    world's DANE sender (postfix_sender.py) and the benchmark's
    (tests/bench/peers.py) add their own keys to it."""

    def __init__(self, directory, ca, hostname, port):
        super().__init__(directory, ca, hosts={hostname: "127.0.0.1"}, port=port, domains=[])
        self.hostname = hostname

    @property
    def pid(self):
        return self.master_pid

    def _sender_main(self):
        domain = self.hostname.split(".", 1)[1]
        main = self._instance_main()
        main.update({
            "myhostname": self.hostname,
            "mydomain": domain,
            "myorigin": self.hostname,
            "smtpd_tls_security_level": "none",
            # stsrelay does no reverse lookup of its clients either
            "smtpd_peername_lookup": "no",
            "notify_classes": "",
            "delay_warning_time": "0",
            "default_transport": "smtp",
            "relay_transport": "smtp",
            "smtp_host_lookup": "dns",
            "smtp_address_preference": "ipv4",
            "smtp_tls_loglevel": "1",
        })
        return main

    def _master_cf(self):
        return _MASTER_BASE + "127.0.0.1:%d inet n - n - - smtpd\n" % self.port
