/* Unit tests of relay/core/authfile.c: the relay host's user:password file,
 * its format, its mode check, and errors that never quote the password. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "relay/core/authfile.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

static char dir[] = "/tmp/test_authfile.XXXXXX";

static int setup(void **state)
{
	(void)state;
	return mkdtemp(dir) != NULL ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[64];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Writes bytes into dir/name with mode; returns the path (static). */
static const char *put(const char *name, const void *bytes, size_t n, mode_t mode)
{
	static char path[256];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, bytes, n), (ssize_t)n);
	assert_int_equal(fchmod(fd, mode), 0);
	assert_int_equal(close(fd), 0);
	return path;
}

struct ok_case {
	const char *text;
	const char *user, *password;
};

static const struct ok_case ok_cases[] = {
	{ "relay:s3cret\n", "relay", "s3cret" },
	{ "relay:s3cret", "relay", "s3cret" },         /* no final line end */
	{ "relay:s3cret\r\n", "relay", "s3cret" },     /* CRLF */
	{ "a@example.net:pa:ss w\n", "a@example.net", "pa:ss w" }, /* split at the first ':' */
	{ "# the relay host's account\n\nrelay:x\n\n# end\n", "relay", "x" },
	{ "u:  blanks kept  \n", "u", "  blanks kept  " },
	{ "u:p\xc3\xa4ss\n", "u", "p\xc3\xa4ss" }, /* UTF-8 */
};

static void test_ok(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(ok_cases); i++) {
		struct authfile_cred c;
		char err[512] = "";
		const char *p = put("ok", ok_cases[i].text, strlen(ok_cases[i].text), 0640);

		if (authfile_load(p, &c, err, sizeof(err)) != 0)
			fail_msg("case %zu: %s", i, err);
		assert_true(c.set);
		assert_string_equal(c.user, ok_cases[i].user);
		assert_string_equal(c.password, ok_cases[i].password);
		authfile_wipe(&c);
		assert_false(c.set);
		assert_int_equal(c.password[0], 0);
	}
}

struct err_case {
	const char *text;
	size_t len; /* 0: strlen */
	const char *want; /* after "PATH" */
};

static const struct err_case err_cases[] = {
	{ "", 0, ": no user:password line" },
	{ "# only a comment\n\n", 0, ": no user:password line" },
	{ "justapassword\n", 0, ":1: expected one line user:password" },
	{ ":pw\n", 0, ":1: empty user name or password in user:password" },
	{ "user:\n", 0, ":1: empty user name or password in user:password" },
	{ "a:b\nc:d\n", 0, ":2: more than one credentials line" },
	{ "# c\nu:p\tw\n", 0, ":2: control character in the credentials line" },
	{ "u:p\rw\n", 0, ":1: control character in the credentials line" },
	{ "u:p\0w\n", 6, ": NUL byte in the file" },
};

static void test_errors(void **state)
{
	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(err_cases); i++) {
		const struct err_case *e = &err_cases[i];
		struct authfile_cred c;
		char err[512], want[512];
		const char *p = put("bad", e->text, e->len ? e->len : strlen(e->text), 0600);

		memset(&c, 0x55, sizeof(c));
		assert_int_equal(authfile_load(p, &c, err, sizeof(err)), -1);
		snprintf(want, sizeof(want), "%s%s", p, e->want);
		if (strcmp(err, want) != 0)
			fail_msg("case %zu: got '%s', want '%s'", i, err, want);
		/* *out untouched on failure */
		assert_int_equal(((unsigned char *)&c)[0], 0x55);
	}
}

static void test_lengths(void **state)
{
	char text[2 * AUTHFILE_FIELD_MAX + 8];
	struct authfile_cred c;
	char err[512];
	const char *p;

	(void)state;
	/* 255 + ':' + 255: the longest that is accepted */
	memset(text, 'u', AUTHFILE_FIELD_MAX);
	text[AUTHFILE_FIELD_MAX] = ':';
	memset(text + AUTHFILE_FIELD_MAX + 1, 'p', AUTHFILE_FIELD_MAX);
	p = put("len", text, 2 * AUTHFILE_FIELD_MAX + 1, 0600);
	assert_int_equal(authfile_load(p, &c, err, sizeof(err)), 0);
	assert_int_equal(strlen(c.user), AUTHFILE_FIELD_MAX);
	assert_int_equal(strlen(c.password), AUTHFILE_FIELD_MAX);
	/* one byte more in the password */
	text[2 * AUTHFILE_FIELD_MAX + 1] = 'p';
	p = put("len", text, 2 * AUTHFILE_FIELD_MAX + 2, 0600);
	assert_int_equal(authfile_load(p, &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "longer than 255 bytes"));
}

static void test_size_limit(void **state)
{
	char *big = malloc(AUTHFILE_SIZE_MAX + 1);
	struct authfile_cred c;
	char err[512];
	const char *p;

	(void)state;
	assert_non_null(big);
	memset(big, '#', AUTHFILE_SIZE_MAX + 1);
	memcpy(big + AUTHFILE_SIZE_MAX - 5, "\nu:p\n", 5);
	p = put("size", big, AUTHFILE_SIZE_MAX, 0600); /* exactly the maximum */
	assert_int_equal(authfile_load(p, &c, err, sizeof(err)), 0);
	assert_string_equal(c.password, "p");
	p = put("size", big, AUTHFILE_SIZE_MAX + 1, 0600);
	assert_int_equal(authfile_load(p, &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "larger than 4096 bytes"));
	free(big);
}

/* A password others can read is refused (any "other" bit); the owner and
 * the group may read it. The error names the mode, never the password. */
static void test_modes(void **state)
{
	static const mode_t refused[] = { 0644, 0604, 0602, 0601, 0666, 0777 };
	static const mode_t allowed[] = { 0600, 0640, 0400, 0440, 0660 };
	struct authfile_cred c;
	char err[512];

	(void)state;
	for (size_t i = 0; i < ARRAY_LEN(refused); i++) {
		const char *p = put("mode", "relay:topsecret\n", 16, refused[i]);

		assert_int_equal(authfile_load(p, &c, err, sizeof(err)), -1);
		assert_non_null(strstr(err, "other users have access to it"));
		assert_null(strstr(err, "topsecret"));
	}
	for (size_t i = 0; i < ARRAY_LEN(allowed); i++) {
		const char *p = put("mode", "relay:topsecret\n", 16, allowed[i]);

		if (authfile_load(p, &c, err, sizeof(err)) != 0)
			fail_msg("mode %04o: %s", (unsigned)allowed[i], err);
	}
}

static void test_not_a_file(void **state)
{
	struct authfile_cred c;
	char err[512], path[256], target[256];

	(void)state;
	snprintf(path, sizeof(path), "%s/missing", dir);
	assert_int_equal(authfile_load(path, &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, strerror(ENOENT)));
	assert_int_equal(authfile_load(dir, &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not a regular file"));
	/* a symbolic link is not followed */
	snprintf(target, sizeof(target), "%s", put("target", "u:p\n", 4, 0600));
	snprintf(path, sizeof(path), "%s/link", dir);
	assert_int_equal(symlink(target, path), 0);
	assert_int_equal(authfile_load(path, &c, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "is a symbolic link"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ok),         cmocka_unit_test(test_errors),
		cmocka_unit_test(test_lengths),    cmocka_unit_test(test_size_limit),
		cmocka_unit_test(test_modes),      cmocka_unit_test(test_not_a_file),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
