/* An SD card's slow syncs, for benchmarks: every fsync and fdatasync of the
 * process waits EDGEFN_FSYNC_DELAY_US microseconds (default 5000) before it
 * runs. Loaded with LD_PRELOAD by with-fsync-delay.sh; written for this
 * project. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

static void wait_a_card(void) {
    const char *text = getenv("EDGEFN_FSYNC_DELAY_US");
    long us = text ? atol(text) : 5000;
    struct timespec t = { us / 1000000, (us % 1000000) * 1000 };
    while (nanosleep(&t, &t) != 0) {
    }
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    wait_a_card();
    return real(fd);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    wait_a_card();
    return real(fd);
}
