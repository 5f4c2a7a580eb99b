/*
** ws_stream.c: the WebSocket message stream of both ends (API in
** ws_stream.h).  libwslay does the framing through its I/O-free event
** API: this file feeds it the inner stream's bytes from a recv callback
** and collects what it sends from a send callback, then writes those
** bytes to the inner stream.  The server's upgrade is http.c's, the
** client's is ws_client.c's; both hand over to this file.
**
** Design notes
**   1. wslay reads until the recv callback says "would block": it is given
**      exactly the bytes of one inner on_read (or the bytes left over from
**      the upgrade), so one wslay_event_recv() consumes them all.
**   2. The send callback never blocks: it appends to a buffer, and after
**      wslay_event_send() returns the whole buffer becomes one write of the
**      inner stream.  So one user write is one inner write, and the user's
**      completion is that write's completion (order and KNIT_ECLOSED on
**      close come from the inner stream, stream.h).
**   3. A received binary message becomes a frame for the user: its 4-byte
**      length, then its bytes, in two on_read calls (the engine reassembles
**      frames from any split).  A zero-length message becomes a zero
**      length, which the engine refuses like any other malformed frame.
**   4. on_end is reported once: the peer's close frame (KNIT_ECLOSED), a
**      WebSocket protocol error or text message (KNIT_EPROTO, after wslay
**      or this file queued the close frame with its status), or the inner
**      stream's end.  Before OPEN the role's hooks get the inner stream's
**      events instead, and report failure through on_open.
**   5. A client stream closed while OPEN sends a close frame (1000) first,
**      so the relay sees an orderly end rather than a cut (RFC 6455, 7.1.1),
**      and closes the inner stream once that write completed.  Only when no
**      inner write is in flight: then the few bytes go out at once, and a
**      congested or stalled connection is never kept open waiting for them.
**      It does not wait for the peer's close frame.
**
**     UPGRADING --client's 101 checked: knit__ws_stream_start()--> OPEN
**       |        (a server stream starts OPEN)                      |
**       +--other answer, EOF: the role--> FAILED     peer close, error: end()--> ENDED
**
**     any state --op_close()--> CLOSING --inner on_close--> freed
**     OPEN --op_shutdown(): close frame, then the inner stream's FIN
*/
#include "ws_stream.h"

#include <bearssl.h>
#include <string.h>
#include <wslay/wslay.h>

#include "alloc.h"
#include "cred.h"
#include "frame.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

typedef struct wreq_s {
    knit_stream_write_cb cb; /* the user's completion */
    void *arg;               /* its argument */
} wreq_t;

/* ---------------------------------------------------------------------- */
/* Handshake key                                                            */

int knit__ws_accept_key(const char *key, size_t n, char out[29]) /* see ws_stream.h */
{
    char url[24], b64[32];
    uint8_t raw[18], digest[20];
    size_t k;
    br_sha1_context h;

    /* 16 bytes in base64: 22 characters and "==". */
    if (n != 24 || key[22] != '=' || key[23] != '=')
        return KNIT_EINVAL;
    for (size_t i = 0; i < 22; i++) {
        if (key[i] == '-' || key[i] == '_')
            return KNIT_EINVAL; /* base64url's, not base64's */
        url[i] = key[i] == '+' ? '-' : key[i] == '/' ? '_' : key[i];
    }
    if (knit_b64url_decode(url, 22, raw, &k) != 0 || k != 16)
        return KNIT_EINVAL;
    br_sha1_init(&h);
    br_sha1_update(&h, key, n);
    br_sha1_update(&h, WS_GUID, sizeof WS_GUID - 1);
    br_sha1_out(&h, digest);
    k = knit_b64url_encode(digest, sizeof digest, b64); /* 27 characters */
    for (size_t i = 0; i < k; i++)
        out[i] = b64[i] == '-' ? '+' : b64[i] == '_' ? '/' : b64[i];
    out[k] = '=';
    out[k + 1] = '\0';
    return 0;
}

/* ---------------------------------------------------------------------- */
/* wslay callbacks                                                          */

