# Per-domain TLS levels (tls_policy_file, Postfix smtp_tls_policy_maps style)
# and tls_default = encrypt, against fake MX hosts and Postfix on loopback:
# what each level lets through, SIGHUP re-reading, `stsrelay check`.
import os
import re
import time

from tests.world import sample_message

SENDER = "alice@sender.test"


def write_policy(world, text):
    path = os.path.join(world.dir, "tls_policy")
    with open(path, "w") as f:
        f.write(text)
    return path


def line_for(r, to, timeout=30):
    return r.wait_log(r"to=<%s>, .*status=(sent|deferred|bounced)" % re.escape(to),
                      timeout=timeout)[-1]


def transaction(fm):
    return [c for s in fm.sessions for _, c in s.commands
            if c.upper().startswith(("MAIL", "RCPT", "DATA"))]


def test_encrypt_refuses_plaintext(world, relay):
    """Level encrypt: an MX without STARTTLS gets no MAIL; the mail waits."""
    fm = world.fake_mx("mx.plain-only.test", {"starttls": "none"})
    world.mx("plain-only.test", ["mx.plain-only.test"])
    pol = write_policy(world, "# partners\nplain-only.test   encrypt\n")
    r = relay({"tls_policy_file": pol, "retry_schedule": "1h"})
    to = "bob@plain-only.test"
    r.send(SENDER, [to], sample_message(SENDER, to, "encrypt"))
    line = line_for(r, to)
    assert "status=deferred" in line and "dsn=4.7.5" in line, line
    assert "sts_result=starttls-not-supported" in line and "dane=no" in line, line
    assert transaction(fm) == []
    assert all(not s.messages for s in fm.sessions)


def test_encrypt_takes_any_certificate(world, relay):
    """encrypt demands TLS, not a valid certificate (an expired one passes)."""
    fm = world.fake_mx("mx.old-cert.test", {"cert": world.ca.leaf(["mx.old-cert.test"],
                                                                  "expired")})
    world.mx("old-cert.test", ["mx.old-cert.test"])
    r = relay({"tls_default": "encrypt", "retry_schedule": "1h"})
    to = "carl@old-cert.test"
    r.send(SENDER, [to], sample_message(SENDER, to, "encrypt default"))
    line = line_for(r, to)
    assert "status=sent" in line and "tls=TLSv1.3 unverified" in line, line
    assert fm.sessions[-1].tls and fm.sessions[-1].messages


def test_verify_refuses_wrong_name(world, relay):
    """Level verify: a certificate for another name is refused (4.7.5)."""
    pf = world.postfix(["wrong.test"], ["mx.wrong.test"],
                       tls={"mx.wrong.test": world.ca.leaf(["mx.wrong.test"], "wrongname")})
    world.mx("wrong.test", ["mx.wrong.test"])
    pol = write_policy(world, "wrong.test verify\n")
    r = relay({"tls_policy_file": pol, "retry_schedule": "1h"})
    to = "dan@wrong.test"
    r.send(SENDER, [to], sample_message(SENDER, to, "verify"))
    line = line_for(r, to)
    assert "status=deferred" in line and "dsn=4.7.5" in line, line
    assert "sts_result=certificate-host-mismatch" in line, line
    time.sleep(0.5)
    assert pf.messages(to) == []


def test_none_for_broken_domain_under_verify_default(world, relay):
    """tls_default = verify, but the listed broken domain (expired
    certificate) has level none: delivered, in plaintext, never STARTTLS;
    an unlisted domain on the same kind of host is still refused."""
    cert = world.ca.leaf(["mx.broken.test"], "expired")
    fm = world.fake_mx("mx.broken.test", {"cert": cert})
    world.mx("broken.test", ["mx.broken.test"])
    fm2 = world.fake_mx("mx.unlisted.test", {"cert": world.ca.leaf(["mx.unlisted.test"],
                                                                   "expired")})
    world.mx("unlisted.test", ["mx.unlisted.test"])
    pol = write_policy(world, "Broken.Test.   none   # their certificate expired\n")
    r = relay({"tls_default": "verify", "tls_policy_file": pol, "retry_schedule": "1h"})
    to, to2 = "eve@broken.test", "fay@unlisted.test"
    r.send(SENDER, [to], sample_message(SENDER, to, "none"))
    r.send(SENDER, [to2], sample_message(SENDER, to2, "unlisted"))
    line = line_for(r, to)
    assert "status=sent" in line and "tls=none" in line, line
    s = fm.sessions[-1]
    assert not s.tls and s.messages and not any(
        c.upper().startswith("STARTTLS") for _, c in s.commands)
    line2 = line_for(r, to2)
    assert "status=deferred" in line2 and "sts_result=certificate-expired" in line2, line2
    assert all(not s.messages for s in fm2.sessions)


