/*
** alloc.h: the one allocation wrapper every knit module uses.
**
** Routing all allocation through knit__malloc/knit__realloc lets tests fail
** the Nth allocation (knit__alloc_fail_at) and check that every failure
** returns KNIT_ENOMEM and leaves the object usable.  The fault counter is the
** only process-wide state in knit and exists for tests; it is off (0) unless a
** test arms it.
*/
#ifndef KNIT_ALLOC_H
#define KNIT_ALLOC_H

#include <stddef.h>

void *knit__malloc(size_t n);
void *knit__calloc(size_t count, size_t size);
void *knit__realloc(void *p, size_t n);
void knit__free(void *p);
char *knit__strdup(const char *s);
void *knit__memdup(const void *p, size_t n);

/* Test seam: make the nth allocation from now fail (1 = the next one), and
** every later one while `sticky` is set; 0 disarms.  Returns how many
** allocations happened since the last call. */
long knit__alloc_fail_at(long nth, int sticky);

#endif
