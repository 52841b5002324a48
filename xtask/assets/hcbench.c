/*
 * hcbench: null-hypercall round trips from Linux user space, for `cargo xtask bench --vs-xen`.
 *
 * Two ways, N calls each (default 20000), one line per way:
 * - privcmd: xen_version(XENVER_version) through /dev/xen/privcmd's hypercall ioctl.
 *     KEEL-BENCH: hypercall via=privcmd calls=N ns=<ns per call> version=<major>.<minor>
 *   or, when privcmd refuses (Linux 6.1 blocks it in a domain without a target, domUs included):
 *     KEEL-BENCH: hypercall failed: <why>
 * - sysfs (kernel side): each read of /sys/hypervisor/version/major makes the kernel issue
 *   xen_version(XENVER_version); the same read of /sys/hypervisor/type issues none. ns is the difference,
 *   raw and base the two reads' own costs:
 *     KEEL-BENCH: hypercall via=sysfs calls=N ns=<major - type> raw=<major> base=<type>
 * then N getppid() system calls, the bare system-call cost:
 *     KEEL-BENCH: syscall calls=N ns=<ns per call>
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

/* privcmd's hypercall ioctl, `calls` times; 0, or -1 when privcmd refuses. */
static int via_privcmd(long calls)
{
    int fd = open("/dev/xen/privcmd", O_RDWR);
    if (fd < 0)
        fd = open("/proc/xen/privcmd", O_RDWR);
    if (fd < 0) {
        printf("KEEL-BENCH: hypercall failed: cannot open /dev/xen/privcmd or /proc/xen/privcmd: %s\n",
               strerror(errno));
        return -1;
    }
    struct hypercall_args h;
    memset(&h, 0, sizeof(h));
    h.op = HYPERCALL_XEN_VERSION;
    h.arg[0] = XENVER_VERSION;
    long version = ioctl(fd, PRIVCMD_HYPERCALL_IOCTL, &h);
    if (version < 0) {
        printf("KEEL-BENCH: hypercall failed: ioctl(IOCTL_PRIVCMD_HYPERCALL, xen_version): %s\n", strerror(errno));
        close(fd);
        return -1;
    }
    uint64_t start = now_ns();
    for (long i = 0; i < calls; i++) {
        if (ioctl(fd, PRIVCMD_HYPERCALL_IOCTL, &h) < 0) {
            printf("KEEL-BENCH: hypercall failed: call %ld: %s\n", i, strerror(errno));
            close(fd);
            return -1;
        }
    }
    uint64_t elapsed = now_ns() - start;
    printf("KEEL-BENCH: hypercall via=privcmd calls=%ld ns=%llu version=%ld.%ld\n", calls,
           (unsigned long long)(elapsed / (uint64_t)calls), version >> 16, version & 0xffff);
    close(fd);
    return 0;
}

/* ns per pread() of the start of `path`, or 0 when it cannot be read. */
static uint64_t read_cost(const char *path, long calls)
{
    char buf[64];
    int fd = open(path, O_RDONLY);
    if (fd < 0 || pread(fd, buf, sizeof(buf), 0) <= 0) {
        printf("KEEL-BENCH: hypercall failed: cannot read %s: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return 0;
    }
    uint64_t start = now_ns();
    for (long i = 0; i < calls; i++) {
        if (pread(fd, buf, sizeof(buf), 0) <= 0) {
            close(fd);
            return 0;
        }
    }
    uint64_t elapsed = now_ns() - start;
    close(fd);
    return elapsed / (uint64_t)calls;
}

int main(int argc, char **argv)
{
    long calls = argc > 1 ? atol(argv[1]) : 20000;
    if (calls <= 0)
        calls = 20000;

    via_privcmd(calls);

    uint64_t raw = read_cost("/sys/hypervisor/version/major", calls);
    uint64_t base = read_cost("/sys/hypervisor/type", calls);
    if (raw && base)
        printf("KEEL-BENCH: hypercall via=sysfs calls=%ld ns=%lld raw=%llu base=%llu\n", calls,
               (long long)raw - (long long)base, (unsigned long long)raw, (unsigned long long)base);

    uint64_t start = now_ns();
    for (long i = 0; i < calls; i++)
        syscall(SYS_getppid);
    uint64_t elapsed = now_ns() - start;
    printf("KEEL-BENCH: syscall calls=%ld ns=%llu\n", calls, (unsigned long long)(elapsed / (uint64_t)calls));
    fflush(stdout);
    return 0;
}
