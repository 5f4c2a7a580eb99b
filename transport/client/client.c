/*
** client.c: the sync client's libuv glue (API in knit_sync.h).  The
** connection (a byte stream, transport/stream/stream.h: TCP, or TLS over
** TCP when options.tls is set, either one inside a WebSocket when
** options.websocket is), timers,
** the file watch and the replica live here; every protocol
** decision is the engine's (proto_client.c), which this file feeds with
** bytes, events and the time, and whose requests it carries out on the
** replica (knit.h).
**
** Design notes
**   1. One function, pump(), does everything the engine may want after any
**      event: due timeouts (knit_client_tick), a new connection attempt,
**      reading and handing over local changes, writing queued output,
**      closing the connection, and re-arming the one timer.  Every libuv
**      callback ends with pump(); public calls made from the application's
**      callbacks only set flags and kick the timer, so the engine is never
**      entered twice.
**   2. Local writes are noticed by a file watch on the replica's directory
**      (the database and its -wal file), checked with knit_poll (PRAGMA
**      data_version).  The watch fires on the writer's WAL write, which can
**      come just before the commit is visible, so a poll that finds nothing
**      is repeated after 1, 2, 4, 8 and 16 ms.  A coarse timer (poll_ms)
**      polls as a safety net, for file systems without notifications.
**   3. Reading local changes is bounded: none while more than MAX_WBACKLOG
**      bytes wait to be written, so a slow relay throttles the reads.
**   4. Each connection attempt has its own conn_t.  The engine learns that a
**      connection is gone (knit_client_lost) only in the stream's close
**      callback, after the stream cancelled its writes, so no callback of an
**      old connection can reach the engine's next session.
**   5. Stopping closes every handle; the close callback and the free happen
**      when the last one reported closed (libuv's close rule).
**   6. Claiming (proto_client.c design note 6) is decided once, at start:
**      a JWT client claims the replica's anonymous credential unless the
**      replica recorded it claimed ("sync.claimed") and holds no row of
**      its namespace.  io_claimed moves the rows, then records the claim,
**      in two transactions: a crash between them only makes the next run
**      claim again, and a second claim merges nothing new on the relay and
**      finds nothing left to move here.
*/
#include "knit_sync.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sqlite3.h>

#include "alloc.h"
#include "cred.h"
#include "codec.h"
#include "proto_client.h"
#include "tcp.h"
#include "tls.h"
#include "ws_client.h"

#define MAX_WBACKLOG (4u * 1024 * 1024)
#define DEF_POLL_MS 250
#define DEF_STOP_GRACE_MS 3000
#define RECHECKS 5
#define READ_RETRY_MS 50
#define ANON_SETTING "sync.anon"
#define CLAIMED_SETTING "sync.claimed"

typedef struct conn_s {
    knit_stream_t *st;      /* the byte stream (stream.h); st->data = this */
    knit_sync_t *s;         /* owner */
    int connected;          /* the stream opened */
    int closing;            /* knit_stream_close was called */
    int close_when_drained; /* close once the writes in flight are done */
    int code;               /* why it closed (KNIT_E*; 0: the engine asked) */
    char msg[160];          /* detail of code */
    size_t writes;          /* writes in flight */
    size_t wbytes;          /* their bytes */
} conn_t;

struct knit_sync_s {
    uv_loop_t *loop;                     /* the application's loop */
    knit_t *k;                           /* the replica */
    knit_client_t *c;                    /* the protocol engine */
    knit_sync_options_t opt;             /* options; strings point at the copies below */
    char *host;                          /* owned copy */
    char *ca_file;                       /* owned copy of options.ca_file, or NULL */
    char *server_name;                   /* owned copy of options.server_name, or NULL */
    char *ws_path;                       /* owned copy of options.ws_path, or NULL */
    knit_tls_conf_t *tls;                /* TLS: trust anchors, loaded at the first attempt */
    char *token;                         /* owned copy of the current JWT, or NULL */
    char *anon_id;                       /* owned: the anonymous credential used (ANONYMOUS) or
                                            claimed (JWT), or NULL */
    char *anon_secret;                   /* owned */
    char claimed_ns[KNIT_PRINCIPAL_MAX]; /* namespace io_claimed moved, reported with
                                   the next state event; "" when none */
    int claimed_rows;                    /* rows it moved */
    char *agent;                         /* owned */
    char *watch_dir;                     /* directory watched, owned (NULL: no watch) */
    char *watch_db;                      /* basename of the replica */
    size_t watch_dblen;                  /* its length */
    uv_timer_t timer;                    /* the engine's next deadline; also the "kick" */
    uv_timer_t poll;                     /* safety poll (note 2) */
    uv_timer_t recheck;                  /* polls shortly after a watch event (note 2) */
    uv_fs_event_t watch;                 /* the directory watch */
    uv_getaddrinfo_t gai;                /* name resolution in flight */
    int gai_active;                      /* gai is in flight */
    int watching;                        /* watch was started */
    unsigned rechecks;                   /* rechecks done since the last watch event */
    conn_t *conn;                        /* the connection, or NULL */
    int in_pump;                         /* pump() is running (note 1) */
    int again;                           /* pump() was asked for while running */
    int stop_req;                        /* knit_sync_stop() was called */
    int stop_sent;                       /* the engine was told */
    int finishing;                       /* handles are being closed (note 5) */
    int open_handles;                    /* handles not yet reported closed */
    knit_sync_close_fn close_cb;         /* called once all is closed */
    uint64_t read_retry_at;              /* reading local changes failed: not before this */
    knit_sync_state_t pub_state;         /* last state reported to the application */
    uint64_t applied;                    /* changes from elsewhere that won and were written */
    uint64_t aside;                      /* changes set aside by knit_apply (knit.h) */
    uint64_t recovered;                  /* set-aside changes that applied later */
    knit_schema_t *schema;               /* the last schema handed to the engine (owned) */
};

