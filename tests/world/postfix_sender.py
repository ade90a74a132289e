# Postfix 3.7 as a SENDING MTA with DANE (smtp_tls_security_level = dane),
# resolving through the world's validating Unbound: the peer stsrelay's DANE
# outcomes are compared with. Its smtp(8) runs chrooted in the queue
# directory, whose etc/resolv.conf names the resolver (glibc takes no port and
# no other path), so the machine's /etc/resolv.conf is never touched.
import os
import re
import shutil
import smtplib

from .postfix import SendingPostfix
from .util import free_port, wait_until


class PostfixSender(SendingPostfix):
    """A private Postfix whose smtpd on 127.0.0.1:`port` relays everything it
    is given to the recipient domain's MX hosts on `smtp_port`, with DANE
    (RFC 7672) as Postfix does it: smtp_dns_support_level = dnssec,
    smtp_tls_security_level = dane. `dns` is the world's UnboundDNS (it must
    have a signed zone, hence its port-53 address)."""

    def __init__(self, directory, ca, dns, smtp_port, extra=None):
        super().__init__(directory, ca, "pf-sender.world.test", free_port())
        self.dns = dns
        self.smtp_port = smtp_port
        self.extra = dict(extra or {})
        self.resolv = dns.resolv_conf(os.path.join(self.dir, "resolv.conf"))

    def _main_cf(self):
        main = self._sender_main()
        main.update({
            "smtp_tcp_port": str(self.smtp_port),
            # DANE as documented in Postfix's TLS_README
            "smtp_dns_support_level": "dnssec",
            "smtp_tls_security_level": "dane",
            # no probe of the root zone (the world forwards "." nowhere)
            "dnssec_probe": "",
            "queue_run_delay": "300s",
            "minimal_backoff_time": "300s",
        })
        main.update(self.extra)
        return "".join("%s = %s\n" % kv for kv in main.items())

    def _master_cf(self):
        # chroot (the fifth column) on for the delivery agents: glibc's
        # resolver reads /etc/resolv.conf after the chroot, so it reads ours.
        # A mount namespace would do the same but cannot be set up where /
        # is no mount point (a chroot such as ../shared/fresh-machine's).
        out = []
        for line in super()._master_cf().splitlines(True):
            f = line.split()
            if len(f) >= 8 and f[0] in ("smtp", "relay") and f[7] == "smtp":
                f[4] = "y"
                line = " ".join(f) + "\n"
            out.append(line)
        return "".join(out)

    def start(self, timeout=20):
        # after the start (which wants an empty queue directory to copy its
        # template into) and before any smtp(8) runs: one only starts for mail
        out = super().start(timeout=timeout)
        etc = os.path.join(self.queue_dir, "etc")
        os.makedirs(etc, exist_ok=True)
        shutil.copyfile(self.resolv, os.path.join(etc, "resolv.conf"))
        return out

    def send(self, sender, rcpt, message):
        with smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.world.test",
                          timeout=30) as s:
            return s.sendmail(sender, [rcpt], message)

    def wait_outcome(self, rcpt, timeout=60):
        """("delivered"|"deferred"|"bounced", the log line) of rcpt's first attempt."""
        rx = re.compile(r"to=<%s>, .*status=(sent|deferred|bounced)" % re.escape(rcpt))

        def found():
            for line in self.log().splitlines():
                m = rx.search(line)
                if m:
                    return m.group(1), line
            return None
        st, line = wait_until(found, timeout, what="postfix sender's verdict for %s" % rcpt)
        return {"sent": "delivered"}.get(st, st), line
