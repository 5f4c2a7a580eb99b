/*
** arena.c: see arena.h.
*/
#include "arena.h"

#include <stddef.h>
#include <string.h>

#include "alloc.h"

struct knit_arena_blk_s {
    knit_arena_blk_t *next; /* older block */
    size_t used;            /* bytes handed out */
    size_t size;            /* bytes in data */
    max_align_t data[];     /* the bytes, suitably aligned */
};

void knit__arena_init(knit_arena_t *a, size_t block)
{
    a->blocks = NULL;
    a->block = block;
}

void *knit__arena_alloc(knit_arena_t *a, size_t n)
{
    knit_arena_blk_t *b = a->blocks;
    n = (n + 15) & ~(size_t)15;
    if (!b || b->size - b->used < n) {
        int big = n > a->block / 4;
        size_t size = big ? n : a->block;
        b = knit__malloc(sizeof *b + size);
        if (!b)
            return NULL;
        b->size = size;
        b->used = 0;
        if (big && a->blocks) {
            /* Keep the current block as the one to fill. */
            b->next = a->blocks->next;
            a->blocks->next = b;
        } else {
            b->next = a->blocks;
            a->blocks = b;
        }
    }
    void *r = (char *)b->data + b->used;
    b->used += n;
    return r;
}

char *knit__arena_strdup(knit_arena_t *a, const char *s)
{
    size_t n = strlen(s) + 1;
    char *r = knit__arena_alloc(a, n);
    if (r)
        memcpy(r, s, n);
    return r;
}

void knit__arena_free(knit_arena_t *a)
{
    knit_arena_blk_t *b = a->blocks;
    while (b) {
        knit_arena_blk_t *next = b->next;
        knit__free(b);
        b = next;
    }
    a->blocks = NULL;
}
