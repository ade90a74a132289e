/* Unit tests of relay/daemon/readahead: the bytes come out whole and in order
 * for any read size, no read runs on the loop thread, and a slow disk leaves
 * the loop free. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include "test_util.h"
#include "relay/daemon/readahead.h"

/* pread(2) interposed for the whole test binary (libuv's uv_fs_read calls
 * it in its workers): counts the calls, the ones made on the loop's thread
 * (the test's main thread) and the largest request; sleeps slow_ms first
 * (a slow disk). */
static atomic_int n_pread, n_pread_main, max_pread_len, slow_ms;
static pid_t main_tid;

static ssize_t pread_hook(int fd, void *buf, size_t len, off_t off)
{
	int ms = atomic_load(&slow_ms);

	atomic_fetch_add(&n_pread, 1);
	if ((pid_t)syscall(SYS_gettid) == main_tid)
		atomic_fetch_add(&n_pread_main, 1);
	if ((int)len > atomic_load(&max_pread_len))
		atomic_store(&max_pread_len, (int)len);
	if (ms > 0)
		usleep((useconds_t)ms * 1000);
	return (ssize_t)syscall(SYS_pread64, fd, buf, len, off);
}

ssize_t pread(int fd, void *buf, size_t len, off_t off)
{
	return pread_hook(fd, buf, len, off);
}

/* With _FILE_OFFSET_BITS=64 (some pkg-config cflags set it) glibc already
 * names pread() pread64 at the symbol level: one definition covers both. */
#if !defined(_FILE_OFFSET_BITS) || _FILE_OFFSET_BITS != 64
ssize_t pread64(int fd, void *buf, size_t len, off_t off)
{
	return pread_hook(fd, buf, len, off);
}
#endif

#define FILE_MAX (600 * 1024)

struct fixture {
	char dir[64];
	char path[128];
	uv_loop_t loop;
	unsigned char *data; /* what the file holds */
	size_t len;
};

/* The reader: pulls with a changing cap, like the SMTP client would. */
struct reader {
	struct fixture *f;
	struct readahead *ra;
	unsigned char *got;
	size_t n;
	size_t cap_i;
	int laters; /* READAHEAD_LATER answers */
	int readies;
	int end;   /* 0 seen */
	int error; /* -1 seen */
	int ticks_at_end;
};

static int ticks;

static void on_tick(uv_timer_t *t)
{
	(void)t;
	ticks++;
}

static void pull(struct reader *r)
{
	static const size_t caps[] = { 8192, 1, 3, 8192, 100, 65536, 70000, 4095 };
	int rounds;

	for (rounds = 0; rounds < 100000; rounds++) {
		size_t cap = caps[r->cap_i++ % (sizeof(caps) / sizeof(caps[0]))];
		ssize_t n;

		assert_true(r->n + cap <= FILE_MAX + 70000);
		n = readahead_read(r->ra, (char *)r->got + r->n, cap);
		if (n == READAHEAD_LATER) {
			r->laters++;
			return;
		}
		if (n == 0) {
			r->end = 1;
			r->ticks_at_end = ticks;
			return;
		}
		if (n < 0) {
			r->error = 1;
			return;
		}
		assert_true((size_t)n <= cap);
		r->n += (size_t)n;
	}
	fail_msg("reader did not finish in 100000 rounds");
}

