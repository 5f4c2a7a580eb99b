/*
** wire_client.c: blocking test client and relay-process helper (see
** wire_client.h).
*/
#include "wire_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"

static uint64_t mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int wc_connect(wc_t *w, int port, int rcvbuf)
{
    struct sockaddr_in a;
    int one = 1;
    memset(w, 0, sizeof *w);
    w->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (w->fd < 0)
        return -1;
    if (rcvbuf > 0)
        setsockopt(w->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    setsockopt(w->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(w->fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(w->fd);
        w->fd = -1;
        return -1;
    }
    knit_frame_reader_init(&w->rd, 0);
    knit_codec_limits_default(&w->lim);
    return 0;
}

void wc_close(wc_t *w)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    knit_frame_reader_free(&w->rd);
}

int wc_send_raw(wc_t *w, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t k = send(w->fd, b, n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

int wc_send(wc_t *w, const knit_msg_t *m)
{
    knit_buf_t b = {NULL, 0, 0};
    int rc = knit_msg_encode(m, NULL, &b);
    if (rc == 0)
        rc = wc_send_raw(w, b.p, b.len) ? KNIT_ECLOSED : 0;
    knit_buf_free(&b);
    return rc;
}

int wc_push(wc_t *w, uint64_t id, const char *ns, knit_batch_t *b)
{
    knit_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = KNIT_MSG_PUSH;
    m.u.push.id = id;
    m.u.push.ns = ns;
    m.u.push.batch = b;
    return wc_send(w, &m);
}

/* Reads more bytes within the deadline: 1 got some, 0 timeout, -1 closed. */
static int fill(wc_t *w, uint64_t deadline)
{
    for (;;) {
        uint64_t now = mono();
        struct pollfd p = {w->fd, POLLIN, 0};
        int r;
        if (now >= deadline)
            return 0;
        r = poll(&p, 1, (int)(deadline - now));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 0;
        ssize_t k = recv(w->fd, w->buf, sizeof w->buf, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        w->have = (size_t)k;
        w->off = 0;
        return 1;
    }
}

int wc_recv(wc_t *w, int timeout_ms, knit_msg_t *out)
{
    uint64_t deadline = mono() + (uint64_t)timeout_ms;
    memset(out, 0, sizeof *out);
    if (w->fd < 0)
        return KNIT_ECLOSED;
    for (;;) {
        if (w->off < w->have) {
            const uint8_t *payload;
            size_t used, len;
            int rc =
                knit_frame_read(&w->rd, w->buf + w->off, w->have - w->off, &used, &payload, &len);
            if (rc < 0)
                return rc;
            w->off += used;
            if (rc == 1)
                return knit_msg_decode(payload, len, &w->lim, out, NULL);
            continue;
        }
        int f = fill(w, deadline);
        if (f == 0)
            return KNIT_ETIMEDOUT;
        if (f < 0)
            return KNIT_ECLOSED;
    }
}

int wc_recv_type(wc_t *w, int timeout_ms, int type, knit_msg_t *out)
{
    uint64_t deadline = mono() + (uint64_t)timeout_ms;
    for (;;) {
        uint64_t now = mono();
        int rc = wc_recv(w, now >= deadline ? 0 : (int)(deadline - now), out);
        if (rc)
            return rc;
        if ((int)out->type == type || out->type == KNIT_MSG_ERROR)
            return 0;
        knit_msg_free(out);
    }
}

int wc_wait_closed(wc_t *w, int timeout_ms)
{
    uint64_t deadline = mono() + (uint64_t)timeout_ms;
    for (;;) {
        int f = fill(w, deadline);
        if (f < 0)
            return 1;
        if (f == 0)
            return 0;
    }
}

knit_cred_t wc_anon(const char *id, const char *secret)
{
    knit_cred_t c;
    memset(&c, 0, sizeof c);
    c.kind = KNIT_CRED_ANON;
    c.id = id;
    c.secret = secret;
    return c;
}

void wc_hello_msg(knit_msg_t *m, knit_sub_t *sub, const knit_cred_t *cred, const char *ns,
                  uint64_t cursor, const char *agent)
{
    memset(m, 0, sizeof *m);
    m->type = KNIT_MSG_HELLO;
    m->u.hello.min_version = 1;
    m->u.hello.max_version = 1;
    for (int i = 0; i < 16; i++)
        m->u.hello.site.b[i] = (uint8_t)(rand() & 0xff);
    m->u.hello.cred = *cred;
    if (ns) {
        sub->ns = ns;
        sub->cursor = cursor;
        m->u.hello.subs = sub;
        m->u.hello.nsubs = 1;
    }
    m->u.hello.agent = agent;
}

int wc_hello(wc_t *w, const knit_cred_t *cred, const char *ns, uint64_t cursor, knit_msg_t *reply)
{
    knit_msg_t m;
    knit_sub_t sub;
    int rc;
    wc_hello_msg(&m, &sub, cred, ns, cursor, "test_relay_it");
    if ((rc = wc_send(w, &m)) != 0)
        return rc;
    return wc_recv(w, 10000, reply);
}

/* ---------------------------------------------------------------------- */
/* The relay process                                                        */

int relay_start(relay_proc_t *r, const char *path, const char *log, const char *const *args)
{
    int pfd[2];
    const char *argv[32];
    size_t n = 0;
    char line[512];
    size_t have = 0;
    uint64_t deadline;

    memset(r, 0, sizeof *r);
    snprintf(r->log, sizeof r->log, "%s", log);
    argv[n++] = path;
    for (size_t i = 0; args && args[i] && n < 28; i++)
        argv[n++] = args[i];
    argv[n++] = "--listen";
    argv[n++] = "127.0.0.1:0";
    argv[n] = NULL;
    if (pipe(pfd) != 0)
        return -1;
    r->pid = fork();
    if (r->pid < 0)
        return -1;
    if (r->pid == 0) {
        int lfd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(pfd[1], 1);
        if (lfd >= 0)
            dup2(lfd, 2);
        close(pfd[0]);
        close(pfd[1]);
        execv(path, (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    r->out_fd = pfd[0];
    deadline = mono() + 20000;
    while (mono() < deadline && have < sizeof line - 1) {
        struct pollfd p = {r->out_fd, POLLIN, 0};
        if (poll(&p, 1, 200) <= 0)
            continue;
        ssize_t k = read(r->out_fd, line + have, sizeof line - 1 - have);
        if (k <= 0)
            break;
        have += (size_t)k;
        line[have] = '\0';
        char *at = strstr(line, "listening on ");
        char *nl = at ? strchr(at, '\n') : NULL;
        if (at && nl) {
            char *colon = strrchr(at, ':');
            r->port = atoi(colon + 1);
            return r->port > 0 ? 0 : -1;
        }
    }
    kill(r->pid, SIGKILL);
    waitpid(r->pid, NULL, 0);
    r->pid = 0;
    return -1;
}

int relay_stop(relay_proc_t *r, int sig, int *status)
{
    uint64_t deadline = mono() + 20000;
    int st = 0;
    if (!r->pid)
        return -1;
    if (sig)
        kill(r->pid, sig);
    for (;;) {
        pid_t p = waitpid(r->pid, &st, WNOHANG);
        if (p == r->pid)
            break;
        if (mono() >= deadline) {
            kill(r->pid, SIGKILL);
            waitpid(r->pid, &st, 0);
            r->pid = 0;
            close(r->out_fd);
            return -1;
        }
        usleep(10000);
    }
    r->pid = 0;
    close(r->out_fd);
    if (status)
        *status = st;
    return 0;
}

long relay_rss_kb(const relay_proc_t *r)
{
    char path[64], line[256];
    long kb = -1;
    FILE *f;
    snprintf(path, sizeof path, "/proc/%d/status", (int)r->pid);
    if (!(f = fopen(path, "r")))
        return -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = atol(line + 6);
    fclose(f);
    return kb;
}
