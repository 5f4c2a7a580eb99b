/*
** inspect_decode.c: `sync-inspect decode`, which shows a knit frame or any
** raw CBOR item as JSON or as CBOR diagnostic notation.
**
** The input is read whole (bounded by the 64 MiB CBOR limit plus the frame's
** length prefix), classified as a frame or raw CBOR, and handed to the
** I/O-free renderer in transport/cbor_diag.c.  Errors name the byte offset
** from the start of the input as given, prefix included, so it can be
** found with a hex dump of the same file.
**
** A knit frame on the wire:
**
**   +--------+--------+--------+--------+-------------------------+
**   |  length N, 32-bit big-endian      |  N bytes: one CBOR item |
**   +--------+--------+--------+--------+-------------------------+
**    offset 0                            offset 4
**
** Telling them apart: input whose first 4 bytes, read as N, satisfy N + 4 ==
** size is a frame, anything else raw CBOR.  No well-formed raw item can be
** mistaken for a frame: within the size limit N < 2^27, so the first byte is
** 0x00..0x07, a complete one-byte integer, and a raw item that starts with
** one is 1 byte long, while a frame is at least 4.
*/
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "cbor_diag.h"
#include "inspect_util.h"
#include "knit_errors.h"

#define CMD "decode"

enum { KIND_AUTO, KIND_FRAME, KIND_RAW };

