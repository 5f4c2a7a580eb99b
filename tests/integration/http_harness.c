/*
** http_harness.c: the relay harness of the HTTP integration tests (see
** http_harness.h).
*/
#include "http_harness.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#ifdef KNIT_TEST_PG
#include "test_store.h"
#endif

char hh_dir[64], hh_db[128], hh_logpath[128];
relay_proc_t hh_relay;
int hh_http_port;

uint64_t hh_mono(void) /* see http_harness.h */
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t hh_wall(void) /* see http_harness.h */
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* On failure (exit(1) from CHECK) print the relay's log tail, clean up. */
static void fail_exit(void)
{
    char cmd[300];
    if (!hh_dir[0])
        return;
    snprintf(cmd, sizeof cmd, "echo '--- relay log:'; tail -n 40 '%s' 1>&2", hh_logpath);
    if (system(cmd) != 0)
        fprintf(stderr, "(no relay log)\n");
    if (hh_relay.pid)
        kill(hh_relay.pid, SIGKILL);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", hh_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", hh_dir);
}

/* The time bound: kill the relay and fail (the directory is in /tmp and
** named for this test; only async-signal-safe calls here). */
static void on_alarm(int sig)
{
    static const char msg[] = "test timed out\n";
    (void)sig;
    if (write(2, msg, sizeof msg - 1) < 0)
        _exit(3);
    if (hh_relay.pid)
        kill(hh_relay.pid, SIGKILL);
    _exit(2);
}

/* The port of a complete "<marker>HOST:PORT" line in out, or 0. */
static int port_after(const char *out, const char *marker)
{
    const char *at = strstr(out, marker), *nl, *colon = NULL;
    if (!at || !(nl = strchr(at, '\n')))
        return 0;
    for (const char *q = at; q < nl; q++)
        if (*q == ':')
            colon = q;
    return colon ? atoi(colon + 1) : 0;
}

/* Starts sync-relay with --listen and --http-listen on ephemeral ports and
** reads both ports from its stdout. */
static void start_relay(const char *const *extra)
{
    const char *argv[32];
    size_t n = 0;
    int pfd[2];
    char out[1024];
    size_t have = 0;
    uint64_t deadline = hh_mono() + 20000;

    argv[n++] = SYNC_RELAY_PATH;
    argv[n++] = "--data";
    argv[n++] = hh_db;
    argv[n++] = "--log-level";
    argv[n++] = "debug";
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    argv[n++] = "--http-listen";
    argv[n++] = "127.0.0.1:0";
    for (size_t i = 0; extra && extra[i] && n < 28; i++)
        argv[n++] = extra[i];
#ifdef KNIT_TEST_PG
    {
        const char *uri = ts_store_arg(hh_db, extra); /* last, so it wins */
        if (uri) {
            argv[n++] = "--store";
            argv[n++] = uri;
        }
    }
#endif
    argv[n] = NULL;
    memset(&hh_relay, 0, sizeof hh_relay);
    snprintf(hh_relay.log, sizeof hh_relay.log, "%s", hh_logpath);
    hh_http_port = 0;
    CHECK(pipe(pfd) == 0);
    hh_relay.pid = fork();
    CHECK(hh_relay.pid >= 0);
    if (hh_relay.pid == 0) {
        int lfd = open(hh_logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(pfd[1], 1);
        if (lfd >= 0)
            dup2(lfd, 2);
        close(pfd[0]);
        close(pfd[1]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    hh_relay.out_fd = pfd[0];
    while (hh_mono() < deadline && have < sizeof out - 1 && (!hh_relay.port || !hh_http_port)) {
        struct pollfd p = {hh_relay.out_fd, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0)
            continue;
        ssize_t k = read(hh_relay.out_fd, out + have, sizeof out - 1 - have);
        if (k <= 0)
            break;
        have += (size_t)k;
        out[have] = '\0';
        hh_relay.port = port_after(out, "sync-relay: listening on ");
        hh_http_port = port_after(out, "sync-relay: http listening on ");
    }
    CHECK(hh_relay.port > 0);
    CHECK(hh_http_port > 0);
}

void hh_setup(const char *name, const char *const *extra) /* see http_harness.h */
{
    static int registered;
    signal(SIGALRM, on_alarm);
    alarm(100);
    if (!registered) {
        atexit(fail_exit);
        registered = 1;
    }
    srand((unsigned)getpid());
    snprintf(hh_dir, sizeof hh_dir, "/tmp/%s-XXXXXX", name);
    CHECK(mkdtemp(hh_dir) != NULL);
    snprintf(hh_db, sizeof hh_db, "%s/relay.db", hh_dir);
    snprintf(hh_logpath, sizeof hh_logpath, "%s/relay.log", hh_dir);
    start_relay(extra);
}

void hh_teardown(void) /* see http_harness.h */
{
    int st;
    char cmd[128];
    if (hh_relay.pid) {
        CHECK(relay_stop(&hh_relay, SIGTERM, &st) == 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", hh_dir);
    CHECK(system(cmd) == 0);
    hh_dir[0] = '\0';
    alarm(0);
}

knit_batch_t *hh_notes_batch(const char *ns, uint64_t unit, int first, int count, const char *text)
{
    static const char *cols[] = {"body"};
    static const uint8_t kinds[] = {0};
    static uint64_t last;
    knit_batch_t *b;
    uint32_t idx;
    knit_site_t me;
    memset(me.b, 0x3c, 16);
    CHECK_OK(knit_batch_new(&b));
    CHECK_OK(knit_batch_ns(b, ns, &idx));
    CHECK_OK(knit_batch_site(b, &me, &idx));
    CHECK_OK(knit_batch_table(b, "notes", 1, 1, cols, kinds, &idx));
    CHECK_OK(knit_batch_begin(b, unit));
    for (int i = 0; i < count; i++) {
        knit_value_t pk;
        knit_change_t c;
        uint64_t h = knit_hlc_make(hh_wall(), 0);
        last = h > last ? h : last + 1;
        pk.type = KNIT_INTEGER;
        pk.u.i = first + i;
        memset(&c, 0, sizeof c);
        c.pk = &pk;
        c.cl = 1;
        c.hlc = last;
        c.col = 1;
        c.value.type = KNIT_TEXT;
        c.value.u.b.p = text;
        c.value.u.b.n = strlen(text);
        CHECK_OK(knit_batch_add(b, &c));
    }
    return b;
}
