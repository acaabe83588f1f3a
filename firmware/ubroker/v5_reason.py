"""Reason Strings (property 0x1F): the short human readable words the server puts on a
CONNACK, PUBACK, PUBREC, PUBREL, SUBACK, UNSUBACK or DISCONNECT that refuses or fails
something (MQTT 5.0 sections 3.2.2.3.9, 3.4.2.2.2, 3.5.2.2.2, 3.6.2.2.2, 3.9.2.1.2,
3.11.2.1.2, 3.14.2.2.3). v5_protocol.py (V5.told) loads this module at the first such
packet, so a broker whose v5 clients are never refused carries none of it; one table for
every connection, nothing kept per connection."""

from .codec import put_length
from .v5_codec import put_str, vbi_len

# The acknowledgements' words, by reason code: the code's byte (0x80 or more), then its
# text (ASCII, below 0x80), 0x80 after the last. CONNACK and DISCONNECT say why in the
# words of the server's log instead (what V5.refuse and V5.drop were given).
_WHY = b"\x87not authorized\x8ftopic filter invalid\x92packet id not found\x97limit reached\x99payload not UTF-8\x80"


def told(v5, c, pkt, text):
    """pkt (as v5_codec or V5.refuse made it: no properties)
    with a Reason String: `text` for CONNACK and DISCONNECT, the words for its reason code
    (for SUBACK and UNSUBACK the highest of its codes) in _WHY for the others, which get one
    only when the client did not ask for none (Request Problem Information 0,
    MQTT-3.1.2-29). None when it goes without: no words for it, or over the client's Maximum
    Packet Size (MQTT-3.2.2-19, 3.4.2-2, 3.5.2-2, 3.6.2-2, 3.9.2-1, 3.11.2-1, 3.14.2-3); for a
    CONNACK that size is V5.lim, -1 while it is not known."""
    b0 = pkt[0]
    k = 2  # after the remaining length
    while pkt[k - 1] > 0x7F:
        k += 1
    tail = b""
    if b0 == 0x20:  # CONNACK: flags, code, properties 0
        head = pkt[k : k + 2]
        limit = v5.lim
        if limit < 0:
            return None
    else:
        v = c.v5
        limit = v.max_out
        if b0 == 0xE0:  # DISCONNECT: code
            head = pkt[k : k + 1]
        elif getattr(v, "quiet", False):
            return None
        elif b0 == 0x90 or b0 == 0xB0:  # SUBACK, UNSUBACK: packet id, properties 0, codes
            head = pkt[k : k + 2]
            tail = pkt[k + 3 :]
            code = max(tail)
        else:  # PUBACK, PUBREC, PUBREL: packet id, code
            head = pkt[k : k + 3]
            code = pkt[k + 2]
    if text is None:
        i = _WHY.find(bytes((code,)))
        if i < 0:
            return None
        j = i + 1
        while _WHY[j] < 0x80:
            j += 1
        text = _WHY[i + 1 : j]
    else:
        text = text.encode()
    n = 3 + len(text)
    rl = len(head) + vbi_len(n) + n + len(tail)
    if limit and 1 + vbi_len(rl) + rl > limit:
        return None
    out = bytearray((b0,))
    put_length(out, rl)
    out += head
    put_length(out, n)
    put_str(out, 0x1F, text)
    out += tail
    return out
