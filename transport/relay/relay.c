/*
** relay.c: libuv glue for the relay (API in relay.h).  Listeners, timers
** and signals live here, and connections are byte streams
** (transport/stream/stream.h; TCP today); every protocol decision is the
** engine's (proto_server.c), which this file feeds with bytes and the time.
**
** Design notes
**   1. Group commit happens in a uv_check callback: libuv runs it after
**      every poll phase, so all frames read in one loop iteration, from all
**      connections, are committed together before the loop sleeps again.
**   2. Closing is lingering: when the engine closes a connection, the glue
**      stops feeding it, lets the queued frames (typically an ERROR) drain,
**      half-closes (FIN), and keeps reading and discarding until the peer
**      closes or CLOSE_LINGER_MS pass.  Closing a socket with unread input
**      would send RST and could destroy the ERROR before the peer reads it.
**   3. The relay runs on the caller's loop and owns only its own handles:
**      listeners, the check and the tick timer, and the connections.
**   4. Closing (knit_relay_close): stop accepting, let the engine commit
**      and answer what it received and send ERROR KNIT_ECLOSED everywhere,
**      then wait for the connections to close, at most STOP_GRACE_MS, and
**      for the engine to have nothing pending; then close the handles.
**
**   5. With a JWKS URL (opts.jwks_url) the relay's own authentication
**      hook checks tokens against the keys fetched so far
**      (knit_relay_auth_check).  A token whose kid is unknown waits, in the
**      engine's AUTH state, for a refetch (jwks_fetch.h: one in flight, a
**      cooldown between two) and is checked again when it completes; a
**      failed fetch refuses it with the fetch's reason.  Nothing waits on
**      the network: other connections go on being served meanwhile.
**      Closing closes the fetcher, which answers the waiting tokens.
**
**     RUNNING --knit_relay_close()--> STOPPING --conns, listeners gone,
**                                                engine idle: maybe_finish()-->
**     FINISHING --check and tick closed: on_handle_closed()--> cb, freed
*/
#include "relay.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "entropy.h"
#include "http.h"
#include "jwks_fetch.h"
#include "status.h"
#include "webhook.h"
#include "metrics.h"
#include "tcp.h"
#include "tls.h"

#define TICK_MS 250
#define CLOSE_LINGER_MS 2000
#define STOP_GRACE_MS 5000

typedef struct conn_s {
    knit_stream_t *st;       /* the byte stream; st->data = this */
    knit_relay_t *r;         /* owner */
    knit_relay_conn_t *ec;   /* engine connection (NULL: refused at accept) */
    struct conn_s *prev;     /* relay's list */
    struct conn_s *next;     /* relay's list */
    size_t writes;           /* writes in flight */
    int closing;             /* engine asked to close, or the peer went away */
    int shut;                /* FIN sent */
    int handle_closing;      /* knit_stream_close called */
    uint64_t close_deadline; /* mono ms by which the stream is closed anyway */
    int transport;           /* KNIT_METRIC_TCP, KNIT_METRIC_WS (metrics.h) */
    char addr[48];           /* the peer's IP address, without port ("" if unknown) */
} conn_t;

struct knit_relay_s {
    uv_loop_t *loop;          /* the caller's loop */
    uv_check_t check;         /* group commit after each poll */
    uv_timer_t tick;          /* timeouts */
    knit_relay_engine_t *eng; /* the protocol engine */
    knit_tcp_listener_t **ls; /* open listeners */
    size_t nls;               /* count */
    size_t open_listeners;    /* listeners not yet reported closed */
    conn_t *conns;            /* open connections */
    size_t nconns;            /* count */
    size_t max_conns;         /* limit */
    size_t max_per_addr;      /* limit per peer IP address */
    knit_tls_conf_t *tls;     /* credentials of TLS listeners (knit_relay_set_tls), or NULL */
    uint8_t wh_key[64];       /* webhook secret (knit_relay_set_webhook_secret) */
    size_t wh_keylen;         /* its length, 0: no webhooks */
    int log_level;            /* for the glue's own lines */
    void (*log)(void *data, int level, const char *line); /* where lines go */
    void *data;                                           /* the caller's */
    int stopping;                                         /* knit_relay_close was called */
    int finishing;                                        /* handles are being closed */
    int open_handles;                  /* check and tick not yet reported closed */
    uint64_t stop_deadline;            /* mono ms */
    void (*close_cb)(knit_relay_t *r); /* called once all is closed */
    knit_relay_metrics_t metrics;      /* counters (metrics.h), the engine's too */
    knit_http_server_t *http;          /* HTTP surface (http.h), made by the first
                                          knit_relay_listen_http */
    knit_relay_backend_t be;           /* the engine's store, for /healthz */
    knit_relay_store_t *store;         /* the SQLite store, or NULL (another backend) */
    knit_webhook_store_t wh;           /* webhook deliveries' store (begin NULL: none) */
    size_t max_frame;                  /* resolved: WebSocket messages' limit */
    size_t max_queue;                  /* resolved: bounds long-poll output kept */
    uint64_t started_mono;             /* mono ms at knit_relay_new */
    knit_jwks_fetcher_t *fetch;        /* --jwks-url keys (note 5), or NULL */
    int fetch_open;                    /* the fetcher is not yet closed */
};

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t mono_ms(void)
{
    return uv_hrtime() / 1000000;
}

