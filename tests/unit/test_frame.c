/*
** test_frame.c: the incremental frame reader and writer (transport/frame.c).
**
** Law: however a stream of frames is cut into chunks (whole, byte by byte,
** random sizes), the reader hands back exactly the payloads that were
** written, in order.  And a hostile length is refused as soon as its four
** bytes are in, before anything is allocated.
*/
#include "alloc.h"
#include "frame.h"
#include "test.h"

/* A stream of nframes frames with random payloads; lens[i] their sizes. */
typedef struct stream_s {
    uint8_t *p;     /* the bytes */
    size_t n;       /* byte count */
    size_t *lens;   /* payload lengths */
    size_t *offs;   /* payload offsets in p */
    size_t nframes; /* frame count */
} stream_t;

static void make_stream(knit_rng_t *r, size_t nframes, size_t maxlen, stream_t *s)
{
    s->nframes = nframes;
    s->lens = calloc(nframes + 1, sizeof *s->lens);
    s->offs = calloc(nframes + 1, sizeof *s->offs);
    size_t total = 0;
    for (size_t i = 0; i < nframes; i++) {
        s->lens[i] = 1 + knit_rng_below(r, knit_rng_below(r, 4) ? 40 : maxlen);
        total += 4 + s->lens[i];
    }
    s->p = malloc(total);
    s->n = 0;
    for (size_t i = 0; i < nframes; i++) {
        CHECK_OK(knit_frame_header(s->p + s->n, s->lens[i], 0));
        s->offs[i] = s->n + 4;
        for (size_t k = 0; k < s->lens[i]; k++)
            s->p[s->n + 4 + k] = (uint8_t)knit_rng_next(r);
        s->n += 4 + s->lens[i];
    }
}

static void free_stream(stream_t *s)
{
    free(s->p);
    free(s->lens);
    free(s->offs);
}

/* Feeds s in chunks whose sizes come from chunk(); checks every payload. */
static void feed(const stream_t *s, knit_rng_t *r, size_t maxchunk)
{
    knit_frame_reader_t fr;
    knit_frame_reader_init(&fr, 0);
    size_t pos = 0, got = 0;
    while (pos < s->n) {
        size_t chunk = maxchunk == 1 ? 1 : 1 + knit_rng_below(r, maxchunk);
        if (chunk > s->n - pos)
            chunk = s->n - pos;
        /* A private copy so that ASan sees any read beyond the chunk. */
        uint8_t *c = malloc(chunk);
        memcpy(c, s->p + pos, chunk);
        size_t off = 0;
        while (off < chunk) {
            size_t used;
            const uint8_t *payload;
            size_t len;
            int rc = knit_frame_read(&fr, c + off, chunk - off, &used, &payload, &len);
            CHECK(rc == 0 || rc == 1);
            CHECK(used <= chunk - off);
            off += used;
            if (rc == 1) {
                CHECK(got < s->nframes);
                CHECK_EQ_INT(len, s->lens[got]);
                CHECK(memcmp(payload, s->p + s->offs[got], len) == 0);
                got++;
            } else {
                CHECK_EQ_INT(off, chunk);
            }
        }
        free(c);
        pos += chunk;
    }
    CHECK_EQ_INT(got, s->nframes);
    CHECK(!knit_frame_pending(&fr) || got == s->nframes);
    knit_frame_reader_free(&fr);
}

static void whole(void)
{
    knit_rng_t r = {1};
    stream_t s;
    make_stream(&r, 50, 5000, &s);
    knit_frame_reader_t fr;
    knit_frame_reader_init(&fr, 0);
    size_t off = 0, got = 0;
    knit__alloc_fail_at(0, 0);
    while (off < s.n) {
        size_t used, len;
        const uint8_t *payload;
        CHECK_EQ_INT(knit_frame_read(&fr, s.p + off, s.n - off, &used, &payload, &len), 1);
        /* Whole frames in one chunk are handed out in place. */
        CHECK(payload == s.p + s.offs[got]);
        CHECK_EQ_INT(len, s.lens[got]);
        off += used;
        got++;
    }
    CHECK_EQ_INT(knit__alloc_fail_at(0, 0), 0);
    CHECK_EQ_INT(got, 50);
    knit_frame_reader_free(&fr);
    free_stream(&s);
}

static void bytewise(void)
{
    knit_rng_t r = {2};
    stream_t s;
    make_stream(&r, 30, 3000, &s);
    feed(&s, &r, 1);
    free_stream(&s);
}

static void chunks(void)
{
    uint64_t seed = knit_test_seed();
    long n = knit_test_cases(1000);
    for (long i = 0; i < n; i++) {
        knit_rng_t r = {seed + (uint64_t)i};
        knit_test_case_seed(seed + (uint64_t)i);
        stream_t s;
        make_stream(&r, 1 + knit_rng_below(&r, 20), 1 + knit_rng_below(&r, 20000), &s);
        feed(&s, &r, 1 + knit_rng_below(&r, 9000));
        free_stream(&s);
    }
}

