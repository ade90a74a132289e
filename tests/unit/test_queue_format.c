/* Unit tests of the queue file formats: header and state round trips, every
 * class of bad input the decoders must refuse, and the retry schedule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "queue/queue.h"

static void make_env(struct queue_envelope *env, size_t nrcpts)
{
	size_t i;

	memset(env, 0, sizeof(*env));
	snprintf(env->id, sizeof(env->id), "0123456789AB");
	env->queued_at = 1700000000;
	snprintf(env->sender, sizeof(env->sender), "\"john doe\"@example.com");
	snprintf(env->submitter, sizeof(env->submitter), "alice");
	snprintf(env->client, sizeof(env->client), "mail.example.net[192.0.2.1]");
	env->flags = QUEUE_F_NOBOUNCE | QUEUE_F_TLSRPT;
	for (i = 0; i < nrcpts; i++) {
		char a[64];

		snprintf(a, sizeof(a), "r%zu@example.org", i);
		assert_int_equal(queue_envelope_add_rcpt(env, a), 0);
	}
}

static void test_header_round_trip(void **state)
{
	struct queue_envelope env, back;
	const char *err = NULL;
	char *text = NULL, *withdata;
	size_t len;

	(void)state;
	make_env(&env, 3);
	/* UTF-8 in an address is allowed */
	snprintf(env.rcpts[2].address, sizeof(env.rcpts[2].address), "j\xc3\xb6rg@b\xc3\xbc.example");
	assert_int_equal(queue_header_encode(&env, &text, &len), 0);
	assert_true(strncmp(text, "STSRELAY-QUEUE 1\nid 0123456789AB\n", 33) == 0);
	/* the decoder stops at "end": data after it is not header */
	withdata = malloc(len + 8);
	assert_non_null(withdata);
	memcpy(withdata, text, len);
	memcpy(withdata + len, "DATA\r\n.\n", 8);
	assert_int_equal(queue_header_decode(withdata, len + 8, &back, &err), 0);
	assert_int_equal(back.data_offset, len);
	assert_string_equal(back.id, env.id);
	assert_int_equal(back.queued_at, env.queued_at);
	assert_string_equal(back.sender, env.sender);
	assert_string_equal(back.submitter, "alice");
	assert_string_equal(back.client, env.client);
	assert_int_equal(back.flags, env.flags);
	assert_int_equal(back.nrcpts, 3);
	assert_string_equal(back.rcpts[0].address, "r0@example.org");
	assert_string_equal(back.rcpts[2].address, env.rcpts[2].address);
	assert_int_equal(back.rcpts[1].status, QUEUE_PENDING);
	queue_envelope_clear(&back);
	free(withdata);
	free(text);
	queue_envelope_clear(&env);
}

static void test_header_empty_fields(void **state)
{
	struct queue_envelope env, back;
	const char *err = NULL;
	char *text = NULL;
	size_t len;

	(void)state;
	make_env(&env, 1);
	env.sender[0] = env.submitter[0] = env.client[0] = '\0';
	env.flags = 0;
	env.queued_at = 0;
	assert_int_equal(queue_header_encode(&env, &text, &len), 0);
	assert_non_null(strstr(text, "\nsender\nsubmitter\nclient\nflags 0\n"));
	assert_int_equal(queue_header_decode(text, len, &back, &err), 0);
	assert_string_equal(back.sender, "");
	assert_string_equal(back.client, "");
	assert_int_equal(back.queued_at, 0);
	queue_envelope_clear(&back);
	free(text);
	queue_envelope_clear(&env);
}