static uint64_t metrics_clock(void *data)
{
    (void)data;
    return uv_hrtime() / 1000;
}

void knit_relay_log_stderr(void *data, int level, const char *line) /* see relay.h */
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    char when[32];
    struct timespec ts;
    struct tm tm;
    (void)data;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ sync-relay %s: %s\n", when, ts.tv_nsec / 1000000L,
            names[level < 0   ? 0
                  : level > 3 ? 3
                              : level],
            line);
}

static void glog(knit_relay_t *r, int level, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    if (level > r->log_level)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    r->log(r->data, level, line);
}

/* ---------------------------------------------------------------------- */
/* Closing connections                                                      */

static void maybe_finish(knit_relay_t *r);

static void on_stream_closed(knit_stream_t *st)
{
    conn_t *c = st->data;
    knit_relay_t *r = c->r;
    if (c->ec)
        knit_relay_conn_free(c->ec);
    knit__metrics_conn(&r->metrics, c->transport, -1);
    if (c->prev)
        c->prev->next = c->next;
    else
        r->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    r->nconns--;
    knit__free(c);
    maybe_finish(r);
}

static void close_handle(conn_t *c)
{
    if (c->handle_closing)
        return;
    c->handle_closing = 1;
    knit_stream_close(c->st);
}

/* Half-closes once every queued write is done (note 2). */
static void linger(conn_t *c)
{
    if (c->handle_closing || c->shut || c->writes)
        return;
    c->shut = 1;
    if (knit_stream_shutdown(c->st) != 0)
        close_handle(c);
}

/* EOF, a read error or a failed half-close: the peer is gone (or finished
** its half of a lingering close). */
static void on_stream_end(knit_stream_t *st, int code, const char *msg)
{
    conn_t *c = st->data;
    if (code == KNIT_ETLS) {
        char name[64];
        knit_stream_peer(st, name, sizeof name);
        glog(c->r, KNIT_LOG_INFO, "%s: %s", name, msg ? msg : "TLS error");
    }
    if (c->ec && !c->closing)
        knit_relay_conn_lost(c->ec);
    c->closing = 1;
    close_handle(c);
}

static void on_stream_read(knit_stream_t *st, const uint8_t *p, size_t n)
{
    conn_t *c = st->data;
    if (c->closing || !c->ec)
        return; /* lingering: discard (note 2) */
    knit_relay_conn_input(c->ec, p, n, wall_ms(), mono_ms());
}

/* ---------------------------------------------------------------------- */
/* Engine callbacks                                                         */

static void on_written(knit_stream_t *st, void *arg, int status)
{
    conn_t *c = st->data;
    size_t n = (size_t)(uintptr_t)arg;
    c->writes--;
    if (status != 0) {
        if (c->ec && !c->closing)
            knit_relay_conn_lost(c->ec);
        c->closing = 1;
        close_handle(c);
        return;
    }
    if (c->ec && !c->handle_closing)
        knit_relay_conn_sent(c->ec, n);
    if (c->closing)
        linger(c);
}

static int io_send(void *data, void *user, uint8_t *p, size_t n)
{
    conn_t *c = user;
    (void)data;
    if (c->handle_closing || c->shut) {
        knit__free(p);
        return -1;
    }
    /* The stream owns p from here on, also when it refuses it. */
    if (knit_stream_write(c->st, p, n, on_written, (void *)(uintptr_t)n) != 0)
        return -1;
    c->writes++;
    return 0;
}

static void io_close(void *data, void *user)
{
    conn_t *c = user;
    (void)data;
    if (c->closing)
        return;
    c->closing = 1;
    c->close_deadline = mono_ms() + CLOSE_LINGER_MS;
    /* Read (and discard) until the peer's EOF, even if reading was paused. */
    knit_stream_read(c->st, 1);
    linger(c);
}

static void io_pause(void *data, void *user, int paused)
{
    conn_t *c = user;
    (void)data;
    if (c->closing || c->handle_closing)
        return;
    knit_stream_read(c->st, !paused);
}

static int io_random(void *data, void *buf, size_t n)
{
    (void)data;
    return knit__random(buf, n) == 0 ? 0 : -1;
}

static void io_log(void *data, int level, const char *line)
{
    knit_relay_t *r = data;
    r->log(r->data, level, line);
}

/* ---------------------------------------------------------------------- */
/* Accepting                                                                */

static void refuse(conn_t *c, int code, const char *msg)
{
    uint8_t *p;
    size_t n;
    c->closing = 1;
    c->close_deadline = mono_ms() + CLOSE_LINGER_MS;
    knit_stream_read(c->st, 1);
    if (knit_relay_error_frame(code, msg, &p, &n) == 0)
        io_send(c->r, c, p, n);
    linger(c);
}