/* ---------------------------------------------------------------------- */
/* Small helpers                                                            */

static uint64_t mono_ms(void)
{
    return uv_hrtime() / 1000000;
}

static void slog(knit_sync_t *s, int level, const char *fmt, ...)
#ifdef __GNUC__
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static void slog(knit_sync_t *s, int level, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    if (level > s->opt.log_level || !s->opt.on_log)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    s->opt.on_log(s, level, line);
}

static void pump(knit_sync_t *s);
static int pick_claim(knit_sync_t *s);

static void on_timer(uv_timer_t *t)
{
    pump(t->data);
}

/* Runs pump() again: at once if it is running (it loops), else on the
** loop's next turn (note 1). */
static void kick(knit_sync_t *s)
{
    if (s->finishing)
        return;
    if (s->in_pump)
        s->again = 1;
    else
        uv_timer_start(&s->timer, on_timer, 0, 0);
}

/* ---------------------------------------------------------------------- */
/* What the engine asks of the replica                                     */

static int io_cursor(void *data, const char *ns, uint64_t *seq)
{
    knit_sync_t *s = data;
    int rc = knit_cursor(s->k, ns, seq);
    if (rc)
        slog(s, KNIT_SYNC_LOG_ERROR, "reading the cursor of %s: %s", ns, knit_errmsg(s->k));
    return rc;
}