static void test_header_max_rcpts(void **state)
{
	struct queue_envelope env, back;
	const char *err = NULL;
	char *text = NULL;
	char longaddr[QUEUE_ADDR_MAX];
	size_t len, i;

	(void)state;
	make_env(&env, 0);
	memset(longaddr, 'a', sizeof(longaddr) - 1);
	longaddr[sizeof(longaddr) - 1] = '\0';
	/* the largest storable header: every recipient at full length */
	for (i = 0; i < QUEUE_MAX_RCPTS; i++)
		assert_int_equal(queue_envelope_add_rcpt(&env, longaddr), 0);
	assert_int_equal(queue_envelope_add_rcpt(&env, "one@too.many"), -1);
	assert_int_equal(queue_header_encode(&env, &text, &len), 0);
	assert_true(len <= QUEUE_HEADER_MAX);
	assert_int_equal(queue_header_decode(text, len, &back, &err), 0);
	assert_int_equal(back.nrcpts, QUEUE_MAX_RCPTS);
	assert_string_equal(back.rcpts[QUEUE_MAX_RCPTS - 1].address, longaddr);
	queue_envelope_clear(&back);
	free(text);
	queue_envelope_clear(&env);
}

static void test_header_encode_refuses(void **state)
{
	struct queue_envelope env;
	char *text = NULL;
	size_t len;

	(void)state;
	make_env(&env, 1);
	env.sender[3] = '\n';
	assert_int_equal(queue_header_encode(&env, &text, &len), -1);
	queue_envelope_clear(&env);

	make_env(&env, 1);
	env.client[2] = '\r';
	assert_int_equal(queue_header_encode(&env, &text, &len), -1);
	env.client[2] = 'x';
	snprintf(env.id, sizeof(env.id), "0123456789ab");
	assert_int_equal(queue_header_encode(&env, &text, &len), -1);
	snprintf(env.id, sizeof(env.id), "0123456789AB");
	env.flags = 0x80;
	assert_int_equal(queue_header_encode(&env, &text, &len), -1);
	env.flags = 0;
	env.queued_at = -5;
	assert_int_equal(queue_header_encode(&env, &text, &len), -1);
	env.queued_at = 5;
	memset(env.submitter, 'x', sizeof(env.submitter)); /* no NUL */
	assert_int_equal(queue_header_encode(&env, &text, &len), -1);
	env.submitter[0] = '\0';
	assert_int_equal(queue_header_encode(&env, &text, &len), 0);
	free(text);
	queue_envelope_clear(&env);

	make_env(&env, 0); /* no recipient */
	assert_int_equal(queue_header_encode(&env, &text, &len), -1);
	assert_int_equal(queue_envelope_add_rcpt(&env, ""), -1);
	assert_int_equal(queue_envelope_add_rcpt(&env, "a\r\n@b"), -1);
	queue_envelope_clear(&env);
}

#define HDR_HEAD "STSRELAY-QUEUE 1\nid 0123456789AB\ntime 1700000000\nsender a@b.example\n" \
		 "submitter alice\nclient c[192.0.2.1]\n"
#define HDR_OK HDR_HEAD "flags 0\nrcpt x@y.example\nend\n"

struct bad_case {
	const char *name;
	const char *text;
	size_t len; /* 0 = strlen(text) */
};

static char *repeat(const char *prefix, char c, size_t n, const char *suffix)
{
	size_t pl = strlen(prefix), sl = strlen(suffix);
	char *s = malloc(pl + n + sl + 1);

	assert_non_null(s);
	memcpy(s, prefix, pl);
	memset(s + pl, c, n);
	memcpy(s + pl + n, suffix, sl + 1);
	return s;
}

static void expect_header_bad(const char *name, const char *text, size_t len)
{
	struct queue_envelope env;
	const char *err = NULL;

	if (queue_header_decode(text, len, &env, &err) == 0)
		fail_msg("header case '%s' was accepted", name);
	assert_non_null(err);
	assert_null(env.rcpts);
	assert_int_equal(env.nrcpts, 0);
}

