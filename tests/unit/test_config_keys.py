"""The per-listener `protocol` key, the bridge's `bridge_protocol_version` and the board
profile's `frozen` line, as firmware/ubroker/config.py parses them (Mosquitto's forms)."""

import os
import sys

import pytest
from conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "firmware"))
from ubroker import config  # noqa: E402


def test_protocol_belongs_to_the_listener_declared_last():
    cfg = config.resolve(config.parse("listener 1883\nlistener 9001\nprotocol websockets\nlistener 9002\nprotocol mqtt\n"))
    assert cfg["protocols"] == {1: "websockets", 2: "mqtt"}


def test_new_listeners_drop_the_protocols_of_replaced_ones():
    board = config.parse("listener 9001\nprotocol websockets\n")
    user = config.parse("listener 1883\n")
    assert "protocols" not in config.resolve(board, user)


def test_a_broker_without_websockets_keeps_no_protocols_entry():
    assert "protocols" not in config.resolve(config.parse("listener 1883\n"))


@pytest.mark.parametrize("line, words", [
    ("protocol http", "protocol expects one of mqtt, websockets"),
    ("frozen", "frozen"),
])
def test_bad_values_name_their_line(line, words):
    with pytest.raises(config.ConfigError) as e:
        config.parse("listener 1883\n" + line + "\n")
    assert "config:2: " + words in str(e.value)


def test_bridge_protocol_version_defaults_to_311_and_takes_mqttv50():
    text = "connection up\naddress 127.0.0.1:1884\ntopic # both\n"
    assert config.parse(text)["connection"][0]["bridge_protocol_version"] == "mqttv311"
    v5 = config.parse(text + "bridge_protocol_version mqttv50\n")
    assert v5["connection"][0]["bridge_protocol_version"] == "mqttv50"
    with pytest.raises(config.ConfigError) as e:
        config.parse(text + "bridge_protocol_version mqttv31\n")
    assert "config:4: bridge_protocol_version expects one of mqttv311, mqttv50" in str(e.value)


def test_frozen_is_a_board_profile_line():
    assert config.parse("frozen core,store\n")["frozen"] == "core,store"


def test_port_beside_listeners_is_one_more_listener_opened_first():
    """As Mosquitto: `port` (the default listener) and `listener` lines in one file open all of
    them, the `port` one first, wherever its line is."""
    for text in ("port 1884\nlistener 9001 127.0.0.1\n", "listener 9001 127.0.0.1\nport 1884\n"):
        assert config.resolve(config.parse(text))["listener"] == [(1884, "0.0.0.0"), (9001, "127.0.0.1")]
    cfg = config.resolve(config.parse("bind_address 127.0.0.1\nlistener 9001\n"))
    assert cfg["listener"] == [(1883, "127.0.0.1"), (9001, "0.0.0.0")]
    assert "port" not in cfg and "bind_address" not in cfg


def test_per_listener_keys_follow_their_listener_when_port_goes_first():
    """`protocol` and the TLS keys belong to the listener declared last; before any `listener`
    line, to the `port` listener (index 0) when there is one, else to the first listener."""
    cfg = config.resolve(config.parse("port 1884\nlistener 9001\nprotocol websockets\nlistener 8883\n"
                                      "certfile c.pem\nkeyfile k.pem\n"))
    assert cfg["protocols"] == {1: "websockets"}
    assert cfg["tls"] == {2: {"certfile": "c.pem", "keyfile": "k.pem"}}
    cfg = config.resolve(config.parse("port 8080\nprotocol websockets\nlistener 1883\n"))
    assert cfg["listener"][0][0] == 8080 and cfg["protocols"] == {0: "websockets"}
    # without `port`: keys before the first `listener` line still go to it, merged
    cfg = config.resolve(config.parse("certfile c.pem\nlistener 8883\nkeyfile k.pem\nlistener 1883\n"))
    assert cfg["tls"] == {0: {"certfile": "c.pem", "keyfile": "k.pem"}}


def test_port_alone_still_replaces_the_profiles_listener():
    board = config.parse("listener 1883 127.0.0.1\n")
    assert config.resolve(board, config.parse("port 1885\n"))["listener"] == [(1885, "0.0.0.0")]
    assert config.resolve(board, config.parse("bind_address 0.0.0.0\n"))["listener"] == [(1883, "0.0.0.0")]


def test_store_problem_names_the_key_and_the_folder(tmp_path):
    cfg = dict(config.DEFAULTS, persistence=True, persistence_location=str(tmp_path / "nowhere"))
    msg = config.store_problem(cfg)
    assert "persistence_location %s does not exist" % (tmp_path / "nowhere") in msg
    (tmp_path / "file").write_text("")
    assert "is not a folder" in config.store_problem(dict(cfg, persistence_location=str(tmp_path / "file")))
    assert config.store_problem(dict(cfg, persistence_location=str(tmp_path))) is None
    assert config.store_problem(dict(cfg, persistence_location=str(tmp_path) + "/")) is None
    assert config.store_problem(dict(cfg, persistence=False)) is None
