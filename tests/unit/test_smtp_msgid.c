/* smtp/msgid: the Message-ID found in a header section fed in pieces of any
 * size, and nothing found in the body. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "smtp/msgid.h"

static const struct {
	const char *msg, *want;  /* want NULL: no Message-ID */
} cases[] = {
	{ "From: a@b\r\nMessage-ID: <x1@b.example>\r\n\r\nbody\r\n", "<x1@b.example>" },
	{ "message-id:<x2@b>\nSubject: s\n\nbody\n", "<x2@b>" },
	{ "MESSAGE-ID:   <x3@b>   \r\n\r\n", "<x3@b>" },
	/* folded */
	{ "Message-ID:\r\n <x4@b.example>\r\nTo: c\r\n\r\n", "<x4@b.example>" },
	/* the first one counts */
	{ "Message-ID: <one@b>\r\nMessage-ID: <two@b>\r\n\r\n", "<one@b>" },
	/* a name that only starts alike */
	{ "Message-IDs: <no@b>\r\n\r\n", NULL },
	{ "X-Message-ID: <no@b>\r\n\r\n", NULL },
	/* in the body it is text, not a field */
	{ "Subject: s\r\n\r\nMessage-ID: <body@b>\r\n", NULL },
	{ "Subject: s\n\nMessage-ID: <body@b>\n", NULL },
	{ "", NULL },
	/* control characters are dropped from the value */
	{ "Message-ID: <a\x01" "b@c>\r\n\r\n", "<ab@c>" },
};

static const char *scan_in_pieces(const char *msg, size_t piece, char *out, size_t outlen)
{
	struct smtp_msgid_scan s;
	size_t len = strlen(msg), off;
	const char *v;

	smtp_msgid_init(&s);
	for (off = 0; off < len; off += piece)
		smtp_msgid_feed(&s, msg + off, len - off < piece ? len - off : piece);
	v = smtp_msgid_value(&s);
	if (v == NULL)
		return NULL;
	snprintf(out, outlen, "%s", v);
	return out;
}

static void test_table(void **state)
{
	char out[SMTP_MSGID_MAX + 1];
	size_t i, piece;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (piece = 1; piece <= strlen(cases[i].msg) + 1; piece++) {
			const char *got = scan_in_pieces(cases[i].msg, piece, out, sizeof(out));

			if (cases[i].want == NULL && got != NULL)
				fail_msg("case %zu piece %zu: found '%s'", i, piece, got);
			if (cases[i].want != NULL && (got == NULL || strcmp(got, cases[i].want) != 0))
				fail_msg("case %zu piece %zu: got '%s', want '%s'", i, piece,
					 got ? got : "(none)", cases[i].want);
		}
	}
}

/* A value over the bound is cut at it, never overrun. */
static void test_long_value(void **state)
{
	char msg[2048], out[SMTP_MSGID_MAX + 1];
	size_t n;

	(void)state;
	n = (size_t)snprintf(msg, sizeof(msg), "Message-ID: <");
	memset(msg + n, 'x', 1000);
	memcpy(msg + n + 1000, ">\r\n\r\n", 6);
	assert_non_null(scan_in_pieces(msg, 7, out, sizeof(out)));
	assert_int_equal(strlen(out), SMTP_MSGID_MAX);
	assert_int_equal(out[0], '<');
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_long_value),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
