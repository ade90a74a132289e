/* Unit tests of smtp/sasl.c: AUTH PLAIN and LOGIN exchanges as tables of
 * lines and the exact replies, field limits at 254/255/256 octets, wiping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "relay/core/b64.h"
#include "smtp/sasl.h"

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

enum { C = SMTP_SASL_CHALLENGE, D = SMTP_SASL_DONE, F = SMTP_SASL_FAIL, X = SMTP_SASL_DENIED };

/* One exchange: the AUTH argument, then response lines; after each, the
 * expected result and reply (NULL for DONE); on DONE the credentials. */
struct sasl_case { /* user NULL: no credentials expected */
	const char *name;
	const char *lines[4];
	int rc[4];
	const char *reply[4];
	const char *user, *pass;
	enum smtp_sasl_mech mech;
};

static const struct sasl_case cases[] = {
	{ "PLAIN initial response", { "PLAIN AGFsaWNlAHNlY3JldA==" }, { D }, { NULL },
	  "alice", "secret", SMTP_SASL_PLAIN },
	{ "plain, lower case, CRLF kept", { "plain AGFsaWNlAHNlY3JldA==\r\n" }, { D }, { NULL },
	  "alice", "secret", SMTP_SASL_PLAIN },
	{ "PLAIN after an empty challenge", { "PLAIN", "AGFsaWNlAHNlY3JldA==\r\n" }, { C, D },
	  { "334 ", NULL }, "alice", "secret", SMTP_SASL_PLAIN },
	{ "PLAIN authzid = authcid", { "PLAIN YWxpY2UAYWxpY2UAc2VjcmV0" }, { D }, { NULL },
	  "alice", "secret", SMTP_SASL_PLAIN },
	{ "PLAIN other authzid", { "PLAIN Ym9iAGFsaWNlAHNlY3JldA==" }, { X },
	  { "535 5.7.8 Error: authentication failed: authorization identity not permitted" }, NULL, NULL, SMTP_SASL_PLAIN },
	{ "PLAIN one NUL", { "PLAIN YWxpY2UAc2VjcmV0" }, { F },
	  { "501 5.5.2 Malformed authentication response" }, NULL, NULL, SMTP_SASL_PLAIN },
	{ "PLAIN empty user", { "PLAIN AABzZWNyZXQ=" }, { F },
	  { "501 5.5.2 Malformed authentication response" }, NULL, NULL, SMTP_SASL_PLAIN },
	{ "PLAIN empty password", { "PLAIN AGFsaWNlAA==" }, { F },
	  { "501 5.5.2 Malformed authentication response" }, NULL, NULL, SMTP_SASL_PLAIN },
	{ "PLAIN three NULs", { "PLAIN AGFsaWNlAHNlYwByZXQ=" }, { F },
	  { "501 5.5.2 Malformed authentication response" }, NULL, NULL, SMTP_SASL_PLAIN },
	{ "PLAIN '=' (empty initial response)", { "PLAIN =" }, { F },
	  { "501 5.5.2 Malformed authentication response" }, NULL, NULL, SMTP_SASL_PLAIN },
	{ "PLAIN not base64", { "PLAIN AGFsaWNl!HNlY3JldA==" }, { F },
	  { "501 5.5.2 Cannot decode response" }, NULL, NULL, SMTP_SASL_PLAIN },
	{ "PLAIN cancelled", { "PLAIN", "*" }, { C, F },
	  { "334 ", "501 5.7.0 Authentication aborted" }, NULL, NULL, SMTP_SASL_PLAIN },
	{ "LOGIN", { "LOGIN", "YWxpY2U=", "c2VjcmV0" }, { C, C, D },
	  { "334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6", NULL }, "alice", "secret", SMTP_SASL_LOGIN },
	{ "LOGIN with the user name at once", { "LOGIN YWxpY2U=", "c2VjcmV0" }, { C, D },
	  { "334 UGFzc3dvcmQ6", NULL }, "alice", "secret", SMTP_SASL_LOGIN },
	{ "LOGIN cancelled at the password", { "LOGIN", "YWxpY2U=", "*\r\n" }, { C, C, F },
	  { "334 VXNlcm5hbWU6", "334 UGFzc3dvcmQ6", "501 5.7.0 Authentication aborted" }, NULL, NULL, SMTP_SASL_PLAIN },
	{ "LOGIN empty user", { "LOGIN", "" }, { C, F },
	  { "334 VXNlcm5hbWU6", "501 5.5.2 Malformed authentication response" }, NULL, NULL, SMTP_SASL_PLAIN },
	{ "LOGIN user with a NUL", { "LOGIN", "YQBi" }, { C, F },
	  { "334 VXNlcm5hbWU6", "501 5.5.2 Malformed authentication response" }, NULL, NULL, SMTP_SASL_PLAIN },
	{ "LOGIN garbage", { "LOGIN", "%%%%" }, { C, F },
	  { "334 VXNlcm5hbWU6", "501 5.5.2 Cannot decode response" }, NULL, NULL, SMTP_SASL_PLAIN },
	{ "unknown mechanism", { "CRAM-MD5" }, { F },
	  { "504 5.5.4 Unrecognized authentication type" }, NULL, NULL, SMTP_SASL_PLAIN },
	{ "PLAINX", { "PLAINX" }, { F }, { "504 5.5.4 Unrecognized authentication type" }, NULL, NULL, SMTP_SASL_PLAIN },
	{ "no mechanism", { "" }, { F },
	  { "501 5.5.4 Syntax: AUTH mechanism [initial-response]" }, NULL, NULL, SMTP_SASL_PLAIN },
	{ "two responses", { "PLAIN AGFsaWNlAHNlY3JldA== xx" }, { F },
	  { "501 5.5.4 Syntax: AUTH mechanism [initial-response]" }, NULL, NULL, SMTP_SASL_PLAIN },
};

