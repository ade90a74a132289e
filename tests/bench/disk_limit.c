/* Benchmark helper for tests/bench/run: how many durable commits per second the
 * spool's file system gives, one at a time and in batches (the "disk limit" row). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/*
 * disk_limit DIR [COUNT [SIZE [SECONDS]]]
 *
 * Works in a fresh directory DIR/disk-limit-PID (tmp/ and queue/ inside it,
 * like the spool), removed at the end. Each mode runs COUNT commits
 * (default 400) or SECONDS seconds (default 5), whichever ends first:
 *
 *  commit    one at a time, what a lone SMTP session costs: create a file in
 *            tmp/, write SIZE bytes, fsync, close, rename into queue/, fsync
 *            queue/ (stsrelay's commit of one message).
 *  append    one file, SIZE bytes appended and fdatasync'd per record (a
 *            write-ahead log; the cheapest durable record there is).
 *  batchN    group commit as stsrelay does it today: N files written, each
 *            fsync'd in turn, renamed, then ONE fsync of queue/ (N = 16, 64).
 *  batchNwb  the same, but writeback of every file of the batch is started
 *            first (sync_file_range WRITE), so the device sees the batch's
 *            writes together before the fsyncs wait for them.
 *
 * Output: one JSON object on stdout (per-second rates); exit 0 when every
 * mode ran, 1 on an I/O error (the message is on stderr).
 */

