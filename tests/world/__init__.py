# The loopback "mail world" the integration tests run the relay against:
# test CA, Unbound, nginx policy host, Postfix and fake MX hosts, the relay.
from .ca import KINDS, Leaf, TestCA
from .dns import UnboundDNS, txt_rdata
from .fakemx import FakeMX, Script
from .https import PolicyHost, policy_text
from .postfix import PostfixMX
from .redis import RedisServer
from .relay import Relay, format_config, relay_bin, sample_message
from .util import WorldError, free_ip, free_port, wait_port, wait_until


def __getattr__(name):
    # Lazy, so that `python3 -m tests.world.world` does not find the module
    # already imported by its own package (runpy warns about that).
    if name == "World":
        from .world import World
        return World
    raise AttributeError(name)


__all__ = ["KINDS", "Leaf", "TestCA", "UnboundDNS", "txt_rdata", "FakeMX", "Script",
           "PolicyHost", "policy_text", "PostfixMX", "RedisServer", "Relay", "format_config",
           "relay_bin", "sample_message", "WorldError", "free_ip", "free_port",
           "wait_port", "wait_until", "World"]