static void test_header_bad_inputs(void **state)
{
	static const struct bad_case cases[] = {
		{ "empty", "", 0 },
		{ "bad magic", "STSRELAY-QUEUE 2\nid 0123456789AB\nend\n", 0 },
		{ "magic only, no newline", "STSRELAY-QUEUE 1", 0 },
		{ "missing end", HDR_HEAD "flags 0\nrcpt x@y.example\n", 0 },
		{ "truncated mid line", HDR_HEAD "flags 0\nrcpt x@y.ex", 0 },
		{ "end without newline", HDR_HEAD "flags 0\nrcpt x@y.example\nend", 0 },
		{ "lower-case id", "STSRELAY-QUEUE 1\nid 0123456789ab\ntime 1\nsender\nsubmitter\n"
				   "client\nflags 0\nrcpt a@b\nend\n", 0 },
		{ "short id", "STSRELAY-QUEUE 1\nid 0123456789A\ntime 1\nsender\nsubmitter\n"
			      "client\nflags 0\nrcpt a@b\nend\n", 0 },
		{ "long id", "STSRELAY-QUEUE 1\nid 0123456789ABC\ntime 1\nsender\nsubmitter\n"
			     "client\nflags 0\nrcpt a@b\nend\n", 0 },
		{ "non-hex id", "STSRELAY-QUEUE 1\nid 0123456789AG\ntime 1\nsender\nsubmitter\n"
				"client\nflags 0\nrcpt a@b\nend\n", 0 },
		{ "path in id", "STSRELAY-QUEUE 1\nid ../../etc/pa\ntime 1\nsender\nsubmitter\n"
				"client\nflags 0\nrcpt a@b\nend\n", 0 },
		{ "duplicate time", HDR_HEAD "time 5\nflags 0\nrcpt x@y.example\nend\n", 0 },
		{ "duplicate id", HDR_HEAD "id 0123456789AB\nflags 0\nrcpt x@y\nend\n", 0 },
		{ "unknown key", HDR_HEAD "flags 0\nfoo bar\nrcpt x@y\nend\n", 0 },
		{ "key case", HDR_HEAD "Flags 0\nrcpt x@y\nend\n", 0 },
		{ "tab in sender", "STSRELAY-QUEUE 1\nid 0123456789AB\ntime 1\nsender a\tb\n"
				   "submitter\nclient\nflags 0\nrcpt a@b\nend\n", 0 },
		{ "CRLF lines", "STSRELAY-QUEUE 1\r\nid 0123456789AB\r\ntime 1\r\nsender\r\n"
				"submitter\r\nclient\r\nflags 0\r\nrcpt a@b\r\nend\r\n", 0 },
		{ "CR in rcpt", HDR_HEAD "flags 0\nrcpt x@y\r\nend\n", 0 },
		{ "DEL in client", "STSRELAY-QUEUE 1\nid 0123456789AB\ntime 1\nsender\nsubmitter\n"
				   "client a\x7f\nflags 0\nrcpt a@b\nend\n", 0 },
		{ "no recipient", HDR_HEAD "flags 0\nend\n", 0 },
		{ "empty rcpt", HDR_HEAD "flags 0\nrcpt\nend\n", 0 },
		{ "missing flags", HDR_HEAD "rcpt x@y\nend\n", 0 },
		{ "missing sender", "STSRELAY-QUEUE 1\nid 0123456789AB\ntime 1\nsubmitter\n"
				    "client\nflags 0\nrcpt a@b\nend\n", 0 },
		{ "negative time", "STSRELAY-QUEUE 1\nid 0123456789AB\ntime -1\nsender\nsubmitter\n"
				   "client\nflags 0\nrcpt a@b\nend\n", 0 },
		{ "leading zero time", "STSRELAY-QUEUE 1\nid 0123456789AB\ntime 01\nsender\n"
				       "submitter\nclient\nflags 0\nrcpt a@b\nend\n", 0 },
		{ "time overflow", "STSRELAY-QUEUE 1\nid 0123456789AB\ntime 9223372036854775808\n"
				   "sender\nsubmitter\nclient\nflags 0\nrcpt a@b\nend\n", 0 },
		{ "time junk", "STSRELAY-QUEUE 1\nid 0123456789AB\ntime 12a\nsender\nsubmitter\n"
			       "client\nflags 0\nrcpt a@b\nend\n", 0 },
		{ "time empty", "STSRELAY-QUEUE 1\nid 0123456789AB\ntime\nsender\nsubmitter\n"
				"client\nflags 0\nrcpt a@b\nend\n", 0 },
		{ "unknown flag", HDR_HEAD "flags 8\nrcpt x@y\nend\n", 0 },
		{ "unknown flag with known ones", HDR_HEAD "flags 12\nrcpt x@y\nend\n", 0 },
		{ "flags overflow", HDR_HEAD "flags 4294967297\nrcpt x@y\nend\n", 0 },
		{ "space then nothing", "STSRELAY-QUEUE 1\nid 0123456789AB\ntime 1\nsender \n"
					"submitter\nclient\nflags 0\nrcpt a@b\nend\n", 0 },
		{ "leading space key", HDR_HEAD " flags 0\nrcpt x@y\nend\n", 0 },
		{ "NUL in sender", "STSRELAY-QUEUE 1\nid 0123456789AB\ntime 1\nsender a\0b\n"
				   "submitter\nclient\nflags 0\nrcpt a@b\nend\n", 89 },
	};
	char *s;
	size_t i;

	(void)state;
	/* the template itself is valid, so every case fails for its own reason */
	{
		struct queue_envelope env;
		const char *err = NULL;

		assert_int_equal(queue_header_decode(HDR_OK, strlen(HDR_OK), &env, &err), 0);
		queue_envelope_clear(&env);
	}
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		expect_header_bad(cases[i].name, cases[i].text,
				  cases[i].len ? cases[i].len : strlen(cases[i].text));
	expect_header_bad("NULL buffer", NULL, 0);

	s = repeat(HDR_HEAD "flags 0\nrcpt ", 'a', QUEUE_ADDR_MAX, "\nend\n");
	expect_header_bad("rcpt too long", s, strlen(s));
	free(s);
	s = repeat("STSRELAY-QUEUE 1\nid 0123456789AB\ntime 1\nsender ", 's', QUEUE_ADDR_MAX,
		   "\nsubmitter\nclient\nflags 0\nrcpt a@b\nend\n");
	expect_header_bad("sender too long", s, strlen(s));
	free(s);
	s = repeat("STSRELAY-QUEUE 1\nid 0123456789AB\ntime 1\nsender\nsubmitter ", 'u', 64,
		   "\nclient\nflags 0\nrcpt a@b\nend\n");
	expect_header_bad("submitter too long", s, strlen(s));
	free(s);
	s = repeat("STSRELAY-QUEUE 1\nid 0123456789AB\ntime 1\nsender\nsubmitter\nclient ", 'c',
		   128, "\nflags 0\nrcpt a@b\nend\n");
	expect_header_bad("client too long", s, strlen(s));
	free(s);
	/* a header that never ends within the limit */
	s = repeat("STSRELAY-QUEUE 1\nid 0123456789AB\nsender ", 'x', QUEUE_HEADER_MAX, "\nend\n");
	expect_header_bad("header too long", s, strlen(s));
	free(s);

	/* one recipient too many */
	{
		size_t n = QUEUE_MAX_RCPTS + 1, off;
		const char *head = HDR_HEAD "flags 0\n";
		char *big = malloc(strlen(head) + n * 12 + 8);

		assert_non_null(big);
		off = (size_t)snprintf(big, strlen(head) + 1, "%s", head);
		for (i = 0; i < n; i++)
			off += (size_t)snprintf(big + off, 13, "rcpt a%05zu\n", i % 100000);
		off += (size_t)snprintf(big + off, 5, "end\n");
		expect_header_bad("too many rcpts", big, off);
		free(big);
	}
}

