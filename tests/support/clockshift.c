/*
 * Preload library for tests: shifts a process's wall clock by a number of seconds read from
 * a file, so a test can step a server's clock (an NTP step, a VM resumed from a snapshot)
 * while it runs. The monotonic clock is left alone, as a real step leaves it.
 *
 *   PB_CLOCK_OFFSET_FILE=/tmp/offset LD_PRELOAD=./libclockshift.so redis-server ...
 *   echo +20 > /tmp/offset      # the server's clock is now 20 s ahead
 *
 * The file holds a signed number of seconds (fractions allowed; a trailing "s" is ignored)
 * and is read again at most every 10 ms. Debian's libfaketime does the same job but cannot
 * start inside a jemalloc-linked redis-server (its initialisation recurses through
 * jemalloc's clock_gettime calls), so this library never allocates and reads the real
 * clock with raw system calls.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long long cached_offset_ns;
static long long next_read_ns;

static long long real_ns(clockid_t clock) {
    struct timespec ts;
    syscall(SYS_clock_gettime, clock, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long long offset_ns(void) {
    long long now = real_ns(CLOCK_MONOTONIC);
    if (now < next_read_ns) {
        return cached_offset_ns;
    }
    next_read_ns = now + 10000000LL;
    const char *path = getenv("PB_CLOCK_OFFSET_FILE");
    if (path == NULL) {
        return cached_offset_ns = 0;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return cached_offset_ns;
    }
    char buf[64];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) {
        return cached_offset_ns;
    }
    buf[n] = '\0';
    char *end = NULL;
    double seconds = strtod(buf, &end);
    if (end != buf) {
        cached_offset_ns = (long long)(seconds * 1e9);
    }
    return cached_offset_ns;
}

static int shifted(clockid_t clock) {
    return clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE;
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    long rc = syscall(SYS_clock_gettime, clock, ts);
    if (rc == 0 && shifted(clock)) {
        long long ns = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec + offset_ns();
        ts->tv_sec = ns / 1000000000LL;
        ts->tv_nsec = ns % 1000000000LL;
    }
    return (int)rc;
}

int gettimeofday(struct timeval *tv, void *tz) {
    (void)tz;
    long long ns = real_ns(CLOCK_REALTIME) + offset_ns();
    tv->tv_sec = ns / 1000000000LL;
    tv->tv_usec = (ns % 1000000000LL) / 1000;
    return 0;
}

time_t time(time_t *out) {
    time_t now = (time_t)((real_ns(CLOCK_REALTIME) + offset_ns()) / 1000000000LL);
    if (out != NULL) {
        *out = now;
    }
    return now;
}
