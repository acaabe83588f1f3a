"""A fleet coming back after a gateway reboot: 1,000 clients connecting 100 at a time, each
sending its CONNECT a little after its TCP handshake (as a busy client does), must all get in.
The half-open limit is there against floods of sockets that never speak (test_security.py):
it may only displace a connection that has been silent longer than a client needs, or one
that must make room in a full table, never a client whose CONNECT is a few ms behind."""

import pytest

from ubroker_tools.bench_storm import BURST, ROUNDS, burst


@pytest.mark.parametrize("half_open", [16, None], ids=["half-open-16", "unix-profile-128"])
def test_a_thousand_clients_reconnecting_in_bursts_all_get_in(broker_factory, half_open):
    """MQTT-3.2.0-1/3.2.2-3: every client of the storm gets CONNACK 0 (the unix profile takes
    1,024 clients; a burst of 100 is well inside it), both with the default half-open limit of
    16, where the 2-second silence rule is what lets the bursts in (with the old rule 16 of each
    100 got in), and with the unix profile's own limit of 128."""
    b = broker_factory(board="unix", config="max_half_open_connections %d\n" % half_open if half_open else None)
    got = [burst(b.port, r) for r in range(ROUNDS)]
    assert sum(got) == ROUNDS * BURST, got
