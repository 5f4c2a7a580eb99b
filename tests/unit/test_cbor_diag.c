/*
** test_cbor_diag.c: knit_cbor_to_text against RFC 8949 Appendix A and
** against malformed input, in both output modes.
**
** Valid items are checked for their exact text in diagnostic notation and in
** JSON; malformed ones for the error code and the byte offset it names, since
** that offset is what a developer debugging a frame acts on.  Two property
** cases state laws over seeded random input: a generated well-formed item
** always renders, as valid JSON in JSON mode; and on arbitrary bytes both
** modes agree on success, error code and offset.
*/
#include "test.h"

#include "alloc.h"
#include "cbor_diag.h"
#include "knit_errors.h"

/* Hex text (spaces allowed) to bytes, in a buffer big enough for every
** vector here. */
static uint8_t hexbuf[4096];
static size_t unhex(const char *h)
{
    size_t n = 0;
    unsigned v;
    while (h[0]) {
        if (h[0] == ' ') {
            h++;
            continue;
        }
        CHECK(h[1] && sscanf(h, "%2x", &v) == 1);
        CHECK(n < sizeof hexbuf);
        hexbuf[n++] = (uint8_t)v;
        h += 2;
    }
    return n;
}

/* Runs one conversion and checks the contract on outputs either way. */
static char *render(const uint8_t *p, size_t n, int mode, int *rc, size_t *off, const char **what)
{
    char *out = (char *)"poison";
    size_t len = 99;
    *rc = knit_cbor_to_text(p, n, mode, &out, &len, off, what);
    if (*rc) {
        CHECK(out == NULL);
        CHECK_EQ_INT(len, 0);
        CHECK(*what != NULL);
        return NULL;
    }
    CHECK(out != NULL);
    CHECK_EQ_INT(strlen(out), len);
    return out;
}

/* One valid item: its exact text in both modes. */
static void ok(const char *hex, const char *diag, const char *json)
{
    size_t n = unhex(hex), off;
    const char *what;
    int rc;
    char *d = render(hexbuf, n, KNIT_CBOR_DIAG, &rc, &off, &what);
    if (rc)
        fprintf(stderr, "%s: unexpected error %d at %zu: %s\n", hex, rc, off, what);
    CHECK_OK(rc);
    if (strcmp(d, diag) != 0)
        fprintf(stderr, "input %s\n", hex);
    CHECK_STR(d, diag);
    knit__free(d);
    d = render(hexbuf, n, KNIT_CBOR_JSON, &rc, &off, &what);
    CHECK_OK(rc);
    if (strcmp(d, json) != 0)
        fprintf(stderr, "input %s\n", hex);
    CHECK_STR(d, json);
    knit__free(d);
}

/* One malformed input: the same code and offset in both modes. */
static void bad(const char *hex, int code, size_t offset)
{
    size_t n = unhex(hex), off;
    const char *what;
    int rc, mode;
    for (mode = 0; mode < 2; mode++) {
        char *d = render(hexbuf, n, mode, &rc, &off, &what);
        if (rc != code || off != offset)
            fprintf(stderr, "%s (mode %d): got %d at %zu (%s), want %d at %zu\n", hex, mode, rc,
                    off, what ? what : "-", code, offset);
        CHECK(d == NULL);
        CHECK_EQ_INT(rc, code);
        CHECK_EQ_INT(off, offset);
    }
}

static void uint_items(void)
{
    ok("00", "0", "0");
    ok("01", "1", "1");
    ok("0a", "10", "10");
    ok("17", "23", "23");
    ok("1818", "24", "24");
    ok("1819", "25", "25");
    ok("1864", "100", "100");
    ok("1903e8", "1000", "1000");
    ok("1a000f4240", "1000000", "1000000");
    ok("1b000000e8d4a51000", "1000000000000", "1000000000000");
    /* Beyond 2^53 the text stays exact. */
    ok("1b0020000000000001", "9007199254740993", "9007199254740993");
    ok("1bffffffffffffffff", "18446744073709551615", "18446744073709551615");
    /* Longer heads than needed carry an encoding indicator, in diag only. */
    ok("1800", "0_0", "0");
    ok("190017", "23_1", "23");
    ok("1a000000ff", "255_2", "255");
    ok("1b00000000ffffffff", "4294967295_3", "4294967295");
    ok("1b0000000100000000", "4294967296", "4294967296");
}

static void negint_items(void)
{
    ok("20", "-1", "-1");
    ok("29", "-10", "-10");
    ok("3863", "-100", "-100");
    ok("3903e7", "-1000", "-1000");
    ok("3bfffffffffffffffe", "-18446744073709551615", "-18446744073709551615");
    ok("3bffffffffffffffff", "-18446744073709551616", "-18446744073709551616");
    ok("3800", "-1_0", "-1");
}