static void help(void)
{
    fputs("usage: sync-inspect decode [--json | --diag] [--frame | --raw] [FILE | -]\n"
          "\n"
          "Show one CBOR data item, the message of a knit frame or any raw CBOR item,\n"
          "as JSON (the default) or as CBOR diagnostic notation (RFC 8949 section 8).\n"
          "FILE defaults to standard input; '-' also means standard input.\n"
          "\n"
          "Input:\n"
          "  A knit frame is a 4-byte big-endian length N and then exactly N bytes\n"
          "  holding one CBOR item.  Input whose first 4 bytes, read that way, count\n"
          "  exactly the bytes after them is taken as a frame, anything else as raw\n"
          "  CBOR; no well-formed raw item looks like a frame, so the guess is safe.\n"
          "  --frame   insist on a frame\n"
          "  --raw     take the whole input as one raw CBOR item\n"
          "\n"
          "Output (one line, then a newline):\n"
          "  --json    one JSON document (the default): byte strings as\n"
          "            {\"bytes\": \"HEX\"}, tags as {\"tag\": N, \"value\": ...}, simple\n"
          "            values other than false/true/null as {\"simple\": N}, and\n"
          "            \"Infinity\", \"-Infinity\", \"NaN\" as strings.  Map keys that are\n"
          "            not text become their diagnostic notation.\n"
          "  --diag    diagnostic notation, after a comment line saying whether a\n"
          "            frame or raw CBOR was read.  It keeps what JSON loses:\n"
          "            indefinite lengths (_ ...), float widths and longer-than-needed\n"
          "            heads (1.5_3, 0_0).\n"
          "\n"
          "Limits: 64 MiB of CBOR, 256 levels of nesting.  Malformed input, such as a\n"
          "truncated item, reserved additional information, a stray break, invalid\n"
          "UTF-8 or bytes after the item, is reported as\n"
          "  sync-inspect: decode: WHAT at byte offset N\n"
          "with N counted from the start of the input, length prefix included.\n"
          "\n"
          "Exit status: 0 decoded, 2 usage error or unreadable or malformed input.\n",
          stdout);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int cmd_decode(int argc, char **argv) /* see inspect_util.h */
{
    const char *path = NULL, *what = NULL;
    int mode = KNIT_CBOR_JSON, kind = KIND_AUTO, auto_kind, saw_json = 0, saw_diag = 0;
    int opts_done = 0, forced, rc, i;
    uint8_t *in = NULL;
    size_t n, skip, err_off, outlen;
    char *out = NULL, comment[96];

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (opts_done || a[0] != '-' || a[1] == '\0') {
            if (path)
                return inspect_usage_err(CMD, "more than one input given ('%s', '%s')", path, a);
            path = a;
        } else if (strcmp(a, "--") == 0) {
            opts_done = 1;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            help();
            return fflush(stdout) == 0 ? INSPECT_EXIT_OK : INSPECT_EXIT_ERROR;
        } else if (strcmp(a, "--json") == 0) {
            saw_json = 1;
            mode = KNIT_CBOR_JSON;
        } else if (strcmp(a, "--diag") == 0) {
            saw_diag = 1;
            mode = KNIT_CBOR_DIAG;
        } else if (strcmp(a, "--frame") == 0 || strcmp(a, "--raw") == 0) {
            int k = a[2] == 'f' ? KIND_FRAME : KIND_RAW;
            if (kind != KIND_AUTO && kind != k)
                return inspect_usage_err(CMD, "--frame and --raw exclude each other");
            kind = k;
        } else {
            return inspect_usage_err(CMD, "unknown option '%s'", a);
        }
    }
    if (saw_json && saw_diag)
        return inspect_usage_err(CMD, "--json and --diag exclude each other");
    /* Waiting silently on a terminal looks like a hang; "-" says it is meant. */
    if (!path && isatty(STDIN_FILENO))
        return inspect_usage_err(CMD, "no input: give a FILE, or '-' to read the terminal");

    if (inspect_read_input(CMD, path, KNIT_CBOR_MAX_INPUT + 4, &in, &n) != 0)
        return INSPECT_EXIT_ERROR;

    auto_kind = n >= 4 && (uint64_t)be32(in) + 4 == n ? KIND_FRAME : KIND_RAW;
    forced = kind != KIND_AUTO;
    if (!forced)
        kind = auto_kind;
    rc = INSPECT_EXIT_ERROR;
    if (kind == KIND_FRAME && n < 4) {
        inspect_err(CMD, "input too short for a frame's 4-byte length at byte offset %zu", n);
        goto done;
    }
    if (kind == KIND_FRAME && auto_kind != KIND_FRAME) {
        inspect_err(CMD, "frame length says %lu bytes but %zu follow at byte offset 0",
                    (unsigned long)be32(in), n - 4);
        goto done;
    }
    if (kind == KIND_FRAME && n == 4) {
        inspect_err(CMD, "frame holds no CBOR item at byte offset 4");
        goto done;
    }
    if (kind == KIND_RAW && n > KNIT_CBOR_MAX_INPUT) {
        inspect_err(CMD, "input is %zu bytes, more than the limit of %zu", n, KNIT_CBOR_MAX_INPUT);
        goto done;
    }
    skip = kind == KIND_FRAME ? 4 : 0;

    switch (knit_cbor_to_text(in + skip, n - skip, mode, &out, &outlen, &err_off, &what)) {
    case 0:
        break;
    case KNIT_ENOMEM:
        inspect_err(CMD, "out of memory");
        goto done;
    default:
        inspect_err(CMD, "%s at byte offset %zu", what, err_off + skip);
        /* Guessed raw, but it starts like a frame: most often a frame cut
        ** short, or several frames in one file. */
        if (kind == KIND_RAW && !forced && n >= 4 && in[0] <= 0x07)
            inspect_err(CMD,
                        "note: read as a frame it is cut short or has extra bytes: its "
                        "length prefix says %lu bytes, but %zu follow",
                        (unsigned long)be32(in), n - 4);
        goto done;
    }

    if (mode == KNIT_CBOR_DIAG) {
        if (kind == KIND_FRAME)
            snprintf(comment, sizeof comment,
                     "/ knit frame: 4-byte length, then %zu bytes of CBOR /\n", n - 4);
        else
            snprintf(comment, sizeof comment, "/ raw CBOR: %zu bytes /\n", n);
        if (inspect_write(CMD, comment, strlen(comment)) != 0)
            goto done;
    }
    out[outlen] = '\n'; /* the NUL's place; the buffer is not used as a string again */
    if (inspect_write(CMD, out, outlen + 1) == 0)
        rc = INSPECT_EXIT_OK;
done:
    knit__free(out);
    knit__free(in);
    return rc;
}
