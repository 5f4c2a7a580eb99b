/*
** faultvfs.h: an SQLite VFS that fails on request, for tests.
**
** It wraps the default VFS and passes every call through, except that when
** armed it makes the Nth write, truncate or sync from now fail: writes with
** SQLITE_FULL (a full disk), truncates and syncs with an I/O error.  Tests
** register it as the default VFS (fault_vfs_install), so every connection in
** the process, knit's and plain ones, goes through it; faults are armed
** only around the call under test.
*/
#ifndef KNIT_TEST_FAULTVFS_H
#define KNIT_TEST_FAULTVFS_H

#include <sqlite3.h>
#include <string.h>

typedef struct fault_file_s {
    sqlite3_file base;  /* our methods */
    sqlite3_file *real; /* the wrapped file, allocated right after us */
} fault_file_t;

static sqlite3_vfs *fault_real; /* the wrapped VFS */
static long fault_countdown;    /* 0 = off; 1 = the next write/sync fails */
static long fault_count;        /* writes, truncates and syncs seen since arming */
static int fault_sticky;        /* keep failing once failed (a disk that stays full) */

static int fault_hit(void)
{
    fault_count++;
    if (fault_countdown == 0)
        return 0;
    if (fault_countdown > 1) {
        fault_countdown--;
        return 0;
    }
    if (!fault_sticky)
        fault_countdown = 0;
    return 1;
}

/* Arms the nth write/truncate/sync from now (0 disarms); returns how many
** happened since the last call. */
static inline long fault_arm(long nth, int sticky)
{
    long n = fault_count;
    fault_countdown = nth;
    fault_sticky = sticky;
    fault_count = 0;
    return n;
}

#define REAL(f) (((fault_file_t *)(f))->real)

static int ff_close(sqlite3_file *f)
{
    return REAL(f)->pMethods->xClose(REAL(f));
}
static int ff_read(sqlite3_file *f, void *p, int n, sqlite3_int64 off)
{
    return REAL(f)->pMethods->xRead(REAL(f), p, n, off);
}
static int ff_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 off)
{
    return fault_hit() ? SQLITE_FULL : REAL(f)->pMethods->xWrite(REAL(f), p, n, off);
}
static int ff_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    return fault_hit() ? SQLITE_IOERR_TRUNCATE : REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int ff_sync(sqlite3_file *f, int flags)
{
    return fault_hit() ? SQLITE_IOERR_FSYNC : REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int ff_size(sqlite3_file *f, sqlite3_int64 *size)
{
    return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int ff_lock(sqlite3_file *f, int l)
{
    return REAL(f)->pMethods->xLock(REAL(f), l);
}
static int ff_unlock(sqlite3_file *f, int l)
{
    return REAL(f)->pMethods->xUnlock(REAL(f), l);
}
static int ff_reserved(sqlite3_file *f, int *out)
{
    return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int ff_fcntl(sqlite3_file *f, int op, void *arg)
{
    return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int ff_sector(sqlite3_file *f)
{
    return REAL(f)->pMethods->xSectorSize(REAL(f));
}
static int ff_dev(sqlite3_file *f)
{
    return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int ff_shmmap(sqlite3_file *f, int pg, int sz, int ext, void volatile **pp)
{
    return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, ext, pp);
}
static int ff_shmlock(sqlite3_file *f, int off, int n, int flags)
{
    return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}
static void ff_shmbarrier(sqlite3_file *f)
{
    REAL(f)->pMethods->xShmBarrier(REAL(f));
}
static int ff_shmunmap(sqlite3_file *f, int del)
{
    return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}

/* Memory-mapped I/O is left out (version 2 methods), so every page write
** goes through ff_write. */
static const sqlite3_io_methods fault_io = {
    2,          ff_close,      ff_read,     ff_write, ff_truncate, ff_sync, ff_size,
    ff_lock,    ff_unlock,     ff_reserved, ff_fcntl, ff_sector,   ff_dev,  ff_shmmap,
    ff_shmlock, ff_shmbarrier, ff_shmunmap, NULL,     NULL,
};

static int fv_open(sqlite3_vfs *v, const char *name, sqlite3_file *f, int flags, int *out)
{
    fault_file_t *ff = (fault_file_t *)f;
    ff->real = (sqlite3_file *)(ff + 1);
    int rc = fault_real->xOpen(fault_real, name, ff->real, flags, out);
    ff->base.pMethods = rc == SQLITE_OK && ff->real->pMethods ? &fault_io : NULL;
    (void)v;
    return rc;
}
static int fv_delete(sqlite3_vfs *v, const char *name, int sync)
{
    (void)v;
    return fault_real->xDelete(fault_real, name, sync);
}
static int fv_access(sqlite3_vfs *v, const char *name, int flags, int *out)
{
    (void)v;
    return fault_real->xAccess(fault_real, name, flags, out);
}
static int fv_full(sqlite3_vfs *v, const char *name, int n, char *out)
{
    (void)v;
    return fault_real->xFullPathname(fault_real, name, n, out);
}
static int fv_random(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return fault_real->xRandomness(fault_real, n, out);
}
static int fv_sleep(sqlite3_vfs *v, int us)
{
    (void)v;
    return fault_real->xSleep(fault_real, us);
}
static int fv_time(sqlite3_vfs *v, double *out)
{
    (void)v;
    return fault_real->xCurrentTime(fault_real, out);
}
static int fv_lasterr(sqlite3_vfs *v, int n, char *out)
{
    (void)v;
    return fault_real->xGetLastError(fault_real, n, out);
}
static int fv_time64(sqlite3_vfs *v, sqlite3_int64 *out)
{
    (void)v;
    return fault_real->xCurrentTimeInt64(fault_real, out);
}

static sqlite3_vfs fault_vfs;

/* Makes the fault VFS the process default. */
static inline void fault_vfs_install(void)
{
    if (fault_real)
        return;
    fault_real = sqlite3_vfs_find(NULL);
    fault_vfs.iVersion = 2;
    fault_vfs.szOsFile = (int)sizeof(fault_file_t) + fault_real->szOsFile;
    fault_vfs.mxPathname = fault_real->mxPathname;
    fault_vfs.zName = "knit-fault";
    fault_vfs.xOpen = fv_open;
    fault_vfs.xDelete = fv_delete;
    fault_vfs.xAccess = fv_access;
    fault_vfs.xFullPathname = fv_full;
    fault_vfs.xRandomness = fv_random;
    fault_vfs.xSleep = fv_sleep;
    fault_vfs.xCurrentTime = fv_time;
    fault_vfs.xGetLastError = fv_lasterr;
    fault_vfs.xCurrentTimeInt64 = fv_time64;
    sqlite3_vfs_register(&fault_vfs, 1);
}

#endif
