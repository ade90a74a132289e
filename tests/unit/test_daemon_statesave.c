/* Unit tests of relay/daemon/statesave: a loop turn's saves and removals share ONE
 * fsync of queue/, done callbacks run only after it, and its failure fails them. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "test_util.h"
#include "queue/queue.h"
#include "relay/daemon/statesave.h"

/* fsync(2) interposed for the whole test binary (st_queue calls it through
 * core_fs_fsync): counts directory and file fsyncs, can fail directories. */
static atomic_int n_dir_fsync, n_file_fsync;
static atomic_bool fail_dir_fsync;

int fsync(int fd)
{
	struct stat st;

	if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		atomic_fetch_add(&n_dir_fsync, 1);
		if (atomic_load(&fail_dir_fsync)) {
			errno = EIO;
			return -1;
		}
	} else {
		atomic_fetch_add(&n_file_fsync, 1);
	}
	return (int)syscall(SYS_fsync, fd);
}

#define NMSG 5

struct fixture {
	char dir[64];
	struct queue *q;
	uv_loop_t loop;
	struct statesave *ss;
	char id[NMSG][QUEUE_ID_LEN + 1];
};

struct done_rec {
	struct fixture *f;
	int calls;
	int status;
	int err_no;
	int dir_fsyncs_seen;     /* directory fsyncs done when the callback ran */
	struct queue_envelope *chain_env;  /* submit this from the callback */
	struct done_rec *chain_rec;
};

static void on_done(void *arg, int status, int err_no)
{
	struct done_rec *r = arg;

	r->calls++;
	r->status = status;
	r->err_no = err_no;
	r->dir_fsyncs_seen = atomic_load(&n_dir_fsync);
	if (r->chain_env != NULL)
		assert_int_equal(statesave_save(r->f->ss, r->chain_env, on_done, r->chain_rec), 0);
}

static void make_env(struct queue_envelope *env)
{
	memset(env, 0, sizeof(*env));
	env->queued_at = 1700000000;
	snprintf(env->sender, sizeof(env->sender), "a@example.org");
	assert_int_equal(queue_envelope_add_rcpt(env, "b@example.net"), 0);
	assert_int_equal(queue_envelope_add_rcpt(env, "c@example.net"), 0);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct queue_envelope env;
	char err[256];
	int i;

	atomic_store(&fail_dir_fsync, false);
	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/stsrelay-statesave-XXXXXX");
	if (mkdtemp(f->dir) == NULL || queue_open(f->dir, true, -1, &f->q, err, sizeof(err)) < 0) {
		free(f);
		return -1;
	}
	make_env(&env);
	for (i = 0; i < NMSG; i++) {
		struct queue_writer *w = NULL;

		assert_int_equal(queue_writer_new(f->q, false, &w), 0);
		assert_int_equal(queue_writer_header(w, &env), 0);
		assert_int_equal(queue_writer_append(w, "x\r\n", 3), 0);
		assert_int_equal(queue_writer_commit(w), 0);
		snprintf(f->id[i], sizeof(f->id[i]), "%s", queue_writer_id(w));
		queue_writer_free(w);
	}
	queue_envelope_clear(&env);
	assert_int_equal(queue_sync_queue_dir(f->q), 0);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	assert_int_equal(statesave_new(&f->loop, f->q, &f->ss), 0);
	atomic_store(&n_dir_fsync, 0);
	atomic_store(&n_file_fsync, 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	statesave_close(f->ss);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&f->loop), 0);
	queue_close(f->q);
	test_rmtree(f->dir);
	free(f);
	return 0;
}

/* A loaded envelope of message i with recipient 1 deferred. */
static void deferred_env(struct fixture *f, int i, struct queue_envelope *env)
{
	char err[256];

	memset(env, 0, sizeof(*env));
	assert_int_equal(queue_load(f->q, f->id[i], env, err, sizeof(err)), 0);
	env->rcpts[1].status = QUEUE_DEFERRED;
	env->rcpts[1].attempts = 1;
	env->rcpts[1].next_try = 1700003600;
}