static void bytes_items(void)
{
    ok("40", "h''", "{\"bytes\": \"\"}");
    ok("4401020304", "h'01020304'", "{\"bytes\": \"01020304\"}");
    ok("43ff00a5", "h'ff00a5'", "{\"bytes\": \"ff00a5\"}");
    ok("580101", "h'01'_0", "{\"bytes\": \"01\"}");
}

static void text_items(void)
{
    ok("60", "\"\"", "\"\"");
    ok("6161", "\"a\"", "\"a\"");
    ok("6449455446", "\"IETF\"", "\"IETF\"");
    ok("62225c", "\"\\\"\\\\\"", "\"\\\"\\\\\"");
    ok("62c3bc", "\"\xc3\xbc\"", "\"\xc3\xbc\"");
    ok("63e6b0b4", "\"\xe6\xb0\xb4\"", "\"\xe6\xb0\xb4\"");
    ok("64f0908591", "\"\xf0\x90\x85\x91\"", "\"\xf0\x90\x85\x91\"");
    /* Controls, DEL, C1 (here CSI), U+2028 and a bidi override are escaped,
    ** so no terminal sees them raw. */
    ok("6a0a0d09080c001b7fc29b", "\"\\n\\r\\t\\b\\f\\u0000\\u001b\\u007f\\u009b\"",
       "\"\\n\\r\\t\\b\\f\\u0000\\u001b\\u007f\\u009b\"");
    ok("66e280a8e280ae", "\"\\u2028\\u202e\"", "\"\\u2028\\u202e\"");
    ok("780161", "\"a\"_0", "\"a\"");
}

static void array_items(void)
{
    ok("80", "[]", "[]");
    ok("83010203", "[1, 2, 3]", "[1, 2, 3]");
    ok("8301820203820405", "[1, [2, 3], [4, 5]]", "[1, [2, 3], [4, 5]]");
    ok("98190102030405060708090a0b0c0d0e0f101112131415161718181819",
       "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, "
       "24, 25]",
       "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, "
       "24, 25]");
    ok("980101", "[_0 1]", "[1]");
    ok("9800", "[_0 ]", "[]");
}

static void map_items(void)
{
    ok("a0", "{}", "{}");
    ok("a201020304", "{1: 2, 3: 4}", "{\"1\": 2, \"3\": 4}");
    ok("a26161016162820203", "{\"a\": 1, \"b\": [2, 3]}", "{\"a\": 1, \"b\": [2, 3]}");
    ok("826161a161626163", "[\"a\", {\"b\": \"c\"}]", "[\"a\", {\"b\": \"c\"}]");
    ok("a56161614161626142616361436164614461656145",
       "{\"a\": \"A\", \"b\": \"B\", \"c\": \"C\", \"d\": \"D\", \"e\": \"E\"}",
       "{\"a\": \"A\", \"b\": \"B\", \"c\": \"C\", \"d\": \"D\", \"e\": \"E\"}");
    ok("b80100f6", "{_0 0: null}", "{\"0\": null}");
}

/* In JSON, a key that is not a text string is its diagnostic text. */
static void map_keys_json(void)
{
    ok("a4 f6f5 4201020a 826161f4a1616101 f93e00f93e00",
       "{null: true, h'0102': 10, [\"a\", false]: {\"a\": 1}, 1.5: 1.5}",
       "{\"null\": true, \"h'0102'\": 10, \"[\\\"a\\\", false]\": {\"a\": 1}, \"1.5\": 1.5}");
    /* A quote inside a text inside a key is escaped twice over. */
    ok("a1 816122 00", "{[\"\\\"\"]: 0}", "{\"[\\\"\\\\\\\"\\\"]\": 0}");
    ok("a1 c100 f6", "{1(0): null}", "{\"1(0)\": null}");
    /* An indefinite text key is a string key; its chunks are joined. */
    ok("a1 7f61616162ff 01", "{(_ \"a\", \"b\"): 1}", "{\"ab\": 1}");
    ok("a2 01 02 6131 03", "{1: 2, \"1\": 3}", "{\"1\": 2, \"1\": 3}");
}

