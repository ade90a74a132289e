/* Unit tests of the durable file helpers (relay/core/fs.h): complete writes
 * under signals and short writes, directory fsync, atomic replacement and its
 * failures (unwritable directory, full file system, stale or hostile temp). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"
#include "relay/core/fs.h"

struct fixture {
	char dir[64];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_core_fs.XXXXXX");
	if (mkdtemp(f->dir) == NULL) {
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char mnt[128];

	/* the ENOSPC test's tmpfs, if an assertion left it mounted */
	snprintf(mnt, sizeof(mnt), "%s/mnt", f->dir);
	umount2(mnt, MNT_DETACH);
	chmod(f->dir, 0700);
	test_rmtree(f->dir);
	free(f);
	return 0;
}

static void path_of(const struct fixture *f, const char *name, char *out, size_t len)
{
	snprintf(out, len, "%s/%s", f->dir, name);
}

/* The file's whole content, NUL-terminated (test files are small). */
static size_t slurp(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	assert_true(fd >= 0);
	n = read(fd, buf, len - 1);
	assert_true(n >= 0);
	buf[n] = '\0';
	close(fd);
	return (size_t)n;
}

static size_t count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t n = 0;

	assert_non_null(d);
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static void test_write_all_short_writes(void **state)
{
	int p[2], sz;
	size_t written = 12345;
	char *big = calloc(1, 1 << 20);

	(void)state;
	assert_non_null(big);
	/* A non-blocking pipe takes what fits, then EAGAIN: the error comes
	 * back with the bytes that did get through. */
	assert_int_equal(pipe2(p, O_NONBLOCK), 0);
	sz = fcntl(p[1], F_GETPIPE_SZ);
	assert_true(sz > 0);
	assert_int_equal(core_fs_write_all(p[1], big, 1 << 20, &written), -1);
	assert_int_equal(errno, EAGAIN);
	assert_int_equal(written, (size_t)sz);
	/* nothing to write is success with nothing written */
	assert_int_equal(core_fs_write_all(p[1], big, 0, &written), 0);
	assert_int_equal(written, 0);
	close(p[0]);
	close(p[1]);
	/* a bad descriptor: the error, nothing written */
	assert_int_equal(core_fs_write_all(-1, "x", 1, &written), -1);
	assert_int_equal(errno, EBADF);
	assert_int_equal(written, 0);
	assert_int_equal(core_fs_write_all(-1, "x", 1, NULL), -1);
	free(big);
}

static volatile sig_atomic_t alarms;

static void on_alarm(int sig)
{
	(void)sig;
	alarms++;
}

/* Signals without SA_RESTART interrupt a blocked write (EINTR, or a short
 * count): every byte must still arrive, in order. */
