# Every byte accepted is the byte delivered (issue 9), through real peers:
# smtplib and `stsrelay sendmail` -> stsrelay -> Postfix over verified TLS,
# opportunistic TLS, plaintext and a reused connection; 1,000 recipients in
# one message; a smuggling attempt aimed at TLS record cuts; an MX that
# answers 200 pipelined RCPTs as 200 TLS records; the listener's DATA decoder
# against its model; a slow disk under a delivery.
import hashlib
import os
import random
import re
import shutil
import smtplib
import sys
import tempfile
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faults_util import SAN_ENV, RawSMTP, assert_no_sanitizer_report  # noqa: E402
from serve_helpers import Daemon, split_received  # noqa: E402
from tests.world import World  # noqa: E402
from tests.world.util import wait_until  # noqa: E402

SEED = 20261203
SENDER = "integrity@client.world.test"
HELO = "client.world.test"        # what smtplib says in EHLO (local_hostname)
RELAY_NAME = "relay.world.test"   # the relay's `hostname` (tests/world/relay.py)
PULL = 8192     # the delivery client reads a queued message in 8 KiB pulls (smtp/client.c)
RECORD = 16384  # plaintext of one TLS record
FOLD = 990      # sendmail breaks longer input lines (relay/cli/sendmail.c CHUNK_MAX)
DOMAINS = ["enf.test", "opp.test", "plain.test", "reuse.test", "bulk.test", "smuggle.test"]
ENFORCED = ["enf.test", "reuse.test", "bulk.test", "smuggle.test"]


# ------------------------------------------------------------------ the model
def smtplib_data(message):
    """The text smtplib sends between DATA and the final dot (smtplib.SMTP.
    data()): a "." at the start or after any LF is doubled, and CRLF is
    added unless the message ends with one."""
    q = re.sub(rb"(?m)^\.", b"..", message)
    return q if q.endswith(b"\r\n") else q + b"\r\n"


def listener_stored(data):
    """What the listener stores for DATA text (relay/daemon/smtpd.c data_feed(),
    its comment on enum data_pos): the leading dot of a line begun by CRLF
    (or the first line) is removed unless a bare LF follows it; a line begun
    by a bare LF loses its leading dot too, unless the dot is the whole line
    (it never starts a terminator); every bare LF is stored as CRLF; a CR
    not followed by LF is kept as data."""
    s = re.sub(rb"(?:^|(?<=\r\n))\.(?!\n)|(?<=\n)(?<!\r\n)\.(?!\r?\n)", b"", data)
    return re.sub(rb"(?<!\r)\n", b"\r\n", s)


def sendmail_line(line, last=False):
    """How `sendmail -i` stores one input line (without its LF; relay/cli/
    sendmail.c reader_line()/submit()): pieces of at most FOLD octets, each
    after the first led by a space (README: "Lines over 990 octets are
    folded"), each ended by CRLF; a CR right before the LF is part of the
    line end, and so is one at the very end of the input (`last`)."""
    out, i = [], 0
    while True:
        rest = len(line) - i
        if rest <= FOLD or (rest == FOLD + 1 and line.endswith(b"\r") and not last):
            piece = line[i:]
            if piece.endswith(b"\r"):
                piece = piece[:-1]
            out.append((b" " if i else b"") + piece + b"\r\n")
            return b"".join(out)
        out.append((b" " if i else b"") + line[i:i + FOLD] + b"\r\n")
        i += FOLD


def sendmail_stored(message):
    """What `sendmail -i` stores. Lines end at LF; a bare CR does not end
    one. The header section goes through unchanged as long as it has From:,
    Date: and Message-ID:, no Bcc: and no line over FOLD octets (ours), and
    the Received: put on top is a trace field like the listener's."""
    lines = message.split(b"\n")
    tail = lines.pop()   # after the last LF: empty when the input ends with one
    out = [sendmail_line(x) for x in lines]
    if tail:
        out.append(sendmail_line(tail, last=True))
    return b"".join(out)


def stored_form(message, via):
    """The message as the queue holds it, after the relay's Received."""
    if via == "smtp":
        return listener_stored(smtplib_data(message))
    return sendmail_stored(message)


def relay_normalise(message, via):
    """What the MX receives as the message text (dot-unstuffed) for a
    message submitted by smtplib ("smtp") or `sendmail -i`, without the
    relay's own Received field. This is the relay's whole documented
    normalisation: stored_form() above, then delivery (smtp/client.c
    body_byte(), smtp_client_data_end()) sends every CRLF, lone CR and lone
    LF as CRLF (no receiver then sees a line end the sender did not mean),
    dot-stuffs (which the MX undoes), and ends a message that lacks a final
    line end with CRLF. Nothing else changes: every other octet, 8-bit and
    NUL included, goes through as it is."""
    s = re.sub(rb"\r\n|\r|\n", b"\r\n", stored_form(message, via))
    return s if s.endswith(b"\r\n") else s + b"\r\n"