static void tag_items(void)
{
    ok("c074323031332d30332d32315432303a30343a30305a", "0(\"2013-03-21T20:04:00Z\")",
       "{\"tag\": 0, \"value\": \"2013-03-21T20:04:00Z\"}");
    ok("c11a514b67b0", "1(1363896240)", "{\"tag\": 1, \"value\": 1363896240}");
    ok("c1fb41d452d9ec200000", "1(1363896240.5)", "{\"tag\": 1, \"value\": 1363896240.5}");
    ok("d74401020304", "23(h'01020304')", "{\"tag\": 23, \"value\": {\"bytes\": \"01020304\"}}");
    ok("d818456449455446", "24(h'6449455446')",
       "{\"tag\": 24, \"value\": {\"bytes\": \"6449455446\"}}");
    ok("d82076687474703a2f2f7777772e6578616d706c652e636f6d", "32(\"http://www.example.com\")",
       "{\"tag\": 32, \"value\": \"http://www.example.com\"}");
    /* Bignums stay tags: the bytes are shown, not interpreted. */
    ok("c249010000000000000000", "2(h'010000000000000000')",
       "{\"tag\": 2, \"value\": {\"bytes\": \"010000000000000000\"}}");
    ok("c349010000000000000000", "3(h'010000000000000000')",
       "{\"tag\": 3, \"value\": {\"bytes\": \"010000000000000000\"}}");
    ok("c1c100", "1(1(0))", "{\"tag\": 1, \"value\": {\"tag\": 1, \"value\": 0}}");
    ok("d80100", "1_0(0)", "{\"tag\": 1, \"value\": 0}");
    ok("dbffffffffffffffff00", "18446744073709551615(0)",
       "{\"tag\": 18446744073709551615, \"value\": 0}");
}

static void simple_items(void)
{
    ok("f4", "false", "false");
    ok("f5", "true", "true");
    ok("f6", "null", "null");
    ok("f7", "undefined", "{\"simple\": 23}");
    ok("e0", "simple(0)", "{\"simple\": 0}");
    ok("f0", "simple(16)", "{\"simple\": 16}");
    ok("f3", "simple(19)", "{\"simple\": 19}");
    ok("f820", "simple(32)", "{\"simple\": 32}");
    ok("f8ff", "simple(255)", "{\"simple\": 255}");
}

static void float_items(void)
{
    ok("f90000", "0.0", "0.0");
    ok("f98000", "-0.0", "-0.0");
    ok("f93c00", "1.0", "1.0");
    ok("fb3ff199999999999a", "1.1", "1.1");
    ok("f93e00", "1.5", "1.5");
    ok("f97bff", "65504.0", "65504.0");
    ok("fa47c35000", "100000.0", "100000.0");
    ok("fa7f7fffff", "3.4028234663852886e+38", "3.4028234663852886e+38");
    ok("fb7e37e43c8800759c", "1.0e+300", "1.0e+300");
    ok("f90001", "5.960464477539063e-8", "5.960464477539063e-8");
    ok("f90400", "0.00006103515625", "0.00006103515625");
    ok("f9c400", "-4.0", "-4.0");
    ok("fbc010666666666666", "-4.1", "-4.1");
    ok("f97c00", "Infinity", "\"Infinity\"");
    ok("f97e00", "NaN", "\"NaN\"");
    ok("f9fc00", "-Infinity", "\"-Infinity\"");
    /* The same values in wider encodings than preferred. */
    ok("fa7f800000", "Infinity_2", "\"Infinity\"");
    ok("fa7fc00000", "NaN_2", "\"NaN\"");
    ok("faff800000", "-Infinity_2", "\"-Infinity\"");
    ok("fb7ff0000000000000", "Infinity_3", "\"Infinity\"");
    ok("fb7ff8000000000000", "NaN_3", "\"NaN\"");
    ok("fbfff0000000000000", "-Infinity_3", "\"-Infinity\"");
    ok("fb3ff8000000000000", "1.5_3", "1.5");
    ok("fa3fc00000", "1.5_2", "1.5");
    ok("fb0000000000000000", "0.0_3", "0.0");
    ok("fa80000000", "-0.0_2", "-0.0");
    /* Subnormals: 2^-24 fits a half, 2^-25 does not; 2^-149 fits a single. */
    ok("fa33800000", "5.960464477539063e-8_2", "5.960464477539063e-8");
    ok("fa33000000", "2.9802322387695312e-8", "2.9802322387695312e-8");
    ok("fb36a0000000000000", "1.401298464324817e-45_3", "1.401298464324817e-45");
    ok("fb0000000000000001", "5.0e-324", "5.0e-324");
    ok("fb7fefffffffffffff", "1.7976931348623157e+308", "1.7976931348623157e+308");
    ok("fb3fb999999999999a", "0.1", "0.1");
    ok("fb444b1ae4d6e2ef50", "1.0e+21", "1.0e+21");
    ok("fb3eb0c6f7a0b5ed8d", "0.000001", "0.000001");
    ok("fb3e7ad7f29abcaf48", "1.0e-7", "1.0e-7");
    /* NaNs other than the preferred one keep their bits in a comment. */
    ok("f97e01", "NaN /bits 0x7e01/", "\"NaN\"");
    ok("f9fe00", "NaN /bits 0xfe00/", "\"NaN\"");
    ok("fa7fc00001", "NaN_2 /bits 0x7fc00001/", "\"NaN\"");
    ok("fb7ff0000000000001", "NaN_3 /bits 0x7ff0000000000001/", "\"NaN\"");
}

