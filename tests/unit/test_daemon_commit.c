/* Unit tests of the commit rule in the relay's commit paths: the group commit
 * (relay/daemon/commit.c) and the bounce (relay/daemon/bounce.c) report success exactly
 * for the messages that are in queue/, whatever fails after the rename; and
 * of the new writers commit.c makes ahead in the thread pool. */
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
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "test_util.h"
#include "queue/queue.h"
#include "relay/daemon/bounce.h"
#include "relay/daemon/commit.h"

/* Faults injected by interposing the system calls for this binary (the
 * commit runs in a libuv worker, hence atomics). close(2) really closes
 * before it reports EIO, as Linux does on a write-back error. */
static atomic_int fail_file_close, fail_dir_fsync, n_failed_closes, fail_create;
static char fail_unlink_id[QUEUE_ID_LEN + 1]; /* set before the worker runs */

int close(int fd)
{
	struct stat st;
	int is_reg = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
	int rc = (int)syscall(SYS_close, fd);

	if (rc == 0 && is_reg && atomic_load(&fail_file_close)) {
		atomic_fetch_add(&n_failed_closes, 1);
		errno = EIO;
		return -1;
	}
	return rc;
}

int fsync(int fd)
{
	struct stat st;

	if (atomic_load(&fail_dir_fsync) && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		errno = EIO;
		return -1;
	}
	return (int)syscall(SYS_fsync, fd);
}

/* fail_create: no new file can be made (a full inode table, say). */
static int open_at(int dirfd, const char *path, int flags, mode_t mode)
{
	if (((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) && atomic_load(&fail_create)) {
		errno = ENOSPC;
		return -1;
	}
	return (int)syscall(SYS_openat, dirfd, path, flags, mode);
}

/* The symbol itself: the queue library calls openat, while this file may
 * be compiled with _FILE_OFFSET_BITS=64 (pkg-config cflags), where the name
 * openat would define openat64. */
int test_openat(int dirfd, const char *path, int flags, ...) __asm__("openat");
int test_openat(int dirfd, const char *path, int flags, ...)
{
	mode_t mode = 0;
	va_list ap;

	if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) {
		va_start(ap, flags);
		mode = (mode_t)va_arg(ap, int);
		va_end(ap);
	}
	return open_at(dirfd, path, flags, mode);
}


int unlinkat(int dirfd, const char *path, int flags)
{
	if (fail_unlink_id[0] != '\0' && strcmp(path, fail_unlink_id) == 0) {
		errno = EIO;
		return -1;
	}
	return (int)syscall(SYS_unlinkat, dirfd, path, flags);
}

#define NW 3

struct fixture {
	char dir[64];
	struct queue *q;
	uv_loop_t loop;
	struct commit *c;
	struct queue_writer *w[NW];
	int calls[NW], status[NW], err_no[NW];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct queue_writer *w = NULL;
	char err[256];