/* The IP address of a peer name ("1.2.3.4:5", "[::1]:5"), without port. */
static void peer_addr(const char *name, char *out, size_t n)
{
    const char *colon = strrchr(name, ':');
    size_t k = colon ? (size_t)(colon - name) : 0;
    if (k >= 2 && name[0] == '[' && name[k - 1] == ']') {
        name++;
        k -= 2;
    }
    snprintf(out, n, "%.*s", (int)(k < n ? k : n - 1), name);
}

/* Connections open from addr, c's own included. */
static size_t conns_from(const knit_relay_t *r, const char *addr)
{
    size_t k = 0;
    for (const conn_t *o = r->conns; o; o = o->next)
        k += !o->closing && strcmp(o->addr, addr) == 0;
    return k;
}

/* Serves a new protocol stream, of any transport (metrics.h). */
static void accept_stream(knit_relay_t *r, knit_stream_t *st, int transport)
{
    static const knit_stream_cbs_t cbs = {NULL, on_stream_read, on_stream_end, on_stream_closed};
    conn_t *c;
    char name[64];

    if (!(c = knit__calloc(1, sizeof *c))) {
        glog(r, KNIT_LOG_ERROR, "accept: out of memory");
        st->cb = cbs;
        st->cb.on_close = NULL;
        knit_stream_close(st);
        return;
    }
    c->r = r;
    c->st = st;
    c->transport = transport;
    knit__metrics_conn(&r->metrics, transport, 1);
    st->cb = cbs;
    st->data = c;
    c->next = r->conns;
    if (r->conns)
        r->conns->prev = c;
    r->conns = c;
    r->nconns++;
    knit_stream_peer(st, name, sizeof name);
    peer_addr(name, c->addr, sizeof c->addr);
    if (r->stopping) {
        refuse(c, KNIT_ECLOSED, "relay shutting down");
        return;
    }
    if (r->nconns > r->max_conns) {
        glog(r, KNIT_LOG_WARN, "refusing %s: %zu connections already", name, r->max_conns);
        knit__metrics_limit(&r->metrics, KNIT_METRIC_CONNS);
        refuse(c, KNIT_EBUSY, "too many connections");
        return;
    }
    if (c->addr[0] && conns_from(r, c->addr) > r->max_per_addr) {
        glog(r, KNIT_LOG_WARN, "refusing %s: %zu connections from %s already", name,
             r->max_per_addr, c->addr);
        knit__metrics_limit(&r->metrics, KNIT_METRIC_PER_ADDR);
        refuse(c, KNIT_EBUSY, "too many connections from this address");
        return;
    }
    if (knit_relay_conn_open(r->eng, c, wall_ms(), mono_ms(), &c->ec) != 0) {
        refuse(c, KNIT_ENOMEM, "out of memory");
        return;
    }
    knit_relay_conn_set_name(c->ec, name);
    glog(r, KNIT_LOG_DEBUG, "connection from %s%s", name,
         transport == KNIT_METRIC_WS   ? " (websocket)"
         : transport == KNIT_METRIC_LP ? " (long-poll)"
                                       : "");
    knit_stream_read(st, 1);
}

/* The TLS session over st, a connection on a TLS listener, with the
** credentials current now (knit_relay_set_tls); NULL (logged, st closed)
** if it cannot start. */
static knit_stream_t *tls_wrap(knit_relay_t *r, knit_stream_t *st, const char *what)
{
    knit_stream_t *ts;
    int rc;
    if (!st) {
        glog(r, KNIT_LOG_WARN, "%saccept failed", what);
        return NULL;
    }
    if ((rc = knit_tls_accept(st, r->tls, &ts)) != 0) {
        glog(r, KNIT_LOG_ERROR, "%saccept: %s", what, knit_strerror(rc));
        return NULL;
    }
    return ts;
}

static void on_accept_tls(void *data, knit_tcp_listener_t *l, knit_stream_t *st)
{
    knit_relay_t *r = data;
    (void)l;
    if ((st = tls_wrap(r, st, "")) != NULL)
        accept_stream(r, st, KNIT_METRIC_TLS);
}

static void on_accept(void *data, knit_tcp_listener_t *l, knit_stream_t *st)
{
    knit_relay_t *r = data;
    (void)l;
    if (!st) {
        glog(r, KNIT_LOG_WARN, "accept failed");
        return;
    }
    accept_stream(r, st, KNIT_METRIC_TCP);
}

/* ---------------------------------------------------------------------- */
/* Loop plumbing                                                            */

static void on_check(uv_check_t *h)
{
    knit_relay_t *r = h->data;
    if (knit_relay_engine_pending(r->eng))
        knit_relay_engine_flush(r->eng, wall_ms(), mono_ms());
}

static void on_tick(uv_timer_t *t)
{
    knit_relay_t *r = t->data;
    uint64_t now = mono_ms();
    conn_t *c, *next;
    if (!r->stopping)
        knit_relay_engine_tick(r->eng, wall_ms(), now);
    for (c = r->conns; c; c = next) {
        next = c->next;
        if ((c->closing && now >= c->close_deadline) || (r->stopping && now >= r->stop_deadline))
            close_handle(c);
    }
    knit__http_tick(r->http, now);
    maybe_finish(r);
}