static ssize_t cb_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *user)
{
    knit_ws_stream_t *w = user;
    (void)flags;
    if (w->rn == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    if (len > w->rn)
        len = w->rn;
    memcpy(buf, w->rp, len);
    w->rp += len;
    w->rn -= len;
    return (ssize_t)len;
}

static ssize_t cb_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
                       void *user)
{
    knit_ws_stream_t *w = user;
    (void)flags;
    if (w->on + len > w->ocap) {
        size_t cap = (w->on + len) * 2;
        uint8_t *q = knit__realloc(w->ob, cap);
        if (!q) {
            wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
            return -1;
        }
        w->ob = q;
        w->ocap = cap;
    }
    memcpy(w->ob + w->on, data, len);
    w->on += len;
    return (ssize_t)len;
}

static int cb_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *user)
{
    knit_ws_stream_t *w = user;
    (void)ctx;
    w->role->genmask(w, buf, len);
    return 0;
}

static void end(knit_ws_stream_t *w, int code, const char *msg)
{
    if (w->ended || w->closing)
        return;
    w->ended = 1;
    knit_stream_read(w->in, 0);
    if (w->pub.cb.on_end)
        w->pub.cb.on_end(&w->pub, code, msg);
}

static void cb_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *arg,
                   void *user)
{
    knit_ws_stream_t *w = user;
    uint8_t hdr[4];
    if (w->ended || w->closing)
        return;
    if (arg->opcode == WSLAY_TEXT_FRAME) {
        static const char why[] = "binary messages only";
        wslay_event_queue_close(ctx, WSLAY_CODE_UNSUPPORTED_DATA, (const uint8_t *)why,
                                sizeof why - 1);
        wslay_event_shutdown_read(ctx);
        return;
    }
    if (arg->opcode != WSLAY_BINARY_FRAME)
        return; /* ping (answered by wslay), pong, close (after recv) */
    /* Note 3: the frame header, written by hand so that a zero length
    ** reaches the engine (knit_frame_header refuses one). */
    hdr[0] = (uint8_t)(arg->msg_length >> 24);
    hdr[1] = (uint8_t)(arg->msg_length >> 16);
    hdr[2] = (uint8_t)(arg->msg_length >> 8);
    hdr[3] = (uint8_t)arg->msg_length;
    if (w->pub.cb.on_read)
        w->pub.cb.on_read(&w->pub, hdr, sizeof hdr);
    if (arg->msg_length && !w->ended && !w->closing && w->pub.cb.on_read)
        w->pub.cb.on_read(&w->pub, arg->msg, arg->msg_length);
}

/* ---------------------------------------------------------------------- */
/* Writing                                                                  */

static void on_inner_written(knit_stream_t *in, void *arg, int status)
{
    knit_ws_stream_t *w = in->data;
    wreq_t *r = arg;
    w->inflight--;
    if (!r)
        return;
    if (r->cb)
        r->cb(&w->pub, r->arg, status);
    knit__free(r);
}

/* Lets wslay send what it has queued and writes it to the inner stream as
** one write (note 2), whose completion is cb's.  KNIT_ECLOSED when nothing
** went out (cb then is not called). */
static int flush(knit_ws_stream_t *w, knit_stream_write_cb cb, void *arg)
{
    wreq_t *r = NULL;
    uint8_t *p;
    size_t n;
    int rc;
    if (w->closing)
        return KNIT_ECLOSED;
    /* On failure the bytes collected so far still go out. */
    (void)wslay_event_send(w->ctx);
    if (w->on == 0)
        return KNIT_ECLOSED;
    if (cb && !(r = knit__malloc(sizeof *r))) {
        w->on = 0;
        return KNIT_ENOMEM;
    }
    if (r) {
        r->cb = cb;
        r->arg = arg;
    }
    p = w->ob;
    n = w->on;
    w->ob = NULL;
    w->on = w->ocap = 0;
    if ((rc = knit_stream_write(w->in, p, n, on_inner_written, r)) != 0)
        knit__free(r);
    else
        w->inflight++;
    return rc;
}

