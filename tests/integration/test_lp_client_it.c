/*
** test_lp_client_it.c: the sync client over HTTP long-polling
** (transport/stream/lp_client.c) and its fallback (client.c, note 7), end
** to end: the real sync-relay with --http-listen and real sync-agent runs
** on 127.0.0.1 with ephemeral ports.  A fault-injecting TCP proxy, a
** thread of this test, stands between an agent and the relay: it kills or
** stalls streams (the agent must fall back to long-polling, converge, and
** return to the stream once the proxy heals), cuts long-poll answers
** halfway (nothing may be lost or handed over twice), and records the last
** bytes a WebSocket client sent (its close frame) and whether each
** connection opened with a TLS handshake record.  Long-polling over HTTPS
** runs against a relay with certificates made at test time by the openssl
** command-line tool (tls_certs.sh, as the TLS tests do): it syncs, and an
** untrusted, expired or wrong-name certificate is refused, each with its
** reason, never retried in cleartext.  Every wait is bounded;
** children and the temporary directory are cleaned up at exit
** (sync_util.c), and the proxy thread dies with the process.
*/
#include "test.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sync_util.h"

#define SCHEMA "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT);"

/* ---------------------------------------------------------------------- */
/* The relay                                                                */

typedef struct world_s {
    su_relay_t relay; /* relay.port: its binary --listen port */
    int http_port;    /* its --http-listen port */
    char data[512];   /* relay store */
    char secret[512]; /* its JWT secret */
    char token[512];  /* alice's token */
    char certs[512];  /* with TLS: the certificates' directory (tls_certs.sh), else "" */
} world_t;

/* Makes the TLS tests' certificates (tls_certs.sh, with the openssl
** command-line tool) in w->certs. */
static void make_certs(world_t *w)
{
    char cmd[1200], out[2048];
    su_path(w->certs, sizeof w->certs, "certs");
    snprintf(cmd, sizeof cmd, "mkdir -p '%s' && sh '%s' '%s'", w->certs, TLS_CERTS_SH, w->certs);
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    int rc = su_run(argv, 60000, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "tls_certs.sh failed (%d): %s\n", rc, out);
    CHECK_EQ_INT(rc, 0);
}

static char *cert(const world_t *w, const char *name, char *buf, size_t n)
{
    snprintf(buf, n, "%s/%s", w->certs, name);
    return buf;
}

/* A relay with --http-listen; with tls, also --tls-cert/--tls-key (the
** RSA chain for localhost and 127.0.0.1), so that port speaks HTTPS. */
static void world_start_cert(world_t *w, int tls, const char *cert_name, const char *key_name)
{
    char hl[64], c[700], k[700];
    memset(w, 0, sizeof *w);
    /* libcurl honours proxy variables; loopback must be reached directly. */
    unsetenv("http_proxy");
    unsetenv("https_proxy");
    unsetenv("HTTP_PROXY");
    unsetenv("HTTPS_PROXY");
    unsetenv("ALL_PROXY");
    unsetenv("all_proxy");
    su_path(w->data, sizeof w->data, "relay.db");
    su_path(w->secret, sizeof w->secret, "secret");
    su_path(w->token, sizeof w->token, "alice.jwt");
    CHECK_OK(su_write_secret(w->secret));
    CHECK_OK(su_write_token(w->secret, "alice", w->token));
    w->http_port = su_free_port();
    CHECK(w->http_port > 0);
    snprintf(hl, sizeof hl, "127.0.0.1:%d", w->http_port);
    if (tls)
        make_certs(w);
    const char *plain[] = {"--http-listen", hl, NULL};
    const char *with_tls[] = {"--http-listen",
                              hl,
                              "--tls-cert",
                              tls ? cert(w, cert_name, c, sizeof c) : "",
                              "--tls-key",
                              tls ? cert(w, key_name, k, sizeof k) : "",
                              NULL};
    CHECK_OK(su_relay_start(&w->relay, 0, w->data, w->secret, tls ? with_tls : plain));
}

static void world_start_x(world_t *w, int tls)
{
    world_start_cert(w, tls, "chain.pem", "rsa.key");
}

static void world_start(world_t *w)
{
    world_start_x(w, 0);
}

static void world_stop(world_t *w)
{
    int st = -1;
    CHECK_OK(su_kill(&w->relay.p, SIGTERM, 15000, &st));
    CHECK_EQ_INT(st, 0);
}

/* A replica path under the temporary directory, made and tracked. */
static void replica(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s.db", su_tmpdir(), name);
    su_make_replica(buf, SCHEMA, "items");
}

static int count_rows(const char *path)
{
    sqlite3 *db = su_db(path);
    int n = (int)su_int(db, "SELECT count(*) FROM items");
    sqlite3_close(db);
    return n;
}