def relay_trace_len(via, rcpt, when):
    """Length of the Received field the relay puts on top of a message it
    takes in (listener: relay/daemon/smtpd.c data_start(); sendmail: relay/cli/
    sendmail.c write_headers()); the queue file's message starts with it,
    so it tells where each byte of ours sits in the relay's 8 KiB pulls.
    (The day of the month has one or two digits: a message taken in across
    such a midnight fails the length check that follows delivery.)"""
    tm = time.gmtime(when)
    date = "%s, %d %s %04d %02d:%02d:%02d +0000" % (
        "Mon Tue Wed Thu Fri Sat Sun".split()[tm.tm_wday], tm.tm_mday,
        "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()[tm.tm_mon - 1],
        tm.tm_year, tm.tm_hour, tm.tm_min, tm.tm_sec)
    if via == "smtp":
        field = ("Received: from %s (unknown [127.0.0.1])\r\n\tby %s (stsrelay) with ESMTP id "
                 "%s\r\n\tfor <%s>;\r\n\t%s\r\n" % (HELO, RELAY_NAME, "Q" * 12, rcpt, date))
    else:
        field = "Received: by %s (stsrelay, from userid %d);\r\n\t%s\r\n" % (
            RELAY_NAME, os.getuid(), date)
    return len(field)


# ------------------------------------------------------------------ bodies
NO_CRLF = bytes.maketrans(b"\r\n", b"\x0e\x0b")
PRINTABLE = bytes(0x20 + b % 95 for b in range(256))


def headers(i, rcpt, subject="integrity"):
    return ("From: <%s>\r\nTo: <%s>\r\nSubject: %s %d\r\n"
            "Date: Thu, 03 Dec 2026 10:00:00 +0000\r\n"
            "Message-ID: <%s-%d@client.world.test>\r\n\r\n" % (
                SENDER, rcpt, subject, i, subject, i)).encode()


