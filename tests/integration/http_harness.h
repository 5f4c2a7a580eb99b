/*
** http_harness.h: the relay harness of the HTTP integration tests
** (test_http_it.c, test_longpoll_it.c): one real sync-relay process with
** --listen and --http-listen on ephemeral 127.0.0.1 ports, in a fresh
** directory under /tmp, bounded by alarm().  On a failed CHECK (exit(1))
** the relay's log tail is printed, the relay killed and the directory
** removed.  The test program must define SYNC_RELAY_PATH.
*/
#ifndef KNIT_HTTP_HARNESS_H
#define KNIT_HTTP_HARNESS_H

#include <stdint.h>

#include "wire_client.h"

extern char hh_dir[64];       /* the case's directory, "" between cases */
extern char hh_db[128];       /* the relay's store, in hh_dir */
extern char hh_logpath[128];  /* the relay's stderr, in hh_dir */
extern relay_proc_t hh_relay; /* the relay; hh_relay.port is --listen's */
extern int hh_http_port;      /* --http-listen's port */

/* Milliseconds of the monotonic and of the wall clock. */
uint64_t hh_mono(void);
uint64_t hh_wall(void);

/* Starts a case: arms a 100 s alarm, makes /tmp/<name>-XXXXXX and starts
** sync-relay in it with the arguments extra (NULL-terminated, may be NULL)
** after the harness's own; the environment is inherited.  Returns once
** both ports are known. */
void hh_setup(const char *name, const char *const *extra);

/* Ends a case: stops the relay with SIGTERM (it must exit 0), removes the
** directory and disarms the alarm. */
void hh_teardown(void);

/* A batch of `count` notes (table notes(id INTEGER PRIMARY KEY, body LWW))
** with keys first.., each body text, in one unit, stamped now. */
knit_batch_t *hh_notes_batch(const char *ns, uint64_t unit, int first, int count, const char *text);

#endif
