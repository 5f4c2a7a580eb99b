/*
** client.c: the sync client's libuv glue (API in knit_sync.h).  The
** connection (a byte stream, transport/stream/stream.h: TCP, or TLS over
** TCP when options.tls is set, either one inside a WebSocket when
** options.websocket is, or HTTP long-polling, lp_client.c), timers,
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
**      its namespace.  io_claimed moves the rows, then records the claim
**      and retires the anonymous credential (the relay sealed it), in two
**      transactions: a crash between them only makes the next run claim
**      again, and a second claim merges nothing new on the relay and finds
**      nothing left to move here.  A later anonymous run makes a fresh
**      credential, which the next sign-in claims in turn.
**   7. Transports and fallback.  The client has a stream transport (tcp,
**      tls, ws, wss) and may have a long-poll URL (options.longpoll_url, or
**      derived for ws/wss: the same host and port, /v1/lp).  A stream
**      attempt *fails* when its connection ends before that session first
**      reported SYNCED, unless the client is stopping, the certificate was
**      refused (KNIT_ETLS: never a reason to try another way) or the relay
**      refused the session for good (a fatal ERROR such as KNIT_EAUTH).
**      fallback_after failures in a row, or at once a stream that cannot be
**      set up at all (a WebSocket upgrade refused: KNIT_EPROTO before
**      open) when the long-poll URL was given, switch the client to
**      long-polling (switch_transport); a session that syncs resets the
**      count.  With the derived URL a refused upgrade stays the fatal error
**      it was (a wrong port or path is reported, not hidden behind a
**      fallback that may work).  After stream_retry_ms on
**      long-polling the stream is tried again: at once when there is no
**      connection, else by closing the long-poll session once it is synced
**      (or stream_retry_ms / 10 later at the most); that one attempt
**      failing goes straight back to long-polling.  The engine is told a
**      stream failure that switches as KNIT_EIO, not KNIT_EPROTO, since
**      another transport may work (it would wait its longest delay).
**      The transport in use is in every event and in knit_sync_status().
**  10. Several relays (options.relays).  The addresses (host:port first,
**      then relays[]) share the transport and the store, so failing over
**      is only a change of address: a stream attempt that ends without a
**      fatal verdict (not stopping, no KNIT_ETLS, no fatal ERROR) moves the
**      next attempt to the next address, round-robin (fail_over), and the
**      engine's backoff (C5) runs as for any loss.  The engine never knows:
**      a new session reads cursors and the acknowledged version from the
**      replica and pushes again what was not acknowledged (C1, C2).  The
**      fallback count of note 7 runs across addresses.
**   8. One connection per device (docs/ARCHITECTURE.md, "One device, many
**      processes").  Every client on a replica competes for an exclusive
**      flock(2) on the sidecar REPLICA.knit-lock (opened O_CLOEXEC; the
**      database, -wal and -shm files are SQLite's alone).  The holder is
**      the leader: only it creates the engine and connects.  The others
**      are followers: they run the file watch, so knit_poll stamps what
**      their process wrote and fires its change callbacks for everything
**      anyone wrote or applied, and they try the lock every LEAD_TRY_MS.
**      The kernel releases a flock when its holder dies, SIGKILL included,
**      so a follower leads within LEAD_TRY_MS of the leader's death.  The
**      engine is created when leadership is won, from what the replica
**      holds then (acknowledged version, cursors, the claim), so a new
**      leader resumes exactly where the last one's commits left the
**      replica: nothing acknowledged is pushed again, nothing unacknowledged
**      is skipped.
**   9. The leader publishes its state in the replica (setting
**      "sync.status", one short autocommit write on knit's connection,
**      never inside the application's transaction): at once when the
**      state, synced or the last error change, and every STATUS_EVERY_MS
**      as a heartbeat.  Followers and `sync-agent status` read it
**      (knit_sync_report), and "synced" counts only while the heartbeat is
**      fresh and the leader alive.
*/
#include "knit_sync.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>
#include <sqlite3.h>

#include "alloc.h"
#include "cred.h"
#include "entropy.h"
#include "codec.h"
#include "proto_client.h"
#include "tcp.h"
#include "tls.h"
#include "lp_client.h"
#include "ws_client.h"
#include "watch.h"
#include "health.h"
#include "checker.h"

#define MAX_WBACKLOG (4u * 1024 * 1024)
#define DEF_POLL_MS 250
#define DEF_STOP_GRACE_MS 3000
#define LEAD_TRY_MS 20       /* a follower tries the lock this often (note 8) */
#define LEAD_RETRY_MS 1000   /* after a takeover that failed to start */
#define STATUS_EVERY_MS 1000 /* heartbeat of the published status (note 9) */
#define STATUS_STALE_MS 5000 /* an older heartbeat is not believed */
#define STATUS_SETTING "sync.status"
#define LOCK_SUFFIX ".knit-lock"
#define READ_RETRY_MS 50
#define ANON_SETTING "sync.anon"
#define CLAIMED_SETTING "sync.claimed"
#define DEF_FALLBACK_AFTER 3
#define DEF_STREAM_RETRY_MS 300000

enum { T_STREAM, T_LP }; /* transports (note 7) */

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
    int transport;          /* T_STREAM or T_LP */
    int synced;             /* this connection's session reported SYNCED (note 7) */
    int ev_code;            /* the last error event during it, 0: none */
    int ev_fatal;           /* that event was fatal */
    char ev_msg[160];       /* its message */
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
    knit_watch_t *watcher;               /* notices commits (watch.c, note 2) */
    uv_timer_t timer;                    /* the engine's next deadline; also the "kick" */
    uv_timer_t lead;                     /* follower: tries the lock (note 8) */
    uv_timer_t beat;                     /* leader: publishes the status (note 9) */
    uv_getaddrinfo_t gai;                /* name resolution in flight */
    int gai_active;                      /* gai is in flight */
    char *lock_path;                     /* REPLICA.knit-lock (owned) */
    int lock_fd;                         /* its descriptor, -1 when closed */
    int leader;                          /* this client holds the lock and the engine */
    int role_told;                       /* the role was logged and reported */
    uint64_t lead_retry_at;              /* follower: not before this (a failed start) */
    uint64_t pending;                    /* local rows not acknowledged (last published) */
    uint64_t since_wall;                 /* wall ms the public state last changed */
    char last_error[256];                /* the last error event's message, published */
    char pub_key[600];                   /* what was last published, minus the heartbeat */
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
    uint64_t rolled_back;                /* refused local changes rolled back (knit_reject) */
    knit_health_t health;                /* latency, errors, attempts (health.h) */
    knit_schema_t *schema;               /* the last schema handed to the engine (owned) */
    char *lp_url;                        /* owned: the long-poll URL, or NULL (note 7) */
    int mode;                            /* T_STREAM or T_LP: the next connection's */
    unsigned stream_fails;               /* stream attempts failed in a row */
    int probing;                         /* this stream attempt follows a fallback */
    uint64_t stream_retry_at;            /* on fallback: try the stream from then on */
    uint64_t fallbacks;                  /* switches to long-polling */
    int lp_explicit;                     /* lp_url was given, not derived */
    char **rhost;                        /* owned: the relay hosts (note 10); host is one */
    int *rport;                          /* their ports */
    size_t nrel;                         /* how many (at least 1) */
    size_t cur;                          /* the one in use: host = rhost[cur] */
    uint64_t failovers;                  /* moves to the next address */
    char relay_txt[300];                 /* "HOST:PORT" in use, for events */
};