static enum smtp_sasl_rc run_line(struct smtp_sasl *x, int first, const char *line,
				  const char **reply)
{
	return first ? smtp_sasl_start(x, line, strlen(line), reply)
		     : smtp_sasl_step(x, line, strlen(line), reply);
}

static void test_table(void **state)
{
	size_t i, k;

	(void)state;
	for (i = 0; i < ARRAY_LEN(cases); i++) {
		const struct sasl_case *t = &cases[i];
		struct smtp_sasl x;

		for (k = 0; k < 4 && t->lines[k] != NULL; k++) {
			const char *reply = "unset";
			int rc = (int)run_line(&x, k == 0, t->lines[k], &reply);

			if (rc != t->rc[k])
				fail_msg("%s, line %zu: rc %d, want %d (%s)", t->name, k, rc,
					 t->rc[k], reply ? reply : "NULL");
			if (t->reply[k] == NULL ? reply != NULL : strcmp(reply, t->reply[k]) != 0)
				fail_msg("%s, line %zu: reply '%s', want '%s'", t->name, k,
					 reply ? reply : "NULL", t->reply[k] ? t->reply[k] : "NULL");
			if (rc == D) {
				assert_string_equal(x.user, t->user);
				assert_string_equal(x.pass, t->pass);
				assert_int_equal(x.mech, t->mech);
			}
		}
		/* the credentials of any exchange are wiped by clear */
		smtp_sasl_clear(&x);
		for (k = 0; k < sizeof(x.pass); k++)
			assert_int_equal(x.pass[k] | x.user[k], 0);
	}
}

