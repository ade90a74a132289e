# Runs the stsrelay daemon under test: config file written from a dict,
# `serve -c FILE` with output to a log, readiness by its listen port, stop.
import os
import re
import signal
import smtplib
import subprocess
import time

from .util import (WorldError, free_port, make_dir, read_text, spawn,
                   stop_process, wait_port, wait_until)


def relay_bin():
    """Path of the stsrelay binary from $STSRELAY_BIN (None if unset)."""
    return os.environ.get("STSRELAY_BIN") or None


def format_config(cfg):
    lines = ["# written by tests/world/relay.py"]
    for k, v in cfg.items():
        if v is None:
            continue
        if isinstance(v, (list, tuple)):
            v = ", ".join(str(x) for x in v)
        elif isinstance(v, bool):
            v = "yes" if v else "no"
        lines.append("%s = %s" % (k, v))
    return "\n".join(lines) + "\n"


class Relay:
    """stsrelay with its config at `conf`, spool under `directory`/spool,
    log (stdout+stderr) in `log_path`. `config` keys override the
    defaults (listen on a free 127.0.0.1 port, spool_dir, hostname).
    `env` adds environment variables (e.g. STSRELAY_FAKE_NOW)."""

    def __init__(self, directory, config=None, binary=None, env=None):
        self.dir = make_dir(os.path.abspath(directory))
        self.binary = binary or relay_bin()
        if not self.binary:
            raise WorldError("STSRELAY_BIN is not set")
        if not os.access(self.binary, os.X_OK):
            raise WorldError("STSRELAY_BIN %s is not an executable" % self.binary)
        self.port = free_port()
        self.config = {
            "listen": "127.0.0.1:%d" % self.port,
            "spool_dir": os.path.join(self.dir, "spool"),
            "hostname": "relay.world.test",
        }
        self.config.update(config or {})
        m = re.match(r"^\s*(?:\[([0-9a-fA-F:]+)\]|([0-9.]+)):(\d+)", str(self.config["listen"]))
        if not m:
            raise WorldError("cannot parse listen %r" % self.config["listen"])
        self.host = m.group(1) or m.group(2)
        self.port = int(m.group(3))
        self.conf = os.path.join(self.dir, "stsrelay.conf")
        self.log_path = os.path.join(self.dir, "stsrelay.log")
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.env["STSRELAY_CONF"] = self.conf
        self.proc = None
        self.write_config()

    def write_config(self):
        make_dir(self.config["spool_dir"], 0o755)
        with open(self.conf, "w") as f:
            f.write(format_config(self.config))

    def start(self, timeout=15):
        if self.proc is not None and self.proc.poll() is None:
            raise WorldError("relay already running")
        self.write_config()
        self.proc = spawn([self.binary, "serve", "-c", self.conf], self.log_path,
                          env=self.env)
        try:
            wait_port(self.host, self.port, timeout, proc=self.proc, what="stsrelay")
        except WorldError as e:
            self.stop()
            raise WorldError("%s\nrelay log:\n%s" % (e, self.log(4000)))
        return self

    def stop(self, timeout=10):
        """SIGTERM, wait up to `timeout`, then SIGKILL; the exit code."""
        if self.proc is None:
            return None
        rc = stop_process(self.proc, timeout=timeout)
        self.proc = None
        return rc

    def reload(self):
        self.write_config()
        self.proc.send_signal(signal.SIGHUP)

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    # --- talking to it -------------------------------------------------
    def cli(self, *args, input=None, timeout=60, env=None):
        """Run `stsrelay ARGS...` with STSRELAY_CONF pointing at our config
        (pass "-c", relay.conf yourself where the test is about -c)."""
        e = dict(self.env)
        e.update(env or {})
        return subprocess.run([self.binary] + [str(a) for a in args], input=input,
                              capture_output=True, timeout=timeout, env=e)

    def send(self, sender, rcpts, message, timeout=30):
        """Submit over SMTP; returns smtplib's refused-recipients dict."""
        if isinstance(message, str):
            message = message.encode()
        with smtplib.SMTP(self.host, self.port, local_hostname="client.world.test",
                          timeout=timeout) as s:
            return s.sendmail(sender, rcpts, message)

    def log(self, limit=10 ** 7):
        return read_text(self.log_path, limit)

    def wait_log(self, pattern, timeout=20, count=1):
        """Wait until regex `pattern` matches `count` log lines; returns
        the matching lines."""
        rx = re.compile(pattern)

        def found():
            hits = [l for l in self.log().splitlines() if rx.search(l)]
            return hits if len(hits) >= count else None
        try:
            return wait_until(found, timeout, what="relay log /%s/" % pattern)
        except WorldError as e:
            raise WorldError("%s\nrelay log tail:\n%s" % (e, self.log(4000)))


def sample_message(sender="sender@client.world.test", to="rcpt@example.test",
                   subject="world test", body="Hello from the test world.\r\n"):
    return ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nDate: %s\r\n"
            "Message-ID: <%d.%d@client.world.test>\r\n\r\n%s" % (
                sender, to, subject,
                time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
                time.time_ns(), os.getpid(), body)).encode()
