/*
** tcp.h: plain TCP streams (stream.h) over libuv: outgoing connections for
** the sync client, listeners for the relay.
**
** Ownership: a listener lives from knit_tcp_listen() until its close
** callback; streams it accepted live on after it is closed.  Addresses are
** copied.
*/
#ifndef KNIT_TCP_H
#define KNIT_TCP_H

#include <uv.h>

#include "stream.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct knit_tcp_listener_s knit_tcp_listener_t;

/* Connects to addr.  The stream is made at once (*out) and reports the
** result through cb->on_open; reading starts when the connection is open.
** Non-zero (and *out NULL) when not even the attempt could start. */
KNIT_EXTERN int knit_tcp_connect(uv_loop_t *loop, const struct sockaddr *addr,
                                 const knit_stream_cbs_t *cb, void *data,
                                 knit_stream_t **out /* OUT */);

/* A new connection on listener l.  The stream has no callbacks yet: the
** function sets st->cb and st->data, then starts reading. */
typedef void (*knit_tcp_accept_fn)(void *data, knit_tcp_listener_t *l, knit_stream_t *st);

/* Listens on host (an IPv4 or IPv6 literal) and port (0: an ephemeral
** one).  KNIT_EINVAL when host is not an IP literal, KNIT_EIO when it
** cannot be bound (msg[0..n) says why). */
KNIT_EXTERN int knit_tcp_listen(uv_loop_t *loop, const char *host, int port,
                                knit_tcp_accept_fn on_accept, void *data, char *msg, size_t n,
                                knit_tcp_listener_t **out /* OUT */);
/* The bound address: host text into buf[0..n) and the port. */
KNIT_EXTERN void knit_tcp_listener_addr(knit_tcp_listener_t *l, char *buf, size_t n,
                                        int *port /* OUT */);
/* Stops accepting and closes; cb (may be NULL) runs once it is closed, and
** the listener is freed after it returns.  NULL: no-op. */
KNIT_EXTERN void knit_tcp_listener_close(knit_tcp_listener_t *l,
                                         void (*cb)(void *data, knit_tcp_listener_t *l));

/* The KNIT_E* code for a libuv error. */
KNIT_EXTERN int knit_uv_error(int uverr);

#ifdef __cplusplus
}
#endif
#endif