	atomic_store(&fail_file_close, 0);
	atomic_store(&fail_dir_fsync, 0);
	atomic_store(&n_failed_closes, 0);
	atomic_store(&fail_create, 0);
	fail_unlink_id[0] = '\0';
	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/stsrelay-rcommit-XXXXXX");
	if (mkdtemp(f->dir) == NULL || queue_open(f->dir, true, -1, &f->q, err, sizeof(err)) < 0)
		return -1;
	/* the first writer probes whether files can be nameless (a close the
	 * tests must not count) */
	if (queue_writer_new(f->q, false, &w) != 0)
		return -1;
	queue_writer_free(w);
	if (uv_loop_init(&f->loop) != 0 || commit_new(&f->loop, f->q, &f->c) != 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	int i;

	atomic_store(&fail_file_close, 0);
	atomic_store(&fail_dir_fsync, 0);
	fail_unlink_id[0] = '\0';
	commit_close(f->c);
	assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	for (i = 0; i < NW; i++)
		queue_writer_free(f->w[i]);
	queue_close(f->q);
	test_rmtree(f->dir);
	free(f);
	return 0;
}

static void make_env(struct queue_envelope *env)
{
	memset(env, 0, sizeof(*env));
	env->queued_at = 1700000000;
	snprintf(env->sender, sizeof(env->sender), "a@example.org");
	assert_int_equal(queue_envelope_add_rcpt(env, "b@example.net"), 0);
}

static struct fixture *done_fixture;

static void on_done(void *arg, int status, int err_no)
{
	int i = (int)(intptr_t)arg;

	done_fixture->calls[i]++;
	done_fixture->status[i] = status;
	done_fixture->err_no[i] = err_no;
}

/* NW messages submitted in one loop turn: one batch, one worker job. */
static void run_batch(struct fixture *f)
{
	struct queue_envelope env;
	int i;

	make_env(&env);
	done_fixture = f;
	for (i = 0; i < NW; i++) {
		assert_int_equal(queue_writer_new(f->q, false, &f->w[i]), 0);
		assert_int_equal(queue_writer_header(f->w[i], &env), 0);
		assert_int_equal(queue_writer_append(f->w[i], "x\r\n", 3), 0);
	}
	queue_envelope_clear(&env);
	for (i = 0; i < NW; i++)
		assert_int_equal(commit_submit(f->c, f->w[i], on_done, (void *)(intptr_t)i), 0);
	assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
}

static bool in_queue(struct fixture *f, const char *id)
{
	struct queue_envelope env;
	char err[256];
	bool ok = queue_load(f->q, id, &env, err, sizeof(err)) == 0;

	queue_envelope_clear(&env);
	return ok;
}

/* The rule, for every message of the batch: told 0 <=> in queue/. */
static void assert_rule(struct fixture *f)
{
	int i;

	for (i = 0; i < NW; i++) {
		assert_int_equal(f->calls[i], 1);
		assert_int_equal(f->status[i] == 0, in_queue(f, queue_writer_id(f->w[i])));
	}
}

static void test_batch_ok(void **state)
{
	struct fixture *f = *state;
	int i;

	run_batch(f);
	assert_rule(f);
	for (i = 0; i < NW; i++)
		assert_int_equal(f->status[i], 0);
}

/* close(2) fails after each rename: all committed, all told 0. */
static void test_batch_close_error_is_committed(void **state)
{
	struct fixture *f = *state;
	int i;

	atomic_store(&fail_file_close, 1);
	run_batch(f);
	atomic_store(&fail_file_close, 0);
	assert_int_equal(atomic_load(&n_failed_closes), NW);
	assert_rule(f);
	for (i = 0; i < NW; i++)
		assert_int_equal(f->status[i], 0);
}

/* The fsync of queue/ fails: every message is taken back out and told
 * -1 with the errno; the one that cannot be taken out stays and is told 0. */
static void test_batch_dir_fsync_failure(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope env;
	int i;

	make_env(&env);
	atomic_store(&fail_dir_fsync, 1);
	done_fixture = f;
	for (i = 0; i < NW; i++) {
		assert_int_equal(queue_writer_new(f->q, false, &f->w[i]), 0);
		assert_int_equal(queue_writer_header(f->w[i], &env), 0);
		assert_int_equal(queue_writer_append(f->w[i], "x\r\n", 3), 0);
		assert_int_equal(commit_submit(f->c, f->w[i], on_done, (void *)(intptr_t)i), 0);
	}
	queue_envelope_clear(&env);
	/* the id is final unless taken at commit, which cannot happen here */
	snprintf(fail_unlink_id, sizeof(fail_unlink_id), "%s", queue_writer_id(f->w[1]));
	assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
	atomic_store(&fail_dir_fsync, 0);
	fail_unlink_id[0] = '\0';
	assert_rule(f);
	assert_int_equal(f->status[0], -1);
	assert_int_equal(f->err_no[0], EIO);
	assert_int_equal(f->status[1], 0);
	assert_int_equal(f->status[2], -1);
}

/* A bounce whose queue fsync fails is reported failed and leaves no file;
 * one that succeeds is in queue/ under the id it reports. */
static void test_bounce_commit_rule(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope orig;
	struct queue_writer *w = NULL;
	struct smtp_dsn_rcpt r = { .address = "b@example.net",
				   .status = "5.1.1",
				   .diagnostic = "550 5.1.1 no such user" };
	char new_id[QUEUE_ID_LEN + 1] = "";
	char(*ids)[QUEUE_ID_LEN + 1] = NULL;
	size_t n;

	make_env(&orig);
	assert_int_equal(queue_writer_new(f->q, false, &w), 0);
	assert_int_equal(queue_writer_header(w, &orig), 0);
	assert_int_equal(queue_writer_append(w, "Subject: x\r\n\r\nbody\r\n", 20), 0);
	assert_int_equal(queue_writer_commit_sync(w), 0);
	snprintf(orig.id, sizeof(orig.id), "%s", queue_writer_id(w));
	orig.size = 20;
	queue_writer_free(w);

	atomic_store(&fail_dir_fsync, 1);
	assert_int_equal(bounce_enqueue(f->q, "relay.test", &orig, &r, 1, new_id), -1);
	atomic_store(&fail_dir_fsync, 0);
	assert_int_equal(queue_scan(f->q, &ids, &n), 0);
	assert_int_equal(n, 1); /* the original only */
	assert_string_equal(ids[0], orig.id);
	free(ids);

	assert_int_equal(bounce_enqueue(f->q, "relay.test", &orig, &r, 1, new_id), 1);
	assert_true(in_queue(f, new_id));
	assert_int_equal(queue_scan(f->q, &ids, &n), 0);
	assert_int_equal(n, 2);
	free(ids);
	queue_envelope_clear(&orig);
}

/* ---- writers made ahead ---- */

#define NWAIT 3

struct waiter {
	struct commit_wait wt; /* first: the callback casts back */
	int calls, err_no, order;
	struct queue_writer *w;
};

static int arrivals;

static void on_ready(struct commit_wait *wt, struct queue_writer *w, int err_no)
{
	struct waiter *x = (struct waiter *)wt;

	x->calls++;
	x->w = w;
	x->err_no = err_no;
	x->order = arrivals++;
}

static int entries(const char *dir, const char *sub)
{
	char p[256];

	snprintf(p, sizeof(p), "%s/%s", dir, sub);
	return test_count_entries(p);
}

/* Nobody has taken a writer yet, so none is ready: each DATA waits and
 * gets its own, in arrival order, never inside the take; then spares are
 * there and a take is served at once. The files are nameless until their
 * commit names them in queue/. */
static void test_writers_made_ahead(void **state)
{
	struct fixture *f = *state;
	struct waiter x[NWAIT];
	struct queue_writer *w = NULL;
	struct queue_envelope env;
	int i;

	memset(x, 0, sizeof(x));
	arrivals = 0;
	for (i = 0; i < NWAIT; i++) {
		x[i].wt.ready = on_ready;
		assert_int_equal(commit_take_writer(f->c, &x[i].wt, &w), 1);
		assert_null(w);
		assert_int_equal(x[i].calls, 0);
	}
	assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
	for (i = 0; i < NWAIT; i++) {
		assert_int_equal(x[i].calls, 1);
		assert_int_equal(x[i].err_no, 0);
		assert_non_null(x[i].w);
		assert_int_equal(x[i].order, i);
	}
	assert_int_equal(entries(f->dir, "tmp"), 0);

	assert_int_equal(commit_take_writer(f->c, &x[0].wt, &w), 0);
	assert_non_null(w);
	make_env(&env);
	assert_int_equal(queue_writer_header(w, &env), 0);
	queue_envelope_clear(&env);
	f->w[0] = w;
	done_fixture = f;
	assert_int_equal(commit_submit(f->c, w, on_done, (void *)(intptr_t)0), 0);
	assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(f->status[0], 0);
	assert_true(in_queue(f, queue_writer_id(w)));
	assert_int_equal(entries(f->dir, "queue"), 1);
	for (i = 0; i < NWAIT; i++)
		queue_writer_free(x[i].w); /* uncommitted: nothing stays */
	assert_int_equal(entries(f->dir, "tmp"), 0);
	assert_int_equal(entries(f->dir, "queue"), 1);
}

/* A session that ends while it waits takes its wait back: it is never
 * called, and the one behind it is served. */
static void test_writer_wait_cancelled(void **state)
{
	struct fixture *f = *state;
	struct waiter x[2];
	struct queue_writer *w = NULL;

	memset(x, 0, sizeof(x));
	arrivals = 0;
	x[0].wt.ready = x[1].wt.ready = on_ready;
	assert_int_equal(commit_take_writer(f->c, &x[0].wt, &w), 1);
	assert_int_equal(commit_take_writer(f->c, &x[1].wt, &w), 1);
	commit_cancel_wait(f->c, &x[0].wt);
	commit_cancel_wait(f->c, &x[0].wt); /* twice: nothing */
	assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(x[0].calls, 0);
	assert_int_equal(x[1].calls, 1);
	assert_non_null(x[1].w);
	queue_writer_free(x[1].w);
}

/* No file can be made: every waiter hears why (the session answers 451),
 * and once files can be made again the next take gets one. */
static void test_writer_make_failure(void **state)
{
	struct fixture *f = *state;
	struct waiter x[2];
	struct queue_writer *w = NULL;

	memset(x, 0, sizeof(x));
	x[0].wt.ready = x[1].wt.ready = on_ready;
	atomic_store(&fail_create, 1);
	assert_int_equal(commit_take_writer(f->c, &x[0].wt, &w), 1);
	assert_int_equal(commit_take_writer(f->c, &x[1].wt, &w), 1);
	assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
	atomic_store(&fail_create, 0);
	assert_int_equal(x[0].calls, 1);
	assert_int_equal(x[1].calls, 1);
	assert_null(x[0].w);
	assert_int_equal(x[0].err_no, ENOSPC);
	assert_int_equal(x[1].err_no, ENOSPC);

	memset(x, 0, sizeof(x));
	x[0].wt.ready = on_ready;
	assert_int_equal(commit_take_writer(f->c, &x[0].wt, &w), 1);
	assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
	assert_non_null(x[0].w);
	queue_writer_free(x[0].w);
}

/* Closed while a job makes files: the job's files and the spares are freed
 * when it ends (ASan's leak check), nothing is left in tmp/. */
static void test_close_while_making(void **state)
{
	struct fixture *f = *state;
	struct waiter x;
	struct queue_writer *w = NULL;

	memset(&x, 0, sizeof(x));
	x.wt.ready = on_ready;
	assert_int_equal(commit_take_writer(f->c, &x.wt, &w), 1);
	commit_cancel_wait(f->c, &x.wt);
	/* teardown closes c now, with the job queued or running */
	(void)f;
	assert_int_equal(x.calls, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_batch_ok, setup, teardown),
		cmocka_unit_test_setup_teardown(test_batch_close_error_is_committed, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_batch_dir_fsync_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bounce_commit_rule, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writers_made_ahead, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_wait_cancelled, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_make_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_while_making, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
