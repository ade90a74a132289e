# The privilege step at start cannot be turned against root: `serve` as root
# with `user =` hands the spool to that user, but a symbolic link or hard
# link planted in the spool (by that user, who owns it) never makes root
# chown a file outside it, not even when a directory is swapped for a link
# while the walk runs.
import os
import shutil
import tempfile
import threading
import time

import pytest

from serve_helpers import TEST_USER, Daemon, ensure_test_user

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start as root")


@pytest.fixture
def dirs():
    """A base directory any user can traverse (the spool goes in it) and an
    'outside' tree of root-owned files the spool must never reach."""
    base = tempfile.mkdtemp(prefix="stsrelay-handover-")
    outside = tempfile.mkdtemp(prefix="stsrelay-outside-")
    os.chmod(base, 0o755)
    os.chmod(outside, 0o755)
    for rel in ("secret", "hardfile", "inner/f", "inner/sessions"):
        p = os.path.join(outside, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write("root's\n")
        os.chmod(p, 0o600)
    yield base, outside
    shutil.rmtree(base, ignore_errors=True)
    shutil.rmtree(outside, ignore_errors=True)


def owners(top):
    """{relative path: uid} of top and everything below it (links not followed)."""
    out = {".": os.lstat(top).st_uid}
    for root, ds, fs in os.walk(top):
        for n in ds + fs:
            p = os.path.join(root, n)
            out[os.path.relpath(p, top)] = os.lstat(p).st_uid
    return out


def make_spool(base):
    """The spool as a root-run daemon leaves it: queue/, tmp/, maildrop/,
    sts/, tlsrpt/, all root's; the spool directory itself given to the
    user by the operator (stsrelay never chowns an existing one)."""
    spool = os.path.join(base, "spool")
    for sub in ("queue", "tmp", "maildrop", "sts", "tlsrpt"):
        os.makedirs(os.path.join(spool, sub), mode=0o700)
    user = ensure_test_user()
    os.chown(spool, user.pw_uid, user.pw_gid)
    return spool


def plant_file(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("x\n")
    os.chmod(path, 0o600)


def test_links_inside_the_spool_are_not_followed(dirs):
    base, outside = dirs
    user = ensure_test_user()
    spool = make_spool(base)
    # what the user could have put there
    os.symlink(os.path.join(outside, "secret"), os.path.join(spool, "queue", "link"))
    os.symlink(os.path.join(outside, "secret"), os.path.join(spool, "sts", "example.org.policy"))
    os.symlink(os.path.join(outside, "inner"), os.path.join(spool, "tlsrpt", "2099-01-01"))
    os.link(os.path.join(outside, "hardfile"), os.path.join(spool, "queue", "hard"))
    # what root left there and the user must get
    plant_file(os.path.join(spool, "queue", "old-root-file"))
    plant_file(os.path.join(spool, "tlsrpt", "2099-01-02", "sessions"))
    before = owners(outside)
    assert set(before.values()) == {0}

    d = Daemon(base, user=TEST_USER).start()
    try:
        assert d.wait_log("running as user %s" % TEST_USER)
    finally:
        assert d.stop() == 0
    assert owners(outside) == before
    st = {rel: os.lstat(os.path.join(spool, rel)).st_uid
          for rel in ("queue/link", "sts/example.org.policy", "tlsrpt/2099-01-01")}
    assert st == dict.fromkeys(st, 0), st          # the links themselves untouched too
    for rel in (".", "queue", "tmp", "maildrop", "sts", "tlsrpt", "queue/old-root-file",
                "tlsrpt/2099-01-02", "tlsrpt/2099-01-02/sessions"):
        assert os.lstat(os.path.join(spool, rel)).st_uid == user.pw_uid, rel
    log = d.log()
    assert "queue/link is a symbolic link: left as it is" in log, log
    assert "tlsrpt/2099-01-01 is a symbolic link: left as it is" in log, log
    assert "queue/hard has several hard links: left as it is" in log, log


def test_existing_spool_root_keeps_its_owner(dirs):
    """A spool directory the operator made (root's, 0755) is not chowned
    to `user`: the start stops with 77 and says why; a spool directory the
    daemon makes itself is the user's."""
    base, outside = dirs
    user = ensure_test_user()
    spool = os.path.join(base, "spool")
    os.mkdir(spool, 0o755)
    d = Daemon(base, user=TEST_USER)
    with pytest.raises(RuntimeError) as e:
        d.start()
    assert "exited with 77" in str(e.value), str(e.value)
    assert ("spool %s is not writable by user %s: Permission denied (stsrelay never changes "
            "the owner of an existing spool directory)" % (spool, TEST_USER)) in d.log(), d.log()
    d.proc = None
    d.logf.close()
    st = os.lstat(spool)
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (0, 0, 0o755)
    # the same start with no spool directory: made, and the user's
    shutil.rmtree(spool)
    d = Daemon(base, user=TEST_USER).start()
    try:
        assert d.wait_log("running as user %s" % TEST_USER)
    finally:
        assert d.stop() == 0
    assert os.lstat(spool).st_uid == user.pw_uid
    assert os.lstat(os.path.join(spool, "lock")).st_uid == user.pw_uid


@pytest.mark.parametrize("sub,code", [("tlsrpt", 77), ("sts", 77), ("queue", 73), ("tmp", 73)])
def test_spool_subdirectory_that_is_a_link_stops_the_start(dirs, sub, code):
    """The spool's own subdirectory replaced by a link to a root-owned
    directory: the daemon refuses to start, and the target keeps its owner."""
    base, outside = dirs
    ensure_test_user()
    spool = make_spool(base)
    os.rmdir(os.path.join(spool, sub))
    os.symlink(os.path.join(outside, "inner"), os.path.join(spool, sub))
    before = owners(outside)

    d = Daemon(base, user=TEST_USER)
    with pytest.raises(RuntimeError) as e:
        d.start()
    assert "exited with %d" % code in str(e.value), str(e.value)
    assert "symbolic link" in d.log() and (("%s/%s:" % (spool, sub)) in d.log() or
                                           ("%s: %s:" % (spool, sub)) in d.log()), d.log()
    d.proc = None
    d.logf.close()
    assert owners(outside) == before


N_TRAP = 20000


def test_directory_swapped_for_a_link_during_the_walk(dirs):
    """The race: once root has handed queue/trap (20,000 files) to the user,
    the user renames it away and puts a link to a root-owned directory with
    the same file names in its place. A walk by path would now chown those
    files; the walk by descriptors keeps going in the directory it opened."""
    base, outside = dirs
    user = ensure_test_user()
    spool = make_spool(base)
    trap = os.path.join(spool, "queue", "trap")
    decoy = os.path.join(outside, "decoy")
    os.mkdir(trap, 0o700)
    os.mkdir(decoy, 0o755)
    for i in range(N_TRAP):
        for top in (trap, decoy):
            fd = os.open(os.path.join(top, "f%05d" % i), os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
    before = owners(outside)

    swapped = {}

    def swap():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if os.lstat(trap).st_uid == user.pw_uid:   # handed over: walk inside
                os.rename(trap, trap + ".old")
                os.symlink(decoy, trap)
                swapped["at"] = time.monotonic()
                return
    t = threading.Thread(target=swap)
    t.start()
    d = Daemon(base, user=TEST_USER)
    try:
        d.start(timeout=60)
    finally:
        t.join(60)
        assert d.stop() == 0
    assert "at" in swapped, "the walk never handed queue/trap over"
    changed = {k: v for k, v in owners(outside).items() if before[k] != v}
    assert changed == {}, "%d files outside the spool changed owner, e.g. %s" % (
        len(changed), sorted(changed)[:5])
    # and the real directory was handed over completely
    old = owners(trap + ".old")
    assert set(old.values()) == {user.pw_uid} and len(old) == N_TRAP + 1
