/*
** arena.h: the one arena of knit: memory handed out in large blocks and
** freed all at once.  A change batch (runtime/batch.c) and a decoded wire
** message (transport/wire/codec.c) each own one, so building or decoding
** thousands of keys and names costs a few allocations instead of one each.
**
** Pieces are 16-byte aligned.  A piece bigger than a quarter of the block
** size gets a block of its own, placed behind the block being filled, so a
** big one-off does not waste the rest of that block.  Allocation goes
** through knit__malloc (alloc.h), so tests can fail it.
*/
#ifndef KNIT_ARENA_H
#define KNIT_ARENA_H

#include <stddef.h>

typedef struct knit_arena_blk_s knit_arena_blk_t;

typedef struct knit_arena_s {
    knit_arena_blk_t *blocks; /* newest first; the first is being filled */
    size_t block;             /* size of an ordinary block */
} knit_arena_t;

/* An empty arena whose ordinary blocks hold `block` bytes. */
void knit__arena_init(knit_arena_t *a, size_t block);
/* n bytes, or NULL when out of memory. */
void *knit__arena_alloc(knit_arena_t *a, size_t n);
/* A copy of the NUL-terminated s, or NULL. */
char *knit__arena_strdup(knit_arena_t *a, const char *s);
/* Frees every block; the arena is empty and usable again. */
void knit__arena_free(knit_arena_t *a);

#endif
