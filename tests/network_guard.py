"""The tests' guard against the network: what counts as staying on this machine, and an audit hook
that lists every connection and name lookup outside the loopback that a whole process attempts,
its exit included (conftest.loopback_only guards the tests' own process)."""
import ipaddress
import os
import sys

LOG = "NETWORK_GUARD_LOG"  # the file a guarded process lists its attempts in


def loopback(host):
    """Whether `host` (a socket address's host, a Unix socket's path, or None) stays on this machine."""
    if host is None or isinstance(host, bytes) or host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name to look up, or a Unix socket's path
        return host.startswith("/") or host.startswith("\0")


def address_host(address):
    """The host of a socket address: a (host, port, ...) tuple's, or a Unix socket's path itself."""
    return address[0] if isinstance(address, tuple) else address


def outside_the_loopback(event, args):
    """The address an audit event of the socket module reaches outside the loopback, or None."""
    if event in ("socket.connect", "socket.sendto"):
        host = address_host(args[1])
    elif event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr"):
        host = args[0]
    else:
        return None
    return None if loopback(host.decode() if isinstance(host, bytes) else host) else host


def install():
    """In a process started with NETWORK_GUARD_LOG set (by its sitecustomize): each attempt
    outside the loopback appended to that file, however late in the process it comes."""
    log = os.environ[LOG]

    def hook(event, args):
        host = outside_the_loopback(event, args)
        if host is not None:
            with open(log, "a") as f:
                f.write(f"{event} {host}\n")

    sys.addaudithook(hook)
