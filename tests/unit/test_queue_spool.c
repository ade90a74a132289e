/* Unit tests of the spool on disk: write/commit/scan/load round trips with
 * large bodies, state persistence, removal, recovery, and unique ids across
 * processes. Each test works in its own mkdtemp directory under /tmp. */
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
#include <inttypes.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"
#include "queue/queue.h"

struct fixture {
	char dir[64];
	char spool[96];
	struct queue *q;
	int named; /* message files are named temp files in tmp/ */
};

/* Where /proc/self/fd cannot be used (a chroot without /proc, a process
 * made undumpable), linking a nameless file fails: the queue must fall back
 * to named temp files. Interposed for this binary; set before the queue's
 * first writer, which decides. */
static int fail_proc_link;

int linkat(int olddirfd, const char *oldpath, int newdirfd, const char *newpath, int flags)
{
	if (fail_proc_link && strncmp(oldpath, "/proc/", 6) == 0) {
		errno = EACCES;
		return -1;
	}
	return (int)syscall(SYS_linkat, olddirfd, oldpath, newdirfd, newpath, flags);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char err[256];

	fail_proc_link = 0;
	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/stsrelay-queue-XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	/* a subdirectory that does not exist yet: queue_open makes it */
	snprintf(f->spool, sizeof(f->spool), "%s/var/spool", f->dir);
	if (queue_open(f->spool, true, -1, &f->q, err, sizeof(err)) < 0) {
		fprintf(stderr, "queue_open: %s\n", err);
		return -1;
	}
	*state = f;
	return 0;
}

/* The same spool, with message files named in tmp/ while written. */
static int setup_named(void **state)
{
	struct fixture *f;

	if (setup(state) != 0)
		return -1;
	f = *state;
	f->named = 1;
	fail_proc_link = 1;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	fail_proc_link = 0;

	queue_close(f->q);
	test_rmtree(f->dir);
	free(f);
	return 0;
}

static void path_of(const struct fixture *f, const char *sub, char *out, size_t outlen)
{
	snprintf(out, outlen, "%s/%s", f->spool, sub);
}

static int count_entries(const struct fixture *f, const char *sub)
{
	char p[256];

	path_of(f, sub, p, sizeof(p));
	return test_count_entries(p);
}

static void make_env(struct queue_envelope *env, size_t nrcpts)
{
	size_t i;

	memset(env, 0, sizeof(*env));
	env->queued_at = 1700000000;
	snprintf(env->sender, sizeof(env->sender), "sender@example.com");
	snprintf(env->client, sizeof(env->client), "localhost[127.0.0.1]");
	for (i = 0; i < nrcpts; i++) {
		char a[64];

		snprintf(a, sizeof(a), "rcpt%zu@example.org", i);
		assert_int_equal(queue_envelope_add_rcpt(env, a), 0);
	}
}

/* Writes and commits one message; the id goes to id_out. */
static void put_message(struct queue *q, const struct queue_envelope *env, const void *data,
			size_t len, char id_out[QUEUE_ID_LEN + 1])
{
	struct queue_writer *w = NULL;

	assert_int_equal(queue_writer_new(q, false, &w), 0);
	assert_int_equal(queue_writer_header(w, env), 0);
	assert_int_equal(queue_writer_append(w, data, len), 0);
	assert_int_equal(queue_writer_commit(w), 0);
	assert_int_equal(queue_sync_queue_dir(q), 0);
	memcpy(id_out, queue_writer_id(w), QUEUE_ID_LEN + 1);
	queue_writer_free(w);
}

static void read_data(struct queue *q, const struct queue_envelope *env, char **out, size_t *len)
{
	size_t cap = (size_t)env->size + 1, got = 0;
	char *buf = malloc(cap);
	int fd = queue_open_data(q, env);

	assert_non_null(buf);
	assert_true(fd >= 0);
	for (;;) {
		ssize_t n = read(fd, buf + got, cap - got);

		assert_true(n >= 0);
		if (n == 0)
			break;
		got += (size_t)n;
		assert_true(got < cap); /* never more than env->size bytes */
	}
	close(fd);
	*out = buf;
	*len = got;
}