def test_enforce_tightens_listed_none(world, relay):
    """An MTA-STS enforce policy is stronger than a listed level none: the
    expired certificate is refused although the file says none."""
    fm = world.fake_mx("mx.strict.test", {"cert": world.ca.leaf(["mx.strict.test"],
                                                                "expired")})
    world.mx("strict.test", ["mx.strict.test"])
    world.sts("strict.test", "enforce", ["mx.strict.test"])
    pol = write_policy(world, "strict.test none\n")
    r = relay({"tls_policy_file": pol, "retry_schedule": "1h"})
    to = "gus@strict.test"
    r.send(SENDER, [to], sample_message(SENDER, to, "enforce over none"))
    line = line_for(r, to)
    assert "status=deferred" in line and "sts=enforce" in line, line
    assert "sts_result=certificate-expired" in line, line
    assert all(not s.messages for s in fm.sessions)


def test_sighup_rereads_the_file_and_refuses_a_bad_one(world, relay):
    fm = world.fake_mx("mx.flip.test", {"starttls": "none"})
    world.mx("flip.test", ["mx.flip.test"])
    pol = write_policy(world, "flip.test may\n")
    r = relay({"tls_policy_file": pol, "retry_schedule": "1h"})
    to = "hal@flip.test"
    r.send(SENDER, [to], sample_message(SENDER, to, "may"))
    assert "status=sent" in line_for(r, to)
    # a broken file: the reload is refused, the running table stays
    write_policy(world, "flip.test maybe\n")
    r.reload()
    r.wait_log(r"reload failed: tls_policy_file .*tls_policy:1: unknown level")
    to2 = "ian@flip.test"
    r.send(SENDER, [to2], sample_message(SENDER, to2, "still may"))
    assert "status=sent" in line_for(r, to2)
    # now encrypt: plaintext is no longer good enough
    write_policy(world, "flip.test encrypt\n")
    r.reload()
    r.wait_log(r"configuration reloaded", count=1)
    to3 = "joe@flip.test"
    r.send(SENDER, [to3], sample_message(SENDER, to3, "encrypt now"))
    line = line_for(r, to3)
    assert "status=deferred" in line and "sts_result=starttls-not-supported" in line, line
    assert len([m for s in fm.sessions for m in s.messages]) == 2


def test_check_names_the_bad_line(world, relay):
    pol = write_policy(world, "ok.test verify\n\nbad..test none\n")
    r = relay({"tls_policy_file": pol}, start=False)
    p = r.cli("check", "-c", r.conf)
    err = p.stderr.decode()
    assert p.returncode == 78, err
    assert re.search(r"stsrelay\.conf:\d+: tls_policy_file .*tls_policy:3: not a domain name",
                     err), err
    write_policy(world, "ok.test verify\nOK.test. may\n")
    p = r.cli("check", "-c", r.conf)
    assert p.returncode == 78 and "ok.test listed again (first on line 1)" in \
        p.stderr.decode(), p.stderr
    write_policy(world, "ok.test verify\n.ok.test dane\nx.test sts-only\n")
    p = r.cli("check", "-c", r.conf)
    assert p.returncode == 0, p.stderr
    # serve refuses to start with a broken file (exit 78, the reason logged)
    write_policy(world, "ok.test\n")
    r2 = relay({"tls_policy_file": pol}, start=False)
    r2.write_config()
    import subprocess
    p = subprocess.run([r2.binary, "serve", "-c", r2.conf], capture_output=True, timeout=30,
                       env=r2.env)
    assert p.returncode == 78, p
    assert b"tls_policy:1: a domain needs a level" in p.stderr + p.stdout
