/* Unit tests of smtp/users.c: the auth_users_file grammar (good files and
 * every error with its FILE:LINE), crypt(3) checks of yescrypt and
 * sha512-crypt hashes, hashing, sender patterns and reference counting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp/users.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* "secret", hashed by libcrypt (Python's crypt.crypt) */
#define Y_SECRET "$y$j9T$pv2XEnWzQF90nKzaFfIbR.$e/naGgbrpdTQDpNgbHrzxpKWT31z998MXH07gB3ilx0"
#define S_SECRET                                                                               \
	"$6$rounds=5000$saltsaltsalt$PMWE8DTlam1JU37Piyk43bHcMxTJq6sgu5DKB0/tGPjanN35jcY68Qkp" \
	"DfPFUGPWX5uCxIQkSPzMmqEiVNgts."

static struct smtp_users *parse_ok(const char *text)
{
	struct smtp_users *u = NULL;
	char err[512];

	if (smtp_users_parse(text, strlen(text), "users", &u, err, sizeof(err)) != 0)
		fail_msg("unexpected error: %s", err);
	return u;
}

static void test_parse_good(void **state)
{
	struct smtp_users *u;
	const struct smtp_user *a, *b, *c;

	(void)state;
	u = parse_ok("# comment\r\n"
		     "\n"
		     "  carol:" Y_SECRET ":*@example.org, boss@Example.NET \r\n"
		     "alice@example.org:" S_SECRET "\n"
		     "\t# indented comment\n"
		     "bob:" Y_SECRET ":");
	assert_int_equal(smtp_users_count(u), 3);
	/* sorted by name */
	a = smtp_users_at(u, 0);
	b = smtp_users_at(u, 1);
	c = smtp_users_at(u, 2);
	assert_string_equal(a->name, "alice@example.org");
	assert_string_equal(b->name, "bob");
	assert_string_equal(c->name, "carol");
	assert_null(smtp_users_at(u, 3));
	assert_int_equal(a->line, 4);
	assert_int_equal(c->line, 3);
	assert_string_equal(a->hash, S_SECRET);
	assert_int_equal(a->nsenders, 0);
	assert_int_equal(b->nsenders, 0);
	assert_int_equal(c->nsenders, 2);
	assert_string_equal(c->senders[0], "*@example.org");
	assert_string_equal(c->senders[1], "boss@Example.NET");
	assert_ptr_equal(smtp_users_find(u, "bob"), b);
	assert_null(smtp_users_find(u, "Bob"));
	assert_null(smtp_users_find(u, "dave"));
	assert_string_equal(smtp_users_scheme(a->hash), "sha512-crypt");
	assert_string_equal(smtp_users_scheme(b->hash), "yescrypt");
	smtp_users_unref(u);
}

struct bad_case {
	const char *text, *want;
};

static const struct bad_case bad[] = {
	{ "alice\n", "users:1: expected name:hash[:sender-pattern,...]" },
	{ "\n\nalice:\n", "users:3: password hash is neither yescrypt ($y$...) nor sha512-crypt "
			  "($6$...) (make one with `stsrelay user add`)" },
	{ "alice:$1$salt$ez2vlPGdaLYkJam5pWs/Y1\n",
	  "users:1: password hash is neither yescrypt ($y$...) nor sha512-crypt ($6$...) "
	  "(make one with `stsrelay user add`)" },
	{ "alice:plaintext\n", "users:1: password hash is neither yescrypt ($y$...) nor "
			       "sha512-crypt ($6$...) (make one with `stsrelay user add`)" },
	{ "alice:$y$j9T\n", "users:1: password hash is not one libcrypt accepts" },
	{ "alice:$y$!!!$x$y\n", "users:1: password hash is not one libcrypt accepts" },
	{ ":" Y_SECRET "\n", "users:1: empty user name" },
	{ "al ice:" Y_SECRET "\n", "users:1: user name holds a character other than printable "
				   "ASCII without ':', ',' and blanks" },
	{ "a,b:" Y_SECRET "\n", "users:1: user name holds a character other than printable ASCII "
				"without ':', ',' and blanks" },
	{ "alice:" Y_SECRET ":*@example.org:x\n", "users:1: more than three ':'-separated fields" },
	{ "alice:" Y_SECRET ":nobody\n",
	  "users:1: sender pattern is neither *@DOMAIN nor an address local@DOMAIN" },
	{ "alice:" Y_SECRET ":*@\n",
	  "users:1: sender pattern is neither *@DOMAIN nor an address local@DOMAIN" },
	{ "alice:" Y_SECRET ":@example.org\n",
	  "users:1: sender pattern is neither *@DOMAIN nor an address local@DOMAIN" },
	{ "alice:" Y_SECRET ":a@example.org,\n", "users:1: empty sender pattern" },
	{ "alice:" Y_SECRET ":,a@example.org\n", "users:1: empty sender pattern" },
	{ "alice:" Y_SECRET "\x01\n", "users:1: control character in line" },
	{ "bob:" Y_SECRET "\nalice:" Y_SECRET "\n\nbob:" S_SECRET "\n",
	  "users:4: user 'bob' listed twice (first on line 1)" },
};

