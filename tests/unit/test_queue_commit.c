/* Unit tests of the commit rule (queue/queue.h): a message is reported
 * committed exactly when its file is in queue/, whatever fails after the rename. */
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
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "test_util.h"
#include "queue/queue.h"

/*
 * Faults no real peer produces on demand, injected by interposing the
 * system calls for this test binary (st_queue calls them directly). Each
 * really does its work first where Linux does too: close(2) releases the
 * descriptor even when it reports EIO (NFS write-back errors), so a failed
 * close is the same state a real one leaves.
 */
static int fail_file_close;     /* every close of a regular file reports EIO */
static int fail_dir_fsync;      /* every fsync of a directory fails with EIO */
static int fail_unlink;         /* every unlinkat of a queue-id name fails with EIO */
static int n_failed_closes;

int close(int fd)
{
	struct stat st;
	int is_reg = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
	int rc = (int)syscall(SYS_close, fd);

	if (rc == 0 && is_reg && fail_file_close) {
		n_failed_closes++;
		errno = EIO;
		return -1;
	}
	return rc;
}

int fsync(int fd)
{
	struct stat st;

	if (fail_dir_fsync && fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
		errno = EIO;
		return -1;
	}
	return (int)syscall(SYS_fsync, fd);
}

int unlinkat(int dirfd, const char *path, int flags)
{
	if (fail_unlink && queue_id_valid(path, strlen(path))) {
		errno = EIO;
		return -1;
	}
	return (int)syscall(SYS_unlinkat, dirfd, path, flags);
}

struct fixture {
	char dir[64];
	struct queue *q;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char err[256];

	fail_file_close = fail_dir_fsync = fail_unlink = 0;
	n_failed_closes = 0;
	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/stsrelay-commit-XXXXXX");
	if (mkdtemp(f->dir) == NULL || queue_open(f->dir, true, -1, &f->q, err, sizeof(err)) < 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	fail_file_close = fail_dir_fsync = fail_unlink = 0;
	queue_close(f->q);
	test_rmtree(f->dir);
	free(f);
	return 0;
}

/* A writer with a header and a small body, ready to commit. */
static struct queue_writer *writer(struct fixture *f, bool drop)
{
	struct queue_envelope env;
	struct queue_writer *w = NULL;

	memset(&env, 0, sizeof(env));
	env.queued_at = 1700000000;
	snprintf(env.sender, sizeof(env.sender), "a@example.org");
	assert_int_equal(queue_envelope_add_rcpt(&env, "b@example.net"), 0);
	assert_int_equal(queue_writer_new(f->q, drop, &w), 0);
	assert_int_equal(queue_writer_header(w, &env), 0);
	assert_int_equal(queue_writer_append(w, "Subject: x\r\n\r\nbody\r\n", 20), 0);
	queue_envelope_clear(&env);
	return w;
}

static size_t count(int (*scan)(struct queue *, char (**)[QUEUE_ID_LEN + 1], size_t *),
		    struct fixture *f)
{
	char (*ids)[QUEUE_ID_LEN + 1] = NULL;
	size_t n = 0;

