/*
** pg_fixture.c: see pg_fixture.h.
*/
#include "pg_fixture.h"

#include <dirent.h>
#include <fcntl.h>
#include <glob.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pgfx_t *running; /* the server atexit stops */

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Spawns argv[0] (a path) as the server's user, output to log. */
static pid_t spawn(const char *const *argv, const char *log, uid_t uid, gid_t gid, const char *cwd)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        close(fd);
    }
    if (getuid() == 0 && (setgid(gid) != 0 || setuid(uid) != 0))
        _exit(126);
    if (chdir(cwd) != 0)
        _exit(126);
    setsid(); /* a test's SIGINT to its group does not reach the server */
    execv(argv[0], (char *const *)argv);
    _exit(127);
}

static void print_file(const char *path)
{
    char buf[4096];
    FILE *f = fopen(path, "r");
    size_t n;
    if (!f)
        return;
    n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    fprintf(stderr, "---- %s\n%s\n", path, buf);
}

static void at_exit(void)
{
    if (running)
        pgfx_stop(running);
}

/* Starts the postmaster on f's data directory; returns once it answers. */
static void serve(pgfx_t *f)
{
    char data[200], log[200];
    int st;
    snprintf(data, sizeof data, "%s/data", f->dir);
    snprintf(log, sizeof log, "%s/server.log", f->dir);
    {
        /* fsync stays on: the tests exercise the durable path as served. */
        const char *argv[] = {f->postgres,
                              "-D",
                              data,
                              "-k",
                              f->dir,
                              "-p",
                              "5432",
                              "-c",
                              "listen_addresses=",
                              "-c",
                              "max_connections=40",
                              "-c",
                              "shared_buffers=32MB",
                              NULL};
        f->pid = spawn(argv, log, f->uid, f->gid, f->dir);
    }
    for (int i = 0; i < 400; i++) {
        if (PQping(f->conninfo) == PQPING_OK)
            return;
        if (waitpid(f->pid, &st, WNOHANG) == f->pid) {
            f->pid = 0;
            break;
        }
        sleep_ms(50);
    }
    fprintf(stderr, "the PostgreSQL server did not start\n");
    print_file(log);
    exit(1);
}

/* Ends the postmaster (fast shutdown, SIGKILL after 5 s). */
static void halt(pgfx_t *f)
{
    int st, reaped = 0;
    if (f->pid <= 0)
        return;
    if (f->stopped)
        pgfx_signal_all(f, SIGCONT);
    kill(f->pid, SIGINT); /* fast shutdown */
    for (int i = 0; i < 100 && !(reaped = waitpid(f->pid, &st, WNOHANG) == f->pid); i++)
        sleep_ms(50);
    if (!reaped) {
        kill(f->pid, SIGKILL);
        waitpid(f->pid, &st, 0);
    }
    f->pid = 0;
}