static int io_ready(void *data, const knit_welcome_t *w)
{
    knit_sync_t *s = data;
    struct timespec ts;
    uint64_t wall, relay = knit_hlc_ms(w->clock);
    /* Writes captured before this session are stamped first, into the
    ** namespace they were written to (the one of the last session), so a
    ** claim moves them and --no-claim leaves them there.  Then the
    ** session's namespace becomes the write namespace; the first one ever
    ** also names the home namespace of rows written before any sync. */
    int rc = knit_stamp(s->k);
    if (rc < 0) {
        slog(s, KNIT_SYNC_LOG_ERROR, "stamping local writes: %s", knit_errmsg(s->k));
        return rc;
    }
    rc = knit_set_namespace(s->k, w->principal);
    if (rc) {
        slog(s, KNIT_SYNC_LOG_ERROR, "adopting namespace %s: %s", w->principal, knit_errmsg(s->k));
        return rc;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    wall = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    if (w->limits.max_drift_ms && wall > relay + w->limits.max_drift_ms / 2)
        slog(s, KNIT_SYNC_LOG_WARN,
             "this clock is %llu ms ahead of the relay's; changes stamped more than %llu ms "
             "ahead are refused",
             (unsigned long long)(wall - relay), (unsigned long long)w->limits.max_drift_ms);
    return 0;
}

/* The relay merged `from` into the account `to`: the replica's rows
** follow, then the claim is recorded (note 6). */
static int io_claimed(void *data, const char *from, const char *to)
{
    knit_sync_t *s = data;
    int moved = knit_move_namespace(s->k, from, to), rc;
    if (moved < 0) {
        slog(s, KNIT_SYNC_LOG_ERROR, "moving the rows of %s into %s: %s", from, to,
             knit_errmsg(s->k));
        return moved;
    }
    if ((rc = knit_setting_set(s->k, CLAIMED_SETTING, s->anon_id)) != 0)
        slog(s, KNIT_SYNC_LOG_WARN,
             "recording the claim of %s: %s (the next run claims again, harmlessly)", from,
             knit_errmsg(s->k));
    slog(s, KNIT_SYNC_LOG_INFO, "claimed %s into %s: the relay merged it; rows moved here: %d",
         from, to, moved);
    snprintf(s->claimed_ns, sizeof s->claimed_ns, "%s", from);
    s->claimed_rows = moved;
    return 0;
}

static int io_apply(void *data, const char *ns, uint64_t from, uint64_t to, const knit_batch_t *b)
{
    knit_sync_t *s = data;
    knit_apply_stats_t st;
    int rc = knit_apply_at(s->k, b, ns, to, &st);
    if (rc) {
        slog(s, KNIT_SYNC_LOG_ERROR, "applying %zu changes of %s (%llu..%llu): %s", b->nchanges, ns,
             (unsigned long long)from, (unsigned long long)to, knit_errmsg(s->k));
        return rc;
    }
    s->applied += st.applied;
    s->aside += st.aside;
    s->recovered += st.recovered;
    if (st.skipped)
        slog(s, KNIT_SYNC_LOG_DEBUG,
             "%zu changes of %s are for tables or columns this replica does not track", st.skipped,
             ns);
    if (st.aside)
        slog(s, KNIT_SYNC_LOG_WARN,
             "%zu changes of %s (%llu..%llu) could not be applied here and were set aside; "
             "the rest applied (see sync-inspect aside %s)",
             st.aside, ns, (unsigned long long)from, (unsigned long long)to,
             knit_filename(s->k) ? knit_filename(s->k) : "REPLICA");
    slog(s, KNIT_SYNC_LOG_DEBUG,
         "applied %s %llu..%llu: %zu won, %zu known, %zu lost, %zu set aside, %zu recovered", ns,
         (unsigned long long)from, (unsigned long long)to, st.applied, st.known, st.lost, st.aside,
         st.recovered);
    return 0;
}

/* The replica's detailed message for the request that just failed. */
static const char *io_errmsg(void *data)
{
    knit_sync_t *s = data;
    return knit_errmsg(s->k);
}

static int io_acked(void *data, uint64_t version)
{
    knit_sync_t *s = data;
    int rc = knit_ack(s->k, version);
    if (rc)
        slog(s, KNIT_SYNC_LOG_WARN, "recording the acknowledgement: %s", knit_errmsg(s->k));
    return rc;
}

/* The replica's tracked schema for this connection's HELLO, read afresh so
** that a migration shows from the next session on. */
static int io_schema(void *data, const knit_schema_t **out)
{
    knit_sync_t *s = data;
    knit_schema_t *sc = NULL;
    int rc = knit__schema_read(s->k, &sc);
    if (rc) {
        slog(s, KNIT_SYNC_LOG_WARN, "reading the tracked schema: %s", knit_errmsg(s->k));
        return rc;
    }
    knit__schema_free(s->schema);
    s->schema = sc;
    *out = sc;
    return 0;
}

static knit_sync_state_t public_state(knit_client_state_t st)
{
    switch (st) {
    case KNIT_CLIENT_CONNECTING:
    case KNIT_CLIENT_HELLO_SENT:
        return KNIT_SYNC_CONNECTING;
    case KNIT_CLIENT_READY:
        return KNIT_SYNC_ONLINE;
    case KNIT_CLIENT_STOPPED:
        return KNIT_SYNC_STOPPED;
    default:
        return KNIT_SYNC_OFFLINE;
    }
}

static void io_event(void *data, const knit_client_event_t *ev)
{
    knit_sync_t *s = data;
    knit_sync_event_t pe;
    memset(&pe, 0, sizeof pe);
    pe.state = public_state(ev->state);
    switch (ev->type) {
    case KNIT_CLIENT_EV_STATE:
        if (pe.state == s->pub_state)
            return;
        s->pub_state = pe.state;
        pe.type = KNIT_SYNC_EV_STATE;
        pe.retry_ms = ev->state == KNIT_CLIENT_WAITING ? ev->delay_ms : 0;
        if (pe.state == KNIT_SYNC_ONLINE) {
            pe.principal = knit_client_principal(s->c);
            if (s->claimed_ns[0]) {
                pe.claim = s->claimed_ns;
                pe.moved = s->claimed_rows;
            }
        }
        if (s->opt.on_event)
            s->opt.on_event(s, &pe);
        s->claimed_ns[0] = '\0'; /* reported once, with the session it opened */
        return;
    case KNIT_CLIENT_EV_ERROR:
        pe.type = KNIT_SYNC_EV_ERROR;
        pe.code = ev->code;
        pe.message = ev->message;
        pe.fatal = ev->fatal;
        pe.push = ev->push;
        pe.claim = ev->claim;
        break;
    case KNIT_CLIENT_EV_SYNCED:
        pe.type = KNIT_SYNC_EV_SYNCED;
        break;
    default:
        return;
    }
    if (s->opt.on_event)
        s->opt.on_event(s, &pe);
}

static void io_log(void *data, int level, const char *line)
{
    knit_sync_t *s = data;
    if (s->opt.on_log)
        s->opt.on_log(s, level, line);
}

/* ---------------------------------------------------------------------- */
/* The connection                                                           */

static void on_conn_closed(knit_stream_t *st)
{
    conn_t *cn = st->data;
    knit_sync_t *s = cn->s;
    if (s->conn == cn)
        s->conn = NULL;
    /* Note 4: only now may the engine start over. */
    knit_client_lost(s->c, mono_ms(), cn->code, cn->msg[0] ? cn->msg : NULL);
    knit__free(cn);
    s->open_handles--;
    pump(s);
}

static void conn_close(conn_t *cn, int code, const char *msg)
{
    if (cn->closing)
        return;
    cn->closing = 1;
    cn->code = code;
    snprintf(cn->msg, sizeof cn->msg, "%s", msg ? msg : "");
    knit_stream_close(cn->st);
}

static void on_written(knit_stream_t *st, void *arg, int status)
{
    conn_t *cn = st->data;
    cn->writes--;
    cn->wbytes -= (size_t)(uintptr_t)arg;
    if (status != 0) {
        conn_close(cn, status, knit_strerror(status));
        return;
    }
    if (cn->close_when_drained && cn->writes == 0)
        conn_close(cn, 0, NULL);
    if (!cn->closing)
        pump(cn->s);
}

/* Writes what the engine queued (one write for all of it). */
static void flush_output(knit_sync_t *s)
{
    conn_t *cn = s->conn;
    knit_buf_t b = {NULL, 0, 0};
    int rc;

    knit_client_take_output(s->c, &b);
    if (!b.len) {
        knit_buf_free(&b);
        return;
    }
    if (!cn || cn->closing || !cn->connected) {
        knit_buf_free(&b);
        return;
    }
    /* The stream owns b.p from here on. */
    rc = knit_stream_write(cn->st, b.p, b.len, on_written, (void *)(uintptr_t)b.len);
    if (rc) {
        conn_close(cn, rc, knit_strerror(rc));
        return;
    }
    cn->writes++;
    cn->wbytes += b.len;
}

static void on_conn_read(knit_stream_t *st, const uint8_t *p, size_t n)
{
    conn_t *cn = st->data;
    knit_sync_t *s = cn->s;
    if (cn->closing)
        return;
    if (knit_client_input(s->c, p, n, mono_ms()) != 0)
        knit_stream_read(st, 0);
    pump(s);
}

static void on_conn_end(knit_stream_t *st, int code, const char *msg)
{
    conn_t *cn = st->data;
    conn_close(cn, code, msg ? msg : "the relay closed the connection");
}

static void on_conn_open(knit_stream_t *st, int status, const char *msg)
{
    conn_t *cn = st->data;
    knit_sync_t *s = cn->s;
    if (cn->closing)
        return;
    if (status) {
        char text[160];
        snprintf(text, sizeof text, "%s:%d: %s", s->host, s->opt.port, msg);
        conn_close(cn, status, text);
        return;
    }
    cn->connected = 1;
    knit_client_connected(s->c, mono_ms());
    pump(s);
}

static int urandom(void *buf, size_t n);

/* Puts the TCP or TLS stream cn->st inside a WebSocket client stream
** (ws_client.h), whose callbacks are cbs.  The Host header names the
** server_name the certificate is checked against, if there is one (a
** reverse proxy routes on it), else the host.  On failure cn->st is still
** the inner stream, which the caller closes. */
static int wrap_websocket(knit_sync_t *s, conn_t *cn, const knit_stream_cbs_t *cbs)
{
    const char *name = s->opt.tls && s->server_name ? s->server_name : s->host;
    char hostport[300];
    uint8_t seed[32];
    knit_stream_t *ws;
    int rc;
    snprintf(hostport, sizeof hostport, strchr(name, ':') ? "[%s]:%d" : "%s:%d", name, s->opt.port);
    if ((rc = urandom(seed, sizeof seed)) != 0)
        return rc;
    rc = knit_ws_client(cn->st, hostport, s->ws_path, seed, cbs, cn, &ws);
    memset(seed, 0, sizeof seed);
    if (rc == 0)
        cn->st = ws;
    return rc;
}

static void connect_to(knit_sync_t *s, const struct sockaddr *addr)
{
    static const knit_stream_cbs_t cbs = {on_conn_open, on_conn_read, on_conn_end, on_conn_closed};
    conn_t *cn = knit__calloc(1, sizeof *cn);
    int rc;
    if (!cn) {
        knit_client_lost(s->c, mono_ms(), KNIT_ENOMEM, "out of memory");
        return;
    }
    cn->s = s;
    if (s->opt.tls && !s->tls) {
        /* The trust anchors are loaded once, at the first attempt, so a
        ** bad CA file is reported like any connection failure. */
        char msg[300];
        if (knit_tls_conf_client(s->ca_file, msg, sizeof msg, &s->tls) != 0) {
            knit__free(cn);
            knit_client_lost(s->c, mono_ms(), KNIT_ETLS, msg);
            return;
        }
    }
    if (s->opt.tls)
        rc = knit_tls_connect(s->loop, addr, s->tls, s->server_name ? s->server_name : s->host,
                              &cbs, cn, &cn->st);
    else
        rc = knit_tcp_connect(s->loop, addr, &cbs, cn, &cn->st);
    if (rc != 0) {
        char msg[160];
        knit__free(cn);
        snprintf(msg, sizeof msg, "%s:%d: %s", s->host, s->opt.port, knit_strerror(rc));
        knit_client_lost(s->c, mono_ms(), rc, msg);
        return;
    }
    s->conn = cn;
    s->open_handles++;
    if (s->opt.websocket && (rc = wrap_websocket(s, cn, &cbs)) != 0) {
        char msg[160];
        snprintf(msg, sizeof msg, "%s:%d: cannot start a WebSocket: %s", s->host, s->opt.port,
                 knit_strerror(rc));
        conn_close(cn, rc, msg); /* on_conn_closed tells the engine */
    }
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    knit_sync_t *s = req->data;
    s->gai_active = 0;
    if (s->finishing || knit_client_state(s->c) != KNIT_CLIENT_CONNECTING) {
        uv_freeaddrinfo(res);
        pump(s);
        return;
    }
    if (status < 0 || !res) {
        char msg[200];
        snprintf(msg, sizeof msg, "cannot resolve %s: %s", s->host, uv_strerror(status));
        knit_client_lost(s->c, mono_ms(), KNIT_EIO, msg);
    } else {
        connect_to(s, res->ai_addr);
    }
    uv_freeaddrinfo(res);
    pump(s);
}

/* Starts a connection attempt: an IP literal directly, a name through
** getaddrinfo. */
static void start_connect(knit_sync_t *s)
{
    struct sockaddr_storage ss;
    struct addrinfo hints;
    char port[16];
    int rc;

    if (s->opt.get_token) {
        char *tok = NULL;
        rc = s->opt.get_token(s, &tok);
        if (rc == 0 && tok) {
            knit_sync_set_token(s, tok);
            free(tok);
        } else {
            slog(s, KNIT_SYNC_LOG_WARN, "no fresh token (%s); using the previous one",
                 knit_strerror(rc ? rc : KNIT_EINVAL));
        }
    }
    if (uv_ip4_addr(s->host, s->opt.port, (struct sockaddr_in *)&ss) == 0 ||
        uv_ip6_addr(s->host, s->opt.port, (struct sockaddr_in6 *)&ss) == 0) {
        connect_to(s, (const struct sockaddr *)&ss);
        return;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof port, "%d", s->opt.port);
    s->gai.data = s;
    rc = uv_getaddrinfo(s->loop, &s->gai, on_resolved, s->host, port, &hints);
    if (rc) {
        char msg[200];
        snprintf(msg, sizeof msg, "cannot resolve %s: %s", s->host, uv_strerror(rc));
        knit_client_lost(s->c, mono_ms(), KNIT_EIO, msg);
        return;
    }
    s->gai_active = 1;
}

/* ---------------------------------------------------------------------- */
/* Local changes                                                            */

/* Hands the engine the replica's unpushed local changes while it wants
** them (note 3). */
static void read_local(knit_sync_t *s, uint64_t now)
{
    uint64_t after;
    size_t max;
    while (s->conn && s->conn->wbytes < MAX_WBACKLOG && now >= s->read_retry_at &&
           knit_client_push_room(s->c, &after, &max)) {
        knit_since_opts_t o;
        knit_batch_t *b = NULL;
        uint64_t v0 = 0, covers;
        int rc;

        memset(&o, 0, sizeof o);
        o.local_only = 1;
        o.max_changes = max;
        /* Read the version first: every local change up to it is
        ** committed, so the read below sees all of them. */
        rc = knit_version(s->k, &v0);
        if (!rc)
            rc = knit_changes_since(s->k, after, &o, &b);
        if (rc) {
            slog(s, KNIT_SYNC_LOG_WARN, "reading local changes: %s (retrying)", knit_errmsg(s->k));
            s->read_retry_at = now + READ_RETRY_MS;
            return;
        }
        if (b->nchanges == 0) {
            knit_batch_free(b);
            knit_client_push_none(s->c, v0, now);
            continue;
        }
        covers = b->txns[b->ntxns - 1].version;
        /* A read cut at max changes may have left later ones out. */
        if (b->nchanges < max && v0 > covers)
            covers = v0;
        slog(s, KNIT_SYNC_LOG_DEBUG, "read %zu local changes in %zu units after %llu", b->nchanges,
             b->ntxns, (unsigned long long)after);
        if ((rc = knit_client_push(s->c, b, covers, now)) != 0) {
            slog(s, KNIT_SYNC_LOG_WARN, "queueing a push: %s (retrying)", knit_strerror(rc));
            s->read_retry_at = now + READ_RETRY_MS;
            return;
        }
        flush_output(s);
    }
}

/* A local write may have happened: knit_poll tells (note 2). */
static int poll_replica(knit_sync_t *s)
{
    int rc = knit_poll(s->k);
    if (rc < 0) {
        slog(s, KNIT_SYNC_LOG_DEBUG, "polling the replica: %s", knit_errmsg(s->k));
        return 0;
    }
    if (rc > 0)
        knit_client_local_changed(s->c);
    return rc;
}

static void on_recheck(uv_timer_t *t)
{
    knit_sync_t *s = t->data;
    if (poll_replica(s) > 0) {
        pump(s);
        return;
    }
    if (++s->rechecks < RECHECKS)
        uv_timer_start(&s->recheck, on_recheck, (uint64_t)1 << s->rechecks, 0);
}

static void on_watch(uv_fs_event_t *h, const char *filename, int events, int status)
{
    knit_sync_t *s = h->data;
    (void)events;
    if (status < 0 || s->finishing)
        return;
    /* The database, its -wal and -journal files; nothing else in the
    ** directory matters. */
    if (filename && (strncmp(filename, s->watch_db, s->watch_dblen) != 0 ||
                     (filename[s->watch_dblen] != '\0' && filename[s->watch_dblen] != '-')))
        return;
    if (poll_replica(s) > 0) {
        uv_timer_stop(&s->recheck);
        pump(s);
        return;
    }
    s->rechecks = 0;
    uv_timer_start(&s->recheck, on_recheck, 1, 0);
}

static void on_poll(uv_timer_t *t)
{
    knit_sync_t *s = t->data;
    if (poll_replica(s) > 0)
        pump(s);
}

/* ---------------------------------------------------------------------- */
/* The pump and stopping                                                    */

static void on_handle_closed(uv_handle_t *h)
{
    knit_sync_t *s = h->data;
    if (--s->open_handles > 0)
        return;
    if (s->close_cb)
        s->close_cb(s);
    knit_client_free(s->c);
    knit__schema_free(s->schema);
    knit__free(s->host);
    knit__free(s->ca_file);
    knit__free(s->server_name);
    knit__free(s->ws_path);
    knit_tls_conf_unref(s->tls);
    knit__free(s->token);
    if (s->anon_secret)
        memset(s->anon_secret, 0, strlen(s->anon_secret));
    knit__free(s->anon_id);
    knit__free(s->anon_secret);
    knit__free(s->agent);
    knit__free(s->watch_dir);
    knit__free(s);
}

/* Closes every handle once the engine has stopped (note 5). */
static void finish(knit_sync_t *s)
{
    if (s->finishing)
        return;
    s->finishing = 1;
    uv_close((uv_handle_t *)&s->timer, on_handle_closed);
    uv_close((uv_handle_t *)&s->poll, on_handle_closed);
    uv_close((uv_handle_t *)&s->recheck, on_handle_closed);
    if (s->watching)
        uv_close((uv_handle_t *)&s->watch, on_handle_closed);
    else
        s->open_handles--;
}

static void pump(knit_sync_t *s)
{
    uint64_t now, next;
    if (s->finishing)
        return;
    if (s->in_pump) {
        s->again = 1;
        return;
    }
    s->in_pump = 1;
    do {
        s->again = 0;
        now = mono_ms();
        if (s->stop_req && !s->stop_sent) {
            s->stop_sent = 1;
            knit_client_stop(s->c, now, s->opt.stop_grace_ms);
        }
        knit_client_tick(s->c, now);
        if (knit_client_want_connect(s->c, now))
            start_connect(s);
        read_local(s, now);
        flush_output(s);
        if (s->conn && !s->conn->closing && knit_client_want_close(s->c)) {
            if (s->conn->writes == 0)
                conn_close(s->conn, 0, NULL);
            else
                s->conn->close_when_drained = 1;
        } else if (!s->conn && !s->gai_active && knit_client_want_close(s->c)) {
            /* Closing before a socket existed (during name resolution). */
            knit_client_lost(s->c, now, 0, NULL);
            s->again = 1;
        }
        next = knit_client_tick(s->c, now);
        flush_output(s);
    } while (s->again);
    s->in_pump = 0;

    if (knit_client_state(s->c) == KNIT_CLIENT_STOPPED && !s->conn && !s->gai_active) {
        finish(s);
        return;
    }
    if (s->read_retry_at > now && s->read_retry_at < next)
        next = s->read_retry_at;
    if (next != UINT64_MAX)
        uv_timer_start(&s->timer, on_timer, next > now ? next - now : 0, 0);
    else
        uv_timer_stop(&s->timer);
}

/* ---------------------------------------------------------------------- */
/* API                                                                      */

static char *sdup(const char *p, int *failed)
{
    char *d;
    if (!p)
        return NULL;
    if (!(d = knit__strdup(p)))
        *failed = 1;
    return d;
}

/* Splits the replica's path into the directory to watch and the name. */
static int setup_watch(knit_sync_t *s)
{
    const char *path = s->opt.replica_path;
    const char *slash;
    int rc;
    if (s->opt.no_watch)
        return 0;
    if (!path)
        path = knit_filename(s->k);
    if (!path || !*path)
        return 0; /* an in-memory or temporary database: polling only */
    slash = strrchr(path, '/');
    if (slash) {
        size_t n = (size_t)(slash - path);
        if (!(s->watch_dir = knit__malloc(n + 2)))
            return KNIT_ENOMEM;
        memcpy(s->watch_dir, path, n ? n : 1);
        s->watch_dir[n ? n : 1] = '\0';
        s->watch_db = (char *)slash + 1;
    } else {
        if (!(s->watch_dir = knit__strdup(".")))
            return KNIT_ENOMEM;
        s->watch_db = (char *)path;
    }
    /* watch_db points into the path; keep a copy after the directory. */
    {
        size_t dl = strlen(s->watch_dir), bl = strlen(s->watch_db);
        char *both = knit__malloc(dl + bl + 2);
        if (!both)
            return KNIT_ENOMEM;
        memcpy(both, s->watch_dir, dl + 1);
        memcpy(both + dl + 1, s->watch_db, bl + 1);
        knit__free(s->watch_dir);
        s->watch_dir = both;
        s->watch_db = both + dl + 1;
        s->watch_dblen = bl;
    }
    if ((rc = uv_fs_event_init(s->loop, &s->watch)) != 0)
        return KNIT_EIO;
    s->watch.data = s;
    s->watching = 1;
    if ((rc = uv_fs_event_start(&s->watch, on_watch, s->watch_dir, 0)) != 0)
        slog(s, KNIT_SYNC_LOG_WARN, "cannot watch %s (%s): noticing writes by polling only",
             s->watch_dir, uv_strerror(rc));
    return 0;
}

int knit_sync_start(uv_loop_t *loop, knit_t *k, const knit_sync_options_t *opt,
                    knit_sync_t **out) /* see knit_sync.h */
{
    knit_sync_t *s;
    knit_client_config_t cfg;
    knit_client_io_t io;
    int failed = 0, rc;
    char agent[64];

    *out = NULL;
    if (!loop || !k || !opt || !opt->host || !*opt->host || opt->port <= 0 || opt->port > 65535)
        return KNIT_EINVAL;
    if (opt->cred_kind != KNIT_SYNC_ANONYMOUS && opt->cred_kind != KNIT_SYNC_JWT)
        return KNIT_EINVAL;
    if (opt->cred_kind == KNIT_SYNC_JWT && !opt->token && !opt->get_token)
        return KNIT_EINVAL;
    if (!opt->anon_id != !opt->anon_secret)
        return KNIT_EINVAL;
    if (opt->ws_path && !knit_ws_path_ok(opt->ws_path))
        return KNIT_EINVAL;
    if (!(s = knit__calloc(1, sizeof *s)))
        return KNIT_ENOMEM;
    s->loop = loop;
    s->k = k;
    s->opt = *opt;
    if (!s->opt.poll_ms)
        s->opt.poll_ms = DEF_POLL_MS;
    if (!s->opt.stop_grace_ms)
        s->opt.stop_grace_ms = DEF_STOP_GRACE_MS;
    snprintf(agent, sizeof agent, "knit/%s", KNIT_VERSION_STRING);
    s->host = sdup(opt->host, &failed);
    s->ca_file = sdup(opt->ca_file, &failed);
    s->server_name = sdup(opt->server_name, &failed);
    s->ws_path = sdup(opt->ws_path, &failed);
    s->token = sdup(opt->token, &failed);
    s->agent = sdup(opt->agent ? opt->agent : agent, &failed);
    s->anon_id = sdup(opt->anon_id, &failed);
    s->anon_secret = sdup(opt->anon_secret, &failed);
    s->opt.host = s->host;
    s->opt.ca_file = s->ca_file;
    s->opt.server_name = s->server_name;
    s->opt.ws_path = s->ws_path;
    s->opt.token = NULL;
    s->opt.anon_id = s->opt.anon_secret = NULL;
    s->opt.agent = s->agent;
    s->pub_state = KNIT_SYNC_OFFLINE;
    rc = failed ? KNIT_ENOMEM : 0;
    if (!rc && opt->cred_kind == KNIT_SYNC_ANONYMOUS && !s->anon_id)
        rc = knit_sync_anon_credential(k, &s->anon_id, &s->anon_secret);
    if (!rc && opt->cred_kind == KNIT_SYNC_JWT && !opt->no_claim)
        rc = pick_claim(s);

    memset(&cfg, 0, sizeof cfg);
    if (!rc)
        rc = knit_site(k, &cfg.site);
    if (!rc)
        rc = knit_acked(k, &cfg.acked);
    if (rc) {
        knit__free(s->host);
        knit__free(s->ca_file);
        knit__free(s->server_name);
        knit__free(s->ws_path);
        knit__free(s->token);
        knit__free(s->agent);
        knit__free(s->anon_id);
        knit__free(s->anon_secret);
        knit__free(s);
        return rc;
    }
    if (opt->cred_kind == KNIT_SYNC_ANONYMOUS) {
        cfg.cred.kind = KNIT_CRED_ANON;
        cfg.cred.id = s->anon_id;
        cfg.cred.secret = s->anon_secret;
    } else {
        cfg.cred.kind = KNIT_CRED_JWT;
        cfg.cred.token = s->token ? s->token : "";
        if (s->anon_id && !opt->no_claim) {
            cfg.claim.kind = KNIT_CRED_ANON;
            cfg.claim.id = s->anon_id;
            cfg.claim.secret = s->anon_secret;
        }
    }
    cfg.agent = s->agent;
    cfg.max_inflight = opt->max_inflight;
    cfg.max_push = opt->max_push;
    cfg.backoff_base_ms = opt->backoff_base_ms;
    cfg.backoff_max_ms = opt->backoff_max_ms;
    cfg.seed = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)s;
    cfg.log_level = opt->log_level;
    memset(&io, 0, sizeof io);
    io.cursor = io_cursor;
    io.ready = io_ready;
    io.claimed = io_claimed;
    io.apply = io_apply;
    io.acked = io_acked;
    io.errmsg = io_errmsg;
    io.schema = io_schema;
    io.event = io_event;
    io.log = io_log;
    io.data = s;
    if ((rc = knit_client_new(&cfg, &io, &s->c)) != 0) {
        if (s->anon_secret)
            memset(s->anon_secret, 0, strlen(s->anon_secret));
        knit__free(s->host);
        knit__free(s->ca_file);
        knit__free(s->server_name);
        knit__free(s->ws_path);
        knit__free(s->token);
        knit__free(s->agent);
        knit__free(s->anon_id);
        knit__free(s->anon_secret);
        knit__free(s);
        return rc;
    }

    uv_timer_init(loop, &s->timer);
    uv_timer_init(loop, &s->poll);
    uv_timer_init(loop, &s->recheck);
    s->timer.data = s->poll.data = s->recheck.data = s;
    s->open_handles = 4; /* timer, poll, recheck, watch (counted even if unused) */
    if ((rc = setup_watch(s)) != 0)
        slog(s, KNIT_SYNC_LOG_WARN, "no file watch (%s): noticing writes by polling only",
             knit_strerror(rc));
    uv_timer_start(&s->poll, on_poll, s->opt.poll_ms, s->opt.poll_ms);
    knit_client_start(s->c, mono_ms());
    kick(s);
    *out = s;
    return 0;
}

