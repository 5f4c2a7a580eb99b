/*
** ws.h: a WebSocket server stream (stream.h) over another byte stream,
** made after the HTTP upgrade (http.c), so the relay serves WebSocket
** clients through the same seam and protocol engine as TCP ones.
**
** The mapping (docs/PROTOCOL.md, "WebSocket"): each binary WebSocket
** message carries exactly one protocol message, the frame's payload
** without its 4-byte length (the WebSocket message has a length already).
** The stream turns each message it receives back into a frame (length,
** then payload) for its user, and each frame its user writes into one
** binary message; so the engine, which reads and writes frames, runs
** unchanged.  Text messages close the connection (1003); a message longer
** than max_msg closes it (1009); pings are answered with pongs by wslay.
**
** Writes must hold whole frames (one or more): what the relay's engine
** always writes.  A write that ends inside a frame is refused
** (KNIT_EINVAL).  knit_stream_shutdown() sends a close frame (1000), then
** half-closes the inner stream; input goes on until the peer's close.
**
** Ownership: the WebSocket stream owns the inner stream from
** knit__ws_accept() on (it sets the inner stream's callbacks and data and
** closes it with itself).  rest[0..nrest) is copied.  The stream is the
** server role of the shared one (transport/stream/ws_stream.h), whose
** framing is libwslay's; wslay allocates with the C library's malloc, not
** knit's wrapper.  knit__ws_accept_key(), which http.c checks the
** upgrade with, is declared there too.
*/
#ifndef KNIT_RELAY_WS_H
#define KNIT_RELAY_WS_H

#include <stddef.h>
#include <stdint.h>

#include "metrics.h"
#include "stream.h"
#include "ws_stream.h" /* knit__ws_accept_key() */

#ifdef __cplusplus
extern "C" {
#endif

/* Wraps inner, over which the 101 answer was just written, in a WebSocket
** server stream.  rest holds the bytes that arrived after the HTTP request
** (the first WebSocket frames); they are read once the user starts
** reading.  m (may be NULL) counts oversized messages.  On failure the
** inner stream is untouched (the caller still owns it). */
int knit__ws_accept(knit_stream_t *inner, size_t max_msg, const uint8_t *rest, size_t nrest,
                    knit_relay_metrics_t *m, knit_stream_t **out /* OUT */);

#ifdef __cplusplus
}
#endif
#endif
