/*
** stream.h: the byte-stream seam.  The sync client's and the relay's glue
** (transport/client/client.c, transport/relay/relay.c) move bytes through
** this interface only, never through sockets, so that plain TCP (tcp.c),
** TLS (tls.c), WebSocket (ws_client.c, and the relay's ws.c) and HTTP
** long-polling (lp_client.c, and the relay's lp.c) streams are
** interchangeable under them.
**
** A stream is an ordered, reliable byte pipe on a libuv loop.  The glue
** writes to it with a completion, is told through callbacks when bytes
** arrive, when the other side finished or the stream failed, and when the
** stream is closed; it may pause reading and half-close.  Every callback
** runs on the loop's thread.
**
**     (connecting) --on_open(0)--> OPEN --on_end(code)--> ENDED
**          |                        |                       |
**          +------ knit_stream_close() from any state ------+--> on_close --> freed
**
** Ownership: a buffer handed to knit_stream_write() belongs to the stream
** from then on, which frees it with knit__free() once written or failed
** (also when the write is refused at once).  A stream lives until its
** on_close callback returns; the glue must not use it afterwards.  Closing
** cancels queued writes: their completions run, with KNIT_ECLOSED, before
** on_close.
*/
#ifndef KNIT_STREAM_H
#define KNIT_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "knit_errors.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct knit_stream_s knit_stream_t;

/* What a stream tells its user.  Any may be NULL except on_close. */
typedef struct knit_stream_cbs_s {
    /* A connect finished: status 0, or a KNIT_E* code and libuv's message
    ** (the stream then only waits for knit_stream_close()). */
    void (*on_open)(knit_stream_t *st, int status, const char *msg);
    /* p[0..n) arrived (n > 0); valid during the call only. */
    void (*on_read)(knit_stream_t *st, const uint8_t *p, size_t n);
    /* No more input: the peer finished (KNIT_ECLOSED, msg NULL) or the
    ** stream failed (another code and a message).  Called at most once. */
    void (*on_end)(knit_stream_t *st, int code, const char *msg);
    /* The stream is closed; it is freed when this returns. */
    void (*on_close)(knit_stream_t *st);
} knit_stream_cbs_t;

/* Completion of one write: 0 when written, else KNIT_ECLOSED (closed
** before it went out) or another code. */
typedef void (*knit_stream_write_cb)(knit_stream_t *st, void *arg, int status);

/* One implementation's operations (see tcp.c). */
typedef struct knit_stream_ops_s {
    int (*write)(knit_stream_t *st, uint8_t *p, size_t n, knit_stream_write_cb cb, void *arg);
    int (*read)(knit_stream_t *st, int on);
    int (*shutdown)(knit_stream_t *st);
    void (*close)(knit_stream_t *st);
    int (*peer)(knit_stream_t *st, char *buf, size_t n);
} knit_stream_ops_t;

/* The public part of every stream; implementations put it first. */
struct knit_stream_s {
    const knit_stream_ops_t *ops; /* the implementation */
    knit_stream_cbs_t cb;         /* the user's callbacks */
    void *data;                   /* the user's, never touched by the stream */
};

/* Queues p[0..n) for writing (the stream owns p from now on).  cb (may be
** NULL) runs once when it is written or failed.  A non-zero return means
** it was not queued (p is freed, cb is not called). */
static inline int knit_stream_write(knit_stream_t *st, uint8_t *p, size_t n,
                                    knit_stream_write_cb cb, void *arg)
{
    return st->ops->write(st, p, n, cb, arg);
}
/* Starts (on = 1) or stops (0) delivering input to on_read. */
static inline int knit_stream_read(knit_stream_t *st, int on)
{
    return st->ops->read(st, on);
}
/* Half-closes: the peer sees the end of the stream once every queued write
** is out; input still arrives.  A failure is reported through on_end. */
static inline int knit_stream_shutdown(knit_stream_t *st)
{
    return st->ops->shutdown(st);
}
/* Closes; on_close follows (never from inside this call).  Calling it
** again is harmless. */
static inline void knit_stream_close(knit_stream_t *st)
{
    st->ops->close(st);
}
/* The peer's address as text ("1.2.3.4:5" or "[::1]:5") into buf[0..n). */
static inline int knit_stream_peer(knit_stream_t *st, char *buf, size_t n)
{
    return st->ops->peer(st, buf, n);
}

#ifdef __cplusplus
}
#endif
#endif
