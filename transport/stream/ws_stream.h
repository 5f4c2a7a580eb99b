/*
** ws_stream.h: the WebSocket message stream (stream.h) over another byte
** stream, shared by both ends: the relay's server stream
** (transport/relay/ws.c, made after the HTTP upgrade of http.c) and the
** sync client's (ws_client.c, which sends the upgrade itself).  Framing is
** libwslay's (masking, fragments, control frames, close handshake); a role
** table says what differs between the ends.
**
** The mapping (docs/PROTOCOL.md, "WebSocket"): each binary WebSocket
** message carries exactly one protocol message, the frame's payload
** without its 4-byte length (the WebSocket message has a length already).
** The stream turns each message it receives back into a frame (length,
** then payload) for its user, and each frame its user writes into one
** binary message; so the protocol engines, which read and write frames,
** run unchanged.  Text messages close the connection (1003); a message
** longer than max_msg closes it (1009); pings are answered with pongs by
** wslay.
**
** Writes must hold whole frames (one or more): what the engines always
** write.  A write that ends inside a frame is refused (KNIT_EINVAL).
** knit_stream_shutdown() sends a close frame (1000), then half-closes the
** inner stream; input goes on until the peer's close.  A client stream
** closed while open sends a close frame (1000) before it closes the inner
** stream, unless inner writes are still in flight (ws_stream.c, note 5).
**
** Roles: a server stream (role->client 0) starts OPEN, its upgrade done
** already; it sends unmasked frames.  A client stream (role->client 1)
** masks every frame with keys from role->genmask and starts UPGRADING:
** until the role calls knit__ws_stream_start(), the inner stream's events
** go to the role's open/read/end hooks, which run the handshake.
**
** Ownership: the role allocates its own struct, zeroed, with a
** knit_ws_stream_t as its first member, and hands it to
** knit__ws_stream_init(); from a successful init on, the WebSocket stream
** owns the inner stream (it sets the inner stream's callbacks and data and
** closes it with itself) and frees the role's struct, after role->fini,
** when the inner stream has closed.  rest[0..nrest) is copied.  wslay
** allocates with the C library's malloc, not knit's wrapper.
*/
#ifndef KNIT_WS_STREAM_H
#define KNIT_WS_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "stream.h"

#ifdef __cplusplus
extern "C" {
#endif

struct wslay_event_context;
typedef struct knit_ws_stream_s knit_ws_stream_t;

/* States of a WebSocket stream (the diagram in ws_stream.c). */
enum { KNIT_WS_UPGRADING, KNIT_WS_OPEN, KNIT_WS_FAILED };

/* What one end of the WebSocket does differently.  Every hook may be NULL. */
typedef struct knit_ws_role_s {
    int client; /* 1: masks what it sends and starts UPGRADING; 0: server, OPEN */
    void (*genmask)(knit_ws_stream_t *w, uint8_t *buf, size_t n); /* client: masking keys */
    void (*too_big)(knit_ws_stream_t *w); /* we closed with 1009: a message over max_msg */
    void (*open)(knit_ws_stream_t *w, int status, const char *msg); /* UPGRADING: inner on_open */
    void (*read)(knit_ws_stream_t *w, const uint8_t *p, size_t n);  /* UPGRADING: inner bytes */
    void (*end)(knit_ws_stream_t *w, int code, const char *msg);    /* UPGRADING: inner on_end */
    void (*fini)(knit_ws_stream_t *w); /* about to be freed: free the role's own fields */
} knit_ws_role_t;

/* The shared part of a WebSocket stream.  Roles read pub, in, state and
** closing, and set state to KNIT_WS_FAILED when their handshake fails; the
** other fields are ws_stream.c's. */
struct knit_ws_stream_s {
    knit_stream_t pub;               /* the public part; first */
    knit_stream_t *in;               /* the inner stream; in->data = this */
    const knit_ws_role_t *role;      /* what this end does differently */
    int state;                       /* KNIT_WS_UPGRADING, _OPEN or _FAILED */
    struct wslay_event_context *ctx; /* wslay's state */
    const uint8_t *rp;               /* input being fed to wslay (note 1) */
    size_t rn;                       /* bytes of it left */
    uint8_t *stash;                  /* bytes after the HTTP request, until reading starts */
    size_t nstash;                   /* their count */
    uint8_t *ob;                     /* bytes wslay sent, not yet written (note 2) */
    size_t on;                       /* their count */
    size_t ocap;                     /* bytes allocated in ob */
    int ended;                       /* on_end reported (note 4) */
    int closing;                     /* op_close called */
    int feeding;                     /* inside feed(): no re-entry */
    size_t inflight;                 /* writes to the inner stream not completed (note 5) */
};

/* Makes w (zeroed, the first member of the role's struct) a WebSocket
** stream over inner that accepts messages up to max_msg bytes.  rest holds
** bytes that arrived before the stream was made (the first WebSocket
** frames); they are fed once the user starts reading.  pub.cb and
** pub.data are left to the caller.  KNIT_ENOMEM on failure: then nothing
** is held and the inner stream is untouched. */
int knit__ws_stream_init(knit_ws_stream_t *w, const knit_ws_role_t *role, knit_stream_t *inner,
                         size_t max_msg, const uint8_t *rest, size_t nrest);

/* The client's handshake succeeded: the stream becomes OPEN, reports
** on_open(0) and then feeds wslay rest[0..n), the bytes after the 101
** answer's head. */
void knit__ws_stream_start(knit_ws_stream_t *w, const uint8_t *rest, size_t n);

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key: base64(SHA-1(key GUID)),
** 28 characters and a NUL into out.  KNIT_EINVAL if key is not the base64
** of 16 bytes (RFC 6455, section 4.2.1). */
int knit__ws_accept_key(const char *key, size_t n, char out[29]);

#ifdef __cplusplus
}
#endif
#endif
