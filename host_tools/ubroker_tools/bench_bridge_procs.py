"""The processes of the bridge benchmark: an upstream Mosquitto, and the local broker whose
bridge is measured (ubroker, or Mosquitto with its own bridge), each with a config written here
and started on its loopback port as a bench_proc.Server."""

import getpass
import os

from .bench_proc import Server, mosquitto_exe, ubroker_exe
from .bench_rawmqtt import PAYLOAD

TOPIC_FILTER = "bench/#"  # what both bridges forward (`topic bench/# out 1`) and the upstream subscriber takes


def _write(work, name, lines):
    path = os.path.join(work, name)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def mosquitto_conf(work, port, persistent, bridge_to=None):
    """A mosquitto config: lossless (max_queued_messages 0, or it drops past 1000 queued), with
    `user` set to who we are (as root it would otherwise switch to user mosquitto and could
    not write its persistence file here), and a bridge section when `bridge_to` is a port."""
    lines = ["# written by ubroker bench (bridge)",
             "listener %d 127.0.0.1" % port,
             "allow_anonymous true",
             "user %s" % getpass.getuser(),
             "max_queued_messages 0",
             "persistence %s" % ("true" if persistent else "false"),
             "persistence_location %s/" % work,
             "log_dest stderr",
             "log_type error", "log_type warning", "log_type notice"]
    if bridge_to:
        # Mosquitto's bridge in the same shape as ubroker's: QoS 1 out, a kept upstream session,
        # reconnect after at most 1 s. Its window to upstream is max_inflight_messages (20), as ubroker's.
        lines += ["connection up",
                  "address 127.0.0.1:%d" % bridge_to,
                  "remote_clientid mosquitto.bench",
                  "cleansession false",
                  "restart_timeout 1 1",
                  "notifications false",
                  "topic %s out 1" % TOPIC_FILTER]
    return _write(work, "mosquitto.conf", lines)


def ubroker_conf(work, up_port, queued):
    """ubroker with room for `queued` messages waiting for the uplink: the bridge's queue, the
    bytes all queues may hold (224 B + topic + payload each on 64-bit), the store's budget."""
    per_msg = 224 + 64 + PAYLOAD
    lines = ["# written by ubroker bench (bridge)",
             "max_queued_bytes %d" % max(16 << 20, 2 * queued * per_msg),
             "store_size %d" % max(16 << 20, 4 * queued * per_msg),
             "bridge_max_queued_messages %d" % max(1000, queued),
             "connection up",
             "address 127.0.0.1:%d" % up_port,
             "remote_clientid ubroker.bench",
             "restart_timeout 1 1",
             "topic %s out 1" % TOPIC_FILTER]
    return _write(work, "ubroker.conf", lines)


def _start(name, cmd, work, port, wait=True):
    """Started in `work` with its log there (appended: the upstream is started twice in the
    drain run); with `wait`, once it listens. Stopped again if it never does."""
    server = Server(cmd, work, port, os.path.join(work, name + ".log")).start()
    if wait and not server.wait_listening():
        tail = server.log_tail()
        server.stop()
        raise RuntimeError("%s did not start listening on %d: %s" % (name, port, tail))
    return server


def start_upstream(work, port, persistent, wait=True):
    os.makedirs(work, exist_ok=True)
    return _start("upstream-mosquitto", [mosquitto_exe(), "-c", mosquitto_conf(work, port, persistent)], work, port,
                  wait)


def start_local(kind, work, port, up_port, queued, heap):
    """The broker whose bridge is measured, on `port`, bridging to 127.0.0.1:`up_port`."""
    os.makedirs(work, exist_ok=True)
    if kind == "ubroker":
        cmd = [ubroker_exe(), "run", "--board", "unix", "--port", str(port), "--config",
               ubroker_conf(work, up_port, queued), "--data", os.path.join(work, "data"), "--heap", heap]
    else:
        cmd = [mosquitto_exe(), "-c", mosquitto_conf(work, port, False, bridge_to=up_port)]
    return _start(kind, cmd, work, port)