void knit_sync_stop(knit_sync_t *s, knit_sync_close_fn cb) /* see knit_sync.h */
{
    if (!s || s->stop_req)
        return;
    s->stop_req = 1;
    s->close_cb = cb;
    if (s->gai_active)
        uv_cancel((uv_req_t *)&s->gai);
    kick(s);
}

void knit_sync_notify(knit_sync_t *s) /* see knit_sync.h */
{
    if (!s || s->finishing)
        return;
    knit_client_local_changed(s->c);
    kick(s);
}

int knit_sync_set_token(knit_sync_t *s, const char *token) /* see knit_sync.h */
{
    knit_cred_t cred;
    char *t;
    int rc;
    if (!token)
        return KNIT_EINVAL;
    if (!(t = knit__strdup(token)))
        return KNIT_ENOMEM;
    memset(&cred, 0, sizeof cred);
    cred.kind = KNIT_CRED_JWT;
    cred.token = t;
    if ((rc = knit_client_set_cred(s->c, &cred)) != 0) {
        knit__free(t);
        return rc;
    }
    if (s->token)
        memset(s->token, 0, strlen(s->token));
    knit__free(s->token);
    s->token = t;
    return 0;
}

void knit_sync_status(knit_sync_t *s, knit_sync_status_t *st) /* see knit_sync.h */
{
    knit_client_stats_t cs;
    knit_client_stats(s->c, &cs);
    memset(st, 0, sizeof *st);
    st->state = public_state(knit_client_state(s->c));
    st->synced = cs.synced;
    st->acked = cs.acked;
    st->sessions = cs.sessions;
    st->claims = cs.claims;
    st->pushes = cs.pushes;
    st->pushed_changes = cs.pushed_changes;
    st->acks = cs.acks;
    st->rejects = cs.rejects;
    st->deltas = cs.deltas;
    st->delta_changes = cs.delta_changes;
    st->acked_changes = cs.acked_changes;
    st->echoes = cs.echoes;
    st->applied = s->applied;
    st->aside = s->aside;
    st->recovered = s->recovered;
}