/* Every flag combination is one digit on disk (the writer patches
 * QUEUE_F_8BITMIME in place); files from before the flag existed (flags
 * 0..3) read with it clear; the flag alone reads back as 8-bit. */
static void test_header_flags(void **state)
{
	struct queue_envelope env, back;
	const char *err = NULL;
	char *text = NULL, want[16];
	unsigned f;
	size_t len;

	(void)state;
	for (f = 0; f <= QUEUE_F_ALL; f++) {
		make_env(&env, 1);
		env.flags = f;
		assert_int_equal(queue_header_encode(&env, &text, &len), 0);
		snprintf(want, sizeof(want), "\nflags %u\n", f);
		assert_non_null(strstr(text, want));
		assert_int_equal(strlen(want), 9); /* "\nflags D\n" */
		assert_int_equal(queue_header_decode(text, len, &back, &err), 0);
		assert_int_equal(back.flags, f);
		queue_envelope_clear(&back);
		free(text);
		queue_envelope_clear(&env);
	}
	for (f = 0; f <= 3; f++) {
		char old[sizeof(HDR_HEAD) + 64];

		snprintf(old, sizeof(old), HDR_HEAD "flags %u\nrcpt x@y.example\nend\n", f);
		assert_int_equal(queue_header_decode(old, strlen(old), &back, &err), 0);
		assert_int_equal(back.flags & QUEUE_F_8BITMIME, 0);
		queue_envelope_clear(&back);
	}
	assert_int_equal(queue_header_decode(HDR_HEAD "flags 4\nrcpt x@y.example\nend\n",
					     strlen(HDR_HEAD "flags 4\nrcpt x@y.example\nend\n"),
					     &back, &err),
			 0);
	assert_int_equal(back.flags, QUEUE_F_8BITMIME);
	queue_envelope_clear(&back);
}