/* ---------------------------------------------------------------------- */
/* Provider keys from a URL (note 5)                                        */

static const knit_jwks_t *url_keys(void *data, int refresh)
{
    knit_relay_t *r = data;
    (void)refresh; /* refetching is the hook's business: it can wait, this cannot */
    return knit__jwks_fetcher_keys(r->fetch);
}

static void fetch_log(void *data, int level, const char *line)
{
    knit_relay_t *r = data;
    if (level <= r->log_level)
        r->log(r->data, level, line);
}

/* Answers req after its check found kid unknown and the keys could not be
** refetched (status, why), or with what a check finds now. */
static void url_answer(const knit_auth_request_t *req, int status, const char *why)
{
    char principal[KNIT_PRINCIPAL_MAX], text[600];
    knit_auth_result_t res;
    int unknown_kid = 0;
    knit_relay_auth_check(req, &res, principal, &unknown_kid);
    if (res.code == KNIT_EAUTH && unknown_kid && why && why[0]) {
        snprintf(text, sizeof text, "%s, and the provider's keys could not be fetched again (%s)",
                 res.why, why);
        res.why = text;
    }
    if (status == KNIT_ECLOSED && res.code != 0) {
        res.code = KNIT_ECLOSED;
        res.why = "the relay is shutting down";
    }
    knit_relay_auth_done(req, &res);
}

static void on_keys(void *arg, int status, const char *why)
{
    url_answer(arg, status, status ? why : NULL);
}

static int url_hook(void *data, const knit_auth_request_t *req)
{
    knit_relay_t *r = data;
    char principal[KNIT_PRINCIPAL_MAX];
    knit_auth_result_t res;
    int unknown_kid = 0, rc;
    if (req->kind != KNIT_CRED_JWT) {
        knit_relay_auth_default(req);
        return 0;
    }
    knit_relay_auth_check(req, &res, principal, &unknown_kid);
    if (res.code == KNIT_EAUTH && unknown_kid) {
        /* The provider may have rotated its keys: wait for a refetch. */
        rc = knit__jwks_fetcher_refresh(r->fetch, on_keys, (void *)req);
        if (rc == 0)
            return 0;
        /* Within the cooldown: the keys are as fresh as they may be. */
        url_answer(req, 0, knit__jwks_fetcher_last_error(r->fetch));
        return 0;
    }
    knit_relay_auth_done(req, &res);
    return 0;
}

static void on_fetch_closed(void *data)
{
    knit_relay_t *r = data;
    r->fetch_open = 0;
    r->fetch = NULL;
    maybe_finish(r);
}

static void on_handle_closed(uv_handle_t *h)
{
    knit_relay_t *r = h->data;
    if (--r->open_handles > 0)
        return;
    knit_relay_engine_free(r->eng);
    knit_tls_conf_unref(r->tls);
    knit__http_server_free(r->http);
    knit__free(r->ls);
    if (r->close_cb)
        r->close_cb(r);
    knit__free(r);
}

static void maybe_finish(knit_relay_t *r)
{
    if (!r->stopping || r->finishing || r->nconns || r->open_listeners || r->fetch_open ||
        knit__http_conns(r->http) || knit_relay_engine_busy(r->eng))
        return;
    r->finishing = 1;
    r->open_handles = 2;
    uv_close((uv_handle_t *)&r->check, on_handle_closed);
    uv_close((uv_handle_t *)&r->tick, on_handle_closed);
}

static void on_listener_closed(void *data, knit_tcp_listener_t *l)
{
    knit_relay_t *r = data;
    (void)l;
    r->open_listeners--;
    maybe_finish(r);
}

/* ---------------------------------------------------------------------- */
/* API                                                                      */

/* A commit made through another relay (store.h attach). */
static void on_store_advanced(void *arg, const char *ns, uint64_t seq)
{
    knit_relay_t *r = arg;
    knit_relay_engine_advanced(r->eng, ns, seq);
}

