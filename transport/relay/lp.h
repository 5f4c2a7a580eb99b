/*
** lp.h: HTTP long-polling sessions (docs/PROTOCOL.md, section 1.3), for
** clients that cannot hold a stream open.  Each session is a virtual byte
** stream (stream.h) that the relay serves like a TCP connection, so the
** protocol engine, its authentication, limits and ACK-means-durable rule
** run unchanged; the HTTP server (http.c) turns requests into the calls
** below and their answers back into HTTP responses.
**
** What the HTTP server feeds the table: POST /v1/lp (knit__lp_open), the
** frames of POST /v1/lp/<sid> (knit__lp_post), GET /v1/lp/<sid>?cursor=N
** (knit__lp_get), DELETE /v1/lp/<sid> (knit__lp_delete), the time of each
** request and a periodic knit__lp_tick().  What it gets back: every request
** is answered once through its knit_lp_answer_cb, at once or later (a GET
** that waits for news, a POST while the engine has paused reading), unless
** knit__lp_cancel() withdraws it first (its HTTP connection went away).
** The table reads no clock and does no I/O; randomness for session ids
** comes from the conf's hook.
**
** The stream: frames the user (the relay) writes are kept in an output
** buffer, addressed by byte offset from the session's start; a GET with
** cursor N returns the bytes from N on and acknowledges those before N,
** which are then dropped.  A write's completion runs when the client has
** acknowledged all of it, so the engine's outbound queue (max_queue, slow
** consumer, disconnect at twice max_queue) counts what the client has not
** fetched, exactly as on TCP.  Writes must hold whole frames.  Shutdown
** (FIN) is seen by a GET past the last byte as 410; DELETE and a session
** with no request for idle_ms end the stream's input (on_end); close
** removes the session (its id then answers 404).
**
** Ownership: the table owns its sessions; each session stream lives until
** its on_close returns (after knit_stream_close(), from the next tick, not
** from inside the call).  The table is freed once knit__lp_sessions() is 0.
** Buffers passed to knit__lp_post() are copied when kept; bytes passed to
** an answer callback are valid during the call only.
*/
#ifndef KNIT_RELAY_LP_H
#define KNIT_RELAY_LP_H

#include <stddef.h>
#include <stdint.h>

#include "stream.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KNIT_LP_WAIT_MS 20000          /* longest wait of a GET for news */
#define KNIT_LP_IDLE_MS 60000          /* a session with no request this long is ended */
#define KNIT_LP_SID_LEN 32             /* hex characters of a session id (128 bits) */
#define KNIT_LP_RESP_MAX (1024 * 1024) /* bytes of one GET answer (at least one write) */

typedef struct knit_lp_s knit_lp_t;

/* The answer to one request: an HTTP status and, for 200, the session's
** output bytes (application/octet-stream); for other statuses a short
** text explaining it.  p[0..n) is valid during the call only. */
typedef void (*knit_lp_answer_cb)(void *arg, int status, const uint8_t *p, size_t n);

typedef struct knit_lp_conf_s {
    int (*random)(void *data, void *buf, size_t n); /* session ids: 0 or an error */
    void *data;                                     /* passed to random */
    size_t max_frame;                               /* largest frame payload a POST may carry */
    size_t max_unacked;  /* output bytes not acknowledged before writes are refused */
    size_t max_sessions; /* sessions at once */
    uint64_t wait_ms;    /* KNIT_LP_WAIT_MS unless 0 */
    uint64_t idle_ms;    /* KNIT_LP_IDLE_MS unless 0 */
} knit_lp_conf_t;

/* A table (no sessions yet).  The conf is copied. */
int knit__lp_new(const knit_lp_conf_t *conf, knit_lp_t **out /* OUT */);
/* Frees it, and any session still in it (their streams must be closed:
** knit__lp_sessions() == 0).  NULL: no-op. */
void knit__lp_free(knit_lp_t *t);
/* A new session: its id (KNIT_LP_SID_LEN hex characters and a NUL) and its
** stream, for the caller to hand to the relay.  peer is the HTTP client's
** address ("1.2.3.4:5"), the stream's knit_stream_peer().  KNIT_EBUSY when
** max_sessions are open. */
int knit__lp_open(knit_lp_t *t, const char *peer, uint64_t now, char sid[KNIT_LP_SID_LEN + 1],
                  knit_stream_t **out /* OUT */);
/* POST: p[0..n) must be whole frames (400), each within max_frame (413),
** for session sid[0..nsid) (404).  Answered 204 once the stream's user has
** them: at once, or when it resumes reading (one such POST at a time per
** session; another is answered 503). */
void knit__lp_post(knit_lp_t *t, const char *sid, size_t nsid, const uint8_t *p, size_t n,
                   uint64_t now, knit_lp_answer_cb cb, void *arg);
/* GET: acknowledges the output before cursor, then answers 200 with the
** whole writes after it, at once if there are any, else when one is
** written or wait_ms pass (empty).  A cursor that is not the end of a
** write still kept is answered 400; a shut-down session with nothing past
** the cursor 410.  A new GET answers the one waiting before it (empty). */
void knit__lp_get(knit_lp_t *t, const char *sid, size_t nsid, uint64_t cursor, uint64_t now,
                  knit_lp_answer_cb cb, void *arg);
/* DELETE: ends the session's input (the user sees on_end KNIT_ECLOSED); 204. */
void knit__lp_delete(knit_lp_t *t, const char *sid, size_t nsid, knit_lp_answer_cb cb, void *arg);
/* Withdraws every request waiting with arg (its HTTP connection is gone). */
void knit__lp_cancel(knit_lp_t *t, void *arg);
/* Periodic: waits that expired, idle sessions, closes that were asked for. */
void knit__lp_tick(knit_lp_t *t, uint64_t now);
/* Sessions in the table (closed ones until their on_close has run). */
size_t knit__lp_sessions(const knit_lp_t *t);

#ifdef __cplusplus
}
#endif
#endif
