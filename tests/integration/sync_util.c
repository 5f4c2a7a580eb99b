/*
** sync_util.c: process, directory and SQLite helpers for the sync
** integration tests and benchmark (see sync_util.h).
*/
#include "sync_util.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "auth.h"
#include "knit.h"
#include "relay_store.h"
#ifdef KNIT_TEST_PG
#include "test_store.h"
#endif

#ifndef SYNC_RELAY_PATH
#define SYNC_RELAY_PATH "sync-relay"
#endif
#ifndef SYNC_AGENT_PATH
#define SYNC_AGENT_PATH "sync-agent"
#endif

#define MAX_CHILDREN 64

static pid_t children[MAX_CHILDREN];
static char tmpdir[256];
static int cleanup_armed;

static void rmtree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[1024];
    if (!d)
        return;
    while ((e = readdir(d)) != NULL) {
        struct stat st;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            rmtree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static void cleanup(void)
{
    for (int i = 0; i < MAX_CHILDREN; i++) {
        if (children[i] > 0) {
            kill(children[i], SIGKILL);
            waitpid(children[i], NULL, 0);
            children[i] = 0;
        }
    }
    if (tmpdir[0] && !getenv("KNIT_KEEP_TMP"))
        rmtree(tmpdir);
    else if (tmpdir[0])
        fprintf(stderr, "kept %s\n", tmpdir);
}

static void arm(void)
{
    if (!cleanup_armed) {
        cleanup_armed = 1;
        atexit(cleanup);
        signal(SIGPIPE, SIG_IGN);
    }
}

static void track_child(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i] == 0) {
            children[i] = pid;
            return;
        }
}

static void untrack_child(pid_t pid)
{
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i] == pid)
            children[i] = 0;
}

uint64_t su_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void su_sleep_ms(unsigned ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

const char *su_tmpdir(void)
{
    if (!tmpdir[0]) {
        arm();
        snprintf(tmpdir, sizeof tmpdir, "/tmp/knit-sync-XXXXXX");
        if (!mkdtemp(tmpdir)) {
            perror("mkdtemp");
            exit(1);
        }
    }
    return tmpdir;
}

char *su_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", su_tmpdir(), name);
    return buf;
}

int su_spawn(su_proc_t *p, const char *const *argv, const char *log, int *out_fd)
{
    int pipefd[2] = {-1, -1};
    pid_t pid;
    arm();
    if (out_fd && pipe(pipefd) != 0)
        return -1;
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            if (!out_fd)
                dup2(fd, 1);
            close(fd);
        }
        if (out_fd) {
            dup2(pipefd[1], 1);
            close(pipefd[0]);
            close(pipefd[1]);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    if (out_fd) {
        close(pipefd[1]);
        *out_fd = pipefd[0];
    }
    p->pid = pid;
    snprintf(p->log, sizeof p->log, "%s", log);
    track_child(pid);
    return 0;
}

int su_wait(su_proc_t *p, int timeout_ms, int *status)
{
    uint64_t end = su_now_ms() + (uint64_t)timeout_ms;
    int st;
    if (!p->pid)
        return -1;
    for (;;) {
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid) {
            untrack_child(p->pid);
            p->pid = 0;
            if (status)
                *status = st;
            return 0;
        }
        if (r < 0 && errno != EINTR)
            return -1;
        if (su_now_ms() >= end)
            return -1;
        su_sleep_ms(2);
    }
}

int su_kill(su_proc_t *p, int sig, int timeout_ms, int *status)
{
    if (!p->pid)
        return -1;
    kill(p->pid, sig);
    if (su_wait(p, timeout_ms, status) == 0)
        return 0;
    kill(p->pid, SIGKILL);
    su_wait(p, 5000, status);
    return -1;
}