int knit_relay_new(uv_loop_t *loop, const knit_relay_opts_t *o,
                   knit_relay_t **out) /* see relay.h */
{
    knit_relay_t *r;
    knit_relay_io_t io;
    knit_relay_config_t cfg;
    knit_relay_limits_t lim;
    int rc;

    *out = NULL;
    if (!loop || !o)
        return KNIT_EINVAL;
    if (!(r = knit__calloc(1, sizeof *r)))
        return KNIT_ENOMEM;
    knit__metrics_init(&r->metrics, metrics_clock, NULL);
    r->started_mono = mono_ms();
    cfg = o->cfg;
    cfg.metrics = &r->metrics;
    lim = o->cfg.limits;
    knit_relay_limits_resolve(&lim);
    r->max_frame = lim.max_frame;
    r->max_queue = lim.max_queue;
    r->store = o->cfg.backend ? NULL : o->cfg.store;
    if (o->cfg.backend)
        r->be = *o->cfg.backend;
    else if (o->cfg.store)
        knit_relay_store_backend(o->cfg.store, &r->be);
    /* The webhooks' store goes with the engine's: the caller's for another
    ** backend, the SQLite store's own otherwise. */
    if (o->webhooks)
        r->wh = *o->webhooks;
    else if (!o->cfg.backend && o->cfg.store)
        knit_relay_store_webhooks(o->cfg.store, &r->wh);
    r->loop = loop;
    r->log_level = o->cfg.log_level;
    r->log = o->log ? o->log : knit_relay_log_stderr;
    r->data = o->data;
    r->max_conns = o->max_conns ? o->max_conns : 1024;
    r->max_per_addr = lim.max_per_addr;
    memset(&io, 0, sizeof io);
    io.send = io_send;
    io.close = io_close;
    io.pause = io_pause;
    io.random = io_random;
    io.log = io_log;
    io.data = r;
    if (o->jwks_url) {
        knit_jwks_fetch_opts_t fo;
        if (cfg.authenticate || cfg.jwks) {
            knit__free(r);
            return KNIT_EINVAL; /* the URL's hook and keys are the relay's own */
        }
        memset(&fo, 0, sizeof fo);
        fo.url = o->jwks_url;
        fo.cooldown_ms = o->jwks_cooldown_ms;
        fo.timeout_ms = o->jwks_timeout_ms;
        fo.log = fetch_log;
        fo.data = r;
        if ((rc = knit__jwks_fetcher_new(loop, &fo, &r->fetch)) != 0) {
            knit__free(r);
            return rc;
        }
        r->fetch_open = 1;
        cfg.jwks = url_keys;
        cfg.jwks_data = r;
        cfg.authenticate = url_hook;
        cfg.auth_data = r;
    }
    if ((rc = knit_relay_engine_new(&cfg, &io, &r->eng)) != 0) {
        if (r->fetch) {
            /* Nothing waits on it yet; its handles close on the loop. */
            knit__jwks_fetcher_close(r->fetch, NULL, NULL);
        }
        knit__free(r);
        return rc;
    }
    if (r->be.attach)
        r->be.attach(r->be.data, loop, on_store_advanced, r);
    uv_check_init(loop, &r->check);
    r->check.data = r;
    uv_check_start(&r->check, on_check);
    uv_timer_init(loop, &r->tick);
    r->tick.data = r;
    uv_timer_start(&r->tick, on_tick, TICK_MS, TICK_MS);
    *out = r;
    return 0;
}

/* Is ip (a literal) a loopback address? */
static int is_loopback(const char *ip)
{
    struct sockaddr_in a4;
    struct sockaddr_in6 a6;
    if (uv_ip4_addr(ip, 0, &a4) == 0)
        return (ntohl(a4.sin_addr.s_addr) >> 24) == 127;
    if (uv_ip6_addr(ip, 0, &a6) == 0)
        return IN6_IS_ADDR_LOOPBACK(&a6.sin6_addr);
    return 0;
}

/* Listens for protocol streams, over TLS when tls is set. */
static int listen_proto(knit_relay_t *r, const char *host, int port, int tls,
                        knit_relay_addr_t *out)
{
    knit_tcp_listener_t *l, **n;
    knit_relay_addr_t a;
    char msg[200];
    int rc;

    if (r->stopping)
        return KNIT_ECLOSED;
    if (!(n = knit__realloc(r->ls, (r->nls + 1) * sizeof *n)))
        return KNIT_ENOMEM;
    r->ls = n;
    if (tls && !r->tls) {
        glog(r, KNIT_LOG_ERROR, "cannot listen with TLS on %s:%d: no certificate loaded", host,
             port);
        return KNIT_EINVAL;
    }
    if ((rc = knit_tcp_listen(r->loop, host, port, tls ? on_accept_tls : on_accept, r, msg,
                              sizeof msg, &l)) != 0) {
        glog(r, KNIT_LOG_ERROR, "%s", msg);
        return rc;
    }
    r->ls[r->nls++] = l;
    r->open_listeners++;
    knit_tcp_listener_addr(l, a.host, sizeof a.host, &a.port);
    glog(r, KNIT_LOG_INFO, "listening on %s:%d%s", a.host, a.port, tls ? " (TLS)" : "");
    if (!tls && !is_loopback(a.host))
        glog(r, KNIT_LOG_WARN,
             "listening in cleartext on %s:%d, which is not a loopback address: use it "
             "on a private link only, or give a certificate (--tls-cert, --tls-key)",
             a.host, a.port);
    if (out)
        *out = a;
    return 0;
}

int knit_relay_listen(knit_relay_t *r, const char *host, int port,
                      knit_relay_addr_t *out) /* see relay.h */
{
    return listen_proto(r, host, port, 0, out);
}

int knit_relay_listen_tls(knit_relay_t *r, const char *host, int port,
                          knit_relay_addr_t *out) /* see relay.h */
{
    return listen_proto(r, host, port, 1, out);
}

