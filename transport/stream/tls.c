/*
** tls.c: TLS streams (API in tls.h and stream.h): a stream that runs
** BearSSL's engine over an inner byte stream (TCP).  BearSSL does no I/O:
** it exposes four buffers (records to send, records received, application
** data to send, application data received), and this file moves bytes
** between them and the inner stream from libuv callbacks, never blocking.
**
** Design notes
**   1. One function, pump(), moves every byte: records out of the engine
**      into one inner write, received ciphertext into the engine, plaintext
**      out to on_read, queued writes into the engine.  Every callback ends
**      in pump(); pump() is never entered twice (a user callback it calls
**      may write or pause: that only sets state and asks for another
**      round).
**   2. A write's completion runs once its bytes are in the engine and the
**      inner write that carries their records has completed.  Writes are
**      numbered by their end offset in the plaintext; each inner write
**      carries the offset of the last engine flush: every byte before it
**      is in that write or an earlier one.  (A plaintext offset fits a
**      pointer-sized argument on the 64-bit systems knit runs on.)  The user's buffer is freed as
**      soon as the engine has copied it.
**   3. Input that the engine cannot take yet (it holds decrypted data the
**      user paused on) waits in `pend`, and the inner stream stops reading
**      until it is gone: at most one inner read is ever held.
**   4. on_open (client) is reported when the handshake is done, so a user
**      only ever sees a verified peer; a failed handshake is KNIT_ETLS
**      with BearSSL's reason in words.  After the handshake, the engine
**      closing cleanly (close_notify) or the inner stream's EOF is the end
**      of input (KNIT_ECLOSED): the protocol is framed, so a truncated
**      stream cannot be misread as a shorter complete one.
**   5. shutdown() sends close_notify once every queued write is in the
**      engine, then half-closes the inner stream; input after that is
**      discarded by the engine until the peer closes too.
**   6. Close callbacks are the inner stream's: all write completions run
**      (KNIT_ECLOSED for those not written) before on_close, as for TCP.
**
**     HANDSHAKE --engine can send app data: pump()--> OPEN --engine closed,
**         |                                             |  EOF: end()--> ENDED
**         +-- handshake failed: fail() --> ENDED        |
**         +---------- knit_stream_close() from any state: op_close() --> on_close
*/
#include "tls.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "tcp.h"
#include "tls_int.h"

#define OUT_BATCH (256u * 1024) /* records gathered into one inner write, at most */

typedef struct wreq_s {
    struct wreq_s *next;     /* queue order */
    uint8_t *p;              /* the user's bytes, NULL once the engine took them */
    size_t n;                /* their count */
    size_t off;              /* bytes already given to the engine */
    uint64_t end;            /* plaintext offset at its end (note 2) */
    knit_stream_write_cb cb; /* completion, or NULL */
    void *arg;               /* its argument */
} wreq_t;

typedef struct tls_s {
    knit_stream_t pub;          /* the public part; first */
    knit_stream_t *in;          /* the inner stream; in->data = this */
    knit_tls_conf_t *conf;      /* credentials (a reference) */
    br_ssl_engine_context *eng; /* &u.cc.eng or &u.sc.eng */
    union {
        br_ssl_client_context cc; /* client side */
        br_ssl_server_context sc; /* server side */
    } u;
    br_x509_minimal_context *xc; /* client: the chain validator (own allocation) */
    char name[256];              /* client: the server name checked */
    int client;                  /* 1: client, 0: server */
    int open;                    /* handshake done */
    int ended;                   /* on_end or a failed on_open reported */
    int closing;                 /* op_close called */
    int paused;                  /* the user stopped reading */
    int reading;                 /* the inner stream was asked to read */
    int shut_req;                /* shutdown asked for (note 5) */
    int shut_done;               /* close_notify queued and inner half-closed */
    int in_pump;                 /* pump is running (note 1) */
    int again;                   /* pump was asked for while running */
    int unflushed;               /* app bytes given since the last flush */
    uint8_t *pend;               /* ciphertext waiting for the engine (note 3) */
    size_t npend;                /* its length */
    wreq_t *wq;                  /* writes not yet complete, oldest first */
    wreq_t *wtail;               /* last one */
    uint64_t taken;              /* plaintext bytes the engine took */
    uint64_t flushed;            /* of them, those before the last flush (note 2) */
    uint8_t *iobuf;              /* the engine's record buffers */
} tls_t;