def make_body(rng, size, via, prefix, eight_bit):
    """A random body of `size` octets for `via` and the stored offsets where
    it put a CR. Octets are random (NUL and 8-bit included) or printable;
    lines of 0 to 998 octets end mostly in CRLF, some in a bare LF or a bare
    CR; some start with "." (".", "..", ".text"). `prefix` is how many
    stored octets come before the body (relay Received + header section):
    every 8 KiB boundary of the stored message then gets a CR as its last
    octet, so the delivery client's read ends on it: half of them the CR of
    a CRLF whose LF comes with the next read, half a bare CR."""
    parts = []
    st = {"sub": 0, "stored": prefix, "prev": b"\r\n", "seg": []}
    targets = list(range(PULL - 1, prefix + size - 4000, PULL))
    targets = [t for t in targets if t >= prefix + 4000]
    hits = []

    def text(n, dot=True):
        b = rng.randbytes(n).translate(NO_CRLF if eight_bit else PRINTABLE)
        if dot and n and rng.random() < 0.08:
            b = rng.choice([b".", b"..", b"." + b[1:]])
        elif not dot and b[:1] == b".":
            b = b"-" + b[1:]
        return b

    def emit(c, end):
        if st["prev"] == b"\r" and not c and end == b"\n":
            end = b"\r\n"  # CR then LF is one CRLF, not two line ends
        parts.append(c + end)
        st["sub"] += len(c) + len(end)
        if via == "smtp":
            # smtplib stuffs after every LF and the listener unstuffs after
            # CRLF and bare LF alike: the text keeps its length
            st["stored"] += len(c) + (1 if end == b"\r" else 2)
        else:
            st["seg"].append(c + end)
            if end != b"\r":  # the input line ends: its stored length is known
                st["stored"] += len(sendmail_line(b"".join(st["seg"])[:-1]))
                st["seg"] = []
        st["prev"] = end

    def open_upper():
        """Most stored octets the open sendmail line can still become."""
        n = sum(len(x) for x in st["seg"])
        return n + 3 * (n // FOLD + 1) if n else 0

    def random_line():
        r = rng.random()
        n = (0 if r < 0.03 else rng.randint(1, 80) if r < 0.5 else rng.randint(81, 400)
             if r < 0.85 else rng.randint(401, 997) if r < 0.97 else 998)
        e = rng.random()
        emit(text(n), b"\n" if e < 0.05 else b"\r" if e < 0.10 else b"\r\n")

    for t in targets:
        while st["stored"] + open_upper() + 1100 < t - 2000:
            random_line()
        emit(text(rng.randint(0, 40), dot=False), b"\r\n")  # ends any open line
        dist = t - st["stored"]
        assert dist > FOLD, (t, st)
        while dist > FOLD:
            hi = min(FOLD - 10, dist - 2)
            emit(text(rng.randint(max(0, min(hi, dist - 2 - FOLD)), hi), dot=False), b"\r\n")
            dist = t - st["stored"]
        emit(text(dist, dot=False), b"\r\n" if len(hits) % 2 == 0 else b"\r")
        hits.append(t)
    while st["sub"] < size:
        random_line()
    return b"".join(parts)[:size], hits


def first_difference(got, want):
    n = min(len(got), len(want))
    i = next((k for k in range(0, n, 4096) if got[k:k + 4096] != want[k:k + 4096]), n)
    while i < n and got[i] == want[i]:
        i += 1
    return "lengths %d/%d, first difference at %d: got %r, want %r" % (
        len(got), len(want), i, got[max(0, i - 40):i + 40], want[max(0, i - 40):i + 40])


# ------------------------------------------------------------------ the MX side
TRACE = re.compile(rb"(?:Return-Path|X-Original-To|Delivered-To|Received):", re.I)


def split_trace(raw):
    """(trace fields, the rest) of a message as Postfix stored it (LF line
    ends): the fields Postfix and the relay put on top."""
    pos = 0
    while TRACE.match(raw, pos):
        end = raw.find(b"\n", pos)
        while end != -1 and raw[end + 1:end + 2] in (b" ", b"\t"):
            end = raw.find(b"\n", end + 1)
        if end == -1:
            break
        pos = end + 1
    return raw[:pos], raw[pos:]


def relay_received(trace):
    """The relay's own Received field in CRLF form, or b"" if none."""
    m = re.search(rb"^Received: (?:from %s |by %s \(stsrelay).*?\n(?![ \t])" % (
        re.escape(HELO.encode()), re.escape(RELAY_NAME.encode())), trace, re.M | re.S)
    return m.group(0).replace(b"\n", b"\r\n") if m else b""


def mailbox(pf, domain):
    """{envelope recipient: [paths]} of the messages Postfix delivered for
    `domain` (only each file's head is read)."""
    out = {}
    for sub in ("new", "cur"):
        d = os.path.join(pf.mail_dir, domain, sub)
        for fn in (os.listdir(d) if os.path.isdir(d) else []):
            p = os.path.join(d, fn)
            with open(p, "rb") as f:
                m = re.search(rb"^Delivered-To: (\S+)$", f.read(4096), re.M)
            out.setdefault(m.group(1).decode().lower() if m else "?", []).append(p)
    return out


def postfix_sessions(pf, host, want_mails, timeout=20):
    """{"ehlo": .., "mail": .., "rcpt": .., ...} per finished smtpd session of
    MX `host` that sent EHLO (Postfix's "disconnect from" line), once their
    MAIL counts add up to `want_mails` (its log is written asynchronously)."""
    pat = re.compile(r"postfix/%s/smtpd\[\d+\]: disconnect from \S+ (ehlo=.*)$"
                     % re.escape(host), re.M)

    def get():
        got = [dict(kv.split("=", 1) for kv in m.group(1).split())
               for m in pat.finditer(pf.log())]
        return got if sum(int(s.get("mail", "0").split("/")[0]) for s in got) >= want_mails \
            else None
    return wait_until(get, timeout, what="Postfix sessions of %s" % host)


def count(field):
    return int(field.split("/")[0])


# ------------------------------------------------------------------ the relay side
STATUS = re.compile(r": to=<([^>]+)>, .*\bstatus=(\w+)")


def statuses(r):
    """{recipient: [(status, log line)]} from the relay's log."""
    out = {}
    for line in r.log().splitlines():
        m = STATUS.search(line)
        if m:
            out.setdefault(m.group(1).lower(), []).append((m.group(2), line))
    return out


def wait_sent(r, rcpts, timeout):
    """Waits (bounded) until every recipient has a status=sent line."""
    want = set(rcpts)

    def done():
        st = statuses(r)
        return st if all(any(s == "sent" for s, _ in st.get(x, ())) for x in want) else None
    try:
        return wait_until(done, timeout, interval=0.25, what="status=sent for %d rcpts" % len(want))
    except Exception as e:
        st = statuses(r)
        missing = sorted(x for x in want if not any(s == "sent" for s, _ in st.get(x, ())))
        raise AssertionError("%s\nnot sent: %s\nrelay log tail:\n%s" % (
            e, missing[:20], r.log()[-5000:]))


def finish(r):
    rc = r.stop(timeout=30)
    assert_no_sanitizer_report(r.log())
    assert rc == 0, "relay exit code %r\n%s" % (rc, r.log()[-4000:])


def submit_smtp(r, rcpts, message, smtp=None):
    """smtplib to the relay's listener, BODY=8BITMIME when the message has
    8-bit octets; smtp: an open smtplib session to use."""
    opts = ["BODY=8BITMIME"] if re.search(rb"[\x80-\xff]", message) else []
    if smtp is not None:
        assert smtp.sendmail(SENDER, rcpts, message, mail_options=opts) == {}
        return
    with smtplib.SMTP(r.host, r.port, local_hostname=HELO, timeout=120) as s:
        assert s.sendmail(SENDER, rcpts, message, mail_options=opts) == {}


def submit_sendmail(r, rcpt, message):
    p = r.cli("sendmail", "-i", "-f", SENDER, rcpt, input=message, timeout=120)
    err = p.stderr.decode(errors="replace")
    assert_no_sanitizer_report(err, "sendmail")
    assert p.returncode == 0, (p.returncode, err)


# ------------------------------------------------------------------ the world
@pytest.fixture(scope="module")
def iworld(world_ca, stsrelay_bin, request):
    """Unbound, nginx and one Postfix with an MX per domain: enf, reuse,
    bulk and smuggle.test under an enforce policy (verified TLS), opp.test
    with a self-signed certificate and no policy (opportunistic TLS),
    plain.test without STARTTLS. The directory stays if a test failed."""
    d = tempfile.mkdtemp(prefix="stsrelay-integrity-")
    os.chmod(d, 0o755)
    failed = request.session.testsfailed
    w = World(d, world_ca)
    try:
        hosts = ["mx." + x for x in DOMAINS]
        w.pf = w.postfix(
            DOMAINS, hosts, tls={"mx.opp.test": world_ca.leaf(["mx.opp.test"], "selfsigned")},
            host_options={"mx.plain.test": {"smtpd_tls_security_level": "none"},
                          # Postfix's default, said here because the test depends on it
                          "mx.bulk.test": {"smtpd_recipient_limit": "1000"}})
        for dom in DOMAINS:
            w.mx(dom, ["mx." + dom])
        for dom in ENFORCED:
            w.sts(dom, "enforce", ["mx." + dom])
        w.bin = stsrelay_bin
        yield w
    finally:
        w.close()
        if request.session.testsfailed == failed:
            shutil.rmtree(d, ignore_errors=True)
        else:
            sys.stderr.write("\nintegrity world kept for debugging: %s\n" % d)


# ------------------------------------------------------------------ 1. the property
COMBOS = [("smtp", "enf.test"), ("sendmail", "enf.test"), ("smtp", "opp.test"),
          ("sendmail", "opp.test"), ("smtp", "plain.test"), ("sendmail", "plain.test")]
LARGE = [(30 << 20, "smtp", "enf.test"), (5 << 20, "sendmail", "opp.test"),
         (3 << 20, "smtp", "plain.test"), (2 << 20, "sendmail", "enf.test"),
         (1 << 20, "smtp", "opp.test"), (300_000, "sendmail", "plain.test"),
         (300_000, "smtp", "enf.test")]
EDGES = [0, 1, 2, 3, 17, 100, 998, 1000, 8191, 8192, 8193, 16383, 16384, 16385, 24576,
         32768, 65535, 65536, 65537, 131072]
REUSE = 6


def plan(rng):
    """[(size, via, domain)]: the large ones, the sizes around 8/16/64 KiB
    and random ones over the six paths, then REUSE for one connection."""
    out = list(LARGE)
    small = EDGES + [int(10 ** rng.uniform(1, 5.4)) for _ in range(12)]
    out += [(n, *COMBOS[j % len(COMBOS)]) for j, n in enumerate(small)]
    out += [(n, "smtp", "reuse.test") for n in [1, 16385, 65537, 5000,
                                                rng.randint(1, 200_000), 300_000]]
    return out


def test_every_byte_arrives(iworld):
    """At least 40 messages from 0 bytes to 30 MB (fixed seed) arrive at
    Postfix byte for byte as relay_normalise() says, each exactly once,
    with exactly one status=sent each in the relay's log; over verified TLS
    (enforce), opportunistic TLS, plaintext, and REUSE messages over one
    connection."""
    w, pf = iworld, iworld.pf
    rng = random.Random(SEED)
    r = w.relay({"max_connections_per_domain": 1}, env=SAN_ENV, binary=w.bin)
    msgs = []
    t0 = time.monotonic()

    def prepare(size, via, domain):
        i = len(msgs)
        rcpt = "m%02d@%s" % (i, domain)
        head = headers(i, rcpt)
        trace = relay_trace_len(via, rcpt, time.time())
        body, hits = make_body(rng, size, via, trace + len(head), rng.random() < 0.85)
        message = head + body
        stored = stored_form(message, via)
        # the CRs really sit at the ends of the relay's reads
        assert all(stored[t - trace] == 0x0D for t in hits), (i, size, via)
        m = {"i": i, "rcpt": rcpt, "via": via, "domain": domain, "size": size,
             "trace": trace, "hits": len(hits), "want": relay_normalise(message, via)}
        msgs.append(m)
        return m, message

    jobs = plan(rng)
    for size, via, domain in jobs[:-REUSE]:
        m, message = prepare(size, via, domain)
        if via == "smtp":
            submit_smtp(r, [m["rcpt"]], message)
        else:
            submit_sendmail(r, m["rcpt"], message)
    # back to back in one session: they queue up behind one connection
    batch = [prepare(*job) for job in jobs[-REUSE:]]
    with smtplib.SMTP(r.host, r.port, local_hostname=HELO, timeout=120) as s:
        for m, message in batch:
            submit_smtp(r, [m["rcpt"]], message, smtp=s)
    submitted = time.monotonic() - t0
    assert len(msgs) >= 40 and msgs[0]["size"] == 30 << 20
    assert sum(m["hits"] for m in msgs) > 3000   # CRs on read boundaries, all in all

    st = wait_sent(r, [m["rcpt"] for m in msgs], timeout=150)
    wait_until(lambda: all(len(mailbox(pf, d)) >= sum(m["domain"] == d for m in msgs)
                           for d in {m["domain"] for m in msgs}), 60,
               what="every message in Postfix's mailboxes")
    delivered = time.monotonic() - t0
    finish(r)   # nothing left to deliver twice after this

    boxes = {d: mailbox(pf, d) for d in {m["domain"] for m in msgs}}
    for d, box in boxes.items():
        want = sorted(m["rcpt"] for m in msgs if m["domain"] == d)
        assert sorted(box) == want and all(len(p) == 1 for p in box.values()), (d, box)
    for m in msgs:
        lines = st[m["rcpt"]]
        assert [s for s, _ in lines] == ["sent"], lines   # one delivery, no retry
        line = lines[0][1]
        with open(boxes[m["domain"]][m["rcpt"]][0], "rb") as f:
            raw = f.read()
        trace, got = split_trace(raw)
        want = m["want"].replace(b"\r\n", b"\n")   # Maildir stores LF line ends
        assert hashlib.sha256(got).digest() == hashlib.sha256(want).digest(), \
            "message %d (%d bytes, %s to %s): %s" % (
                m["i"], m["size"], m["via"], m["domain"], first_difference(got, want))
        assert len(relay_received(trace)) == m["trace"], (m["i"], trace)
        received = trace.decode(errors="replace")
        if m["domain"] == "plain.test":
            assert "tls=none" in line and "with ESMTPS" not in received, (line, received)
        elif m["domain"] == "opp.test":
            assert "tls=TLSv1.3 unverified" in line and "with ESMTPS" in received, line
            assert "sts=absent" in line, line
        else:
            assert "tls=TLSv1.3 verified" in line and "sts=enforce" in line, line
            assert "with ESMTPS" in received, received

    reuse = [m for m in msgs if m["domain"] == "reuse.test"]
    uses = sorted(int(x.group(1)) if x else 1 for x in (
        re.search(r", conn_use=(\d+), ", st[m["rcpt"]][0][1]) for m in reuse))
    assert uses == list(range(1, REUSE + 1)), uses
    sessions = postfix_sessions(pf, "mx.reuse.test", REUSE)
    assert [count(s["mail"]) for s in sessions] == [REUSE], sessions
    sys.stderr.write("\n%d messages, %.1f MB: submitted in %.1f s, delivered in %.1f s\n" % (
        len(msgs), sum(m["size"] for m in msgs) / 1e6, submitted, delivered))


# ------------------------------------------------------------------ 2. 1,000 recipients
def test_thousand_recipients_over_tls(iworld):
    """One message to 1,000 recipients of one domain under enforce: MAIL,
    1,000 RCPT and DATA go out pipelined (about 33 KB, more than two TLS
    records) and every recipient gets the message, once, byte for byte."""
    w, pf = iworld, iworld.pf
    rng = random.Random(SEED + 2)
    r = w.relay({}, env=SAN_ENV, binary=w.bin)
    rcpts = ["rcpt-%04d@bulk.test" % i for i in range(1000)]
    # 40 KB of random lines (their CRs are not aimed at read boundaries here)
    message = headers(1000, "undisclosed-recipients@bulk.test", "bulk") + \
        make_body(rng, 40_000, "smtp", 0, True)[0]
    t0 = time.monotonic()
    submit_smtp(r, rcpts, message)
    st = wait_sent(r, rcpts, timeout=120)
    wait_until(lambda: len(mailbox(pf, "bulk.test")) >= len(rcpts), 60,
               what="1,000 messages in the bulk.test mailbox")
    took = time.monotonic() - t0
    finish(r)
    box = mailbox(pf, "bulk.test")
    assert sorted(box) == rcpts and all(len(p) == 1 for p in box.values())
    assert all([s for s, _ in st[x]] == ["sent"] for x in rcpts)
    assert all("tls=TLSv1.3 verified" in st[x][0][1] for x in rcpts)
    want = hashlib.sha256(relay_normalise(message, "smtp").replace(b"\r\n", b"\n")).digest()
    for x in rcpts:
        with open(box[x][0], "rb") as f:
            assert hashlib.sha256(split_trace(f.read())[1]).digest() == want, x
    sessions = postfix_sessions(pf, "mx.bulk.test", 1)
    assert sum(count(s["rcpt"]) for s in sessions) == 1000, sessions
    assert all("/" not in s["rcpt"] for s in sessions), sessions   # "rcpt=999/1000": refused
    sys.stderr.write("\n1,000 recipients delivered in %.1f s over %d transaction(s)\n" % (
        took, sum(count(s["mail"]) for s in sessions)))


# ------------------------------------------------------------------ 3. smuggling
EVIL = b"evil@attacker.test"
FORGED = b"forged@smuggle.test"


def smuggling_body(prefix, blocks):
    """A body built so that the old TLS write cut would smuggle a forged
    transaction in at every 16 KiB boundary of the stored message: a lone
    "." line whose dot is the boundary's last octet (the client stuffs it
    to "..", and the old cut dropped exactly the 16,385th octet, the second
    dot), and right after the boundary "MAIL FROM/RCPT TO/DATA" and the
    forged message, up to the next boundary's dot line (its terminator).
    Every other line is plain text: no other octet changes in transit, so
    each 16 KiB of stored message became one 16,385-octet write."""
    inject = (b"\r\nMAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\nFrom: <%s>\r\nTo: <%s>\r\n"
              b"Subject: smuggled\r\n\r\nThis message was never given to the relay.\r\n" % (
                  EVIL, FORGED, EVIL, FORGED))
    out, pos = [], prefix

    def fill(to):
        nonlocal pos
        while pos < to:
            n = min(76, to - pos - 2)
            if to - pos - 2 - n == 1:   # no room is left for one octet only
                n -= 1
            out.append(b"y" * n + b"\r\n")
            pos += n + 2
        assert pos == to
    for k in range(1, blocks + 1):
        fill(RECORD * k - 1)
        out.append(b"." + inject)
        pos += 1 + len(inject)
    fill(pos + 1000)
    return b"".join(out)


def test_smuggling_attempt_stays_one_message(iworld):
    """The body that the old 16 KiB cut turned into forged transactions
    arrives as one message, byte for byte; Postfix saw one MAIL in the
    session and nothing for the forged recipient or from the forged sender."""
    w, pf = iworld, iworld.pf
    r = w.relay({}, env=SAN_ENV, binary=w.bin)
    rcpt = "victim@smuggle.test"
    head = headers(2000, rcpt, "smuggle")
    trace = relay_trace_len("smtp", rcpt, time.time())
    message = head + smuggling_body(trace + len(head), 6)
    stored = stored_form(message, "smtp")
    for k in range(1, 7):   # the layout the old cut needed, at every boundary
        o = RECORD * k - trace
        assert stored[o - 3:o + 12] == b"\r\n.\r\nMAIL FROM:", stored[o - 3:o + 12]
    submit_smtp(r, [rcpt], message)
    st = wait_sent(r, [rcpt], timeout=60)
    wait_until(lambda: mailbox(pf, "smuggle.test"), 30, what="the message at Postfix")
    sessions = postfix_sessions(pf, "mx.smuggle.test", 1)
    time.sleep(1)   # a forged message would be delivered right after the real one
    finish(r)
    box = mailbox(pf, "smuggle.test")
    assert list(box) == [rcpt] and len(box[rcpt]) == 1, box
    assert [s for s, _ in st[rcpt]] == ["sent"], st[rcpt]
    with open(box[rcpt][0], "rb") as f:
        trace_fields, got = split_trace(f.read())
    want = relay_normalise(message, "smtp").replace(b"\r\n", b"\n")
    assert got == want, first_difference(got, want)
    assert len(relay_received(trace_fields)) == trace
    assert [(count(s["mail"]), count(s["rcpt"]), count(s["data"])) for s in sessions] == \
        [(1, 1, 1)], sessions
    assert "from=<%s>" % EVIL.decode() not in pf.log()


# ------------------------------------------------------------------ 4. one record per reply
def test_pipelined_replies_as_records_need_no_timer(iworld):
    """An MX that holds its replies to MAIL, 200 RCPT and DATA and then
    sends them back to back as 202 TLS records, corked into few segments:
    the relay decrypts every record its read brought and delivers at once,
    not after a stage timer (120 s here, so waiting for one would show)."""
    w = iworld
    fm = w.fake_mx("mx.burst.test", {"burst": True})
    w.mx("burst.test", ["mx.burst.test"])
    env = dict(SAN_ENV, STSRELAY_SMTP_TIMEOUT="120")
    r = w.relay({}, env=env, binary=w.bin)
    rcpts = ["r%03d@burst.test" % i for i in range(200)]
    message = headers(3000, "list@burst.test", "burst") + b"two hundred recipients\r\n"
    t0 = time.monotonic()
    submit_smtp(r, rcpts, message)
    st = wait_sent(r, rcpts, timeout=60)
    took = time.monotonic() - t0
    finish(r)
    assert took < 20, "took %.1f s: a timer, not the records, moved the session" % took
    assert all([s for s, _ in st[x]] == ["sent"] for x in rcpts)
    sess = [s for s in fm.sessions if s.messages]
    assert len(sess) == 1 and sess[0].tls, fm.sessions
    assert sess[0].bursts == [202], sess[0].bursts   # MAIL, 200 RCPT, DATA
    env_ = sess[0].messages[0]
    assert env_.rcpts == rcpts and env_.tls
    trace, got = split_trace(env_.data.replace(b"\r\n", b"\n"))
    assert got == relay_normalise(message, "smtp").replace(b"\r\n", b"\n")
    assert len(relay_received(trace)) > 0


# ------------------------------------------------------------------ 5. the listener's decoder
def decoder_text(rng, size):
    """Random DATA text of about `size` octets, dense in what the decoder
    (relay/daemon/smtpd.c data_feed()) treats specially: CR, LF, dots at
    line starts, CR LF pairs cut by a bare CR, runs of ordinary octets
    (8-bit and NUL included) from 1 octet to 3 KiB. Never holds the
    terminator CRLF "." CRLF (nor starts with ".\\r\\n")."""
    pieces, n = [], 0
    specials = [b"\r", b"\n", b"\r\n", b".", b"..", b"\r\n.", b"\n.", b"\r.", b".\r", b".\n",
                b"\r\r\n", b"\n\r", b"\r\n..\r\n", b"\n.\n", b"\n.\r\n", b".\rx"]
    while n < size:
        r = rng.random()
        if r < 0.5:
            p = rng.choice(specials)
        elif r < 0.8:
            p = rng.randbytes(rng.randint(1, 40)).translate(PRINTABLE)
        elif r < 0.95:
            p = rng.randbytes(rng.randint(41, 3000)).translate(NO_CRLF)
        else:
            p = rng.randbytes(rng.randint(1, 20))  # raw: any octet
        pieces.append(p)
        n += len(p)
    t = b"".join(pieces)
    while b"\r\n.\r\n" in t:
        t = t.replace(b"\r\n.\r\n", b"\r\n.x\r\n")
    if t.startswith(b".\r\n"):
        t = b"x" + t
    return t


def test_listener_decoder_matches_model(tmp_path, stsrelay_bin):
    """What the listener stores for random DATA text full of CR, LF and
    dots, sent in random cuts (so the decoder's reads end anywhere: inside
    a CRLF, after a dot, inside a run of ordinary octets), is exactly
    listener_stored() of it, for 30 messages from 1 octet to 300 KB
    (fixed seed), the queue file compared octet for octet."""
    rng = random.Random(SEED + 5)
    d = Daemon(tmp_path, env=SAN_ENV).start()
    try:
        sizes = [1, 2, 3, 5, 100, 16383, 16384, 16385, 65536, 65537, 300_000] + \
            [int(10 ** rng.uniform(0, 5.3)) for _ in range(19)]
        for i, size in enumerate(sizes):
            text = decoder_text(rng, size) + b"\r\n"
            c = d.connect()
            try:
                c.open_data("client.test", SENDER, ["decoder%d@example.invalid" % i])
                wire = text + b".\r\n"
                j = 0
                while j < len(wire):   # random cuts; TCP may merge some of them
                    k = min(len(wire), j + rng.choice([1, 2, 3, 7, 100, 1500, 16384, 70000]))
                    c.send(wire[j:k])
                    j = k
                code, reply = c.reply()
                assert code == 250, reply
                qid = re.search(r"queued as ([0-9A-F]{12})", reply).group(1)
                assert c.cmd("QUIT")[0] == 221
            finally:
                c.close()
            got = split_received(d.queue_file(qid)[2])[1]
            want = listener_stored(text)
            assert got == want, (size, first_difference(got, want))
    finally:
        rc = d.stop()
        assert_no_sanitizer_report(d.log())
        assert rc == 0, d.log()[-3000:]


# ------------------------------------------------------------------ 6. a slow disk
SLOW_MS = 400   # each read of message data (tests/integration/slowread.c)
READAHEAD = 65536  # the delivery's reads (relay/daemon/readahead.h READAHEAD_CHUNK)


def test_slow_disk_leaves_the_listener_free(iworld, tmp_path):
    """With a disk that takes SLOW_MS for every read of message data, a
    1 MB message still arrives byte for byte, and the listener answers a
    NOOP every 50 ms meanwhile in well under SLOW_MS (all but at most two,
    for a busy machine): delivery reads the
    queue file in the thread pool, never on the loop (a read there would
    hold every session for SLOW_MS). The delivery's own time shows that the
    disk really was slow."""
    lib = os.environ.get("STSRELAY_SLOWREAD")
    if not lib:
        pytest.skip("STSRELAY_SLOWREAD not set (ctest sets it)")
    w, pf = iworld, iworld.pf
    spool = os.path.realpath(str(tmp_path)) + "/spool"
    env = dict(SAN_ENV, LD_PRELOAD=lib, SLOWREAD_DIR=spool + "/queue/",
               SLOWREAD_MS=str(SLOW_MS))
    r = w.relay({"spool_dir": spool}, env=env, binary=w.bin)
    rng = random.Random(SEED + 6)
    rcpt = "slow@enf.test"
    message = headers(6000, rcpt, "slow disk") + make_body(
        rng, 1 << 20, "smtp", 0, False)[0]
    lat = []
    with RawSMTP(r.host, r.port, 30) as probe:
        assert probe.reply()[0] == 220
        assert probe.cmd("EHLO probe.world.test")[0] == 250
        t0 = time.monotonic()
        submit_smtp(r, [rcpt], message)
        deadline = t0 + 120
        while time.monotonic() < deadline:
            a = time.monotonic()
            assert probe.cmd("NOOP")[0] == 250
            lat.append(time.monotonic() - a)
            if any(s == "sent" for s, _ in statuses(r).get(rcpt, ())):
                break
            time.sleep(0.05)
        took = time.monotonic() - t0
        probe.cmd("QUIT")
    st = wait_sent(r, [rcpt], timeout=5)
    finish(r)
    reads = (1 << 20) // READAHEAD
    assert took >= reads * SLOW_MS / 1000 * 0.8, "took %.1f s: was the disk slow?" % took
    # a read on the loop would hold every NOOP; a busy machine may hold one
    slow = [x for x in lat if x >= SLOW_MS / 1000 / 2]
    assert len(lat) >= 40, lat
    assert len(slow) <= 2, "%d of %d NOOPs took %.3f s or more: %s" % (
        len(slow), len(lat), SLOW_MS / 1000 / 2, sorted(lat)[-10:])
    assert [s for s, _ in st[rcpt]] == ["sent"], st[rcpt]
    box = mailbox(pf, "enf.test")
    assert len(box.get(rcpt, [])) == 1, box
    with open(box[rcpt][0], "rb") as f:
        got = split_trace(f.read())[1]
    want = relay_normalise(message, "smtp").replace(b"\r\n", b"\n")
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(want).hexdigest(), \
        first_difference(got, want)
