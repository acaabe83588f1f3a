"""The unmasking of a WebSocket frame's payload (RFC 6455 section 5.3) as machine code: the one
loop of ws_frame.py that runs for every byte a client sends. Viper code is compiled only for a
port with a native emitter (the boards' xtensawin and armv6m/armv7emsp, the unix port on x86-64
and 32-bit ARM); elsewhere this module fails to compile or is not built (`ubroker build` and
`ubroker run` skip it where the arch is none), and ws_frame.py unmasks in bytecode instead.

Measured with tools/fanin_ws_inprocess.py under callgrind (x86-64, native code): unmasking in
Python cost the fan-in over WebSockets ~36k instructions per message beyond TCP; this ~1k."""

import micropython


@micropython.viper
def unmask(buf, o: int, i: int, k: int, h, hk: int, mp: int):
    """buf[o:o + k] = buf[i:i + k] XOR the mask key at h[hk:hk + 4], starting at its byte mp;
    o <= i (payloads move down over their frame headers), so a forward copy is safe. Four
    bytes a turn with the key's bytes in registers: 27 instructions a byte on x86-64 against
    59 for one a turn indexing the key (callgrind); bytewise, as a board's ptr32 must be
    aligned and o and i rarely are alike."""
    m = ptr8(h)  # type: ignore[name-defined]  # noqa: F821  (viper's own builtins)
    m0 = m[hk + (mp & 3)]
    m1 = m[hk + ((mp + 1) & 3)]
    m2 = m[hk + ((mp + 2) & 3)]
    m3 = m[hk + ((mp + 3) & 3)]
    a = uint(ptr8(buf))  # type: ignore[name-defined]  # noqa: F821
    s = ptr8(a + i)  # type: ignore[name-defined]  # noqa: F821
    d = ptr8(a + o)  # type: ignore[name-defined]  # noqa: F821
    j = 0
    while j < k - 3:
        d[j] = s[j] ^ m0
        d[j + 1] = s[j + 1] ^ m1
        d[j + 2] = s[j + 2] ^ m2
        d[j + 3] = s[j + 3] ^ m3
        j += 4
    if j < k:
        d[j] = s[j] ^ m0
        if j + 1 < k:
            d[j + 1] = s[j + 1] ^ m1
            if j + 2 < k:
                d[j + 2] = s[j + 2] ^ m2