static const char *alert_name(int a)
{
    switch (a) {
    case 0:
        return "close_notify";
    case 10:
        return "unexpected_message";
    case 20:
        return "bad_record_mac";
    case 40:
        return "handshake_failure";
    case 42:
        return "bad_certificate";
    case 43:
        return "unsupported_certificate";
    case 44:
        return "certificate_revoked";
    case 45:
        return "certificate_expired";
    case 46:
        return "certificate_unknown";
    case 47:
        return "illegal_parameter";
    case 48:
        return "unknown_ca";
    case 50:
        return "decode_error";
    case 51:
        return "decrypt_error";
    case 70:
        return "protocol_version";
    case 71:
        return "insufficient_security";
    case 80:
        return "internal_error";
    case 112:
        return "unrecognized_name";
    default:
        return "alert";
    }
}

/* The engine's error in words, into buf. */
static const char *describe(tls_t *t, int err, char *buf, size_t n)
{
    if (err == BR_ERR_X509_BAD_SERVER_NAME)
        snprintf(buf, n, "TLS: certificate is not for %s (BearSSL error %d)", t->name, err);
    else if (err >= BR_ERR_RECV_FATAL_ALERT && err < BR_ERR_RECV_FATAL_ALERT + 256)
        snprintf(buf, n, "TLS: the peer refused the handshake: %s alert (%d)",
                 alert_name(err - BR_ERR_RECV_FATAL_ALERT), err - BR_ERR_RECV_FATAL_ALERT);
    else if (err >= BR_ERR_SEND_FATAL_ALERT && err < BR_ERR_SEND_FATAL_ALERT + 256)
        snprintf(buf, n, "TLS: sent a fatal %s alert", alert_name(err - BR_ERR_SEND_FATAL_ALERT));
    else
        snprintf(buf, n, "TLS: %s (BearSSL error %d)", knit_tls_strerror(err), err);
    return buf;
}

/* ---------------------------------------------------------------------- */
/* Ending                                                                   */

static void end(tls_t *t, int code, const char *msg)
{
    if (t->ended || t->closing)
        return;
    t->ended = 1;
    if (t->reading) {
        t->reading = 0;
        knit_stream_read(t->in, 0);
    }
    if (!t->open && t->client) {
        if (t->pub.cb.on_open)
            t->pub.cb.on_open(&t->pub, code == KNIT_ECLOSED && !msg ? KNIT_ECLOSED : code,
                              msg ? msg
                                  : "the peer closed the connection during the TLS handshake");
        return;
    }
    if (t->pub.cb.on_end)
        t->pub.cb.on_end(&t->pub, code, msg);
}

/* Completes the writes whose bytes are all out (note 2). */
static void complete_upto(tls_t *t, uint64_t upto, int status)
{
    while (t->wq && t->wq->p == NULL && t->wq->off == t->wq->n && t->wq->end <= upto) {
        wreq_t *w = t->wq;
        t->wq = w->next;
        if (!t->wq)
            t->wtail = NULL;
        if (w->cb)
            w->cb(&t->pub, w->arg, status);
        knit__free(w);
    }
}

/* ---------------------------------------------------------------------- */
/* The pump (note 1)                                                        */

static void on_inner_written(knit_stream_t *st, void *arg, int status)
{
    tls_t *t = st->data;
    uint64_t upto = (uint64_t)(uintptr_t)arg;
    complete_upto(t, upto, status == 0 ? 0 : t->closing ? KNIT_ECLOSED : status);
}

/* Writes the records gathered in out[0..n) to the inner stream. */
static int send_records(tls_t *t, uint8_t *out, size_t n)
{
    /* Everything taken before the last flush is in these records or in
    ** earlier ones (note 2). */
    void *arg = (void *)(uintptr_t)t->flushed;
    int rc = knit_stream_write(t->in, out, n, on_inner_written, arg);
    if (rc != 0)
        end(t, rc, knit_strerror(rc));
    return rc;
}

static void pump(tls_t *t);