static void indefinite_items(void)
{
    ok("5f42010243030405ff", "(_ h'0102', h'030405')", "{\"bytes\": \"0102030405\"}");
    ok("7f657374726561646d696e67ff", "(_ \"strea\", \"ming\")", "\"streaming\"");
    ok("9fff", "[_ ]", "[]");
    ok("9f018202039f0405ffff", "[_ 1, [2, 3], [_ 4, 5]]", "[1, [2, 3], [4, 5]]");
    ok("9f01820203820405ff", "[_ 1, [2, 3], [4, 5]]", "[1, [2, 3], [4, 5]]");
    ok("83018202039f0405ff", "[1, [2, 3], [_ 4, 5]]", "[1, [2, 3], [4, 5]]");
    ok("83019f0203ff820405", "[1, [_ 2, 3], [4, 5]]", "[1, [2, 3], [4, 5]]");
    ok("bf61610161629f0203ffff", "{_ \"a\": 1, \"b\": [_ 2, 3]}", "{\"a\": 1, \"b\": [2, 3]}");
    ok("826161bf61626163ff", "[\"a\", {_ \"b\": \"c\"}]", "[\"a\", {\"b\": \"c\"}]");
    ok("bf6346756ef563416d7421ff", "{_ \"Fun\": true, \"Amt\": -2}",
       "{\"Fun\": true, \"Amt\": -2}");
    ok("5fff", "''_", "{\"bytes\": \"\"}");
    ok("7fff", "\"\"_", "\"\"");
    ok("bfff", "{_ }", "{}");
    ok("5f40ff", "(_ h'')", "{\"bytes\": \"\"}");
    ok("5f5801aaff", "(_ h'aa'_0)", "{\"bytes\": \"aa\"}");
}

/* 256 nested arrays, maps or tags are fine; the 257th is refused where it
** starts. */
static void nesting_limit(void)
{
    static uint8_t b[600];
    const uint8_t heads[3] = {0x81, 0x9f, 0xc1};
    size_t i, off;
    const char *what;
    int rc, h, depth;
    char *out;
    for (h = 0; h < 3; h++) {
        for (depth = 256; depth <= 257; depth++) {
            size_t n = 0;
            for (i = 0; i < (size_t)depth; i++)
                b[n++] = heads[h];
            b[n++] = 0x00;
            if (heads[h] == 0x9f)
                for (i = 0; i < (size_t)depth; i++)
                    b[n++] = 0xff;
            out = render(b, n, KNIT_CBOR_DIAG, &rc, &off, &what);
            if (depth == 256) {
                CHECK_OK(rc);
                knit__free(out);
            } else {
                CHECK_EQ_INT(rc, KNIT_ETOOBIG);
                CHECK_EQ_INT(off, 256);
            }
        }
    }
    /* Maps nest through their keys too (a JSON key is rendered apart, with
    ** the same depth count). */
    for (depth = 256; depth <= 257; depth++) {
        size_t n = 0;
        for (i = 0; i < (size_t)depth; i++)
            b[n++] = 0xa1;
        b[n++] = 0x00;
        for (i = 0; i < (size_t)depth; i++)
            b[n++] = 0x00;
        out = render(b, n, KNIT_CBOR_JSON, &rc, &off, &what);
        CHECK_EQ_INT(rc, depth == 256 ? 0 : KNIT_ETOOBIG);
        if (!rc)
            knit__free(out);
        else
            CHECK_EQ_INT(off, 256);
    }
}

static void err_truncated(void)
{
    bad("", KNIT_ETRUNCATED, 0);
    bad("18", KNIT_ETRUNCATED, 0);
    bad("1901", KNIT_ETRUNCATED, 0);
    bad("1b00000000000000", KNIT_ETRUNCATED, 0);
    bad("f93c", KNIT_ETRUNCATED, 0);
    bad("830102", KNIT_ETRUNCATED, 0); /* 3 items, 2 bytes left */
    bad("82 01 1901", KNIT_ETRUNCATED, 2);
    bad("440102", KNIT_ETRUNCATED, 0);
    bad("82 00 4401", KNIT_ETRUNCATED, 2);
    bad("5f 4100", KNIT_ETRUNCATED, 3);
    bad("7f 6261", KNIT_ETRUNCATED, 1);
    bad("9f 0102", KNIT_ETRUNCATED, 3);
    bad("bf 6161", KNIT_ETRUNCATED, 3);
    bad("a1 01", KNIT_ETRUNCATED, 0);
    bad("c1", KNIT_ETRUNCATED, 1);
}

