# A private rsyslogd as the world's syslog: a unix datagram socket in place of
# /dev/log, facility mail written to mail.log as Debian's rsyslog.conf does.
import os

from .util import make_dir, read_text, spawn, stop_process, wait_until

# Debian's /etc/rsyslog.conf keeps the traditional file format ("Nov 23
# 16:05:26 host tag: msg") and sends mail.* to /var/log/mail.log; the same
# here, with the socket and the file under the world's directory. Rate
# limiting is off: a test burst must arrive whole.
CONF = """\
global(workDirectory="{dir}/work")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{socket}" CreatePath="on" RateLimit.Interval="0")
mail.* action(type="omfile" file="{log}" template="RSYSLOG_TraditionalFileFormat")
"""


class RSyslog:
    """rsyslogd -n with its own config: `socket` is what the relay's
    STSRELAY_SYSLOG_SOCKET names, `mail_log` what an operator's
    /var/log/mail.log would hold."""

    def __init__(self, directory):
        self.dir = make_dir(os.path.abspath(directory))
        make_dir(os.path.join(self.dir, "work"))
        self.socket = os.path.join(self.dir, "log")
        self.mail_log = os.path.join(self.dir, "mail.log")
        self.conf = os.path.join(self.dir, "rsyslog.conf")
        self.pidfile = os.path.join(self.dir, "rsyslogd.pid")
        self.proc = None
        with open(self.conf, "w") as f:
            f.write(CONF.format(dir=self.dir, socket=self.socket, log=self.mail_log))

    def start(self, timeout=15):
        self.proc = spawn(["rsyslogd", "-n", "-f", self.conf, "-i", self.pidfile],
                          os.path.join(self.dir, "rsyslogd.out"))
        wait_until(lambda: os.path.exists(self.socket) or self.proc.poll() is not None,
                   timeout, what="rsyslogd socket %s" % self.socket)
        if self.proc.poll() is not None:
            raise RuntimeError("rsyslogd exited: %s" % read_text(
                os.path.join(self.dir, "rsyslogd.out")))
        return self

    def stop(self):
        """SIGTERM: rsyslogd writes out what it holds, then exits."""
        rc = stop_process(self.proc, timeout=10)
        self.proc = None
        return rc

    def text(self):
        return read_text(self.mail_log, 10 ** 8)