static void set_reading(tls_t *t)
{
    int want = !t->ended && !t->closing && t->npend == 0 && (!t->open || !t->paused);
    if (t->shut_done)
        want = !t->ended && !t->closing && t->npend == 0; /* discard until the peer closes */
    if (want == t->reading)
        return;
    t->reading = want;
    if (knit_stream_read(t->in, want) != 0 && want)
        t->reading = 0;
}

static void pump_once(tls_t *t)
{
    uint8_t *out = NULL;
    size_t nout = 0, cap = 0;
    unsigned st;

    for (;;) {
        if (t->closing || t->ended)
            break;
        st = br_ssl_engine_current_state(t->eng);
        if (st & BR_SSL_CLOSED) {
            int err = br_ssl_engine_last_error(t->eng);
            char msg[320];
            if (nout) {
                send_records(t, out, nout); /* e.g. our alert */
                out = NULL;
                nout = 0;
            }
            if (err == BR_ERR_OK && t->open)
                end(t, KNIT_ECLOSED, NULL);
            else
                end(t, KNIT_ETLS, describe(t, err, msg, sizeof msg));
            break;
        }
        if (!t->open && (st & (BR_SSL_SENDAPP | BR_SSL_RECVAPP))) {
            t->open = 1;
            if (t->client && t->pub.cb.on_open) {
                t->pub.cb.on_open(&t->pub, 0, NULL);
                continue; /* the callback may have closed or written */
            }
        }
        if (st & BR_SSL_SENDREC) {
            size_t len;
            unsigned char *b = br_ssl_engine_sendrec_buf(t->eng, &len);
            if (nout + len > cap) {
                size_t ncap = cap ? cap : 16384;
                uint8_t *q;
                while (ncap < nout + len)
                    ncap *= 2;
                if (!(q = knit__realloc(out, ncap))) {
                    knit__free(out);
                    end(t, KNIT_ENOMEM, "out of memory");
                    return;
                }
                out = q;
                cap = ncap;
            }
            memcpy(out + nout, b, len);
            nout += len;
            br_ssl_engine_sendrec_ack(t->eng, len);
            if (nout >= OUT_BATCH) {
                if (send_records(t, out, nout) != 0)
                    return;
                out = NULL;
                nout = cap = 0;
            }
            continue;
        }
        if ((st & BR_SSL_RECVAPP) && (!t->paused || t->shut_done)) {
            size_t len;
            unsigned char *b = br_ssl_engine_recvapp_buf(t->eng, &len);
            if (t->shut_done || !t->pub.cb.on_read) {
                br_ssl_engine_recvapp_ack(t->eng, len); /* note 5: discarded */
                continue;
            }
            /* b stays valid during the call: the engine changes nothing
            ** until the ack. */
            t->pub.cb.on_read(&t->pub, b, len);
            if (!t->closing)
                br_ssl_engine_recvapp_ack(t->eng, len);
            continue;
        }
        if ((st & BR_SSL_RECVREC) && t->npend) {
            size_t len;
            unsigned char *b = br_ssl_engine_recvrec_buf(t->eng, &len);
            size_t k = len < t->npend ? len : t->npend;
            memcpy(b, t->pend, k);
            br_ssl_engine_recvrec_ack(t->eng, k);
            memmove(t->pend, t->pend + k, t->npend - k);
            t->npend -= k;
            if (!t->npend) {
                knit__free(t->pend);
                t->pend = NULL;
            }
            continue;
        }
        if (st & BR_SSL_SENDAPP) {
            wreq_t *w = t->wq;
            while (w && !w->p)
                w = w->next;
            if (w) {
                size_t len;
                unsigned char *b = br_ssl_engine_sendapp_buf(t->eng, &len);
                size_t k = len < w->n - w->off ? len : w->n - w->off;
                memcpy(b, w->p + w->off, k);
                br_ssl_engine_sendapp_ack(t->eng, k);
                w->off += k;
                t->taken += k;
                t->unflushed = 1;
                if (w->off == w->n) {
                    knit__free(w->p);
                    w->p = NULL;
                }
                continue;
            }
            if (t->unflushed) {
                t->unflushed = 0;
                br_ssl_engine_flush(t->eng, 0);
                t->flushed = t->taken;
                continue;
            }
            if (t->shut_req && !t->shut_done) {
                /* Note 5: every write is in the engine. */
                t->shut_done = 1;
                br_ssl_engine_close(t->eng);
                continue;
            }
        }
        break;
    }
    if (nout) {
        if (send_records(t, out, nout) != 0)
            return;
    } else {
        knit__free(out);
    }
    if (t->shut_done == 1 && !t->ended && !t->closing) {
        t->shut_done = 2;
        if (knit_stream_shutdown(t->in) != 0)
            end(t, KNIT_ECLOSED, NULL);
    }
    set_reading(t);
}

