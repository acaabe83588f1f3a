// ubroker's Pico W image: the stock RPI_PICO_W settings, and lwIP's limits raised for a broker.
// lwipopts.h includes py/mpconfig.h, hence this file, before lwIP's defaults apply.
#include "boards/RPI_PICO_W/mpconfigboard.h"

// One TCP PCB per connection, TIME_WAIT included (listening sockets have a pool of their own,
// MEMP_NUM_TCP_PCB_LISTEN, 8). lwIP's default is 5: four clients and the bridge link. 40 covers
// the rp2-pico-w-image profile's clients, the bridge link, a status page and connections the
// broker accepts only to refuse, and lwIP reuses the oldest TIME_WAIT PCB when it runs out.
// About 160 bytes of static RAM each.
#define MEMP_NUM_TCP_PCB                (40)

// Output memory shared by every connection. When a write finds none, MicroPython's lwIP
// socket retries for up to 10 s, even when non-blocking (extmod/modlwip.c, lwip_tcp_send), which
// stalls the broker's one loop: so twice the stock pool (lwipopts_common.h: 8000 bytes, 32
// segments) for a fan-out to many clients. Setting MEM_SIZE drops lwipopts_common.h's TCP
// block, so its other values are restated here unchanged.
#define MEM_SIZE                        (16000)
#define MEMP_NUM_TCP_SEG                (64)
#define TCP_MSS                         (800)
#define TCP_WND                         (8 * TCP_MSS)
#define TCP_SND_BUF                     (8 * TCP_MSS)
