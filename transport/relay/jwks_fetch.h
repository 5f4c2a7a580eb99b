/*
** jwks_fetch.h: the identity provider's keys fetched from a URL (a JWKS,
** jwk.h) with libcurl, driven by the relay's libuv loop: curl's multi
** interface told about sockets through uv_poll_t and about its timeouts
** through a uv_timer_t (curl_multi_socket_action), so the loop never
** waits on the network.  Name resolution is curl's threaded resolver.
**
** What the relay feeds it and what it answers:
**   - knit_jwks_fetcher_keys(): the keys now (an empty set until a fetch
**     succeeded, so every kid is unknown until then);
**   - knit_jwks_fetcher_refresh(): "a token named a kid we lack": starts
**     a fetch unless one is in flight (then it joins that one) or the
**     cooldown since the last fetch began has not passed (then it answers
**     KNIT_EBUSY at once and never calls back).  The callback runs once
**     the fetch completes, with 0 or the reason it failed;
**   - a failed fetch keeps the previous keys and logs why.
**
** Ownership: the fetcher copies the URL.  The set knit_jwks_fetcher_keys()
** returns stays valid until the fetcher's next completed fetch or its
** close.  knit_jwks_fetcher_close() answers every waiting callback with
** KNIT_ECLOSED (before it returns), then closes its handles and calls
** its own callback, after which the fetcher is freed.
*/
#ifndef KNIT_RELAY_JWKS_FETCH_H
#define KNIT_RELAY_JWKS_FETCH_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "jwk.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KNIT_JWKS_FETCH_TIMEOUT_MS 5000   /* default: a whole fetch, connect included */
#define KNIT_JWKS_FETCH_COOLDOWN_MS 30000 /* default: least time between two fetches */

typedef struct knit_jwks_fetcher_s knit_jwks_fetcher_t;

typedef struct knit_jwks_fetch_opts_s {
    const char *url;      /* http:// or https:// (no other scheme, no redirects) */
    uint64_t cooldown_ms; /* least time between the starts of two fetches */
    uint64_t timeout_ms;  /* a fetch that takes longer fails [KNIT_JWKS_FETCH_TIMEOUT_MS] */
    /* Log lines (levels of proto_server.h), or NULL. */
    void (*log)(void *data, int level, const char *line);
    void *data; /* passed to log */
} knit_jwks_fetch_opts_t;

/* Called when the fetch a refresh joined completes: status 0 (the keys
** are fresh), KNIT_EIO / KNIT_ETIMEDOUT / KNIT_EINVAL with why (the old
** keys stay), or KNIT_ECLOSED (the fetcher is closing).  why is valid
** during the call. */
typedef void (*knit_jwks_fetch_cb)(void *arg, int status, const char *why);

/* Makes a fetcher on loop and starts the first fetch. */
int knit__jwks_fetcher_new(uv_loop_t *loop, const knit_jwks_fetch_opts_t *o,
                           knit_jwks_fetcher_t **out /* OUT */);
/* The keys now; never NULL. */
const knit_jwks_t *knit__jwks_fetcher_keys(const knit_jwks_fetcher_t *f);
/* Asks for fresh keys (see above): 0 and cb (may be NULL) is called later,
** or KNIT_EBUSY within the cooldown (with no fetch in flight), or
** KNIT_ENOMEM, KNIT_ECLOSED; then cb is never called. */
int knit__jwks_fetcher_refresh(knit_jwks_fetcher_t *f, knit_jwks_fetch_cb cb, void *arg);
/* Why the last fetch failed ("" when it succeeded, or none completed). */
const char *knit__jwks_fetcher_last_error(const knit_jwks_fetcher_t *f);
/* Fetches started since the fetcher was made (for tests and logs). */
uint64_t knit__jwks_fetcher_count(const knit_jwks_fetcher_t *f);
/* Stops (see above); cb (may be NULL) runs once every handle is closed.
** NULL: no-op. */
void knit__jwks_fetcher_close(knit_jwks_fetcher_t *f, void (*cb)(void *data), void *data);

#ifdef __cplusplus
}
#endif
#endif
