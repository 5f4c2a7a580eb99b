/*
** test_inspect_cli.c: runs the built sync-inspect as a child process on
** files in a fresh temporary directory and checks its exit status, standard
** output and standard error, which are its interface to scripts.
**
** The program's path comes from the build (SYNC_INSPECT_PATH).  Every child
** is bounded in time and killed if it hangs; the directory and its files are
** removed at exit, also when a CHECK fails.
*/
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "inspect_util.h"

#ifndef SYNC_INSPECT_PATH
#error "SYNC_INSPECT_PATH must name the sync-inspect binary"
#endif

#define MAX_FILES 32

static char dir[64];               /* the temporary directory, "" before setup */
static char files[MAX_FILES][128]; /* files made in it, removed at exit */
static int nfiles;

static void cleanup(void)
{
    int i;
    for (i = 0; i < nfiles; i++)
        unlink(files[i]);
    if (dir[0])
        rmdir(dir);
}

static void setup(void)
{
    if (dir[0])
        return;
    strcpy(dir, "/tmp/knit-inspect-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    atexit(cleanup);
}

/* A path in the temporary directory, registered for removal. */
static const char *tmp_path(const char *name)
{
    setup();
    CHECK(nfiles < MAX_FILES);
    snprintf(files[nfiles], sizeof files[nfiles], "%s/%s", dir, name);
    return files[nfiles++];
}

static const char *write_file(const char *name, const void *p, size_t n)
{
    const char *path = tmp_path(name);
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(fwrite(p, 1, n, f) == n);
    CHECK(fclose(f) == 0);
    return path;
}

static const char *write_hex(const char *name, const char *hex)
{
    uint8_t b[512];
    size_t n = 0;
    unsigned v;
    for (; *hex; hex += 2) {
        CHECK(sscanf(hex, "%2x", &v) == 1 && n < sizeof b);
        b[n++] = (uint8_t)v;
    }
    return write_file(name, b, n);
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *s;
    long n;
    CHECK(f != NULL);
    CHECK(fseek(f, 0, SEEK_END) == 0);
    n = ftell(f);
    CHECK(n >= 0 && fseek(f, 0, SEEK_SET) == 0);
    s = malloc((size_t)n + 1);
    CHECK(s != NULL);
    CHECK(fread(s, 1, (size_t)n, f) == (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

typedef struct run_s {
    int status; /* exit status, or -1 if it did not exit normally */
    char *out;  /* everything written to stdout */
    char *err;  /* everything written to stderr */
} run_t;

/* What the child reads on stdin: a file, or a pipe fed `n` bytes of `data`
** and then `zeros` zero bytes by a helper process (NULL/0: /dev/null). */
typedef struct feed_s {
    const char *file;    /* file to read, or NULL */
    const uint8_t *data; /* bytes to send through a pipe first */
    size_t n;            /* their count */
    unsigned long zeros; /* zero bytes to send after them */
} feed_t;

static void pipe_writer(int fd, const feed_t *in)
{
    static const uint8_t zero[65536];
    unsigned long left = in->zeros;
    signal(SIGPIPE, SIG_DFL); /* the reader may stop early, by design */
    if (in->n && write(fd, in->data, in->n) != (ssize_t)in->n)
        _exit(1);
    while (left) {
        size_t k = left < sizeof zero ? (size_t)left : sizeof zero;
        ssize_t w = write(fd, zero, k);
        if (w <= 0)
            _exit(1);
        left -= (unsigned long)w;
    }
    _exit(0);
}

/* Waits up to 20 s for pid; kills it if it takes longer. */
static int wait_bounded(pid_t pid)
{
    struct timespec tick = {0, 10000000};
    int st = 0, waited;
    for (waited = 0; waited < 2000; waited++) {
        pid_t w = waitpid(pid, &st, WNOHANG);
        CHECK(w >= 0);
        if (w == pid)
            return st;
        nanosleep(&tick, NULL);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    fprintf(stderr, "child %ld did not finish in 20 s\n", (long)pid);
    CHECK(0);
    return st;
}

/* Runs sync-inspect with args (NULL-terminated, program name excluded). */
static run_t run_fed(const feed_t *in, const char *const *args)
{
    static const char *out_path, *err_path;
    const char *argv[16];
    run_t r;
    pid_t pid, writer = -1;
    int i, st, p[2] = {-1, -1};
    if (!out_path) {
        out_path = tmp_path("stdout");
        err_path = tmp_path("stderr");
    }
    argv[0] = "sync-inspect";
    for (i = 0; args[i]; i++) {
        CHECK(i < 14);
        argv[i + 1] = args[i];
    }
    argv[i + 1] = NULL;
    fflush(NULL);
    if (in && !in->file) {
        CHECK(pipe(p) == 0);
        writer = fork();
        CHECK(writer >= 0);
        if (writer == 0) {
            close(p[0]);
            pipe_writer(p[1], in);
        }
        close(p[1]);
    }
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int fi = p[0] >= 0 ? p[0] : open(in && in->file ? in->file : "/dev/null", O_RDONLY);
        int fo = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int fe = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fi < 0 || fo < 0 || fe < 0 || dup2(fi, 0) < 0 || dup2(fo, 1) < 0 || dup2(fe, 2) < 0)
            _exit(127);
        execv(SYNC_INSPECT_PATH, (char *const *)argv);
        _exit(127);
    }
    if (p[0] >= 0)
        close(p[0]);
    st = wait_bounded(pid);
    if (writer > 0)
        wait_bounded(writer);
    r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    CHECK(r.status != 127);
    r.out = slurp(out_path);
    r.err = slurp(err_path);
    return r;
}

/* The same, stdin from `file` (NULL: /dev/null). */
static run_t run(const char *file, const char *const *args)
{
    feed_t in = {file, NULL, 0, 0};
    return run_fed(file ? &in : NULL, args);
}

static void done(run_t *r)
{
    free(r->out);
    free(r->err);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static void global_help(void)
{
    run_t r = run(NULL, ARGS("--help"));
    CHECK_EQ_INT(r.status, 0);
    CHECK(strstr(r.out, "usage: sync-inspect COMMAND") != NULL);
    CHECK(strstr(r.out, "  decode ") != NULL);
    CHECK(strstr(r.out, "Exit status:") != NULL);
    CHECK_STR(r.err, "");
    done(&r);
    r = run(NULL, ARGS("-h"));
    CHECK_EQ_INT(r.status, 0);
    done(&r);
}

static void command_help(void)
{
    run_t r = run(NULL, ARGS("decode", "--help"));
    CHECK_EQ_INT(r.status, 0);
    CHECK(strstr(r.out, "usage: sync-inspect decode") != NULL);
    CHECK(strstr(r.out, "--diag") != NULL);
    CHECK_STR(r.err, "");
    done(&r);
    r = run(NULL, ARGS("help", "decode"));
    CHECK_EQ_INT(r.status, 0);
    CHECK(strstr(r.out, "usage: sync-inspect decode") != NULL);
    done(&r);
    r = run(NULL, ARGS("help", "nosuch"));
    CHECK_EQ_INT(r.status, 2);
    done(&r);
}

static void version(void)
{
    run_t r = run(NULL, ARGS("--version"));
    CHECK_EQ_INT(r.status, 0);
    CHECK(strncmp(r.out, "sync-inspect ", 13) == 0);
    CHECK(r.out[13] >= '0' && r.out[13] <= '9');
    CHECK(r.out[strlen(r.out) - 1] == '\n');
    done(&r);
}

static void no_args(void)
{
    run_t r = run(NULL, (const char *const[]){NULL});
    CHECK_EQ_INT(r.status, 2);
    CHECK(strstr(r.err, "usage: sync-inspect") != NULL);
    CHECK_STR(r.out, "");
    done(&r);
}

static void unknown_command(void)
{
    run_t r = run(NULL, ARGS("frobnicate"));
    CHECK_EQ_INT(r.status, 2);
    CHECK(strncmp(r.err, "sync-inspect: unknown command 'frobnicate'\n", 43) == 0);
    CHECK_STR(r.out, "");
    done(&r);
    r = run(NULL, ARGS("--frobnicate"));
    CHECK_EQ_INT(r.status, 2);
    done(&r);
}

static void unknown_option(void)
{
    run_t r = run(NULL, ARGS("decode", "--bogus", "-"));
    CHECK_EQ_INT(r.status, 2);
    CHECK(strncmp(r.err, "sync-inspect: decode: unknown option '--bogus'\n", 47) == 0);
    CHECK(strstr(r.err, "sync-inspect decode --help") != NULL);
    done(&r);
    r = run(NULL, ARGS("decode", "a", "b"));
    CHECK_EQ_INT(r.status, 2);
    done(&r);
}

static void missing_file(void)
{
    const char *p = tmp_path("does-not-exist");
    char want[256];
    run_t r = run(NULL, ARGS("decode", p));
    CHECK_EQ_INT(r.status, 2);
    snprintf(want, sizeof want, "sync-inspect: decode: cannot open '%s': %s\n", p,
             strerror(ENOENT));
    CHECK_STR(r.err, want);
    CHECK_STR(r.out, "");
    done(&r);
    /* A directory opens but cannot be read. */
    setup();
    r = run(NULL, ARGS("decode", dir));
    CHECK_EQ_INT(r.status, 2);
    CHECK(strstr(r.err, "cannot read") != NULL);
    done(&r);
}

static void decode_raw_json(void)
{
    const char *p = write_hex("raw.cbor", "a26161016162820203");
    run_t r = run(NULL, ARGS("decode", p));
    CHECK_EQ_INT(r.status, 0);
    CHECK_STR(r.out, "{\"a\": 1, \"b\": [2, 3]}\n");
    CHECK_STR(r.err, "");
    done(&r);
    r = run(NULL, ARGS("decode", "--json", p));
    CHECK_STR(r.out, "{\"a\": 1, \"b\": [2, 3]}\n");
    done(&r);
    /* Numbers stay exact; bytes and tags take their documented JSON form. */
    p = write_hex("big.cbor", "831bffffffffffffffff3bffffffffffffffffc24101");
    r = run(NULL, ARGS("decode", p));
    CHECK_EQ_INT(r.status, 0);
    CHECK_STR(r.out, "[18446744073709551615, -18446744073709551616, "
                     "{\"tag\": 2, \"value\": {\"bytes\": \"01\"}}]\n");
    done(&r);
}

static void decode_frame_diag(void)
{
    const char *p = write_hex("frame.bin", "00000009a26161016162820203");
    run_t r = run(NULL, ARGS("decode", "--diag", p));
    CHECK_EQ_INT(r.status, 0);
    CHECK_STR(r.out, "/ knit frame: 4-byte length, then 9 bytes of CBOR /\n"
                     "{\"a\": 1, \"b\": [2, 3]}\n");
    CHECK_STR(r.err, "");
    done(&r);
    p = write_hex("indef.cbor", "9f01f93e00fb3ff8000000000000ff");
    r = run(NULL, ARGS("decode", p, "--diag"));
    CHECK_EQ_INT(r.status, 0);
    CHECK_STR(r.out, "/ raw CBOR: 15 bytes /\n[_ 1, 1.5, 1.5_3]\n");
    done(&r);
}

static void decode_stdin(void)
{
    static const uint8_t frame[] = {0, 0, 0, 3, 0x82, 0x01, 0x02};
    feed_t piped = {NULL, frame, sizeof frame, 0};
    const char *p = write_hex("stdin.bin", "00000003820102");
    run_t r;
    r = run(p, ARGS("decode", "-"));
    CHECK_EQ_INT(r.status, 0);
    CHECK_STR(r.out, "[1, 2]\n");
    done(&r);
    r = run(p, ARGS("decode")); /* stdin is a file here, not a terminal */
    CHECK_EQ_INT(r.status, 0);
    CHECK_STR(r.out, "[1, 2]\n");
    done(&r);
    r = run_fed(&piped, ARGS("decode", "-"));
    CHECK_EQ_INT(r.status, 0);
    CHECK_STR(r.out, "[1, 2]\n");
    done(&r);
    /* "--" ends the options: a file named like one can still be given. */
    r = run(p, ARGS("decode", "--diag", "--", "-"));
    CHECK_EQ_INT(r.status, 0);
    CHECK_STR(r.out, "/ knit frame: 4-byte length, then 3 bytes of CBOR /\n[1, 2]\n");
    done(&r);
}

static void decode_malformed(void)
{
    static const struct {
        const char *hex, *err;
    } v[] = {
        {"8301024401", "string runs past the end of input at byte offset 3"},
        {"1c", "reserved additional information value (28-30) at byte offset 0"},
        {"5f6161ff", "indefinite-length string chunk of the wrong type at byte offset 1"},
        {"8201ff", "break outside an indefinite-length item at byte offset 2"},
        {"8262c080", "invalid UTF-8 in text string at byte offset 2"},
        {"820102ff", "trailing bytes after the item at byte offset 3"},
        {"5b8000000000000000", "string length exceeds the 64 MiB input limit at byte offset 0"},
    };
    char want[256];
    size_t i;
    for (i = 0; i < sizeof v / sizeof v[0]; i++) {
        char name[16];
        const char *p;
        run_t r;
        snprintf(name, sizeof name, "bad%zu.cbor", i);
        p = write_hex(name, v[i].hex);
        r = run(NULL, ARGS("decode", p));
        CHECK_EQ_INT(r.status, 2);
        snprintf(want, sizeof want, "sync-inspect: decode: %s\n", v[i].err);
        CHECK_STR(r.err, want);
        CHECK_STR(r.out, "");
        done(&r);
    }
}

/* Offsets inside a frame count the 4-byte prefix. */
static void decode_frame_errors(void)
{
    const char *p = write_hex("f1.bin", "0000000382011c");
    run_t r = run(NULL, ARGS("decode", p));
    CHECK_EQ_INT(r.status, 2);
    CHECK_STR(r.err, "sync-inspect: decode: reserved additional information value (28-30) "
                     "at byte offset 6\n");
    done(&r);
    p = write_hex("f2.bin", "00000000");
    r = run(NULL, ARGS("decode", p));
    CHECK_EQ_INT(r.status, 2);
    CHECK_STR(r.err, "sync-inspect: decode: frame holds no CBOR item at byte offset 4\n");
    done(&r);
    /* Two frames back to back are neither a frame nor raw CBOR. */
    p = write_hex("f3.bin", "00000001010000000102");
    r = run(NULL, ARGS("decode", p));
    CHECK_EQ_INT(r.status, 2);
    CHECK_STR(r.err, "sync-inspect: decode: trailing bytes after the item at byte offset 1\n"
                     "sync-inspect: decode: note: read as a frame it is cut short or has "
                     "extra bytes: its length prefix says 1 bytes, but 6 follow\n");
    done(&r);
}

static void decode_forced_kind(void)
{
    const char *raw = write_hex("r.cbor", "820102");
    const char *frame = write_hex("f.bin", "00000001f5");
    run_t r = run(NULL, ARGS("decode", "--frame", raw));
    CHECK_EQ_INT(r.status, 2);
    CHECK_STR(r.err, "sync-inspect: decode: input too short for a frame's 4-byte length at "
                     "byte offset 3\n");
    done(&r);
    raw = write_hex("r2.cbor", "8401020304");
    r = run(NULL, ARGS("decode", "--frame", raw));
    CHECK_EQ_INT(r.status, 2);
    CHECK(strstr(r.err, "frame length says 2214658563 bytes but 1 follow at byte offset 0") !=
          NULL);
    done(&r);
    r = run(NULL, ARGS("decode", "--frame", frame));
    CHECK_EQ_INT(r.status, 0);
    CHECK_STR(r.out, "true\n");
    done(&r);
    /* Told it is raw, it says nothing about frames. */
    r = run(NULL, ARGS("decode", "--raw", frame));
    CHECK_EQ_INT(r.status, 2);
    CHECK_STR(r.err, "sync-inspect: decode: trailing bytes after the item at byte offset 1\n");
    done(&r);
    r = run(NULL, ARGS("decode", "--raw", "--frame", frame));
    CHECK_EQ_INT(r.status, 2);
    done(&r);
}

static void decode_conflicting_options(void)
{
    run_t r = run(NULL, ARGS("decode", "--json", "--diag", "-"));
    CHECK_EQ_INT(r.status, 2);
    CHECK(strstr(r.err, "--json and --diag exclude each other") != NULL);
    CHECK_STR(r.out, "");
    done(&r);
}

static void decode_empty(void)
{
    const char *p = write_file("empty", "", 0);
    run_t r = run(NULL, ARGS("decode", p));
    CHECK_EQ_INT(r.status, 2);
    CHECK_STR(r.err, "sync-inspect: decode: empty input at byte offset 0\n");
    done(&r);
}

/* A file over the limit is refused from its size, without reading it. */
static void decode_oversize(void)
{
    const char *p = tmp_path("huge");
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    run_t r;
    CHECK(fd >= 0);
    CHECK(ftruncate(fd, (off_t)(64 << 20) + 5) == 0); /* sparse: costs no disk */
    close(fd);
    r = run(NULL, ARGS("decode", p));
    CHECK_EQ_INT(r.status, 2);
    CHECK(strstr(r.err, "more than the limit") != NULL);
    done(&r);
    /* Through a pipe, where no size is known ahead, the limit holds too. */
    {
        feed_t zeros = {NULL, NULL, 0, (64UL << 20) + 5};
        r = run_fed(&zeros, ARGS("decode", "-"));
    }
    CHECK_EQ_INT(r.status, 2);
    CHECK(strstr(r.err, "more than the limit") != NULL);
    done(&r);
}

/* The shared escaper other commands use for text from replicas. */
static void json_string(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    CHECK(f != NULL);
    inspect_json_string(f, "a\"b\\c\n\x01\x7f", 8);
    fputc(' ', f);
    inspect_json_string(f, "\xc3\xbc\xff\xc3", 4); /* valid, invalid, cut short */
    fputc(' ', f);
    inspect_json_string(f, "\xe2\x80\xae\xed\xa0\x80", 6); /* bidi override; surrogate */
    fputc(' ', f);
    inspect_json_string(f, "", 0);
    CHECK(fclose(f) == 0);
    CHECK_STR(buf, "\"a\\\"b\\\\c\\n\\u0001\\u007f\" \"\xc3\xbc\\ufffd\\ufffd\" "
                   "\"\\u202e\\ufffd\\ufffd\\ufffd\" \"\"");
    free(buf);
}

KNIT_TESTS(T(global_help), T(command_help), T(version), T(no_args), T(unknown_command),
           T(unknown_option), T(missing_file), T(decode_raw_json), T(decode_frame_diag),
           T(decode_stdin), T(decode_malformed), T(decode_frame_errors), T(decode_forced_kind),
           T(decode_conflicting_options), T(decode_empty), T(decode_oversize), T(json_string))
