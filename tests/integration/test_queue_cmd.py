# The queue commands against a real spool: sendmail while the daemon is
# stopped, then the daemon picks the message up and `queue list` shows it;
# show/flush/delete/bounce with and without a running daemon.
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from serve_helpers import parse_queue_file, sendmail_from_file
from tests.world import free_port

BIN = os.environ.get("STSRELAY_BIN", "stsrelay")
TIMEOUT = 60

MESSAGE = (
    b"From: Alice Example <alice@example.org>\n"
    b'To: "Smith, Bob" <bob@example.com>,\n'
    b"  carol@example.net (Carol)\n"
    b"Cc: Dave <dave@example.com>\n"
    b"Bcc: secret@example.com\n"
    b"Subject: quarterly numbers\n"
    b"\n"
    b"Hello all,\n"
    b".\n"
    b"bye\n"
)
RCPTS = {"bob@example.com", "carol@example.net", "dave@example.com", "secret@example.com"}


@pytest.fixture
def world():
    d = tempfile.mkdtemp(prefix="stsrelay-queue-")
    os.chmod(d, 0o755)
    conf = os.path.join(d, "stsrelay.conf")
    spool = os.path.join(d, "spool")
    port = free_port()
    with open(conf, "w") as f:
        # DNS goes to a closed loopback port: deliveries defer (nothing
        # leaves loopback) and the messages stay listed.
        f.write("spool_dir = %s\nhostname = relay.test\nlisten = 127.0.0.1:%d\n"
                "dns_servers = 127.0.0.1:%d\n" % (spool, port, free_port()))
    w = {"dir": d, "conf": conf, "spool": spool, "port": port, "daemon": None}
    yield w
    stop_daemon(w, check=False)
    shutil.rmtree(d, ignore_errors=True)


def run(world, args, data=b""):
    return subprocess.run([BIN] + args + ["-c", world["conf"]], input=data,
                          capture_output=True, timeout=TIMEOUT)


def sendmail(world, args, data):
    return subprocess.run([BIN, "sendmail", "-C", world["conf"]] + args, input=data,
                          capture_output=True, timeout=TIMEOUT)


def queue_json(world):
    r = run(world, ["queue", "list", "--json"])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def start_daemon(world):
    log = open(os.path.join(world["dir"], "daemon.log"), "ab")
    p = subprocess.Popen([BIN, "serve", "-c", world["conf"]], stdout=log, stderr=log)
    log.close()
    world["daemon"] = p
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert p.poll() is None, "daemon exited: " + daemon_log(world)
        try:
            socket.create_connection(("127.0.0.1", world["port"]), timeout=1).close()
            if os.path.exists(os.path.join(world["spool"], "control")):
                return p
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("daemon did not start: " + daemon_log(world))


def stop_daemon(world, check=True):
    p = world.get("daemon")
    if p is None:
        return
    world["daemon"] = None
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
            if check:
                raise AssertionError("daemon ignored SIGTERM")
    if check:
        assert p.returncode == 0, daemon_log(world)


def daemon_log(world):
    try:
        return open(os.path.join(world["dir"], "daemon.log"), "rb").read().decode(errors="replace")
    except OSError:
        return ""


def wait_for_messages(world, n):
    """Polls queue list until n messages are queued and maildrop/ is empty."""
    deadline = time.monotonic() + 20
    doc = None
    while time.monotonic() < deadline:
        doc = queue_json(world)
        if len(doc["messages"]) == n and doc.get("maildrop", 0) == 0:
            return doc
        time.sleep(0.2)
    raise AssertionError("queue never reached %d messages: %r\n%s" % (n, doc, daemon_log(world)))


def queued_data(world, qid):
    return parse_queue_file(os.path.join(world["spool"], "queue", qid))[2]


RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def test_sendmail_while_stopped_then_daemon_lists_it(world):
    r = sendmail_from_file(world, MESSAGE, ["-t", "-i"], TIMEOUT)
    assert r.returncode == 0, r.stderr

    # The daemon is not running: the message waits in maildrop/.
    doc = queue_json(world)
    assert doc["messages"] == [] and doc["maildrop"] == 1
    r = run(world, ["queue", "list"])
    assert r.returncode == 0 and b"1 message in maildrop, not yet picked up" in r.stdout

    start_daemon(world)
    doc = wait_for_messages(world, 1)
    m = doc["messages"][0]
    assert set(m) >= {"id", "sender", "size", "queued_at", "recipients"}
    assert re.fullmatch(r"[0-9A-F]{12}", m["id"])
    assert m["sender"] == "root@relay.test"
    assert RFC3339.match(m["queued_at"])
    data = queued_data(world, m["id"])
    assert m["size"] == len(data)
    assert b"Subject: quarterly numbers\r\n" in data and b"secret@" not in data
    assert data.endswith(b"\r\n\r\nHello all,\r\n.\r\nbye\r\n")
    assert {x["address"] for x in m["recipients"]} == RCPTS
    for x in m["recipients"]:
        assert set(x) == {"address", "status", "attempts", "next_try", "last_error"}
        assert x["status"] in ("pending", "deferred")
        assert isinstance(x["attempts"], int)
        assert x["next_try"] is None or RFC3339.match(x["next_try"])
        assert x["last_error"] is None or isinstance(x["last_error"], str)

    # The table, mailq (argv[0]) and sendmail -bp show the same message.
    r = run(world, ["queue", "list"])
    assert r.returncode == 0, r.stderr
    assert m["id"].encode() in r.stdout and b"bob@example.com" in r.stdout
    assert b"-- 1 Kbytes in 1 Request." in r.stdout
    link = os.path.join(world["dir"], "mailq")
    os.symlink(os.path.abspath(BIN), link)
    r = subprocess.run([link, "-c", world["conf"]], capture_output=True, timeout=TIMEOUT)
    assert r.returncode == 0 and m["id"].encode() in r.stdout, r.stderr
    r = sendmail(world, ["-bp"], b"")
    assert r.returncode == 0 and m["id"].encode() in r.stdout, r.stderr

    r = run(world, ["queue", "show", m["id"]])
    assert r.returncode == 0, r.stderr
    assert b"sender: <root@relay.test>" in r.stdout
    assert b"recipient: <carol@example.net>" in r.stdout
    assert r.stdout.endswith(b"--- message ---\n" + data)
    stop_daemon(world)


