/* LD_PRELOAD library for the slow-disk test (test_integrity.py): every read
 * of message data under $SLOWREAD_DIR waits $SLOWREAD_MS first. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* A slow disk is a fault no real peer produces, so it is made here: reads
 * at a nonzero offset (message data; a queue file's header and state are
 * read from offset 0) of a file whose path starts with $SLOWREAD_DIR. */
static void maybe_wait(int fd, off_t off)
{
	const char *dir = getenv("SLOWREAD_DIR"), *ms = getenv("SLOWREAD_MS");
	char link[64], path[4096];
	struct timespec ts;
	ssize_t n;
	long v;
	int e = errno;

	if (off <= 0 || dir == NULL || ms == NULL)
		return;
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n < 0)
		goto out;
	path[n] = '\0';
	if (strncmp(path, dir, strlen(dir)) != 0)
		goto out;
	v = strtol(ms, NULL, 10);
	ts.tv_sec = v / 1000;
	ts.tv_nsec = (v % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
out:
	errno = e;
}

ssize_t pread64(int fd, void *buf, size_t len, off_t off)
{
	maybe_wait(fd, off);
	return (ssize_t)syscall(SYS_pread64, fd, buf, len, off);
}

ssize_t pread(int fd, void *buf, size_t len, off_t off)
{
	return pread64(fd, buf, len, off);
}

ssize_t read(int fd, void *buf, size_t len)
{
	off_t off = (off_t)syscall(SYS_lseek, fd, 0, SEEK_CUR); /* -1 for a socket */

	maybe_wait(fd, off);
	return (ssize_t)syscall(SYS_read, fd, buf, len);
}
