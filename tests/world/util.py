# Shared helpers of the test world: free ports and addresses, bounded waits,
# subprocess runs with surfaced errors, and the atexit kill list.
import atexit
import os
import random
import signal
import socket
import subprocess
import threading
import time

# Every process the world starts is listed here so that an interpreter exit
# (a crashed test run, Ctrl-C) still kills it; teardown removes it on stop.
_live_pids = set()


def _kill_leftovers():
    for pid in list(_live_pids):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    _live_pids.clear()


atexit.register(_kill_leftovers)


def track_pid(pid):
    _live_pids.add(pid)


def untrack_pid(pid):
    _live_pids.discard(pid)


class WorldError(RuntimeError):
    pass


def run(cmd, timeout=30, check=True, env=None, input=None, cwd=None):
    """Run a command to completion; on failure raise with its output."""
    p = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env,
                       input=input, cwd=cwd)
    if check and p.returncode != 0:
        raise WorldError("command failed (rc=%d): %s\nstdout: %s\nstderr: %s" % (
            p.returncode, " ".join(map(str, cmd)),
            p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")))
    return p


def _family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def port_free(host, port, kind=socket.SOCK_STREAM):
    s = socket.socket(_family(host), kind)
    try:
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def listen_tcp(host, port, backlog=16, timeout=None):
    """A TCP socket listening on host:port (SO_REUSEADDR); a timeout lets
    an accept loop look at its stop flag now and then."""
    s = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(backlog)
    except OSError:
        s.close()
        raise
    if timeout is not None:
        s.settimeout(timeout)
    return s


def close_quietly(sock):
    """Close a socket that may already be gone (peer reset, closed twice)."""
    try:
        sock.close()
    except OSError:
        pass


def serve_tcp(host, port, handle, backlog=16):
    """listen_tcp, then handle(conn) in a thread of its own for each
    accepted connection until the returned socket is closed."""
    sock = listen_tcp(host, port, backlog)

    def accept_loop():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()
    threading.Thread(target=accept_loop, daemon=True).start()
    return sock


def free_port(host="127.0.0.1", udp_too=False):
    """A port nobody listens on now (kernel-chosen, so parallel test
    processes do not pick the same one); udp_too also checks UDP."""
    for _ in range(50):
        s = socket.socket(_family(host), socket.SOCK_STREAM)
        try:
            s.bind((host, 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if not udp_too or port_free(host, port, socket.SOCK_DGRAM):
            return port
    raise WorldError("no free port found on %s" % host)


def free_ip(port, used=()):
    """A random 127.x.y.z address (away from 127.0.0.0/16, which /etc/hosts
    and the relay itself use) on which `port` is free for TCP, so that
    several worlds can run in parallel with one smtp_port each."""
    rnd = random.SystemRandom()
    for _ in range(200):
        ip = "127.%d.%d.%d" % (rnd.randint(16, 250), rnd.randint(0, 255),
                               rnd.randint(2, 250))
        if ip not in used and port_free(ip, port):
            return ip
    raise WorldError("no free loopback address for port %d" % port)


def wait_until(pred, timeout, interval=0.05, what="condition", error=WorldError):
    """Poll pred() until it returns a true value or the deadline passes;
    then raise `error` (tests pass AssertionError to fail, not error)."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise error("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def port_accepts(host, port, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_port(host, port, timeout=10, proc=None, what=None):
    """Wait until host:port accepts TCP; fail early if proc has exited."""
    def ready():
        if proc is not None and proc.poll() is not None:
            raise WorldError("%s exited with %s before listening on %s:%d" % (
                what or "process", proc.returncode, host, port))
        return port_accepts(host, port)
    wait_until(ready, timeout, what=what or "%s:%d to accept" % (host, port))


def stop_process(proc, timeout=5, sig=signal.SIGTERM):
    """SIGTERM (or sig), a bounded wait, then SIGKILL. Returns the exit code."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except OSError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    untrack_pid(proc.pid)
    return proc.returncode


def kill_pid(pid, timeout=5):
    """SIGTERM a process we started by pid (not our child), then SIGKILL."""
    def gone():
        # A daemon that double-forked is reparented to PID 1, which may be
        # slow to reap it: a zombie counts as gone.
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except (OSError, IndexError):
            return True
    if gone():
        untrack_pid(pid)
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError:
        pass
    try:
        wait_until(gone, timeout, what="pid %d to exit" % pid)
    except WorldError:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    untrack_pid(pid)


def spawn(cmd, log_path, env=None, cwd=None):
    """Start a long-running process with stdout+stderr to log_path."""
    log = open(log_path, "ab")
    try:
        p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                             start_new_session=True)
    finally:
        log.close()
    track_pid(p.pid)
    return p


def read_text(path, limit=20000):
    try:
        with open(path, "rb") as f:
            data = f.read()
        return data[-limit:].decode(errors="replace")
    except OSError:
        return ""


def make_dir(path, mode=0o755):
    os.makedirs(path, exist_ok=True)
    os.chmod(path, mode)
    return path


def run_tty(cmd, timeout=60):
    """Run cmd with stdout/stderr on a pseudo-terminal and return
    (returncode, output). Postfix commands write their fatal errors to a
    terminal (otherwise only to syslog), so this is how they get surfaced."""
    import pty
    import select
    master, slave = pty.openpty()
    try:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave,
                             stderr=slave, start_new_session=True)
    finally:
        os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                p.kill()
                p.wait(5)
                raise WorldError("timed out: %s" % " ".join(cmd))
            r, _, _ = select.select([master], [], [], min(left, 0.2))
            if r:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    data = b""
                if not data:
                    break
                chunks.append(data)
            elif p.poll() is not None and not r:
                # Daemonized children may hold the pty open; the command
                # itself is done.
                break
        p.wait(max(1, deadline - time.monotonic()))
    finally:
        os.close(master)
    return p.returncode, b"".join(chunks).decode(errors="replace")
