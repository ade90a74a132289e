# The two systems under test and their helpers for tests/bench/run: an
# stsrelay daemon, a private Postfix sender, postfix-mta-sts-resolver, memory probes.
import os
import subprocess
import threading
import time

from world.postfix import SendingPostfix
from world.util import (WorldError, free_port, make_dir, read_text, spawn, track_pid,
                        stop_process, wait_port, wait_until)


# ---- memory of a process tree --------------------------------------------

def _children_map():
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(name))
    return kids


def tree_pids(root):
    """root and all its descendants (alive now)."""
    if root is None:
        return []
    kids = _children_map()
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, ()))
    return out


def _status_kb(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _pss_kb(pid):
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def tree_memory(root):
    """(sum of VmRSS kB, sum of Pss kB, number of processes) of the tree.
    RSS counts shared library pages once per process; PSS splits them, which
    is the fair sum for a multi-process server such as Postfix."""
    pids = tree_pids(root)
    return (sum(_status_kb(p, "VmRSS") for p in pids),
            sum(_pss_kb(p) for p in pids), len(pids))


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cpu_ticks(pid, children):
    """utime+stime of pid (all its threads), plus cutime+cstime (children
    it has reaped) when `children`."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    # after the ")": state is field 0, utime 11, stime 12, cutime 13, cstime 14
    t = int(fields[11]) + int(fields[12])
    if children:
        t += int(fields[13]) + int(fields[14])
    return t


def tree_cpu_seconds(root):
    """CPU seconds used so far by root's process tree: every live process,
    plus what the processes of the tree have reaped from children that
    exited (Postfix's master reaps its smtpd/cleanup/smtp processes, so
    their CPU time stays counted after they exit). Take the difference of
    two readings; a process that exits between them and is reaped by a
    process outside the tree would be lost (none here: the tree's root
    reaps its own children)."""
    return sum(_cpu_ticks(p, True) for p in tree_pids(root)) / CLK_TCK


class PeakSampler:
    """Samples tree_memory(root_fn()) every `interval` s in a thread and keeps
    the maxima. Bounded: stops itself after max_seconds."""

    def __init__(self, root_fn, interval=0.2, max_seconds=1800):
        self.root_fn = root_fn
        self.interval = interval
        self.max_seconds = max_seconds
        self.peak_rss = self.peak_pss = self.peak_procs = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        end = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < end:
            rss, pss, n = tree_memory(self.root_fn())
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_procs = max(self.peak_procs, n)
            self._stop.wait(self.interval)

    def start(self):
        self._t.start()
        return self

    def stop(self):
        self._stop.set()
        self._t.join(5)


# ---- stsrelay -------------------------------------------------------------

class StsRelay:
    """`stsrelay serve` with its own spool and config under `directory`."""

    def __init__(self, binary, directory, **conf):
        self.bin = binary
        self.dir = make_dir(directory)
        self.port = free_port()
        self.spool = os.path.join(self.dir, "spool")
        self.conf_path = os.path.join(self.dir, "stsrelay.conf")
        self.log_path = os.path.join(self.dir, "daemon.log")
        self.conf = {"listen": "127.0.0.1:%d" % self.port, "spool_dir": self.spool,
                     "hostname": "relay.bench.test", "max_sessions": "1100"}
        self.conf.update(conf)
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, timeout=20):
        with open(self.conf_path, "w") as f:
            for k, v in self.conf.items():
                f.write("%s = %s\n" % (k, v))
        self.proc = spawn([self.bin, "serve", "-c", self.conf_path], self.log_path)
        mark = "stsrelay/master[%d]: started:" % self.proc.pid

        def ready():
            if self.proc.poll() is not None:
                raise WorldError("stsrelay exited (%s):\n%s" % (
                    self.proc.returncode, read_text(self.log_path, 4000)))
            return mark in read_text(self.log_path, 10 ** 6)
        wait_until(ready, timeout, what="stsrelay to start")
        return self

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc, timeout=30)
            self.proc = None

    def log(self):
        return read_text(self.log_path, 10 ** 8)

    def queued(self):
        d = os.path.join(self.spool, "queue")
        try:
            return sum(1 for n in os.listdir(d) if len(n) == 12 and n.isalnum())
        except OSError:
            return 0

    def settled(self):
        """No first delivery attempt outstanding: every queued message has
        its state file (written after an attempt). Only meaningful while
        deliveries defer (the accept runs)."""
        d = os.path.join(self.spool, "queue")
        try:
            names = os.listdir(d)
        except OSError:
            return True
        msgs = sum(1 for n in names if len(n) == 12 and n.isalnum())
        states = sum(1 for n in names if n.endswith(".state"))
        return states >= msgs

    def has_delivery(self):
        return "no delivery transport" not in self.log()


# ---- Postfix as the sender under test --------------------------------------

class PostfixSender(SendingPostfix):
    """A private Postfix instance whose smtpd listens on 127.0.0.1:port.
    mode "hold": every message goes to the hold queue after the usual
    durable write (cleanup fsyncs before smtpd answers 250), nothing is
    delivered; "defer": normal queueing, delivery attempted (the benchmark's
    recipient domain fails in DNS, so it defers); "relay": delivers over SMTP
    with MX lookups, TLS policy from postfix-mta-sts-resolver."""

    def __init__(self, directory, ca, port, mode, policy_port=None, extra=None):
        super().__init__(directory, ca, "pf-sender.bench.test", port)
        self.mode = mode
        self.policy_port = policy_port
        self.extra = dict(extra or {})

    def _main_cf(self):
        main = self._sender_main()
        main.update({
            "smtpd_client_connection_count_limit": "0",
            "smtpd_client_connection_rate_limit": "0",
            "default_process_limit": "1200",
            "message_size_limit": "104857600",
            "smtp_tls_security_level": "may",
            "smtp_tls_CAfile": self.ca.ca_file,
            # Debian's packaged main.cf enables the client TLS session cache
            "smtp_tls_session_cache_database": "btree:${data_directory}/smtp_scache",
            # same per-destination parallelism as stsrelay's default
            # max_connections_per_domain = 10
            "smtp_destination_concurrency_limit": "10",
        })
        if self.mode in ("hold", "defer"):
            # flow control waits for the queue manager, which has nothing to
            # do in an accept-only run: it would only slow Postfix down
            main["in_flow_delay"] = "0"
        if self.mode == "hold":
            main["smtpd_data_restrictions"] = "check_client_access static:HOLD"
        if self.mode == "relay":
            main["smtp_tls_policy_maps"] = \
                "socketmap:inet:127.0.0.1:%d:postfix" % self.policy_port
        main.update(self.extra)
        return "".join("%s = %s\n" % kv for kv in main.items())

    def restart(self, timeout=600):
        """`postfix start` on the existing instance (what an operator runs;
        start() would also rebuild the configuration and run `postfix
        check` over the whole queue). Returns once the master runs and its
        smtpd accepts connections."""
        self._postfix("start", timeout=timeout)
        pidfile = os.path.join(self.queue_dir, "pid", "master.pid")

        def ready():
            if self.master_pid is None:
                try:
                    self.master_pid = int(open(pidfile).read().strip())
                    track_pid(self.master_pid)
                except (OSError, ValueError):
                    return False
            return True
        wait_until(ready, timeout, what="postfix master")
        return self

    def queued(self):
        """Messages in any queue directory (incoming, active, deferred, hold)."""
        n = 0
        for q in ("incoming", "active", "deferred", "hold"):
            for _, _, files in os.walk(os.path.join(self.queue_dir, q)):
                n += len(files)
        return n

    def sent_count(self):
        return self.log().count("status=sent")

    def settled(self):
        """Nothing in incoming/ or active/: every message accepted so far
        has been tried once and deferred (or put on hold)."""
        for q in ("incoming", "active"):
            for _, _, files in os.walk(os.path.join(self.queue_dir, q)):
                if files:
                    return False
        return True


# ---- postfix-mta-sts-resolver -----------------------------------------------

class MtaStsResolver:
    """mta-sts-daemon on 127.0.0.1:port with the in-memory cache (its fastest
    backend); trusts the test CA through SSL_CERT_FILE (Python's ssl default
    paths); DNS from /etc/resolv.conf (the bench's network namespace points
    it at the world's Unbound); policy host on port 443 (fixed in the code)."""

    def __init__(self, directory, ca_file):
        self.dir = make_dir(directory)
        self.port = free_port()
        self.ca_file = ca_file
        self.conf = os.path.join(self.dir, "mta-sts-daemon.yml")
        self.log_path = os.path.join(self.dir, "daemon.log")
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self, timeout=20):
        with open(self.conf, "w") as f:
            f.write("host: 127.0.0.1\nport: %d\nreuse_port: true\nshutdown_timeout: 5\n"
                    "cache:\n  type: internal\n  options:\n    cache_size: 10000\n"
                    "default_zone:\n  strict_testing: false\n  timeout: 4\n" % self.port)
        env = dict(os.environ)
        env["SSL_CERT_FILE"] = self.ca_file
        self.proc = spawn(["mta-sts-daemon", "-c", self.conf, "-v", "warn"],
                          self.log_path, env=env)
        wait_port("127.0.0.1", self.port, timeout, proc=self.proc, what="mta-sts-daemon")
        return self

    def query(self, domain, timeout=15):
        """One socketmap lookup with `mta-sts-query`-like netstrings."""
        import socket
        q = ("postfix %s" % domain).encode()
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(b"%d:%s," % (len(q), q))
            buf = b""
            while not buf.endswith(b","):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
        return buf.split(b":", 1)[-1][:-1].decode(errors="replace")

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


def run_quiet(cmd, timeout):
    return subprocess.run(cmd, capture_output=True, timeout=timeout)
