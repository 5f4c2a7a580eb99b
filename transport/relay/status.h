/*
** status.h: the relay's live status page (GET /, plain HTML and a script)
** and the JSON document it polls (GET /v1/status): connections by
** transport, sessions, pushes and changes ingested (the page turns them
** into rates), and the busiest namespaces.  No I/O; status.c's notes say
** how the page stays safe with hostile namespace names.
*/
#ifndef KNIT_RELAY_STATUS_H
#define KNIT_RELAY_STATUS_H

#include <stddef.h>

#include "metrics.h"
#include "store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The page: static text of *n bytes. */
const char *knit__status_page(size_t *n /* OUT */);

/* The JSON of GET /v1/status into a new NUL-terminated buffer (*out,
** knit__free; *n its length).  The namespaces come from the store's
** busiest (store.h; none listed when it is NULL).  KNIT_ENOMEM. */
int knit__status_json(const knit_relay_metrics_t *m, const knit_relay_metrics_snapshot_t *snap,
                      const knit_relay_backend_t *store, char **out /* OUT */, size_t *n /* OUT */);

#ifdef __cplusplus
}
#endif
#endif
