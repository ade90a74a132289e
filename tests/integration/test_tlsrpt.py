# TLS-RPT end to end: a recorded day of mixed traffic -> `stsrelay tlsrpt
# send` -> report mail in the queue (and, by the daemon, in Postfix) and an HTTPS upload.
#
# What this covers: sessions enter through the recording API via the hidden
# `tlsrpt record` helper (the same tlsrpt_record() the delivery engine calls),
# then discovery of _smtp._tls in the world's Unbound, report building, gzip,
# the multipart/report mail in the relay's queue, its delivery by the relay
# daemon to Postfix, DKIM (checked with dkimpy), the HTTPS POST to a receiver
# behind the test CA, the sent ledger (a second send sends nothing), the
# retention pruning and time injection with STSRELAY_FAKE_NOW. The daily
# timer inside the daemon is not exercised here.
import base64
import email
import email.policy
import gzip
import http.server
import json
import os
import ssl
import subprocess
import threading

import pytest

from tests.world import free_port

DAY = "2026-06-18"
DAY_START = 1781740800                   # 2026-06-18T00:00:00Z
NOW = DAY_START + 86400 + 1800           # 2026-06-19T00:30:00Z: D+1, before send_at+spread
VECTORS = os.path.join(os.environ.get("STSRELAY_SRC", "."), "..", "shared", "vectors",
                       "stalwart-mail-auth-tlsrpt")
POLICY_A = "version: STSv1\nmode: enforce\nmx: mx1.a.test\nmx: mx2.a.test\nmax_age: 86400\n"


def cli(relay, *args, input=None, now=NOW):
    p = relay.cli(*args, input=input, env={"STSRELAY_FAKE_NOW": str(now)})
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def record(relay, tmp_path, domain, result, count=1, policy=None, mx=None, mx_ip=None,
           when=DAY_START + 3600, sts_published=False, reason=None):
    args = ["tlsrpt", "record", "--domain", domain, "--result", result, "--count", count,
            "--sending-ip", "127.0.0.1", "--when", when]
    if policy:
        pf = tmp_path / ("policy-%s.txt" % domain)
        pf.write_text(policy)
        args += ["--policy-file", str(pf)]
    if mx:
        args += ["--mx", mx]
    if mx_ip:
        args += ["--mx-ip", mx_ip]
    if reason:
        args += ["--reason", reason]
    if sts_published:
        args += ["--sts-published"]
    rc, out, err = cli(relay, *args)
    assert rc == 0, err


def mixed_day(relay, tmp_path):
    """a.test: enforce policy, two MX, every negotiation failure type."""
    record(relay, tmp_path, "a.test", "success", 5, POLICY_A, "mx1.a.test", "127.0.1.1")
    record(relay, tmp_path, "a.test", "success", 3, POLICY_A, "mx2.a.test", "127.0.1.2")
    for i, rt in enumerate(["starttls-not-supported", "certificate-host-mismatch",
                            "certificate-expired", "certificate-not-trusted",
                            "validation-failure"]):
        record(relay, tmp_path, "a.test", rt, i + 1, POLICY_A, "mx2.a.test", "127.0.1.2",
               reason="tls alert 70" if rt == "validation-failure" else None)
    record(relay, tmp_path, "a.test", "sts-policy-fetch-error", 2, sts_published=True)
    # a domain without _smtp._tls: recorded, never sent
    record(relay, tmp_path, "quiet.test", "success", 4, mx="mx.quiet.test", mx_ip="127.0.2.1")