int knit_relay_set_tls(knit_relay_t *r, const char *cert_file, const char *key_file, char *msg,
                       size_t n) /* see relay.h */
{
    knit_tls_conf_t *c;
    char what[64];
    int rc = knit_tls_conf_server(cert_file, key_file, msg, n, &c);
    if (rc)
        return rc;
    /* Streams that started with the old credentials hold their own
    ** reference: only new connections see the new ones. */
    knit_tls_conf_unref(r->tls);
    r->tls = c;
    knit_tls_conf_describe(c, what, sizeof what);
    snprintf(msg, n, "TLS credentials from %s and %s: %s", cert_file, key_file, what);
    return 0;
}

void knit_relay_close(knit_relay_t *r, void (*cb)(knit_relay_t *r)) /* see relay.h */
{
    if (!r || r->stopping)
        return;
    r->stopping = 1;
    r->close_cb = cb;
    r->stop_deadline = mono_ms() + STOP_GRACE_MS;
    if (r->be.attach)
        r->be.attach(r->be.data, NULL, NULL, NULL);
    for (size_t i = 0; i < r->nls; i++)
        knit_tcp_listener_close(r->ls[i], on_listener_closed);
    r->nls = 0;
    knit__http_shutdown(r->http);
    knit_relay_engine_shutdown(r->eng, wall_ms(), mono_ms());
    /* Tokens waiting for keys are answered (note 5). */
    knit__jwks_fetcher_close(r->fetch, on_fetch_closed, r);
    maybe_finish(r);
}

void *knit_relay_data(const knit_relay_t *r) /* see relay.h */
{
    return r->data;
}

size_t knit_relay_conns(const knit_relay_t *r) /* see relay.h */
{
    return r->nconns;
}

/* ---------------------------------------------------------------------- */
/* HTTP surface (http.h): /healthz, /metrics and WebSocket sessions          */

static int http_health(void *data, char *msg, size_t n)
{
    knit_relay_t *r = data;
    uint64_t seq;
    int rc;
    if (!r->be.seq) {
        snprintf(msg, n, "no store");
        return 0;
    }
    /* A read through the engine's own store interface. */
    if ((rc = r->be.seq(r->be.data, "knit.healthz", &seq)) != 0) {
        snprintf(msg, n, "%s: %.100s", knit_err_name(rc),
                 r->be.errmsg ? r->be.errmsg(r->be.data) : "");
        return 0;
    }
    return 1;
}

/* The figures both /metrics and /v1/status read beside the counters. */
static void http_snapshot(knit_relay_t *r, knit_relay_metrics_snapshot_t *s)
{
    char why[8];
    int64_t bytes;
    memset(s, 0, sizeof *s);
    s->store_ok = http_health(r, why, sizeof why);
    s->store_bytes = r->be.size && r->be.size(r->be.data, &bytes) == 0 ? bytes : -1;
    s->damaged = r->be.damaged ? r->be.damaged(r->be.data) : 0;
    s->uptime_s = (mono_ms() - r->started_mono) / 1000;
}

static int http_webhook(void *data, const char *id, const char *ts, const char *sig,
                        const uint8_t *body, size_t n, char *msg, size_t msgn)
{
    knit_relay_t *r = data;
    int status;
    if (!r->wh.begin) {
        snprintf(msg, msgn, "this store keeps no webhook deliveries");
        return 503;
    }
    knit_webhook_effect_t fx;
    knit_site_t site;
    uint64_t now = wall_ms(), stamp = 0;
    int have_site = r->be.site && r->be.site(r->be.data, &site) == 0 &&
                    knit_relay_engine_stamp(r->eng, now, &stamp) == 0;
    status = knit__webhook_deliver(&r->wh, r->wh_key, r->wh_keylen, id, ts, sig, body, n, now,
                                   have_site ? &site : NULL, stamp, msg, msgn, &fx);
    glog(r, status == 200 ? KNIT_LOG_INFO : KNIT_LOG_WARN, "webhook %.80s: %d %s", id, status, msg);
    if (fx.erased_ns[0]) {
        /* Its online devices hear it now; their tokens are refused from
        ** here on (the tombstone), so they cannot reconnect. */
        size_t ended = knit_relay_engine_end_principal(
            r->eng, fx.erased_ns, KNIT_EERASED,
            "account erased (the identity provider deleted the user); its data is gone "
            "from the relay");
        if (ended)
            glog(r, KNIT_LOG_INFO, "%s: ended %zu session%s", fx.erased_ns, ended,
                 ended == 1 ? "" : "s");
    }
    if (fx.moved_ns[0])
        knit_relay_engine_end_principal(r->eng, fx.moved_ns, KNIT_EAUTH,
                                        "this account's id now belongs to the account of its "
                                        "email: sign in again");
    /* Grants are a session's: a changed membership or role takes effect
    ** when its devices sign in again, at once (a retryable end). */
    if (fx.member_ns[0]) {
        size_t ended = knit_relay_engine_end_principal(
            r->eng, fx.member_ns, KNIT_ECLOSED,
            "organization membership changed: reconnect for the new grants");
        if (ended)
            glog(r, KNIT_LOG_INFO, "%s: membership changed, ended %zu session%s", fx.member_ns,
                 ended, ended == 1 ? "" : "s");
    }
    /* The rows the relay wrote reach the account's online devices now. */
    if (fx.wrote_ns[0])
        knit_relay_engine_advanced(r->eng, fx.wrote_ns, fx.seq);
    return status;
}