#define MAX_RELAYS 64

static uint64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

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
static void publish(knit_sync_t *s, int beat);
static void tell_role(knit_sync_t *s);
static void on_beat(uv_timer_t *t);
static void conn_close(conn_t *cn, int code, const char *msg);

/* The name of transport m (knit_sync.h, event field `transport`). */
static const char *transport_name(const knit_sync_t *s, int m)
{
    if (m == T_LP)
        return s->lp_url && strncmp(s->lp_url, "https:", 6) == 0 ? "longpoll-tls" : "longpoll";
    if (s->opt.websocket)
        return s->opt.tls ? "wss" : "ws";
    return s->opt.tls ? "tls" : "tcp";
}

/* The transport of the connection, or of the next one when there is none. */
static int current_mode(const knit_sync_t *s)
{
    return s->conn ? s->conn->transport : s->mode;
}

/* "HOST:PORT" of the relay in use (note 10). */
static const char *relay_text(knit_sync_t *s)
{
    snprintf(s->relay_txt, sizeof s->relay_txt, strchr(s->host, ':') ? "[%s]:%d" : "%s:%d", s->host,
             s->opt.port);
    return s->relay_txt;
}

/* The next attempt goes to the next relay address (note 10). */
static void fail_over(knit_sync_t *s, const char *why)
{
    char from[300];
    snprintf(from, sizeof from, "%s", relay_text(s));
    s->cur = (s->cur + 1) % s->nrel;
    s->host = s->rhost[s->cur];
    s->opt.host = s->host;
    s->opt.port = s->rport[s->cur];
    s->failovers++;
    slog(s, KNIT_SYNC_LOG_WARN, "failing over from relay %s to %s (%zu of %zu): %s", from,
         relay_text(s), s->cur + 1, s->nrel, why);
}

/* Long-polling because the stream failed (not because it is all there is). */
static int on_fallback(const knit_sync_t *s)
{
    return !s->opt.longpoll && current_mode(s) == T_LP;
}

/* Switches the next connection's transport (note 7) and tells the
** application why. */
static void switch_transport(knit_sync_t *s, int mode, const char *why)
{
    knit_sync_event_t pe;
    uint64_t now = mono_ms();
    if (s->mode == mode)
        return;
    s->mode = mode;
    if (mode == T_LP) {
        s->fallbacks++;
        s->stream_fails = 0;
        s->probing = 0;
        s->stream_retry_at = now + s->opt.stream_retry_ms;
        slog(s, KNIT_SYNC_LOG_WARN,
             "falling back to long-polling at %s: %s; trying the stream (%s) again in %llu s",
             s->lp_url, why, transport_name(s, T_STREAM),
             (unsigned long long)((s->opt.stream_retry_ms + 999) / 1000));
    } else {
        s->probing = 1;
        slog(s, KNIT_SYNC_LOG_INFO, "trying the stream (%s) again: %s", transport_name(s, T_STREAM),
             why);
    }
    memset(&pe, 0, sizeof pe);
    pe.type = KNIT_SYNC_EV_TRANSPORT;
    pe.state = s->pub_state;
    pe.message = why;
    pe.transport = transport_name(s, mode);
    pe.fallback = mode == T_LP && !s->opt.longpoll;
    pe.relay = relay_text(s);
    if (s->opt.on_event)
        s->opt.on_event(s, &pe);
}

/* A connection of transport t ended (cn), or an attempt ended before it
** made one (cn NULL): note 7's count and switch, then the engine is told. */
static void conn_lost(knit_sync_t *s, const conn_t *cn, int t, int code, const char *msg)
{
    char text[400];
    int ev_code = cn ? cn->ev_code : 0;
    if (t == T_STREAM && s->nrel > 1 && !s->stop_req && code != KNIT_ETLS && ev_code != KNIT_ETLS &&
        !(cn && cn->ev_fatal)) {
        const char *why = msg && *msg           ? msg
                          : cn && cn->ev_msg[0] ? cn->ev_msg
                                                : knit_strerror(code      ? code
                                                                : ev_code ? ev_code
                                                                          : KNIT_ECLOSED);
        fail_over(s, why);
    }
    if (t == T_STREAM && s->lp_url && !s->opt.longpoll && !s->stop_req && !(cn && cn->synced) &&
        code != KNIT_ETLS && ev_code != KNIT_ETLS && !(cn && cn->ev_fatal)) {
        int cannot = code == KNIT_EPROTO && !(cn && cn->connected);
        if (cannot && !s->lp_explicit) {
            /* A refused upgrade with the derived URL: a wrong port or path
            ** is reported, not hidden (note 7). */
            knit_client_lost(s->c, mono_ms(), code, msg);
            return;
        }
        const char *why = msg && *msg           ? msg
                          : cn && cn->ev_msg[0] ? cn->ev_msg
                                                : knit_strerror(code      ? code
                                                                : ev_code ? ev_code
                                                                          : KNIT_ECLOSED);
        s->stream_fails++;
        if (s->probing || cannot || s->stream_fails >= s->opt.fallback_after) {
            char reason[400];
            if (s->probing)
                snprintf(reason, sizeof reason, "the stream failed again: %s", why);
            else if (cannot)
                snprintf(reason, sizeof reason, "the stream cannot be set up: %s", why);
            else
                snprintf(reason, sizeof reason, "%u stream attempts in a row failed, the last: %s",
                         s->stream_fails, why);
            switch_transport(s, T_LP, reason);
            if (code == KNIT_EPROTO)
                code = KNIT_EIO; /* another transport may work (note 7) */
            if (code && msg) {
                snprintf(text, sizeof text, "%s (falling back to long-polling)", msg);
                msg = text;
            }
        }
    }
    if (t == T_STREAM)
        s->probing = 0;
    knit_client_lost(s->c, mono_ms(), code, msg);
}

/* On fallback, once stream_retry_ms passed: try the stream (note 7).
** Returns when to look again (UINT64_MAX: no need). */
static uint64_t maybe_retry_stream(knit_sync_t *s, uint64_t now)
{
    knit_client_stats_t cs;
    if (s->opt.longpoll || s->mode != T_LP)
        return UINT64_MAX;
    if (now < s->stream_retry_at)
        return s->stream_retry_at;
    if (!s->conn) {
        switch_transport(s, T_STREAM, "the long-polling interval is over");
        return UINT64_MAX;
    }
    if (s->conn->transport != T_LP || s->conn->closing)
        return UINT64_MAX;
    knit_client_stats(s->c, &cs);
    if (cs.synced || now >= s->stream_retry_at + s->opt.stream_retry_ms / 10) {
        switch_transport(s, T_STREAM, "the long-polling interval is over");
        conn_close(s->conn, 0, NULL);
        return UINT64_MAX;
    }
    return now + 250; /* once the long-poll session is synced */
}

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

