/*
 * hcbench: null-hypercall round trips from Linux user space, for `cargo xtask bench --vs-xen`.
 *
 * Issues xen_version(XENVER_version) through /dev/xen/privcmd's hypercall ioctl N times (default 20000) and
 * prints one line:
 *   KEEL-BENCH: hypercall via=privcmd calls=N ns=<ns per call> version=<major>.<minor>
 * then times N getppid() system calls the same way (the ioctl's own system-call cost, for reference):
 *   KEEL-BENCH: syscall calls=N ns=<ns per call>
 * or, when privcmd refuses:
 *   KEEL-BENCH: hypercall failed: <why>
 * Built by xtask with `gcc -static -O2`; the layout and request number below follow Linux's uapi privcmd.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* One hypercall: its number and up to five arguments, all 64-bit (48 bytes). */
struct hypercall_args {
    uint64_t op;
    uint64_t arg[5];
};

/* _IOC(_IOC_NONE, 'P', 0, 48): direction 0 in bits 30-31, size in bits 16-29, type in 8-15, number in 0-7. */
#define PRIVCMD_HYPERCALL_IOCTL ((unsigned long)((sizeof(struct hypercall_args) << 16) | ('P' << 8) | 0))

#define HYPERCALL_XEN_VERSION 17
#define XENVER_VERSION 0

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    long calls = argc > 1 ? atol(argv[1]) : 20000;
    if (calls <= 0)
        calls = 20000;

    int fd = open("/dev/xen/privcmd", O_RDWR);
    if (fd < 0)
        fd = open("/proc/xen/privcmd", O_RDWR);
    if (fd < 0) {
        printf("KEEL-BENCH: hypercall failed: cannot open /dev/xen/privcmd or /proc/xen/privcmd: %s\n",
               strerror(errno));
        return 1;
    }

    struct hypercall_args h;
    memset(&h, 0, sizeof(h));
    h.op = HYPERCALL_XEN_VERSION;
    h.arg[0] = XENVER_VERSION;
    long version = ioctl(fd, PRIVCMD_HYPERCALL_IOCTL, &h);
    if (version < 0) {
        printf("KEEL-BENCH: hypercall failed: ioctl(IOCTL_PRIVCMD_HYPERCALL, xen_version): %s\n", strerror(errno));
        return 1;
    }

    uint64_t start = now_ns();
    for (long i = 0; i < calls; i++) {
        if (ioctl(fd, PRIVCMD_HYPERCALL_IOCTL, &h) < 0) {
            printf("KEEL-BENCH: hypercall failed: call %ld: %s\n", i, strerror(errno));
            return 1;
        }
    }
    uint64_t elapsed = now_ns() - start;
    printf("KEEL-BENCH: hypercall via=privcmd calls=%ld ns=%llu version=%ld.%ld\n", calls,
           (unsigned long long)(elapsed / (uint64_t)calls), version >> 16, version & 0xffff);

    start = now_ns();
    for (long i = 0; i < calls; i++)
        syscall(SYS_getppid);
    elapsed = now_ns() - start;
    printf("KEEL-BENCH: syscall calls=%ld ns=%llu\n", calls, (unsigned long long)(elapsed / (uint64_t)calls));
    fflush(stdout);
    close(fd);
    return 0;
}