static void test_one_dir_fsync_per_batch(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope env[NMSG - 1], got;
	struct done_rec rec[NMSG];
	char err[256];
	int i;

	memset(rec, 0, sizeof(rec));
	for (i = 0; i < NMSG - 1; i++) {
		deferred_env(f, i, &env[i]);
		assert_int_equal(statesave_save(f->ss, &env[i], on_done, &rec[i]), 0);
		queue_envelope_clear(&env[i]);  /* statesave copied it */
	}
	assert_int_equal(statesave_remove(f->ss, f->id[NMSG - 1], on_done, &rec[NMSG - 1]), 0);
	assert_int_equal(statesave_busy(f->ss), NMSG);
	for (i = 0; i < NMSG; i++)
		assert_int_equal(rec[i].calls, 0);  /* never from inside the submit */
	uv_run(&f->loop, UV_RUN_DEFAULT);

	assert_int_equal(statesave_busy(f->ss), 0);
	assert_int_equal(atomic_load(&n_dir_fsync), 1);
	assert_int_equal(atomic_load(&n_file_fsync), NMSG - 1);
	for (i = 0; i < NMSG; i++) {
		assert_int_equal(rec[i].calls, 1);
		assert_int_equal(rec[i].status, 0);
		assert_int_equal(rec[i].dir_fsyncs_seen, 1);  /* reported after the fsync */
	}
	for (i = 0; i < NMSG - 1; i++) {
		assert_int_equal(queue_load(f->q, f->id[i], &got, err, sizeof(err)), 0);
		assert_int_equal(got.rcpts[1].status, QUEUE_DEFERRED);
		assert_int_equal(got.rcpts[1].next_try, 1700003600);
		queue_envelope_clear(&got);
	}
	assert_int_equal(queue_load(f->q, f->id[NMSG - 1], &got, err, sizeof(err)), -1);
	queue_envelope_clear(&got);
}

/* A failed directory fsync fails every request of the batch: nothing is
 * reported durable that a crash could still undo. */
static void test_dir_fsync_failure_fails_batch(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope env;
	struct done_rec rec[3];

	memset(rec, 0, sizeof(rec));
	atomic_store(&fail_dir_fsync, true);
	deferred_env(f, 0, &env);
	assert_int_equal(statesave_save(f->ss, &env, on_done, &rec[0]), 0);
	queue_envelope_clear(&env);
	assert_int_equal(statesave_remove(f->ss, f->id[1], on_done, &rec[1]), 0);
	assert_int_equal(statesave_remove(f->ss, "0000000000AA", on_done, &rec[2]), 0);
	uv_run(&f->loop, UV_RUN_DEFAULT);

	assert_int_equal(atomic_load(&n_dir_fsync), 1);
	assert_int_equal(rec[0].calls, 1);
	assert_int_equal(rec[0].status, -1);
	assert_int_equal(rec[0].err_no, EIO);
	assert_int_equal(rec[1].calls, 1);
	assert_int_equal(rec[1].status, -1);
	assert_int_equal(rec[1].err_no, EIO);
	assert_int_equal(rec[2].calls, 1);   /* failed on its own: keeps its reason */
	assert_int_equal(rec[2].status, -1);
	assert_int_equal(rec[2].err_no, ENOENT);
}

/* A request made while a batch runs goes into the next batch, with its own
 * directory fsync. */
static void test_request_during_batch(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope env0, env1;
	struct done_rec rec[2];

	memset(rec, 0, sizeof(rec));
	deferred_env(f, 0, &env0);
	deferred_env(f, 1, &env1);
	rec[0].f = f;
	rec[0].chain_env = &env1;
	rec[0].chain_rec = &rec[1];
	assert_int_equal(statesave_save(f->ss, &env0, on_done, &rec[0]), 0);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	queue_envelope_clear(&env0);
	queue_envelope_clear(&env1);

	assert_int_equal(rec[0].calls, 1);
	assert_int_equal(rec[0].status, 0);
	assert_int_equal(rec[0].dir_fsyncs_seen, 1);
	assert_int_equal(rec[1].calls, 1);
	assert_int_equal(rec[1].status, 0);
	assert_int_equal(rec[1].dir_fsyncs_seen, 2);
	assert_int_equal(atomic_load(&n_dir_fsync), 2);
	assert_int_equal(atomic_load(&n_file_fsync), 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_one_dir_fsync_per_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_dir_fsync_failure_fails_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_request_during_batch, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