/* The writes to ns not acknowledged yet are refused for good (the
** membership ended while they waited): recorded in _knit_rejected and
** announced as rolled back, like a relay's refusal, before the namespace
** goes.  Returns how many, or a KNIT_E* code (logged): then the namespace
** must stay, or those writes would vanish unrecorded. */
static int refuse_unacked(knit_sync_t *s, const char *ns, const char *principal)
{
    uint64_t acked = 0;
    knit_since_opts_t o = {.local_only = 1, .ns = ns};
    knit_batch_t *b = NULL;
    knit_refusal_t *f = NULL;
    char why[320];
    size_t rolled = 0;
    int rc = knit_acked(s->k, &acked);
    if (!rc)
        rc = knit_changes_since(s->k, acked, &o, &b);
    if (!rc && b->nchanges && !(f = knit__calloc(b->nchanges, sizeof *f)))
        rc = KNIT_ENOMEM;
    if (!rc && b->nchanges) {
        snprintf(why, sizeof why,
                 "%.100s is not granted to %.100s (not a member, or the membership ended)", ns,
                 principal);
        for (size_t i = 0; i < b->nchanges; i++) {
            f[i].change = i;
            f[i].code = KNIT_EDENIED;
            f[i].message = why;
        }
        rc = knit_reject(s->k, b, f, b->nchanges, NULL, &rolled);
    }
    if (rc)
        slog(s, KNIT_SYNC_LOG_ERROR,
             "recording the refused writes to %s: %s; its rows stay until that works", ns,
             knit_errmsg(s->k));
    else
        rc = b->nchanges > 0x7fffffff ? 0x7fffffff : (int)b->nchanges;
    knit__free(f);
    knit_batch_free(b);
    return rc;
}

/* Organization namespaces the replica holds that WELCOME no longer grants
** (the membership was revoked): their rows leave the replica (ARCHITECTURE.md,
** "Organization namespaces"); writes to them not yet acknowledged are
** recorded as refused first.  WELCOME's list is the relay's whole answer. */
static int drop_revoked(knit_sync_t *s, const knit_welcome_t *w)
{
    char **held = NULL;
    int rc = knit_namespaces(s->k, "org:", &held);
    if (rc) {
        slog(s, KNIT_SYNC_LOG_ERROR, "reading the replica's namespaces: %s", knit_errmsg(s->k));
        return rc;
    }
    for (size_t i = 0; held[i]; i++) {
        size_t g = 0;
        while (g < w->ngranted && strcmp(w->granted[g], held[i]) != 0)
            g++;
        if (g < w->ngranted)
            continue;
        int refused = refuse_unacked(s, held[i], w->principal);
        if (refused < 0)
            continue; /* logged; tried again at the next WELCOME */
        if (refused)
            slog(s, KNIT_SYNC_LOG_WARN,
                 "%d unacknowledged change(s) to %s refused: it is no longer granted", refused,
                 held[i]);
        int n = knit_drop_namespace(s->k, held[i]);
        if (n < 0) {
            slog(s, KNIT_SYNC_LOG_ERROR, "removing the rows of %s (no longer granted): %s", held[i],
                 knit_errmsg(s->k));
            rc = n;
            break;
        }
        slog(s, KNIT_SYNC_LOG_WARN,
             "%s is no longer granted to %s: %d row(s) of it removed from this replica", held[i],
             w->principal, n);
    }
    knit_free_names(held);
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
    if ((rc = drop_revoked(s, w)) != 0)
        return rc;
    clock_gettime(CLOCK_REALTIME, &ts);
    wall = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    if (w->limits.max_drift_ms && wall > relay + w->limits.max_drift_ms / 2)
        slog(s, KNIT_SYNC_LOG_WARN,
             "this clock is %llu ms ahead of the relay's; changes stamped more than %llu ms "
             "ahead are refused",
             (unsigned long long)(wall - relay), (unsigned long long)w->limits.max_drift_ms);
    return 0;
}

/* The relay says the account was erased (KNIT_EERASED: the identity
** provider deleted the user, or an operator erased it), while online or at
** the next sign-in of a device that was offline then: its rows leave this
** replica too, and the file is free for another account. */
static void erase_account(knit_sync_t *s)
{
    int n = knit_erase_account(s->k);
    if (n < 0)
        slog(s, KNIT_SYNC_LOG_ERROR,
             "the account was erased on the relay, but removing its rows "
             "from this replica failed: %s",
             knit_errmsg(s->k));
    else
        slog(s, KNIT_SYNC_LOG_WARN,
             "the account was erased on the relay: %d row(s) of it removed from this replica", n);
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
    /* The relay sealed `from` (PROTOCOL.md §7): its credential opens no
    ** session any more, so the replica retires it.  A later anonymous run
    ** makes a fresh one, which a later sign-in claims in turn. */
    if ((rc = knit_setting_set(s->k, CLAIMED_SETTING, s->anon_id)) != 0 ||
        (rc = knit_setting_set(s->k, ANON_SETTING, NULL)) != 0)
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

/* A key as SQL literals, for the log. */
static void key_text(const knit_value_t *pk, uint32_t npk, char *buf, size_t n)
{
    size_t off = 0;
    buf[0] = 0;
    for (uint32_t i = 0; i < npk && off + 1 < n; i++) {
        const knit_value_t *v = &pk[i];
        int w;
        const char *sep = i ? ", " : "";
        if (v->type == KNIT_INTEGER)
            w = snprintf(buf + off, n - off, "%s%lld", sep, (long long)v->u.i);
        else if (v->type == KNIT_REAL)
            w = snprintf(buf + off, n - off, "%s%g", sep, v->u.r);
        else if (v->type == KNIT_TEXT)
            w = snprintf(buf + off, n - off, "%s'%.*s'", sep, (int)(v->u.b.n > 60 ? 60 : v->u.b.n),
                         (const char *)v->u.b.p);
        else if (v->type == KNIT_BLOB)
            w = snprintf(buf + off, n - off, "%sX'(%zu bytes)'", sep, v->u.b.n);
        else
            w = snprintf(buf + off, n - off, "%sNULL", sep);
        if (w < 0)
            break;
        off += (size_t)w;
    }
}

/* Refused changes of a push: rolled back to the relay's state, recorded in
** _knit_rejected, one log line each (knit_reject). */
static int io_rejected(void *data, const char *ns, const knit_batch_t *b, const knit_reason_t *r,
                       size_t n, const knit_batch_t *state)
{
    knit_sync_t *s = data;
    knit_refusal_t *f = knit__calloc(n + 1, sizeof *f);
    size_t rolled = 0;
    int rc;
    if (!f)
        return KNIT_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        f[i].change = (size_t)r[i].change;
        f[i].code = r[i].code;
        f[i].message = r[i].message;
    }
    rc = knit_reject(s->k, b, f, n, state, &rolled);
    knit__free(f);
    if (rc) {
        slog(s, KNIT_SYNC_LOG_ERROR, "rolling back %zu refused changes of %s: %s", n, ns,
             knit_errmsg(s->k));
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        const knit_change_t *ch = &b->changes[r[i].change];
        const knit_batch_table_t *t = &b->tables[ch->table];
        char key[200];
        key_text(ch->pk, t->npk, key, sizeof key);
        slog(s, KNIT_SYNC_LOG_WARN,
             "rejected write rolled back: table %s key (%s) column %s: %s: %s", t->name, key,
             ch->col == 0          ? "(row)"
             : ch->col <= t->ncols ? t->cols[ch->col - 1]
                                   : "?",
             knit_err_name(r[i].code),
             r[i].message && *r[i].message ? r[i].message : knit_strerror(r[i].code));
    }
    s->rolled_back += n;
    return 0;
}

