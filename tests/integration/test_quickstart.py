# The README's first example, run as written: `scripts/run` in one terminal,
# the commands of the README's second-terminal block in another, in the same
# directory. It runs in a copy of the checkout's scripts/ and conf/, in a
# network namespace of its own (its own 127.0.0.1:2525, no route anywhere,
# so no resolver answers), so it collides with nothing on this
# machine. The one difference from a real first run: STSRELAY_PREBUILT hands
# scripts/run the suite's binary instead of a Release build.
import os
import re
import shutil
import signal
import subprocess
import tempfile

import pytest

from tests.world.util import wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (scripts/run, netns)")

SRC = os.environ.get("STSRELAY_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))


def readme_block():
    """The commands of the README's 'Try it from a second terminal' block."""
    with open(os.path.join(SRC, "README.md")) as f:
        text = f.read()
    m = re.search(r"Try it from a second terminal.*?\n```\n(.*?)\n```", text, re.S)
    assert m, "README has no second-terminal block"
    return [line for line in m.group(1).splitlines() if line.strip()]


@pytest.fixture
def netns():
    """A network namespace with nothing but its own loopback: the system
    resolver and every other address are out of reach from inside it. A
    sleeping holder process keeps it (no /run/netns mount that could be
    left behind, e.g. in CI's chroot); commands enter it with nsenter. The
    command prefix is returned."""
    holder = subprocess.Popen(["unshare", "--net", "sleep", "600"])
    try:
        inside = ["nsenter", "--net=/proc/%d/ns/net" % holder.pid]
        wait_until(lambda: os.readlink("/proc/%d/ns/net" % holder.pid) !=
                   os.readlink("/proc/self/ns/net"), 10, what="the namespace holder")
        subprocess.run(inside + ["ip", "link", "set", "lo", "up"], check=True, timeout=30)
        yield inside
    finally:
        holder.kill()
        holder.wait(timeout=30)


def test_readme_quickstart_leaves_a_deferred_message_with_its_reason(netns):
    commands = readme_block()
    assert commands == [
        "apt-get install -y swaks",
        "swaks --server 127.0.0.1:2525 --from you@example.org --to 'someone@[192.0.2.1]'",
        "build/release/stsrelay queue list -c conf/stsrelay.conf",
    ], commands
    top = tempfile.mkdtemp(prefix="stsrelay-quickstart-")
    os.chmod(top, 0o755)
    log_path = os.path.join(top, "terminal-1.log")
    proc = None

    def terminal_1():
        try:
            with open(log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""
    try:
        for d in ("scripts", "conf"):
            shutil.copytree(os.path.join(SRC, d), os.path.join(top, d))
        env = dict(os.environ, STSRELAY_PREBUILT=os.environ["STSRELAY_BIN"],
                   ASAN_OPTIONS="detect_leaks=1:abort_on_error=1",
                   UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(netns + ["scripts/run"], cwd=top,
                                    stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)

        wait_until(lambda: proc.poll() is not None or "stsrelay/master[" in terminal_1() and
                   " started: " in terminal_1(), 120, what="scripts/run to start the relay")
        assert proc.poll() is None, terminal_1()
        # the spool is ./var/spool of the directory scripts/run runs in
        assert "spool %s/var/spool," % top in terminal_1(), terminal_1()

        def terminal_2(cmd):
            return subprocess.run(netns + ["bash", "-c", cmd], cwd=top,
                                  capture_output=True, text=True, timeout=120, env=env)
        for cmd in commands[:2]:
            p = terminal_2(cmd)
            assert p.returncode == 0, (cmd, p.stdout, p.stderr)
        assert re.search(r"<-  250 2\.0\.0 Ok: queued as [0-9A-F]{12}", p.stdout), p.stdout

        def listed():
            p = terminal_2(commands[2])
            assert p.returncode == 0, p.stderr
            return p.stdout if "(deferred, 1 attempt" in p.stdout else None
        out = wait_until(listed, 60, what="the message deferred in queue list")
        assert re.search(r"^[0-9A-F]{12} +\d+ \S+Z you@example\.org$", out, re.M), out
        assert re.search(r"^ +someone@\[192\.0\.2\.1\] \(deferred, 1 attempt, next try \S+Z\)$",
                         out, re.M), out
        # no route in the namespace: refused at once, the reason shown
        assert re.search(r"^ +4\.4\.1 connect to 192\.0\.2\.1\[192\.0\.2\.1\]:25: \S", out,
                         re.M), out
        assert out.endswith("-- 1 Kbytes in 1 Request.\n"), out
        assert "status=deferred (connect to 192.0.2.1[192.0.2.1]:25: " in terminal_1()
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)   # Ctrl-C in terminal 1
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        log = terminal_1() if proc is not None else ""
        shutil.rmtree(top, ignore_errors=True)
    assert proc.returncode == 0, log
    for mark in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
        assert mark not in log, log