/* ---- state ---- */

static void test_state_round_trip(void **state)
{
	struct queue_envelope env, back;
	const char *err = NULL;
	char *text = NULL, *text2 = NULL;
	size_t len, len2;

	(void)state;
	make_env(&env, 4);
	env.rcpts[0].status = QUEUE_SENT;
	env.rcpts[0].attempts = 1;
	env.rcpts[0].last_try = 1700000100;
	env.rcpts[1].status = QUEUE_DEFERRED;
	env.rcpts[1].attempts = 4294967295u;
	env.rcpts[1].next_try = INT64_MAX;
	env.rcpts[1].last_try = 1700000200;
	snprintf(env.rcpts[1].last_error, sizeof(env.rcpts[1].last_error),
		 " 451 4.7.5 certificate not trusted  ");
	env.rcpts[3].status = QUEUE_BOUNCED;
	snprintf(env.rcpts[3].last_error, sizeof(env.rcpts[3].last_error), "550 5.1.1 unknown");
	assert_int_equal(queue_state_encode(&env, &text, &len), 0);

	make_env(&back, 4);
	assert_int_equal(queue_state_decode(text, len, &back, &err), 0);
	assert_int_equal(back.rcpts[0].status, QUEUE_SENT);
	assert_int_equal(back.rcpts[0].last_try, 1700000100);
	assert_int_equal(back.rcpts[1].status, QUEUE_DEFERRED);
	assert_int_equal(back.rcpts[1].attempts, 4294967295u);
	assert_true(back.rcpts[1].next_try == INT64_MAX);
	assert_string_equal(back.rcpts[1].last_error, env.rcpts[1].last_error);
	assert_int_equal(back.rcpts[2].status, QUEUE_PENDING);
	assert_string_equal(back.rcpts[2].last_error, "");
	assert_int_equal(back.rcpts[3].status, QUEUE_BOUNCED);
	assert_string_equal(back.rcpts[3].last_error, "550 5.1.1 unknown");
	/* and the re-encoding is identical */
	assert_int_equal(queue_state_encode(&back, &text2, &len2), 0);
	assert_int_equal(len, len2);
	assert_memory_equal(text, text2, len);
	free(text);
	free(text2);
	queue_envelope_clear(&back);
	queue_envelope_clear(&env);
}