void pgfx_start(pgfx_t *f) /* see pg_fixture.h */
{
    glob_t g;
    char bin[256], initdb[300], postgres[300], data[200], log[200];
    uid_t uid = getuid();
    gid_t gid = getgid();
    int st;

    memset(f, 0, sizeof *f);
    /* KNIT_PG_BINDIR: another installation's bin directory. */
    const char *pat = getenv("KNIT_PG_BINDIR") ? NULL : "/usr/lib/postgresql/*/bin/initdb";
    if (!pat) {
        snprintf(bin, sizeof bin, "%s/initdb", getenv("KNIT_PG_BINDIR"));
        pat = bin;
    }
    if (glob(pat, 0, NULL, &g) != 0 || g.gl_pathc == 0) {
        fprintf(stderr, "SKIP: no PostgreSQL server binaries (apt-get install postgresql)\n");
        exit(PGFX_SKIP);
    }
    snprintf(bin, sizeof bin, "%s", g.gl_pathv[g.gl_pathc - 1]);
    globfree(&g);
    *strrchr(bin, '/') = '\0';
    snprintf(initdb, sizeof initdb, "%s/initdb", bin);
    snprintf(postgres, sizeof postgres, "%s/postgres", bin);
    if (access(postgres, X_OK) != 0) {
        fprintf(stderr, "SKIP: %s is missing\n", postgres);
        exit(PGFX_SKIP);
    }
    if (uid == 0) {
        struct passwd *pw = getpwnam("nobody");
        if (!pw) {
            fprintf(stderr, "running as root and there is no user nobody to run postgres\n");
            exit(1);
        }
        uid = pw->pw_uid;
        gid = pw->pw_gid;
    }
    strcpy(f->dir, "/tmp/knit-pg-XXXXXX");
    if (!mkdtemp(f->dir) || chown(f->dir, uid, gid) != 0) {
        fprintf(stderr, "cannot make the server's directory\n");
        exit(1);
    }
    running = f;
    {
        static int registered;
        if (!registered++)
            atexit(at_exit);
    }
    snprintf(data, sizeof data, "%s/data", f->dir);
    snprintf(log, sizeof log, "%s/server.log", f->dir);
    {
        const char *argv[] = {initdb,  "-D", data,   "-U",         "knit",      "-A",
                              "trust", "-E", "UTF8", "--locale=C", "--no-sync", NULL};
        pid_t pid = spawn(argv, log, uid, gid, f->dir);
        if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "initdb failed\n");
            print_file(log);
            exit(1);
        }
    }
    snprintf(f->postgres, sizeof f->postgres, "%s", postgres);
    f->uid = uid;
    f->gid = gid;
    snprintf(f->conninfo, sizeof f->conninfo,
             "host=%s port=5432 user=knit dbname=postgres connect_timeout=5", f->dir);
    snprintf(f->uri, sizeof f->uri, "postgresql://knit@/postgres?host=%s&port=5432", f->dir);
    serve(f);
}

void pgfx_stop(pgfx_t *f) /* see pg_fixture.h */
{
    char cmd[200];
    halt(f);
    if (f->dir[0]) {
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", f->dir);
        f->dir[0] = '\0';
    }
    if (running == f)
        running = NULL;
}

void pgfx_restart(pgfx_t *f, unsigned down_ms) /* see pg_fixture.h */
{
    halt(f);
    sleep_ms(down_ms);
    serve(f);
}

/* The parent pid of pid, from /proc/pid/stat (-1 if gone). */
static pid_t parent_of(pid_t pid)
{
    char path[64], buf[512], *p;
    FILE *fp;
    size_t n;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (!(fp = fopen(path, "r")))
        return -1;
    n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = '\0';
    /* "pid (comm) state ppid ...": comm may hold spaces and parentheses. */
    if (!(p = strrchr(buf, ')')))
        return -1;
    int ppid;
    char state;
    if (sscanf(p + 1, " %c %d", &state, &ppid) != 2)
        return -1;
    return (pid_t)ppid;
}

int pgfx_signal_all(pgfx_t *f, int sig) /* see pg_fixture.h */
{
    DIR *d;
    struct dirent *e;
    int n = 0;
    if (f->pid <= 0)
        return 0;
    /* The children first, so none runs on while its postmaster is stopped
    ** (and, for SIGCONT, the postmaster first would not matter). */
    if ((d = opendir("/proc")) != NULL) {
        while ((e = readdir(d)) != NULL) {
            char *end;
            long pid = strtol(e->d_name, &end, 10);
            if (*end || pid <= 0 || parent_of((pid_t)pid) != f->pid)
                continue;
            if (kill((pid_t)pid, sig) == 0)
                n++;
        }
        closedir(d);
    }
    if (kill(f->pid, sig) == 0)
        n++;
    if (sig == SIGSTOP)
        f->stopped = 1;
    else if (sig == SIGCONT)
        f->stopped = 0;
    return n;
}