void *knit_sync_data(const knit_sync_t *s) /* see knit_sync.h */
{
    return s->opt.data;
}

const char *knit_sync_state_name(int state) /* see knit_sync.h */
{
    switch (state) {
    case KNIT_SYNC_OFFLINE:
        return "OFFLINE";
    case KNIT_SYNC_CONNECTING:
        return "CONNECTING";
    case KNIT_SYNC_ONLINE:
        return "ONLINE";
    case KNIT_SYNC_STOPPED:
        return "STOPPED";
    default:
        return "UNKNOWN";
    }
}

/* ---------------------------------------------------------------------- */
/* The replica's anonymous credential                                       */

static int urandom(void *buf, size_t n)
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    size_t got = 0;
    if (fd < 0)
        return KNIT_EIO;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            close(fd);
            return KNIT_EIO;
        }
        got += (size_t)r;
    }
    close(fd);
    return 0;
}

/* Splits "id:secret" into new strings. */
static int split_anon(const char *v, char **id, char **secret)
{
    const char *colon = strchr(v, ':');
    size_t n;
    if (!colon)
        return KNIT_ECORRUPT;
    n = (size_t)(colon - v);
    if (!(*id = knit__malloc(n + 1)))
        return KNIT_ENOMEM;
    memcpy(*id, v, n);
    (*id)[n] = '\0';
    if (!(*secret = knit__strdup(colon + 1))) {
        knit__free(*id);
        *id = NULL;
        return KNIT_ENOMEM;
    }
    if (!knit_anon_id_ok(*id) || !knit_anon_secret_ok(*secret)) {
        knit__free(*id);
        knit__free(*secret);
        *id = *secret = NULL;
        return KNIT_ECORRUPT;
    }
    return 0;
}