static void pump(tls_t *t)
{
    if (t->in_pump) {
        t->again = 1;
        return;
    }
    t->in_pump = 1;
    do {
        t->again = 0;
        pump_once(t);
    } while (t->again && !t->closing && !t->ended);
    t->in_pump = 0;
}

/* ---------------------------------------------------------------------- */
/* The inner stream's callbacks                                             */

static void on_inner_open(knit_stream_t *st, int status, const char *msg)
{
    tls_t *t = st->data;
    if (t->closing)
        return;
    if (status) {
        t->ended = 1;
        if (t->pub.cb.on_open)
            t->pub.cb.on_open(&t->pub, status, msg);
        return;
    }
    t->reading = 1; /* a TCP stream reads once connected */
    pump(t);
}

static void on_inner_read(knit_stream_t *st, const uint8_t *p, size_t n)
{
    tls_t *t = st->data;
    uint8_t *q;
    if (t->closing || t->ended)
        return;
    /* Into pend, which pump() empties into the engine (note 3). */
    if (!(q = knit__realloc(t->pend, t->npend + n))) {
        end(t, KNIT_ENOMEM, "out of memory");
        return;
    }
    memcpy(q + t->npend, p, n);
    t->pend = q;
    t->npend += n;
    pump(t);
}

static void on_inner_end(knit_stream_t *st, int code, const char *msg)
{
    tls_t *t = st->data;
    t->reading = 0;
    if (t->closing || t->ended)
        return;
    if (t->npend)
        pump(t); /* what arrived before the end goes first */
    if (code == KNIT_ECLOSED && !msg && t->open)
        end(t, KNIT_ECLOSED, NULL); /* note 4 */
    else
        end(t, code, msg);
}

static void on_inner_closed(knit_stream_t *st)
{
    tls_t *t = st->data;
    /* Note 6: writes never handed to the inner stream end here. */
    while (t->wq) {
        wreq_t *w = t->wq;
        t->wq = w->next;
        knit__free(w->p);
        if (w->cb)
            w->cb(&t->pub, w->arg, KNIT_ECLOSED);
        knit__free(w);
    }
    if (t->pub.cb.on_close)
        t->pub.cb.on_close(&t->pub);
    knit__free(t->pend);
    knit__free(t->xc);
    knit__free(t->iobuf);
    knit_tls_conf_unref(t->conf);
    knit__free(t);
}

static const knit_stream_cbs_t INNER_CBS = {on_inner_open, on_inner_read, on_inner_end,
                                            on_inner_closed};

/* ---------------------------------------------------------------------- */
/* Stream operations                                                        */

static int op_write(knit_stream_t *st, uint8_t *p, size_t n, knit_stream_write_cb cb, void *arg)
{
    tls_t *t = (tls_t *)st;
    wreq_t *w;
    if (t->closing || t->ended || t->shut_req) {
        knit__free(p);
        return KNIT_ECLOSED;
    }
    if (!(w = knit__calloc(1, sizeof *w))) {
        knit__free(p);
        return KNIT_ENOMEM;
    }
    w->p = p;
    w->n = n;
    w->cb = cb;
    w->arg = arg;
    w->end = (t->wtail ? t->wtail->end : t->taken) + n;
    if (!n) {
        knit__free(p);
        w->p = NULL;
    }
    if (t->wtail)
        t->wtail->next = w;
    else
        t->wq = w;
    t->wtail = w;
    pump(t);
    return 0;
}

static int op_read(knit_stream_t *st, int on)
{
    tls_t *t = (tls_t *)st;
    if (t->closing || t->ended)
        return 0;
    t->paused = !on;
    pump(t);
    return 0;
}

static int op_shutdown(knit_stream_t *st)
{
    tls_t *t = (tls_t *)st;
    if (t->closing || t->ended)
        return KNIT_ECLOSED;
    t->shut_req = 1;
    pump(t);
    return 0;
}