def check_report(rep, relay_contact="tlsrpt@relay.world.test"):
    assert rep["organization-name"] == "Relay Org"
    assert rep["contact-info"] == relay_contact
    assert rep["date-range"] == {"start-datetime": "2026-06-18T00:00:00Z",
                                 "end-datetime": "2026-06-18T23:59:59Z"}
    assert rep["report-id"] == "2026-06-18.a.test@relay.world.test"
    pols = {(p["policy"]["policy-type"], "policy-string" in p["policy"]): p
            for p in rep["policies"]}
    assert len(pols) == 2
    sts = pols[("sts", True)]
    assert sts["policy"] == {"policy-type": "sts",
                             "policy-string": ["version: STSv1", "mode: enforce",
                                               "mx: mx1.a.test", "mx: mx2.a.test",
                                               "max_age: 86400"],
                             "policy-domain": "a.test", "mx-host": ["mx1.a.test", "mx2.a.test"]}
    assert sts["summary"] == {"total-successful-session-count": 8,
                              "total-failure-session-count": 15}
    got = {d["result-type"]: d for d in sts["failure-details"]}
    assert {k: v["failed-session-count"] for k, v in got.items()} == {
        "starttls-not-supported": 1, "certificate-host-mismatch": 2, "certificate-expired": 3,
        "certificate-not-trusted": 4, "validation-failure": 5}
    for d in got.values():
        assert d["sending-mta-ip"] == "127.0.0.1"
        assert d["receiving-mx-hostname"] == "mx2.a.test"
        assert d["receiving-ip"] == "127.0.1.2"
    assert got["validation-failure"]["failure-reason-code"] == "tls alert 70"
    nopol = pols[("sts", False)]
    assert nopol["summary"] == {"total-successful-session-count": 0,
                                "total-failure-session-count": 2}
    assert nopol["failure-details"] == [{"result-type": "sts-policy-fetch-error",
                                         "sending-mta-ip": "127.0.0.1",
                                         "failed-session-count": 2}]


def validate(relay, data, lenient=False):
    args = ["tlsrpt", "validate", "-"] + (["--lenient"] if lenient else [])
    p = relay.cli(*args, input=data)
    return p.returncode, p.stdout.decode()


def report_part(msg):
    """The application/tlsrpt(+gzip) part of a report mail -> report bytes."""
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "tlsrpt"
    parts = msg.get_payload()
    assert parts[0].get_content_type() == "text/plain"
    att = parts[1]
    data = att.get_payload(decode=True)
    if att.get_content_type() == "application/tlsrpt+gzip":
        data = gzip.decompress(data)
    else:
        assert att.get_content_type() in ("application/tlsrpt+json", "application/tlsrpt")
    return att, data


def queue_files(spool):
    qdir = os.path.join(spool, "queue")
    return sorted(f for f in os.listdir(qdir) if "." not in f) if os.path.isdir(qdir) else []


def read_queue_file(path):
    raw = open(path, "rb").read()
    head, data = raw.split(b"\nend\n", 1)
    lines = head.decode().split("\n")
    assert lines[0] == "STSRELAY-QUEUE 1"
    kv = {}
    for ln in lines[1:]:
        k, _, v = ln.partition(" ")
        kv.setdefault(k, []).append(v)
    return kv, data