int knit_relay_set_webhook_secret(knit_relay_t *r, const char *secret) /* see relay.h */
{
    return knit_webhook_secret(secret, r->wh_key, &r->wh_keylen);
}

static int http_status(void *data, char **text, size_t *n)
{
    knit_relay_t *r = data;
    knit_relay_metrics_snapshot_t s;
    http_snapshot(r, &s);
    return knit__status_json(&r->metrics, &s, &r->be, text, n);
}

static int http_metrics(void *data, char **text, size_t *n)
{
    knit_relay_t *r = data;
    knit_relay_metrics_snapshot_t s;
    http_snapshot(r, &s);
    return knit__metrics_render(&r->metrics, &s, text, n);
}

static void http_upgrade(void *data, knit_stream_t *ws)
{
    accept_stream(data, ws, KNIT_METRIC_WS);
}

static void http_longpoll(void *data, knit_stream_t *st)
{
    accept_stream(data, st, KNIT_METRIC_LP);
}

static void http_closed(void *data)
{
    maybe_finish(data);
}

static void on_http_accept(void *data, knit_tcp_listener_t *l, knit_stream_t *st)
{
    knit_relay_t *r = data;
    (void)l;
    if (!st) {
        glog(r, KNIT_LOG_WARN, "http: accept failed");
        return;
    }
    knit__http_accept(r->http, st);
}

/* An HTTP listener opened while TLS credentials were set: HTTPS (and wss:). */
static void on_https_accept(void *data, knit_tcp_listener_t *l, knit_stream_t *st)
{
    knit_relay_t *r = data;
    (void)l;
    if ((st = tls_wrap(r, st, "http: ")) != NULL)
        knit__http_accept(r->http, st);
}