/* A failed exchange keeps nothing: a FAIL or DENIED leaves no password. */
static void test_failure_wipes(void **state)
{
	struct smtp_sasl x;
	const char *r;

	(void)state;
	assert_int_equal(smtp_sasl_start(&x, "PLAIN Ym9iAGFsaWNlAHNlY3JldA==", 30, &r), X);
	assert_int_equal(x.pass[0], 0);
	assert_int_equal(x.user[0], 0);
	/* no step after the end */
	assert_int_equal(smtp_sasl_step(&x, "c2VjcmV0", 8, &r), F);
	assert_string_equal(r, "503 5.5.1 Error: no authentication in progress");
}

/* Builds "PLAIN " + base64(authzid NUL user NUL pass) with fields of the
 * given lengths, and runs it. */
static enum smtp_sasl_rc plain_of(size_t zlen, size_t ulen, size_t plen, struct smtp_sasl *x)
{
	char msg[1024], line[1500];
	const char *r;
	size_t n = 0;
	ssize_t e;

	memset(msg + n, 'z', zlen);
	n += zlen;
	msg[n++] = '\0';
	memset(msg + n, 'u', ulen);
	n += ulen;
	msg[n++] = '\0';
	memset(msg + n, 'p', plen);
	n += plen;
	memcpy(line, "PLAIN ", 6);
	e = core_b64_encode(msg, n, line + 6, sizeof(line) - 6);
	assert_true(e > 0);
	/* an authzid must equal the user: make it so when both are given */
	if (zlen > 0 && zlen == ulen) {
		memset(msg, 'u', zlen);
		e = core_b64_encode(msg, n, line + 6, sizeof(line) - 6);
	}
	return smtp_sasl_start(x, line, strlen(line), &r);
}

/* RFC 4616's 255-octet fields: 255 fits, 256 does not; and the line limit. */
static void test_limits(void **state)
{
	struct smtp_sasl x;
	char line[SMTP_SASL_LINE_MAX + 8];
	const char *r;

	(void)state;
	assert_int_equal(plain_of(0, 255, 255, &x), D);
	assert_int_equal(strlen(x.user), 255);
	assert_int_equal(strlen(x.pass), 255);
	assert_int_equal(plain_of(0, 256, 10, &x), F);
	assert_int_equal(plain_of(0, 10, 256, &x), F);
	assert_int_equal(plain_of(200, 200, 200, &x), D); /* 602 octets, 804 in base64 */
	/* a response line of SMTP_SASL_LINE_MAX octets is refused whole */
	memset(line, 'A', sizeof(line));
	assert_int_equal(smtp_sasl_start(&x, "LOGIN", 5, &r), C);
	assert_int_equal(smtp_sasl_step(&x, line, SMTP_SASL_LINE_MAX, &r), F);
	assert_string_equal(r, "500 5.5.6 Authentication exchange line is too long");
	assert_int_equal(smtp_sasl_start(&x, "LOGIN", 5, &r), C);
	/* 996 'A's + CRLF: below the limit, decodes to 747 octets: too long a name */
	memcpy(line + 996, "\r\n", 2);
	assert_int_equal(smtp_sasl_step(&x, line, 998, &r), F);
	assert_string_equal(r, "501 5.5.2 Malformed authentication response");
	/* a LOGIN name of exactly 255 */
	{
		char name[256], b64[400];

		memset(name, 'n', 255);
		assert_true(core_b64_encode(name, 255, b64, sizeof(b64)) > 0);
		assert_int_equal(smtp_sasl_start(&x, "LOGIN", 5, &r), C);
		assert_int_equal(smtp_sasl_step(&x, b64, strlen(b64), &r), C);
		assert_int_equal(smtp_sasl_step(&x, "cA==", 4, &r), D);
		assert_int_equal(strlen(x.user), 255);
		assert_string_equal(x.pass, "p");
	}
	assert_string_equal(smtp_sasl_mech_name(SMTP_SASL_PLAIN), "PLAIN");
	assert_string_equal(smtp_sasl_mech_name(SMTP_SASL_LOGIN), "LOGIN");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_failure_wipes),
		cmocka_unit_test(test_limits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