/* The consistency check (proto_client.c design note 10, checker.h). */
static int io_check_digest(void *data, const char *ns, uint32_t nbuckets, knit_digest_t *total,
                           knit_digest_t *buckets)
{
    knit_sync_t *s = data;
    return knit__checker_digest(s->k, ns, nbuckets, total, buckets);
}

static int io_check_repair(void *data, const char *ns, uint32_t nbuckets, const uint32_t *fetch,
                           size_t n, const knit_batch_t *state, size_t *rows, size_t *cells)
{
    knit_sync_t *s = data;
    return knit__checker_repair(s->k, ns, nbuckets, fetch, n, state, rows, cells);
}

/* The replica's detailed message for the request that just failed. */
static const char *io_errmsg(void *data)
{
    knit_sync_t *s = data;
    return knit_errmsg(s->k);
}

/* Write-to-ACK latency of each change of an acknowledged push (health.h). */
static void io_ack_seen(void *data, const char *ns, const knit_batch_t *b)
{
    knit_sync_t *s = data;
    uint64_t now = wall_ms();
    (void)ns;
    for (size_t i = 0; i < b->nchanges; i++) {
        uint64_t at = knit_hlc_ms(b->changes[i].hlc);
        knit__health_latency(&s->health, now > at ? now - at : 0);
    }
}

/* The watermark, without waiting for an app's transaction (proto_client.c
** design note 12), except when stopping. */
static int io_acked(void *data, uint64_t version)
{
    knit_sync_t *s = data;
    int was = s->stop_req ? -1 : knit_busy_timeout(s->k, 0);
    int rc = knit_ack(s->k, version);
    if (was >= 0)
        knit_busy_timeout(s->k, was);
    if (rc && rc != KNIT_EBUSY)
        slog(s, KNIT_SYNC_LOG_WARN, "recording the acknowledgement: %s", knit_errmsg(s->k));
    return rc;
}

/* A cursor moved past own pushes, without waiting (design note 12 there). */
static int io_save_cursor(void *data, const char *ns, uint64_t from, uint64_t to)
{
    knit_sync_t *s = data;
    knit_batch_t *b = NULL;
    knit_apply_stats_t st;
    int rc = knit_batch_new(&b);
    (void)from;
    if (!rc) {
        int was = knit_busy_timeout(s->k, 0);
        rc = knit_apply_at(s->k, b, ns, to, &st);
        knit_busy_timeout(s->k, was);
    }
    knit_batch_free(b);
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
    pe.transport = transport_name(s, current_mode(s));
    pe.fallback = on_fallback(s);
    pe.relay = relay_text(s);
    switch (ev->type) {
    case KNIT_CLIENT_EV_STATE:
        if (pe.state == s->pub_state)
            return;
        s->pub_state = pe.state;
        s->since_wall = wall_ms();
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
        publish(s, 0);
        return;
    case KNIT_CLIENT_EV_ERROR:
        if (s->conn) {
            s->conn->ev_code = ev->code;
            s->conn->ev_fatal = ev->fatal;
            snprintf(s->conn->ev_msg, sizeof s->conn->ev_msg, "%s", ev->message ? ev->message : "");
        }
        snprintf(s->last_error, sizeof s->last_error, "%s", ev->message ? ev->message : "");
        knit__health_error(&s->health, ev->code);
        if (ev->code == KNIT_EERASED)
            erase_account(s);
        pe.type = KNIT_SYNC_EV_ERROR;
        pe.code = ev->code;
        pe.message = ev->message;
        pe.fatal = ev->fatal;
        pe.push = ev->push;
        pe.claim = ev->claim;
        break;
    case KNIT_CLIENT_EV_SYNCED:
        s->health.last_synced_ms = wall_ms();
        if (s->conn && !s->conn->synced) {
            s->conn->synced = 1;
            if (s->conn->transport == T_STREAM) {
                s->stream_fails = 0; /* note 7 */
                if (s->probing)
                    slog(s, KNIT_SYNC_LOG_INFO, "back on the stream (%s)",
                         transport_name(s, T_STREAM));
                s->probing = 0;
            }
        }
        pe.type = KNIT_SYNC_EV_SYNCED;
        break;
    default:
        return;
    }
    if (s->opt.on_event)
        s->opt.on_event(s, &pe);
    publish(s, 0);
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
    conn_lost(s, cn, cn->transport, cn->code, cn->msg[0] ? cn->msg : NULL);
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
        if (cn->transport == T_LP)
            snprintf(text, sizeof text, "%s: %s", s->lp_url, msg);
        else
            snprintf(text, sizeof text, "%s:%d: %s", s->host, s->opt.port, msg);
        conn_close(cn, status, text);
        return;
    }
    cn->connected = 1;
    knit_client_connected(s->c, mono_ms());
    pump(s);
}

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
    if ((rc = knit__random(seed, sizeof seed)) != 0)
        return rc;
    rc = knit_ws_client(cn->st, hostport, s->ws_path, seed, cbs, cn, &ws);
    memset(seed, 0, sizeof seed);
    if (rc == 0)
        cn->st = ws;
    return rc;
}

static const knit_stream_cbs_t CONN_CBS = {on_conn_open, on_conn_read, on_conn_end, on_conn_closed};