	assert_int_equal(scan(f->q, &ids, &n), 0);
	free(ids);
	return n;
}

/* The message with this id is in queue/ and loads with its body size. */
static bool queued(struct fixture *f, const char *id)
{
	struct queue_envelope env;
	char err[256];
	bool ok;

	ok = queue_load(f->q, id, &env, err, sizeof(err)) == 0 && env.size == 20;
	queue_envelope_clear(&env);
	return ok;
}

/* close(2) fails after the rename: the message is committed (0), in queue/,
 * and freeing the writer leaves it there. Before the rule, commit returned
 * -1 here and the SMTP client got a 4xx for a message that was delivered. */
static void test_close_error_after_rename_is_committed(void **state)
{
	struct fixture *f = *state;
	struct queue_writer *w = writer(f, false);
	char id[QUEUE_ID_LEN + 1];

	fail_file_close = 1;
	assert_int_equal(queue_writer_commit(w), 0);
	fail_file_close = 0;
	assert_int_equal(n_failed_closes, 1);  /* the fault did happen */
	snprintf(id, sizeof(id), "%s", queue_writer_id(w));
	queue_writer_free(w);
	assert_true(queued(f, id));
	assert_int_equal(queue_sync_queue_dir(f->q), 0);

	/* the same through the single-message helper */
	w = writer(f, false);
	fail_file_close = 1;
	assert_int_equal(queue_writer_commit_sync(w), 0);
	fail_file_close = 0;
	assert_int_equal(n_failed_closes, 2);
	snprintf(id, sizeof(id), "%s", queue_writer_id(w));
	queue_writer_free(w);
	assert_true(queued(f, id));
	assert_int_equal(count(queue_scan, f), 2);
}

/* The directory fsync fails: the renamed file is taken back out and the
 * caller is told -1 (EIO); nothing stays in queue/ or tmp/. */
static void test_dir_fsync_failure_withdraws(void **state)
{
	struct fixture *f = *state;
	struct queue_writer *w = writer(f, false);

	fail_dir_fsync = 1;
	errno = 0;
	assert_int_equal(queue_writer_commit_sync(w), -1);
	assert_int_equal(errno, EIO);
	fail_dir_fsync = 0;
	queue_writer_free(w);
	assert_int_equal(count(queue_scan, f), 0);
	assert_int_equal(queue_recover(f->q), 0);  /* and no temp file left */

	/* a drop file (sendmail as root): the same rule in maildrop/ */
	w = writer(f, true);
	fail_dir_fsync = 1;
	assert_int_equal(queue_writer_commit_sync(w), -1);
	fail_dir_fsync = 0;
	queue_writer_free(w);
	assert_int_equal(count(queue_drop_scan, f), 0);
}

/* The fsync fails and the file cannot be taken out either: it will be
 * delivered, so the answer must be "committed" (0), never -1. */
static void test_withdraw_failure_reports_committed(void **state)
{
	struct fixture *f = *state;
	struct queue_writer *w = writer(f, false);
	char id[QUEUE_ID_LEN + 1];

	fail_dir_fsync = 1;
	fail_unlink = 1;
	assert_int_equal(queue_writer_commit_sync(w), 0);
	fail_dir_fsync = fail_unlink = 0;
	snprintf(id, sizeof(id), "%s", queue_writer_id(w));
	queue_writer_free(w);
	assert_true(queued(f, id));
	assert_int_equal(count(queue_scan, f), 1);
}

/* queue_writer_withdraw is only for a committed file, and only once. */
static void test_withdraw_contract(void **state)
{
	struct fixture *f = *state;
	struct queue_writer *w = writer(f, false);

	assert_int_equal(queue_writer_withdraw(w), -1);  /* not committed */
	assert_int_equal(errno, EINVAL);
	assert_int_equal(queue_writer_commit(w), 0);
	assert_int_equal(count(queue_scan, f), 1);
	assert_int_equal(queue_writer_withdraw(w), 0);
	assert_int_equal(count(queue_scan, f), 0);
	assert_int_equal(queue_writer_withdraw(w), -1);
	queue_writer_free(w);
	assert_int_equal(count(queue_scan, f), 0);
}

/* A drop import whose queue fsync fails: -1 as a local failure, the copy
 * is not in queue/, the drop file stays; the retry imports exactly one. */
static void test_import_fsync_failure_no_duplicate(void **state)
{
	struct fixture *f = *state;
	struct queue_writer *w = writer(f, true);
	char drop_id[QUEUE_ID_LEN + 1], new_id[QUEUE_ID_LEN + 1], err[256];

	assert_int_equal(queue_writer_commit_sync(w), 0);
	snprintf(drop_id, sizeof(drop_id), "%s", queue_writer_id(w));
	queue_writer_free(w);
	assert_int_equal(count(queue_drop_scan, f), 1);

	fail_dir_fsync = 1;
	errno = 0;
	assert_int_equal(queue_drop_import(f->q, drop_id, 1000, new_id, err, sizeof(err)), -1);
	assert_int_equal(errno, EIO);
	fail_dir_fsync = 0;
	assert_int_equal(count(queue_scan, f), 0);
	assert_int_equal(count(queue_drop_scan, f), 1);

	assert_int_equal(queue_drop_import(f->q, drop_id, 1000, new_id, err, sizeof(err)), 0);
	assert_int_equal(count(queue_scan, f), 1);
	assert_int_equal(count(queue_drop_scan, f), 0);
	assert_true(queued(f, new_id));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_close_error_after_rename_is_committed, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_dir_fsync_failure_withdraws, setup, teardown),
		cmocka_unit_test_setup_teardown(test_withdraw_failure_reports_committed, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_withdraw_contract, setup, teardown),
		cmocka_unit_test_setup_teardown(test_import_fsync_failure_no_duplicate, setup,
						teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