static void insert(const char *path, const char *prefix, int first, int n)
{
    sqlite3 *db = su_db(path);
    su_exec(db, "BEGIN");
    for (int i = first; i < first + n; i++)
        su_exec(db, "INSERT INTO items VALUES ('%s%d', 'row %d of %s')", prefix, i, i, prefix);
    su_exec(db, "COMMIT");
    sqlite3_close(db);
}

typedef struct rows_s {
    const char *path; /* replica */
    int want;         /* rows wanted */
} rows_t;

static int has_rows(void *arg)
{
    rows_t *r = arg;
    return count_rows(r->path) >= r->want;
}

/* Waits until the replica holds n rows (within timeout_ms). */
static void wait_rows(const char *path, int n, int timeout_ms, const char *log)
{
    rows_t r = {path, n};
    if (!su_wait_until(has_rows, &r, timeout_ms)) {
        fprintf(stderr, "%s has %d rows, wanted %d\n", path, count_rows(path), n);
        if (log)
            su_print_file(log);
        CHECK(0);
    }
}

/* Both replicas and the relay hold the same namespace digest. */
static void converged(world_t *w, const char *a, const char *b)
{
    char da[65], db[65], dr[65];
    CHECK_OK(su_replica_digest(a, "user:alice", da));
    CHECK_OK(su_replica_digest(b, "user:alice", db));
    CHECK_OK(su_relay_digest(w->data, "user:alice", dr));
    CHECK_STR(da, db);
    CHECK_STR(da, dr);
}

typedef struct needle_s {
    const char *path;   /* file */
    const char *needle; /* text wanted in it */
} needle_t;

static int file_has(void *arg)
{
    needle_t *n = arg;
    return su_file_has(n->path, n->needle);
}

static void wait_file_has(const char *path, const char *needle, int timeout_ms, const char *log)
{
    needle_t n = {path, needle};
    if (!su_wait_until(file_has, &n, timeout_ms)) {
        fprintf(stderr, "%s never held \"%s\"\n", path, needle);
        su_print_file(path);
        if (log && strcmp(log, path) != 0)
            su_print_file(log);
        CHECK(0);
    }
}

/* `sync-agent status REPLICA`: its exit code, output in out. */
static int agent_status(const char *rep, char *out, size_t n)
{
    const char *argv[] = {SYNC_AGENT_PATH, "status", rep, NULL};
    return su_run(argv, 10000, out, n);
}

/* ---------------------------------------------------------------------- */
/* A fault-injecting TCP proxy (a thread)                                   */

enum {
    P_PASS,  /* forward both ways */
    P_KILL,  /* accept, then close at once */
    P_STALL, /* accept, then never read or forward */
    P_CUT    /* forward; cut HTTP 200 answers with bodies over 1000 bytes halfway */
};

#define PMAX 64

typedef struct pconn_s {
    int c, u;         /* client and upstream sockets (-1: none) */
    int in_head;      /* upstream -> client: reading an HTTP head */
    char head[8192];  /* its bytes */
    size_t nhead;     /* their count */
    size_t body_left; /* body bytes of the current answer still to come */
    long cut_at;      /* forward only this many more body bytes, then cut (-1: no) */
    uint8_t tail[16]; /* the last bytes the client sent */
    size_t ntail;     /* their count (at most 16) */
    int seen;         /* the client sent its first bytes */
} pconn_t;

typedef struct proxy_s {
    int lfd;                /* listening socket */
    int port;               /* its port */
    int up_port;            /* the relay's port */
    volatile int mode;      /* P_* */
    volatile int drop;      /* 1: close every connection now */
    volatile int cuts_left; /* P_CUT: answers still to cut */
    volatile int cuts;      /* answers cut */
    volatile int accepted;  /* connections accepted */
    volatile int forwarded; /* connections forwarded (P_PASS or P_CUT) */
    volatile int finished;  /* client connections that ended (tail recorded) */
    volatile int tls_first; /* client connections that began with a TLS handshake record */
    volatile int cleartext; /* client connections that began with anything else */
    uint8_t last_tail[16];  /* the tail of the last one that ended */
    volatile size_t nlast;  /* its length */
    pthread_mutex_t mu;     /* guards last_tail */
    pconn_t conns[PMAX];    /* open connections (c == -1: free) */
    pthread_t th;           /* the thread */
} proxy_t;

