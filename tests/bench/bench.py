#!/usr/bin/python3
# The benchmark of tests/bench/run (runs inside its private network namespace):
# stsrelay vs Postfix on loopback, one table with ratios, written to a file.
import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "tests"))
sys.path.insert(0, HERE)

from world.ca import TestCA  # noqa: E402
from world.dns import UnboundDNS  # noqa: E402
from world.https import Policy, PolicyHost, policy_text  # noqa: E402
from world.postfix import PostfixMX  # noqa: E402
from world.redis import RedisServer  # noqa: E402
from world.util import free_port, read_text  # noqa: E402

import threading  # noqa: E402
import urllib.request  # noqa: E402

import load  # noqa: E402
from peers import (MtaStsResolver, PeakSampler, PostfixSender, StsRelay,  # noqa: E402
                   tree_cpu_seconds, tree_memory)

DOMAIN = "bench.test"
MX_HOST = "mx1.bench.test"
MX_IP = "127.0.1.1"
STS_ID = "bench1"
DEFER_ZONE = "accept-defer.net"      # SERVFAIL in the world's DNS: delivery defers
ACCEPT_RCPT = "user@" + DEFER_ZONE
# the large-queue rows: an MX whose port 25 refuses connections (an immediate
# deferral, with no DNS failure whose handling by Unbound could slow down
# over the run)
REFUSE_DOMAIN = "refuse." + DOMAIN
QUEUE_RCPT = "user@" + REFUSE_DOMAIN
RELAY_RCPT = "user@" + DOMAIN
HASH_RCPT = "hash@" + DOMAIN         # the MX stores these in a maildir (SHA-256 check)

# (message size, sessions, messages) of the accept matrix at scale 1
ACCEPT_RUNS = [(1024, 1, 400), (1024, 10, 1500), (1024, 100, 3000),
               (102400, 1, 200), (102400, 10, 600), (102400, 100, 1000)]
# ... and of the accept-only rows (no delivery work during the runs): group
# commit against the disk at 1 KB, the decoder and a lone commit at 100 KB
ACCEPT_ONLY_RUNS = [(1024, 10, 1500), (1024, 100, 3000), (102400, 1, 200)]


def accept_runs(spec):
    """The rows of ACCEPT_RUNS that --accept-runs names ("102400x1,1024x10"),
    or all of them."""
    if not spec:
        return ACCEPT_RUNS
    want = set()
    for item in spec.split(","):
        size, sessions = item.split("x")
        want.add((int(size), int(sessions)))
    runs = [r for r in ACCEPT_RUNS if (r[0], r[1]) in want]
    if len(runs) != len(want):
        raise SystemExit("--accept-runs: not in the accept matrix: %s" % spec)
    return runs


