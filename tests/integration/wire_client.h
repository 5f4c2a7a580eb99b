/*
** wire_client.h: a small blocking protocol client and relay-process helper
** for integration tests.
**
** wc_* speaks frames over a plain TCP socket to 127.0.0.1 using the real
** codec (transport/codec.h), with every wait bounded by a timeout.
** relay_* starts the real sync-relay binary on an ephemeral port, finds the
** port from its "listening on" line, and stops it.  Test code only: errors
** are returned, never hidden, but nothing here is hardened.
*/
#ifndef KNIT_WIRE_CLIENT_H
#define KNIT_WIRE_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "codec.h"
#include "frame.h"

typedef struct wc_s {
    int fd;                  /* socket, -1 when closed */
    knit_frame_reader_t rd;  /* reassembly of incoming frames */
    uint8_t buf[65536];      /* bytes read, not yet framed */
    size_t have;             /* bytes in buf */
    size_t off;              /* bytes of buf already consumed */
    knit_codec_limits_t lim; /* decoder limits (defaults) */
} wc_t;

/* Connects to 127.0.0.1:port; rcvbuf > 0 sets SO_RCVBUF first. */
int wc_connect(wc_t *w, int port, int rcvbuf);
void wc_close(wc_t *w);
/* Writes all bytes (blocking); 0 or -1. */
int wc_send_raw(wc_t *w, const void *p, size_t n);
/* Encodes and writes one message; 0 or a KNIT_E* code. */
int wc_send(wc_t *w, const knit_msg_t *m);
/* Sends PUSH id of batch b to namespace ns; as wc_send. */
int wc_push(wc_t *w, uint64_t id, const char *ns, knit_batch_t *b);
/* Next message within timeout_ms: 0 (free it with knit_msg_free),
** KNIT_ETIMEDOUT, KNIT_ECLOSED (EOF or reset), or a decode error. */
int wc_recv(wc_t *w, int timeout_ms, knit_msg_t *out);
/* Like wc_recv, but drops messages until one of `type` (or an ERROR). */
int wc_recv_type(wc_t *w, int timeout_ms, int type, knit_msg_t *out);
/* 1 if the relay closed the connection within timeout_ms (everything
** still arriving is read and dropped), else 0. */
int wc_wait_closed(wc_t *w, int timeout_ms);

/* HELLO with one credential and at most one subscription (ns may be
** NULL); *reply gets WELCOME or ERROR (free it).  Returns what wc_recv did. */
int wc_hello(wc_t *w, const knit_cred_t *cred, const char *ns, uint64_t cursor, knit_msg_t *reply);
/* An anonymous credential (the strings are not copied). */
knit_cred_t wc_anon(const char *id, const char *secret);
/* A HELLO of cred with a random site, subscribing to ns from cursor when ns
** is set (sub is its storage), into *m for sending. */
void wc_hello_msg(knit_msg_t *m, knit_sub_t *sub, const knit_cred_t *cred, const char *ns,
                  uint64_t cursor, const char *agent);

typedef struct relay_proc_s {
    pid_t pid;     /* the relay process, 0 when not running */
    int port;      /* its port */
    int out_fd;    /* read end of its stdout */
    char log[256]; /* its stderr goes here */
} relay_proc_t;

/* Starts `path` with args (NULL-terminated, after the program name) plus
** "--listen 127.0.0.1:0"; waits up to 20 s for its port. 0 or -1. */
int relay_start(relay_proc_t *r, const char *path, const char *log, const char *const *args);
/* Sends sig (0: none, just wait) and waits up to 20 s, then SIGKILL;
** *status gets the wait status.  0, or -1 when it had to be killed. */
int relay_stop(relay_proc_t *r, int sig, int *status);
/* Resident memory of the relay in KiB (from /proc), or -1. */
long relay_rss_kb(const relay_proc_t *r);

#endif