static int write_all(int fd, const void *p, size_t n)
{
    const char *b = p;
    while (n) {
        ssize_t k = write(fd, b, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

static void pconn_close(proxy_t *px, pconn_t *pc)
{
    if (pc->c < 0)
        return;
    pthread_mutex_lock(&px->mu);
    memcpy(px->last_tail, pc->tail, pc->ntail);
    px->nlast = pc->ntail;
    px->finished++;
    pthread_mutex_unlock(&px->mu);
    close(pc->c);
    if (pc->u >= 0)
        close(pc->u);
    pc->c = pc->u = -1;
}

static int connect_up(int port)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

/* Upstream bytes in P_CUT mode: answers are followed head by head; a 200
** with a long body is cut halfway (both sockets closed).  -1 when cut. */
static int forward_cut(proxy_t *px, pconn_t *pc, const uint8_t *p, size_t n)
{
    while (n) {
        if (pc->body_left == 0 && !pc->in_head) {
            pc->in_head = 1;
            pc->nhead = 0;
        }
        if (pc->in_head) {
            if (pc->nhead + 1 >= sizeof pc->head)
                return -1;
            pc->head[pc->nhead++] = (char)*p++;
            n--;
            pc->head[pc->nhead] = '\0';
            if (pc->nhead >= 4 && memcmp(pc->head + pc->nhead - 4, "\r\n\r\n", 4) == 0) {
                const char *cl = strstr(pc->head, "Content-Length: ");
                pc->body_left = cl ? (size_t)strtoul(cl + 16, NULL, 10) : 0;
                pc->in_head = 0;
                pc->cut_at = -1;
                if (strncmp(pc->head, "HTTP/1.1 200", 12) == 0 && pc->body_left > 1000 &&
                    px->cuts_left > 0) {
                    px->cuts_left--;
                    px->cuts++;
                    pc->cut_at = (long)(pc->body_left / 2);
                }
                if (write_all(pc->c, pc->head, pc->nhead) != 0)
                    return -1;
            }
            continue;
        }
        size_t take = n < pc->body_left ? n : pc->body_left;
        if (pc->cut_at >= 0 && (long)take >= pc->cut_at) {
            (void)write_all(pc->c, p, (size_t)pc->cut_at);
            return -1; /* halfway through the body */
        }
        if (write_all(pc->c, p, take) != 0)
            return -1;
        if (pc->cut_at >= 0)
            pc->cut_at -= (long)take;
        pc->body_left -= take;
        p += take;
        n -= take;
    }
    return 0;
}

static void *proxy_main(void *arg)
{
    proxy_t *px = arg;
    for (;;) {
        struct pollfd fds[1 + 2 * PMAX];
        int who[1 + 2 * PMAX], nf = 0;
        if (px->drop) {
            for (int i = 0; i < PMAX; i++)
                pconn_close(px, &px->conns[i]);
            px->drop = 0;
        }
        fds[nf].fd = px->lfd;
        fds[nf].events = POLLIN;
        who[nf++] = -1;
        for (int i = 0; i < PMAX; i++) {
            pconn_t *pc = &px->conns[i];
            if (pc->c < 0 || pc->u < 0)
                continue; /* free, or stalled (never read) */
            fds[nf].fd = pc->c;
            fds[nf].events = POLLIN;
            who[nf++] = i * 2;
            fds[nf].fd = pc->u;
            fds[nf].events = POLLIN;
            who[nf++] = i * 2 + 1;
        }
        if (poll(fds, (nfds_t)nf, 50) <= 0)
            continue;
        for (int k = 0; k < nf; k++) {
            uint8_t buf[65536];
            ssize_t r;
            if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            if (who[k] < 0) {
                int c = accept(px->lfd, NULL, NULL), slot = -1;
                if (c < 0)
                    continue;
                px->accepted++;
                for (int i = 0; i < PMAX; i++)
                    if (px->conns[i].c < 0) {
                        slot = i;
                        break;
                    }
                if (px->mode == P_KILL || slot < 0) {
                    close(c);
                    continue;
                }
                memset(&px->conns[slot], 0, sizeof px->conns[slot]);
                px->conns[slot].c = c;
                px->conns[slot].u = -1;
                px->conns[slot].cut_at = -1;
                if (px->mode == P_STALL)
                    continue; /* held open, never served */
                if ((px->conns[slot].u = connect_up(px->up_port)) < 0) {
                    pconn_close(px, &px->conns[slot]);
                    continue;
                }
                px->forwarded++;
                continue;
            }
            pconn_t *pc = &px->conns[who[k] / 2];
            int from_client = (who[k] % 2) == 0;
            if (pc->c < 0 || pc->u < 0)
                continue;
            r = read(from_client ? pc->c : pc->u, buf, sizeof buf);
            if (r <= 0) {
                pconn_close(px, pc);
                continue;
            }
            if (from_client) {
                if (!pc->seen) {
                    /* 0x16: a TLS handshake record (the ClientHello). */
                    pc->seen = 1;
                    if (buf[0] == 0x16)
                        px->tls_first++;
                    else
                        px->cleartext++;
                }
                size_t keep = (size_t)r < 16 ? (size_t)r : 16, old = pc->ntail;
                if (old + keep > 16) {
                    memmove(pc->tail, pc->tail + (old + keep - 16), 16 - keep);
                    old = 16 - keep;
                }
                memcpy(pc->tail + old, buf + r - keep, keep);
                pc->ntail = old + keep;
                if (write_all(pc->u, buf, (size_t)r) != 0)
                    pconn_close(px, pc);
            } else if (px->mode == P_CUT) {
                if (forward_cut(px, pc, buf, (size_t)r) != 0)
                    pconn_close(px, pc);
            } else if (write_all(pc->c, buf, (size_t)r) != 0) {
                pconn_close(px, pc);
            }
        }
    }
    return NULL;
}

static void proxy_start(proxy_t *px, int up_port, int mode)
{
    struct sockaddr_in a;
    socklen_t n = sizeof a;
    int one = 1;
    memset(px, 0, sizeof *px);
    for (int i = 0; i < PMAX; i++)
        px->conns[i].c = px->conns[i].u = -1;
    px->up_port = up_port;
    px->mode = mode;
    pthread_mutex_init(&px->mu, NULL);
    px->lfd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(px->lfd >= 0);
    setsockopt(px->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_OK(bind(px->lfd, (struct sockaddr *)&a, sizeof a));
    CHECK_OK(listen(px->lfd, 64));
    CHECK_OK(getsockname(px->lfd, (struct sockaddr *)&a, &n));
    px->port = ntohs(a.sin_port);
    CHECK_OK(pthread_create(&px->th, NULL, proxy_main, px));
    pthread_detach(px->th);
}

/* Changes the mode and closes every connection (the streams are killed). */
static void proxy_set(proxy_t *px, int mode)
{
    px->mode = mode;
    px->drop = 1;
    for (int i = 0; i < 100 && px->drop; i++)
        su_sleep_ms(10);
}

/* ---------------------------------------------------------------------- */
/* Cases                                                                    */

/* (a) --relay http://: two running agents sync both ways over long-polling
** only, converge with the relay, and say so. */
static void lp_syncs(void)
{
    world_t w;
    su_proc_t pa, pb;
    char a[600], b[600], la[600], lb[600], url[80], st[700];
    int rc;
    world_start(&w);
    replica(a, sizeof a, "a");
    replica(b, sizeof b, "b");
    su_path(la, sizeof la, "a.log");
    su_path(lb, sizeof lb, "b.log");
    snprintf(url, sizeof url, "http://127.0.0.1:%d", w.http_port);
    insert(a, "a", 0, 5); /* written offline, pushed by the first session */
    const char *extra[] = {"--relay", url, NULL};
    CHECK_OK(su_agent_start(&pa, a, 0, w.token, la, extra));
    CHECK_OK(su_agent_start(&pb, b, 0, w.token, lb, extra));
    wait_rows(b, 5, 20000, lb);
    insert(b, "b", 0, 7);
    insert(a, "a", 5, 3);
    wait_rows(a, 15, 20000, la);
    wait_rows(b, 15, 20000, lb);
    /* Live changes pass through a GET waiting at the relay. */
    insert(b, "b", 7, 1);
    wait_rows(a, 16, 10000, la);
    snprintf(st, sizeof st, "%s.sync-status", a);
    wait_file_has(st, "synced: yes", 10000, la);
    CHECK_OK(su_kill(&pa, SIGTERM, 15000, &rc));
    CHECK_EQ_INT(rc, 0);
    CHECK_OK(su_kill(&pb, SIGTERM, 15000, &rc));
    CHECK_EQ_INT(rc, 0);
    converged(&w, a, b);
    CHECK(su_file_has(la, "over longpoll"));
    CHECK(!su_file_has(la, "(fallback)"));
    CHECK(!su_file_has(la, "connection lost"));
    CHECK(su_file_has(st, "transport: longpoll\n"));
    world_stop(&w);
}

/* (b) A proxy that kills, then stalls streams: the agent falls back to
** long-polling and converges, returns to the stream once the proxy heals,
** and falls back again when it stalls. */
static void fallback_and_return(void)
{
    world_t w;
    proxy_t px;
    su_proc_t pa, pb;
    char a[600], b[600], la[600], lb[600], st[700], relay[80], fb[80], out[8192];
    int rc, falls;
    world_start(&w);
    proxy_start(&px, w.relay.port, P_KILL);
    replica(a, sizeof a, "a");
    replica(b, sizeof b, "b");
    su_path(la, sizeof la, "a.log");
    su_path(lb, sizeof lb, "b.log");
    snprintf(st, sizeof st, "%s.sync-status", a);
    snprintf(relay, sizeof relay, "knit://127.0.0.1:%d", px.port);
    snprintf(fb, sizeof fb, "http://127.0.0.1:%d/v1/lp", w.http_port);
    const char *ea[] = {"--relay",
                        relay,
                        "--fallback",
                        fb,
                        "--stream-retry",
                        "3000",
                        "--backoff-max",
                        "300",
                        "--connect-timeout",
                        "1000",
                        "--log-level",
                        "debug",
                        NULL};
    CHECK_OK(su_agent_start(&pa, a, 0, w.token, la, ea));
    CHECK_OK(su_agent_start(&pb, b, w.relay.port, w.token, lb, NULL)); /* direct TCP */
    insert(a, "a", 0, 10);
    insert(b, "b", 0, 10);
    wait_rows(b, 20, 20000, la);
    wait_rows(a, 20, 20000, la);
    CHECK(su_file_has(la, "falling back to long-polling at"));
    CHECK(su_file_has(la, "3 stream attempts in a row failed"));
    CHECK(su_file_has(la, "over longpoll (fallback)"));
    wait_file_has(st, "transport: longpoll (fallback)", 5000, la);
    rc = agent_status(a, out, sizeof out);
    if (rc != 0 || !strstr(out, "transport: longpoll (fallback)"))
        fprintf(stderr, "status (%d):\n%s\n", rc, out);
    CHECK_EQ_INT(rc, 0);
    CHECK(strstr(out, "agent: running") != NULL);
    CHECK(strstr(out, "stream retry in: ") != NULL);
    CHECK(px.forwarded == 0); /* nothing got through the proxy */
    CHECK(px.accepted >= 3);

    /* Healed: after --stream-retry the agent tries the stream again, and
    ** stays on it.  (Each failed try before went straight back.) */
    proxy_set(&px, P_PASS);
    wait_file_has(la, "trying the stream (tcp) again", 10000, la);
    wait_file_has(la, "back on the stream (tcp)", 20000, la);
    wait_file_has(st, "transport: tcp\n", 5000, la);
    CHECK(px.forwarded >= 1);
    insert(a, "a", 10, 5);
    insert(b, "b", 10, 5);
    wait_rows(a, 30, 20000, la);
    wait_rows(b, 30, 20000, lb);
    falls = su_count_in_file(la, "falling back to long-polling at");
    su_sleep_ms(500);
    CHECK_EQ_INT(su_count_in_file(la, "falling back to long-polling at"), falls);
    CHECK(su_file_has(st, "transport: tcp\n"));

    /* Stalled: connections are accepted and never answered; the handshake
    ** timeout makes each attempt fail, and the agent falls back again. */
    proxy_set(&px, P_STALL);
    for (int i = 0; i < 300 && su_count_in_file(la, "falling back to long-polling at") == falls;
         i++)
        su_sleep_ms(100);
    CHECK(su_count_in_file(la, "falling back to long-polling at") > falls);
    insert(b, "b", 15, 5);
    wait_rows(a, 35, 20000, la);
    CHECK(su_file_has(la, "no WELCOME within 1000 ms") || su_file_has(la, "no connection within"));
    CHECK(su_file_has(st, "transport: longpoll (fallback)"));

    CHECK_OK(su_kill(&pa, SIGTERM, 15000, &rc));
    CHECK_EQ_INT(rc, 0);
    CHECK_OK(su_kill(&pb, SIGTERM, 15000, &rc));
    CHECK_EQ_INT(rc, 0);
    converged(&w, a, b);
    proxy_set(&px, P_KILL);
    world_stop(&w);
}

/* (c) Long-poll answers cut halfway: the GET is sent again with the same
** cursor, and the catch-up arrives whole, once, in one session. */
static void get_cut(void)
{
    world_t w;
    proxy_t px;
    char a[600], b[600], url[80], out[16384], want[64];
    const int rows = 400;
    world_start(&w);
    replica(a, sizeof a, "a");
    replica(b, sizeof b, "b");
    /* A pushes over TCP; the relay then holds rows * 2 changes. */
    insert(a, "a", 0, rows);
    {
        char r[64];
        snprintf(r, sizeof r, "127.0.0.1:%d", w.relay.port);
        const char *argv[] = {SYNC_AGENT_PATH, "run",   a,        "--relay", r,
                              "--token-file",  w.token, "--once", NULL};
        CHECK_EQ_INT(su_run(argv, 30000, out, sizeof out), 0);
    }
    proxy_start(&px, w.http_port, P_CUT);
    px.cuts_left = 3;
    snprintf(url, sizeof url, "http://127.0.0.1:%d", px.port);
    const char *argv[] = {SYNC_AGENT_PATH, "run",   b,        "--relay",   url,
                          "--token-file",  w.token, "--once", "--timeout", "30",
                          "--log-level",   "debug", NULL};
    int rc = su_run(argv, 40000, out, sizeof out);
    snprintf(want, sizeof want, "received %d,", rows * 2);
    if (rc != 0 || !strstr(out, want) || px.cuts < 1)
        fprintf(stderr, "agent (%d), cuts %d:\n%s\n", rc, px.cuts, out);
    CHECK_EQ_INT(rc, 0);
    CHECK(px.cuts >= 1);
    CHECK(strstr(out, want) != NULL); /* none lost, none counted twice */
    CHECK_EQ_INT(count_rows(b), rows);
    /* One session: a duplicated or partial answer would have broken the
    ** framing and ended it. */
    {
        int sessions = 0;
        for (const char *p = out; (p = strstr(p, "online with")) != NULL; p++)
            sessions++;
        CHECK_EQ_INT(sessions, 1);
    }
    CHECK(strstr(out, "connection lost") == NULL);
    converged(&w, a, b);
    world_stop(&w);
}

/* (d) The transport in `sync-agent status` and in the agent's log lines
** (both from the client's events), and no "synced: yes" from an agent that
** is gone. */
static void status_transport(void)
{
    world_t w;
    su_proc_t pa, pb;
    char a[600], b[600], la[600], lb[600], sa[700], url[80], out[8192];
    int rc;
    world_start(&w);
    replica(a, sizeof a, "a");
    replica(b, sizeof b, "b");
    su_path(la, sizeof la, "a.log");
    su_path(lb, sizeof lb, "b.log");
    snprintf(sa, sizeof sa, "%s.sync-status", a);
    CHECK_EQ_INT(agent_status(a, out, sizeof out), 1); /* no agent yet */
    CHECK(strstr(out, "no agent has run") != NULL);
    snprintf(url, sizeof url, "http://127.0.0.1:%d", w.http_port);
    const char *ea[] = {"--relay", url, NULL};
    CHECK_OK(su_agent_start(&pa, a, 0, w.token, la, ea));
    CHECK_OK(su_agent_start(&pb, b, w.relay.port, w.token, lb, NULL));
    insert(a, "a", 0, 3);
    wait_rows(b, 3, 20000, lb);
    wait_file_has(sa, "synced: yes", 10000, la);
    rc = agent_status(a, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "status (%d):\n%s\n", rc, out);
    CHECK_EQ_INT(rc, 0);
    CHECK(strstr(out, "agent: running") != NULL);
    CHECK(strstr(out, "state: ONLINE") != NULL);
    CHECK(strstr(out, "transport: longpoll\n") != NULL);
    CHECK(strstr(out, "synced: yes") != NULL);
    CHECK(su_file_has(la, "over longpoll"));
    rc = agent_status(b, out, sizeof out);
    CHECK_EQ_INT(rc, 0);
    CHECK(strstr(out, "transport: tcp\n") != NULL);
    CHECK(su_file_has(lb, "over tcp"));

    /* Killed without a word: its last report said synced, but nothing
    ** vouches for that any more. */
    CHECK_OK(su_kill(&pa, SIGKILL, 5000, NULL));
    rc = agent_status(a, out, sizeof out);
    if (rc != 1)
        fprintf(stderr, "status (%d):\n%s\n", rc, out);
    CHECK_EQ_INT(rc, 1);
    CHECK(strstr(out, "agent: not running") != NULL);
    CHECK(strstr(out, "synced: yes") == NULL);
    CHECK(strstr(out, "synced: unknown") != NULL);
    CHECK_OK(su_kill(&pb, SIGTERM, 15000, &rc));
    CHECK_EQ_INT(rc, 0);
    rc = agent_status(b, out, sizeof out);
    CHECK_EQ_INT(rc, 1);
    CHECK(strstr(out, "state: STOPPED") != NULL);
    world_stop(&w);
}

/* The WebSocket client ends its session with a close frame (1000): the
** last bytes it sends are a masked close frame with that status. */
static void ws_close_frame(void)
{
    world_t w;
    proxy_t px;
    char a[600], url[80], out[8192];
    uint8_t tail[16];
    size_t n;
    int rc;
    world_start(&w);
    proxy_start(&px, w.http_port, P_PASS);
    replica(a, sizeof a, "a");
    insert(a, "a", 0, 2);
    snprintf(url, sizeof url, "ws://127.0.0.1:%d", px.port);
    const char *argv[] = {SYNC_AGENT_PATH, "run",   a,        "--relay", url,
                          "--token-file",  w.token, "--once", NULL};
    rc = su_run(argv, 30000, out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "agent (%d):\n%s\n", rc, out);
    CHECK_EQ_INT(rc, 0);
    for (int i = 0; i < 200 && px.finished < 1; i++)
        su_sleep_ms(10);
    CHECK(px.finished >= 1);
    pthread_mutex_lock(&px.mu);
    n = px.nlast;
    memcpy(tail, px.last_tail, n);
    pthread_mutex_unlock(&px.mu);
    /* FIN + close opcode, MASK + length 2, 4 mask bytes, status 1000. */
    CHECK(n >= 8);
    CHECK_EQ_INT(tail[n - 8], 0x88);
    CHECK_EQ_INT(tail[n - 7], 0x82);
    CHECK_EQ_INT((tail[n - 2] ^ tail[n - 6]) << 8 | (tail[n - 1] ^ tail[n - 5]), 1000);
    world_stop(&w);
}

/* curl (a client no one here wrote) GETs /metrics from the relay's HTTPS
** port, trusting the test CA; the body into out. */
static void metrics(const world_t *w, char *out, size_t n)
{
    char cmd[1600], ca[700];
    snprintf(cmd, sizeof cmd,
             "curl -sS --max-time 10 --cacert '%s' --resolve localhost:%d:127.0.0.1 "
             "'https://localhost:%d/metrics' 2>&1",
             cert(w, "ca.pem", ca, sizeof ca), w->http_port, w->http_port);
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    CHECK_EQ_INT(su_run(argv, 20000, out, n), 0);
}

/* (e) --relay https://localhost:PORT/v1/lp --ca-file CA against a relay
** with --tls-cert/--tls-key and --http-listen: two running agents sync
** both ways over long-polling inside TLS and converge with the relay. */
static void lp_https_syncs(void)
{
    world_t w;
    su_proc_t pa, pb;
    char a[600], b[600], la[600], lb[600], url[80], st[700], ca[700], log[600];
    static char out[65536];
    int rc;
    world_start_x(&w, 1);
    snprintf(log, sizeof log, "%s.log", w.data);
    CHECK(su_file_has(log, "https listening on 127.0.0.1"));
    replica(a, sizeof a, "a");
    replica(b, sizeof b, "b");
    su_path(la, sizeof la, "a.log");
    su_path(lb, sizeof lb, "b.log");
    snprintf(url, sizeof url, "https://localhost:%d/v1/lp", w.http_port);
    insert(a, "a", 0, 5);
    const char *extra[] = {"--relay", url, "--ca-file", cert(&w, "ca.pem", ca, sizeof ca), NULL};
    CHECK_OK(su_agent_start(&pa, a, 0, w.token, la, extra));
    CHECK_OK(su_agent_start(&pb, b, 0, w.token, lb, extra));
    wait_rows(b, 5, 20000, lb);
    insert(b, "b", 0, 7);
    insert(a, "a", 5, 3);
    wait_rows(a, 15, 20000, la);
    wait_rows(b, 15, 20000, lb);
    insert(b, "b", 7, 1); /* live, through a waiting GET */
    wait_rows(a, 16, 10000, la);
    snprintf(st, sizeof st, "%s.sync-status", a);
    wait_file_has(st, "synced: yes", 10000, la);
    CHECK(su_file_has(st, "transport: longpoll-tls\n"));
    metrics(&w, out, sizeof out);
    if (!strstr(out, "knit_relay_connections_total{transport=\"longpoll\"} 2\n"))
        fprintf(stderr, "metrics:\n%.3000s\n", out);
    CHECK(strstr(out, "knit_relay_connections_total{transport=\"longpoll\"} 2\n") != NULL);
    CHECK(strstr(out, "knit_relay_connections_total{transport=\"tcp\"} 0\n") != NULL);
    CHECK_OK(su_kill(&pa, SIGTERM, 15000, &rc));
    CHECK_EQ_INT(rc, 0);
    CHECK_OK(su_kill(&pb, SIGTERM, 15000, &rc));
    CHECK_EQ_INT(rc, 0);
    converged(&w, a, b);
    CHECK(su_file_has(la, "over longpoll-tls"));
    CHECK(!su_file_has(la, "(fallback)"));
    CHECK(!su_file_has(la, "connection lost"));
    world_stop(&w);
}

/* (f) The same relay reached with --ca-file naming a CA that did not sign
** its certificate: refused with a message that says so, and never
** retried in cleartext.  A proxy in front of the HTTPS port sees every
** connection open with a TLS handshake record.  --once exits 1 at once; a
** running agent does not hammer the relay (after a refusal it waits a
** delay drawn up to its longest backoff) and never goes online. */
static void lp_https_untrusted(void)
{
    world_t w;
    proxy_t px;
    su_proc_t pa;
    char a[600], la[600], url[80], rogue[700];
    static char out[65536];
    uint64_t t0;
    int rc;
    world_start_x(&w, 1);
    proxy_start(&px, w.http_port, P_PASS);
    replica(a, sizeof a, "a");
    insert(a, "a", 0, 3);
    su_path(la, sizeof la, "a.log");
    snprintf(url, sizeof url, "https://localhost:%d/v1/lp", px.port);
    cert(&w, "rogue.pem", rogue, sizeof rogue);

    const char *argv[] = {SYNC_AGENT_PATH, "run",   a,        "--relay",   url,  "--ca-file", rogue,
                          "--token-file",  w.token, "--once", "--timeout", "20", NULL};
    t0 = su_now_ms();
    rc = su_run(argv, 30000, out, sizeof out);
    if (rc != 1 || !strstr(out, "TLS: certificate not trusted"))
        fprintf(stderr, "agent (%d):\n%s\n", rc, out);
    CHECK_EQ_INT(rc, 1);
    CHECK(strstr(out, "TLS: certificate not trusted") != NULL);
    CHECK(strstr(out, "online with") == NULL);
    CHECK(strstr(out, " synced with") == NULL);
    CHECK(strstr(out, "falling back") == NULL);
    CHECK(su_now_ms() - t0 < 15000); /* final: not retried until --timeout */
    CHECK(px.accepted >= 1);
    CHECK(px.tls_first >= 1);
    CHECK_EQ_INT(px.cleartext, 0);

    /* Running: the refusal is logged and retried only after a delay drawn
    ** up to the longest backoff (here 60 s), so three seconds see one
    ** attempt, rarely two (a loop that retried at once would make
    ** hundreds); never a session, never cleartext. */
    const int before = px.accepted;
    const char *ea[] = {"--relay", url, "--ca-file", rogue, "--backoff-max", "60000", NULL};
    CHECK_OK(su_agent_start(&pa, a, 0, w.token, la, ea));
    wait_file_has(la, "TLS: certificate not trusted", 15000, la);
    su_sleep_ms(3000);
    CHECK(su_wait(&pa, 0, &rc) != 0); /* still running */
    if (px.accepted - before > 2)
        su_print_file(la);
    CHECK(px.accepted - before >= 1);
    CHECK(px.accepted - before <= 3);
    CHECK_EQ_INT(px.cleartext, 0);
    CHECK(!su_file_has(la, "online with"));
    CHECK(!su_file_has(la, "falling back"));
    CHECK_OK(su_kill(&pa, SIGTERM, 15000, &rc));
    CHECK_EQ_INT(rc, 0);
    metrics(&w, out, sizeof out);
    CHECK(strstr(out, "knit_relay_connections_total{transport=\"longpoll\"} 0\n") != NULL);
    world_stop(&w);
}

/* (g) Expired and wrong-name certificates on the HTTPS port: each refused
** by `--once` at once, with its own reason. */
static void lp_https_refusals(void)
{
    static const char *const cases[][3] = {
        {"expired.pem", "expired.key", "TLS: certificate expired or not yet valid"},
        {"wrongname.pem", "wrongname.key", "TLS: certificate is not for localhost"},
    };
    static char out[65536];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        world_t w;
        char a[600], url[80], ca[700], name[32];
        uint64_t t0;
        int rc;
        world_start_cert(&w, 1, cases[i][0], cases[i][1]);
        snprintf(name, sizeof name, "r%zu", i);
        replica(a, sizeof a, name);
        snprintf(url, sizeof url, "https://localhost:%d/v1/lp", w.http_port);
        const char *argv[] = {SYNC_AGENT_PATH,
                              "run",
                              a,
                              "--relay",
                              url,
                              "--ca-file",
                              cert(&w, "ca.pem", ca, sizeof ca),
                              "--token-file",
                              w.token,
                              "--once",
                              "--timeout",
                              "20",
                              NULL};
        t0 = su_now_ms();
        rc = su_run(argv, 30000, out, sizeof out);
        if (rc != 1 || !strstr(out, cases[i][2]))
            fprintf(stderr, "%s: agent (%d), wanted \"%s\":\n%s\n", cases[i][0], rc, cases[i][2],
                    out);
        CHECK_EQ_INT(rc, 1);
        CHECK(strstr(out, cases[i][2]) != NULL);
        CHECK(strstr(out, "online with") == NULL);
        CHECK(su_now_ms() - t0 < 15000);
        world_stop(&w);
    }
}

/* URLs and flag combinations the agent refuses (usage errors, exit 2). */
static void lp_usage(void)
{
    static const char *const bad[][4] = {
        {"http://127.0.0.1", NULL, NULL, "bad --relay http://127.0.0.1"},
        {"knits://127.0.0.1:7300", "--fallback", "http://127.0.0.1:7301",
         "a TLS relay falls back only to https://"},
        {"knit://127.0.0.1:7300", "--fallback", "ftp://x:1", "bad --fallback"},
        {"http://127.0.0.1:7300", "--fallback", "http://127.0.0.1:7301", "--fallback goes with"},
        {"http://127.0.0.1:7300", "--ca-file", "/dev/null", "--ca-file and --server-name go"},
    };
    char r[600], out[4096];
    snprintf(r, sizeof r, "%s/u.db", su_tmpdir());
    su_make_replica(r, SCHEMA, "items");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *argv[] = {SYNC_AGENT_PATH, "run",    r,         "--relay", bad[i][0],
                              "--anonymous",   "--once", bad[i][1], bad[i][2], NULL};
        int rc = su_run(argv, 10000, out, sizeof out);
        if (rc != 2 || !strstr(out, bad[i][3]))
            fprintf(stderr, "%s (%d), wanted \"%s\":\n%s\n", bad[i][0], rc, bad[i][3], out);
        CHECK_EQ_INT(rc, 2);
        CHECK(strstr(out, bad[i][3]) != NULL);
    }
}

KNIT_TESTS(T(lp_syncs), T(fallback_and_return), T(get_cut), T(status_transport), T(ws_close_frame),
           T(lp_https_syncs), T(lp_https_untrusted), T(lp_https_refusals), T(lp_usage))
