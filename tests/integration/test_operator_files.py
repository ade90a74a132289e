# What an operator reads and installs besides the binary: the man pages
# (render without warnings, every config key described, the version), the
# systemd unit (systemd-analyze verify and security), --help of every
# command, and the developer's `cmake --install`.
import os
import re
import shutil
import subprocess
import tempfile

import pytest

SRC = os.environ.get("STSRELAY_SRC",
                     os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BIN = os.environ.get("STSRELAY_BIN", "stsrelay")
MAN = os.path.join(SRC, "conf", "man")
PAGES = ["stsrelay.8", "stsrelay.conf.5", "stsrelay-sendmail.1"]
UNIT = os.path.join(SRC, "conf", "stsrelay.service")
MAX_EXPOSURE = 4.0


def version():
    p = subprocess.run([BIN, "--version"], capture_output=True, timeout=30)
    assert p.returncode == 0 and p.stderr == b"", p
    m = re.fullmatch(rb"stsrelay (\d+\.\d+\.\d+)\n", p.stdout)
    assert m, p.stdout
    return m.group(1).decode()


def config_keys():
    """The keys of the parser's table in relay/core/config.c."""
    text = open(os.path.join(SRC, "relay", "core", "config.c")).read()
    table = text[text.index("static const struct key_def keys[]"):]
    table = table[:table.index("};")]
    keys = re.findall(r'\{\s*"([a-z_]+)",\s*set_', table)
    assert len(keys) >= 24, keys
    return keys


def test_version_one_line_from_cmake():
    v = version()
    cm = open(os.path.join(SRC, "CMakeLists.txt")).read()
    assert re.search(r"project\(stsrelay VERSION %s\b" % re.escape(v), cm)
    assert subprocess.run([BIN, "-V"], capture_output=True).stdout == b"stsrelay %s\n" % v.encode()
    # anything after it is a usage error, not ignored
    assert subprocess.run([BIN, "--version", "x"], capture_output=True).returncode == 64


@pytest.mark.parametrize("page", PAGES)
def test_man_page_renders_without_warnings(page):
    env = dict(os.environ, MANWIDTH="80", LANG="C.UTF-8")
    p = subprocess.run(["man", "--warnings", "-l", os.path.join(MAN, page)],
                       capture_output=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stderr == b"", p.stderr.decode()
    out = p.stdout.decode()
    assert "NAME" in out, out[:500]
    if page != "stsrelay.conf.5":
        assert "EXIT STATUS" in out, out
    assert max(len(l) for l in out.splitlines()) <= 80
    # the footer carries the version the binary reports
    assert "stsrelay %s" % version() in out.splitlines()[-1], out.splitlines()[-1]


def test_every_config_key_in_the_man_page_and_the_example():
    page = open(os.path.join(MAN, "stsrelay.conf.5")).read()
    example = open(os.path.join(SRC, "conf", "stsrelay.conf")).read()
    described = set(re.findall(r"^\.T[PQ]\n\.B ([a-z_]+)$", page, re.M))
    keys = config_keys()
    assert set(keys) - described == set(), "keys missing from stsrelay.conf(5)"
    # and nothing described that the parser does not know
    assert described - set(keys) == set()
    for k in keys:
        assert re.search(r"^#?%s =" % k, example, re.M), "%s missing from conf/stsrelay.conf" % k


def copy_unit(tmp):
    """The unit with the binary path of this build (systemd-analyze wants
    ExecStart programs to exist) and MANPATH with our pages (it runs man
    for Documentation=)."""
    d = os.path.join(tmp, "unit")
    os.makedirs(d)
    text = open(UNIT).read()
    assert text.count("/usr/sbin/stsrelay") == 3, "ExecStartPre, ExecStart, ExecReload"
    path = os.path.join(d, "stsrelay.service")
    with open(path, "w") as f:
        f.write(text.replace("/usr/sbin/stsrelay", os.path.abspath(BIN)))
    for page in PAGES:
        sec = page.rsplit(".", 1)[1]
        os.makedirs(os.path.join(tmp, "man", "man" + sec), exist_ok=True)
        shutil.copy(os.path.join(MAN, page), os.path.join(tmp, "man", "man" + sec, page))
    return path, dict(os.environ, MANPATH=os.path.join(tmp, "man"), SYSTEMD_PAGER="",
                      SYSTEMD_COLORS="0")


def test_unit_verifies_and_is_hardened(tmp_path):
    path, env = copy_unit(str(tmp_path))
    p = subprocess.run(["systemd-analyze", "verify", path], capture_output=True,
                       timeout=120, env=env)
    assert p.returncode == 0 and p.stdout == b"" and p.stderr == b"", p
    p = subprocess.run(["systemd-analyze", "security", "--offline=true", path],
                       capture_output=True, timeout=120, env=env)
    out = p.stdout.decode()
    m = re.search(r"Overall exposure level for stsrelay\.service: (\d+\.\d+)", out)
    assert m, out + p.stderr.decode()
    assert float(m.group(1)) <= MAX_EXPOSURE, out

    # What systemd-analyze does not grade but operators rely on.
    unit = open(UNIT).read()
    lines = dict()
    for l in unit.splitlines():
        if "=" in l and not l.startswith("#"):
            k, v = l.split("=", 1)
            lines.setdefault(k, []).append(v)
    assert lines["Type"] == ["notify"]
    assert set(lines["RestartPreventExitStatus"][0].split()) == {"64", "67", "77", "78"}
    conf = "-c /etc/stsrelay/stsrelay.conf"
    assert lines["ExecStartPre"] == ["/usr/sbin/stsrelay check " + conf]
    assert lines["ExecStart"] == ["/usr/sbin/stsrelay serve " + conf]
    assert lines["ExecReload"] == ["/usr/sbin/stsrelay check " + conf,
                                   "/bin/kill -HUP $MAINPID"]
    assert lines["SyslogFacility"] == ["mail"] and lines["UMask"] == ["0027"]
    assert lines["ReadWritePaths"] == ["/var/spool/stsrelay"]
    assert lines["ProtectSystem"] == ["strict"]


# command words -> flags its --help must list
HELP = {
    ("serve",): ["-c FILE", "--config", "Exit:"],
    ("check",): ["-c FILE", "Exit:"],
    ("sendmail",): ["-t", "-i", "-oi", "-f ADDR", "-r ADDR", "-F NAME", "-bm", "-bp",
                    "-bs", "-C FILE", "Exit:"],
    ("queue",): ["list", "show ID", "flush [ID]", "delete ID", "bounce ID", "--json",
                 "-c FILE", "Exit:"],
    ("mailq",): ["--json", "-c FILE", "Exit:"],
    ("sts",): ["check DOMAIN", "--json", "--probe", "--update-cache", "cache", "-c FILE",
               "Exit:"],
    ("tlsrpt",): ["show", "send", "dkim-keygen", "--selector S", "--out PATH", "--force",
                  "validate", "--day YYYY-MM-DD", "--json", "--lenient", "-c FILE", "Exit:"],
}
SUBS = {"queue": ["list", "show", "flush", "delete", "bounce"], "sts": ["check", "cache"],
        "tlsrpt": ["show", "send", "dkim-keygen", "validate"]}


def help_cases():
    for words, flags in HELP.items():
        cmds = [list(words)] + [list(words) + [s] for s in SUBS.get(words[0], [])]
        for c in cmds:
            for flag in (["--help"] if words[0] == "sendmail" else ["--help", "-h"]):
                yield c, flag, flags


@pytest.mark.parametrize("words,flag,flags", list(help_cases()),
                         ids=["-".join(w) + flag for w, flag, _ in help_cases()])
def test_help_lists_the_flags(words, flag, flags):
    p = subprocess.run([BIN] + words + [flag], capture_output=True, timeout=30,
                       env=dict(os.environ, STSRELAY_CONF="/nonexistent/stsrelay.conf"))
    assert p.returncode == 0, p
    assert p.stderr == b""
    out = p.stdout.decode()
    assert out.startswith("usage:"), out
    for f in flags:
        assert f in out, (f, out)


def test_help_through_the_links(tmp_path):
    for name, flags in (("sendmail", HELP[("sendmail",)]), ("mailq", HELP[("mailq",)])):
        link = tmp_path / name
        os.symlink(os.path.abspath(BIN), link)
        p = subprocess.run([str(link), "--help"], capture_output=True, timeout=30)
        assert p.returncode == 0 and p.stdout.decode().startswith("usage: %s" % name), p
        for f in flags:
            assert f in p.stdout.decode()


def test_top_level_usage_names_every_command():
    p = subprocess.run([BIN, "--help"], capture_output=True, timeout=30)
    assert p.returncode == 0
    for c in ("serve", "check", "sendmail", "queue", "sts", "tlsrpt", "--version"):
        assert "stsrelay " + c in p.stdout.decode()
    p = subprocess.run([BIN], capture_output=True, timeout=30)
    assert p.returncode == 64 and p.stdout == b"" and p.stderr.startswith(b"usage:")


# ----------------------------------------------------- cmake --install
def build_dir():
    d = os.path.dirname(os.path.abspath(BIN))
    if not os.path.exists(os.path.join(d, "cmake_install.cmake")):
        pytest.skip("STSRELAY_BIN is not in a CMake build tree")
    return d


def test_cmake_install_lists_links_and_says_what_it_does_not_do(tmp_path):
    b = build_dir()
    dest = str(tmp_path / "dest")
    manifest = os.path.join(b, "install_manifest.txt")
    p = subprocess.run(["cmake", "--install", b, "--prefix", "/usr/local"], capture_output=True,
                       timeout=300, env=dict(os.environ, DESTDIR=dest))
    out = p.stdout.decode() + p.stderr.decode()
    assert p.returncode == 0, out
    listed = open(manifest).read().split()
    for f in ("/usr/local/sbin/stsrelay", "/usr/local/sbin/sendmail", "/usr/local/bin/mailq",
              "/usr/local/share/man/man8/stsrelay.8", "/usr/local/share/man/man5/stsrelay.conf.5",
              "/usr/local/share/man/man1/stsrelay-sendmail.1"):
        assert f in listed, (f, listed)
        assert os.path.lexists(dest + f), f
    assert os.readlink(dest + "/usr/local/sbin/sendmail") == "stsrelay"
    assert os.readlink(dest + "/usr/local/bin/mailq") == "../sbin/stsrelay"
    assert "no user stsrelay" in out and "no systemd unit installed or enabled" in out, out


def test_cmake_install_refuses_another_mtas_sendmail(tmp_path):
    b = build_dir()
    dest = str(tmp_path / "dest")
    os.makedirs(dest + "/usr/sbin")
    theirs = dest + "/usr/sbin/sendmail"
    with open(theirs, "wb") as f:
        f.write(b"#!/bin/sh\n# another MTA\n")
    p = subprocess.run(["cmake", "--install", b, "--prefix", "/usr"], capture_output=True,
                       timeout=300, env=dict(os.environ, DESTDIR=dest))
    out = p.stdout.decode() + p.stderr.decode()
    assert p.returncode != 0, out
    assert "exists and is not stsrelay's" in out and "STSRELAY_INSTALL_SENDMAIL_LINK" in out, out
    assert open(theirs, "rb").read() == b"#!/bin/sh\n# another MTA\n"
    assert not os.path.exists(dest + "/usr/sbin/stsrelay"), "nothing is installed"
