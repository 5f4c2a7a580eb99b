/*
** lp_client.h: an HTTP long-polling client stream (stream.h), for clients
** that cannot hold a stream open (no WebSocket through a proxy, proxies
** that cut long connections).  The relay serves the protocol over plain
** HTTP/1.1 requests at /v1/lp of its --http-listen port
** (docs/PROTOCOL.md, section 1.3); this stream speaks exactly those
** requests, so the sync client's glue and protocol engine use it like a
** TCP stream.
**
** What the glue feeds and gets: the stream opens a session (POST /v1/lp,
** 201 and a session id) and only then reports on_open(0).  Frames the
** user writes are POSTed to /v1/lp/<sid>, one POST at a time, in order;
** a write completes when the relay answered 204 for all of its bytes.
** Meanwhile one GET /v1/lp/<sid>?cursor=N always waits for the relay's
** output; each whole answer is handed to on_read and the next GET asks
** from N plus its length.  A GET that fails (a cut, a timeout, a 5xx) is
** sent again with the same cursor, so the relay answers the same bytes:
** nothing is lost or handed over twice.  Failures that retrying cannot
** mend end input through on_end: the relay ended the session (410, after
** its last bytes were read: KNIT_ECLOSED), forgot it (404: KNIT_ECLOSED),
** a POST whose fate is unknown (KNIT_EIO: the engine starts a new session,
** which is safe where resending might not be), GETs failing again and
** again (KNIT_EIO).  knit_stream_close() sends DELETE /v1/lp/<sid> (the
** relay sees the end of the stream) before on_close, bounded by a short
** timeout.
**
** HTTP is libcurl's (the multi interface, driven by the stream's libuv
** loop: one uv_poll_t per socket curl opens and one uv_timer_t; the loop
** is never blocked).  https:// checks the relay's certificate against
** ca_file or the system bundle, and its name against server_name or the
** URL's host; a refusal is on_open(KNIT_ETLS) with the TLS stream's words
** for which check failed ("TLS: certificate not trusted ...", "...
** expired or not yet valid", "... is not for NAME"), then curl's.  libcurl's proxy environment
*variables (http_proxy,
** https_proxy, no_proxy) apply, as they do for curl(1).  Every request has
** a timeout.
**
** Ownership: strings in the configuration are copied.  A buffer handed to
** knit_stream_write() is the stream's (stream.h).  The stream lives until
** its on_close returns.  curl allocates with the C library's malloc, not
** knit's wrapper.
*/
#ifndef KNIT_LP_CLIENT_H
#define KNIT_LP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "stream.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The path the relay serves long-polling at. */
#define KNIT_LP_DEFAULT_PATH "/v1/lp"

/* Configuration.  Zero fields take the defaults in brackets. */
typedef struct knit_lp_client_conf_s {
    const char *url;         /* http://HOST[:PORT][/PATH] or https://...; PORT [80, 443],
                                PATH ["/v1/lp"] (required) */
    const char *ca_file;     /* https: the CAs to trust, PEM
                                [/etc/ssl/certs/ca-certificates.crt] */
    const char *server_name; /* https: the name the certificate must carry, also sent as
                                SNI [HOST]; the connection still goes to HOST */
    uint64_t connect_ms;     /* TCP (and TLS) connect of any request [10000] */
    uint64_t request_ms;     /* a whole POST or DELETE [30000] */
    uint64_t get_ms;         /* a whole GET, which the relay may hold 20 s [30000] */
    unsigned get_retries;    /* GETs failing in a row before input ends [5] */
} knit_lp_client_conf_t;

/* Splits a long-poll URL: *tls (1 for https), the host (without brackets)
** into host[0..hn), *port and the path into path[0..pn).  0, or KNIT_EINVAL
** when it is not http(s)://HOST[:PORT][/PATH] with a path of visible ASCII
** without '?' or '#'. */
KNIT_EXTERN int knit_lp_url_parse(const char *url, int *tls, char *host, size_t hn, int *port,
                                  char *path, size_t pn);

/* A long-poll stream on loop.  It starts opening the session at once and
** reports through cb->on_open.  KNIT_EINVAL for a bad URL, KNIT_ENOMEM, or
** KNIT_EIO when libcurl cannot be set up. */
KNIT_EXTERN int knit_lp_client(uv_loop_t *loop, const knit_lp_client_conf_t *conf,
                               const knit_stream_cbs_t *cb, void *data,
                               knit_stream_t **out /* OUT */);

#ifdef __cplusplus
}
#endif
#endif