static void many(void)
{
    knit_rng_t r = {3};
    stream_t s;
    make_stream(&r, 5000, 3, &s);
    feed(&s, &r, 7);
    feed(&s, &r, 100000);
    free_stream(&s);
}

static void oversized(void)
{
    const uint8_t huge[] = {0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3};
    const uint8_t over[] = {0x00, 0x00, 0x00, 101, 1, 2, 3};
    const uint8_t *inputs[] = {huge, over};
    for (int k = 0; k < 2; k++) {
        knit_frame_reader_t fr;
        size_t used, len;
        const uint8_t *payload;
        knit_frame_reader_init(&fr, 100);
        knit__alloc_fail_at(0, 0);
        /* Byte by byte: three bytes are fine, the fourth fails. */
        for (int i = 0; i < 3; i++) {
            CHECK_EQ_INT(knit_frame_read(&fr, inputs[k] + i, 1, &used, &payload, &len), 0);
            CHECK_EQ_INT(used, 1);
        }
        CHECK_EQ_INT(knit_frame_read(&fr, inputs[k] + 3, 4, &used, &payload, &len), KNIT_ETOOBIG);
        CHECK_EQ_INT(used, 1);
        CHECK_EQ_INT(knit__alloc_fail_at(0, 0), 0); /* nothing was allocated */
        /* The error is sticky. */
        CHECK_EQ_INT(knit_frame_read(&fr, inputs[k] + 4, 3, &used, &payload, &len), KNIT_ETOOBIG);
        CHECK_EQ_INT(used, 0);
        knit_frame_reader_free(&fr);
    }
    /* Exactly the maximum is fine. */
    uint8_t ok[4 + 100] = {0, 0, 0, 100};
    knit_frame_reader_t fr;
    size_t used, len;
    const uint8_t *payload;
    knit_frame_reader_init(&fr, 100);
    CHECK_EQ_INT(knit_frame_read(&fr, ok, sizeof ok, &used, &payload, &len), 1);
    CHECK_EQ_INT(len, 100);
    knit_frame_reader_free(&fr);
    /* A peer announcing the maximum and sending a trickle makes the reader
    ** hold only about what arrived. */
    knit_frame_reader_init(&fr, 1 << 24);
    const uint8_t big[] = {0x01, 0x00, 0x00, 0x00, 7};
    CHECK_EQ_INT(knit_frame_read(&fr, big, sizeof big, &used, &payload, &len), 0);
    CHECK(fr.cap <= 4096);
    CHECK(knit_frame_pending(&fr));
    knit_frame_reader_free(&fr);
}

static void zero_length(void)
{
    const uint8_t z[] = {0, 0, 0, 0, 0xA0};
    knit_frame_reader_t fr;
    size_t used, len;
    const uint8_t *payload;
    knit_frame_reader_init(&fr, 0);
    CHECK_EQ_INT(knit_frame_read(&fr, z, sizeof z, &used, &payload, &len), KNIT_EPROTO);
    CHECK_EQ_INT(used, 4);
    knit_frame_reader_free(&fr);
}

static void writer(void)
{
    uint8_t h[4];
    CHECK_OK(knit_frame_header(h, 0x01020304, 0x7FFFFFFF));
    CHECK(h[0] == 1 && h[1] == 2 && h[2] == 3 && h[3] == 4);
    CHECK_EQ_INT(knit_frame_length(h), 0x01020304);
    CHECK_EQ_INT(knit_frame_header(h, 0, 0), KNIT_EINVAL);
    CHECK_EQ_INT(knit_frame_header(h, 101, 100), KNIT_ETOOBIG);
    CHECK_EQ_INT(knit_frame_header(h, (size_t)UINT32_MAX + 1, SIZE_MAX), KNIT_ETOOBIG);
    CHECK_OK(knit_frame_header(h, 16u << 20, 0));
    CHECK_EQ_INT(knit_frame_header(h, (16u << 20) + 1, 0), KNIT_ETOOBIG);
}

static void alloc_failure(void)
{
    knit_rng_t r = {4};
    stream_t s;
    make_stream(&r, 3, 10000, &s);
    knit_frame_reader_t fr;
    size_t used, len;
    const uint8_t *payload;
    knit_frame_reader_init(&fr, 0);
    /* Split the first frame so that the reader must buffer. */
    CHECK_EQ_INT(knit_frame_read(&fr, s.p, 5, &used, &payload, &len), 0);
    CHECK_EQ_INT(used, 5);
    knit_frame_reader_free(&fr);
    knit_frame_reader_init(&fr, 0);
    knit__alloc_fail_at(1, 0);
    CHECK_EQ_INT(knit_frame_read(&fr, s.p, 5, &used, &payload, &len), KNIT_ENOMEM);
    knit__alloc_fail_at(0, 0);
    CHECK_EQ_INT(knit_frame_read(&fr, s.p + 5, 5, &used, &payload, &len), KNIT_ENOMEM);
    knit_frame_reader_free(&fr);
    free_stream(&s);
}

KNIT_TESTS(T(whole), T(bytewise), T(chunks), T(many), T(oversized), T(zero_length), T(writer),
           T(alloc_failure))