int su_run(const char *const *argv, int timeout_ms, char *out, size_t n)
{
    char log[600];
    su_proc_t p;
    int st, fd;
    ssize_t got;
    static int seq;
    snprintf(log, sizeof log, "%s/run-%d-%d.out", su_tmpdir(), (int)getpid(), ++seq);
    unlink(log);
    if (su_spawn(&p, argv, log, NULL) != 0)
        return -1;
    if (su_wait(&p, timeout_ms, &st) != 0) {
        su_kill(&p, SIGKILL, 5000, NULL);
        fprintf(stderr, "su_run: %s timed out after %d ms\n", argv[0], timeout_ms);
        st = -1;
    }
    if (out && n) {
        out[0] = '\0';
        if ((fd = open(log, O_RDONLY)) >= 0) {
            got = read(fd, out, n - 1);
            out[got > 0 ? got : 0] = '\0';
            close(fd);
        }
    }
    unlink(log);
    if (st == -1 || !WIFEXITED(st))
        return -1;
    return WEXITSTATUS(st);
}

int su_write_secret(const char *path)
{
    uint8_t raw[36];
    char text[64];
    FILE *f;
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd < 0 || read(fd, raw, sizeof raw) != (ssize_t)sizeof raw) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    knit_b64url_encode(raw, sizeof raw, text); /* 48 characters */
    if (!(f = fopen(path, "w")))
        return -1;
    fprintf(f, "%s\n", text);
    fclose(f);
    chmod(path, 0600);
    return 0;
}

int su_write_token(const char *secret_path, const char *sub, const char *token_path)
{
    char key[256];
    char *tok = NULL;
    size_t n;
    FILE *f = fopen(secret_path, "r");
    struct timespec ts;
    if (!f)
        return -1;
    n = fread(key, 1, sizeof key, f);
    fclose(f);
    while (n && (key[n - 1] == '\n' || key[n - 1] == '\r'))
        n--;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (knit_jwt_mint((const uint8_t *)key, n, sub,
                      (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000, 24 * 3600,
                      &tok) != 0)
        return -1;
    if (!(f = fopen(token_path, "w"))) {
        knit__free(tok);
        return -1;
    }
    fprintf(f, "%s\n", tok);
    fclose(f);
    knit__free(tok);
    return 0;
}

int su_relay_start(su_relay_t *r, int port, const char *data, const char *secret,
                   const char *const *extra)
{
    const char *argv[40];
    char listen[64], line[512];
    size_t n = 0, have = 0;
    int fd, ac = 0;
    uint64_t end = su_now_ms() + 20000;

    snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
    argv[ac++] = SYNC_RELAY_PATH;
    argv[ac++] = "--listen";
    argv[ac++] = listen;
    argv[ac++] = "--data";
    argv[ac++] = data;
    if (secret) {
        argv[ac++] = "--jwt-secret-file";
        argv[ac++] = secret;
    }
    for (size_t i = 0; extra && extra[i] && ac < 36; i++)
        argv[ac++] = extra[i];
#ifdef KNIT_TEST_PG
    {
        const char *uri = ts_store_arg(data, extra); /* last, so it wins */
        if (uri) {
            argv[ac++] = "--store";
            argv[ac++] = uri;
        }
    }
#endif
    argv[ac] = NULL;
    snprintf(r->data, sizeof r->data, "%s", data);
    snprintf(r->secret, sizeof r->secret, "%s", secret ? secret : "");
    {
        char log[600];
        snprintf(log, sizeof log, "%s.log", data);
        if (su_spawn(&r->p, argv, log, &fd) != 0)
            return -1;
    }
    /* The port is on the first stdout line: "sync-relay: listening on H:P". */
    while (su_now_ms() < end) {
        struct pollfd pfd = {fd, POLLIN, 0};
        char *nl;
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        ssize_t got = read(fd, line + have, sizeof line - 1 - have);
        if (got <= 0)
            break;
        have += (size_t)got;
        line[have] = '\0';
        if ((nl = strchr(line, '\n')) != NULL) {
            char *colon;
            *nl = '\0';
            colon = strrchr(line, ':');
            if (strstr(line, "listening on") && colon) {
                r->port = atoi(colon + 1);
                n = 1;
            }
            break;
        }
    }
    close(fd); /* the relay's later stdout writes are ignored (SIGPIPE is) */
    if (!n || r->port <= 0) {
        char log[600];
        fprintf(stderr, "relay did not start (see %s.log)\n", data);
        su_kill(&r->p, SIGKILL, 5000, NULL);
        snprintf(log, sizeof log, "%s.log", data);
        su_print_file(log);
        return -1;
    }
    return 0;
}

int su_agent_start(su_proc_t *p, const char *replica, int port, const char *token, const char *log,
                   const char *const *extra)
{
    const char *argv[40];
    char relay[64];
    int ac = 0;
    snprintf(relay, sizeof relay, "127.0.0.1:%d", port);
    argv[ac++] = SYNC_AGENT_PATH;
    argv[ac++] = "run";
    argv[ac++] = replica;
    argv[ac++] = "--relay";
    argv[ac++] = relay;
    if (token) {
        argv[ac++] = "--token-file";
        argv[ac++] = token;
    } else {
        argv[ac++] = "--anonymous";
    }
    for (size_t i = 0; extra && extra[i] && ac < 38; i++)
        argv[ac++] = extra[i];
    argv[ac] = NULL;
    return su_spawn(p, argv, log, NULL);
}

sqlite3 *su_db(const char *path)
{
    sqlite3 *db = NULL;
    if (sqlite3_open(path, &db) != SQLITE_OK) {
        fprintf(stderr, "cannot open %s: %s\n", path, sqlite3_errmsg(db));
        exit(1);
    }
    sqlite3_busy_timeout(db, 10000);
    return db;
}

void su_exec(sqlite3 *db, const char *fmt, ...)
{
    char *sql, *err = NULL;
    va_list ap;
    va_start(ap, fmt);
    sql = sqlite3_vmprintf(fmt, ap);
    va_end(ap);
    if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "SQL failed: %s\n  %s\n", err ? err : "?", sql);
        exit(1);
    }
    sqlite3_free(sql);
}