int knit_relay_listen_http(knit_relay_t *r, const char *host, int port,
                           knit_relay_addr_t *out) /* see relay.h */
{
    knit_tcp_listener_t *l, **n;
    knit_relay_addr_t a;
    char msg[200];
    int rc;

    if (r->stopping)
        return KNIT_ECLOSED;
    if (!r->http) {
        knit_http_hooks_t h;
        memset(&h, 0, sizeof h);
        h.health = http_health;
        h.metrics = http_metrics;
        h.status = http_status;
        h.webhook = r->wh_keylen ? http_webhook : NULL;
        h.upgrade = http_upgrade;
        h.longpoll = http_longpoll;
        h.random = io_random;
        h.closed = http_closed;
        h.log = io_log;
        h.data = r;
        h.m = &r->metrics;
        h.max_msg = r->max_frame;
        h.max_queue = r->max_queue;
        h.max_conns = r->max_conns;
        h.log_level = r->log_level;
        if ((rc = knit__http_server_new(&h, &r->http)) != 0)
            return rc;
    }
    if (!(n = knit__realloc(r->ls, (r->nls + 1) * sizeof *n)))
        return KNIT_ENOMEM;
    r->ls = n;
    if ((rc = knit_tcp_listen(r->loop, host, port, r->tls ? on_https_accept : on_http_accept, r,
                              msg, sizeof msg, &l)) != 0) {
        glog(r, KNIT_LOG_ERROR, "http: %s", msg);
        return rc;
    }
    r->ls[r->nls++] = l;
    r->open_listeners++;
    knit_tcp_listener_addr(l, a.host, sizeof a.host, &a.port);
    glog(r, KNIT_LOG_INFO, "http%s listening on %s:%d (/healthz, /metrics, /v1/ws, /v1/lp)",
         r->tls ? "s" : "", a.host, a.port);
    if (out)
        *out = a;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* knit_relay_serve: own loop, signals                                      */

typedef struct serve_s {
    knit_relay_t *r;      /* the relay */
    uv_signal_t sigint;   /* SIGINT */
    uv_signal_t sigterm;  /* SIGTERM */
    uv_signal_t sighup;   /* SIGHUP: reload the TLS credentials (with tls_cert) */
    const char *tls_cert; /* the options' PEM chain, or NULL (no TLS) */
    const char *tls_key;  /* its key */
    int log_level;        /* for the lines below */
    int stopping;         /* a stop signal arrived */
} serve_t;

static void on_signal_closed(uv_handle_t *h)
{
    (void)h;
}

static void on_relay_closed(knit_relay_t *r)
{
    serve_t *sv = knit_relay_data(r);
    uv_close((uv_handle_t *)&sv->sigint, on_signal_closed);
    uv_close((uv_handle_t *)&sv->sigterm, on_signal_closed);
    if (sv->tls_cert) {
        uv_close((uv_handle_t *)&sv->sighup, on_signal_closed);
        signal(SIGHUP, SIG_IGN);
    }
    /* Closing the watchers restores the default action; a second signal
    ** during the last steps must not turn a clean stop into a kill. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
}

/* SIGHUP: new TLS credentials for new connections; open ones keep theirs,
** and a failed reload keeps the old ones. */
static void on_sighup(uv_signal_t *h, int signum)
{
    serve_t *sv = h->data;
    char msg[400], line[480];
    int rc;
    (void)signum;
    if (sv->stopping)
        return;
    rc = knit_relay_set_tls(sv->r, sv->tls_cert, sv->tls_key, msg, sizeof msg);
    snprintf(line, sizeof line, "SIGHUP: %s%s",
             rc ? "reload failed, keeping the previous "
                  "certificate: "
                : "reloaded ",
             msg);
    if (sv->log_level >= (rc ? KNIT_LOG_ERROR : KNIT_LOG_INFO))
        knit_relay_log_stderr(NULL, rc ? KNIT_LOG_ERROR : KNIT_LOG_INFO, line);
}

static void on_signal(uv_signal_t *h, int signum)
{
    serve_t *sv = h->data;
    if (sv->stopping)
        return;
    sv->stopping = 1;
    if (sv->log_level >= KNIT_LOG_INFO)
        knit_relay_log_stderr(NULL, KNIT_LOG_INFO,
                              signum == SIGINT
                                  ? "SIGINT: stopping (committing what was received)"
                                  : "SIGTERM: stopping (committing what was received)");
    knit_relay_close(sv->r, on_relay_closed);
}

int knit_relay_serve(const knit_relay_serve_opts_t *o) /* see relay.h */
{
    knit_relay_opts_t ro;
    knit_relay_addr_t a, *ha = NULL;
    serve_t sv;
    uv_loop_t loop;
    int rc;

    memset(&sv, 0, sizeof sv);
    sv.log_level = o->cfg.log_level;
    if (uv_loop_init(&loop) != 0)
        return KNIT_EIO;
    memset(&ro, 0, sizeof ro);
    ro.max_conns = o->max_conns;
    ro.cfg = o->cfg;
    ro.data = &sv;
    ro.jwks_url = o->jwks_url;
    ro.jwks_cooldown_ms = o->jwks_cooldown_ms;
    ro.jwks_timeout_ms = o->jwks_timeout_ms;
    ro.webhooks = o->webhooks;
    if ((rc = knit_relay_new(&loop, &ro, &sv.r)) != 0) {
        uv_loop_close(&loop);
        return rc;
    }
    sv.tls_cert = o->tls_cert;
    sv.tls_key = o->tls_key;
    rc = 0;
    if (o->tls_cert) {
        char msg[400];
        if (!o->tls_key)
            rc = KNIT_EINVAL;
        else if ((rc = knit_relay_set_tls(sv.r, o->tls_cert, o->tls_key, msg, sizeof msg)) != 0)
            knit_relay_log_stderr(NULL, KNIT_LOG_ERROR, msg);
        else if (sv.log_level >= KNIT_LOG_INFO)
            knit_relay_log_stderr(NULL, KNIT_LOG_INFO, msg);
    }
    if (rc == 0)
        rc = o->tls_cert ? knit_relay_listen_tls(sv.r, o->host, o->port, &a)
                         : knit_relay_listen(sv.r, o->host, o->port, &a);
    if (rc == 0 && o->webhook_secret)
        rc = knit_relay_set_webhook_secret(sv.r, o->webhook_secret);
    if (rc == 0 && o->nhttp && !(ha = knit__calloc(o->nhttp, sizeof *ha)))
        rc = KNIT_ENOMEM;
    for (size_t i = 0; rc == 0 && i < o->nhttp; i++)
        rc = knit_relay_listen_http(sv.r, o->http[i].host, o->http[i].port, &ha[i]);
    if (rc != 0) {
        knit__free(ha);
        knit_relay_close(sv.r, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        return rc;
    }
    uv_signal_init(&loop, &sv.sigint);
    sv.sigint.data = &sv;
    uv_signal_start(&sv.sigint, on_signal, SIGINT);
    uv_signal_init(&loop, &sv.sigterm);
    sv.sigterm.data = &sv;
    uv_signal_start(&sv.sigterm, on_signal, SIGTERM);
    if (sv.tls_cert) {
        uv_signal_init(&loop, &sv.sighup);
        sv.sighup.data = &sv;
        uv_signal_start(&sv.sighup, on_sighup, SIGHUP);
    }
    if (o->on_listen)
        o->on_listen(o->data, a.host, a.port);
    /* After the protocol listener's line, which scripts look for first. */
    for (size_t i = 0; i < o->nhttp && o->on_http_listen; i++)
        o->on_http_listen(o->data, ha[i].host, ha[i].port);
    knit__free(ha);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (sv.log_level >= KNIT_LOG_INFO)
        knit_relay_log_stderr(NULL, KNIT_LOG_INFO, "stopped");
    uv_loop_close(&loop);
    return 0;
}
