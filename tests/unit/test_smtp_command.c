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

/* Rows name their fields; a field left out is 0 or NULL. */
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
	{ .line = "EHLO client.example\r\n", .verb = SMTP_CMD_EHLO, .arg = "client.example" },
	{ .line = "ehlo client.example", .verb = SMTP_CMD_EHLO, .arg = "client.example" },
	{ .line = "HELO [127.0.0.1]\n", .verb = SMTP_CMD_HELO, .arg = "[127.0.0.1]" },
	{ .line = "EHLO\r\n", .code = 501, .reason_prefix = "5.5.4" },
	{ .line = "HELO   \r\n", .code = 501, .reason_prefix = "5.5.4" },
	{ .line = "EHLO a b\r\n", .code = 501, .reason_prefix = "5.5.4 Invalid" },
	{ .line = "EHLO h\xc3\xa9llo\r\n", .code = 501, .reason_prefix = "5.5.4 Invalid" },
	{ .line = "EHLO host.example   \r\n", .verb = SMTP_CMD_EHLO, .arg = "host.example" },
	/* MAIL */
	{ .line = "MAIL FROM:<a@b.example>\r\n", .verb = SMTP_CMD_MAIL, .path = "a@b.example" },
	{ .line = "mail from:<A.B+c@Sub.Example.COM>",
	  .verb = SMTP_CMD_MAIL,
	  .path = "A.B+c@Sub.Example.COM" },
	{ .line = "MAIL FROM: <a@b.example>\r\n", .verb = SMTP_CMD_MAIL, .path = "a@b.example" },
	{ .line = "MAIL FROM:<>\r\n", .verb = SMTP_CMD_MAIL, .path = "" },
	{ .line = "MAIL FROM:<a@b.example> SIZE=12345\r\n",
	  .verb = SMTP_CMD_MAIL,
	  .path = "a@b.example",
	  .size = 12345,
	  .has_size = 1 },
	{ .line = "MAIL FROM:<a@b.example> BODY=8BITMIME SIZE=0",
	  .verb = SMTP_CMD_MAIL,
	  .path = "a@b.example",
	  .has_size = 1,
	  .body = SMTP_BODY_8BITMIME },
	{ .line = "MAIL FROM:<a@b.example> body=7bit",
	  .verb = SMTP_CMD_MAIL,
	  .path = "a@b.example",
	  .body = SMTP_BODY_7BIT },
	{ .line = "MAIL FROM:<a@b.example> SMTPUTF8",
	  .verb = SMTP_CMD_MAIL,
	  .path = "a@b.example",
	  .smtputf8 = 1 },
	{ .line = "MAIL FROM:<@relay1.example,@relay2.example:a@b.example>",
	  .verb = SMTP_CMD_MAIL,
	  .path = "a@b.example" },
	{ .line = "MAIL FROM:<\"john doe\"@b.example>",
	  .verb = SMTP_CMD_MAIL,
	  .path = "\"john doe\"@b.example" },
	/* RFC-valid, but the client cannot send '<' or '>' (smtp/address.h): refused here */
	{ .line = "MAIL FROM:<\"a>b\"@b.example>",
	  .code = 501,
	  .reason_prefix = "5.1.7 Bad sender address syntax" },
	{ .line = "MAIL FROM:<\"a\\<b\"@b.example>",
	  .code = 501,
	  .reason_prefix = "5.1.7 Bad sender address syntax" },
	{ .line = "MAIL FROM:<a@[192.0.2.1]>", .verb = SMTP_CMD_MAIL, .path = "a@[192.0.2.1]" },
	{ .line = "MAIL FROM:<a@[IPv6:2001:db8::1]>",
	  .verb = SMTP_CMD_MAIL,
	  .path = "a@[IPv6:2001:db8::1]" },
	{ .line = "MAIL FROM:a@b.example", .code = 501, .reason_prefix = "5.5.4" },
	{ .line = "MAIL FROM:<a@b.example", .code = 501, .reason_prefix = "5.5.4" },
	{ .line = "MAIL TO:<a@b.example>", .code = 501, .reason_prefix = "5.5.4 Syntax: MAIL" },
	{ .line = "MAIL", .code = 501, .reason_prefix = "5.5.4" },
	{ .line = "MAIL FROM:<a@b.example> SIZE=", .code = 501, .reason_prefix = "5.5.4 Bad SIZE" },
	{ .line = "MAIL FROM:<a@b.example> SIZE=12x",
	  .code = 501,
	  .reason_prefix = "5.5.4 Bad SIZE" },
	{ .line = "MAIL FROM:<a@b.example> SIZE=99999999999999999999999",
	  .code = 501,
	  .reason_prefix = "5.5.4 Bad SIZE" },
	{ .line = "MAIL FROM:<a@b.example> SIZE=1 SIZE=2",
	  .code = 501,
	  .reason_prefix = "5.5.4 Bad SIZE" },
	{ .line = "MAIL FROM:<a@b.example> BODY=BINARYMIME",
	  .code = 501,
	  .reason_prefix = "5.5.4 BODY" },
	{ .line = "MAIL FROM:<a@b.example> RET=FULL",
	  .code = 555,
	  .reason_prefix = "5.5.4 Unsupported" },
	{ .line = "MAIL FROM:<a@b.example>SIZE=1", .code = 501, .reason_prefix = "5.5.4" },
	{ .line = "MAIL FROM:<a..b@b.example>", .code = 501, .reason_prefix = "5.1.7" },
	{ .line = "MAIL FROM:<.a@b.example>", .code = 501, .reason_prefix = "5.1.7" },
	{ .line = "MAIL FROM:<a@-b.example>", .code = 501, .reason_prefix = "5.1.7" },
	{ .line = "MAIL FROM:<a@b..example>", .code = 501, .reason_prefix = "5.1.7" },
	{ .line = "MAIL FROM:<a@[300.1.1.1]>", .code = 501, .reason_prefix = "5.1.7" },
	{ .line = "MAIL FROM:<nodomain>", .code = 501, .reason_prefix = "5.1.7" },
	{ .line = "MAIL FROM:<a b@c.example>", .code = 501, .reason_prefix = "5.1.7" },
	{ .line = "MAIL FROM:<@relay.example a@b.example>", .code = 501, .reason_prefix = "5.5.4" },
	/* RCPT */
	{ .line = "RCPT TO:<x@y.example>\r\n", .verb = SMTP_CMD_RCPT, .path = "x@y.example" },
	{ .line = "Rcpt To: <x@y.example>", .verb = SMTP_CMD_RCPT, .path = "x@y.example" },
	{ .line = "RCPT TO:<>", .code = 501, .reason_prefix = "5.1.3" },
	/* RFC 5321 §4.5.1: <postmaster> without a domain, RCPT only */
	{ .line = "RCPT TO:<Postmaster>", .verb = SMTP_CMD_RCPT, .path = "Postmaster" },
	{ .line = "RCPT TO:<root>", .code = 501, .reason_prefix = "5.1.3" },
	{ .line = "MAIL FROM:<postmaster>", .code = 501, .reason_prefix = "5.1.7" },
	{ .line = "RCPT TO:<x@y.example> NOTIFY=NEVER", .code = 555, .reason_prefix = "5.5.4" },
	{ .line = "RCPT FROM:<x@y.example>", .code = 501, .reason_prefix = "5.5.4 Syntax: RCPT" },
	{ .line = "RCPT TO:<x@y_z.example>", .code = 501, .reason_prefix = "5.1.3" },
	{ .line = "RCPT TO:<\xc3\xa9@y.example>", .code = 501, .reason_prefix = "5.1.3" },
	{ .line = "RCPT TO:<\"a>b\"@y.example>",
	  .code = 501,
	  .reason_prefix = "5.1.3 Bad recipient address syntax" },
	{ .line = "RCPT TO:<\"a<b\"@y.example>",
	  .code = 501,
	  .reason_prefix = "5.1.3 Bad recipient address syntax" },
	{ .line = "RCPT TO:<\"<x@evil.example>\"@y.example>",
	  .code = 501,
	  .reason_prefix = "5.1.3 Bad recipient address syntax" },
	{ .line = "RCPT TO:<\"john doe\"@y.example>",
	  .verb = SMTP_CMD_RCPT,
	  .path = "\"john doe\"@y.example" },
	/* simple verbs */
	{ .line = "DATA\r\n", .verb = SMTP_CMD_DATA, .arg = "" },
	{ .line = "data", .verb = SMTP_CMD_DATA },
	{ .line = "DATA now", .code = 501, .reason_prefix = "5.5.4" },
	{ .line = "RSET", .verb = SMTP_CMD_RSET },
	{ .line = "NOOP", .verb = SMTP_CMD_NOOP },
	{ .line = "NOOP anything goes", .verb = SMTP_CMD_NOOP, .arg = "anything goes" },
	{ .line = "QUIT\r\n", .verb = SMTP_CMD_QUIT },
	{ .line = "QUIT now", .code = 501, .reason_prefix = "5.5.4" },
	{ .line = "VRFY postmaster", .verb = SMTP_CMD_VRFY, .arg = "postmaster" },
	{ .line = "VRFY", .code = 501, .reason_prefix = "5.5.4" },
	{ .line = "EXPN list", .verb = SMTP_CMD_EXPN, .arg = "list" },
	{ .line = "HELP", .verb = SMTP_CMD_HELP, .arg = "" },
	{ .line = "HELP MAIL", .verb = SMTP_CMD_HELP, .arg = "MAIL" },
	{ .line = "STARTTLS", .verb = SMTP_CMD_STARTTLS },
	{ .line = "AUTH PLAIN AGZvbwBiYXI=", .verb = SMTP_CMD_AUTH, .arg = "PLAIN AGZvbwBiYXI=" },
	{ .line = "BDAT 100 LAST", .verb = SMTP_CMD_BDAT, .arg = "100 LAST" },
	/* bad input */
	{ .line = "", .code = 500, .reason_prefix = "5.5.2" },
	{ .line = "\r\n", .code = 500, .reason_prefix = "5.5.2" },
	{ .line = "FOO bar", .code = 500, .reason_prefix = "5.5.2" },
	{ .line = "MAILFROM:<a@b.example>", .code = 500, .reason_prefix = "5.5.2" },
	{ .line = "EHL", .code = 500, .reason_prefix = "5.5.2" },
	{ .line = "NOOP\0x", .len = 6, .code = 500, .reason_prefix = "5.5.2" },
	{ .line = "NOOP \x01", .code = 500, .reason_prefix = "5.5.2" },
	{ .line = "NOOP a\rb", .code = 500, .reason_prefix = "5.5.2" },
	{ .line = "\xff\xfe\xfd", .code = 500, .reason_prefix = "5.5.2" },
	{ .line = "GET / HTTP/1.1\r\n", .code = 500, .reason_prefix = "5.5.2" },
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