static void test_write_all_eintr(void **state)
{
	enum { TOTAL = 4 << 20 };
	struct sigaction sa, old;
	struct itimerval it = { { 0, 500 }, { 0, 500 } }, stop = { { 0, 0 }, { 0, 0 } };
	unsigned char *data = malloc(TOTAL);
	int p[2], res[2], status;
	unsigned long sum = 0, got_sum = 0;
	size_t i, written = 0;
	pid_t pid;

	(void)state;
	assert_non_null(data);
	for (i = 0; i < TOTAL; i++) {
		data[i] = (unsigned char)(i * 131 + (i >> 13));
		sum = sum * 31 + data[i];
	}
	assert_int_equal(pipe(p), 0);
	assert_int_equal(pipe(res), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* a slow reader: small reads with pauses keep the writer blocked */
		unsigned char buf[4096];
		unsigned long s = 0;
		struct timespec pause = { 0, 50000 };
		ssize_t n;

		close(p[1]);
		alarm(60);
		while ((n = read(p[0], buf, sizeof(buf))) > 0) {
			for (ssize_t j = 0; j < n; j++)
				s = s * 31 + buf[j];
			nanosleep(&pause, NULL);
		}
		if (write(res[1], &s, sizeof(s)) != (ssize_t)sizeof(s))
			_exit(2);
		_exit(n == 0 ? 0 : 1);
	}
	close(p[0]);
	close(res[1]);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_alarm; /* no SA_RESTART */
	sigemptyset(&sa.sa_mask);
	assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
	alarms = 0;
	assert_int_equal(setitimer(ITIMER_REAL, &it, NULL), 0);
	assert_int_equal(core_fs_write_all(p[1], data, TOTAL, &written), 0);
	setitimer(ITIMER_REAL, &stop, NULL);
	sigaction(SIGALRM, &old, NULL);
	assert_int_equal(written, TOTAL);
	close(p[1]);
	assert_int_equal(read(res[0], &got_sum, sizeof(got_sum)), (ssize_t)sizeof(got_sum));
	close(res[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	assert_true(got_sum == sum);
	assert_true(alarms > 0); /* the signals did fire during the write */
	free(data);
}

static void test_fsync_close_dir(void **state)
{
	struct fixture *f = *state;
	char path[128];
	int fd;

	path_of(f, "plain", path, sizeof(path));
	fd = open(path, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(core_fs_fsync(fd), 0);
	assert_int_equal(core_fs_close(fd), 0);
	assert_int_equal(core_fs_fsync(-1), -1);
	assert_int_equal(errno, EBADF);
	assert_int_equal(core_fs_close(-1), -1);
	assert_int_equal(errno, EBADF);
	assert_int_equal(core_fs_fsync_dir(f->dir), 0);
	assert_int_equal(core_fs_fsync_dir(path), -1);
	assert_int_equal(errno, ENOTDIR);
	path_of(f, "missing", path, sizeof(path));
	assert_int_equal(core_fs_fsync_dir(path), -1);
	assert_int_equal(errno, ENOENT);
}

static void test_atomic_create_replace(void **state)
{
	struct fixture *f = *state;
	char path[128], buf[256];
	struct stat st;
	mode_t um = umask(022);

	path_of(f, "x.policy", path, sizeof(path));
	assert_int_equal(core_fs_write_atomic(f->dir, "x.policy", "first\n", 6, 0600), 0);
	assert_int_equal(slurp(path, buf, sizeof(buf)), 6);
	assert_string_equal(buf, "first\n");
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(core_fs_write_atomic(f->dir, "x.policy", "second, longer\n", 15, 0640), 0);
	assert_int_equal(slurp(path, buf, sizeof(buf)), 15);
	assert_string_equal(buf, "second, longer\n");
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	/* empty content is a valid file */
	assert_int_equal(core_fs_write_atomic(f->dir, "x.policy", "", 0, 0600), 0);
	assert_int_equal(slurp(path, buf, sizeof(buf)), 0);
	/* no temporary file is left behind */
	assert_int_equal(count_entries(f->dir), 1);
	umask(um);
}

/* A leftover under the temporary name (a crash, or a hard link planted to
 * make us overwrite another file) is replaced, never written through. */
static void test_atomic_stale_temp(void **state)
{
	struct fixture *f = *state;
	char victim[128], tmp[160], path[128], buf[64];

	path_of(f, "victim", victim, sizeof(victim));
	assert_int_equal(core_fs_write_atomic(f->dir, "victim", "precious", 8, 0600), 0);
	snprintf(tmp, sizeof(tmp), "%s/.n.tmp.%ld", f->dir, (long)getpid());
	assert_int_equal(link(victim, tmp), 0);
	assert_int_equal(core_fs_write_atomic(f->dir, "n", "new", 3, 0600), 0);
	slurp(victim, buf, sizeof(buf));
	assert_string_equal(buf, "precious");
	path_of(f, "n", path, sizeof(path));
	slurp(path, buf, sizeof(buf));
	assert_string_equal(buf, "new");
	assert_int_equal(access(tmp, F_OK), -1);
	assert_int_equal(count_entries(f->dir), 2);
}

/* A secret a group reads: exactly its mode whatever the umask, and (as
 * root) the owner asked for, set before the first byte; the replaced file
 * gets them too. */
static void test_atomic_owned(void **state)
{
	struct fixture *f = *state;
	char path[128], buf[64];
	mode_t um = umask(077);
	struct stat st;

	path_of(f, "users", path, sizeof(path));
	assert_int_equal(
		core_fs_write_atomic_owned(f->dir, "users", "a:x\n", 4, 0640, 65534, 65534), 0);
	umask(um);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	if (geteuid() == 0) {
		assert_int_equal(st.st_uid, 65534);
		assert_int_equal(st.st_gid, 65534);
	}
	slurp(path, buf, sizeof(buf));
	assert_string_equal(buf, "a:x\n");
	assert_int_equal(
		core_fs_write_atomic_owned(f->dir, "users", "b:y\n", 4, 0600, getuid(), getgid()),
		0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_uid, getuid());
	slurp(path, buf, sizeof(buf));
	assert_string_equal(buf, "b:y\n");
	assert_int_equal(count_entries(f->dir), 1);
}

static void test_atomic_at_two_dirs(void **state)
{
	struct fixture *f = *state;
	char tdir[128], ddir[128], path[160], buf[64];
	int tfd, dfd;

	path_of(f, "tmp", tdir, sizeof(tdir));
	path_of(f, "final", ddir, sizeof(ddir));
	assert_int_equal(mkdir(tdir, 0700), 0);
	assert_int_equal(mkdir(ddir, 0700), 0);
	tfd = open(tdir, O_RDONLY | O_DIRECTORY);
	dfd = open(ddir, O_RDONLY | O_DIRECTORY);
	assert_true(tfd >= 0 && dfd >= 0);
	assert_int_equal(core_fs_write_atomic_at(tfd, "A.state", dfd, "A.state", "s1\n", 3, 0600),
			 0);
	assert_int_equal(core_fs_write_atomic_at(tfd, "A.state", dfd, "A.state", "s2\n", 3, 0600),
			 0);
	snprintf(path, sizeof(path), "%s/A.state", ddir);
	slurp(path, buf, sizeof(buf));
	assert_string_equal(buf, "s2\n");
	assert_int_equal(count_entries(tdir), 0);
	/* the rename fails (target is a non-empty directory): temp removed,
	 * errno from rename */
	assert_int_equal(mkdirat(dfd, "B", 0700), 0);
	assert_int_equal(mkdirat(dfd, "B/sub", 0700), 0);
	assert_int_equal(core_fs_write_atomic_at(tfd, "B.tmp", dfd, "B", "x", 1, 0600), -1);
	assert_true(errno == EISDIR || errno == ENOTEMPTY || errno == EEXIST);
	assert_int_equal(count_entries(tdir), 0);
	close(tfd);
	close(dfd);
}

static void test_atomic_bad_names(void **state)
{
	struct fixture *f = *state;
	char longname[300], missing[128];

	memset(longname, 'a', 250);
	longname[250] = '\0';
	/* the name fits NAME_MAX, its temporary name does not */
	assert_int_equal(core_fs_write_atomic(f->dir, longname, "x", 1, 0600), -1);
	assert_int_equal(errno, ENAMETOOLONG);
	path_of(f, "missing", missing, sizeof(missing));
	assert_int_equal(core_fs_write_atomic(missing, "n", "x", 1, 0600), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(count_entries(f->dir), 0);
}

/* A directory we may not write to: EACCES, the old file untouched. As root
 * the permission check is bypassed, so the attempt runs as nobody. */
static void test_atomic_readonly_dir(void **state)
{
	struct fixture *f = *state;
	char path[128], buf[64];
	int status;
	pid_t pid;

	assert_int_equal(core_fs_write_atomic(f->dir, "keep", "old", 3, 0644), 0);
	assert_int_equal(chmod(f->dir, 0555), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0))
			_exit(3);
		if (core_fs_write_atomic(f->dir, "keep", "new", 3, 0644) != -1)
			_exit(1);
		_exit(errno == EACCES ? 0 : 2);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	chmod(f->dir, 0700);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	path_of(f, "keep", path, sizeof(path));
	slurp(path, buf, sizeof(buf));
	assert_string_equal(buf, "old");
	assert_int_equal(count_entries(f->dir), 1);
}

/* A full file system: ENOSPC from the write, the temporary file removed and
 * the old content still in place. Needs a tiny tmpfs (mount privilege). */
static void test_atomic_enospc(void **state)
{
	struct fixture *f = *state;
	char mnt[128], path[160], buf[64];
	size_t big = 1 << 20;
	char *data;

	path_of(f, "mnt", mnt, sizeof(mnt));
	assert_int_equal(mkdir(mnt, 0700), 0);
	if (mount("tmpfs", mnt, "tmpfs", 0, "size=64k") != 0) {
		print_message("no tmpfs mount here (%s): ENOSPC case skipped\n", strerror(errno));
		skip();
	}
	data = malloc(big);
	assert_non_null(data);
	memset(data, 'z', big);
	assert_int_equal(core_fs_write_atomic(mnt, "f", "old", 3, 0600), 0);
	errno = 0;
	assert_int_equal(core_fs_write_atomic(mnt, "f", data, big, 0600), -1);
	assert_int_equal(errno, ENOSPC);
	snprintf(path, sizeof(path), "%s/f", mnt);
	slurp(path, buf, sizeof(buf));
	assert_string_equal(buf, "old");
	assert_int_equal(count_entries(mnt), 1);
	free(data);
	assert_int_equal(umount(mnt), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_write_all_short_writes),
		cmocka_unit_test(test_write_all_eintr),
		cmocka_unit_test_setup_teardown(test_fsync_close_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_atomic_create_replace, setup, teardown),
		cmocka_unit_test_setup_teardown(test_atomic_stale_temp, setup, teardown),
		cmocka_unit_test_setup_teardown(test_atomic_at_two_dirs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_atomic_bad_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_atomic_owned, setup, teardown),
		cmocka_unit_test_setup_teardown(test_atomic_readonly_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_atomic_enospc, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