/* Feeds p[0..n) to wslay and acts on what it saw (notes 1 and 4). */
static void feed(knit_ws_stream_t *w, const uint8_t *p, size_t n)
{
    int rc;
    if (w->feeding || w->ended || w->closing)
        return;
    w->feeding = 1;
    w->rp = p;
    w->rn = n;
    rc = wslay_event_recv(w->ctx);
    w->rp = NULL;
    w->rn = 0;
    w->feeding = 0;
    if (w->closing)
        return;
    flush(w, NULL, NULL); /* pongs, close frames */
    if (rc != 0) {
        end(w, rc == WSLAY_ERR_NOMEM ? KNIT_ENOMEM : KNIT_EIO, "websocket failure");
    } else if (!wslay_event_want_read(w->ctx) || !wslay_event_get_read_enabled(w->ctx)) {
        if (w->role->too_big && wslay_event_get_close_sent(w->ctx) &&
            wslay_event_get_status_code_sent(w->ctx) == WSLAY_CODE_MESSAGE_TOO_BIG)
            w->role->too_big(w);
        if (wslay_event_get_close_received(w->ctx))
            end(w, KNIT_ECLOSED, NULL);
        else
            end(w, KNIT_EPROTO, "websocket protocol error");
    }
}

void knit__ws_stream_start(knit_ws_stream_t *w, const uint8_t *rest, size_t n) /* see ws_stream.h */
{
    w->state = KNIT_WS_OPEN;
    if (w->pub.cb.on_open)
        w->pub.cb.on_open(&w->pub, 0, NULL);
    if (n && w->state == KNIT_WS_OPEN && !w->closing)
        feed(w, rest, n);
}

/* ---------------------------------------------------------------------- */
/* Stream operations                                                        */

static int op_write(knit_stream_t *st, uint8_t *p, size_t n, knit_stream_write_cb cb, void *arg)
{
    knit_ws_stream_t *w = (knit_ws_stream_t *)st;
    size_t off = 0;
    if (w->closing || w->state != KNIT_WS_OPEN || !wslay_event_get_write_enabled(w->ctx)) {
        knit__free(p);
        return KNIT_ECLOSED;
    }
    while (off < n) {
        struct wslay_event_msg msg;
        uint32_t len;
        if (n - off < 4 || (len = knit_frame_length(p + off)) > n - off - 4) {
            knit__free(p);
            return KNIT_EINVAL; /* not whole frames (ws_stream.h) */
        }
        msg.opcode = WSLAY_BINARY_FRAME;
        msg.msg = p + off + 4;
        msg.msg_length = len;
        /* wslay copies the message. */
        if (wslay_event_queue_msg(w->ctx, &msg) != 0) {
            knit__free(p);
            return KNIT_ECLOSED;
        }
        off += 4 + (size_t)len;
    }
    knit__free(p);
    return flush(w, cb, arg);
}

static int op_read(knit_stream_t *st, int on)
{
    knit_ws_stream_t *w = (knit_ws_stream_t *)st;
    int rc;
    if (w->closing || w->ended || w->state == KNIT_WS_FAILED)
        return 0;
    if ((rc = knit_stream_read(w->in, on)) != 0)
        return rc;
    if (on && w->nstash && !w->feeding) {
        uint8_t *p = w->stash;
        size_t n = w->nstash;
        w->stash = NULL;
        w->nstash = 0;
        feed(w, p, n);
        knit__free(p);
    }
    return 0;
}

static int op_shutdown(knit_stream_t *st)
{
    knit_ws_stream_t *w = (knit_ws_stream_t *)st;
    if (w->closing)
        return KNIT_ECLOSED;
    if (w->state == KNIT_WS_OPEN && !wslay_event_get_close_sent(w->ctx)) {
        wslay_event_queue_close(w->ctx, WSLAY_CODE_NORMAL_CLOSURE, NULL, 0);
        flush(w, NULL, NULL);
    }
    return knit_stream_shutdown(w->in);
}

/* The close frame of op_close is out (or failed): now the inner stream. */
static void close_frame_written(knit_stream_t *st, void *arg, int status)
{
    knit_ws_stream_t *w = (knit_ws_stream_t *)st;
    (void)arg;
    (void)status;
    knit_stream_close(w->in);
}