static void test_parse_errors(void **state)
{
	char err[512];
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_LEN(bad); i++) {
		struct smtp_users *u = (struct smtp_users *)1;

		err[0] = '\0';
		if (smtp_users_parse(bad[i].text, strlen(bad[i].text), "users", &u, err,
				     sizeof(err)) == 0)
			fail_msg("case %zu parsed", i);
		assert_null(u);
		if (strcmp(err, bad[i].want) != 0)
			fail_msg("case %zu: '%s', want '%s'", i, err, bad[i].want);
		/* a reason never quotes the hash */
		assert_null(strstr(err, "pv2XEn"));
	}
	/* a NUL byte anywhere */
	assert_int_equal(
		smtp_users_parse("a:b\0", 4, "users", (struct smtp_users **)err, err, sizeof(err)),
		-1);
	assert_string_equal(err, "users: NUL byte in the file");
}

/* 64 patterns are fine, 65 are not; a name of 255 characters, not 256. */
static void test_parse_limits(void **state)
{
	char text[8192], err[512], name[300];
	struct smtp_users *u;
	size_t n, i;

	(void)state;
	for (int count = 64; count <= 65; count++) {
		n = (size_t)snprintf(text, sizeof(text), "a:%s:", Y_SECRET);
		for (i = 0; i < (size_t)count; i++)
			n += (size_t)snprintf(text + n, sizeof(text) - n, "%sx%zu@example.org",
					      i ? "," : "", i);
		if (count == 64) {
			u = parse_ok(text);
			assert_int_equal(smtp_users_at(u, 0)->nsenders, 64);
			smtp_users_unref(u);
		} else {
			assert_int_equal(smtp_users_parse(text, n, "users", &u, err, sizeof(err)),
					 -1);
			assert_string_equal(err, "users:1: more than 64 sender patterns");
		}
	}
	memset(name, 'n', 256);
	name[255] = '\0';
	assert_null(smtp_users_check_name(name));
	name[255] = 'n';
	name[256] = '\0';
	assert_string_equal(smtp_users_check_name(name), "user name longer than 255 characters");
	assert_string_equal(smtp_users_check_name("#x"), "user name starts with '#'");
	assert_null(smtp_users_check_pattern("*@[192.0.2.1]"));
	assert_null(smtp_users_check_pattern("noreply@example.org"));
}