def dkim_key(tmp_path):
    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", str(key)], check=True, capture_output=True)
    der = subprocess.run(["openssl", "pkey", "-in", str(key), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    return str(key), b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


class Receiver:
    """HTTPS report receiver behind the test CA; answers `codes` in turn."""

    def __init__(self, world, host, codes):
        leaf = world.ca.leaf(host)
        self.port = free_port()
        self.posts = []
        self.codes = list(codes)
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                outer.posts.append((self.path, self.headers.get("Content-Type"),
                                    self.rfile.read(n)))
                code = outer.codes.pop(0) if outer.codes else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.srv = http.server.HTTPServer(("127.0.0.1", self.port), H)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(leaf.cert, leaf.key)
        self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()
        world.dns.set(host, "A", "127.0.0.1")
        self.url = "https://%s:%d/v1/tlsrpt" % (host, self.port)

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def relay(world, tmp_path):
    r = world.relay({"tlsrpt_org_name": "Relay Org", "tlsrpt_contact": "tlsrpt@relay.world.test"},
                    start=False, env={"STSRELAY_FAKE_NOW": str(NOW)})
    return r


def test_vectors_validate(relay):
    """The stalwart example reports and mails pass our validator; rpt03
    (unknown policy-type, no policy-domain) only the lenient one."""
    for name in ("rpt01.json", "rpt02.json"):
        rc, out = validate(relay, open(os.path.join(VECTORS, name), "rb").read())
        assert rc == 0 and out.strip() == "ok", (name, out)
    data = open(os.path.join(VECTORS, "rpt03.json"), "rb").read()
    assert validate(relay, data, lenient=True)[0] == 0
    rc, out = validate(relay, data)
    assert rc != 0 and "policies[0]" in out
    for name in ("rpt01.eml", "rpt02.eml"):
        msg = email.message_from_bytes(open(os.path.join(VECTORS, name), "rb").read(),
                                       policy=email.policy.compat32)
        assert msg["TLS-Report-Domain"] and msg["TLS-Report-Submitter"]
        _, data = report_part(msg)
        rc, out = validate(relay, data)
        assert rc == 0, (name, out)


def test_show_and_time_injection(relay, tmp_path):
    mixed_day(relay, tmp_path)
    # without --day: the previous UTC day of the (fake) now
    rc, out, err = cli(relay, "tlsrpt", "show", "--json")
    assert rc == 0, err
    reports = json.loads(out)
    assert [r["policies"][0]["policy"]["policy-domain"] for r in reports] == ["a.test", "quiet.test"]
    check_report(reports[0])
    assert validate(relay, out.encode())[0] == 0
    rc, out, err = cli(relay, "tlsrpt", "show")
    assert rc == 0 and "a.test" in out and "success=8 failure=15" in out
    # one day later "yesterday" is empty
    rc, out, err = cli(relay, "tlsrpt", "show", "--json", now=NOW + 86400)
    assert rc == 0 and json.loads(out) == []
    # a crash leftover (torn line) changes no count
    with open(os.path.join(relay.config["spool_dir"], "tlsrpt", DAY, "sessions"), "ab") as f:
        f.write(b"T1\t1781744400\ta.test\tnone\t-\t-\t-\tsuccess")
    record(relay, tmp_path, "quiet.test", "success", 1, mx="mx.quiet.test", mx_ip="127.0.2.1")
    rc, out, err = cli(relay, "tlsrpt", "show", "--json")
    check_report(json.loads(out)[0])
    assert json.loads(out)[1]["policies"][0]["summary"]["total-successful-session-count"] == 5
    assert "1 torn or corrupt" in err


def test_mailto_https_restart_and_resend(world, relay, tmp_path):
    dkim = pytest.importorskip("dkim")
    key, dns_rec = dkim_key(tmp_path)
    relay.config.update({"dkim_domain": "relay.world.test", "dkim_selector": "s1",
                         "dkim_key_file": key})
    relay.write_config()
    pf = world.postfix(["rpt.test"], ["mx.rpt.test"],
                       tls={"mx.rpt.test": world.ca.leaf("mx.rpt.test")})
    world.mx("rpt.test", ["mx.rpt.test"])
    rcv = Receiver(world, "reports.rpt.test", [500])
    try:
        world.tlsrpt("a.test", ["mailto:tls-reports@rpt.test", rcv.url])
        mixed_day(relay, tmp_path)
        spool = relay.config["spool_dir"]

        # restart between recording and sending changes no count
        rc, before, _ = cli(relay, "tlsrpt", "show", "--json", "--day", DAY)
        relay.start()
        assert relay.stop() == 0
        rc, after, _ = cli(relay, "tlsrpt", "show", "--json", "--day", DAY)
        assert before == after

        # first send: the mail is queued, the HTTPS receiver says 500
        rc, out, err = cli(relay, "tlsrpt", "send", "--day", DAY)
        assert rc == 75, out + err
        assert "1 sent, 0 already sent, 1 failed, 1 without _smtp._tls" in out, out + err
        ids = queue_files(spool)
        assert len(ids) == 1
        kv, data = read_queue_file(os.path.join(spool, "queue", ids[0]))
        # RFC 5321 §4.5.5: a report is not a DSN; the contact is the sender
        assert kv["sender"] == ["tlsrpt@relay.world.test"]
        assert kv["rcpt"] == ["tls-reports@rpt.test"]
        assert int(kv["flags"][0]) == 3          # NOBOUNCE | TLSRPT
        assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
        msg = email.message_from_bytes(data, policy=email.policy.compat32)
        assert msg["TLS-Report-Domain"] == "a.test"
        assert msg["TLS-Report-Submitter"] == "relay.world.test"
        assert msg["TLS-Required"] == "No"
        assert msg["From"] == "tlsrpt@relay.world.test"
        assert msg["To"] == "tls-reports@rpt.test"
        assert " ".join(msg["Subject"].split()) == (
            "Report Domain: a.test Submitter: relay.world.test "
            "Report-ID: <2026-06-18.a.test@relay.world.test>")
        assert msg["Message-ID"].endswith("@relay.world.test>")
        assert msg["Date"].startswith("Fri, 19 Jun 2026 00:3")  # the fake clock
        att, rep = report_part(msg)
        fname = att.get_filename()
        assert fname.startswith("relay.world.test!a.test!%d!%d!" % (DAY_START, DAY_START + 86399))
        assert fname.endswith(".json.gz")
        assert validate(relay, rep)[0] == 0
        check_report(json.loads(rep))

        def dnsfunc(name, timeout=5):
            return dns_rec if name.rstrip(b".") == b"s1._domainkey.relay.world.test" else None
        assert dkim.verify(data, dnsfunc=dnsfunc)

        assert len(rcv.posts) == 1               # the 500
        # second send: the mail is not queued again, the upload succeeds
        rc, out, err = cli(relay, "tlsrpt", "send", "--day", DAY)
        assert rc == 0, out + err
        assert "1 sent, 1 already sent, 0 failed" in out
        assert queue_files(spool) == ids
        path, ctype, body = rcv.posts[-1]
        assert path == "/v1/tlsrpt" and ctype == "application/tlsrpt+gzip"
        assert body[:2] == b"\x1f\x8b"
        assert validate(relay, body)[0] == 0     # the validator gunzips
        check_report(json.loads(gzip.decompress(body)))
        # third send: nothing new anywhere
        rc, out, err = cli(relay, "tlsrpt", "send", "--day", DAY)
        assert rc == 0 and "0 sent, 2 already sent" in out
        assert len(rcv.posts) == 2 and queue_files(spool) == ids

        # the daemon delivers the queued report to Postfix
        relay.start()
        msgs = pf.wait_messages("tls-reports@rpt.test", timeout=30)
        assert len(msgs) == 1
        got = msgs[0].msg
        _, rep2 = report_part(got)
        assert json.loads(rep2) == json.loads(rep)
        assert relay.stop() == 0
        # the report delivery itself is not recorded for a later report
        rc, out, _ = cli(relay, "tlsrpt", "show", "--json", "--day", "2026-06-19")
        assert "rpt.test" not in out
    finally:
        rcv.close()


def test_retention(relay, tmp_path):
    record(relay, tmp_path, "old.test", "success", 1, when=DAY_START - 20 * 86400)
    record(relay, tmp_path, "a.test", "success", 1)
    base = os.path.join(relay.config["spool_dir"], "tlsrpt")
    assert sorted(os.listdir(base)) == ["2026-05-29", DAY]
    rc, out, err = cli(relay, "tlsrpt", "send", "--day", DAY)   # no DNS records: nothing sent
    assert rc == 0, out + err
    assert sorted(os.listdir(base)) == [DAY]                       # default 14d retention