int64_t su_int(sqlite3 *db, const char *fmt, ...)
{
    char *sql;
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    int rc;
    va_list ap;
    va_start(ap, fmt);
    sql = sqlite3_vmprintf(fmt, ap);
    va_end(ap);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "SQL failed: %s\n  %s\n", sqlite3_errmsg(db), sql);
        exit(1);
    }
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    else if (rc != SQLITE_DONE) {
        fprintf(stderr, "SQL failed: %s\n  %s\n", sqlite3_errmsg(db), sql);
        exit(1);
    }
    sqlite3_finalize(st);
    sqlite3_free(sql);
    return v;
}

char *su_dump(sqlite3 *db, const char *table, const char *order_by)
{
    char *sql = sqlite3_mprintf("SELECT * FROM \"%w\" ORDER BY %s", table, order_by);
    sqlite3_stmt *st = NULL;
    size_t cap = 4096, len = 0;
    char *out = malloc(cap);
    if (!out || sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        fprintf(stderr, "dump failed: %s\n", sqlite3_errmsg(db));
        exit(1);
    }
    out[0] = '\0';
    while (sqlite3_step(st) == SQLITE_ROW) {
        for (int i = 0; i < sqlite3_column_count(st); i++) {
            const char *v = (const char *)sqlite3_column_text(st, i);
            int t = sqlite3_column_type(st, i);
            size_t need = (v ? strlen(v) : 4) + 16;
            if (len + need >= cap) {
                while (len + need >= cap)
                    cap *= 2;
                out = realloc(out, cap);
                if (!out)
                    exit(1);
            }
            len += (size_t)snprintf(out + len, cap - len, "%s%c:%s", i ? "|" : "",
                                    "?iftbn"[t < 6 ? t : 0], v ? v : "NULL");
        }
        if (len + 2 >= cap) {
            cap *= 2;
            if (!(out = realloc(out, cap)))
                exit(1);
        }
        out[len++] = '\n';
        out[len] = '\0';
    }
    sqlite3_finalize(st);
    sqlite3_free(sql);
    return out;
}

int su_replica_digest(const char *path, const char *ns, char out[65])
{
    knit_options_t o;
    knit_t *k = NULL;
    knit_digest_t d;
    int rc;
    memset(&o, 0, sizeof o);
    o.readonly = 1;
    if ((rc = knit_open(path, &o, &k)) != 0)
        return rc;
    rc = knit_digest(k, ns, &d);
    knit_close(k);
    if (!rc)
        knit_digest_hex(&d, out);
    return rc;
}

