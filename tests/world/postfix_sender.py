# Postfix 3.7 as a SENDING MTA with DANE (smtp_tls_security_level = dane),
# resolving through the world's validating Unbound: the peer stsrelay's DANE
# outcomes are compared with. It runs in a mount namespace of its own whose
# /etc/resolv.conf names the resolver (glibc takes no port and no other path).
import os
import re
import smtplib

from .postfix import SendingPostfix
from .util import WorldError, free_port, read_text, run_tty, wait_until


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

    def _postfix(self, *args, check=True, timeout=60):
        if args[:1] != ("start",):
            return super()._postfix(*args, check=check, timeout=timeout)
        # The master and every smtp(8) it forks stay in this namespace,
        # where /etc/resolv.conf is ours; the machine's is untouched.
        cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               'mount --bind "$0" /etc/resolv.conf && exec postfix -c "$1" start',
               self.resolv, self.conf_dir]
        rc, out = run_tty(cmd, timeout=timeout)
        if check and (rc != 0 or "fatal:" in out):
            raise WorldError("postfix start (own mount namespace) failed (rc=%s):\n%s\n"
                             "maillog:\n%s" % (rc, out, read_text(self.maillog, 4000)))
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
