/* Table tests for the SMTP server command parser (smtp/command.c): each case
 * is a line, the expected code, and the fields that must come out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "smtp/command.h"

struct cmd_case {
	const char *line;
	size_t len;                 /* 0: strlen(line) */
	int code;                   /* expected return */
	enum smtp_verb verb;        /* checked when code == 0 */
	const char *path;           /* checked when non-NULL */
	const char *arg;            /* checked when non-NULL */
	uint64_t size;
	int has_size;
	enum smtp_body body;
	int smtputf8;
	const char *reason_prefix;  /* checked when non-NULL and code != 0 */
};

static const struct cmd_case cases[] = {
	/* greetings */
	{ "EHLO client.example\r\n", 0, 0, SMTP_CMD_EHLO, NULL, "client.example", 0, 0, 0, 0, NULL },
	{ "ehlo client.example", 0, 0, SMTP_CMD_EHLO, NULL, "client.example", 0, 0, 0, 0, NULL },
	{ "HELO [127.0.0.1]\n", 0, 0, SMTP_CMD_HELO, NULL, "[127.0.0.1]", 0, 0, 0, 0, NULL },
	{ "EHLO\r\n", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.5.4" },
	{ "HELO   \r\n", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.5.4" },
	{ "EHLO a b\r\n", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.5.4 Invalid" },
	{ "EHLO h\xc3\xa9llo\r\n", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.5.4 Invalid" },
	{ "EHLO host.example   \r\n", 0, 0, SMTP_CMD_EHLO, NULL, "host.example", 0, 0, 0, 0, NULL },
	/* MAIL */
	{ "MAIL FROM:<a@b.example>\r\n", 0, 0, SMTP_CMD_MAIL, "a@b.example", NULL, 0, 0, 0, 0, NULL },
	{ "mail from:<A.B+c@Sub.Example.COM>", 0, 0, SMTP_CMD_MAIL, "A.B+c@Sub.Example.COM", NULL, 0, 0, 0, 0, NULL },
	{ "MAIL FROM: <a@b.example>\r\n", 0, 0, SMTP_CMD_MAIL, "a@b.example", NULL, 0, 0, 0, 0, NULL },
	{ "MAIL FROM:<>\r\n", 0, 0, SMTP_CMD_MAIL, "", NULL, 0, 0, 0, 0, NULL },
	{ "MAIL FROM:<a@b.example> SIZE=12345\r\n", 0, 0, SMTP_CMD_MAIL, "a@b.example", NULL, 12345, 1, 0, 0, NULL },
	{ "MAIL FROM:<a@b.example> BODY=8BITMIME SIZE=0", 0, 0, SMTP_CMD_MAIL, "a@b.example", NULL, 0, 1, SMTP_BODY_8BITMIME, 0, NULL },
	{ "MAIL FROM:<a@b.example> body=7bit", 0, 0, SMTP_CMD_MAIL, "a@b.example", NULL, 0, 0, SMTP_BODY_7BIT, 0, NULL },
	{ "MAIL FROM:<a@b.example> SMTPUTF8", 0, 0, SMTP_CMD_MAIL, "a@b.example", NULL, 0, 0, 0, 1, NULL },
	{ "MAIL FROM:<@relay1.example,@relay2.example:a@b.example>", 0, 0, SMTP_CMD_MAIL, "a@b.example", NULL, 0, 0, 0, 0, NULL },
	{ "MAIL FROM:<\"john doe\"@b.example>", 0, 0, SMTP_CMD_MAIL, "\"john doe\"@b.example", NULL, 0, 0, 0, 0, NULL },
	/* RFC-valid, but the client cannot send '<' or '>' (smtp/address.h): refused here */
	{ "MAIL FROM:<\"a>b\"@b.example>", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.1.7 Bad sender address syntax" },
	{ "MAIL FROM:<\"a\\<b\"@b.example>", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.1.7 Bad sender address syntax" },
	{ "MAIL FROM:<a@[192.0.2.1]>", 0, 0, SMTP_CMD_MAIL, "a@[192.0.2.1]", NULL, 0, 0, 0, 0, NULL },
	{ "MAIL FROM:<a@[IPv6:2001:db8::1]>", 0, 0, SMTP_CMD_MAIL, "a@[IPv6:2001:db8::1]", NULL, 0, 0, 0, 0, NULL },
	{ "MAIL FROM:a@b.example", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.5.4" },
	{ "MAIL FROM:<a@b.example", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.5.4" },
	{ "MAIL TO:<a@b.example>", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.5.4 Syntax: MAIL" },
	{ "MAIL", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.5.4" },
	{ "MAIL FROM:<a@b.example> SIZE=", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.5.4 Bad SIZE" },
	{ "MAIL FROM:<a@b.example> SIZE=12x", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.5.4 Bad SIZE" },
	{ "MAIL FROM:<a@b.example> SIZE=99999999999999999999999", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.5.4 Bad SIZE" },
	{ "MAIL FROM:<a@b.example> SIZE=1 SIZE=2", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.5.4 Bad SIZE" },
	{ "MAIL FROM:<a@b.example> BODY=BINARYMIME", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.5.4 BODY" },
	{ "MAIL FROM:<a@b.example> RET=FULL", 0, 555, 0, NULL, NULL, 0, 0, 0, 0, "5.5.4 Unsupported" },
	{ "MAIL FROM:<a@b.example>SIZE=1", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.5.4" },
	{ "MAIL FROM:<a..b@b.example>", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.1.7" },
	{ "MAIL FROM:<.a@b.example>", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.1.7" },
	{ "MAIL FROM:<a@-b.example>", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.1.7" },
	{ "MAIL FROM:<a@b..example>", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.1.7" },
	{ "MAIL FROM:<a@[300.1.1.1]>", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.1.7" },
	{ "MAIL FROM:<nodomain>", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.1.7" },
	{ "MAIL FROM:<a b@c.example>", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.1.7" },
	{ "MAIL FROM:<@relay.example a@b.example>", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.5.4" },
	/* RCPT */
	{ "RCPT TO:<x@y.example>\r\n", 0, 0, SMTP_CMD_RCPT, "x@y.example", NULL, 0, 0, 0, 0, NULL },
	{ "Rcpt To: <x@y.example>", 0, 0, SMTP_CMD_RCPT, "x@y.example", NULL, 0, 0, 0, 0, NULL },
	{ "RCPT TO:<>", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.1.3" },
	/* RFC 5321 §4.5.1: <postmaster> without a domain, RCPT only */
	{ "RCPT TO:<Postmaster>", 0, 0, SMTP_CMD_RCPT, "Postmaster", NULL, 0, 0, 0, 0, NULL },
	{ "RCPT TO:<root>", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.1.3" },
	{ "MAIL FROM:<postmaster>", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.1.7" },
	{ "RCPT TO:<x@y.example> NOTIFY=NEVER", 0, 555, 0, NULL, NULL, 0, 0, 0, 0, "5.5.4" },
	{ "RCPT FROM:<x@y.example>", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.5.4 Syntax: RCPT" },
	{ "RCPT TO:<x@y_z.example>", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.1.3" },
	{ "RCPT TO:<\xc3\xa9@y.example>", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.1.3" },
	{ "RCPT TO:<\"a>b\"@y.example>", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.1.3 Bad recipient address syntax" },
	{ "RCPT TO:<\"a<b\"@y.example>", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.1.3 Bad recipient address syntax" },
	{ "RCPT TO:<\"<x@evil.example>\"@y.example>", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.1.3 Bad recipient address syntax" },
	{ "RCPT TO:<\"john doe\"@y.example>", 0, 0, SMTP_CMD_RCPT, "\"john doe\"@y.example", NULL, 0, 0, 0, 0, NULL },
	/* simple verbs */
	{ "DATA\r\n", 0, 0, SMTP_CMD_DATA, NULL, "", 0, 0, 0, 0, NULL },
	{ "data", 0, 0, SMTP_CMD_DATA, NULL, NULL, 0, 0, 0, 0, NULL },
	{ "DATA now", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.5.4" },
	{ "RSET", 0, 0, SMTP_CMD_RSET, NULL, NULL, 0, 0, 0, 0, NULL },
	{ "NOOP", 0, 0, SMTP_CMD_NOOP, NULL, NULL, 0, 0, 0, 0, NULL },
	{ "NOOP anything goes", 0, 0, SMTP_CMD_NOOP, NULL, "anything goes", 0, 0, 0, 0, NULL },
	{ "QUIT\r\n", 0, 0, SMTP_CMD_QUIT, NULL, NULL, 0, 0, 0, 0, NULL },
	{ "QUIT now", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.5.4" },
	{ "VRFY postmaster", 0, 0, SMTP_CMD_VRFY, NULL, "postmaster", 0, 0, 0, 0, NULL },
	{ "VRFY", 0, 501, 0, NULL, NULL, 0, 0, 0, 0, "5.5.4" },
	{ "EXPN list", 0, 0, SMTP_CMD_EXPN, NULL, "list", 0, 0, 0, 0, NULL },
	{ "HELP", 0, 0, SMTP_CMD_HELP, NULL, "", 0, 0, 0, 0, NULL },
	{ "HELP MAIL", 0, 0, SMTP_CMD_HELP, NULL, "MAIL", 0, 0, 0, 0, NULL },
	{ "STARTTLS", 0, 0, SMTP_CMD_STARTTLS, NULL, NULL, 0, 0, 0, 0, NULL },
	{ "AUTH PLAIN AGZvbwBiYXI=", 0, 0, SMTP_CMD_AUTH, NULL, "PLAIN AGZvbwBiYXI=", 0, 0, 0, 0, NULL },
	{ "BDAT 100 LAST", 0, 0, SMTP_CMD_BDAT, NULL, "100 LAST", 0, 0, 0, 0, NULL },
	/* bad input */
	{ "", 0, 500, 0, NULL, NULL, 0, 0, 0, 0, "5.5.2" },
	{ "\r\n", 0, 500, 0, NULL, NULL, 0, 0, 0, 0, "5.5.2" },
	{ "FOO bar", 0, 500, 0, NULL, NULL, 0, 0, 0, 0, "5.5.2" },
	{ "MAILFROM:<a@b.example>", 0, 500, 0, NULL, NULL, 0, 0, 0, 0, "5.5.2" },
	{ "EHL", 0, 500, 0, NULL, NULL, 0, 0, 0, 0, "5.5.2" },
	{ "NOOP\0x", 6, 500, 0, NULL, NULL, 0, 0, 0, 0, "5.5.2" },
	{ "NOOP \x01", 0, 500, 0, NULL, NULL, 0, 0, 0, 0, "5.5.2" },
	{ "NOOP a\rb", 0, 500, 0, NULL, NULL, 0, 0, 0, 0, "5.5.2" },
	{ "\xff\xfe\xfd", 0, 500, 0, NULL, NULL, 0, 0, 0, 0, "5.5.2" },
	{ "GET / HTTP/1.1\r\n", 0, 500, 0, NULL, NULL, 0, 0, 0, 0, "5.5.2" },
};

static void test_table(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct cmd_case *c = &cases[i];
		struct smtp_command cmd;
		const char *reason = NULL;
		size_t len = c->len ? c->len : strlen(c->line);
		int rc = smtp_command_parse(c->line, len, &cmd, &reason);

		if (rc != c->code)
			fail_msg("case %zu '%s': got %d (%s), want %d", i, c->line, rc,
				 reason ? reason : "-", c->code);
		if (rc != 0) {
			assert_non_null(reason);
			if (c->reason_prefix && strncmp(reason, c->reason_prefix, strlen(c->reason_prefix)) != 0)
				fail_msg("case %zu '%s': reason '%s', want prefix '%s'", i, c->line, reason,
					 c->reason_prefix);
			continue;
		}
		if (cmd.verb != c->verb)
			fail_msg("case %zu '%s': verb %d want %d", i, c->line, cmd.verb, c->verb);
		if (c->path)
			assert_string_equal(cmd.path, c->path);
		if (c->arg)
			assert_string_equal(cmd.arg, c->arg);
		assert_int_equal(cmd.size, c->size);
		assert_int_equal(cmd.has_size, c->has_size);
		assert_int_equal(cmd.body, c->body);
		assert_int_equal(cmd.smtputf8, c->smtputf8);
	}
	assert_true(i >= 40);
}

static void test_line_length(void **state)
{
	char line[SMTP_LINE_MAX + 10];
	struct smtp_command cmd;
	const char *reason;
	size_t n;

	(void)state;
	/* NOOP + argument filling exactly SMTP_LINE_MAX with CRLF: accepted */
	memset(line, 'x', sizeof(line));
	memcpy(line, "NOOP ", 5);
	n = SMTP_LINE_MAX;
	line[n - 2] = '\r';
	line[n - 1] = '\n';
	assert_int_equal(smtp_command_parse(line, n, &cmd, &reason), 0);
	assert_int_equal(cmd.verb, SMTP_CMD_NOOP);
	/* one byte more: too long */
	memset(line, 'x', sizeof(line));
	memcpy(line, "NOOP ", 5);
	n = SMTP_LINE_MAX + 1;
	line[n - 2] = '\r';
	line[n - 1] = '\n';
	assert_int_equal(smtp_command_parse(line, n, &cmd, &reason), 500);
	assert_string_equal(reason, "5.5.2 Line too long");
}

static void test_path_length(void **state)
{
	char line[600], local[65];
	struct smtp_command cmd;
	const char *reason;
	char dom[300];
	size_t i;

	(void)state;
	/* local part of 64 is fine, 65 is not */
	memset(local, 'a', 64);
	local[64] = '\0';
	snprintf(line, sizeof(line), "RCPT TO:<%s@x.example>", local);
	assert_int_equal(smtp_command_parse(line, strlen(line), &cmd, &reason), 0);
	snprintf(line, sizeof(line), "RCPT TO:<%sa@x.example>", local);
	assert_int_equal(smtp_command_parse(line, strlen(line), &cmd, &reason), 501);
	/* a path over SMTP_PATH_MAX */
	for (i = 0; i + 2 < sizeof(dom) - 1; i += 2) {
		dom[i] = 'a';
		dom[i + 1] = '.';
	}
	dom[i] = 'b';
	dom[i + 1] = '\0';
	snprintf(line, sizeof(line), "MAIL FROM:<a@%s>", dom);
	assert_int_equal(smtp_command_parse(line, strlen(line), &cmd, &reason), 501);
	assert_string_equal(reason, "5.1.7 Sender address too long");
	/* label of 64 characters is invalid */
	memset(dom, 'd', 64);
	dom[64] = '\0';
	snprintf(line, sizeof(line), "RCPT TO:<a@%s.example>", dom);
	assert_int_equal(smtp_command_parse(line, strlen(line), &cmd, &reason), 501);
	dom[63] = '\0';
	snprintf(line, sizeof(line), "RCPT TO:<a@%s.example>", dom);
	assert_int_equal(smtp_command_parse(line, strlen(line), &cmd, &reason), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_line_length),
		cmocka_unit_test(test_path_length),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