static void err_oversized(void)
{
    static const uint8_t one[1] = {0};
    size_t off, len;
    const char *what;
    char *out;
    bad("5b8000000000000000", KNIT_ETOOBIG, 0); /* 2^63 bytes */
    bad("7b8000000000000000", KNIT_ETOOBIG, 0);
    bad("82 00 5b8000000000000000", KNIT_ETOOBIG, 2);
    bad("5a04000001 00", KNIT_ETOOBIG, 0);    /* 64 MiB + 1 */
    bad("5a00001000 00", KNIT_ETRUNCATED, 0); /* 4 KiB: plausible, but cut */
    bad("9b8000000000000000", KNIT_ETOOBIG, 0);
    bad("bb4000000000000000", KNIT_ETOOBIG, 0);
    bad("7f 5b8000000000000000", KNIT_ECORRUPT, 1); /* wrong chunk type first */
    bad("5f 5b8000000000000000", KNIT_ETOOBIG, 1);
    /* The input limit is checked before a byte is read. */
    CHECK_EQ_INT(
        knit_cbor_to_text(one, KNIT_CBOR_MAX_INPUT + 1, KNIT_CBOR_JSON, &out, &len, &off, &what),
        KNIT_ETOOBIG);
    CHECK(out == NULL && what != NULL);
}

static void err_reserved_ai(void)
{
    static const char *const v[] = {"1c", "1d", "1e", "3c", "5d", "7e",
                                    "9c", "bd", "de", "fc", "fd", "fe"};
    size_t i;
    for (i = 0; i < sizeof v / sizeof v[0]; i++)
        bad(v[i], KNIT_ECORRUPT, 0);
    bad("83 01 1e 02", KNIT_ECORRUPT, 2);
    bad("7f 7c ff", KNIT_ECORRUPT, 1);
}

static void err_indefinite(void)
{
    bad("1f", KNIT_ECORRUPT, 0);
    bad("3f", KNIT_ECORRUPT, 0);
    bad("df", KNIT_ECORRUPT, 0);
    bad("81 df 00", KNIT_ECORRUPT, 1);
    bad("5f 6161 ff", KNIT_ECORRUPT, 1); /* text chunk in a byte string */
    bad("7f 4100 ff", KNIT_ECORRUPT, 1);
    bad("5f 00 ff", KNIT_ECORRUPT, 1);
    bad("5f 4101 80 ff", KNIT_ECORRUPT, 3);
    bad("5f 5fff ff", KNIT_ECORRUPT, 1); /* chunks may not nest */
    bad("7f 7fff ff", KNIT_ECORRUPT, 1);
}

static void err_bad_utf8(void)
{
    bad("61 ff", KNIT_ECORRUPT, 1);
    bad("62 c080", KNIT_ECORRUPT, 1);     /* overlong */
    bad("63 e08080", KNIT_ECORRUPT, 1);   /* overlong */
    bad("63 eda080", KNIT_ECORRUPT, 1);   /* surrogate */
    bad("64 f4908080", KNIT_ECORRUPT, 1); /* above U+10FFFF */
    bad("64 f5808080", KNIT_ECORRUPT, 1);
    bad("62 61c3", KNIT_ECORRUPT, 2); /* sequence cut by the string's end */
    bad("63 61c361", KNIT_ECORRUPT, 2);
    bad("62 e6b0", KNIT_ECORRUPT, 1);
    bad("82 00 63616280", KNIT_ECORRUPT, 5);
    bad("7f 6161 61c3 ff", KNIT_ECORRUPT, 4);
    bad("7f 61c3 61bc ff", KNIT_ECORRUPT, 2); /* a character split over chunks */
    bad("a1 61ff 00", KNIT_ECORRUPT, 2);      /* in a JSON key, too */
    bad("a1 81 61ff 00", KNIT_ECORRUPT, 3);   /* and in a diag-rendered key */
}

static void err_break(void)
{
    bad("ff", KNIT_ECORRUPT, 0);
    bad("82 01 ff", KNIT_ECORRUPT, 2);
    bad("a1 ff 00", KNIT_ECORRUPT, 1);
    bad("c1 ff", KNIT_ECORRUPT, 1);
    bad("bf 6161 ff", KNIT_ECORRUPT, 3); /* a key with no value */
}

static void err_trailing(void)
{
    bad("00 00", KNIT_ECORRUPT, 1);
    bad("82 01 02 03", KNIT_ECORRUPT, 3);
    bad("9fff ff", KNIT_ECORRUPT, 2);
    bad("0000000483010203", KNIT_ECORRUPT, 1); /* a knit frame is not raw CBOR */
}

static void err_simple(void)
{
    bad("f800", KNIT_ECORRUPT, 0);
    bad("f814", KNIT_ECORRUPT, 0); /* false, in the forbidden two-byte form */
    bad("f81f", KNIT_ECORRUPT, 0);
    bad("82 00 f818", KNIT_ECORRUPT, 2);
}