/* A long-poll session (lp_client.h) at lp_url. */
static void connect_lp(knit_sync_t *s)
{
    knit_lp_client_conf_t lc;
    conn_t *cn = knit__calloc(1, sizeof *cn);
    int rc;
    if (!cn) {
        knit_client_lost(s->c, mono_ms(), KNIT_ENOMEM, "out of memory");
        return;
    }
    cn->s = s;
    cn->transport = T_LP;
    memset(&lc, 0, sizeof lc);
    lc.url = s->lp_url;
    lc.ca_file = s->ca_file;
    lc.server_name = s->server_name;
    lc.connect_ms = s->opt.handshake_ms;
    if ((rc = knit_lp_client(s->loop, &lc, &CONN_CBS, cn, &cn->st)) != 0) {
        char msg[300];
        snprintf(msg, sizeof msg, "%s: %s", s->lp_url, knit_strerror(rc));
        knit__free(cn);
        knit_client_lost(s->c, mono_ms(), rc, msg);
        return;
    }
    s->conn = cn;
    s->open_handles++;
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
        conn_lost(s, NULL, T_STREAM, rc, msg);
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
        conn_lost(s, NULL, T_STREAM, KNIT_EIO, msg);
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

    s->health.attempts++;
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
    if (s->mode == T_LP) {
        connect_lp(s); /* curl resolves names itself, without blocking */
        return;
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
        conn_lost(s, NULL, T_STREAM, KNIT_EIO, msg);
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

/* The watch found a commit (note 2): push what it holds. */
static void on_changed(void *data)
{
    knit_sync_t *s = data;
    if (s->c)
        knit_client_local_changed(s->c);
    pump(s);
}

static void on_watch_warn(void *data, const char *line)
{
    slog(data, KNIT_SYNC_LOG_WARN, "%s", line);
}

/* ---------------------------------------------------------------------- */
/* The pump and stopping                                                    */

/* Frees the relay addresses (note 10); host is one of them. */
static void free_relays(knit_sync_t *s)
{
    for (size_t i = 0; s->rhost && i < s->nrel; i++)
        knit__free(s->rhost[i]);
    knit__free(s->rhost);
    knit__free(s->rport);
    s->rhost = NULL;
    s->rport = NULL;
    s->host = NULL;
}

/* Splits "HOST:PORT" or "[v6]:PORT" into a new host string and a port:
** 0, KNIT_EINVAL or KNIT_ENOMEM. */
static int split_hostport(const char *hp, char **host, int *port)
{
    const char *colon = strrchr(hp, ':'), *h = hp, *he;
    char *end;
    long v;
    if (!colon || colon == hp)
        return KNIT_EINVAL;
    he = colon;
    if (*hp == '[') {
        if (colon[-1] != ']')
            return KNIT_EINVAL;
        h = hp + 1;
        he = colon - 1;
    } else if (memchr(hp, ':', (size_t)(colon - hp))) {
        return KNIT_EINVAL; /* a bare IPv6 literal: give it in brackets */
    }
    if (he <= h)
        return KNIT_EINVAL;
    errno = 0;
    v = strtol(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || v <= 0 || v > 65535)
        return KNIT_EINVAL;
    if (!(*host = knit__malloc((size_t)(he - h) + 1)))
        return KNIT_ENOMEM;
    memcpy(*host, h, (size_t)(he - h));
    (*host)[he - h] = '\0';
    *port = (int)v;
    return 0;
}

static void handle_gone(knit_sync_t *s)
{
    if (--s->open_handles > 0)
        return;
    if (s->close_cb)
        s->close_cb(s);
    knit_client_free(s->c);
    knit__schema_free(s->schema);
    free_relays(s);
    knit__free(s->ca_file);
    knit__free(s->server_name);
    knit__free(s->ws_path);
    knit__free(s->lp_url);
    knit_tls_conf_unref(s->tls);
    knit__free(s->token);
    if (s->anon_secret)
        memset(s->anon_secret, 0, strlen(s->anon_secret));
    knit__free(s->anon_id);
    knit__free(s->anon_secret);
    knit__free(s->agent);
    knit__free(s->lock_path);
    knit__free(s);
}

static void on_handle_closed(uv_handle_t *h)
{
    handle_gone(h->data);
}

static void on_watch_closed(knit_watch_t *w)
{
    handle_gone(knit__watch_data(w));
}

/* Closes every handle once the engine has stopped (note 5). */
static void finish(knit_sync_t *s)
{
    if (s->finishing)
        return;
    s->finishing = 1;
    if (s->leader)
        publish(s, 1); /* STOPPED, the last word */
    if (s->lock_fd >= 0) {
        close(s->lock_fd); /* releases the lock: a follower leads (note 8) */
        s->lock_fd = -1;
    }
    uv_close((uv_handle_t *)&s->timer, on_handle_closed);
    uv_close((uv_handle_t *)&s->lead, on_handle_closed);
    uv_close((uv_handle_t *)&s->beat, on_handle_closed);
    knit_watch_stop(s->watcher, on_watch_closed);
}

static void pump(knit_sync_t *s)
{
    uint64_t now, next, retry_at = UINT64_MAX;
    if (s->finishing)
        return;
    if (!s->role_told)
        tell_role(s);
    if (!s->c) {
        /* A follower (note 8): nothing to drive. */
        if (s->stop_req)
            finish(s);
        return;
    }
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
        retry_at = maybe_retry_stream(s, now);
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
    if (retry_at < next)
        next = retry_at;
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

/* Frees what knit_sync_start copied (a start that failed). */
static void free_copies(knit_sync_t *s)
{
    if (s->anon_secret)
        memset(s->anon_secret, 0, strlen(s->anon_secret));
    free_relays(s);
    knit__free(s->ca_file);
    knit__free(s->server_name);
    knit__free(s->ws_path);
    knit__free(s->lp_url);
    knit__free(s->token);
    knit__free(s->agent);
    knit__free(s->anon_id);
    knit__free(s->anon_secret);
    knit__free(s->lock_path);
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    knit__free(s);
}

/* Creates and starts the engine from what the replica holds now (note 8). */
static int make_engine(knit_sync_t *s)
{
    knit_client_config_t cfg;
    knit_client_io_t io;
    int rc = 0;
    if (s->opt.cred_kind == KNIT_SYNC_JWT && !s->opt.no_claim)
        rc = pick_claim(s);
    memset(&cfg, 0, sizeof cfg);
    if (!rc)
        rc = knit_site(s->k, &cfg.site);
    if (!rc)
        rc = knit_acked(s->k, &cfg.acked);
    if (rc)
        return rc;
    if (s->opt.cred_kind == KNIT_SYNC_ANONYMOUS) {
        cfg.cred.kind = KNIT_CRED_ANON;
        cfg.cred.id = s->anon_id;
        cfg.cred.secret = s->anon_secret;
    } else {
        cfg.cred.kind = KNIT_CRED_JWT;
        cfg.cred.token = s->token ? s->token : "";
        if (s->anon_id && !s->opt.no_claim) {
            cfg.claim.kind = KNIT_CRED_ANON;
            cfg.claim.id = s->anon_id;
            cfg.claim.secret = s->anon_secret;
        }
    }
    cfg.agent = s->agent;
    cfg.max_inflight = s->opt.max_inflight;
    cfg.max_push = s->opt.max_push;
    cfg.backoff_base_ms = s->opt.backoff_base_ms;
    cfg.backoff_max_ms = s->opt.backoff_max_ms;
    cfg.handshake_ms = s->opt.handshake_ms;
    cfg.seed = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)s;
    cfg.log_level = s->opt.log_level;
    cfg.check_ms = s->opt.no_check ? UINT64_MAX : s->opt.check_interval_ms;
    memset(&io, 0, sizeof io);
    io.cursor = io_cursor;
    io.ready = io_ready;
    io.claimed = io_claimed;
    io.apply = io_apply;
    io.acked = io_acked;
    io.save_cursor = io_save_cursor;
    io.ack_seen = io_ack_seen;
    io.rejected = io_rejected;
    io.errmsg = io_errmsg;
    io.schema = io_schema;
    io.check_digest = io_check_digest;
    io.check_repair = io_check_repair;
    io.event = io_event;
    io.log = io_log;
    io.data = s;
    if ((rc = knit_client_new(&cfg, &io, &s->c)) != 0)
        return rc;
    knit_client_start(s->c, mono_ms());
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Leadership (note 8) and the published status (note 9)                   */

/* The pid the lock file names (the leader writes it), or 0. */
static long lock_holder(const knit_sync_t *s)
{
    char buf[32];
    ssize_t n = s->lock_fd >= 0 ? pread(s->lock_fd, buf, sizeof buf - 1, 0) : -1;
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return strtol(buf, NULL, 10);
}

/* Tries the lock without waiting: 1 won (the pid written), 0 held by
** another process, or a negative code. */
static int try_lock(knit_sync_t *s)
{
    char buf[32];
    int n;
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0)
        return errno == EWOULDBLOCK || errno == EINTR ? 0 : KNIT_EIO;
    n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());
    if (ftruncate(s->lock_fd, 0) != 0 || pwrite(s->lock_fd, buf, (size_t)n, 0) != n)
        slog(s, KNIT_SYNC_LOG_DEBUG, "cannot write the pid into %s: %s", s->lock_path,
             strerror(errno));
    return 1;
}

/* Logs the role once, and reports it (KNIT_SYNC_EV_ROLE). */
static void tell_role(knit_sync_t *s)
{
    knit_sync_event_t pe;
    s->role_told = 1;
    if (s->leader)
        slog(s, KNIT_SYNC_LOG_INFO, "leader: this process holds %s and the relay connection",
             s->lock_path);
    else if (lock_holder(s) > 0)
        slog(s, KNIT_SYNC_LOG_INFO,
             "follower: process %ld leads (holds %s); this one shows its changes and takes "
             "over if it stops",
             lock_holder(s), s->lock_path);
    else
        slog(s, KNIT_SYNC_LOG_INFO,
             "follower: another process leads (holds %s); this one shows its changes and "
             "takes over if it stops",
             s->lock_path);
    memset(&pe, 0, sizeof pe);
    pe.type = KNIT_SYNC_EV_ROLE;
    pe.state = s->pub_state;
    pe.transport = transport_name(s, current_mode(s));
    pe.leader = s->leader;
    pe.leader_pid = s->leader ? (long)getpid() : lock_holder(s);
    pe.relay = s->leader ? relay_text(s) : NULL;
    if (s->opt.on_event)
        s->opt.on_event(s, &pe);
}

static void on_lead(uv_timer_t *t)
{
    knit_sync_t *s = t->data;
    uint64_t now = mono_ms();
    int rc;
    if (s->finishing || s->stop_req || s->leader || now < s->lead_retry_at)
        return;
    if ((rc = try_lock(s)) <= 0) {
        if (rc < 0)
            slog(s, KNIT_SYNC_LOG_WARN, "locking %s: %s", s->lock_path, strerror(errno));
        return;
    }
    if ((rc = make_engine(s)) != 0) {
        slog(s, KNIT_SYNC_LOG_ERROR, "taking over: %s (trying again in %d ms)",
             knit_errmsg(s->k)[0] ? knit_errmsg(s->k) : knit_strerror(rc), LEAD_RETRY_MS);
        flock(s->lock_fd, LOCK_UN);
        s->lead_retry_at = now + LEAD_RETRY_MS;
        return;
    }
    uv_timer_stop(&s->lead);
    s->leader = 1;
    s->role_told = 0;
    uv_timer_start(&s->beat, on_beat, 0, STATUS_EVERY_MS);
    kick(s);
}

static void on_beat(uv_timer_t *t)
{
    knit_sync_t *s = t->data;
    uint64_t n = 0;
    if (!s->leader || s->finishing)
        return;
    if (knit_pending(s->k, &n) == 0)
        s->pending = n;
    publish(s, 1);
}

static void iso_time(uint64_t ms, char *buf, size_t n)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* The health figures (health.h) as status lines. */
static void health_lines(knit_sync_t *s, const knit_sync_status_t *st, sqlite3_str *q, uint64_t now)
{
    char kinds[256], when[32];
    if (st->ack_samples)
        sqlite3_str_appendf(
            q, "write to ack: p50 %llu ms, p99 %llu ms, mean %llu ms (%llu changes)\n",
            (unsigned long long)st->ack_p50_ms, (unsigned long long)st->ack_p99_ms,
            (unsigned long long)st->ack_mean_ms, (unsigned long long)st->ack_samples);
    else
        sqlite3_str_appendf(q, "write to ack: -\n");
    if (st->acks + st->rejects)
        sqlite3_str_appendf(q, "push success: %.1f%% (%llu of %llu pushes acknowledged)\n",
                            100.0 * (double)st->acks / (double)(st->acks + st->rejects),
                            (unsigned long long)st->acks,
                            (unsigned long long)(st->acks + st->rejects));
    else
        sqlite3_str_appendf(q, "push success: -\n");
    knit__health_kinds(&s->health, kinds, sizeof kinds);
    sqlite3_str_appendf(q, "errors: %llu%s%s%s\n", (unsigned long long)st->errors,
                        st->errors ? " (" : "", st->errors ? kinds : "", st->errors ? ")" : "");
    sqlite3_str_appendf(q, "connection attempts: %llu\n", (unsigned long long)st->attempts);
    sqlite3_str_appendf(q, "consistency checks: %llu\n", (unsigned long long)st->checks);
    sqlite3_str_appendf(q, "inconsistencies found: %llu\n", (unsigned long long)st->check_found);
    sqlite3_str_appendf(q, "inconsistencies repaired: %llu\n",
                        (unsigned long long)st->check_repaired);
    sqlite3_str_appendf(q, "rows repaired: %llu\n", (unsigned long long)st->check_rows);
    sqlite3_str_appendf(q, "reconnects: %llu\n", (unsigned long long)st->reconnects);
    if (st->last_synced_ms) {
        uint64_t at = st->synced && st->state == KNIT_SYNC_ONLINE ? now : st->last_synced_ms;
        iso_time(at, when, sizeof when);
        sqlite3_str_appendf(q, "last synced: %s\n", when);
        sqlite3_str_appendf(q, "last synced at: %llu\n", (unsigned long long)at);
    } else {
        sqlite3_str_appendf(q, "last synced: never\n");
    }
}

/* Writes the status into the replica (note 9): beat, or when what it says
** changed since the last write. */
static void publish(knit_sync_t *s, int beat)
{
    knit_sync_status_t st;
    sqlite3_str *q;
    char key[600], when[32], since[32], relay[400];
    uint64_t now = wall_ms();
    char *text;
    if (!s->leader)
        return;
    knit_sync_status(s, &st);
    if (s->finishing)
        st.state = KNIT_SYNC_STOPPED;
    snprintf(key, sizeof key, "%d %d %s %d %s", (int)st.state, st.synced, st.transport, st.fallback,
             s->last_error);
    if (!beat && strcmp(key, s->pub_key) == 0)
        return;
    snprintf(s->pub_key, sizeof s->pub_key, "%s", key);
    iso_time(now, when, sizeof when);
    iso_time(s->since_wall ? s->since_wall : now, since, sizeof since);
    if (current_mode(s) == T_LP && s->lp_url)
        snprintf(relay, sizeof relay, "%s", s->lp_url);
    else
        snprintf(relay, sizeof relay, strchr(s->host, ':') ? "%s://[%s]:%d" : "%s://%s:%d",
                 s->opt.websocket ? (s->opt.tls ? "wss" : "ws") : (s->opt.tls ? "knits" : "knit"),
                 s->host, s->opt.port);
    q = sqlite3_str_new(NULL);
    sqlite3_str_appendf(q, "at: %llu\n", (unsigned long long)now);
    sqlite3_str_appendf(q, "pid: %ld\n", (long)getpid());
    sqlite3_str_appendf(q, "updated: %s\n", when);
    sqlite3_str_appendf(q, "relay: %s\n", relay);
    sqlite3_str_appendf(q, "state: %s\n", knit_sync_state_name(st.state));
    sqlite3_str_appendf(q, "since: %s\n", since);
    sqlite3_str_appendf(q, "transport: %s%s\n", st.transport, st.fallback ? " (fallback)" : "");
    if (st.fallback)
        sqlite3_str_appendf(q, "stream retry in: %llu s\n",
                            (unsigned long long)((st.stream_retry_ms + 999) / 1000));
    sqlite3_str_appendf(q, "fallbacks: %llu\n", (unsigned long long)st.fallbacks);
    sqlite3_str_appendf(q, "principal: %s\n",
                        knit_client_principal(s->c) && *knit_client_principal(s->c)
                            ? knit_client_principal(s->c)
                            : "-");
    sqlite3_str_appendf(q, "synced: %s\n",
                        st.synced && st.state == KNIT_SYNC_ONLINE ? "yes" : "no");
    sqlite3_str_appendf(q, "pending: %llu\n", (unsigned long long)s->pending);
    sqlite3_str_appendf(q, "sessions: %llu\n", (unsigned long long)st.sessions);
    sqlite3_str_appendf(q, "pushed: %llu\n", (unsigned long long)st.acked_changes);
    sqlite3_str_appendf(q, "received: %llu\n", (unsigned long long)st.delta_changes);
    sqlite3_str_appendf(q, "applied: %llu\n", (unsigned long long)st.applied);
    sqlite3_str_appendf(q, "last error: %s\n", s->last_error[0] ? s->last_error : "-");
    health_lines(s, &st, q, now);
    if (!(text = sqlite3_str_finish(q)))
        return;
    if (knit_setting_set(s->k, STATUS_SETTING, text) != 0)
        slog(s, KNIT_SYNC_LOG_DEBUG, "publishing the status: %s", knit_errmsg(s->k));
    sqlite3_free(text);
}

/* The value of "key: " in a status text, into buf ("" when absent). */
static void field(const char *text, const char *key, char *buf, size_t n)
{
    size_t kl = strlen(key);
    buf[0] = '\0';
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, key, kl) == 0 && p[kl] == ':' && p[kl + 1] == ' ') {
            const char *v = p + kl + 2, *e = strchr(v, '\n');
            size_t l = e ? (size_t)(e - v) : strlen(v);
            if (l >= n)
                l = n - 1;
            memcpy(buf, v, l);
            buf[l] = '\0';
            return;
        }
}