/* Note 6: the anonymous credential JWT sessions claim, if any.  The one in
** the options, else the replica's own (read, never made here); none when
** the replica recorded it claimed and holds no row of its namespace.
** Leaves s->anon_id and s->anon_secret set when a claim is due. */
static int pick_claim(knit_sync_t *s)
{
    char ns[KNIT_PRINCIPAL_MAX], *v = NULL, *done = NULL;
    int rc;
    if (!s->anon_id) {
        if ((rc = knit_setting_get(s->k, ANON_SETTING, &v)) != 0 || !v)
            return rc;
        rc = split_anon(v, &s->anon_id, &s->anon_secret);
        memset(v, 0, strlen(v));
        knit_free(v);
        if (rc)
            return rc;
    }
    if (knit_auth_anon_principal(s->anon_id, ns, sizeof ns) != 0)
        return KNIT_EINVAL;
    rc = knit_setting_get(s->k, CLAIMED_SETTING, &done);
    if (!rc && done && strcmp(done, s->anon_id) == 0) {
        /* Claimed before: again only if rows of it came back (an
        ** anonymous run since). */
        knit_since_opts_t o;
        knit_batch_t *b = NULL;
        memset(&o, 0, sizeof o);
        o.ns = ns;
        o.max_changes = 1;
        rc = knit_changes_since(s->k, 0, &o, &b);
        if (!rc && b->nchanges == 0) {
            memset(s->anon_secret, 0, strlen(s->anon_secret));
            knit__free(s->anon_id);
            knit__free(s->anon_secret);
            s->anon_id = s->anon_secret = NULL;
        }
        knit_batch_free(b);
    }
    knit_free(done);
    return rc;
}