static void test_open_modes(void **state)
{
	struct fixture *f = *state;
	struct queue *q2 = NULL;
	char p[256], err[256];
	struct stat st;

	path_of(f, "queue", p, sizeof(p));
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	path_of(f, "tmp", p, sizeof(p));
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
	path_of(f, "maildrop", p, sizeof(p));
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 01730);
	assert_string_equal(queue_spool_dir(f->q), f->spool);

	/* reopening with a drop group fixes group and mode of existing dirs */
	assert_int_equal(chmod(p, 0777), 0);
	assert_int_equal(queue_open(f->spool, true, 65534, &q2, err, sizeof(err)), 0);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 01730);
	assert_int_equal(st.st_gid, 65534);
	queue_close(q2);

	/* without create, a missing spool is an error with a reason */
	snprintf(p, sizeof(p), "%s/nonexistent", f->dir);
	err[0] = '\0';
	assert_int_equal(queue_open(p, false, -1, &q2, err, sizeof(err)), -1);
	assert_null(q2);
	assert_true(strlen(err) > 0);
}

static void test_write_load_round_trip(void **state)
{
	struct fixture *f = *state;
	const size_t body_len = 5 * 1024 * 1024 + 12345;
	struct queue_envelope env, got;
	struct queue_writer *w = NULL;
	char *body = malloc(body_len), *back = NULL;
	char(*ids)[QUEUE_ID_LEN + 1] = NULL;
	char id[QUEUE_ID_LEN + 1], p[256], err[256];
	size_t i, off, n, backlen;
	struct stat st;
	unsigned seed = 12345;

	assert_non_null(body);
	for (i = 0; i < body_len; i++) {
		seed = seed * 1103515245u + 12345u;
		body[i] = (char)(seed >> 16); /* every byte value, CR, LF, NUL included */
	}
	make_env(&env, 3);
	snprintf(env.id, sizeof(env.id), "FFFFFFFFFFFF"); /* replaced by the writer */
	assert_int_equal(queue_writer_new(f->q, false, &w), 0);
	memcpy(id, queue_writer_id(w), sizeof(id));
	assert_int_equal(strlen(id), QUEUE_ID_LEN);
	assert_string_not_equal(id, "FFFFFFFFFFFF");
	/* data before the header, commit before the header: refused */
	assert_int_equal(queue_writer_append(w, "x", 1), -1);
	assert_int_equal(queue_writer_commit(w), -1);
	assert_int_equal(queue_writer_header(w, &env), 0);
	assert_int_equal(queue_writer_header(w, &env), -1);
	/* chunks of awkward sizes: tiny, buffer-sized, larger than the buffer */
	for (off = 0, i = 0; off < body_len; i++) {
		static const size_t sizes[] = { 1, 7, 65535, 65536, 200000, 3, 70000 };
		size_t len = sizes[i % 7];

		if (len > body_len - off)
			len = body_len - off;
		assert_int_equal(queue_writer_append(w, body + off, len), 0);
		off += len;
	}
	assert_int_equal(queue_writer_size(w), body_len);
	/* before commit the message has no name (or a temp name in tmp/) and
	 * is not listed */
	assert_int_equal(count_entries(f, "tmp"), f->named);
	assert_int_equal(queue_scan(f->q, &ids, &n), 0);
	assert_int_equal(n, 0);
	free(ids);
	assert_int_equal(queue_writer_commit(w), 0);
	assert_int_equal(queue_writer_append(w, "x", 1), -1);
	assert_int_equal(queue_sync_queue_dir(f->q), 0);
	queue_writer_free(w);
	assert_int_equal(count_entries(f, "tmp"), 0);

	snprintf(p, sizeof(p), "%s/queue/%s", f->spool, id);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);

	assert_int_equal(queue_scan(f->q, &ids, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(ids[0], id);
	free(ids);

	assert_int_equal(queue_load(f->q, id, &got, err, sizeof(err)), 0);
	assert_string_equal(got.id, id);
	assert_int_equal(got.size, body_len);
	assert_int_equal(got.nrcpts, 3);
	assert_string_equal(got.rcpts[2].address, "rcpt2@example.org");
	assert_string_equal(got.sender, "sender@example.com");
	assert_int_equal((uint64_t)st.st_size, got.data_offset + body_len);
	read_data(f->q, &got, &back, &backlen);
	assert_int_equal(backlen, body_len);
	assert_memory_equal(back, body, body_len);
	free(back);
	queue_envelope_clear(&got);
	queue_envelope_clear(&env);
	free(body);
}

/* queue_load reads a header in growing pieces (a small first read): a
 * header whose "end" line ends just below, at and just above each piece
 * boundary (4 KiB, 8 KiB, 16 KiB) loads whole, and the data after it (which
 * holds "\nend\n" lines of its own) starts at the right offset. */
static void test_load_header_sizes(void **state)
{
	static const size_t bounds[] = { 4096, 8192, 16384 };
	static const char body[] = "end\nend\r\n\nend\nbody\r\n";
	struct fixture *f = *state;
	size_t b;

	for (b = 0; b < sizeof(bounds) / sizeof(bounds[0]); b++) {
		long delta;

		for (delta = -3; delta <= 3; delta++) {
			struct queue_envelope env, got;
			char id[QUEUE_ID_LEN + 1], err[256], addr[QUEUE_ADDR_MAX], *text = NULL,
										   *back = NULL;
			size_t want = (size_t)((long)bounds[b] + delta), len, backlen, pad;

			/* 400-octet recipients, then one that brings the header to want */
			make_env(&env, 1);
			/* the writer puts its own id, of the same length, in the file */
			snprintf(env.id, sizeof(env.id), "0123456789AB");
			for (;;) {
				assert_int_equal(queue_header_encode(&env, &text, &len), 0);
				free(text);
				if (len + 420 + 40 > want)
					break;
				memset(addr, 'a', 400);
				snprintf(addr + 400, sizeof(addr) - 400, "@example.org");
				assert_int_equal(queue_envelope_add_rcpt(&env, addr), 0);
			}
			/* "rcpt " + address + "\n" adds len(address) + 6 */
			assert_true(want > len + 6 + 13);
			pad = want - len - 6 - 12;
			memset(addr, 'b', pad);
			snprintf(addr + pad, sizeof(addr) - pad, "@example.org");
			assert_int_equal(queue_envelope_add_rcpt(&env, addr), 0);
			assert_int_equal(queue_header_encode(&env, &text, &len), 0);
			free(text);
			assert_int_equal(len, want);

			put_message(f->q, &env, body, sizeof(body) - 1, id);
			assert_int_equal(queue_load(f->q, id, &got, err, sizeof(err)), 0);
			assert_int_equal(got.data_offset, want);
			assert_int_equal(got.size, sizeof(body) - 1);
			assert_int_equal(got.nrcpts, env.nrcpts);
			assert_string_equal(got.rcpts[got.nrcpts - 1].address,
					    env.rcpts[env.nrcpts - 1].address);
			read_data(f->q, &got, &back, &backlen);
			assert_int_equal(backlen, sizeof(body) - 1);
			assert_memory_equal(back, body, backlen);
			free(back);
			queue_envelope_clear(&got);
			queue_envelope_clear(&env);
			assert_int_equal(queue_remove(f->q, id), 0);
		}
	}
}

static void test_writer_free_uncommitted(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope env;
	struct queue_writer *w = NULL;

	make_env(&env, 1);
	assert_int_equal(queue_writer_new(f->q, false, &w), 0);
	assert_int_equal(queue_writer_header(w, &env), 0);
	assert_int_equal(queue_writer_append(w, "abc", 3), 0);
	assert_int_equal(count_entries(f, "tmp"), f->named);
	queue_writer_free(w);
	assert_int_equal(count_entries(f, "tmp"), 0);
	assert_int_equal(count_entries(f, "queue"), 0);
	/* a header that cannot be stored leaves the writer unusable for commit */
	assert_int_equal(queue_writer_new(f->q, false, &w), 0);
	env.sender[0] = '\n';
	assert_int_equal(queue_writer_header(w, &env), -1);
	assert_int_equal(queue_writer_commit(w), -1);
	queue_writer_free(w);
	assert_int_equal(count_entries(f, "tmp"), 0);
	queue_envelope_clear(&env);
}

static void test_state_save_load_remove(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope env, got;
	char id[QUEUE_ID_LEN + 1], p[256], err[256];
	struct stat st;

	make_env(&env, 2);
	put_message(f->q, &env, "hello\r\n", 7, id);
	assert_int_equal(queue_load(f->q, id, &got, err, sizeof(err)), 0);
	assert_int_equal(got.rcpts[0].status, QUEUE_PENDING); /* no state file yet */
	got.rcpts[0].status = QUEUE_SENT;
	got.rcpts[0].attempts = 1;
	got.rcpts[0].last_try = 1700000500;
	got.rcpts[1].status = QUEUE_DEFERRED;
	got.rcpts[1].attempts = 2;
	got.rcpts[1].next_try = 1700001100;
	snprintf(got.rcpts[1].last_error, sizeof(got.rcpts[1].last_error),
		 "451 4.4.8 no MX matches the policy");
	assert_int_equal(queue_save_state(f->q, &got), 0);
	queue_envelope_clear(&got);
	assert_int_equal(count_entries(f, "tmp"), 0);
	snprintf(p, sizeof(p), "%s/queue/%s.state", f->spool, id);
	assert_int_equal(stat(p, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);

	assert_int_equal(queue_load(f->q, id, &got, err, sizeof(err)), 0);
	assert_int_equal(got.rcpts[0].status, QUEUE_SENT);
	assert_int_equal(got.rcpts[0].last_try, 1700000500);
	assert_int_equal(got.rcpts[1].status, QUEUE_DEFERRED);
	assert_int_equal(got.rcpts[1].attempts, 2);
	assert_int_equal(got.rcpts[1].next_try, 1700001100);
	assert_string_equal(got.rcpts[1].last_error, "451 4.4.8 no MX matches the policy");
	/* saving again replaces the state */
	got.rcpts[1].status = QUEUE_BOUNCED;
	assert_int_equal(queue_save_state(f->q, &got), 0);
	queue_envelope_clear(&got);
	assert_int_equal(queue_load(f->q, id, &got, err, sizeof(err)), 0);
	assert_int_equal(got.rcpts[1].status, QUEUE_BOUNCED);

	assert_int_equal(queue_remove(f->q, id), 0);
	assert_int_equal(count_entries(f, "queue"), 0);
	errno = 0;
	assert_int_equal(queue_remove(f->q, id), -1);
	assert_int_equal(errno, ENOENT);
	/* no state for a message that is gone */
	errno = 0;
	assert_int_equal(queue_save_state(f->q, &got), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(count_entries(f, "queue"), 0);
	queue_envelope_clear(&got);
	assert_int_equal(queue_load(f->q, id, &got, err, sizeof(err)), -1);
	assert_null(got.rcpts);
	queue_envelope_clear(&env);
}

/* The batch variants: same files as queue_save_state/queue_remove, no
 * directory fsync of their own (the caller's queue_sync_queue_dir covers them). */
static void test_nodirsync_batch(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope env, got;
	char id[3][QUEUE_ID_LEN + 1], p[256], err[256];
	struct stat st;
	int fd, i;

	make_env(&env, 2);
	for (i = 0; i < 3; i++)
		put_message(f->q, &env, "hi\r\n", 4, id[i]);
	/* a leftover temp state of a crashed save is replaced, not an error */
	snprintf(p, sizeof(p), "%s/tmp/%s.state", f->spool, id[0]);
	fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "junk", 4), 4);
	close(fd);

	for (i = 0; i < 2; i++) {
		assert_int_equal(queue_load(f->q, id[i], &got, err, sizeof(err)), 0);
		got.rcpts[1].status = QUEUE_DEFERRED;
		got.rcpts[1].attempts = (unsigned)i + 1;
		got.rcpts[1].next_try = 1700003600 + i;
		assert_int_equal(queue_save_state_nodirsync(f->q, &got), 0);
		queue_envelope_clear(&got);
	}
	assert_int_equal(queue_remove_nodirsync(f->q, id[2]), 0);
	assert_int_equal(queue_sync_queue_dir(f->q), 0);

	assert_int_equal(count_entries(f, "tmp"), 0);
	assert_int_equal(count_entries(f, "queue"), 4); /* 2 messages + 2 states */
	for (i = 0; i < 2; i++) {
		snprintf(p, sizeof(p), "%s/queue/%s.state", f->spool, id[i]);
		assert_int_equal(stat(p, &st), 0);
		assert_int_equal(st.st_mode & 07777, 0600);
		assert_int_equal(queue_load(f->q, id[i], &got, err, sizeof(err)), 0);
		assert_int_equal(got.rcpts[0].status, QUEUE_PENDING);
		assert_int_equal(got.rcpts[1].status, QUEUE_DEFERRED);
		assert_int_equal(got.rcpts[1].attempts, (unsigned)i + 1);
		assert_int_equal(got.rcpts[1].next_try, 1700003600 + i);
		queue_envelope_clear(&got);
	}
	assert_int_equal(queue_load(f->q, id[2], &got, err, sizeof(err)), -1);
	queue_envelope_clear(&got);

	/* a message gone behind our back: ENOENT, and its stale state goes too */
	snprintf(p, sizeof(p), "%s/queue/%s", f->spool, id[1]);
	assert_int_equal(unlink(p), 0);
	errno = 0;
	assert_int_equal(queue_remove_nodirsync(f->q, id[1]), -1);
	assert_int_equal(errno, ENOENT);
	snprintf(p, sizeof(p), "%s/queue/%s.state", f->spool, id[1]);
	assert_int_equal(stat(p, &st), -1);
	/* no state is created for a message that is gone */
	assert_int_equal(queue_load(f->q, id[0], &got, err, sizeof(err)), 0);
	memcpy(got.id, id[1], sizeof(got.id));
	errno = 0;
	assert_int_equal(queue_save_state_nodirsync(f->q, &got), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(stat(p, &st), -1);
	/* bad ids are refused before touching anything */
	snprintf(got.id, sizeof(got.id), "../x");
	errno = 0;
	assert_int_equal(queue_save_state_nodirsync(f->q, &got), -1);
	assert_int_equal(errno, EINVAL);
	errno = 0;
	assert_int_equal(queue_remove_nodirsync(f->q, "nothex"), -1);
	assert_int_equal(errno, EINVAL);
	queue_envelope_clear(&got);
	assert_int_equal(queue_sync_queue_dir(f->q), 0);
	assert_int_equal(count_entries(f, "queue"), 2); /* id[0] and its state */
	assert_int_equal(count_entries(f, "tmp"), 0);
	queue_envelope_clear(&env);
}

static void write_file(const char *path, const char *text, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	close(fd);
}

static void test_load_rejects(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope env, got;
	char id[QUEUE_ID_LEN + 1], p[256], p2[256], err[256];

	assert_int_equal(queue_load(f->q, "../../etc/pa", &got, err, sizeof(err)), -1);
	assert_int_equal(queue_load(f->q, "0123456789ab", &got, err, sizeof(err)), -1);
	make_env(&env, 1);
	put_message(f->q, &env, "x", 1, id);
	/* a file whose header names another id */
	snprintf(p, sizeof(p), "%s/queue/%s", f->spool, id);
	snprintf(p2, sizeof(p2), "%s/queue/0000000000AA", f->spool);
	assert_int_equal(rename(p, p2), 0);
	assert_int_equal(queue_load(f->q, "0000000000AA", &got, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "header names id"));
	assert_int_equal(rename(p2, p), 0);
	/* a corrupt state file fails the load rather than resetting progress */
	snprintf(p2, sizeof(p2), "%s/queue/%s.state", f->spool, id);
	write_file(p2, "STSRELAY-STATE 1\n0 sent 1 0 5\n", 30);
	assert_int_equal(queue_load(f->q, id, &got, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "no end line"));
	/* a truncated message file */
	unlink(p2);
	write_file(p, "STSRELAY-QUEUE 1\nid ", 20);
	assert_int_equal(queue_load(f->q, id, &got, err, sizeof(err)), -1);
	write_file(p, "", 0);
	assert_int_equal(queue_load(f->q, id, &got, err, sizeof(err)), -1);
	queue_envelope_clear(&env);
}

static void test_recover(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope env, got;
	char keep[QUEUE_ID_LEN + 1], p[256], err[256];
	struct timespec old[2] = { { .tv_sec = 1000 }, { .tv_sec = 1000 } };
	char(*ids)[QUEUE_ID_LEN + 1] = NULL;
	size_t n;

	make_env(&env, 1);
	put_message(f->q, &env, "keep me", 7, keep);
	assert_int_equal(queue_load(f->q, keep, &got, err, sizeof(err)), 0);
	got.rcpts[0].status = QUEUE_DEFERRED;
	assert_int_equal(queue_save_state(f->q, &got), 0);
	queue_envelope_clear(&got);

	path_of(f, "tmp/0000000000AA", p, sizeof(p)); /* a crash mid-write */
	write_file(p, "STSRELAY-QUEUE 1\n", 17);
	path_of(f, "tmp/junk", p, sizeof(p));
	write_file(p, "x", 1);
	path_of(f, "queue/0000000000BB.state", p, sizeof(p)); /* orphan state */
	write_file(p, "STSRELAY-STATE 1\nend\n", 21);
	path_of(f, "maildrop/.0000000000CC", p, sizeof(p)); /* abandoned drop */
	write_file(p, "STSRELAY-QUEUE 1\n", 17);
	assert_int_equal(utimensat(AT_FDCWD, p, old, 0), 0);
	path_of(f, "maildrop/.0000000000DD", p, sizeof(p)); /* still being written */
	write_file(p, "STSRELAY-QUEUE 1\n", 17);
	path_of(f, "maildrop/0000000000EE", p, sizeof(p)); /* complete drop: not recover's */
	write_file(p, "x", 1);
	assert_int_equal(utimensat(AT_FDCWD, p, old, 0), 0);

	assert_int_equal(queue_recover(f->q), 4);
	assert_int_equal(count_entries(f, "tmp"), 0);
	assert_int_equal(count_entries(f, "queue"), 2); /* keep + keep.state */
	assert_int_equal(count_entries(f, "maildrop"), 2);
	path_of(f, "maildrop/.0000000000DD", p, sizeof(p));
	assert_int_equal(access(p, F_OK), 0);
	assert_int_equal(queue_scan(f->q, &ids, &n), 0);
	assert_int_equal(n, 1);
	assert_string_equal(ids[0], keep);
	free(ids);
	assert_int_equal(queue_load(f->q, keep, &got, err, sizeof(err)), 0);
	assert_int_equal(got.rcpts[0].status, QUEUE_DEFERRED);
	queue_envelope_clear(&got);
	/* nothing left to do the second time */
	assert_int_equal(queue_recover(f->q), 0);
	queue_envelope_clear(&env);
}

/* A file appears under the writer's id before commit (something bypassed
 * the temp-name lock): the commit takes another id and patches the header. */
static void test_commit_id_taken(void **state)
{
	struct fixture *f = *state;
	struct queue_envelope env, got;
	struct queue_writer *w = NULL;
	char first[QUEUE_ID_LEN + 1], p[256], err[256];
	char *back = NULL;
	size_t backlen;

	make_env(&env, 1);
	assert_int_equal(queue_writer_new(f->q, false, &w), 0);
	memcpy(first, queue_writer_id(w), sizeof(first));
	assert_int_equal(queue_writer_header(w, &env), 0);
	assert_int_equal(queue_writer_append(w, "body\r\n", 6), 0);
	snprintf(p, sizeof(p), "%s/queue/%s", f->spool, first);
	write_file(p, "intruder", 8);
	assert_int_equal(queue_writer_commit(w), 0);
	assert_string_not_equal(queue_writer_id(w), first);
	assert_int_equal(queue_load(f->q, queue_writer_id(w), &got, err, sizeof(err)), 0);
	assert_string_equal(got.id, queue_writer_id(w));
	read_data(f->q, &got, &back, &backlen);
	assert_int_equal(backlen, 6);
	assert_memory_equal(back, "body\r\n", 6);
	free(back);
	queue_envelope_clear(&got);
	queue_writer_free(w);
	/* the intruder was not replaced */
	assert_int_equal(queue_load(f->q, first, &got, err, sizeof(err)), -1);
	queue_envelope_clear(&env);
}

/* Writes env with the data in the given pieces, commits, loads it back:
 * the flags as loaded, the data compared byte for byte. */
static unsigned flags_after_write(struct fixture *f, unsigned flags, const char *const *pieces,
				  const size_t *lens, size_t npieces)
{
	struct queue_envelope env, got;
	struct queue_writer *w = NULL;
	char id[QUEUE_ID_LEN + 1], err[256], *back = NULL, *all = NULL;
	size_t i, total = 0, backlen;
	unsigned out;

	make_env(&env, 1);
	env.flags = flags;
	assert_int_equal(queue_writer_new(f->q, false, &w), 0);
	assert_int_equal(queue_writer_header(w, &env), 0);
	for (i = 0; i < npieces; i++) {
		assert_int_equal(queue_writer_append(w, pieces[i], lens[i]), 0);
		all = realloc(all, total + lens[i] + 1);
		assert_non_null(all);
		memcpy(all + total, pieces[i], lens[i]);
		total += lens[i];
	}
	assert_int_equal(queue_writer_commit(w), 0);
	memcpy(id, queue_writer_id(w), sizeof(id));
	queue_writer_free(w);
	assert_int_equal(queue_load(f->q, id, &got, err, sizeof(err)), 0);
	out = got.flags;
	read_data(f->q, &got, &back, &backlen);
	assert_int_equal(backlen, total);
	if (total > 0)
		assert_memory_equal(back, all, total);
	free(back);
	free(all);
	queue_envelope_clear(&got);
	queue_envelope_clear(&env);
	return out;
}

/* QUEUE_F_8BITMIME says what the bytes are: set by the first byte >= 0x80
 * wherever it comes (also after the header went to disk), never for 7-bit
 * data, never just because the caller asked. */
static void test_8bit_flag(void **state)
{
	struct fixture *f = *state;
	static const char seven[] = "Subject: x\r\n\r\nplain\r\n\0\x01\x7f\r\n";
	static const char eight[] = "Subject: caf\xc3\xa9\r\n\r\n";
	const size_t big_len = 200000;
	char *big = malloc(big_len);
	const char *p[3];
	size_t l[3];

	assert_non_null(big);
	memset(big, 'a', big_len);
	p[0] = seven;
	l[0] = sizeof(seven) - 1;
	assert_int_equal(flags_after_write(f, 0, p, l, 1), 0);
	/* asked for, but the data is 7-bit: not set */
	assert_int_equal(flags_after_write(f, QUEUE_F_8BITMIME, p, l, 1), 0);
	assert_int_equal(flags_after_write(f, QUEUE_F_NOBOUNCE, p, l, 1), QUEUE_F_NOBOUNCE);
	p[0] = eight;
	l[0] = sizeof(eight) - 1;
	assert_int_equal(flags_after_write(f, 0, p, l, 1), QUEUE_F_8BITMIME);
	assert_int_equal(flags_after_write(f, QUEUE_F_NOBOUNCE | QUEUE_F_TLSRPT, p, l, 1),
			 QUEUE_F_ALL);
	/* 200 KB of 7-bit data first (the header is on disk by then), then the
	 * one 8-bit byte, then more: the digit on disk is patched, no byte moves */
	p[0] = big;
	l[0] = big_len;
	p[1] = "\xff";
	l[1] = 1;
	p[2] = big;
	l[2] = big_len;
	assert_int_equal(flags_after_write(f, QUEUE_F_NOBOUNCE, p, l, 3),
			 QUEUE_F_NOBOUNCE | QUEUE_F_8BITMIME);
	/* the last byte of a large piece */
	big[big_len - 1] = (char)0x80;
	assert_int_equal(flags_after_write(f, 0, p, l, 1), QUEUE_F_8BITMIME);
	/* an empty message */
	assert_int_equal(flags_after_write(f, 0, p, l, 0), 0);
	free(big);
}

#define UNIQ_PROCS 2
#define UNIQ_PER_PROC 5000

/* Two processes create 5,000 messages each at the same time; every id must
 * be distinct, every file must still hold its own header, none overwritten. */
static void test_unique_ids_across_processes(void **state)
{
	struct fixture *f = *state;
	char(*ids)[QUEUE_ID_LEN + 1] = NULL;
	char(*all)[QUEUE_ID_LEN + 1] = NULL;
	char listpath[UNIQ_PROCS][256];
	pid_t pids[UNIQ_PROCS];
	size_t n, total = 0, i;
	int k;
	int64_t before = (int64_t)time(NULL);

	for (k = 0; k < UNIQ_PROCS; k++) {
		snprintf(listpath[k], sizeof(listpath[k]), "%s/ids.%d", f->dir, k);
		pids[k] = fork();
		assert_true(pids[k] >= 0);
		if (pids[k] == 0) {
			struct queue_envelope env;
			char err[256];
			struct queue *q = NULL;
			FILE *out = fopen(listpath[k], "w");
			int j, ok = out != NULL;

			/* each process opens the spool itself, as sendmail would */
			ok = ok && queue_open(f->spool, false, -1, &q, err, sizeof(err)) == 0;
			memset(&env, 0, sizeof(env));
			ok = ok && queue_envelope_add_rcpt(&env, "a@b.example") == 0;
			for (j = 0; ok && j < UNIQ_PER_PROC; j++) {
				struct queue_writer *w = NULL;
				char body[32];
				int len = snprintf(body, sizeof(body), "proc %d msg %d", k, j);

				ok = queue_writer_new(q, false, &w) == 0 &&
				     queue_writer_header(w, &env) == 0 &&
				     queue_writer_append(w, body, (size_t)len) == 0 &&
				     queue_writer_commit(w) == 0;
				if (ok)
					fprintf(out, "%s\n", queue_writer_id(w));
				queue_writer_free(w);
			}
			ok = ok && queue_sync_queue_dir(q) == 0;
			if (out != NULL && fclose(out) != 0)
				ok = 0;
			queue_envelope_clear(&env);
			queue_close(q);
			_exit(ok ? 0 : 1);
		}
	}
	for (k = 0; k < UNIQ_PROCS; k++) {
		int st = 0;

		assert_int_equal(waitpid(pids[k], &st, 0), pids[k]);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	all = calloc(UNIQ_PROCS * UNIQ_PER_PROC, sizeof(*all));
	assert_non_null(all);
	for (k = 0; k < UNIQ_PROCS; k++) {
		FILE *in = fopen(listpath[k], "r");
		char line[64];

		assert_non_null(in);
		while (fgets(line, sizeof(line), in) != NULL) {
			assert_int_equal(strlen(line), QUEUE_ID_LEN + 1);
			assert_true(total < UNIQ_PROCS * UNIQ_PER_PROC);
			memcpy(all[total], line, QUEUE_ID_LEN);
			all[total][QUEUE_ID_LEN] = '\0';
			total++;
		}
		fclose(in);
	}
	assert_int_equal(total, UNIQ_PROCS * UNIQ_PER_PROC);
	qsort(all, total, sizeof(*all), (int (*)(const void *, const void *))strcmp);
	for (i = 1; i < total; i++)
		if (strcmp(all[i - 1], all[i]) == 0)
			fail_msg("id %s handed out twice", all[i]);
	/* the directory agrees: nothing was overwritten */
	assert_int_equal(queue_scan(f->q, &ids, &n), 0);
	assert_int_equal(n, total);
	for (i = 0; i < n; i++) {
		struct queue_envelope got;
		char err[256];
		unsigned long secs;

		assert_string_equal(ids[i], all[i]);
		/* the prefix is the creation time in seconds */
		assert_int_equal(sscanf(ids[i], "%8lx", &secs), 1);
		assert_true((int64_t)secs >= before - 1 &&
			    (int64_t)secs <= (int64_t)time(NULL) + 1);
		assert_int_equal(queue_load(f->q, ids[i], &got, err, sizeof(err)), 0);
		queue_envelope_clear(&got);
	}
	free(ids);
	free(all);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_open_modes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_load_round_trip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_write_load_round_trip, setup_named, teardown),
		cmocka_unit_test_setup_teardown(test_load_header_sizes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_free_uncommitted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_writer_free_uncommitted, setup_named,
						teardown),
		cmocka_unit_test_setup_teardown(test_commit_id_taken, setup_named, teardown),
		cmocka_unit_test_setup_teardown(test_state_save_load_remove, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nodirsync_batch, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_rejects, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recover, setup, teardown),
		cmocka_unit_test_setup_teardown(test_commit_id_taken, setup, teardown),
		cmocka_unit_test_setup_teardown(test_8bit_flag, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unique_ids_across_processes, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