int knit_sync_report(knit_t *k, knit_sync_report_t *r) /* see knit_sync.h */
{
    char *text = NULL, v[256];
    int rc;
    memset(r, 0, sizeof *r);
    if ((rc = knit_setting_get(k, STATUS_SETTING, &text)) != 0 || !text)
        return rc;
    r->found = 1;
    snprintf(r->text, sizeof r->text, "%s", text);
    field(text, "at", v, sizeof v);
    r->updated_ms = strtoull(v, NULL, 10);
    field(text, "pid", v, sizeof v);
    r->pid = strtol(v, NULL, 10);
    field(text, "state", v, sizeof v);
    r->state = strcmp(v, "ONLINE") == 0       ? KNIT_SYNC_ONLINE
               : strcmp(v, "CONNECTING") == 0 ? KNIT_SYNC_CONNECTING
               : strcmp(v, "STOPPED") == 0    ? KNIT_SYNC_STOPPED
                                              : KNIT_SYNC_OFFLINE;
    r->alive = r->pid > 0 && (kill((pid_t)r->pid, 0) == 0 || errno == EPERM) &&
               r->state != KNIT_SYNC_STOPPED;
    r->fresh = r->updated_ms + STATUS_STALE_MS >= wall_ms();
    field(text, "synced", v, sizeof v);
    r->synced = r->alive && r->fresh && strcmp(v, "yes") == 0;
    field(text, "pending", v, sizeof v);
    r->pending = strtoull(v, NULL, 10);
    field(text, "transport", r->transport, sizeof r->transport);
    r->fallback = strstr(r->transport, " (fallback)") != NULL;
    if (r->fallback)
        *strstr(r->transport, " (fallback)") = '\0';
    field(text, "principal", r->principal, sizeof r->principal);
    field(text, "last error", r->last_error, sizeof r->last_error);
    knit_free(text);
    return 0;
}