static void test_state_encode_sanitizes(void **state)
{
	struct queue_envelope env;
	const char *err = NULL;
	char *text = NULL;
	size_t len;

	(void)state;
	make_env(&env, 1);
	env.rcpts[0].status = QUEUE_DEFERRED;
	env.rcpts[0].next_try = -7;
	memset(env.rcpts[0].last_error, 'e', sizeof(env.rcpts[0].last_error)); /* no NUL */
	env.rcpts[0].last_error[0] = '4';
	env.rcpts[0].last_error[5] = '\r';
	env.rcpts[0].last_error[6] = '\n';
	assert_int_equal(queue_state_encode(&env, &text, &len), 0);
	memset(env.rcpts[0].last_error, 0, sizeof(env.rcpts[0].last_error));
	assert_int_equal(queue_state_decode(text, len, &env, &err), 0);
	assert_int_equal(env.rcpts[0].next_try, 0);
	assert_int_equal(strlen(env.rcpts[0].last_error), QUEUE_ERROR_MAX - 1);
	assert_int_equal(env.rcpts[0].last_error[5], ' ');
	assert_int_equal(env.rcpts[0].last_error[6], ' ');
	free(text);
	env.rcpts[0].status = (enum queue_rcpt_status)9;
	assert_int_equal(queue_state_encode(&env, &text, &len), -1);
	queue_envelope_clear(&env);
}

#define ST_MAGIC "STSRELAY-STATE 1\n"

static void test_state_bad_inputs(void **state)
{
	static const struct bad_case cases[] = {
		{ "empty", "", 0 },
		{ "bad magic", "STSRELAY-STATE 2\nend\n", 0 },
		{ "header magic", "STSRELAY-QUEUE 1\nend\n", 0 },
		{ "missing end", ST_MAGIC "0 sent 1 0 5\n", 0 },
		{ "truncated mid line", ST_MAGIC "0 sent 1 0", 0 },
		{ "end without newline", ST_MAGIC "0 sent 1 0 5\nend", 0 },
		{ "index out of range", ST_MAGIC "3 sent 1 0 5\nend\n", 0 },
		{ "index huge", ST_MAGIC "99999999999999999999999 sent 1 0 5\nend\n", 0 },
		{ "index not a number", ST_MAGIC "x sent 1 0 5\nend\n", 0 },
		{ "index negative", ST_MAGIC "-1 sent 1 0 5\nend\n", 0 },
		{ "index leading zero", ST_MAGIC "00 sent 1 0 5\nend\n", 0 },
		{ "duplicate index", ST_MAGIC "1 sent 1 0 5\n1 sent 1 0 5\nend\n", 0 },
		{ "out of order", ST_MAGIC "2 sent 1 0 5\n1 sent 1 0 5\nend\n", 0 },
		{ "unknown status", ST_MAGIC "0 done 1 0 5\nend\n", 0 },
		{ "status case", ST_MAGIC "0 SENT 1 0 5\nend\n", 0 },
		{ "attempts negative", ST_MAGIC "0 sent -1 0 5\nend\n", 0 },
		{ "attempts overflow", ST_MAGIC "0 sent 4294967296 0 5\nend\n", 0 },
		{ "next_try junk", ST_MAGIC "0 deferred 1 1x 5\nend\n", 0 },
		{ "next_try overflow", ST_MAGIC "0 deferred 1 9223372036854775808 5\nend\n", 0 },
		{ "last_try missing", ST_MAGIC "0 deferred 1 0\nend\n", 0 },
		{ "only index and status", ST_MAGIC "0 sent\nend\n", 0 },
		{ "double space", ST_MAGIC "0  sent 1 0 5\nend\n", 0 },
		{ "trailing space", ST_MAGIC "0 sent 1 0 5 \nend\n", 0 },
		{ "tab in error", ST_MAGIC "0 deferred 1 0 5 451\tlater\nend\n", 0 },
		{ "CRLF", "STSRELAY-STATE 1\r\n0 sent 1 0 5\r\nend\r\n", 0 },
		{ "data after end", ST_MAGIC "0 sent 1 0 5\nend\nextra\n", 0 },
		{ "blank line", ST_MAGIC "\nend\n", 0 },
		{ "NUL in line", ST_MAGIC "0 sent 1 0 5 a\0b\nend\n", 38 },
	};
	struct queue_envelope env;
	const char *err = NULL;
	char *s;
	size_t i;

	(void)state;
	make_env(&env, 3);
	assert_int_equal(queue_state_decode(ST_MAGIC "0 sent 1 0 5\nend\n",
					    strlen(ST_MAGIC "0 sent 1 0 5\nend\n"), &env, &err), 0);
	assert_int_equal(env.rcpts[0].status, QUEUE_SENT);
	env.rcpts[0].status = QUEUE_PENDING;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t len = cases[i].len ? cases[i].len : strlen(cases[i].text);

		err = NULL;
		if (queue_state_decode(cases[i].text, len, &env, &err) == 0)
			fail_msg("state case '%s' was accepted", cases[i].name);
		assert_non_null(err);
	}
	s = repeat(ST_MAGIC "0 deferred 1 0 5 ", 'e', QUEUE_ERROR_MAX, "\nend\n");
	assert_int_equal(queue_state_decode(s, strlen(s), &env, &err), -1);
	free(s);
	/* a bad later line must leave earlier recipients untouched */
	s = strdup(ST_MAGIC "0 sent 1 0 5\n1 bounced 1 0 5 550 no\n2 bogus 1 0 5\nend\n");
	assert_non_null(s);
	assert_int_equal(queue_state_decode(s, strlen(s), &env, &err), -1);
	assert_string_equal(err, "unknown status");
	for (i = 0; i < 3; i++)
		assert_int_equal(env.rcpts[i].status, QUEUE_PENDING);
	free(s);
	/* a subset of indexes is fine */
	assert_int_equal(queue_state_decode(ST_MAGIC "end\n", strlen(ST_MAGIC "end\n"), &env, &err), 0);
	assert_int_equal(queue_state_decode(ST_MAGIC "2 sent 1 0 5\nend\n",
					    strlen(ST_MAGIC "2 sent 1 0 5\nend\n"), &env, &err), 0);
	assert_int_equal(env.rcpts[2].status, QUEUE_SENT);
	assert_int_equal(env.rcpts[0].status, QUEUE_PENDING);
	queue_envelope_clear(&env);
}

