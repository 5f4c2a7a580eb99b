/*
** tls.h: TLS streams (stream.h) over TCP, with BearSSL: outgoing
** connections that check the relay's certificate chain and host name, and
** server-side streams wrapped around accepted TCP connections.  Only TLS
** 1.2 is spoken (BearSSL has no TLS 1.3), with BearSSL's "full" profile of
** cipher suites; renegotiation is refused.
**
** What the glue feeds and gets: a TLS stream is used exactly like a TCP
** stream.  It encrypts what is written, decrypts what arrives, and reports
** on_open (client side) only once the handshake is done, so a user sees an
** open stream only when the peer is verified.  A failed handshake is
** reported as KNIT_ETLS with a message that names the reason in words
** ("certificate not trusted", "certificate expired or not yet valid",
** "certificate is not for HOST", ...): through on_open for a client stream,
** through on_end for a server one.
**
** Credentials (knit_tls_conf_t) are loaded from PEM files once and shared:
** every stream holds a reference to the configuration it started with, so
** a server may load new credentials (a certificate renewal) and use them
** for new connections while existing ones keep theirs.
**
** Ownership: knit_tls_conf_*() return a configuration with one reference,
** the caller's; knit_tls_conf_unref() drops one and frees on the last.
** Streams take their own reference.  knit_tls_accept() takes the inner
** stream over: from then on the TLS stream owns and closes it.  Strings
** are copied.
*/
#ifndef KNIT_TLS_H
#define KNIT_TLS_H

#include <uv.h>

#include "stream.h"
#include "tls_conf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Connects to addr over TCP and runs a TLS handshake as a client of
** server_name (the name the certificate must carry, also sent as SNI).
** Like knit_tcp_connect: the stream is made at once (*out) and cb->on_open
** reports the result, after the handshake. */
KNIT_EXTERN int knit_tls_connect(uv_loop_t *loop, const struct sockaddr *addr,
                                 knit_tls_conf_t *conf, const char *server_name,
                                 const knit_stream_cbs_t *cb, void *data,
                                 knit_stream_t **out /* OUT */);

/* Wraps an accepted stream (inner, no callbacks set yet) as the server of
** a TLS session with the credentials in conf (a server configuration).
** The new stream has no callbacks yet, like an accepted TCP stream: the
** caller sets st->cb and st->data, then starts reading.  On failure inner
** is closed quietly and *out is NULL. */
KNIT_EXTERN int knit_tls_accept(knit_stream_t *inner, knit_tls_conf_t *conf,
                                knit_stream_t **out /* OUT */);

#ifdef __cplusplus
}
#endif
#endif