int su_relay_digest(const char *data, const char *ns, char out[65])
{
    knit_relay_store_t *s = NULL;
    knit_digest_t d;
    int rc;
#ifdef KNIT_TEST_PG
    if (ts_pg()) {
        if (!(rc = ts_digest(data, ns, &d)))
            knit_digest_hex(&d, out);
        return rc;
    }
#endif
    if ((rc = knit_relay_store_open(data, KNIT_RELAY_STORE_READONLY, &s)) != 0)
        return rc;
    rc = knit_relay_store_digest(s, ns, &d);
    knit_relay_store_close(s);
    if (!rc)
        knit_digest_hex(&d, out);
    return rc;
}

int su_relay_seq(const char *data, const char *ns, uint64_t *seq) /* see sync_util.h */
{
    knit_relay_store_t *s = NULL;
    int rc;
#ifdef KNIT_TEST_PG
    if (ts_pg())
        return ts_seq(data, ns, seq);
#endif
    if ((rc = knit_relay_store_open(data, KNIT_RELAY_STORE_READONLY, &s)) != 0)
        return rc;
    rc = knit_relay_store_seq(s, ns, seq);
    knit_relay_store_close(s);
    return rc;
}

int su_relay_catch_up(const char *data, const char *ns, knit_batch_t **out) /* see sync_util.h */
{
    knit_relay_store_t *s = NULL;
    uint64_t reached;
    int more, rc;
    *out = NULL;
#ifdef KNIT_TEST_PG
    if (ts_pg())
        return ts_catch_up(data, ns, out);
#endif
    if ((rc = knit_relay_store_open(data, KNIT_RELAY_STORE_READONLY, &s)) != 0)
        return rc;
    rc = knit_relay_store_catch_up(s, ns, 0, 0, out, &reached, &more);
    knit_relay_store_close(s);
    return rc;
}

int su_wait_until(int (*pred)(void *arg), void *arg, int timeout_ms)
{
    uint64_t end = su_now_ms() + (uint64_t)timeout_ms;
    for (;;) {
        if (pred(arg))
            return 1;
        if (su_now_ms() >= end)
            return 0;
        su_sleep_ms(3);
    }
}

long su_scale(long n)
{
    const char *e = getenv("KNIT_SYNC_SCALE");
    double k = e ? atof(e) : 1.0;
    long r = (long)((double)n * (k > 0 ? k : 1.0));
    return r > 0 ? r : 1;
}

int su_free_port(void) /* see sync_util.h */
{
    struct sockaddr_in a;
    socklen_t n = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
    if (fd < 0)
        return -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &n) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* Reads the first n - 1 bytes of the file at path into buf, NUL-terminated;
** 0, or -1 if it cannot be opened. */
static int read_head(const char *path, char *buf, size_t n)
{
    FILE *f = fopen(path, "r");
    size_t k;
    if (!f)
        return -1;
    k = fread(buf, 1, n - 1, f);
    buf[k] = '\0';
    fclose(f);
    return 0;
}

int su_file_has(const char *path, const char *needle) /* see sync_util.h */
{
    char buf[65536];
    return read_head(path, buf, sizeof buf) == 0 && strstr(buf, needle) != NULL;
}

int su_count_in_file(const char *path, const char *needle) /* see sync_util.h */
{
    char buf[65536], *p;
    int k = 0;
    if (read_head(path, buf, sizeof buf) != 0)
        return 0;
    for (p = buf; (p = strstr(p, needle)) != NULL; p++)
        k++;
    return k;
}

void su_print_file(const char *path) /* see sync_util.h */
{
    char buf[4096];
    if (read_head(path, buf, sizeof buf) == 0)
        fprintf(stderr, "---- %s\n%s\n", path, buf);
}

void su_make_replica(const char *path, const char *schema, const char *table) /* see sync_util.h */
{
    char out[1024];
    sqlite3 *db = su_db(path);
    su_exec(db, "%s", schema);
    sqlite3_close(db);
    const char *argv[] = {SYNC_AGENT_PATH, "track", path, table, NULL};
    int rc = su_run(argv, 20000, out, sizeof out);
    if (rc != 0) {
        fprintf(stderr, "track of %s in %s failed (%d): %s\n", table, path, rc, out);
        exit(1);
    }
}