static void bad_args(void)
{
    static const uint8_t b[1] = {0};
    char *out;
    size_t len, off;
    const char *what;
    CHECK_EQ_INT(knit_cbor_to_text(b, 1, KNIT_CBOR_JSON, NULL, &len, &off, &what), KNIT_EINVAL);
    CHECK_EQ_INT(knit_cbor_to_text(b, 1, KNIT_CBOR_JSON, &out, NULL, &off, &what), KNIT_EINVAL);
    CHECK(out == NULL);
    CHECK_EQ_INT(knit_cbor_to_text(NULL, 1, KNIT_CBOR_JSON, &out, &len, &off, &what), KNIT_EINVAL);
    CHECK_EQ_INT(knit_cbor_to_text(b, 1, 7, &out, &len, &off, &what), KNIT_EINVAL);
    CHECK_EQ_INT(knit_cbor_to_text(NULL, 0, KNIT_CBOR_DIAG, &out, &len, &off, &what),
                 KNIT_ETRUNCATED);
    /* The error outputs are optional. */
    CHECK_EQ_INT(knit_cbor_to_text(b, 1, KNIT_CBOR_DIAG, &out, &len, NULL, NULL), 0);
    CHECK_STR(out, "0");
    knit__free(out);
    CHECK_EQ_INT(knit_cbor_to_text(NULL, 0, KNIT_CBOR_DIAG, &out, &len, NULL, NULL),
                 KNIT_ETRUNCATED);
}

/* Every allocation failure is reported as KNIT_ENOMEM and leaks nothing
** (the sanitizer build checks the second half). */
static void alloc_failure(void)
{
    /* A map whose key is a 300-byte string inside an array: in JSON the key
    ** goes through the scratch buffer, and both buffers grow several times. */
    static uint8_t b[400];
    size_t n = 0, i, off, len;
    const char *what;
    char *out;
    long nth;
    int mode, rc, sticky;
    b[n++] = 0xa1;
    b[n++] = 0x81;
    b[n++] = 0x59;
    b[n++] = 0x01;
    b[n++] = 0x2c;
    for (i = 0; i < 300; i++)
        b[n++] = (uint8_t)i;
    b[n++] = 0x00;
    for (sticky = 0; sticky < 2; sticky++) {
        for (mode = 0; mode < 2; mode++) {
            for (nth = 1;; nth++) {
                knit__alloc_fail_at(nth, sticky);
                rc = knit_cbor_to_text(b, n, mode, &out, &len, &off, &what);
                knit__alloc_fail_at(0, 0);
                if (rc == 0)
                    break;
                CHECK_EQ_INT(rc, KNIT_ENOMEM);
                CHECK(out == NULL);
                CHECK_STR(what, "out of memory");
                CHECK(nth < 100);
            }
            CHECK(nth > 2); /* the seam was actually hit */
            knit__free(out);
        }
    }
}

/* ---------------------------------------------------------------------- */
/* Property cases                                                          */

/* A strict JSON syntax check (RFC 8259), enough to prove the JSON mode
** writes one valid document. */
static const char *js_ws(const char *s)
{
    while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r')
        s++;
    return s;
}
static const char *js_value(const char *s, int depth);
static const char *js_string(const char *s)
{
    if (*s++ != '"')
        return NULL;
    for (;;) {
        unsigned char c = (unsigned char)*s++;
        if (c == '"')
            return s;
        if (c < 0x20)
            return NULL;
        if (c == '\\') {
            c = (unsigned char)*s++;
            if (c == 'u') {
                int i;
                for (i = 0; i < 4; i++, s++)
                    if (!strchr("0123456789abcdefABCDEF", *s) || !*s)
                        return NULL;
            } else if (!c || !strchr("\"\\/bfnrt", c)) {
                return NULL;
            }
        }
    }
}
static const char *js_number(const char *s)
{
    if (*s == '-')
        s++;
    if (*s == '0')
        s++;
    else if (*s >= '1' && *s <= '9')
        while (*s >= '0' && *s <= '9')
            s++;
    else
        return NULL;
    if (*s == '.') {
        s++;
        if (!(*s >= '0' && *s <= '9'))
            return NULL;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-')
            s++;
        if (!(*s >= '0' && *s <= '9'))
            return NULL;
        while (*s >= '0' && *s <= '9')
            s++;
    }
    return s;
}
static const char *js_value(const char *s, int depth)
{
    s = js_ws(s);
    if (depth > 600)
        return NULL;
    if (*s == '{' || *s == '[') {
        char close = *s == '{' ? '}' : ']';
        int obj = *s == '{';
        s = js_ws(s + 1);
        if (*s == close)
            return s + 1;
        for (;;) {
            if (obj) {
                if (!(s = js_string(js_ws(s))))
                    return NULL;
                s = js_ws(s);
                if (*s++ != ':')
                    return NULL;
            }
            if (!(s = js_value(s, depth + 1)))
                return NULL;
            s = js_ws(s);
            if (*s == close)
                return s + 1;
            if (*s++ != ',')
                return NULL;
        }
    }
    if (*s == '"')
        return js_string(s);
    if (!strncmp(s, "true", 4))
        return s + 4;
    if (!strncmp(s, "false", 5))
        return s + 5;
    if (!strncmp(s, "null", 4))
        return s + 4;
    return js_number(s);
}
static int json_valid(const char *s)
{
    s = js_value(s, 0);
    return s && *js_ws(s) == '\0';
}