#define MAX_SIZE (16 * 1024 * 1024)
#define MAX_BATCH 64

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int write_all(int fd, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

struct bench {
	int tmp_fd, queue_fd;
	const char *buf;
	size_t size;
	long count;
	double seconds;
	unsigned long seq;      /* file names are unique over the whole run */
};

/* Creates tmp/NAME with the payload; returns the fd (not yet fsync'd). */
static int make_file(struct bench *b, char *name, size_t namelen)
{
	int fd;

	snprintf(name, namelen, "f%08lu", b->seq++);
	fd = openat(b->tmp_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		perror("disk_limit: create");
		return -1;
	}
	if (write_all(fd, b->buf, b->size) != 0) {
		perror("disk_limit: write");
		close(fd);
		return -1;
	}
	return fd;
}

static int commit_file(struct bench *b, int fd, const char *name)
{
	if (fsync(fd) != 0 || close(fd) != 0) {
		perror("disk_limit: fsync");
		return -1;
	}
	if (renameat(b->tmp_fd, name, b->queue_fd, name) != 0) {
		perror("disk_limit: rename");
		return -1;
	}
	return 0;
}

/* Files per second for batches of `batch` (1 = one at a time); wb: start
 * writeback of the whole batch before the first fsync. -1 on error. */
static double run_commits(struct bench *b, int batch, int wb)
{
	char names[MAX_BATCH][24];
	int fds[MAX_BATCH];
	long done = 0;
	double t0 = now_s(), t1 = t0;
	int i, n;

	while (done < b->count && t1 - t0 < b->seconds) {
		for (n = 0; n < batch; n++) {
			fds[n] = make_file(b, names[n], sizeof(names[n]));
			if (fds[n] < 0)
				goto fail;
		}
		if (wb) {
			for (i = 0; i < n; i++)
				if (sync_file_range(fds[i], 0, 0, SYNC_FILE_RANGE_WRITE) != 0) {
					perror("disk_limit: sync_file_range");
					goto fail;
				}
		}
		for (i = 0; i < n; i++) {
			int fd = fds[i];

			fds[i] = -1;
			if (commit_file(b, fd, names[i]) != 0) {
				n = i + 1;
				goto fail_after;
			}
		}
		if (fsync(b->queue_fd) != 0) {
			perror("disk_limit: fsync of the directory");
			return -1;
		}
		done += n;
		t1 = now_s();
	}
	return (double)done / (t1 - t0);
fail:
	for (i = 0; i < n; i++)
		close(fds[i]);
	return -1;
fail_after:
	for (i = n; i < batch; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	return -1;
}

static double run_append(struct bench *b)
{
	long done = 0;
	double t0 = now_s(), t1 = t0;
	int fd = openat(b->tmp_fd, "log", O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);

	if (fd < 0) {
		perror("disk_limit: create log");
		return -1;
	}
	while (done < b->count && t1 - t0 < b->seconds) {
		if (write_all(fd, b->buf, b->size) != 0 || fdatasync(fd) != 0) {
			perror("disk_limit: append");
			close(fd);
			return -1;
		}
		done++;
		t1 = now_s();
	}
	close(fd);
	if (unlinkat(b->tmp_fd, "log", 0) != 0)
		perror("disk_limit: unlink log");
	return (double)done / (t1 - t0);
}

/* Removes the files f00000000 .. f(seq-1) from dirfd: each is in tmp/ or
 * queue/ (or gone after an error), so ENOENT is expected. */
static void remove_files(int dirfd, unsigned long seq)
{
	char name[24];
	unsigned long i;

	for (i = 0; i < seq; i++) {
		snprintf(name, sizeof(name), "f%08lu", i);
		if (unlinkat(dirfd, name, 0) != 0 && errno != ENOENT)
			perror("disk_limit: unlink");
	}
}

static int parse_num(const char *s, long lo, long hi, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	struct bench b;
	char root[4096], tpath[4200], qpath[4200];
	char *buf = NULL;
	long count = 400, size = 1024, secs = 5;
	double commit, append, b16, b16wb, b64, b64wb;
	int rc = 1, made = 0;

	memset(&b, 0, sizeof(b));
	b.tmp_fd = b.queue_fd = -1;
	if (argc < 2 || argc > 5 ||
	    (argc > 2 && parse_num(argv[2], 1, 1000000, &count) != 0) ||
	    (argc > 3 && parse_num(argv[3], 1, MAX_SIZE, &size) != 0) ||
	    (argc > 4 && parse_num(argv[4], 1, 600, &secs) != 0)) {
		fprintf(stderr, "usage: disk_limit DIR [COUNT [SIZE [SECONDS]]]\n");
		return 2;
	}
	snprintf(root, sizeof(root), "%s/disk-limit-%ld", argv[1], (long)getpid());
	snprintf(tpath, sizeof(tpath), "%s/tmp", root);
	snprintf(qpath, sizeof(qpath), "%s/queue", root);
	if (mkdir(root, 0700) != 0) {
		perror("disk_limit: mkdir");
		return 1;
	}
	made = 1;
	if (mkdir(tpath, 0700) != 0 || mkdir(qpath, 0700) != 0) {
		perror("disk_limit: mkdir");
		goto out;
	}
	b.tmp_fd = open(tpath, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	b.queue_fd = open(qpath, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	buf = malloc((size_t)size);
	if (b.tmp_fd < 0 || b.queue_fd < 0 || buf == NULL) {
		perror("disk_limit: open");
		goto out;
	}
	memset(buf, 'x', (size_t)size);
	b.buf = buf;
	b.size = (size_t)size;
	b.count = count;
	b.seconds = (double)secs;

	commit = run_commits(&b, 1, 0);
	append = run_append(&b);
	b16 = run_commits(&b, 16, 0);
	b16wb = run_commits(&b, 16, 1);
	b64 = run_commits(&b, 64, 0);
	b64wb = run_commits(&b, 64, 1);
	if (commit < 0 || append < 0 || b16 < 0 || b16wb < 0 || b64 < 0 || b64wb < 0)
		goto out;
	printf("{\"size\": %ld, \"count\": %ld, \"commit_per_s\": %.1f, "
	       "\"append_fdatasync_per_s\": %.1f, \"batch16_per_s\": %.1f, "
	       "\"batch16_wb_per_s\": %.1f, \"batch64_per_s\": %.1f, "
	       "\"batch64_wb_per_s\": %.1f}\n",
	       size, count, commit, append, b16, b16wb, b64, b64wb);
	rc = 0;
out:
	if (b.queue_fd >= 0) {
		remove_files(b.queue_fd, b.seq);
		close(b.queue_fd);
	}
	if (b.tmp_fd >= 0) {
		remove_files(b.tmp_fd, b.seq);
		close(b.tmp_fd);
	}
	if (made && (rmdir(tpath) != 0 || rmdir(qpath) != 0 || rmdir(root) != 0) && rc == 0)
		fprintf(stderr, "disk_limit: %s left behind: %s\n", root, strerror(errno));
	free(buf);
	return rc;
}