def test_commands_through_a_running_daemon(world):
    start_daemon(world)
    for i in range(3):
        r = sendmail(world, ["-i", "r%d@example.com" % i], b"Subject: n%d\n\nbody\n" % i)
        assert r.returncode == 0, r.stderr
    doc = wait_for_messages(world, 3)
    ids = [m["id"] for m in doc["messages"]]

    assert run(world, ["queue", "flush"]).returncode == 0
    assert run(world, ["queue", "flush", ids[0]]).returncode == 0
    r = run(world, ["queue", "delete", ids[1].lower()])
    assert r.returncode == 0, r.stderr
    assert [m["id"] for m in queue_json(world)["messages"]] == [ids[0], ids[2]]
    assert not os.path.exists(os.path.join(world["spool"], "queue", ids[1]))

    for verb in ("delete", "bounce", "flush"):
        r = run(world, ["queue", verb, "0000000000AB"])
        assert r.returncode == 67, (verb, r.stderr)   # EX_NOUSER: no such message
        assert r.stderr == b"stsrelay queue: no such message 0000000000AB\n", r.stderr
    stop_daemon(world)


def test_commands_without_a_daemon(world):
    start_daemon(world)
    for i in range(2):
        r = sendmail(world, ["-i", "r%d@example.com" % i], b"Subject: n%d\n\nbody\n" % i)
        assert r.returncode == 0, r.stderr
    msgs = wait_for_messages(world, 2)["messages"]
    ids = [m["id"] for m in msgs]
    kept_rcpt = msgs[1]["recipients"][0]["address"]
    stop_daemon(world)

    r = run(world, ["queue", "flush"])
    assert r.returncode == 0, r.stderr
    assert b"not running" in r.stdout
    r = run(world, ["queue", "bounce", ids[0]])
    assert r.returncode == 69 and b"daemon to be running" in r.stderr
    r = run(world, ["queue", "delete", ids[0]])
    assert r.returncode == 0, r.stderr
    assert [m["id"] for m in queue_json(world)["messages"]] == [ids[1]]
    r = run(world, ["queue", "delete", ids[0]])
    assert r.returncode == 67 and b"no message " + ids[0].encode() in r.stderr
    r = run(world, ["queue", "show", ids[0]])
    assert r.returncode == 67
    r = run(world, ["queue", "show", "not-an-id"])
    assert r.returncode == 65 and b"not a queue id" in r.stderr
    r = run(world, ["queue", "frobnicate"])
    assert r.returncode == 64
    r = run(world, ["queue", "show", ids[1], "--json"])
    assert r.returncode == 0 and json.loads(r.stdout)["id"] == ids[1]

    # The remaining message survives a restart with its recipient pending.
    start_daemon(world)
    doc = wait_for_messages(world, 1)
    assert doc["messages"][0]["id"] == ids[1]
    assert doc["messages"][0]["recipients"][0]["address"] == kept_rcpt
    stop_daemon(world)


def fake_control(path, replies, seen):
    """A stand-in daemon on the control socket: one reply per connection."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    srv.settimeout(20)

    def serve():
        try:
            for reply in replies:
                c, _ = srv.accept()
                with c:
                    c.settimeout(10)
                    buf = b""
                    while not buf.endswith(b"\n") and len(buf) < 1024:
                        chunk = c.recv(1024)
                        if not chunk:
                            break
                        buf += chunk
                    seen.append(buf)
                    c.sendall(reply)
        finally:
            srv.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def test_control_protocol_lines(world):
    os.makedirs(world["spool"])
    seen = []
    t = fake_control(os.path.join(world["spool"], "control"),
                     [b"ok\n", b"error no such message 00000000000A\n", b"ok\r\n", b"what?\n"],
                     seen)
    assert run(world, ["queue", "flush"]).returncode == 0
    r = run(world, ["queue", "delete", "00000000000a"])
    assert r.returncode == 67 and b"no such message 00000000000A" in r.stderr
    assert run(world, ["queue", "bounce", "0123456789AB"]).returncode == 0
    r = run(world, ["queue", "flush", "0123456789AB"])
    assert r.returncode == 76 and b"unexpected reply" in r.stderr
    t.join(timeout=20)
    assert seen == [b"flush\n", b"delete 00000000000A\n", b"bounce 0123456789AB\n",
                    b"flush 0123456789AB\n"]
