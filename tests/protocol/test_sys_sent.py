"""$SYS/broker/messages/sent counts every packet the broker sent, as Mosquitto's does
(messages/received counts every packet taken): CONNACK, SUBACK, PINGRESP and PUBLISH alike."""

from mqttraw import subscribe

TOPIC = "$SYS/broker/messages/sent"


def test_messages_sent_counts_every_packet_sent(broker):
    c = broker.raw()
    assert c.connect("sent-counter") == (0, 0)  # 1: CONNACK
    c.send(subscribe(1, (TOPIC, 0)))
    c.expect(9)  # 2: SUBACK
    first = c.expect(3)  # the current value, sent after the SUBACK
    assert first.topic == TOPIC.encode() and first.payload == b"2"
    c.send(b"\xc0\x00")
    c.expect(13)  # 3: PINGRESP (4 with the PUBLISH above)
    c.send(subscribe(2, (TOPIC, 0)))
    c.expect(9)  # 5: SUBACK
    again = c.expect(3)
    assert again.payload == b"5"
