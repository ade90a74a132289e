# pytest fixtures of the integration tests: the session's test CA, a fresh
# loopback mail world per test (or per module), and the stsrelay daemon.
import os
import shutil
import sys
import tempfile

import pytest

_ROOT = os.environ.get("STSRELAY_SRC") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

# Re-exported for test modules: `from conftest import free_port` also works.
from tests.world import (TestCA, World, free_port, relay_bin,  # noqa: E402,F401
                         sample_message)


def _world_dir(name):
    # Not under pytest's tmp_path: that tree is 0700 and pytest may reset
    # it when another pytest process starts, while Postfix (user postfix)
    # and virtual delivery (user nobody) must reach paths in the world.
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:40]
    d = tempfile.mkdtemp(prefix="stsrelay-%s-" % safe)
    os.chmod(d, 0o755)
    return d


def _remove_unless_failed(d, request):
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        sys.stderr.write("\nworld kept for debugging: %s\n" % d)
        return
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def world_ca():
    """The session's TestCA (root + cached leaves): .ca_file, .leaf(names, kind)."""
    d = _world_dir("ca")
    yield TestCA(d)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def world(world_ca, request):
    """A fresh World for one test: .dns, .https, .postfix(), .fake_mx(),
    .mx(), .sts(), .tlsrpt(), .relay(); everything stopped at teardown,
    its directory removed unless the test failed."""
    d = _world_dir("world-" + request.node.name)
    w = World(d, world_ca)
    try:
        yield w
    finally:
        w.close()
        _remove_unless_failed(d, request)


@pytest.fixture(scope="module")
def module_world(world_ca, request):
    """One World shared by all tests of a module (faster; tests must not
    depend on each other's DNS/policy changes). Its directory is kept."""
    w = World(_world_dir("mworld-" + request.module.__name__), world_ca)
    try:
        yield w
    finally:
        w.close()


@pytest.fixture(scope="session")
def stsrelay_bin():
    """Path of the binary under test; tests needing it are skipped when
    STSRELAY_BIN is unset (ctest always sets it)."""
    b = relay_bin()
    if not b:
        pytest.skip("STSRELAY_BIN not set")
    if not os.access(b, os.X_OK):
        pytest.fail("STSRELAY_BIN=%s is not executable" % b)
    return b


@pytest.fixture
def relay(world, stsrelay_bin):
    """Factory: relay(config=None, start=True, env=None) -> Relay pointed at
    `world` (dns_servers, ca_file, smtp_port, sts_https_port set); stopped
    with SIGTERM (then SIGKILL) at teardown by the world."""
    def make(config=None, start=True, env=None):
        return world.relay(config, start=start, env=env, binary=stsrelay_bin)
    return make


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # On failure, attach the tails of the world's logs to the report.
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
    if rep.when != "call" or not rep.failed:
        return
    w = item.funcargs.get("world") if hasattr(item, "funcargs") else None
    if getattr(w, "dir", None) is None:  # some modules have a world of their own
        return
    from tests.world.util import read_text
    logs = []
    for root, _dirs, files in os.walk(w.dir):
        for f in files:
            if f in ("stsrelay.log", "maillog", "error.log", "unbound.log"):
                p = os.path.join(root, f)
                logs.append("---- %s ----\n%s" % (p, read_text(p, 3000)))
    if logs:
        rep.sections.append(("world logs", "\n".join(logs)))