static void on_ready(void *arg)
{
	struct reader *r = arg;

	r->readies++;
	pull(r);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	size_t i;
	int fd;

	if (f == NULL)
		return -1;
	main_tid = (pid_t)syscall(SYS_gettid);
	atomic_store(&slow_ms, 0);
	snprintf(f->dir, sizeof(f->dir), "/tmp/stsrelay-readahead-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/msg", f->dir);
	f->len = FILE_MAX;
	f->data = malloc(f->len);
	if (f->data == NULL)
		return -1;
	srandom(12);
	for (i = 0; i < f->len; i++)
		f->data[i] = (unsigned char)random();
	fd = open(f->path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	if (fd < 0 || write(fd, f->data, f->len) != (ssize_t)f->len || close(fd) != 0)
		return -1;
	if (uv_loop_init(&f->loop) != 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	test_rmtree(f->dir);
	free(f->data);
	free(f);
	return 0;
}

/* Reads [off, off+size) of the file through a readahead, the descriptor
 * closed at once; the loop runs until the reader is done. */
static void read_range(struct fixture *f, uint64_t off, uint64_t size, struct reader *r)
{
	int fd = open(f->path, O_RDONLY);

	memset(r, 0, sizeof(*r));
	r->f = f;
	r->got = malloc(FILE_MAX + 70000);
	assert_non_null(r->got);
	assert_true(fd >= 0);
	assert_int_equal(readahead_new(&f->loop, fd, off, size, on_ready, r, &r->ra), 0);
	assert_int_equal(close(fd), 0);
	pull(r);
	assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
}

/* Every size from 0 to past two chunks, at offsets: the bytes are the
 * file's, then 0; the first pull finds nothing (nothing is read on the
 * caller's thread), and no pread ever runs on it. */
static void test_bytes_in_order(void **state)
{
	static const uint64_t sizes[] = { 0,     1,     2,      8191,   8192,   65535,
					  65536, 65537, 131072, 131073, 300000, FILE_MAX - 4096 };
	struct fixture *f = *state;
	size_t i;

	atomic_store(&n_pread, 0);
	atomic_store(&n_pread_main, 0);
	atomic_store(&max_pread_len, 0);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		uint64_t off = i % 2 ? 4096 : 333;
		struct reader r;

		read_range(f, off, sizes[i], &r);
		assert_int_equal(r.end, 1);
		assert_int_equal(r.error, 0);
		assert_int_equal(r.n, sizes[i]);
		assert_memory_equal(r.got, f->data + off, r.n);
		if (sizes[i] > 0)
			assert_true(r.laters >= 1);
		assert_int_equal(r.readies, r.laters);
		readahead_free(r.ra);
		free(r.got);
	}
	assert_true(atomic_load(&n_pread) >= 12);
	assert_int_equal(atomic_load(&n_pread_main), 0);
	assert_true(atomic_load(&max_pread_len) <= READAHEAD_CHUNK);
}

/* A file shorter than the size asked for (truncated under a delivery):
 * what is there, then -1, and -1 again. */
static void test_short_file(void **state)
{
	struct fixture *f = *state;
	struct reader r;

	read_range(f, FILE_MAX - 1000, 5000, &r);
	assert_int_equal(r.error, 1);
	assert_int_equal(r.end, 0);
	assert_int_equal(r.n, 1000);
	assert_memory_equal(r.got, f->data + FILE_MAX - 1000, 1000);
	assert_int_equal(readahead_read(r.ra, (char *)r.got, 10), -1);
	readahead_free(r.ra);
	free(r.got);
}

/* Freed while a read is in flight: ready() never runs, the memory and the
 * descriptor go when the read returns (ASan and the fd count tell). */
static void test_free_in_flight(void **state)
{
	struct fixture *f = *state;
	struct reader r;
	int fd = open(f->path, O_RDONLY), probe, dup_fd;

	memset(&r, 0, sizeof(r));
	assert_true(fd >= 0);
	dup_fd = dup(fd); /* the descriptor the readahead's dup will get */
	assert_true(dup_fd >= 0);
	close(dup_fd);
	atomic_store(&slow_ms, 50);
	assert_int_equal(readahead_new(&f->loop, fd, 0, 200000, on_ready, &r, &r.ra), 0);
	assert_int_equal(readahead_read(r.ra, (char *)&probe, 1), READAHEAD_LATER);
	readahead_free(r.ra);
	assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
	atomic_store(&slow_ms, 0);
	assert_int_equal(r.readies, 0);
	/* its dup is closed: that descriptor is free again */
	probe = dup(fd);
	assert_int_equal(probe, dup_fd);
	close(probe);
	close(fd);
}

/* A slow disk (every pread takes 100 ms): a 10 ms timer on the same loop
 * keeps ticking while 300 KB are read (5 reads: 0.5 s), so the loop is
 * never held by a read. */
static void test_slow_disk_loop_free(void **state)
{
	struct fixture *f = *state;
	uv_timer_t t;
	struct reader r;
	int fd = open(f->path, O_RDONLY);

	assert_true(fd >= 0);
	memset(&r, 0, sizeof(r));
	r.f = f;
	r.got = malloc(FILE_MAX + 70000);
	assert_non_null(r.got);
	ticks = 0;
	atomic_store(&slow_ms, 100);
	atomic_store(&n_pread_main, 0);
	assert_int_equal(uv_timer_init(&f->loop, &t), 0);
	assert_int_equal(uv_timer_start(&t, on_tick, 10, 10), 0);
	assert_int_equal(readahead_new(&f->loop, fd, 0, 300000, on_ready, &r, &r.ra), 0);
	close(fd);
	pull(&r);
	while (!r.end && !r.error)
		assert_true(uv_run(&f->loop, UV_RUN_ONCE) != 0);
	atomic_store(&slow_ms, 0);
	uv_close((uv_handle_t *)&t, NULL);
	assert_int_equal(r.n, 300000);
	assert_memory_equal(r.got, f->data, r.n);
	/* 0.5 s of reads: at 10 ms a tick, well over 20 unless the loop blocked */
	assert_true(r.ticks_at_end >= 20);
	assert_int_equal(atomic_load(&n_pread_main), 0);
	readahead_free(r.ra);
	free(r.got);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_bytes_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_short_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_free_in_flight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slow_disk_loop_free, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