int knit_sync_start(uv_loop_t *loop, knit_t *k, const knit_sync_options_t *opt,
                    knit_sync_t **out) /* see knit_sync.h */
{
    knit_sync_t *s;
    knit_watch_conf_t wc;
    int failed = 0, rc, lp_tls = 0, lp_port = 0;
    char agent[64], lp_host[256], lp_path[1100], lp_url[1500];
    const char *path;

    *out = NULL;
    if (!loop || !k || !opt)
        return KNIT_EINVAL;
    if (opt->longpoll_url && knit_lp_url_parse(opt->longpoll_url, &lp_tls, lp_host, sizeof lp_host,
                                               &lp_port, lp_path, sizeof lp_path) != 0)
        return KNIT_EINVAL;
    if (opt->longpoll && !opt->longpoll_url)
        return KNIT_EINVAL;
    /* A TLS stream never falls back to cleartext (note 7). */
    if (opt->longpoll_url && !opt->longpoll && opt->tls && !lp_tls && !opt->no_fallback)
        return KNIT_EINVAL;
    if (!opt->longpoll && (!opt->host || !*opt->host || opt->port <= 0 || opt->port > 65535))
        return KNIT_EINVAL;
    if (opt->cred_kind != KNIT_SYNC_ANONYMOUS && opt->cred_kind != KNIT_SYNC_JWT)
        return KNIT_EINVAL;
    if (opt->cred_kind == KNIT_SYNC_JWT && !opt->token && !opt->get_token)
        return KNIT_EINVAL;
    if (!opt->anon_id != !opt->anon_secret)
        return KNIT_EINVAL;
    if (opt->ws_path && !knit_ws_path_ok(opt->ws_path))
        return KNIT_EINVAL;
    if (opt->nrelays && (opt->longpoll || !opt->relays || opt->nrelays >= MAX_RELAYS))
        return KNIT_EINVAL;
    for (size_t i = 0; i < opt->nrelays; i++) {
        char *h = NULL;
        int p;
        if (!opt->relays[i] || (rc = split_hostport(opt->relays[i], &h, &p)) != 0)
            return opt->relays[i] && rc == KNIT_ENOMEM ? KNIT_ENOMEM : KNIT_EINVAL;
        knit__free(h);
    }
    path = opt->replica_path ? opt->replica_path : knit_filename(k);
    if (!path || !*path)
        return KNIT_EINVAL; /* the lock lives beside the file (note 8) */
    if (!(s = knit__calloc(1, sizeof *s)))
        return KNIT_ENOMEM;
    s->lock_fd = -1;
    s->loop = loop;
    s->k = k;
    s->opt = *opt;
    if (!s->opt.poll_ms)
        s->opt.poll_ms = DEF_POLL_MS;
    if (!s->opt.stop_grace_ms)
        s->opt.stop_grace_ms = DEF_STOP_GRACE_MS;
    snprintf(agent, sizeof agent, "knit/%s", KNIT_VERSION_STRING);
    if (opt->longpoll) {
        s->opt.port = lp_port;
        s->opt.tls = lp_tls;
        s->opt.websocket = 0;
    }
    if (!s->opt.fallback_after)
        s->opt.fallback_after = DEF_FALLBACK_AFTER;
    if (!s->opt.stream_retry_ms)
        s->opt.stream_retry_ms = DEF_STREAM_RETRY_MS;
    s->mode = opt->longpoll ? T_LP : T_STREAM;
    if (opt->longpoll_url && (opt->longpoll || !opt->no_fallback)) {
        s->lp_url = sdup(opt->longpoll_url, &failed);
        s->lp_explicit = 1;
    } else if (opt->websocket && !opt->no_fallback) {
        /* ws:// and wss://: the same host and port serve /v1/lp. */
        snprintf(lp_url, sizeof lp_url, strchr(opt->host, ':') ? "%s://[%s]:%d%s" : "%s://%s:%d%s",
                 opt->tls ? "https" : "http", opt->host, opt->port, KNIT_LP_DEFAULT_PATH);
        s->lp_url = sdup(lp_url, &failed);
    }
    s->nrel = 1 + opt->nrelays;
    s->rhost = knit__calloc(s->nrel, sizeof *s->rhost);
    s->rport = knit__calloc(s->nrel, sizeof *s->rport);
    if (!s->rhost || !s->rport) {
        failed = 1;
        s->nrel = 0;
    } else {
        s->rhost[0] = sdup(opt->longpoll ? lp_host : opt->host, &failed);
        s->rport[0] = s->opt.port;
        for (size_t i = 0; i < opt->nrelays; i++)
            if (split_hostport(opt->relays[i], &s->rhost[i + 1], &s->rport[i + 1]) != 0)
                failed = 1;
    }
    s->host = s->rhost ? s->rhost[0] : NULL;
    s->ca_file = sdup(opt->ca_file, &failed);
    s->server_name = sdup(opt->server_name, &failed);
    s->ws_path = sdup(opt->ws_path, &failed);
    s->token = sdup(opt->token, &failed);
    s->agent = sdup(opt->agent ? opt->agent : agent, &failed);
    s->anon_id = sdup(opt->anon_id, &failed);
    s->anon_secret = sdup(opt->anon_secret, &failed);
    if (!failed && !(s->lock_path = knit__malloc(strlen(path) + sizeof LOCK_SUFFIX)))
        failed = 1;
    if (s->lock_path)
        snprintf(s->lock_path, strlen(path) + sizeof LOCK_SUFFIX, "%s%s", path, LOCK_SUFFIX);
    s->opt.host = s->host;
    s->opt.ca_file = s->ca_file;
    s->opt.server_name = s->server_name;
    s->opt.ws_path = s->ws_path;
    s->opt.longpoll_url = s->lp_url;
    s->opt.token = NULL;
    s->opt.anon_id = s->opt.anon_secret = NULL;
    s->opt.agent = s->agent;
    s->opt.replica_path = NULL;
    s->opt.relays = NULL;
    s->opt.nrelays = 0;
    s->pub_state = KNIT_SYNC_OFFLINE;
    s->since_wall = wall_ms();
    rc = failed ? KNIT_ENOMEM : 0;
    if (!rc && opt->cred_kind == KNIT_SYNC_ANONYMOUS && !s->anon_id)
        rc = knit_sync_anon_credential(k, &s->anon_id, &s->anon_secret);
    if (!rc) {
        /* Note 8: the sidecar lock, never the database's own files. */
        s->lock_fd = open(s->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (s->lock_fd < 0) {
            slog(s, KNIT_SYNC_LOG_ERROR, "cannot open %s: %s", s->lock_path, strerror(errno));
            rc = KNIT_EIO;
        } else if ((rc = try_lock(s)) == 1) {
            s->leader = 1;
            rc = make_engine(s);
        } else if (rc == 0 && opt->exclusive) {
            slog(s, KNIT_SYNC_LOG_ERROR,
                 "process %ld already syncs this replica (it holds %s); not following "
                 "(exclusive)",
                 lock_holder(s), s->lock_path);
            rc = KNIT_EBUSY;
        } else if (rc < 0) {
            slog(s, KNIT_SYNC_LOG_ERROR, "locking %s: %s", s->lock_path, strerror(errno));
        }
    }
    if (rc) {
        knit_client_free(s->c);
        free_copies(s);
        return rc;
    }

    memset(&wc, 0, sizeof wc);
    wc.path = path;
    wc.no_watch = opt->no_watch;
    wc.poll_ms = s->opt.poll_ms;
    wc.changed = on_changed;
    wc.warn = on_watch_warn;
    wc.data = s;
    if ((rc = knit__watch_start(loop, k, &wc, &s->watcher)) != 0) {
        knit_client_free(s->c);
        free_copies(s);
        return rc;
    }
    uv_timer_init(loop, &s->timer);
    uv_timer_init(loop, &s->lead);
    uv_timer_init(loop, &s->beat);
    s->timer.data = s->lead.data = s->beat.data = s;
    s->open_handles = 4; /* timer, lead, beat, the watch */
    if (s->leader)
        uv_timer_start(&s->beat, on_beat, 0, STATUS_EVERY_MS);
    else
        uv_timer_start(&s->lead, on_lead, LEAD_TRY_MS, LEAD_TRY_MS);
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
    if (s->c)
        knit_client_local_changed(s->c);
    knit_watch_check(s->watcher);
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
    if (s->c && (rc = knit_client_set_cred(s->c, &cred)) != 0) {
        knit__free(t);
        return rc;
    }
    if (s->token)
        memset(s->token, 0, strlen(s->token));
    knit__free(s->token);
    s->token = t;
    return 0;
}

/* A static transport name for a published one. */
static const char *static_transport(const char *t)
{
    static const char *const names[] = {"tcp", "tls", "ws", "wss", "longpoll", "longpoll-tls"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(t, names[i]) == 0)
            return names[i];
    return "-";
}

void knit_sync_status(knit_sync_t *s, knit_sync_status_t *st) /* see knit_sync.h */
{
    knit_client_stats_t cs;
    memset(st, 0, sizeof *st);
    if (!s->c) {
        /* A follower: what the leader published (note 9). */
        knit_sync_report_t r;
        st->transport = transport_name(s, current_mode(s));
        st->state = s->stop_req ? KNIT_SYNC_STOPPED : KNIT_SYNC_OFFLINE;
        st->leader_pid = lock_holder(s);
        if (knit_sync_report(s->k, &r) == 0 && r.found && r.alive && r.fresh) {
            st->state = r.state;
            st->synced = r.synced;
            st->transport = static_transport(r.transport);
            st->fallback = r.fallback;
            st->pending = r.pending;
        }
        return;
    }
    knit_client_stats(s->c, &cs);
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
    st->transport = transport_name(s, current_mode(s));
    st->fallback = on_fallback(s);
    st->fallbacks = s->fallbacks;
    if (s->mode == T_LP && !s->opt.longpoll) {
        uint64_t now = mono_ms();
        st->stream_retry_ms = s->stream_retry_at > now ? s->stream_retry_at - now : 0;
    }
    st->leader = 1;
    st->leader_pid = (long)getpid();
    st->ack_samples = s->health.nlat;
    st->ack_p50_ms = knit__health_quantile(&s->health, 0.50);
    st->ack_p99_ms = knit__health_quantile(&s->health, 0.99);
    st->ack_mean_ms = s->health.nlat ? s->health.lat_sum_ms / s->health.nlat : 0;
    st->errors = s->health.errors;
    st->attempts = s->health.attempts;
    st->reconnects = s->health.attempts > 1 ? s->health.attempts - 1 : 0;
    st->last_synced_ms = s->health.last_synced_ms;
    st->checks = cs.checks;
    st->check_found = cs.check_found;
    st->check_repaired = cs.check_repaired;
    st->check_rows = cs.check_rows;
    st->pending = s->pending;
    st->relay = relay_text(s);
    st->failovers = s->failovers;
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
            /* Sealed by the relay: retire it, in case io_claimed could not
            ** (a crash between its two writes). */
            rc = knit_setting_set(s->k, ANON_SETTING, NULL);
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
        rc = knit__random(rid, sizeof rid);
        if (!rc)
            rc = knit__random(rsec, sizeof rsec);
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