static void op_close(knit_stream_t *st)
{
    tls_t *t = (tls_t *)st;
    if (t->closing)
        return;
    t->closing = 1;
    knit_stream_close(t->in);
}

static int op_peer(knit_stream_t *st, char *buf, size_t n)
{
    tls_t *t = (tls_t *)st;
    return knit_stream_peer(t->in, buf, n);
}

static const knit_stream_ops_t TLS_OPS = {op_write, op_read, op_shutdown, op_close, op_peer};

/* A TLS stream for conf's role; not yet attached to an inner stream. */
static tls_t *tls_new(knit_tls_conf_t *conf, const char *server_name)
{
    tls_t *t = knit__calloc(1, sizeof *t);
    if (!t)
        return NULL;
    if (!(t->iobuf = knit__malloc(BR_SSL_BUFSIZE_BIDI))) {
        knit__free(t);
        return NULL;
    }
    t->pub.ops = &TLS_OPS;
    t->client = !conf->server;
    if (t->client) {
        if (!(t->xc = knit__malloc(sizeof *t->xc))) {
            knit__free(t->iobuf);
            knit__free(t);
            return NULL;
        }
        snprintf(t->name, sizeof t->name, "%s", server_name ? server_name : "");
        br_ssl_client_init_full(&t->u.cc, t->xc, conf->tas, conf->ntas);
        t->eng = &t->u.cc.eng;
    } else if (conf->key_type == BR_KEYTYPE_RSA) {
        br_ssl_server_init_full_rsa(&t->u.sc, conf->chain, conf->nchain, &conf->rsa);
        t->eng = &t->u.sc.eng;
    } else {
        br_ssl_server_init_full_ec(&t->u.sc, conf->chain, conf->nchain, conf->issuer_key_type,
                                   &conf->ec);
        t->eng = &t->u.sc.eng;
    }
    br_ssl_engine_set_versions(t->eng, BR_TLS12, BR_TLS12);
    br_ssl_engine_add_flags(t->eng, BR_OPT_NO_RENEGOTIATION);
    br_ssl_engine_set_buffer(t->eng, t->iobuf, BR_SSL_BUFSIZE_BIDI, 1);
    if (!(t->client ? br_ssl_client_reset(&t->u.cc, t->name, 0) : br_ssl_server_reset(&t->u.sc))) {
        knit__free(t->xc);
        knit__free(t->iobuf);
        knit__free(t);
        return NULL;
    }
    t->conf = knit_tls_conf_ref(conf);
    return t;
}

int knit_tls_connect(uv_loop_t *loop, const struct sockaddr *addr, knit_tls_conf_t *conf,
                     const char *server_name, const knit_stream_cbs_t *cb, void *data,
                     knit_stream_t **out) /* see tls.h */
{
    tls_t *t;
    int rc;
    *out = NULL;
    if (!conf || conf->server || !server_name || !*server_name)
        return KNIT_EINVAL;
    if (!(t = tls_new(conf, server_name)))
        return KNIT_ENOMEM;
    t->pub.cb = *cb;
    t->pub.data = data;
    if ((rc = knit_tcp_connect(loop, addr, &INNER_CBS, t, &t->in)) != 0) {
        knit_tls_conf_unref(t->conf);
        knit__free(t->xc);
        knit__free(t->iobuf);
        knit__free(t);
        return rc;
    }
    *out = &t->pub;
    return 0;
}

int knit_tls_accept(knit_stream_t *inner, knit_tls_conf_t *conf,
                    knit_stream_t **out) /* see tls.h */
{
    tls_t *t;
    *out = NULL;
    if (!conf || !conf->server || !(t = tls_new(conf, NULL))) {
        memset(&inner->cb, 0, sizeof inner->cb);
        knit_stream_close(inner);
        return conf && conf->server ? KNIT_ENOMEM : KNIT_EINVAL;
    }
    t->in = inner;
    t->open = 0;
    inner->cb = INNER_CBS;
    inner->data = t;
    /* The handshake needs input whatever the user does with reading. */
    t->reading = 1;
    if (knit_stream_read(inner, 1) != 0)
        t->reading = 0;
    *out = &t->pub;
    return 0;
}
