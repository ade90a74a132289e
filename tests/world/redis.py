# Debian's redis-server as a fleet's shared store in the test world: its own
# config, directory and free loopback port; kill -9 and restart like an outage.
import os
import signal
import subprocess

from .util import free_port, make_dir, spawn, stop_process, wait_port, wait_until

REDIS_SERVER = "/usr/bin/redis-server"
REDIS_CLI = "/usr/bin/redis-cli"


class RedisServer:
    """One redis-server on 127.0.0.1:port with an append-only file fsync'd
    on every write (what an operator runs for a fleet), so a kill -9 loses
    nothing it answered. .url is what redis_url takes."""

    def __init__(self, directory):
        self.dir = make_dir(os.path.abspath(directory))
        self.host = "127.0.0.1"
        self.port = free_port()
        self.url = "redis://%s:%d/0" % (self.host, self.port)
        self.conf = os.path.join(self.dir, "redis.conf")
        self.log_path = os.path.join(self.dir, "redis.log")
        self.proc = None
        with open(self.conf, "w") as f:
            f.write("port %d\nbind %s\ndir %s\nsave \"\"\nappendonly yes\n"
                    "appendfsync always\ndaemonize no\nprotected-mode no\n"
                    "logfile %s\n" % (self.port, self.host, self.dir, self.log_path))

    def start(self, timeout=15):
        if self.running:
            raise RuntimeError("redis-server already running")
        self.proc = spawn([REDIS_SERVER, self.conf], os.path.join(self.dir, "stdout.log"))
        wait_port(self.host, self.port, timeout, proc=self.proc, what="redis-server")
        # the append-only file is loaded before PING answers PONG
        wait_until(lambda: self.cli("PING").strip() == "PONG", timeout,
                   what="redis-server to answer PING")
        return self

    def kill9(self):
        """An outage: SIGKILL, no shutdown save."""
        stop_process(self.proc, timeout=5, sig=signal.SIGKILL)
        self.proc = None

    def stop(self):
        stop_process(self.proc, timeout=10)
        self.proc = None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def cli(self, *args, timeout=10):
        """redis-cli ARGS against this server; its stdout (raw, one value
        a line)."""
        p = subprocess.run([REDIS_CLI, "-h", self.host, "-p", str(self.port), "--raw"] +
                           [str(a) for a in args], capture_output=True, timeout=timeout)
        return p.stdout.decode(errors="replace")

    def keys(self, pattern):
        return sorted(k for k in self.cli("--scan", "--pattern", pattern).splitlines() if k)