/* crypt(3) against both schemes; unknown names and wrong passwords fail. */
static void test_verify(void **state)
{
	struct smtp_users *u;

	(void)state;
	u = parse_ok("y:" Y_SECRET "\ns:" S_SECRET "\n");
	assert_ptr_equal(smtp_users_verify(u, "y", "secret"), smtp_users_find(u, "y"));
	assert_ptr_equal(smtp_users_verify(u, "s", "secret"), smtp_users_find(u, "s"));
	assert_null(smtp_users_verify(u, "y", "Secret"));
	assert_null(smtp_users_verify(u, "s", "secret "));
	assert_null(smtp_users_verify(u, "s", ""));
	assert_null(smtp_users_verify(u, "nobody", "secret"));
	assert_null(smtp_users_verify(u, "Y", "secret"));
	smtp_users_unref(u);
	u = smtp_users_empty();
	assert_non_null(u);
	assert_int_equal(smtp_users_count(u), 0);
	assert_null(smtp_users_verify(u, "y", "secret"));
	smtp_users_unref(u);
}

/* A new hash is yescrypt with a fresh salt, and checks. */
static void test_hash(void **state)
{
	char h1[SMTP_USERS_HASH_MAX + 1], h2[SMTP_USERS_HASH_MAX + 1], text[600];
	const char *why = NULL;
	struct smtp_users *u;
	char long_pw[300];

	(void)state;
	assert_int_equal(smtp_users_hash_password("pässwörd with spaces", h1, sizeof(h1), &why), 0);
	assert_int_equal(smtp_users_hash_password("pässwörd with spaces", h2, sizeof(h2), &why), 0);
	assert_memory_equal(h1, "$y$", 3);
	assert_string_not_equal(h1, h2);
	snprintf(text, sizeof(text), "u:%s\n", h1);
	u = parse_ok(text);
	assert_non_null(smtp_users_verify(u, "u", "pässwörd with spaces"));
	assert_null(smtp_users_verify(u, "u", "pässwörd with space"));
	smtp_users_unref(u);
	assert_int_equal(smtp_users_hash_password("", h1, sizeof(h1), &why), -1);
	assert_string_equal(why, "the password must be 1 to 255 characters long");
	memset(long_pw, 'p', 256);
	long_pw[256] = '\0';
	assert_int_equal(smtp_users_hash_password(long_pw, h1, sizeof(h1), &why), -1);
	long_pw[255] = '\0';
	assert_int_equal(smtp_users_hash_password(long_pw, h1, sizeof(h1), &why), 0);
	assert_int_equal(smtp_users_hash_password("x", h1, 10, &why), -1);
}

static void test_senders(void **state)
{
	struct smtp_users *u;
	const struct smtp_user *any, *some;

	(void)state;
	u = parse_ok("any:" Y_SECRET "\n"
		     "some:" Y_SECRET ":*@example.org,noreply@shop.example\n");
	any = smtp_users_find(u, "any");
	some = smtp_users_find(u, "some");
	assert_true(smtp_user_may_send(any, "x@anything.example"));
	assert_true(smtp_user_may_send(any, ""));
	assert_true(smtp_user_may_send(some, "a@example.org"));
	assert_true(smtp_user_may_send(some, "A.B@EXAMPLE.ORG"));
	assert_true(smtp_user_may_send(some, "noreply@shop.example"));
	assert_true(smtp_user_may_send(some, "NoReply@Shop.Example"));
	assert_false(smtp_user_may_send(some, "sales@shop.example"));
	assert_false(smtp_user_may_send(some, "a@sub.example.org"));
	assert_false(smtp_user_may_send(some, "a@example.org.evil"));
	assert_false(smtp_user_may_send(some, "example.org"));
	assert_false(smtp_user_may_send(some, "")); /* no bounces for a restricted user */
	smtp_users_unref(u);
}

/* A reference keeps a table (and its entries) alive after its owner let go. */
static void test_refs(void **state)
{
	struct smtp_users *u = parse_ok("a:" Y_SECRET "\n");
	const struct smtp_user *a = smtp_users_find(u, "a");

	(void)state;
	assert_ptr_equal(smtp_users_ref(u), u);
	smtp_users_unref(u);
	assert_string_equal(a->name, "a"); /* still there: ASan would say otherwise */
	smtp_users_unref(u);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_good),   cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_parse_limits), cmocka_unit_test(test_verify),
		cmocka_unit_test(test_hash),         cmocka_unit_test(test_senders),
		cmocka_unit_test(test_refs),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