static void test_status_names(void **state)
{
	(void)state;
	assert_string_equal(queue_status_name(QUEUE_PENDING), "pending");
	assert_string_equal(queue_status_name(QUEUE_DEFERRED), "deferred");
	assert_string_equal(queue_status_name(QUEUE_SENT), "sent");
	assert_string_equal(queue_status_name(QUEUE_BOUNCED), "bounced");
	assert_string_equal(queue_status_name((enum queue_rcpt_status)42), "unknown");
}

static void test_retry_delay(void **state)
{
	const uint64_t sched[] = { 300, 600, 1200, 2400, 3600, 7200, 14400 };

	(void)state;
	assert_int_equal(queue_retry_delay(sched, 7, 0), 0);
	assert_int_equal(queue_retry_delay(sched, 7, 1), 300);
	assert_int_equal(queue_retry_delay(sched, 7, 2), 600);
	assert_int_equal(queue_retry_delay(sched, 7, 7), 14400);
	assert_int_equal(queue_retry_delay(sched, 7, 8), 14400);
	assert_int_equal(queue_retry_delay(sched, 7, 4000000000u), 14400);
	assert_int_equal(queue_retry_delay(sched, 1, 5), 300);
	assert_int_equal(queue_retry_delay(NULL, 0, 3), 300);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header_round_trip),
		cmocka_unit_test(test_header_empty_fields),
		cmocka_unit_test(test_header_max_rcpts),
		cmocka_unit_test(test_header_encode_refuses),
		cmocka_unit_test(test_header_bad_inputs),
		cmocka_unit_test(test_header_flags),
		cmocka_unit_test(test_state_round_trip),
		cmocka_unit_test(test_state_encode_sanitizes),
		cmocka_unit_test(test_state_bad_inputs),
		cmocka_unit_test(test_status_names),
		cmocka_unit_test(test_retry_delay),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