typedef struct gen_s {
    knit_rng_t rng; /* source of choices */
    uint8_t *b;     /* output */
    size_t n;       /* bytes written */
    size_t cap;     /* room in b */
} gen_t;

static void gen_byte(gen_t *g, uint8_t v)
{
    CHECK(g->n < g->cap);
    g->b[g->n++] = v;
}

/* A head with the preferred width, or now and then a longer one. */
static void gen_head(gen_t *g, int major, uint64_t v)
{
    int w = -1, i, nb;
    if (knit_rng_below(&g->rng, 8) == 0)
        w = (int)knit_rng_below(&g->rng, 4);
    if (w < 0)
        w = v < 24 ? -1 : v <= 0xff ? 0 : v <= 0xffff ? 1 : v <= 0xffffffff ? 2 : 3;
    else if ((w == 0 && v > 0xff) || (w == 1 && v > 0xffff) || (w == 2 && v > 0xffffffff))
        w = 3;
    if (w < 0) {
        gen_byte(g, (uint8_t)(major << 5 | v));
        return;
    }
    gen_byte(g, (uint8_t)(major << 5 | (24 + w)));
    nb = 1 << w;
    for (i = nb - 1; i >= 0; i--)
        gen_byte(g, (uint8_t)(v >> (8 * i)));
}

static uint64_t gen_num(gen_t *g)
{
    switch (knit_rng_below(&g->rng, 4)) {
    case 0:
        return knit_rng_below(&g->rng, 24);
    case 1:
        return knit_rng_below(&g->rng, 0x10000);
    case 2:
        return knit_rng_next(&g->rng) >> 32;
    default:
        return knit_rng_next(&g->rng);
    }
}