def log(msg):
    sys.stderr.write("[bench %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


class QuietDNS(UnboundDNS):
    """The world's Unbound, on port 53 (Postfix and postfix-mta-sts-resolver
    only know /etc/resolv.conf), without per-query logging."""

    def _config(self):
        return super()._config().replace("log-queries: yes", "log-queries: no")


def median_or_failure(values):
    """Median of the numbers; the first failure text if any run failed."""
    for v in values:
        if isinstance(v, str):
            return v
    v = sorted(values)
    mid = len(v) // 2
    return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2


def fmt_rate(v):
    return v if isinstance(v, str) else "%.0f" % v


class Row:
    def __init__(self, metric, sts, pf, better="higher", fmt="%.1f", note="", ratio=None):
        self.metric, self.sts, self.pf = metric, sts, pf
        self.better, self.fmt, self.note = better, fmt, note
        self.ratio_text = ratio  # shown instead of sts/pf (e.g. "-" for a shared limit)

    def cell(self, v):
        if v is None:
            return "n/a"
        if isinstance(v, str):
            return v
        return self.fmt % v

    def ratio(self):
        if self.ratio_text is not None:
            return self.ratio_text
        if isinstance(self.sts, (int, float)) and isinstance(self.pf, (int, float)) and self.pf:
            return "%.2f" % (self.sts / self.pf)
        return "n/a"


class Bench:
    def __init__(self, args):
        self.args = args
        self.scale = args.scale
        self.rows = []
        self.notes = []
        self.spread = []  # per-repetition accept rates, table lines
        self.raw = {}
        self.base = tempfile.mkdtemp(prefix="stsbench-", dir=args.workdir)
        os.chmod(self.base, 0o755)  # Postfix daemons must traverse it
        self.stops = []

    def n(self, count, minimum=10):
        return max(minimum, int(count * self.scale))

    def d(self, name):
        return os.path.join(self.base, name)

    # ---- the world ---------------------------------------------------
    def start_world(self):
        log("world: CA, Unbound on :53, nginx on :443, Postfix MX on %s:25" % MX_IP)
        self.ca = TestCA(self.d("ca"))
        self.dns = QuietDNS(self.d("dns"), ipv6=False)
        self.dns.port = 53
        for rec in [(DOMAIN, "MX", "10 %s." % MX_HOST), (MX_HOST, "A", MX_IP),
                    ("_mta-sts." + DOMAIN, "TXT", "v=STSv1; id=%s" % STS_ID),
                    ("mta-sts." + DOMAIN, "A", "127.0.0.1"),
                    (REFUSE_DOMAIN, "MX", "10 mx-refuse.%s." % DOMAIN),
                    ("mx-refuse." + DOMAIN, "A", "127.0.2.1")]:
            self.dns.add(*rec, ttl=3600, live=False)
        self.dns.fail(DEFER_ZONE, "servfail")
        self.dns.start()
        self.stops.append(self.dns.stop)
        self.https = PolicyHost(self.d("https"), self.ca)
        self.https.port = 443
        self.https.policies[DOMAIN] = Policy(policy_text("enforce", [MX_HOST], 86400))
        self.https.start()
        self.stops.append(self.https.stop)
        self.mx = PostfixMX(self.d("mx"), self.ca, {MX_HOST: MX_IP}, 25, [DOMAIN],
                            main_extra={"virtual_transport": "discard:bench sink",
                                        # hash@: stored in a maildir, checked by SHA-256
                                        "transport_maps": "inline:{ %s=virtual: }" % HASH_RCPT,
                                        "default_process_limit": "300",
                                        "smtpd_tls_loglevel": "1"})
        self.mx.start()
        self.stops.append(self.mx.stop)
        self.resolver = MtaStsResolver(self.d("mta-sts-resolver"), self.ca.ca_file)
        self.resolver.start()
        self.stops.append(self.resolver.stop)

    def relay_conf(self):
        return {"dns_servers": "127.0.0.1:53", "ca_file": self.ca.ca_file,
                "smtp_port": "25", "sts_https_port": "443"}

    def stop_all(self):
        for f in reversed(self.stops):
            try:
                f()
            except Exception as e:  # teardown must go on
                log("teardown: %s" % e)
        self.stops = []

    # ---- 0: does this stsrelay build deliver? --------------------------
    def probe_delivery(self):
        r = StsRelay(self.args.bin, self.d("probe-relay"), **self.relay_conf()).start()
        try:
            before = self.mx.log().count("status=sent")
            c = load.TimingClient(r.port)
            c.send(RELAY_RCPT, load.message_body(100))
            c.close()
            end = time.monotonic() + 30
            while time.monotonic() < end:
                if not r.has_delivery():
                    return False, "delivery not built"
                if self.mx.log().count("status=sent") > before:
                    return True, ""
                time.sleep(0.2)
            return False, "warm-up message not delivered in 30 s"
        finally:
            r.stop()

    # ---- 1: accept rate, peak memory, latency ---------------------------
    def _accept_pair(self, tag, mode):
        """A fresh stsrelay and a fresh Postfix for one accept repetition:
        both start from an empty queue every time."""
        conf = self.relay_conf()
        # no retry may fire during the run: only the first attempt counts
        conf["retry_schedule"] = "1h"
        sts = StsRelay(self.args.bin, self.d("accept-relay-%s" % tag), **conf).start()
        pf = PostfixSender(self.d("accept-postfix-%s" % tag), self.ca, port=self._pf_port(),
                           mode=mode, extra={"minimal_backoff_time": "3600s",
                                             "maximal_backoff_time": "7200s"})
        try:
            pf.start()
        except Exception:
            sts.stop()
            raise
        self.live = {"sts": sts, "pf": pf}
        return sts, pf

    def _stop_pair(self):
        for k in ("sts", "pf"):
            if self.live.get(k) is not None:
                self.live[k].stop()
                self.live[k] = None

    # ---- the disk's own limit, measured beside the accept runs -----------
    def disk_limit(self, tag):
        """bench disk_limit on the spool's file system: durable 1 KB commits
        per second one at a time, append+fdatasync per second, and batched
        variants (JSON). None when the helper is missing or failed."""
        b = self.args.disk_limit
        if not b or not os.path.exists(b):
            return None
        try:
            p = subprocess.run([b, self.base, "100000", "1024", "2"], capture_output=True,
                               timeout=60)
            j = json.loads(p.stdout.decode().strip().splitlines()[-1])
        except (subprocess.TimeoutExpired, ValueError, IndexError) as e:
            log("disk limit %s: %s" % (tag, e))
            return None
        j["load"] = round(os.getloadavg()[0], 2)
        self.raw.setdefault("disk limit", []).append(dict(j, when=tag))
        log("disk limit %s: %s" % (tag, j))
        return j

    def disk_rows(self, limits, accept, accept_only=None):
        """The disk-limit row and the accept rates at 10 and 100 sessions as
        multiples of it (both systems against the same disk)."""
        limits = [j for j in limits if j]
        if not limits:
            self.rows.append(Row("disk limit: durable 1 KB commits/s one at a time (write + "
                                 "fsync + rename + directory fsync)", "n/a: disk_limit not built",
                                 "n/a: disk_limit not built"))
            return
        one = median_or_failure([j["commit_per_s"] for j in limits])
        app = median_or_failure([j["append_fdatasync_per_s"] for j in limits])
        self.rows.append(Row("disk limit: durable 1 KB commits/s one at a time (write + fsync + "
                             "rename + directory fsync), spool file system", one, one, ratio="-"))
        self.rows.append(Row("disk limit: 1 KB append + fdatasync/s (reference)", app, app,
                             ratio="-"))
        for what, rates in (("accept", accept), ("accept only", accept_only or {})):
            for sessions in (10, 100):
                res = rates.get((1024, sessions))
                if not res:
                    continue
                a, b = res.get("sts"), res.get("pf")
                self.rows.append(Row("%s, 1 KB, %d sessions, as a multiple of the one-at-a-time "
                                     "disk limit (x)" % (what, sessions),
                                     a / one if isinstance(a, (int, float)) else a,
                                     b / one if isinstance(b, (int, float)) else b, fmt="%.2f"))
        med = lambda k: median_or_failure([j[k] for j in limits])  # noqa: E731
        best = med("batch64_wb_per_s")
        res = (accept_only or {}).get((1024, 100)) or accept.get((1024, 100))
        if res and isinstance(best, (int, float)) and best > 0:
            a, b = res.get("sts"), res.get("pf")
            self.rows.append(Row("%s, 1 KB, 100 sessions, as a multiple of the batched disk "
                                 "limit (64 files per batch, writeback started first) (x)"
                                 % ("accept only" if accept_only else "accept"),
                                 a / best if isinstance(a, (int, float)) else a,
                                 b / best if isinstance(b, (int, float)) else b, fmt="%.2f"))
        self.notes.append("disk limit, batched (what one worker doing N fsyncs then one "
                          "directory fsync reaches): 16 per batch %.0f/s (%.0f/s with "
                          "writeback of the whole batch started first), 64 per batch %.0f/s "
                          "(%.0f/s)" % (med("batch16_per_s"), med("batch16_wb_per_s"),
                                        med("batch64_per_s"), med("batch64_wb_per_s")))
        if self.spool_fs() == "ext4 without a journal":
            self.notes.append(
                "disk limit and file creation on ext4 without a journal: a new inode skips "
                "every free inode deleted in the last 5 s (305 s while its inode-table block "
                "is dirty), testing each in turn (recently_deleted() in fs/ext4/ialloc.c), so "
                "creating a file costs kernel time that grows with what anything on the "
                "machine deleted lately (disk_limit deletes its files after each mode; the "
                "one-at-a-time readings here: %s/s). perf showed up to 2/3 of stsrelay's "
                "loop thread in that scan before queue files were made in the thread pool; "
                "both systems pay it per message" % ", ".join(
                    "%.0f" % j["commit_per_s"] for j in limits))
        self.notes.append("disk limit: measured by tests/bench/disk_limit.c on the spool's file "
                          "system before and after the accept runs (median of %d; every "
                          "reading with its batched variants under Raw measurements); "
                          "stsrelay commits each message as `write + fsync + rename + fsync "
                          "of queue/` (one directory fsync per group commit), Postfix as "
                          "`write + fsync` (no directory fsync)" % len(limits))

    def accept_only(self, runs=ACCEPT_ONLY_RUNS):
        """Accept (`runs`: 1 KB at 10 and 100 sessions, 100 KB at one) with no
        delivery work during the runs: stsrelay whose DNS server never
        answers (its delivery attempts wait in DNS; none completes or defers
        during a run), Postfix with every message on hold. Shows what group
        commit does against the disk alone, and what a lone session costs
        without the deferrals. Returns {(size, sessions): {name: median}}."""
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        conf = self.relay_conf()
        conf["dns_servers"] = "127.0.0.1:%d" % sink.getsockname()[1]
        conf["retry_schedule"] = "1h"
        sts = StsRelay(self.args.bin, self.d("accept-only-relay"), **conf).start()
        pf = PostfixSender(self.d("accept-only-postfix"), self.ca, port=self._pf_port(),
                           mode="hold")
        rates = {}
        try:
            pf.start()
            for rep in range(self.args.reps):
                order = (("sts", sts), ("pf", pf)) if rep % 2 == 0 else (("pf", pf), ("sts", sts))
                for size, sessions, count in runs:
                    count = self.n(count, minimum=sessions)
                    for name, sysm in order:
                        q0 = sysm.queued()
                        secs, rc, err = load.smtp_source(sysm.port, sessions, count, size,
                                                         ACCEPT_RCPT, timeout=120)
                        time.sleep(0.3)  # Postfix's cleanup renames into hold/
                        got = sysm.queued() - q0
                        r = count / secs if rc == 0 and got == count else \
                            "failed (rc=%s, %d/%d queued)" % (rc, got, count)
                        rates.setdefault((size, sessions), {}).setdefault(name, []).append(r)
                        self.raw.setdefault("accept only %s %dB s=%d" % (name, size, sessions),
                                            []).append(dict(seconds=round(secs, 3), rc=rc,
                                                            messages=count, queue_delta=got,
                                                            load=round(os.getloadavg()[0], 2)))
                        log("accept only %-3s %6d B x%-3d %5d msgs: %.2fs rc=%s" % (
                            name, size, sessions, count, secs, rc))
        finally:
            # its deliveries hang in DNS by design: no graceful stop needed
            sts.proc.kill()
            sts.proc.wait(10)
            sts.proc = None
            pf.stop()
            sink.close()
        out = {}
        for key, v in sorted(rates.items()):
            out[key] = {k: median_or_failure(x) for k, x in v.items()}
            what = "%s, %d session%s" % ("1 KB" if key[0] < 10000 else "100 KB", key[1],
                                         "" if key[1] == 1 else "s")
            self.rows.append(Row("accept only (no delivery attempt during the run), %s (msg/s)"
                                 % what, out[key]["sts"], out[key]["pf"]))
            self.spread.append("| accept only, %s | %s | %s |" % (
                what, ", ".join(fmt_rate(x) for x in v["sts"]),
                ", ".join(fmt_rate(x) for x in v["pf"])))
        return out

    def _settle(self, systems, timeout=60):
        """Waits (bounded) until no first delivery attempt is outstanding in
        any of `systems`: a system still deferring the last run's messages
        spends CPU and fsyncs on them, which the next run (of either system)
        would otherwise pay for. Returns the seconds waited (None: timeout)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if all(sysm.settled() for sysm in systems):
                return time.monotonic() - t0
            time.sleep(0.05)
        return None

    def accept_phase(self, delivery):
        mode = "defer" if delivery else "hold"
        log("accept: Postfix mode %s" % mode)
        limits = [self.disk_limit("before accept")]
        self.live = {"sts": None, "pf": None}
        pid_of = lambda k: self.live[k].pid if self.live.get(k) else None  # noqa: E731
        ss = PeakSampler(lambda: pid_of("sts")).start()
        ps = PeakSampler(lambda: pid_of("pf")).start()
        rates = {}  # (size, sessions) -> {"sts": [...], "pf": [...]}
        runs = accept_runs(self.args.accept_runs)
        narrow = runs != ACCEPT_RUNS  # --accept-runs: those rows alone
        t_start = time.monotonic()
        reps_done = 0
        try:
            for rep in range(self.args.reps):
                if rep > 0 and time.monotonic() - t_start > self.args.accept_budget:
                    self.notes.append("accept runs: only %d of %d repetitions fitted in the "
                                      "%d s budget" % (rep, self.args.reps,
                                                       self.args.accept_budget))
                    break
                sts, pf = self._accept_pair("r%d" % rep, mode)
                # alternate who goes first: drift in the machine's load
                # (other jobs) then hurts both alike
                order = (("sts", sts), ("pf", pf)) if rep % 2 == 0 else (("pf", pf), ("sts", sts))
                for size, sessions, count in runs:
                    count = self.n(count, minimum=sessions)
                    for name, sysm in order:
                        waited = self._settle((sts, pf) if mode == "defer" else (pf,))
                        if waited is None:
                            self.notes.append("accept %s %d B x%d rep %d: the systems were "
                                              "still deferring the previous run after 60 s"
                                              % (name, size, sessions, rep))
                        q0 = sysm.queued()
                        secs, rc, err = load.smtp_source(sysm.port, sessions, count, size,
                                                         ACCEPT_RCPT, timeout=120)
                        if mode == "hold":
                            time.sleep(0.3)  # let Postfix's cleanup rename into hold/
                        got = sysm.queued() - q0
                        # smtp-source stops at the first reply that is not
                        # 2xx/3xx, so rc 0 means every message got its 250;
                        # with nothing delivered the queue must hold them all
                        ok = rc == 0 and (got == count or mode == "defer")
                        r = count / secs if ok else "failed (rc=%s, %d/%d queued)" % (
                            rc, got, count)
                        rates.setdefault((size, sessions), {}).setdefault(name, []).append(r)
                        self.raw.setdefault("accept %s %dB s=%d" % (name, size, sessions),
                                            []).append(dict(seconds=round(secs, 3), rc=rc,
                                                            messages=count, queue_delta=got,
                                                            settle_wait=None if waited is None
                                                            else round(waited, 2),
                                                            load=round(os.getloadavg()[0], 2),
                                                            stderr=err[-300:]))
                        log("accept %-3s %6d B x%-3d %5d msgs: %.2fs rc=%s queue delta=%d" % (
                            name, size, sessions, count, secs, rc, got))
                self._stop_pair()
                reps_done += 1
            limits.append(self.disk_limit("after accept"))
            medians = {}
            for size, sessions, count in runs:
                res = {k: median_or_failure(v) for k, v in rates[(size, sessions)].items()}
                medians[(size, sessions)] = res
                label = "accept, %s, %d session%s" % (
                    "1 KB" if size < 10000 else "100 KB", sessions, "" if sessions == 1 else "s")
                self.rows.append(Row(label + " (msg/s)", res["sts"], res["pf"]))
                self.spread.append("| %s | %s | %s |" % (label, ", ".join(
                    fmt_rate(v) for v in rates[(size, sessions)]["sts"]), ", ".join(
                    fmt_rate(v) for v in rates[(size, sessions)]["pf"])))

            if narrow:
                self.notes.append("accept runs: only %s (--accept-runs), and of the accept-only "
                                  "rows the same; no disk-limit or latency rows"
                                  % self.args.accept_runs)
                picked = [r for r in ACCEPT_ONLY_RUNS if r[:2] in [x[:2] for x in runs]]
                if delivery and picked:
                    self.accept_only(picked)
                return
            only = self.accept_only() if delivery else None
            self.disk_rows(limits, medians, only)
            if delivery:
                self.notes.append("accept only: a third pair of instances, stsrelay with a DNS "
                                  "server that never answers (no delivery attempt completes "
                                  "during the runs; the instance is killed afterwards) and "
                                  "Postfix with every message on hold: the accept rows above "
                                  "also carry each system's first delivery attempt and its "
                                  "deferral (stsrelay: a state file, fsync'd; Postfix: about "
                                  "2.3 fsyncs per message in all, by strace), these do not")

            # latency: the same Python client for both, 1 KB, fresh instances
            sts, pf = self._accept_pair("lat", mode)
            for sessions, per in ((1, self.n(300)), (10, self.n(60))):
                lat = {}
                for name, sysm in (("sts", sts), ("pf", pf)):
                    v, errors = load.latency(sysm.port, sessions, per, 1024, ACCEPT_RCPT)
                    lat[name] = v
                    if errors:
                        self.notes.append("latency %s %d sessions: %d errors, first: %s" % (
                            name, sessions, len(errors), errors[0]))
                    log("latency %s x%d: %d samples" % (name, sessions, len(v)))
                for p in (50, 99):
                    a, b = load.percentile(lat["sts"], p), load.percentile(lat["pf"], p)
                    self.rows.append(Row("accept latency p%d, %d session%s (ms, lower is better)"
                                         % (p, sessions, "" if sessions == 1 else "s"),
                                         a * 1000 if a is not None else None,
                                         b * 1000 if b is not None else None,
                                         better="lower", fmt="%.2f"))
            hwm = 0
            try:
                with open("/proc/%d/status" % sts.pid) as f:
                    hwm = int(re.search(r"VmHWM:\s+(\d+)", f.read()).group(1))
            except (OSError, AttributeError):
                pass
            self._stop_pair()
        finally:
            ss.stop()
            ps.stop()
            self._stop_pair()
        self.rows.append(Row("peak RSS during the accept runs (MB, lower is better)",
                             ss.peak_rss / 1024, ps.peak_rss / 1024, better="lower",
                             note="sum over the process tree, sampled every 0.2 s"))
        self.rows.append(Row("peak PSS during the accept runs (MB, lower is better)",
                             ss.peak_pss / 1024, ps.peak_pss / 1024, better="lower"))
        self.notes.append("memory: sampled every 0.2 s over all accept and latency runs "
                          "(RSS sums count shared pages once per process; compare PSS). "
                          "stsrelay VmHWM of the latency instance: %.1f MB; Postfix peak: %d "
                          "processes" % (hwm / 1024, ps.peak_procs))

    def _pf_port(self):
        return free_port()

    # ---- 2: relay throughput ------------------------------------------
    def _wait_sent(self, before, count, timeout, counter=None):
        """Waits until counter() (default: deliveries in the MX log) has grown
        by count. Returns (delivered, monotonic time or None on timeout)."""
        counter = counter or (lambda: self.mx.log().count("status=sent"))
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            n = counter() - before
            if n >= count:
                return n, time.monotonic()
            time.sleep(0.05)
        return counter() - before, None

    def relay_phase(self, delivery, why):
        count = self.n(1000, minimum=20)
        log("relay: %d messages each, MX %s" % (count, MX_HOST))
        pol = self.resolver.query(DOMAIN)
        self.notes.append("postfix-mta-sts-resolver answer for %s: `%s`" % (DOMAIN, pol))
        work = [("1 KB", 1024, count), ("100 KB", 102400, self.n(400, minimum=20)),
                ("2 MB", 2 * 1024 * 1024, self.n(50, minimum=10))]
        pf = self._relay_postfix(work, pol)
        sts = {k: ("n/a: " + why, None) for k, _, _ in work}
        if delivery:
            sts = self._relay_sts(work)
        for label, size, n in work:
            checked = "" if size < 10000 else ", every delivery SHA-256-checked at the MX"
            self.rows.append(Row("relay, %s, MTA-STS enforce + verified STARTTLS%s (msg/s)"
                                 % (label, checked), sts[label][0], pf[label][0]))
        for label, size, n in work[:2]:
            self.rows.append(Row("CPU seconds per 1,000 relayed messages, %s (lower is better)"
                                 % label, sts[label][1], pf[label][1], better="lower",
                                 fmt="%.2f"))
        self.notes.append("relay rates: 1 KB from the first accept to the last delivery logged "
                          "by the MX (discard transport); 100 KB and 2 MB sent by a Python "
                          "client over 10 sessions to hash@%s, which the MX delivers into a "
                          "maildir (transport_maps): timed from the first accept to the last "
                          "status=sent in the sender's own log, then every stored message is "
                          "hashed (SHA-256 from its first header, the client's X-Bench-Seq, to "
                          "the end; relays only prepend trace headers) and compared with what "
                          "the client sent; bodies include lines of one dot, dot-led lines, "
                          "empty lines and 998-byte lines" % DOMAIN)
        self.notes.append("CPU per 1,000 relayed: utime+stime from /proc of every process of "
                          "the sending system over the timed run (stsrelay: its one process; "
                          "Postfix: the master's process tree, including children it reaped "
                          "during the run, plus postfix-mta-sts-resolver, its MTA-STS policy "
                          "source); the load generator and the MX are not counted")

    def _maildir(self):
        return os.path.join(self.mx.mail_dir, DOMAIN, "new")

    def _clear_maildir(self):
        d = self._maildir()
        for name in os.listdir(d) if os.path.isdir(d) else []:
            os.unlink(os.path.join(d, name))

    def _check_maildir(self, expected, timeout=120):
        """Waits (bounded) for every message of `expected` ({"tag-seq":
        sha256}) in the MX's maildir and compares digests. Returns None when
        all match, else a failure text."""
        d = self._maildir()
        got = {}
        end = time.monotonic() + timeout
        while time.monotonic() < end and len(got) < len(expected):
            for name in os.listdir(d) if os.path.isdir(d) else []:
                if name in got:
                    continue
                with open(os.path.join(d, name), "rb") as f:
                    raw = f.read()
                at = raw.find(b"\nX-Bench-Seq: ")
                if at < 0:
                    got[name] = (None, "no X-Bench-Seq header")
                    continue
                seq = raw[at + 14:raw.index(b"\n", at + 1)].decode(errors="replace")
                got[name] = (seq, hashlib.sha256(raw[at + 1:]).hexdigest())
            time.sleep(0.2)
        by_seq = {}
        for seq, digest in got.values():
            by_seq.setdefault(seq, []).append(digest)
        missing = [k for k in expected if k not in by_seq]
        bad = [k for k in expected if k in by_seq and by_seq[k] != [expected[k]]]
        extra = [k for k in by_seq if k not in expected]
        if not missing and not bad and not extra:
            return None
        return "failed: %d missing, %d differ (or duplicated), %d unexpected (first: %s)" % (
            len(missing), len(bad), len(extra), (missing + bad + extra)[0])

    def _relay_work(self, name, port, counter, cpu, work):
        """Runs each (label, size, count) of work through one sending
        system. Returns {label: (msg/s or failure text, CPU s per 1,000)}."""
        out = {}
        for label, size, count in work:
            before = counter()
            c0 = cpu()
            t0 = time.monotonic()
            expected = None
            if size < 10000:
                secs, rc, err = load.smtp_source(port, 10, count, size, RELAY_RCPT)
                if rc != 0:
                    out[label] = ("failed (smtp-source rc=%s: %s)" % (rc, err.strip()[-200:]),
                                  None)
                    continue
            else:
                self._clear_maildir()
                msgs, expected = [], {}
                for i in range(count):
                    m, digest = load.checked_message(name, i, size, HASH_RCPT)
                    msgs.append(m)
                    expected["%s-%d" % (name, i)] = digest
                t0 = time.monotonic()
                secs, errors = load.send_checked(port, 10, msgs)
                if errors:
                    out[label] = ("failed (%d client errors, first: %s)" % (
                        len(errors), errors[0][:200]), None)
                    continue
            n, t1 = self._wait_sent(before, count, 300, counter)
            c1 = cpu()
            self.raw["relay %s %s" % (name, label)] = dict(
                accept_seconds=round(secs, 3), delivered=n, cpu_seconds=round(c1 - c0, 2),
                total_seconds=round(t1 - t0, 3) if t1 else None,
                load=round(os.getloadavg()[0], 2))
            log("relay %s %s: accepted in %.2fs, %d delivered%s, CPU %.2fs" % (
                name, label, secs, n, " in %.2fs" % (t1 - t0) if t1 else " (timeout)", c1 - c0))
            if t1 is None:
                out[label] = ("failed (%d/%d delivered in 300 s)" % (n, count), None)
                continue
            rate, per_k = count / (t1 - t0), (c1 - c0) * 1000.0 / count
            if expected is not None:
                bad = self._check_maildir(expected)
                self.raw["relay %s %s" % (name, label)]["sha256_check"] = bad or "all match"
                if bad:
                    rate = bad
            out[label] = (rate, per_k)
        return out

    def _relay_postfix(self, work, pol):
        if not pol.startswith("OK secure"):
            return {k: ("failed: mta-sts-resolver said %r" % pol, None) for k, _, _ in work}
        pf = PostfixSender(self.d("relay-postfix"), self.ca, port=self._pf_port(), mode="relay",
                           policy_port=self.resolver.port)
        pf.start()
        try:
            # warm-up: one message, so the TLS session cache is primed
            before = self.mx.log().count("status=sent")
            c = load.TimingClient(pf.port)
            c.send(RELAY_RCPT, load.message_body(100))
            c.close()
            n, t = self._wait_sent(before, 1, 60)
            if t is None:
                msg = "failed: warm-up not delivered: %s" % pf.log()[-500:]
                return {k: (msg, None) for k, _, _ in work}
            res = self._relay_work("pf", pf.port, pf.sent_count,
                                   lambda: tree_cpu_seconds(pf.pid) +
                                   tree_cpu_seconds(self.resolver.pid), work)
            lg = pf.log()
            verified = lg.count("Verified TLS connection established to %s" % MX_HOST)
            untrusted = len(re.findall(r"(Untrusted|Anonymous) TLS connection established to", lg))
            self.notes.append("Postfix relay: %d verified TLS connections to %s, %d "
                              "unverified, %d messages sent" % (
                                  verified, MX_HOST, untrusted, pf.sent_count()))
            if untrusted:
                res = {k: ("failed: %d unverified TLS connections" % untrusted, None)
                       for k, _, _ in work}
            return res
        finally:
            pf.stop()

    def _relay_sts(self, work):
        r = StsRelay(self.args.bin, self.d("relay-relay"), **self.relay_conf()).start()
        try:
            before = self.mx.log().count("status=sent")
            c = load.TimingClient(r.port)
            c.send(RELAY_RCPT, load.message_body(100))
            c.close()
            n, t = self._wait_sent(before, 1, 60)
            if t is None:
                return {k: ("failed: warm-up not delivered", None) for k, _, _ in work}
            res = self._relay_work("sts", r.port, lambda: r.log().count("status=sent"),
                                   lambda: tree_cpu_seconds(r.pid), work)
            # one line per delivered recipient; the order of its fields
            # differs between log formats, so each is looked for alone
            sent_lines = [ln for ln in r.log().splitlines() if "status=sent" in ln]
            sent = len(sent_lines)
            good = sum(1 for ln in sent_lines if re.search(r"\btls=TLSv1\.[23] verified\b", ln)
                       and re.search(r"\bsts=enforce\b", ln))
            self.notes.append("stsrelay relay: %d deliveries logged status=sent, %d of them "
                              "with tls=... verified and sts=enforce" % (sent, good))
            if good < sent:
                res = {k: ("failed: %d of %d deliveries not verified+enforce" % (
                    sent - good, sent), None) for k, _, _ in work}
            return res
        finally:
            r.stop()

    # ---- 3: RSS per idle connection ------------------------------------
    def idle_phase(self):
        n = max(10, int(1000 * min(1.0, self.scale * 5)))
        load.raise_nofile(n * 2 + 200)
        res = {}
        for name in ("sts", "pf"):
            if name == "sts":
                sysm = StsRelay(self.args.bin, self.d("idle-relay"), **self.relay_conf()).start()
            else:
                sysm = PostfixSender(self.d("idle-postfix"), self.ca, port=self._pf_port(),
                                     mode="hold")
                sysm.start()
            crowd = load.IdleCrowd(sysm.port, n)
            try:
                time.sleep(1)
                rss0, pss0, p0 = tree_memory(sysm.pid)
                got = crowd.open()
                time.sleep(2)
                rss1, pss1, p1 = tree_memory(sysm.pid)
                log("idle %s: %d/%d sessions open, RSS %d -> %d kB, PSS %d -> %d kB, "
                    "processes %d -> %d" % (name, got, n, rss0, rss1, pss0, pss1, p0, p1))
                self.raw["idle %s" % name] = dict(open=got, wanted=n, rss0=rss0, rss1=rss1,
                                                 pss0=pss0, pss1=pss1, procs0=p0, procs1=p1,
                                                 refused=crowd.refused, failed=crowd.failed)
                if got < n:
                    res[name] = ("failed: %d of %d sessions opened" % (got, n),) * 2
                else:
                    res[name] = ((rss1 - rss0) / got, (pss1 - pss0) / got)
            finally:
                crowd.close()
                sysm.stop()
        self.rows.append(Row("RSS per idle session, %d sessions (KB, lower is better)" % n,
                             res["sts"][0], res["pf"][0], better="lower"))
        self.rows.append(Row("PSS per idle session, %d sessions (KB, lower is better)" % n,
                             res["sts"][1], res["pf"][1], better="lower"))

    # ---- 4: policy decisions from a warm cache ---------------------------
    def policy_phase(self):
        count = self.n(50000, minimum=1000)
        b = self.args.bench_sts
        out = {}

        def run(cmd, key):
            try:
                p = subprocess.run(cmd, capture_output=True, timeout=180)
            except subprocess.TimeoutExpired:
                out[key] = "failed: timeout"
                return
            try:
                j = json.loads(p.stdout.decode().strip().splitlines()[-1])
            except (ValueError, IndexError):
                j = None
            self.raw["policy " + key] = j or p.stderr.decode(errors="replace")[-500:]
            if p.returncode == 0 and j:
                out[key] = j["per_sec"]
            else:
                out[key] = "failed: %s" % ((j or {}).get("first_bad") or
                                          p.stderr.decode(errors="replace").strip()[-200:])
            log("policy %s: %s" % (key, out[key]))

        if not b or not os.path.exists(b):
            # the socketmap client is bench_sts too: no row has a number
            for conc in (1, 10):
                out["pf c%d" % conc] = "n/a: bench_sts not built"
        self.resolver.query(DOMAIN)  # warm (cache_grace: 60 s without DNS)
        for conc in (1, 10) if "pf c1" not in out else ():
            run([b, "socketmap", "127.0.0.1", str(self.resolver.port), "postfix", DOMAIN,
                 str(count // 5), str(conc)], "pf c%d" % conc)
        if not b or not os.path.exists(b):
            for conc in (1, 10):
                out["sts mem c%d" % conc] = out["sts dns c%d" % conc] = "n/a: bench_sts not built"
        else:
            for conc in (1, 10):
                run([b, "engine", DOMAIN, MX_HOST, str(count), str(conc), self.ca.ca_file,
                     "443"], "sts mem c%d" % conc)
                run([b, "engine", DOMAIN, MX_HOST, str(count // 5), str(conc), self.ca.ca_file,
                     "443", "127.0.0.1:53"], "sts dns c%d" % conc)
        for conc in (1, 10):
            self.rows.append(Row("policy decisions/s from a warm cache, %d in flight "
                                 "(stsrelay: engine, TXT answered in-process)" % conc,
                                 out["sts mem c%d" % conc], out["pf c%d" % conc]))
            self.rows.append(Row("policy decisions/s from a warm cache, %d in flight "
                                 "(stsrelay: engine + TXT query to Unbound)" % conc,
                                 out["sts dns c%d" % conc], out["pf c%d" % conc]))

    # ---- 7: a fleet: policies from Redis, the cost of metrics_listen ------
    def fleet_phase(self):
        """Policy decisions/s of a new fleet node (cold local cache, warm
        Redis: each decision a new domain answered from Redis) next to the
        same domains from its local cache; and the accept rate with
        metrics_listen on (scraped every second) and off."""
        b = self.args.bench_sts
        rs = RedisServer(self.d("redis")).start()
        self.stops.append(rs.stop)
        count = self.n(20000, minimum=1000)
        for conc in (1, 10):
            red = loc = "n/a: bench_sts not built"
            if b and os.path.exists(b):
                try:
                    p = subprocess.run([b, "fleet", DOMAIN, MX_HOST, str(count), str(conc),
                                        self.ca.ca_file, "443", rs.url], capture_output=True,
                                       timeout=300)
                    j = json.loads(p.stdout.decode().strip().splitlines()[-1])
                except (subprocess.TimeoutExpired, ValueError, IndexError) as e:
                    j = {"first_bad": str(e)}
                    p = None
                self.raw["policy fleet c%d" % conc] = j
                if p is not None and p.returncode == 0:
                    red, loc = j["per_sec"], j["local_per_sec"]
                else:
                    red = loc = "failed: %s" % j.get("first_bad", "")
                log("policy fleet c%d: Redis %s, local %s" % (conc, red, loc))
            self.rows.append(Row("policy decisions/s, %d in flight, each a new domain from the "
                                 "fleet's Redis cache (cold local cache, TXT in-process)" % conc,
                                 red, "-", ratio="-"))
            self.rows.append(Row("policy decisions/s, %d in flight, the same domains from the "
                                 "local cache" % conc, loc, "-", ratio="-"))
        self.notes.append("fleet rows: bench_sts fleet; the policy is fetched once from the "
                          "policy host, stored in a private redis-server under %d domain "
                          "names as a node that fetched it would, then a new engine decides "
                          "each name (every decision checked: enforce, MX matched, counted "
                          "as a fleet-cache hit); Postfix has no fleet-shared cache here "
                          "(postfix-mta-sts-resolver can use Redis, not set up)" % count)

        # metrics_listen on vs off: accept only, 1 KB, 10 sessions
        sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sink.bind(("127.0.0.1", 0))
        conf = self.relay_conf()
        conf["dns_servers"] = "127.0.0.1:%d" % sink.getsockname()[1]
        conf["retry_schedule"] = "1h"
        mport = free_port()
        on = StsRelay(self.args.bin, self.d("metrics-on"), metrics_listen="127.0.0.1:%d" % mport,
                      **conf).start()
        off = StsRelay(self.args.bin, self.d("metrics-off"), **conf).start()
        stop = threading.Event()
        scrapes = []

        def scraper():
            while not stop.wait(1.0):
                try:
                    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % mport,
                                                timeout=5) as r:
                        scrapes.append(len(r.read()))
                except OSError as e:
                    scrapes.append(str(e))
        t = threading.Thread(target=scraper, daemon=True)
        t.start()
        rates = {"on": [], "off": []}
        cpu = {"on": [0.0, 0], "off": [0.0, 0]}   # daemon CPU seconds, messages
        try:
            sessions, n = 10, self.n(3000, minimum=100)
            for rep in range(self.args.reps):
                order = (("on", on), ("off", off)) if rep % 2 == 0 else \
                    (("off", off), ("on", on))
                for name, sysm in order:
                    q0 = sysm.queued()
                    c0 = tree_cpu_seconds(sysm.pid)
                    secs, rc, err = load.smtp_source(sysm.port, sessions, n, 1024, ACCEPT_RCPT,
                                                     timeout=120)
                    cpu[name][0] += tree_cpu_seconds(sysm.pid) - c0
                    got = sysm.queued() - q0
                    cpu[name][1] += got
                    rates[name].append(n / secs if rc == 0 and got == n else
                                       "failed (rc=%s, %d/%d queued)" % (rc, got, n))
                    log("metrics %-3s 1024 B x%d %d msgs: %.2fs rc=%s" % (name, sessions, n,
                                                                          secs, rc))
        finally:
            stop.set()
            t.join(10)
            for sysm in (on, off):   # deliveries hang in DNS by design
                sysm.proc.kill()
                sysm.proc.wait(10)
                sysm.proc = None
            sink.close()
        self.raw["accept metrics on/off"] = dict(rates, scrapes=len(scrapes),
                                                 scrape_errors=[x for x in scrapes
                                                                if isinstance(x, str)][:3])
        r_on, r_off = median_or_failure(rates["on"]), median_or_failure(rates["off"])
        self.rows.append(Row("accept only, 1 KB, 10 sessions, metrics_listen on, scraped "
                             "every second (msg/s)", r_on, "-", ratio="-"))
        self.rows.append(Row("accept only, 1 KB, 10 sessions, metrics_listen off (msg/s)",
                             r_off, "-", ratio="-"))
        if isinstance(r_on, (int, float)) and isinstance(r_off, (int, float)):
            self.rows.append(Row("metrics_listen cost on the accept rate (%, lower is better; "
                                 "target < 3)", (r_off - r_on) / r_off * 100, "-", ratio="-",
                                 better="lower"))
        # Each repetition runs on and off back to back (the order alternating),
        # so a pair shares the disk's state of that moment: the median of the
        # pairs' differences is steadier than the difference of the medians
        # when the disk's speed drifts during the run.
        pairs = [(f - o) / f * 100 for o, f in zip(rates["on"], rates["off"])
                 if isinstance(o, float) and isinstance(f, float) and f > 0]
        if pairs:
            self.rows.append(Row("metrics_listen cost on the accept rate, median of the %d "
                                 "back-to-back on/off pairs (%%, lower is better; target < 3)"
                                 % len(pairs), statistics.median(pairs), "-", ratio="-",
                                 better="lower"))
            self.raw["accept metrics on/off"]["pair_cost_pct"] = [round(x, 2) for x in pairs]
        # CPU per message is steadier than a disk-bound rate on a shared machine
        per = {k: (v[0] / v[1] * 1e6 if v[1] else "n/a") for k, v in cpu.items()}
        self.raw["accept metrics on/off"]["cpu_us_per_msg"] = per
        self.rows.append(Row("daemon CPU per accepted 1 KB message, metrics_listen on / off "
                             "(us, lower is better)",
                             "%s / %s" % tuple(fmt_rate(per[k]) for k in ("on", "off")), "-",
                             ratio="-", better="lower"))
        self.spread.append("| accept only, 1 KB, 10 sessions, metrics on | %s | - |" %
                           ", ".join(fmt_rate(x) for x in rates["on"]))
        self.spread.append("| accept only, 1 KB, 10 sessions, metrics off | %s | - |" %
                           ", ".join(fmt_rate(x) for x in rates["off"]))

    # ---- 5: a large deferred queue: memory, restart, due messages --------
    def _greeting_after(self, port, t0, timeout=600):
        """Seconds from t0 until port answers with a 220 greeting (polled
        every 10 ms); None on timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as c:
                    c.settimeout(10)
                    if c.recv(512).startswith(b"220"):
                        return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(0.01)
        return None

    def _due_window(self, t_due, due, cpu, deferred, timeout=180):
        """From just before t_due (time.time()) until `due` more deferrals
        are logged: (CPU seconds, seconds after t_due) or a failure text.
        Next-try times are whole seconds (stsrelay) and file times may be
        rounded (Postfix): the window opens 1.5 s early, idle time costs no
        CPU."""
        while time.time() < t_due - 1.5:
            time.sleep(0.05)
        c0, n0 = cpu(), deferred()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if deferred() - n0 >= due:
                return cpu() - c0, time.time() - t_due
            time.sleep(0.05)
        return "failed: %d of %d due messages attempted in %d s" % (deferred() - n0, due,
                                                                     timeout)

    def queue_phase(self):
        """Q deferred messages (next try in an hour) plus D that come due
        a known time after the restart. Both queues are written directly:
        stsrelay's through its queue library (bench_sched fill), Postfix's
        by copying one real deferred queue file and `postsuper -s` (which
        renames each copy to its inode-based queue id)."""
        q, due = self.n(100000, minimum=5000), self.n(2000, minimum=200)
        b = self.args.bench_sched
        log("queue: %d deferred messages + %d coming due" % (q, due))
        res = {}
        if not b or not os.path.exists(b):
            res["sts"] = {k: "n/a: bench_sched not built" for k in ("rss", "pss", "restart",
                                                                    "due")}
        else:
            res["sts"] = self._queue_sts(b, q, due)
        res["pf"] = self._queue_pf(q, due)
        for name in ("sts", "pf"):
            self.raw["queue %s" % name] = res[name]
        lab = "{:,}".format(q)
        self.rows.append(Row("RSS with %s deferred messages queued, after restart (MB, lower "
                             "is better)" % lab, res["sts"]["rss"], res["pf"]["rss"],
                             better="lower"))
        self.rows.append(Row("PSS with %s deferred messages queued, after restart (MB, lower "
                             "is better)" % lab, res["sts"]["pss"], res["pf"]["pss"],
                             better="lower"))
        self.rows.append(Row("restart with %s deferred messages queued: start to first 220 "
                             "greeting (s, lower is better)" % lab, res["sts"]["restart"],
                             res["pf"]["restart"], better="lower", fmt="%.2f"))
        self.rows.append(Row("cost per due message with %s queued: CPU ms per message that "
                             "comes due and is tried (lower is better)" % lab,
                             res["sts"]["due"], res["pf"]["due"], better="lower", fmt="%.3f"))
        self.notes.append(
            "large queue: %d messages deferred with the next try an hour away plus %d that "
            "come due at a fixed time after the restart, all to %s (its MX refuses connections, so "
            "each due attempt defers again); written directly (stsrelay: bench_sched fill, through its "
            "queue library; Postfix: copies of one real deferred queue file renamed by "
            "`postsuper -s`), so the page cache is warm at the restart; restart: stsrelay "
            "spawn / `postfix start` to the first 220 greeting (stsrelay loads every "
            "message before it listens; Postfix's qmgr scans the deferred queue after "
            "smtpd is up); memory 2 s (stsrelay) / 5 s (Postfix: its qmgr scan) after the "
            "greeting, Postfix summed over its process tree; due cost: CPU of the whole "
            "system from just before the due time until every due message was tried and "
            "deferred again, divided by their number (Postfix with queue_run_delay = 10s: "
            "it finds due messages by scanning its deferred queue, a stat of every "
            "queued file; stsrelay from its heap of due times)" % (q, due, REFUSE_DOMAIN))

    def _queue_sts(self, b, q, due):
        out = {}
        conf = self.relay_conf()
        conf["retry_schedule"] = "1h"
        r = StsRelay(self.args.bin, self.d("queue-relay"), **conf).start()
        time.sleep(1)
        out["rss_empty_mb"] = tree_memory(r.pid)[0] / 1024
        r.stop()
        t0 = time.monotonic()
        p = subprocess.run([b, "fill", r.spool, str(q - due), QUEUE_RCPT, "3600", "16"],
                           capture_output=True, timeout=900)
        if p.returncode != 0:
            msg = "failed: fill: %s" % p.stderr.decode(errors="replace")[-200:]
            return {k: msg for k in ("rss", "pss", "restart", "due")}
        margin = 20 + q * 100e-6
        # each message is due DELAY seconds after it is written: the window
        # opens before the first of them (a slow fill once made part of them
        # come due, and be tried, before the window opened)
        t_due = time.time() + int(margin)
        p = subprocess.run([b, "fill", r.spool, str(due), QUEUE_RCPT, str(int(margin)), "16"],
                           capture_output=True, timeout=300)
        out["fill_seconds"] = round(time.monotonic() - t0, 1)
        if p.returncode != 0:
            msg = "failed: fill: %s" % p.stderr.decode(errors="replace")[-200:]
            return {k: msg for k in ("rss", "pss", "restart", "due")}
        log("queue sts: %d messages written in %.1fs" % (q, out["fill_seconds"]))
        t0 = time.monotonic()
        try:
            r.start(timeout=600)
        except Exception as e:  # noqa: BLE001 - reported in the table
            return {k: "failed: %s" % str(e)[:200] for k in ("rss", "pss", "restart", "due")}
        try:
            out["restart"] = self._greeting_after(r.port, t0) or "failed: no greeting"
            out["ready_before_due_s"] = round(t_due - time.time(), 1)
            time.sleep(2)
            rss, pss, _ = tree_memory(r.pid)
            out["rss"], out["pss"] = rss / 1024, pss / 1024
            out["loaded"] = r.queued()
            got = self._due_window(t_due, due, lambda: tree_cpu_seconds(r.pid),
                                   lambda: r.log().count("status=deferred"))
            if isinstance(got, str):
                out["due"] = got
            else:
                out["due"] = got[0] * 1000.0 / due
                out["due_done_after_s"] = round(got[1], 2)
            log("queue sts: %s" % out)
            return out
        finally:
            r.stop()

    def _queue_pf(self, q, due):
        out = {}
        fail = lambda m: {k: m for k in ("rss", "pss", "restart", "due")}  # noqa: E731
        pf = PostfixSender(self.d("queue-postfix"), self.ca, port=self._pf_port(), mode="defer",
                           extra={"minimal_backoff_time": "3600s",
                                  "maximal_backoff_time": "7200s",
                                  "queue_run_delay": "10s"})
        pf.start()
        try:
            time.sleep(1)
            out["rss_empty_mb"] = tree_memory(pf.pid)[0] / 1024
            c = load.TimingClient(pf.port)
            c.send(QUEUE_RCPT, load.message_body(1024))
            c.close()
            dq = os.path.join(pf.queue_dir, "deferred")
            end = time.monotonic() + 60
            tmpl = []
            while not tmpl and time.monotonic() < end:
                tmpl = [os.path.join(dp, f) for dp, _, fs in os.walk(dq) for f in fs]
                time.sleep(0.1)
            if not tmpl:
                return fail("failed: the template message was not deferred in 60 s")
        finally:
            pf.stop()
        st = os.stat(tmpl[0])
        with open(tmpl[0], "rb") as f:
            data = f.read()
        t0 = time.monotonic()
        margin = 20 + q * 300e-6
        t_due = time.time() + margin
        later = time.time() + 3600
        for i in range(q - 1):
            # a name of queue-id characters that no inode-based id has
            # (postsuper -s renames it to the one its inode gives)
            dst = os.path.join(dq, "B%010X" % i)
            with open(dst, "wb") as f:
                f.write(data)
            os.chown(dst, st.st_uid, st.st_gid)
            os.chmod(dst, st.st_mode & 0o7777)
            when = t_due if i < due else later
            os.utime(dst, (when, when))
        os.utime(tmpl[0], (later, later))
        p = subprocess.run(["postsuper", "-c", pf.conf_dir, "-s"], capture_output=True,
                           timeout=900)
        n = sum(len(fs) for _, _, fs in os.walk(dq))
        out["fill_seconds"] = round(time.monotonic() - t0, 1)
        log("queue pf: %d messages copied and renamed in %.1fs" % (n, out["fill_seconds"]))
        if n != q:
            return fail("failed: %d of %d queue files after postsuper -s (rc %s: %s)" % (
                n, q, p.returncode, p.stderr.decode(errors="replace")[-200:]))
        t_due = max(t_due, time.time() + 15)
        for dp, _, fs in os.walk(dq):
            for f in fs:
                path = os.path.join(dp, f)
                if os.stat(path).st_mtime < later - 60:
                    os.utime(path, (t_due, t_due))
        t0 = time.monotonic()
        try:
            pf.restart()
        except Exception as e:  # noqa: BLE001 - reported in the table
            return fail("failed: %s" % str(e)[:200])
        try:
            out["restart"] = self._greeting_after(pf.port, t0) or "failed: no greeting"
            out["ready_before_due_s"] = round(t_due - time.time(), 1)
            time.sleep(5)
            rss, pss, nproc = tree_memory(pf.pid)
            out["rss"], out["pss"], out["processes"] = rss / 1024, pss / 1024, nproc
            got = self._due_window(t_due, due, lambda: tree_cpu_seconds(pf.pid),
                                   lambda: pf.log().count("status=deferred"))
            if isinstance(got, str):
                out["due"] = got
            else:
                out["due"] = got[0] * 1000.0 / due
                out["due_done_after_s"] = round(got[1], 2)
            log("queue pf: %s" % out)
            return out
        finally:
            pf.stop()

    # ---- 6: the scheduler micro-benchmark --------------------------------
    def sched_phase(self):
        """bench_sched run and run-ram: per-operation cost at 10^3, 10^4, 10^5
        queued, on a spool on tmpfs and on the in-memory queue (printed into
        the notes; not a row: there is no Postfix side)."""
        b = self.args.bench_sched
        if not b or not os.path.exists(b):
            self.notes.append("scheduler micro-benchmark: n/a (bench_sched not built)")
            return
        base = "/dev/shm" if os.path.isdir("/dev/shm") else self.base
        lines = []
        for mode in ("run", "run-ram"):
            try:
                p = subprocess.run([b, mode, base, str(100000)], capture_output=True,
                                   timeout=600)
            except subprocess.TimeoutExpired:
                self.notes.append("scheduler micro-benchmark (%s): timed out" % mode)
                continue
            got = [json.loads(x) for x in p.stdout.decode().splitlines() if x.startswith("{")]
            if p.returncode != 0 or not got:
                self.notes.append("scheduler micro-benchmark (%s) failed: %s" %
                                  (mode, p.stdout.decode(errors="replace")[-300:]))
                continue
            lines += got
        self.raw["scheduler micro-benchmark"] = lines
        if not lines:
            return
        self.sched = ["| queue | queued | load (us/msg) | flush (us/call) | due (us/msg) | "
                      "add (us/call) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for j in lines:
            self.sched.append("| {} | {:,} | {:.1f} ({:.1f} CPU) | {:.2f} ({:.2f} CPU) | {:.1f} "
                              "({:.1f} CPU) | {:.1f} ({:.1f} CPU) |".format(
                                  j.get("queue", "spool"), j["queued"], j["load_us"],
                                  j["load_cpu_us"], j["flush_us"], j["flush_cpu_us"],
                                  j["due_us"], j["due_cpu_us"], j["add_us"], j["add_cpu_us"]))
        log("scheduler micro-benchmark: %s" % lines)

    # ---- output -------------------------------------------------------
    def spool_fs(self):
        """The spool's file system type, "ext4 without a journal" for one."""
        df = subprocess.run(["df", "-T", self.base], capture_output=True).stdout.decode()
        fs = df.splitlines()[-1].split()[1] if df else "?"
        if fs == "ext4":
            # ext4 without a journal allocates inodes differently (it skips
            # recently deleted ones, scanning): say which one this is
            dev = os.path.basename(df.splitlines()[-1].split()[0])
            if read_text("/sys/fs/ext4/%s/journal_task" % dev).strip() == "<none>":
                fs = "ext4 without a journal"
        return fs

    def machine(self):
        cpu = "?"
        try:
            for line in open("/proc/cpuinfo"):
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
        fs = self.spool_fs()
        deb = read_text("/etc/debian_version").strip()

        def ver(pkg):
            p = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg],
                               capture_output=True)
            return p.stdout.decode() or "?"
        git = subprocess.run(["git", "-C", SRC, "rev-parse", "--short", "HEAD"],
                             capture_output=True).stdout.decode().strip() or "?"
        dirty = subprocess.run(["git", "-C", SRC, "status", "--porcelain"],
                               capture_output=True).stdout.decode().strip()
        built = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(os.stat(self.args.bin).st_mtime))
        return ("%s, %d CPUs, %.0f GiB RAM, Debian %s, kernel %s, spool/queue on %s; "
                "stsrelay %s%s (Release build of %s), Postfix %s, postfix-mta-sts-resolver %s, "
                "Unbound %s, nginx %s" % (
                    cpu, os.cpu_count(), mem, deb, platform.release(), fs, git,
                    " + uncommitted changes" if dirty else "", built, ver("postfix"),
                    ver("postfix-mta-sts-resolver"), ver("unbound"), ver("nginx-common")))

    def table(self, started, elapsed):
        lines = ["# stsrelay vs Postfix: tests/bench/run, %s" % started,
                 "",
                 "Machine: %s." % self.machine(),
                 "Run: scale %.2f, %.0f s, loopback only, inside a private network namespace."
                 % (self.scale, elapsed),
                 "",
                 "| metric | stsrelay | Postfix | stsrelay/Postfix |",
                 "| --- | ---: | ---: | ---: |"]
        for r in self.rows:
            lines.append("| %s | %s | %s | %s |" % (r.metric, r.cell(r.sts), r.cell(r.pf),
                                                   r.ratio()))
        lines += ["", "Ratios above 1 favour stsrelay for rates; below 1 for latency and "
                  "memory (the metric says which)."]
        if self.spread:
            lines += ["", "Accept rate of every repetition, in run order (msg/s; the table "
                      "above shows the median):", "",
                      "| run | stsrelay | Postfix |", "| --- | --- | --- |"] + self.spread
        if getattr(self, "sched", None):
            lines += ["", "Scheduler micro-benchmark (tests/bench/bench_sched.c, spool on "
                      "tmpfs and in-memory queue (queue/ram.h), K = 1,000 operations each; "
                      "wall microseconds, CPU in "
                      "brackets; flat means the cost does not grow with the queue):", ""]
            lines += self.sched
        lines += ["", "Notes:", ""]
        lines += ["- " + n for n in self.notes]
        return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--bench-sts", default="")
    ap.add_argument("--disk-limit", default="")
    ap.add_argument("--bench-sched", default="")
    ap.add_argument("--out", required=True)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--workdir", default="/var/tmp")
    ap.add_argument("--reps", type=int, default=5, help="accept runs per configuration")
    ap.add_argument("--accept-budget", type=int, default=420,
                    help="no new accept repetition after this many seconds")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--accept-runs", default="",
                    help="SIZExSESSIONS,... of the accept matrix to run alone (e.g. 102400x1)")
    ap.add_argument("--only", default="probe,accept,relay,idle,policy,queue,sched,fleet")
    args = ap.parse_args()
    # `timeout` or Ctrl-C: unwind through the finally blocks (teardown)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    phases = set(args.only.split(","))
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    t0 = time.monotonic()
    load0 = os.getloadavg()
    b = Bench(args)
    rc = 0
    try:
        b.start_world()
        delivery, why = False, "not probed"
        if "probe" in phases:
            delivery, why = b.probe_delivery()
            log("stsrelay delivery: %s %s" % (delivery, why))
        if "accept" in phases:
            b.accept_phase(delivery)
            if not delivery:
                b.notes.append("accept runs: this stsrelay build has no delivery, so Postfix "
                               "ran with every message put on hold (written and fsync'd "
                               "like any other, never delivered) and in_flow_delay = 0; "
                               "neither system delivered during the accept runs")
            else:
                b.notes.append("accept runs: recipients in a domain whose DNS fails "
                               "(SERVFAIL), so both systems try each message once and defer "
                               "it (retries pushed past the run: stsrelay retry_schedule = 1h, "
                               "Postfix minimal_backoff_time = 3600s); each repetition starts "
                               "both systems afresh with an empty queue, and each run starts "
                               "only once both systems have finished that first attempt for "
                               "every message of the runs before it (otherwise a run pays for "
                               "the other system's deferrals of its last run: that was the "
                               "bimodal 100 KB single-session row, see README)")
        if "relay" in phases:
            b.relay_phase(delivery, why)
        if "idle" in phases:
            b.idle_phase()
        if "policy" in phases:
            b.policy_phase()
        if "queue" in phases:
            b.queue_phase()
        if "sched" in phases:
            b.sched_phase()
        if "fleet" in phases:
            b.fleet_phase()
    except Exception:
        rc = 1
        b.notes.append("RUN ABORTED: %s" % traceback.format_exc().strip().splitlines()[-1])
        traceback.print_exc()
    finally:
        b.stop_all()
    b.notes += [
        "machine load average (1 min) at start %.2f, at end %.2f: other jobs on this "
        "machine share its CPUs and disk, so single numbers are noisy; accept rates are "
        "the median of %d runs (all runs under Raw measurements)" % (
            load0[0], os.getloadavg()[0], args.reps),
        "on a loaded machine the comparison tilts towards Postfix: its ~100-1000 processes "
        "get a larger share of contended CPUs than stsrelay's one event-loop thread; for "
        "the README, run on an otherwise idle machine (load average well below the CPU count)",
        "load generator: Postfix's smtp-source (-d: one connection per session, reused) for "
        "accept and relay runs; latency from one Python client timing MAIL FROM to the 250 "
        "after the final dot; the same for both systems",
        "durability: Postfix's cleanup fsyncs each queue file before smtpd answers 250 (one "
        "fsync per message, no directory fsync: checked with strace); stsrelay fsyncs each "
        "message file and, once per group commit, the queue directory",
        "Postfix sender: private instance, queue on the same file system as the stsrelay "
        "spool, default fsync behaviour, smtpd_peername_lookup = no (stsrelay does no "
        "reverse lookup), default_process_limit = 1200, smtp_destination_concurrency_limit "
        "= 10 (= stsrelay max_connections_per_domain), Debian's TLS session cache",
        "policy decisions: stsrelay through its MTA-STS engine (bench_sts, a Release build "
        "linked with st_sts); postfix-mta-sts-resolver through its socketmap with the "
        "in-memory cache, queried by a C client (within its 60 s cache_grace no DNS query "
        "is made, so the fair comparison is the in-process row; stsrelay's engine always "
        "asks DNS for the TXT id, which the Unbound row includes)",
        "receiving MX: a Postfix instance (test CA certificate for %s, discard transport; "
        "%s goes to a maildir through virtual(8) for the SHA-256 check), deliveries counted "
        "in its log" % (MX_HOST, HASH_RCPT),
    ]
    text = b.table(started, time.monotonic() - t0)
    if b.raw:
        text += "\nRaw measurements:\n\n```\n%s\n```\n" % json.dumps(b.raw, indent=1,
                                                                    sort_keys=True)
    with open(args.out, "w") as f:
        f.write(text)
    sys.stdout.write(text)
    if args.keep:
        log("kept %s" % b.base)
    else:
        shutil.rmtree(b.base, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
