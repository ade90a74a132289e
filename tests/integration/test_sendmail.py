# The sendmail front end without a daemon: flags, -t address extraction,
# header handling, exit codes, -bs, and submission by a non-root user.
import grp
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from serve_helpers import TEST_USER, ensure_test_user, parse_queue_file, sendmail_from_file

BIN = os.environ.get("STSRELAY_BIN", "stsrelay")
SRC = os.environ.get("STSRELAY_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
TIMEOUT = 60

MESSAGE = (
    b"From: Alice Example <alice@example.org>\n"
    b'To: "Smith, Bob" <bob@example.com>,\n'
    b"  carol@example.net (Carol C.),\n"
    b"\tDan <dan@example.net>\n"
    b"Cc: undisclosed-recipients:;, =?UTF-8?Q?Ev=C3=A9?= <eve@example.com>\n"
    b"Bcc: Secret Person <secret@example.com>\n"
    b"Subject: quarterly numbers\n"
    b"Date: Mon, 23 Nov 2026 10:00:00 +0000\n"
    b"Message-ID: <fixed-1@example.org>\n"
    b"\n"
    b"Hello all,\n"
    b".\n"
    b"..a line with two dots\n"
    b"last line without newline"
)
EXPECTED_RCPTS = {"bob@example.com", "carol@example.net", "dan@example.net",
                  "eve@example.com", "secret@example.com"}


@pytest.fixture
def world():
    """A spool directory and a config file, both reachable by any user."""
    d = tempfile.mkdtemp(prefix="stsrelay-sendmail-")
    os.chmod(d, 0o755)
    conf = os.path.join(d, "stsrelay.conf")
    spool = os.path.join(d, "spool")
    write_conf(conf, spool)
    yield {"dir": d, "conf": conf, "spool": spool}
    shutil.rmtree(d, ignore_errors=True)


def write_conf(path, spool, extra=""):
    with open(path, "w") as f:
        f.write("spool_dir = %s\nhostname = relay.test\nlisten = 127.0.0.1:2599\n%s"
                % (spool, extra))
    os.chmod(path, 0o644)


def sendmail(world, args, data=b"", prog=None, user=None):
    """Runs `stsrelay sendmail`, or prog when it is a link named sendmail."""
    prog = prog or BIN
    cmd = [prog]
    if os.path.basename(prog) != "sendmail":
        cmd.append("sendmail")
    cmd += ["-C", world["conf"]] + args
    if user is not None:
        cmd = ["runuser", "-u", user, "--"] + cmd
    return subprocess.run(cmd, input=data, capture_output=True, timeout=TIMEOUT)


def drop_files(spool, complete=True):
    d = os.path.join(spool, "maildrop")
    if not os.path.isdir(d):
        return []
    names = sorted(os.listdir(d))
    return [n for n in names if not n.startswith(".")] if complete else names


def only_drop(world):
    files = drop_files(world["spool"])
    assert len(files) == 1, files
    return parse_queue_file(os.path.join(world["spool"], "maildrop", files[0]))


def header_block(data):
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep
    return head + b"\r\n", body


def test_t_i_real_message_without_daemon(world):
    r = sendmail_from_file(world, MESSAGE, ["-t", "-i"], TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert r.stderr == b""
    fields, rcpts, data = only_drop(world)
    assert set(rcpts) == EXPECTED_RCPTS
    assert len(rcpts) == len(EXPECTED_RCPTS)
    assert fields["sender"] == "root@relay.test"
    assert fields["submitter"] == "root"
    # CRLF everywhere, no bare LF.
    assert b"\n" not in data.replace(b"\r\n", b"")
    head, body = header_block(data)
    assert b"Bcc" not in head and b"secret@" not in data
    assert head.startswith(b"Received: by relay.test (stsrelay, from userid 0);\r\n\t")
    # The user's headers are kept as written (folded To included), and the
    # message already had From, Date and Message-ID: none added.
    assert (b'To: "Smith, Bob" <bob@example.com>,\r\n  carol@example.net (Carol C.),\r\n'
            b"\tDan <dan@example.net>\r\n") in head
    assert head.count(b"\r\nFrom:") == 1 and head.count(b"\r\nDate:") == 1
    assert head.count(b"Message-ID:") == 1
    # -i: the lone dot is data; stored dot-unstuffed as sent, no final dot.
    assert body == (b"Hello all,\r\n.\r\n..a line with two dots\r\n"
                    b"last line without newline\r\n")


def test_argv0_sendmail_link_and_command_line_recipients(world):
    link = os.path.join(world["dir"], "sendmail")
    os.symlink(os.path.abspath(BIN), link)
    # a local user name goes to alias_root (test_alias_root.py has the rest)
    write_conf(world["conf"], world["spool"], "alias_root = admin@example.org\n")
    r = sendmail(world, ["-i", "x@example.com", "Y <y@example.com>, z@example.com", "local"],
                 b"Subject: hi\n\nbody\n", prog=link)
    assert r.returncode == 0, r.stderr
    fields, rcpts, data = only_drop(world)
    assert rcpts == ["x@example.com", "y@example.com", "z@example.com", "admin@example.org"]
    head, body = header_block(data)
    # Missing From/Date/Message-ID are added for a local submission.
    assert re.search(rb"\r\nFrom: [^\r\n]*<?root@relay\.test>?\r\n", head)
    assert re.search(rb"\r\nDate: \w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d \+0000\r\n", head)
    assert re.search(rb"\r\nMessage-ID: <\d{14}\.[0-9A-F]{12}@relay\.test>\r\n", head)
    assert body == b"body\r\n"


def test_lone_dot_ends_input_without_i(world):
    r = sendmail(world, ["a@example.com"], b"Subject: s\n\none\n.\nnot part of it\n")
    assert r.returncode == 0, r.stderr
    _, _, data = only_drop(world)
    assert header_block(data)[1] == b"one\r\n"


@pytest.mark.parametrize("args,sender", [
    (["-f", "me@example.org"], "me@example.org"),
    (["-fme@example.org"], "me@example.org"),
    (["-r", "<me@example.org>"], "me@example.org"),
    (["-f", "<>"], ""),
    (["-f", "someone"], "someone@relay.test"),
    (["-oi", "-odb", "-oem", "-v", "-bm", "-F", "Full Name", "-f", "s@example.org"],
     "s@example.org"),
    (["-ti", "-N", "never", "-B", "8BITMIME", "-U", "-fx@example.org"], "x@example.org"),
])
def test_flags_accepted(world, args, sender):
    r = sendmail(world, args + ["--", "to@example.com"], b"To: to@example.com\n\nb\n")
    assert r.returncode == 0, r.stderr
    fields, rcpts, _ = only_drop(world)
    assert fields["sender"] == sender
    assert rcpts == ["to@example.com"]


@pytest.mark.parametrize("args", [["-Q", "a@example.com"], ["-bd", "a@example.com"],
                                  ["-bv", "a@example.com"], ["-q", "a@example.com"],
                                  ["-f"]])
def test_bad_flags_are_usage_errors(world, args):
    r = sendmail(world, args, b"x\n")
    assert r.returncode == 64, r.stderr
    assert r.stderr.startswith(b"sendmail: ")
    assert drop_files(world["spool"], complete=False) == []


def test_no_recipients(world):
    r = sendmail(world, [], b"Subject: s\n\nb\n")
    assert r.returncode == 65 and b"no recipients" in r.stderr
    r = sendmail(world, ["-t"], b"To: undisclosed-recipients:;\nSubject: s\n\nb\n")
    assert r.returncode == 65 and b"no recipients" in r.stderr
    assert drop_files(world["spool"], complete=False) == []


@pytest.mark.parametrize("to,bad", [
    (b"john smith@example.com", b"john smith@example.com"),
    (b"<a@example.com> trailing", b"a@example.com"),
    (b"a@@example.com", b"a@@example.com"),
    (b'"unterminated <a@example.com>', b"unterminated"),
    (b"x" * 600 + b"@example.com", b"address too long"),
])
def test_invalid_address_is_named(world, to, bad):
    r = sendmail(world, ["-t"], b"To: " + to + b"\n\nb\n")
    assert r.returncode == 65, r.stderr
    assert bad in r.stderr
    assert drop_files(world["spool"], complete=False) == []


def test_message_too_large(world):
    write_conf(world["conf"], world["spool"], "max_message_size = 2000\n")
    r = sendmail(world, ["a@example.com"], b"Subject: big\n\n" + (b"y" * 80 + b"\n") * 30)
    assert r.returncode == 65 and b"message too large" in r.stderr, r.stderr
    assert drop_files(world["spool"], complete=False) == []
    r = sendmail(world, ["a@example.com"], b"Subject: small\n\nfits\n")
    assert r.returncode == 0, r.stderr


def test_long_lines_are_broken_not_lost(world):
    line = bytes(ord("a") + i % 26 for i in range(3000))
    r = sendmail(world, ["a@example.com"], b"Subject: long\n\n" + line + b"\nend\n")
    assert r.returncode == 0, r.stderr
    _, _, data = only_drop(world)
    assert all(len(x) <= 998 for x in data.split(b"\r\n"))
    body = header_block(data)[1]
    # Broken with CRLF SPACE, like Postfix's smtp_line_length_limit.
    assert body.replace(b"\r\n ", b"") == line + b"\r\nend\r\n"


def test_full_name_cannot_inject_headers(world):
    r = sendmail(world, ["-F", "Evil\r\nBcc: x@example.com", "a@example.com"], b"\nbody\n")
    assert r.returncode == 0, r.stderr
    _, rcpts, data = only_drop(world)
    assert rcpts == ["a@example.com"]
    head, _ = header_block(data)
    assert b"\r\nFrom: EvilBcc: x@example.com <root@relay.test>\r\n" not in head
    assert re.search(rb"\r\nFrom: \"EvilBcc: x@example.com\" <root@relay\.test>\r\n", head), head


def test_non_ascii_full_name_is_encoded(world):
    r = sendmail(world, ["-F", "J\u00f6rg M\u00fcller", "a@example.com"], b"\nbody\n")
    assert r.returncode == 0, r.stderr
    _, _, data = only_drop(world)
    assert b"\r\nFrom: =?UTF-8?B?SsO2cmcgTcO8bGxlcg==?= <root@relay.test>\r\n" in data


def test_bs_smtp_dialogue(world):
    dialogue = (b"EHLO client.test\r\n"
                b"RCPT TO:<early@example.com>\r\n"
                b"MAIL FROM:<sender@example.org> SIZE=999999999\r\n"
                b"MAIL FROM:<sender@example.org>\r\n"
                b"DATA\r\n"
                b"RCPT TO:<r1@example.com>\r\n"
                b"RCPT TO:<bad address>\r\n"
                b"RCPT TO:<r2@example.com>\r\n"
                b"DATA\r\n"
                b"Subject: via -bs\r\n\r\n..stuffed\r\nplain\r\n.\r\n"
                b"NOOP\r\n"
                b"QUIT\r\n")
    r = sendmail(world, ["-bs"], dialogue)
    assert r.returncode == 0, r.stderr
    codes = [line[:3] for line in r.stdout.split(b"\r\n") if line and line[3:4] == b" "]
    assert codes == [b"220", b"250", b"503", b"552", b"250", b"554", b"250", b"501", b"250",
                     b"354", b"250", b"250", b"221"], r.stdout
    m = re.search(rb"250 2\.0\.0 Ok: queued as ([0-9A-F]{12})", r.stdout)
    assert m
    fields, rcpts, data = only_drop(world)
    assert fields["id"] == m.group(1).decode()
    assert fields["sender"] == "sender@example.org"
    assert rcpts == ["r1@example.com", "r2@example.com"]
    assert header_block(data)[1] == b".stuffed\r\nplain\r\n"


def test_bs_input_cut_short_queues_nothing(world):
    r = sendmail(world, ["-bs"], b"HELO c\r\nMAIL FROM:<a@example.org>\r\n"
                                  b"RCPT TO:<b@example.com>\r\nDATA\r\nSubject: x\r\n\r\npartial")
    assert r.returncode != 0
    assert drop_files(world["spool"], complete=False) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a user and a setgid binary")
def test_non_root_user_submits_through_setgid_binary(world):
    user = ensure_test_user()
    # The spool is made by root (the daemon, or root's first sendmail).
    r = sendmail(world, ["-i", "first@example.com"], b"Subject: root\n\nx\n")
    assert r.returncode == 0, r.stderr
    bindir = os.path.join(world["dir"], "bin")
    os.mkdir(bindir, 0o755)
    binary = os.path.join(bindir, "stsrelay")
    shutil.copy(BIN, binary)
    perms = os.path.join(SRC, "scripts", "install-perms")
    subprocess.run([perms, binary, world["spool"]], check=True, timeout=TIMEOUT)
    st = os.stat(binary)
    drop_gid = grp.getgrnam("stsrelay-drop").gr_gid
    assert st.st_gid == drop_gid and st.st_mode & 0o2000
    md = os.stat(os.path.join(world["spool"], "maildrop"))
    assert md.st_gid == drop_gid and (md.st_mode & 0o7777) == 0o1730

    before = set(drop_files(world["spool"]))
    r = sendmail(world, ["-t", "-i"], MESSAGE, prog=binary, user=TEST_USER)
    assert r.returncode == 0, r.stderr
    new = set(drop_files(world["spool"])) - before
    assert len(new) == 1
    path = os.path.join(world["spool"], "maildrop", new.pop())
    assert os.stat(path).st_uid == user.pw_uid
    fields, rcpts, data = parse_queue_file(path)
    assert fields["sender"] == TEST_USER + "@relay.test"
    assert fields["submitter"] == TEST_USER
    assert set(rcpts) == EXPECTED_RCPTS
    assert b"from userid %d" % user.pw_uid in data

    # Without the setgid bit the same user cannot write into maildrop/.
    plain = os.path.join(bindir, "stsrelay-plain")
    shutil.copy(BIN, plain)
    os.chmod(plain, 0o755)
    r = sendmail(world, ["-i", "a@example.com"], b"x\n", prog=plain, user=TEST_USER)
    # a permission problem: 77, not a temporary failure
    assert r.returncode == 77, (r.returncode, r.stderr)
    assert r.stderr.startswith(b"sendmail: ") and b"Permission denied" in r.stderr

    # The group is not usable to read files named by the user: a config
    # file only the group could read is refused.
    secret = os.path.join(world["dir"], "group-only.conf")
    write_conf(secret, world["spool"])
    os.chown(secret, 0, drop_gid)
    os.chmod(secret, 0o640)
    r = subprocess.run(["runuser", "-u", TEST_USER, "--", binary, "sendmail", "-C", secret,
                        "a@example.com"], input=b"x\n", capture_output=True, timeout=TIMEOUT)
    assert r.returncode == 78, r.stderr
    # Other subcommands give the group up at once: the same config is
    # unreadable to them, and the queue (root's) stays closed.
    for args in (["queue", "list", "-c", secret], ["mailq", "-c", secret]):
        r = subprocess.run(["runuser", "-u", TEST_USER, "--", binary] + args,
                           capture_output=True, timeout=TIMEOUT)
        assert r.returncode == 78, (args, r.stderr)
    r = subprocess.run(["runuser", "-u", TEST_USER, "--", binary, "queue", "list", "-c",
                        world["conf"]], capture_output=True, timeout=TIMEOUT)
    # without a daemon to ask (mailq for other users goes through it)
    assert r.returncode == 69 and b"readable only by root and the daemon's user" in r.stderr, \
        r.stderr
    assert b"Sanitizer" not in r.stderr


STRACE_CALLS = "sync,syncfs,fsync,fdatasync,rename,renameat,renameat2"


def strace_sendmail(world, data, user=None, group=None):
    """Runs sendmail under strace, as root or as user with group as its only
    supplementary group. (Not through the setgid copy: a set-id process
    cannot read its own environment, so the sanitizer build could not be
    told that LeakSanitizer cannot run under ptrace. The group gives the
    same rights in maildrop/: create, not read.) Returns (CompletedProcess,
    traced lines without pids)."""
    out = os.path.join(world["dir"], "strace.out")
    cmd = ["strace", "-f", "-qq", "-y", "-s", "4096", "-o", out, "-e", "trace=" + STRACE_CALLS]
    if user is not None:
        cmd += ["setpriv", "--reuid", user, "--regid", user, "--groups", str(group), "--"]
    cmd += [BIN, "sendmail", "-C", world["conf"], "-i", "a@example.com"]
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":detect_leaks=0"
    r = subprocess.run(cmd, input=data, capture_output=True, timeout=TIMEOUT, env=env)
    with open(out) as f:
        lines = [l.split(None, 1)[1] if l[:1].isdigit() else l for l in f.read().splitlines()]
    os.unlink(out)
    return r, lines


def drop_durability(lines, maildrop, qid):
    """Checks the durable-drop syscalls of one sendmail run: never sync()
    or syncfs(), the file fsynced before its rename to maildrop/QID, and
    something fsynced after it. Returns the fds' paths fsynced after."""
    assert not [l for l in lines if re.match(r"(sync|syncfs)\(", l)], lines
    renames = [i for i, l in enumerate(lines)
               if l.startswith("renameat2(") and ('<%s>, ".%s", ' % (maildrop, qid)) in l
               and ('<%s>, "%s", ' % (maildrop, qid)) in l]
    assert len(renames) == 1, lines
    before = [l for l in lines[:renames[0]] if l.startswith("fsync(")]
    assert any(("%s/.%s>" % (maildrop, qid)) in l for l in before), lines
    after = re.findall(r"^fsync\(\d+<([^>]*)>\) = 0$", "\n".join(lines[renames[0] + 1:]), re.M)
    assert after, lines
    return after


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for strace and setpriv")
def test_drop_is_durable_without_global_sync(world):
    """sendmail never calls sync() or syncfs(): root fsyncs maildrop/ after
    the rename; a user who cannot read maildrop/ (mode 1730) fsyncs the
    file again after its rename (queue/spool.c explains why that commits
    the rename), and exits 0 only after that."""
    user = ensure_test_user()
    r, lines = strace_sendmail(world, b"Subject: root\n\nx\n")
    assert r.returncode == 0, r.stderr
    maildrop = os.path.realpath(os.path.join(world["spool"], "maildrop"))
    qid = drop_files(world["spool"])[0]
    assert drop_durability(lines, maildrop, qid) == [maildrop]

    # the spool as installed: maildrop/ 1730 root:stsrelay-drop (the
    # script also makes the binary it is given setgid: a throwaway copy)
    scratch = os.path.join(world["dir"], "stsrelay-perms")
    shutil.copy(BIN, scratch)
    subprocess.run([os.path.join(SRC, "scripts", "install-perms"), scratch, world["spool"]],
                   check=True, timeout=TIMEOUT)
    drop_gid = grp.getgrnam("stsrelay-drop").gr_gid
    before = set(drop_files(world["spool"]))
    r, lines = strace_sendmail(world, b"Subject: user\n\ny\n", TEST_USER, drop_gid)
    assert r.returncode == 0, r.stderr
    new = set(drop_files(world["spool"])) - before
    assert len(new) == 1
    qid = new.pop()
    assert os.stat(os.path.join(maildrop, qid)).st_uid == user.pw_uid
    assert drop_durability(lines, maildrop, qid) == ["%s/%s" % (maildrop, qid)]


def test_hostile_address_headers_never_crash(world):
    """Bounded random garbage in To/Cc/Bcc: a clean accept, EX_DATAERR, or
    EX_NOUSER for a name without a domain (no alias_root here), never a
    crash (the binary runs under ASan/UBSan in scripts/test)."""
    import random
    rnd = random.Random(8461)
    alphabet = b'abc@.,;:<>()"\\ \t\r\n=?!x' + bytes(range(0x80, 0x84))
    for _ in range(60):
        value = bytes(rnd.choice(alphabet) for _ in range(rnd.randrange(0, 300)))
        value = value.replace(b"\r\n\r\n", b"\r\n ").replace(b"\n\n", b"\n ")
        value = value.replace(b"\n", b"\n ")
        msg = b"To: " + value + b"\nCc: <ok@example.com>\nBcc: " + value[::-1] + b"\n\nbody\n"
        r = sendmail(world, ["-t", "-i"], msg)
        assert r.returncode in (0, 65, 67), (value, r.returncode, r.stderr)
        assert r.returncode != 67 or b"no alias_root" in r.stderr, r.stderr
        assert b"Sanitizer" not in r.stderr and b"runtime error" not in r.stderr


def test_two_angle_addresses_are_refused(world):
    r = sendmail(world, ["-t"], b"To: A <a@example.com> <b@example.com>\n\nb\n")
    assert r.returncode == 65 and b"two <addresses>" in r.stderr


@pytest.mark.parametrize("args,to", [
    (["-t"], b'"a>b"@example.com'),
    (["-t"], b'Someone <"a<b"@example.com>'),
    (['"x>y"@example.com'], None),
])
def test_address_the_client_cannot_send_is_refused(world, args, to):
    """The same rule as the listener and the outbound client
    (smtp_address_sendable): refused at submission, not failed later with
    every other recipient of its domain."""
    data = (b"To: " + to + b"\n" if to else b"") + b"Subject: s\n\nb\n"
    r = sendmail(world, args + ["ok@example.com"] if to else args, data)
    assert r.returncode == 65, r.stderr
    assert b"@example.com" in r.stderr and (b"<" in r.stderr or b">" in r.stderr), r.stderr
    assert drop_files(world["spool"], complete=False) == []
    r = sendmail(world, ["-f", '"x<y"@example.org', "ok@example.com"], b"\nb\n")
    assert r.returncode == 65 and b"invalid sender address" in r.stderr, r.stderr
    assert drop_files(world["spool"], complete=False) == []


def test_bs_refuses_unsendable_rcpt(world):
    r = sendmail(world, ["-bs"], b"EHLO c.test\r\nMAIL FROM:<s@example.org>\r\n"
                                  b"RCPT TO:<\"a>b\"@example.com>\r\nQUIT\r\n")
    assert b"\r\n501 5.1.3 Bad recipient address syntax\r\n" in r.stdout, r.stdout


@pytest.mark.parametrize("body,flags", [
    (b"plain ascii only\n", "0"),
    (b"caf\xc3\xa9 in UTF-8\n", "4"),
    (b"latin-1 \xe9\n", "4"),
])
def test_8bit_stdin_marks_the_message(world, body, flags):
    """Raw stdin with a byte >= 0x80 is an 8-bit message (QUEUE_F_8BITMIME
    in the drop file's header): delivery sends BODY=8BITMIME for it."""
    r = sendmail(world, ["a@example.com"], b"Subject: s\n\n" + body)
    assert r.returncode == 0, r.stderr
    fields, _, data = only_drop(world)
    assert fields["flags"] == flags
    assert data.endswith(body.replace(b"\n", b"\r\n"))