/* A definite string body: bytes, or valid UTF-8 drawn to hit escapes. */
static void gen_string(gen_t *g, int major)
{
    uint8_t tmp[64];
    size_t len = 0, want = (size_t)knit_rng_below(&g->rng, 12), i;
    while (len < want) {
        uint32_t cp;
        if (major == 2) {
            tmp[len++] = (uint8_t)knit_rng_next(&g->rng);
            continue;
        }
        switch (knit_rng_below(&g->rng, 5)) {
        case 0:
            cp = (uint32_t)knit_rng_below(&g->rng, 0x80);
            break;
        case 1:
            cp = 0x80 + (uint32_t)knit_rng_below(&g->rng, 0x780);
            break;
        case 2:
            cp = 0x2020 + (uint32_t)knit_rng_below(&g->rng, 0x50);
            break;
        case 3:
            cp = 0xe000 + (uint32_t)knit_rng_below(&g->rng, 0x2000);
            break;
        default:
            cp = 0x10000 + (uint32_t)knit_rng_below(&g->rng, 0x100000);
        }
        if (cp < 0x80) {
            tmp[len++] = (uint8_t)cp;
        } else if (cp < 0x800) {
            tmp[len++] = (uint8_t)(0xc0 | cp >> 6);
            tmp[len++] = (uint8_t)(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            tmp[len++] = (uint8_t)(0xe0 | cp >> 12);
            tmp[len++] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
            tmp[len++] = (uint8_t)(0x80 | (cp & 0x3f));
        } else {
            tmp[len++] = (uint8_t)(0xf0 | cp >> 18);
            tmp[len++] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
            tmp[len++] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
            tmp[len++] = (uint8_t)(0x80 | (cp & 0x3f));
        }
    }
    gen_head(g, major, len);
    for (i = 0; i < len; i++)
        gen_byte(g, tmp[i]);
}

static void gen_item(gen_t *g, int depth)
{
    uint64_t k, i, count;
    int major;
    int kind = (int)knit_rng_below(&g->rng, depth < 6 && g->n < 2000 ? 12 : 6);
    switch (kind) {
    case 0:
    case 1:
        gen_head(g, kind, gen_num(g));
        break;
    case 2:
    case 3:
        gen_string(g, kind);
        break;
    case 4: /* simple values, floats of every width and any bits */
        k = knit_rng_below(&g->rng, 5);
        if (k == 0) {
            gen_byte(g, (uint8_t)(0xe0 | knit_rng_below(&g->rng, 24)));
        } else if (k == 1) {
            gen_byte(g, 0xf8);
            gen_byte(g, (uint8_t)(32 + knit_rng_below(&g->rng, 224)));
        } else {
            int nb = 1 << (k - 1);
            uint64_t bits = knit_rng_next(&g->rng);
            gen_byte(g, (uint8_t)(0xf7 + k)); /* f9, fa, fb */
            for (i = 0; i < (uint64_t)nb; i++)
                gen_byte(g, (uint8_t)(bits >> (8 * i)));
        }
        break;
    case 5: /* indefinite strings */
        major = knit_rng_below(&g->rng, 2) ? 2 : 3;
        gen_byte(g, (uint8_t)(major << 5 | 31));
        count = knit_rng_below(&g->rng, 4);
        for (i = 0; i < count; i++)
            gen_string(g, major);
        gen_byte(g, 0xff);
        break;
    case 6:
    case 7:
    case 8:
    case 9: {
        int map = kind >= 8, indef = kind & 1;
        count = knit_rng_below(&g->rng, 5);
        if (indef)
            gen_byte(g, (uint8_t)((map ? 0xbf : 0x9f)));
        else
            gen_head(g, map ? 5 : 4, count);
        for (i = 0; i < count * (map ? 2 : 1); i++)
            gen_item(g, depth + 1);
        if (indef)
            gen_byte(g, 0xff);
        break;
    }
    default:
        gen_head(g, 6, gen_num(g));
        gen_item(g, depth + 1);
    }
}

/* Law: every well-formed item renders in both modes, the JSON is one valid
** JSON document and neither form holds a raw control character. */
static void prop_valid_items(void)
{
    static uint8_t buf[1 << 16];
    uint64_t base = knit_test_seed();
    long c, cases = knit_test_cases(3000);
    for (c = 0; c < cases; c++) {
        gen_t g;
        int mode, rc;
        size_t off, i;
        const char *what;
        char *out;
        g.rng.s = base + (uint64_t)c;
        g.b = buf;
        g.n = 0;
        g.cap = sizeof buf;
        knit_test_case_seed(base + (uint64_t)c);
        gen_item(&g, 0);
        for (mode = 0; mode < 2; mode++) {
            out = render(g.b, g.n, mode, &rc, &off, &what);
            if (rc)
                fprintf(stderr, "error %d at %zu: %s\n", rc, off, what);
            CHECK_OK(rc);
            for (i = 0; out[i]; i++)
                CHECK((unsigned char)out[i] >= 0x20);
            if (mode == KNIT_CBOR_JSON && !json_valid(out))
                fprintf(stderr, "invalid JSON: %s\n", out);
            CHECK(mode != KNIT_CBOR_JSON || json_valid(out));
            knit__free(out);
        }
    }
}

/* Law: on any bytes (here, generated items with a few bytes flipped, cut or
** appended) the two modes agree on success, error code and offset, and the
** offset lies within the input. */
static void prop_modes_agree(void)
{
    static uint8_t buf[1 << 16];
    uint64_t base = knit_test_seed();
    long c, cases = knit_test_cases(5000);
    for (c = 0; c < cases; c++) {
        gen_t g;
        int rc0, rc1, k, flips;
        size_t off0, off1;
        const char *w0, *w1;
        char *o0, *o1;
        g.rng.s = base ^ (UINT64_C(0x5bd1e995) * (uint64_t)(c + 1));
        g.b = buf;
        g.n = 0;
        g.cap = sizeof buf;
        knit_test_case_seed(g.rng.s);
        gen_item(&g, 0);
        flips = (int)knit_rng_below(&g.rng, 4);
        for (k = 0; k < flips; k++)
            buf[knit_rng_below(&g.rng, g.n)] = (uint8_t)knit_rng_next(&g.rng);
        if (knit_rng_below(&g.rng, 4) == 0)
            g.n = (size_t)knit_rng_below(&g.rng, g.n + 1);
        else if (knit_rng_below(&g.rng, 8) == 0)
            buf[g.n++] = (uint8_t)knit_rng_next(&g.rng);
        o0 = render(g.b, g.n, KNIT_CBOR_JSON, &rc0, &off0, &w0);
        o1 = render(g.b, g.n, KNIT_CBOR_DIAG, &rc1, &off1, &w1);
        CHECK_EQ_INT(rc0, rc1);
        if (rc0) {
            CHECK_EQ_INT(off0, off1);
            CHECK_STR(w0, w1);
            CHECK(off0 <= g.n);
        } else {
            CHECK(json_valid(o0));
        }
        knit__free(o0);
        knit__free(o1);
    }
}

KNIT_TESTS(T(uint_items), T(negint_items), T(bytes_items), T(text_items), T(array_items),
           T(map_items), T(map_keys_json), T(tag_items), T(simple_items), T(float_items),
           T(indefinite_items), T(nesting_limit), T(err_truncated), T(err_oversized),
           T(err_reserved_ai), T(err_indefinite), T(err_bad_utf8), T(err_break), T(err_trailing),
           T(err_simple), T(bad_args), T(alloc_failure), T(prop_valid_items), T(prop_modes_agree))