static void op_close(knit_stream_t *st)
{
    knit_ws_stream_t *w = (knit_ws_stream_t *)st;
    if (w->closing)
        return;
    /* Note 5: a client ends its session with a close frame (1000) when
    ** the connection is not congested. */
    if (w->role->client && w->state == KNIT_WS_OPEN && !w->ended && w->inflight == 0 &&
        wslay_event_get_write_enabled(w->ctx) && !wslay_event_get_close_sent(w->ctx)) {
        wslay_event_queue_close(w->ctx, WSLAY_CODE_NORMAL_CLOSURE, NULL, 0);
        if (flush(w, close_frame_written, NULL) == 0) {
            w->closing = 1;
            return;
        }
    }
    w->closing = 1;
    knit_stream_close(w->in);
}

static int op_peer(knit_stream_t *st, char *buf, size_t n)
{
    knit_ws_stream_t *w = (knit_ws_stream_t *)st;
    return knit_stream_peer(w->in, buf, n);
}

static const knit_stream_ops_t WS_OPS = {op_write, op_read, op_shutdown, op_close, op_peer};

/* ---------------------------------------------------------------------- */
/* Inner stream callbacks                                                   */

static void on_inner_open(knit_stream_t *in, int status, const char *msg)
{
    knit_ws_stream_t *w = in->data;
    if (w->closing || w->state != KNIT_WS_UPGRADING)
        return;
    if (w->role->open)
        w->role->open(w, status, msg);
}

static void on_inner_read(knit_stream_t *in, const uint8_t *p, size_t n)
{
    knit_ws_stream_t *w = in->data;
    if (w->closing)
        return;
    if (w->state == KNIT_WS_UPGRADING) {
        if (w->role->read)
            w->role->read(w, p, n);
    } else if (w->state == KNIT_WS_OPEN) {
        feed(w, p, n);
    }
}

static void on_inner_end(knit_stream_t *in, int code, const char *msg)
{
    knit_ws_stream_t *w = in->data;
    if (w->state == KNIT_WS_UPGRADING) {
        if (w->role->end)
            w->role->end(w, code, msg);
    } else if (w->state == KNIT_WS_OPEN) {
        end(w, code, msg);
    }
}

static void on_inner_closed(knit_stream_t *in)
{
    knit_ws_stream_t *w = in->data;
    if (w->pub.cb.on_close)
        w->pub.cb.on_close(&w->pub);
    wslay_event_context_free(w->ctx);
    if (w->role->fini)
        w->role->fini(w);
    knit__free(w->stash);
    knit__free(w->ob);
    knit__free(w);
}

int knit__ws_stream_init(knit_ws_stream_t *w, const knit_ws_role_t *role, knit_stream_t *inner,
                         size_t max_msg, const uint8_t *rest, size_t nrest) /* see ws_stream.h */
{
    static const struct wslay_event_callbacks server_cbs = {cb_recv, cb_send, NULL,  NULL,
                                                            NULL,    NULL,    cb_msg};
    static const struct wslay_event_callbacks client_cbs = {cb_recv, cb_send, cb_genmask, NULL,
                                                            NULL,    NULL,    cb_msg};
    static const knit_stream_cbs_t inner_cbs = {on_inner_open, on_inner_read, on_inner_end,
                                                on_inner_closed};
    int rc;
    if (nrest && !(w->stash = knit__memdup(rest, nrest)))
        return KNIT_ENOMEM;
    w->nstash = nrest;
    rc = role->client ? wslay_event_context_client_init(&w->ctx, &client_cbs, w)
                      : wslay_event_context_server_init(&w->ctx, &server_cbs, w);
    if (rc != 0) {
        knit__free(w->stash);
        w->stash = NULL;
        w->nstash = 0;
        return KNIT_ENOMEM;
    }
    wslay_event_config_set_max_recv_msg_length(w->ctx, max_msg);
    w->role = role;
    w->state = role->client ? KNIT_WS_UPGRADING : KNIT_WS_OPEN;
    w->in = inner;
    w->pub.ops = &WS_OPS;
    inner->cb = inner_cbs;
    inner->data = w;
    return 0;
}