int knit_sync_anon_credential(knit_t *k, char **id, char **secret) /* see knit_sync.h */
{
    char *v = NULL;
    int rc;
    *id = *secret = NULL;
    rc = knit_setting_get(k, ANON_SETTING, &v);
    if (!rc && !v) {
        /* Made once; knit_setting_init keeps the first one stored if two
        ** processes start at once, so both use the same credential. */
        uint8_t rid[16], rsec[32];
        char eid[32], esec[48], both[96];
        rc = urandom(rid, sizeof rid);
        if (!rc)
            rc = urandom(rsec, sizeof rsec);
        if (!rc) {
            knit_b64url_encode(rid, sizeof rid, eid);
            knit_b64url_encode(rsec, sizeof rsec, esec);
            snprintf(both, sizeof both, "%s:%s", eid, esec);
            rc = knit_setting_init(k, ANON_SETTING, both, &v);
            memset(both, 0, sizeof both);
            memset(esec, 0, sizeof esec);
            memset(rsec, 0, sizeof rsec);
        }
    }
    if (!rc && v)
        rc = split_anon(v, id, secret);
    if (v) {
        memset(v, 0, strlen(v));
        knit_free(v);
    }
    if (rc) {
        knit__free(*id);
        knit__free(*secret);
        *id = *secret = NULL;
    }
    return rc;
}
