/* Unit tests of local submission through maildrop/: writing drop files (as
 * root and as an unprivileged user in the drop group) and the daemon-side
 * import, including the bad files it must move aside and never deliver. */
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
#include <ftw.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"
#include "queue/queue.h"

/* Interposed for the whole test binary (st_queue calls them directly): a
 * global sync() or syncfs() is never acceptable for a drop, and a drop by a
 * user who cannot read maildrop/ must fsync its file after the rename. */
static int n_global_syncs;      /* sync() + syncfs() calls */
static int n_renames;           /* renameat2() calls */
static int n_fsync_after_rename; /* fsyncs of a regular file since the last rename */

void sync(void)
{
	n_global_syncs++;
	syscall(SYS_sync);
}

int syncfs(int fd)
{
	n_global_syncs++;
	return (int)syscall(SYS_syncfs, fd);
}

int fsync(int fd)
{
	struct stat st;

	if (n_renames > 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
		n_fsync_after_rename++;
	return (int)syscall(SYS_fsync, fd);
}

int renameat2(int olddirfd, const char *oldpath, int newdirfd, const char *newpath,
	      unsigned int flags)
{
	n_renames++;
	n_fsync_after_rename = 0;
	return (int)syscall(SYS_renameat2, olddirfd, oldpath, newdirfd, newpath, flags);
}

#define DROP_GID 65534 /* nogroup */
#define USER_UID 65534 /* nobody */

struct fixture {
	char dir[64];
	char spool[96];
	struct queue *q;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char err[256];

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/stsrelay-drop-XXXXXX");
	if (mkdtemp(f->dir) == NULL || chmod(f->dir, 0755) < 0)
		return -1;
	snprintf(f->spool, sizeof(f->spool), "%s/spool", f->dir);
	if (queue_open(f->spool, true, DROP_GID, &f->q, err, sizeof(err)) < 0) {
		fprintf(stderr, "queue_open: %s\n", err);
		return -1;
	}
	if (chmod(f->spool, 0755) < 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	queue_close(f->q);
	test_rmtree(f->dir);
	free(f);
	return 0;
}

static void make_env(struct queue_envelope *env)
{
	memset(env, 0, sizeof(*env));
	env->queued_at = 1700000000;
	snprintf(env->sender, sizeof(env->sender), "user@localhost");
	snprintf(env->submitter, sizeof(env->submitter), "forged-name");
	snprintf(env->client, sizeof(env->client), "forged[192.0.2.9]");
	env->flags = QUEUE_F_TLSRPT | QUEUE_F_NOBOUNCE;
	assert_int_equal(queue_envelope_add_rcpt(env, "to@example.org"), 0);
}

/* Writes maildrop/ID by hand (what a hostile user could do): header from env
 * plus body bytes, or raw text when env is NULL. */
static void plant(struct fixture *f, const char *id, const struct queue_envelope *env,
		  const char *body, size_t bodylen)
{
	char p[256];
	char *hdr = NULL;
	size_t hlen = 0;
	int fd;

	snprintf(p, sizeof(p), "%s/maildrop/%s", f->spool, id);
	fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0640);
	assert_true(fd >= 0);
	if (env != NULL) {
		struct queue_envelope e = *env;

		memcpy(e.id, id, QUEUE_ID_LEN + 1);
		assert_int_equal(queue_header_encode(&e, &hdr, &hlen), 0);
		assert_int_equal(write(fd, hdr, hlen), (ssize_t)hlen);
	}
	while (bodylen > 0) {
		ssize_t n = write(fd, body, bodylen);

		assert_true(n > 0);
		body += n;
		bodylen -= (size_t)n;
	}
	close(fd);
	free(hdr);
}

static int exists(struct fixture *f, const char *sub)
{
	char p[256];
	struct stat st;

	snprintf(p, sizeof(p), "%s/%s", f->spool, sub);
	return lstat(p, &st) == 0;
}

static size_t queue_count(struct fixture *f)
{
	char (*ids)[QUEUE_ID_LEN + 1] = NULL;
	size_t n = 0;

	assert_int_equal(queue_scan(f->q, &ids, &n), 0);
	free(ids);
	return n;
}

static void read_body(struct fixture *f, const struct queue_envelope *env, char *buf, size_t len)
{
	int fd = queue_open_data(f->q, env);
	size_t got = 0;
	char extra;

	assert_true(fd >= 0);
	while (got < len) {
		ssize_t n = read(fd, buf + got, len - got);

		assert_true(n > 0);
		got += (size_t)n;
	}
	assert_int_equal(read(fd, &extra, 1), 0);
	close(fd);
}

static void expect_bad(struct fixture *f, const char *id, uint64_t max, const char *reason)
{
	char new_id[QUEUE_ID_LEN + 1] = "x", err[256] = "", aside[64];

	errno = 0;
	assert_int_equal(queue_drop_import(f->q, id, max, new_id, err, sizeof(err)), -1);
	assert_int_equal(errno, EBADMSG);
	if (strstr(err, reason) == NULL)
		fail_msg("import of %s: expected '%s', got '%s'", id, reason, err);
	assert_string_equal(new_id, "");
	snprintf(aside, sizeof(aside), "maildrop/%s", id);
	assert_false(exists(f, aside));
	snprintf(aside, sizeof(aside), "maildrop/.bad-%s", id);
	assert_true(exists(f, aside));
	assert_int_equal(queue_count(f), 0);
}

static void test_drop_write_and_import(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope env, got;
	struct queue_writer *w = NULL;
	char (*ids)[QUEUE_ID_LEN + 1] = NULL;
	char drop_id[QUEUE_ID_LEN + 1], new_id[QUEUE_ID_LEN + 1], p[256], err[256], body[32];
	struct stat st;
	size_t n;

	make_env(&env);
	assert_int_equal(queue_writer_new(f->q, true, &w), 0);
	memcpy(drop_id, queue_writer_id(w), sizeof(drop_id));
	assert_int_equal(queue_writer_header(w, &env), 0);
	assert_int_equal(queue_writer_append(w, "Subject: x\r\n\r\nhi\r\n", 18), 0);
	/* half-written: ".ID", invisible to the scan */
	snprintf(p, sizeof(p), "maildrop/.%s", drop_id);
	assert_true(exists(f, p));
	assert_int_equal(queue_drop_scan(f->q, &ids, &n), 0);
	assert_int_equal(n, 0);
	free(ids);
	n_global_syncs = 0;
	assert_int_equal(queue_writer_commit_sync(w), 0);
	assert_int_equal(n_global_syncs, 0);  /* root can fsync maildrop/ itself */
	queue_writer_free(w);
	snprintf(p, sizeof(p), "%s/maildrop/%s", f->spool, drop_id);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);

	assert_int_equal(queue_drop_scan(f->q, &ids, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(ids[0], drop_id);
	free(ids);

	assert_int_equal(queue_drop_import(f->q, drop_id, 1000, new_id, err, sizeof(err)), 0);
	assert_int_equal(stat(p, &st), -1); /* drop file gone */
	assert_int_equal(queue_load(f->q, new_id, &got, err, sizeof(err)), 0);
	assert_string_equal(got.submitter, "root"); /* from the file owner, not the header */
	assert_string_equal(got.client, "");
	assert_int_equal(got.flags, QUEUE_F_NOBOUNCE); /* internal flags dropped */
	assert_string_equal(got.sender, "user@localhost");
	assert_int_equal(got.queued_at, 1700000000);
	assert_int_equal(got.nrcpts, 1);
	assert_string_equal(got.rcpts[0].address, "to@example.org");
	assert_int_equal(got.size, 18);
	read_body(f, &got, body, 18);
	assert_memory_equal(body, "Subject: x\r\n\r\nhi\r\n", 18);
	queue_envelope_clear(&got);
	queue_envelope_clear(&env);
}

static void test_drop_bad_files(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope env;
	char p[256], target[256], new_id[QUEUE_ID_LEN + 1], err[256];
	char *big;
	size_t biglen;

	make_env(&env);
	plant(f, "0000000000A1", NULL, "this is not a queue file\n", 25);
	expect_bad(f, "0000000000A1", 1000, "bad magic");

	plant(f, "0000000000A2", &env, "0123456789", 10);
	expect_bad(f, "0000000000A2", 9, "too large");

	/* a header that goes on past the limit, never reaching "end" */
	biglen = QUEUE_HEADER_MAX + 100;
	big = malloc(biglen);
	assert_non_null(big);
	memset(big, 'x', biglen);
	memcpy(big, "STSRELAY-QUEUE 1\nid 0000000000A3\nsender ", 40);
	plant(f, "0000000000A3", NULL, big, biglen);
	free(big);
	expect_bad(f, "0000000000A3", UINT64_MAX, "header too long");

	/* a symlink to a file the user could not read must not be followed */
	snprintf(target, sizeof(target), "%s/secret", f->dir);
	{
		int fd = open(target, O_WRONLY | O_CREAT, 0600);

		assert_true(fd >= 0);
		close(fd);
	}
	snprintf(p, sizeof(p), "%s/maildrop/0000000000A4", f->spool);
	assert_int_equal(symlink(target, p), 0);
	expect_bad(f, "0000000000A4", 1000, "symbolic link");
	assert_int_equal(access(target, F_OK), 0);

	/* a FIFO must not hang the import */
	snprintf(p, sizeof(p), "%s/maildrop/0000000000A5", f->spool);
	assert_int_equal(mkfifo(p, 0640), 0);
	expect_bad(f, "0000000000A5", 1000, "not a regular file");

	/* a hard link to someone else's file */
	plant(f, "0000000000A6", &env, "x", 1);
	snprintf(p, sizeof(p), "%s/maildrop/0000000000A6", f->spool);
	snprintf(target, sizeof(target), "%s/hardlink", f->dir);
	assert_int_equal(link(p, target), 0);
	expect_bad(f, "0000000000A6", 1000, "several links");

	/* a header with the wrong id line is still a bad header */
	plant(f, "0000000000A7", NULL, "STSRELAY-QUEUE 1\nid zz\nend\n", 27);
	expect_bad(f, "0000000000A7", 1000, "bad queue id");

	/* gone before the import: nothing to move, a different errno */
	errno = 0;
	assert_int_equal(queue_drop_import(f->q, "0000000000A8", 1000, new_id, err, sizeof(err)), -1);
	assert_int_equal(errno, ENOENT);
	/* not an id at all */
	assert_int_equal(queue_drop_import(f->q, "../queue/x", 1000, new_id, err, sizeof(err)), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(queue_count(f), 0);
	queue_envelope_clear(&env);
}

static void test_drop_size_limit_inclusive(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope env;
	char new_id[QUEUE_ID_LEN + 1], err[256];

	make_env(&env);
	env.queued_at = INT64_MAX / 2; /* a time in the future is clamped */
	plant(f, "0000000000B1", &env, "0123456789", 10);
	assert_int_equal(queue_drop_import(f->q, "0000000000B1", 10, new_id, err, sizeof(err)), 0);
	queue_envelope_clear(&env);
	assert_int_equal(queue_load(f->q, new_id, &env, err, sizeof(err)), 0);
	assert_true(env.queued_at < INT64_MAX / 2);
	assert_int_equal(env.size, 10);
	queue_envelope_clear(&env);
}

/* sendmail as an ordinary user in the drop group: only maildrop/ is
 * reachable, and only for creating files. */
static void test_drop_as_unprivileged_user(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope got;
	char (*ids)[QUEUE_ID_LEN + 1] = NULL;
	char new_id[QUEUE_ID_LEN + 1], err[256], p[256], body[8];
	int pfd[2], status = 0;
	struct stat st;
	size_t n;
	pid_t pid;

	assert_int_equal(pipe(pfd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct queue_envelope env;
		struct queue_writer *w = NULL;
		struct queue *q = NULL;
		char (*cids)[QUEUE_ID_LEN + 1] = NULL;
		size_t cn;
		int code = 0;

		close(pfd[0]);
		if (setgroups(0, NULL) < 0 || setgid(DROP_GID) < 0 || setuid(USER_UID) < 0)
			_exit(10);
		if (queue_open(f->spool, false, -1, &q, err, sizeof(err)) < 0) {
			fprintf(stderr, "child queue_open: %s\n", err);
			_exit(11);
		}
		/* nothing but creating drop files is possible */
		if (queue_scan(q, &cids, &cn) == 0 || queue_drop_scan(q, &cids, &cn) == 0)
			code = 12;
		else if (queue_writer_new(q, false, &w) == 0)
			code = 13;
		else if (queue_recover(q) >= 0)
			code = 14;
		memset(&env, 0, sizeof(env));
		if (code == 0 && queue_envelope_add_rcpt(&env, "to@example.org") < 0)
			code = 15;
		/* maildrop/ cannot be fsynced by this user: queue_sync_maildrop_dir refuses,
		 * and the commit makes the rename durable through the file */
		if (code == 0 && (queue_sync_maildrop_dir(q) != -1 || errno != EACCES))
			code = 19;
		n_global_syncs = n_renames = n_fsync_after_rename = 0;
		if (code == 0 && (queue_writer_new(q, true, &w) < 0 || queue_writer_header(w, &env) < 0 ||
				  queue_writer_append(w, "hi\r\n", 4) < 0 ||
				  queue_writer_commit_sync(w) < 0))
			code = 16;
		if (code == 0 && (n_global_syncs != 0 || n_renames != 1 || n_fsync_after_rename != 1))
			code = 17;
		if (code == 0 && write(pfd[1], queue_writer_id(w), QUEUE_ID_LEN) != QUEUE_ID_LEN)
			code = 18;
		queue_writer_free(w);
		queue_envelope_clear(&env);
		queue_close(q);
		_exit(code);
	}
	close(pfd[1]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	memset(p, 0, sizeof(p));
	assert_int_equal(read(pfd[0], p, QUEUE_ID_LEN), QUEUE_ID_LEN);
	close(pfd[0]);

	assert_int_equal(queue_drop_scan(f->q, &ids, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(ids[0], p);
	free(ids);
	{
		char path[256];

		snprintf(path, sizeof(path), "%s/maildrop/%s", f->spool, p);
		assert_int_equal(stat(path, &st), 0);
		assert_int_equal(st.st_uid, USER_UID);
		assert_int_equal(st.st_gid, DROP_GID);
		assert_int_equal(st.st_mode & 07777, 0640);
	}
	assert_int_equal(queue_drop_import(f->q, p, 1000, new_id, err, sizeof(err)), 0);
	assert_int_equal(queue_load(f->q, new_id, &got, err, sizeof(err)), 0);
	assert_string_equal(got.submitter, "nobody");
	read_body(f, &got, body, 4);
	assert_memory_equal(body, "hi\r\n", 4);
	queue_envelope_clear(&got);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_drop_write_and_import, setup, teardown),
		cmocka_unit_test_setup_teardown(test_drop_bad_files, setup, teardown),
		cmocka_unit_test_setup_teardown(test_drop_size_limit_inclusive, setup, teardown),
		cmocka_unit_test_setup_teardown(test_drop_as_unprivileged_user, setup, teardown),
	};

	if (geteuid() != 0) {
		fprintf(stderr, "test_queue_drop needs root (drop group, setuid child)\n");
		return 77;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
