/*
** ws.c: the WebSocket server stream (API in ws.h): the server role of the
** shared WebSocket message stream (transport/stream/ws_stream.c), made
** after http.c has checked the upgrade and written the 101 answer.  All
** that is the server's own is here: no masking, the relay's largest
** message, and the metric counted when a message over it closes the
** WebSocket (1009).
*/
#include "ws.h"

#include "alloc.h"
#include "ws_stream.h"

typedef struct wss_s {
    knit_ws_stream_t ws;     /* the shared stream; first */
    knit_relay_metrics_t *m; /* metrics, or NULL */
} wss_t;

static void too_big(knit_ws_stream_t *w)
{
    knit__metrics_limit(((wss_t *)w)->m, KNIT_METRIC_WS_MESSAGE);
}

static const knit_ws_role_t SERVER = {.client = 0, .too_big = too_big};

int knit__ws_accept(knit_stream_t *inner, size_t max_msg, const uint8_t *rest, size_t nrest,
                    knit_relay_metrics_t *m, knit_stream_t **out) /* see ws.h */
{
    wss_t *w;
    int rc;
    *out = NULL;
    if (!(w = knit__calloc(1, sizeof *w)))
        return KNIT_ENOMEM;
    if ((rc = knit__ws_stream_init(&w->ws, &SERVER, inner, max_msg, rest, nrest)) != 0) {
        knit__free(w);
        return rc;
    }
    w->m = m;
    *out = &w->ws.pub;
    return 0;
}
