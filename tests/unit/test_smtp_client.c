/* SMTP client state machine tests: every scenario file (.scn) under
 * tests/unit/data/smtp_client (server bytes in, exact client bytes out),
 * plus body encoding. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "smtp/client.h"

/*
 * Scenario format (one directive a line; see data/smtp_client/README):
 *   config, before the dialogue:  helo NAME | peer NAME | from ADDR|<> | to ADDR
 *                                 | tls none|may|require | size N | source push|pull
 *                                 | chunk N | M text (message line + CRLF)
 *                                 | MRAW text (message bytes, \r \n \\ \. escapes)
 *                                 | keep-open (READY instead of QUIT after ".")
 *                                 | eight-bit (the message has 8-bit data; also
 *                                   for the transactions of `next`)
 *                                 | auth USER PASS (AUTH PLAIN after TLS; also
 *                                   for `next`) | implicit-tls
 *   dialogue:  S text / SRAW text   server bytes (S adds CRLF)
 *              C text / CRAW text   exact client bytes expected (C adds CRLF)
 *              tls-done ok|unverified|fail (ok: verified), eof, timeout STATE
 *              next ADDR... (READY: a new transaction to these recipients;
 *                the M lines that follow are its message), quit (READY)
 *   checks:    expect-event io|need-tls|want-data|done, expect-state NAME,
 *              expect-rcpt ADDR sent|deferred|bounced|pending [CODE [ESC]],
 *              expect-diag ADDR TEXT, expect-reply ADDR TEXT,
 *              expect-outcome ok|tempfail|permfail|tls-failed,
 *              expect-next-mx yes|no, expect-tls-result TYPE|none,
 *              expect-conn-diag TEXT, expect-conn-status CODE ESC (of the
 *              connection-level failure; "0 " when none),
 *              expect-timeout-ms N, expect-accepted N,
 *              expect-tls-active yes|no, expect-transactions N,
 *              expect-next-fails (smtp_client_next refused in this state),
 *              expect-authenticated yes|no
 * Consecutive S lines are fed at once; the C lines after them must equal
 * everything the client wrote in response (message data is pushed in
 * `chunk`-byte pieces, or pulled through the read callback).
 * Every scenario also checks two invariants: with tls=require nothing of a
 * mail transaction is written before tls-done ok|unverified, and nothing
 * of AUTH (nor the password, in any form) before tls-done ok.
 */

#define MAXR 16

struct buf {
	char *p;
	size_t len, cap;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
	if (b->len + n + 1 > b->cap) {
		b->cap = (b->len + n + 1) * 2;
		b->p = realloc(b->p, b->cap);
		assert_non_null(b->p);
	}
	memcpy(b->p + b->len, s, n);
	b->len += n;
	b->p[b->len] = '\0';
}

static void buf_add_escaped(struct buf *b, const char *s)
{
	for (; *s; s++) {
		char c = *s;

		if (c == '\\' && s[1]) {
			s++;
			c = *s == 'r' ? '\r' : *s == 'n' ? '\n' : *s == 't' ? '\t' : *s == '0' ? '\0' : *s;
		}
		buf_add(b, &c, 1);
	}
}

struct scn {
	const char *file;
	int lineno;
	char helo[64], peer[128], from[256];
	char *to[MAXR];
	size_t nto;
	enum smtp_tls_level tls;
	uint64_t size;
	bool pull, keep_open, eight_bit, implicit_tls;
	char auth_user[64], auth_pass[64];
	bool later;   /* pull: every other read answers SMTP_CLIENT_READ_LATER */
	unsigned reads;
	size_t chunk;
	struct buf msg;
	size_t msg_off;

	struct smtp_client *c;
	struct buf sbuf, cbuf, got;
	bool tls_ok, tls_verified;
	bool transaction_seen;
};

static ssize_t pull_read(void *arg, char *buf, size_t cap)
{
	struct scn *s = arg;
	size_t n = s->msg.len - s->msg_off;

	if (s->later && s->reads++ % 2 == 0)
		return SMTP_CLIENT_READ_LATER;
	if (n > cap)
		n = cap;
	if (n > s->chunk)
		n = s->chunk;
	memcpy(buf, s->msg.p + s->msg_off, n);
	s->msg_off += n;
	return (ssize_t)n;
}

static void make_client(struct scn *s)
{
	struct smtp_client_config cfg = {0};
	const char *err = NULL;
	static const struct smtp_client_timeouts to = {
		.banner = 1000, .helo = 1001, .mail = 1002, .rcpt = 1003,
		.data_init = 1004, .data_block = 1005, .eod = 1006, .quit = 1007,
	};

	if (s->c)
		return;
	cfg.helo_name = s->helo;
	cfg.peer = s->peer;
	cfg.queue_id = "TESTQID";
	cfg.sender = s->from;
	cfg.rcpts = (const char *const *)s->to;
	cfg.nrcpts = s->nto;
	cfg.size = s->size;
	cfg.tls = s->tls;
	cfg.timeouts = &to;
	cfg.keep_open = s->keep_open;
	cfg.eight_bit = s->eight_bit;
	cfg.implicit_tls = s->implicit_tls;
	if (s->auth_user[0]) {
		cfg.auth_user = s->auth_user;
		cfg.auth_password = s->auth_pass;
	}
	if (s->pull) {
		cfg.read = pull_read;
		cfg.read_arg = s;
	}
	s->c = smtp_client_new(&cfg, &err);
	if (!s->c)
		fail_msg("%s: smtp_client_new: %s", s->file, err);
}

static void drain(struct scn *s)
{
	const char *p;
	size_t n;

	smtp_client_output(s->c, &p, &n);
	if (n == 0)
		return;
	buf_add(&s->got, p, n);
	smtp_client_consume(s->c, n);
	/* The fail-closed invariant, independent of what the scenario expects. */
	if (s->tls == SMTP_TLS_REQUIRE && !s->tls_ok &&
	    (strstr(s->got.p, "MAIL FROM") || strstr(s->got.p, "RCPT TO") ||
	     strstr(s->got.p, "\r\nDATA\r\n")))
		fail_msg("%s:%d: transaction sent without TLS under tls=require", s->file, s->lineno);
	if (!s->tls_verified && (strstr(s->got.p, "AUTH") ||
				 (s->auth_pass[0] && strstr(s->got.p, s->auth_pass))))
		fail_msg("%s:%d: AUTH sent without verified TLS", s->file, s->lineno);
}

/* Feeds pending server bytes, runs the data pump, compares the output. */
static void settle(struct scn *s)
{
	int guard;

	make_client(s);
	if (s->sbuf.len > 0)
		smtp_client_feed(s->c, s->sbuf.p, s->sbuf.len);
	s->sbuf.len = 0;
	for (guard = 0; guard < 100000; guard++) {
		enum smtp_client_event ev;

		drain(s);
		ev = smtp_client_event(s->c);
		drain(s);
		if (ev != SMTP_CLIENT_EV_WANT_DATA || s->pull)
			break;
		if (s->msg_off == s->msg.len) {
			assert_int_equal(smtp_client_data_end(s->c), 0);
		} else {
			size_t n = s->msg.len - s->msg_off;
			ssize_t took;

			if (n > s->chunk)
				n = s->chunk;
			took = smtp_client_data(s->c, s->msg.p + s->msg_off, n);
			assert_true(took >= 0);
			s->msg_off += (size_t)took;
		}
	}
	assert_true(guard < 100000);
	if (s->got.len != s->cbuf.len || memcmp(s->got.p ? s->got.p : "", s->cbuf.p ? s->cbuf.p : "",
						s->got.len) != 0)
		fail_msg("%s:%d: client wrote:\n[%.*s]\nexpected:\n[%.*s]", s->file, s->lineno,
			 (int)s->got.len, s->got.p ? s->got.p : "", (int)s->cbuf.len,
			 s->cbuf.p ? s->cbuf.p : "");
	s->got.len = 0;
	s->cbuf.len = 0;
}

static const struct smtp_rcpt_result *find_rcpt(struct scn *s, const char *addr)
{
	const struct smtp_client_result *r = smtp_client_result(s->c);
	size_t i;

	for (i = 0; i < r->nrcpts; i++)
		if (strcmp(r->rcpts[i].address, addr) == 0)
			return &r->rcpts[i];
	fail_msg("%s:%d: no recipient %s", s->file, s->lineno, addr);
	return NULL;
}

static const char *event_name(enum smtp_client_event e)
{
	switch (e) {
	case SMTP_CLIENT_EV_IO: return "io";
	case SMTP_CLIENT_EV_NEED_TLS: return "need-tls";
	case SMTP_CLIENT_EV_WANT_DATA: return "want-data";
	case SMTP_CLIENT_EV_DONE: return "done";
	case SMTP_CLIENT_EV_READY: return "ready";
	}
	return "?";
}

static const char *outcome_name(enum smtp_conn_outcome o)
{
	switch (o) {
	case SMTP_CONN_OK: return "ok";
	case SMTP_CONN_TEMPFAIL: return "tempfail";
	case SMTP_CONN_PERMFAIL: return "permfail";
	case SMTP_CONN_TLS_FAILED: return "tls-failed";
	}
	return "?";
}

#define CHECK_STR(got, want)                                                                 \
	do {                                                                                 \
		if (strcmp((got), (want)) != 0)                                              \
			fail_msg("%s:%d: got '%s', expected '%s'", s->file, s->lineno, (got), \
				 (want));                                                    \
	} while (0)

static void directive(struct scn *s, const char *cmd, char *arg)
{
	const struct smtp_client_result *res;

	settle(s);
	res = smtp_client_result(s->c);
	if (strcmp(cmd, "tls-done") == 0) {
		s->tls_ok = strcmp(arg, "ok") == 0 || strcmp(arg, "unverified") == 0;
		s->tls_verified = strcmp(arg, "ok") == 0;
		if (s->tls_ok)
			smtp_client_tls_verified(s->c, s->tls_verified);
		smtp_client_tls_done(s->c, s->tls_ok, s->tls_ok ? NULL : "certificate-expired: test");
	} else if (strcmp(cmd, "expect-authenticated") == 0) {
		CHECK_STR(res->authenticated ? "yes" : "no", arg);
	} else if (strcmp(cmd, "eof") == 0) {
		smtp_client_eof(s->c);
	} else if (strcmp(cmd, "next") == 0 || strcmp(cmd, "expect-next-fails") == 0) {
		struct smtp_client_config cfg = {0};
		const char *err = NULL;
		char *save = NULL, *a;
		size_t i;
		int rc;

		for (i = 0; i < s->nto; i++)
			free(s->to[i]);
		s->nto = 0;
		for (a = strtok_r(arg, " ", &save); a; a = strtok_r(NULL, " ", &save)) {
			assert_true(s->nto < MAXR);
			s->to[s->nto++] = strdup(a);
		}
		if (s->nto == 0)
			s->to[s->nto++] = strdup("next@example.com");
		s->msg.len = 0;
		s->msg_off = 0;
		cfg.sender = s->from;
		cfg.queue_id = "TESTQID2";
		cfg.rcpts = (const char *const *)s->to;
		cfg.nrcpts = s->nto;
		cfg.size = s->size;
		cfg.tls = s->tls;
		cfg.keep_open = s->keep_open;
		cfg.eight_bit = s->eight_bit;
		if (s->auth_user[0]) {
			cfg.auth_user = s->auth_user;
			cfg.auth_password = s->auth_pass;
		}
		if (s->pull) {
			cfg.read = pull_read;
			cfg.read_arg = s;
		}
		rc = smtp_client_next(s->c, &cfg, &err);
		if (strcmp(cmd, "next") == 0 && rc != 0)
			fail_msg("%s:%d: smtp_client_next: %s", s->file, s->lineno, err);
		if (strcmp(cmd, "next") != 0 && rc == 0)
			fail_msg("%s:%d: smtp_client_next accepted", s->file, s->lineno);
	} else if (strcmp(cmd, "quit") == 0) {
		assert_int_equal(smtp_client_quit(s->c), 0);
	} else if (strcmp(cmd, "expect-transactions") == 0) {
		assert_int_equal(smtp_client_transactions(s->c), strtoul(arg, NULL, 10));
	} else if (strcmp(cmd, "timeout") == 0) {
		CHECK_STR(smtp_client_timeout(s->c), arg);
	} else if (strcmp(cmd, "expect-event") == 0) {
		CHECK_STR(event_name(smtp_client_event(s->c)), arg);
	} else if (strcmp(cmd, "expect-state") == 0) {
		CHECK_STR(smtp_client_state_name(smtp_client_state(s->c)), arg);
	} else if (strcmp(cmd, "expect-outcome") == 0) {
		CHECK_STR(outcome_name(res->outcome), arg);
	} else if (strcmp(cmd, "expect-next-mx") == 0) {
		CHECK_STR(res->try_next_mx ? "yes" : "no", arg);
	} else if (strcmp(cmd, "expect-tls-active") == 0) {
		CHECK_STR(res->tls_active ? "yes" : "no", arg);
	} else if (strcmp(cmd, "expect-tls-result") == 0) {
		CHECK_STR(res->tls_result != SMTP_TLS_RESULT_SUCCESS ? smtp_tls_result_name(res->tls_result)
								     : "none",
			  arg);
	} else if (strcmp(cmd, "expect-conn-status") == 0) {
		char st[64];

		snprintf(st, sizeof(st), "%d %s", res->code, res->esc);
		CHECK_STR(st, arg);
	} else if (strcmp(cmd, "expect-conn-diag") == 0) {
		if (!strstr(res->diag, arg))
			fail_msg("%s:%d: diag '%s' lacks '%s'", s->file, s->lineno, res->diag, arg);
	} else if (strcmp(cmd, "expect-timeout-ms") == 0) {
		assert_int_equal(smtp_client_timeout_ms(s->c), strtoul(arg, NULL, 10));
	} else if (strcmp(cmd, "expect-accepted") == 0) {
		assert_int_equal(res->accepted, strtoul(arg, NULL, 10));
	} else if (strcmp(cmd, "expect-rcpt") == 0 || strcmp(cmd, "expect-diag") == 0 ||
		   strcmp(cmd, "expect-reply") == 0) {
		char *save = NULL;
		char *addr = strtok_r(arg, " ", &save);
		char *rest = strtok_r(NULL, "", &save);
		const struct smtp_rcpt_result *r;

		assert_non_null(addr);
		assert_non_null(rest);
		r = find_rcpt(s, addr);
		if (strcmp(cmd, "expect-diag") == 0) {
			if (!strstr(r->diag, rest))
				fail_msg("%s:%d: %s diag '%s' lacks '%s'", s->file, s->lineno, addr,
					 r->diag, rest);
		} else if (strcmp(cmd, "expect-reply") == 0) {
			CHECK_STR(r->reply, rest);
		} else {
			char *st = strtok_r(rest, " ", &save);
			char *code = strtok_r(NULL, " ", &save);
			char *esc = strtok_r(NULL, " ", &save);

			CHECK_STR(smtp_rcpt_status_name(r->status), st);
			if (code)
				assert_int_equal(r->code, strtol(code, NULL, 10));
			if (esc)
				CHECK_STR(r->esc, esc);
		}
	} else {
		fail_msg("%s:%d: unknown directive %s", s->file, s->lineno, cmd);
	}
}

static void run_file(const char *path)
{
	struct scn s;
	FILE *f = fopen(path, "r");
	char line[4096];
	bool last_was_c = false;
	size_t i;

	assert_non_null(f);
	memset(&s, 0, sizeof(s));
	s.file = path;
	snprintf(s.helo, sizeof(s.helo), "relay.example.org");
	snprintf(s.peer, sizeof(s.peer), "mx.example.com[192.0.2.1]");
	snprintf(s.from, sizeof(s.from), "alice@example.org");
	s.tls = SMTP_TLS_MAY;
	s.chunk = 7;
	while (fgets(line, sizeof(line), f)) {
		char *cmd, *arg;
		size_t n = strlen(line);

		s.lineno++;
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (n == 0 || line[0] == '#')
			continue;
		cmd = line;
		arg = strchr(line, ' ');
		if (arg)
			*arg++ = '\0';
		else
			arg = line + n;
		if (strcmp(cmd, "helo") == 0) {
			snprintf(s.helo, sizeof(s.helo), "%s", arg);
		} else if (strcmp(cmd, "peer") == 0) {
			snprintf(s.peer, sizeof(s.peer), "%s", arg);
		} else if (strcmp(cmd, "from") == 0) {
			snprintf(s.from, sizeof(s.from), "%s", strcmp(arg, "<>") == 0 ? "" : arg);
		} else if (strcmp(cmd, "to") == 0) {
			assert_true(s.nto < MAXR);
			s.to[s.nto++] = strdup(arg);
		} else if (strcmp(cmd, "tls") == 0) {
			s.tls = strcmp(arg, "none") == 0  ? SMTP_TLS_NONE
				: strcmp(arg, "require") == 0 ? SMTP_TLS_REQUIRE
							      : SMTP_TLS_MAY;
		} else if (strcmp(cmd, "size") == 0) {
			s.size = strtoull(arg, NULL, 10);
		} else if (strcmp(cmd, "source") == 0) {
			s.pull = strcmp(arg, "pull") == 0;
		} else if (strcmp(cmd, "keep-open") == 0) {
			s.keep_open = true;
		} else if (strcmp(cmd, "eight-bit") == 0) {
			s.eight_bit = true;
		} else if (strcmp(cmd, "implicit-tls") == 0) {
			s.implicit_tls = true;
		} else if (strcmp(cmd, "auth") == 0) {
			assert_int_equal(sscanf(arg, "%63s %63s", s.auth_user, s.auth_pass), 2);
		} else if (strcmp(cmd, "chunk") == 0) {
			s.chunk = strtoul(arg, NULL, 10);
		} else if (strcmp(cmd, "M") == 0) {
			buf_add(&s.msg, arg, strlen(arg));
			buf_add(&s.msg, "\r\n", 2);
		} else if (strcmp(cmd, "MRAW") == 0) {
			buf_add_escaped(&s.msg, arg);
		} else if (strcmp(cmd, "S") == 0 || strcmp(cmd, "SRAW") == 0) {
			if (last_was_c)
				settle(&s);
			if (cmd[1] == 'R') {
				buf_add_escaped(&s.sbuf, arg);
			} else {
				buf_add(&s.sbuf, arg, strlen(arg));
				buf_add(&s.sbuf, "\r\n", 2);
			}
			last_was_c = false;
		} else if (strcmp(cmd, "C") == 0 || strcmp(cmd, "CRAW") == 0) {
			if (cmd[1] == 'R') {
				buf_add_escaped(&s.cbuf, arg);
			} else {
				buf_add(&s.cbuf, arg, strlen(arg));
				buf_add(&s.cbuf, "\r\n", 2);
			}
			last_was_c = true;
		} else {
			directive(&s, cmd, arg);
			last_was_c = false;
		}
	}
	settle(&s);
	fclose(f);
	smtp_client_free(s.c);
	for (i = 0; i < s.nto; i++)
		free(s.to[i]);
	free(s.msg.p);
	free(s.sbuf.p);
	free(s.cbuf.p);
	free(s.got.p);
}

static void test_scenario(void **state)
{
	run_file(*state);
}

/* ---- body encoding, independent of scenarios ---- */

/* Reference encoder: line ends to CRLF, dot-stuffing, final CRLF, ".". */
static void reference(const char *in, size_t n, struct buf *out)
{
	bool bol = true;
	size_t i;

	for (i = 0; i < n; i++) {
		char c = in[i];

		if (c == '\r' || c == '\n') {
			if (c == '\r' && i + 1 < n && in[i + 1] == '\n')
				i++;
			buf_add(out, "\r\n", 2);
			bol = true;
			continue;
		}
		if (bol && c == '.')
			buf_add(out, ".", 1);
		buf_add(out, &c, 1);
		bol = false;
	}
	if (!bol)
		buf_add(out, "\r\n", 2);
	buf_add(out, ".\r\n", 3);
}

static void feed_str(struct smtp_client *c, const char *s)
{
	smtp_client_feed(c, s, strlen(s));
}

/* Runs a whole session for message msg and returns just the body bytes.
 * pull: 0 push, 1 pull, 2 pull from a source that has nothing every other
 * time (the daemon's readahead before its read returns). */
static void body_via_client(const char *msg, size_t n, size_t chunk, int pull, struct buf *body)
{
	static const char *rcpt[] = {"bob@example.com"};
	struct scn s;
	struct smtp_client_config cfg = {0};
	struct buf all = {0};
	const char *p;
	size_t len;
	int guard;

	memset(&s, 0, sizeof(s));
	s.msg.p = (char *)msg;
	s.msg.len = n;
	s.chunk = chunk;
	s.later = pull == 2;
	cfg.helo_name = "relay.example.org";
	cfg.sender = "a@example.org";
	cfg.rcpts = rcpt;
	cfg.nrcpts = 1;
	if (pull) {
		cfg.read = pull_read;
		cfg.read_arg = &s;
	}
	s.c = smtp_client_new(&cfg, NULL);
	assert_non_null(s.c);
	feed_str(s.c, "220 mx\r\n250-mx\r\n250 PIPELINING\r\n");
	smtp_client_output(s.c, &p, &len);
	smtp_client_consume(s.c, len);
	feed_str(s.c, "250 ok\r\n250 ok\r\n354 go\r\n");
	assert_int_equal(smtp_client_state(s.c), SMTP_CLIENT_BODY);
	for (guard = 0; guard < 1000000; guard++) {
		enum smtp_client_event ev = smtp_client_event(s.c);

		smtp_client_output(s.c, &p, &len);
		/* Memory stays bounded whatever the message size. */
		assert_true(len <= 64 * 1024);
		buf_add(&all, p, len);
		smtp_client_consume(s.c, len);
		if (smtp_client_state(s.c) == SMTP_CLIENT_EOD)
			break;
		if (ev != SMTP_CLIENT_EV_WANT_DATA || pull)
			continue;
		if (s.msg_off == n) {
			assert_int_equal(smtp_client_data_end(s.c), 0);
		} else {
			size_t k = n - s.msg_off < chunk ? n - s.msg_off : chunk;
			ssize_t took = smtp_client_data(s.c, msg + s.msg_off, k);

			assert_true(took >= 0);
			s.msg_off += (size_t)took;
		}
	}
	smtp_client_output(s.c, &p, &len);
	buf_add(&all, p, len);
	assert_int_equal(smtp_client_state(s.c), SMTP_CLIENT_EOD);
	feed_str(s.c, "250 2.0.0 queued\r\n221 bye\r\n");
	assert_int_equal(smtp_client_event(s.c), SMTP_CLIENT_EV_DONE);
	assert_int_equal(smtp_client_result(s.c)->rcpts[0].status, SMTP_RCPT_SENT);
	/* The commands were consumed before BODY, and QUIT comes only after
	 * the 250 fed above: `all` is exactly the body as sent. */
	buf_add(body, all.p, all.len);
	free(all.p);
	smtp_client_free(s.c);
}

static void test_body_encoding(void **state)
{
	static const char *msgs[] = {
		"",
		"Subject: x\r\n\r\nbody\r\n",
		".\r\n",
		"..\r\n.\r\n.x\r\n",
		"a\r\n.\r\nb",                      /* lone dot line, no final CRLF */
		"bare\nLF\n.\nend",                 /* bare LFs incl. a "\n.\n" */
		"bare\rCR\r.\rx\r",                 /* bare CRs */
		"mixed\r\r\n.\r\n\n\r.",
		"no newline at all",
		".leading",
	};
	size_t m, chunk;

	(void)state;
	for (m = 0; m < sizeof(msgs) / sizeof(msgs[0]); m++) {
		struct buf want = {0};

		reference(msgs[m], strlen(msgs[m]), &want);
		for (chunk = 1; chunk <= 9; chunk++) {
			int pull;

			for (pull = 0; pull < 3; pull++) {
				struct buf got = {0};

				body_via_client(msgs[m], strlen(msgs[m]), chunk, pull, &got);
				if (got.len != want.len || memcmp(got.p, want.p, got.len) != 0)
					fail_msg("message %zu chunk %zu pull %d: got [%.*s] want [%.*s]",
						 m, chunk, pull, (int)got.len, got.p, (int)want.len,
						 want.p);
				free(got.p);
			}
		}
		free(want.p);
	}
}

/* A big random message: same bytes as the reference, bounded buffer. */
static void test_body_large(void **state)
{
	size_t n = 300 * 1024, i;
	char *msg = malloc(n);
	struct buf want = {0};
	unsigned seed = 12345;

	(void)state;
	for (i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		switch ((seed >> 16) % 10) {
		case 0: msg[i] = '.'; break;
		case 1: msg[i] = '\n'; break;
		case 2: msg[i] = '\r'; break;
		default: msg[i] = (char)('a' + (seed >> 20) % 26); break;
		}
	}
	reference(msg, n, &want);
	for (i = 0; i < 3; i++) {
		struct buf got = {0};

		body_via_client(msg, n, i ? 8192 : 70000, (int)i, &got);
		assert_int_equal(got.len, want.len);
		assert_memory_equal(got.p, want.p, want.len);
		free(got.p);
	}
	free(want.p);
	free(msg);
}

static void test_config_checks(void **state)
{
	static const char *bad[] = {"bob@example.com\r\nRCPT TO:<evil@x>"};
	static const char *good[] = {"bob@example.com"};
	struct smtp_client_config cfg = {0};
	const char *err = NULL;

	(void)state;
	cfg.helo_name = "relay.example.org";
	cfg.sender = "a@example.org";
	cfg.rcpts = bad;
	cfg.nrcpts = 1;
	assert_null(smtp_client_new(&cfg, &err));
	assert_non_null(err);
	cfg.rcpts = good;
	cfg.nrcpts = 0;
	assert_null(smtp_client_new(&cfg, &err));
	cfg.nrcpts = 1;
	cfg.sender = "a@example.org>\r\nQUIT";
	assert_null(smtp_client_new(&cfg, &err));
	cfg.sender = "";
	cfg.helo_name = "";
	assert_null(smtp_client_new(&cfg, &err));
}

/* AUTH and implicit TLS settings the client refuses to start with: the
 * credentials go over required TLS or nowhere, and nothing in them may
 * break the command line. */
static void test_auth_config_checks(void **state)
{
	static const char *rcpt[] = {"bob@example.com"};
	char longpw[SMTP_CLIENT_AUTH_MAX + 2];
	struct smtp_client_config cfg = {0};
	struct smtp_client *c;
	const char *err = NULL;

	(void)state;
	memset(longpw, 'p', sizeof(longpw) - 1);
	longpw[sizeof(longpw) - 1] = '\0';
	cfg.helo_name = "relay.example.org";
	cfg.sender = "a@example.org";
	cfg.rcpts = rcpt;
	cfg.nrcpts = 1;
	cfg.tls = SMTP_TLS_REQUIRE;
	cfg.auth_user = "user";
	cfg.auth_password = "secret";
	c = smtp_client_new(&cfg, &err);
	assert_non_null(c);
	smtp_client_free(c);

	cfg.tls = SMTP_TLS_MAY; /* AUTH would be possible in plaintext */
	assert_null(smtp_client_new(&cfg, &err));
	cfg.tls = SMTP_TLS_NONE;
	assert_null(smtp_client_new(&cfg, &err));
	cfg.tls = SMTP_TLS_REQUIRE;
	cfg.auth_password = NULL;
	assert_null(smtp_client_new(&cfg, &err));
	cfg.auth_password = "";
	assert_null(smtp_client_new(&cfg, &err));
	cfg.auth_password = "se\r\ncret";
	assert_null(smtp_client_new(&cfg, &err));
	cfg.auth_password = longpw;
	assert_null(smtp_client_new(&cfg, &err));
	longpw[SMTP_CLIENT_AUTH_MAX] = '\0'; /* exactly the maximum */
	c = smtp_client_new(&cfg, &err);
	assert_non_null(c);
	smtp_client_free(c);
	cfg.auth_user = NULL;
	cfg.auth_password = NULL;
	cfg.implicit_tls = true;
	cfg.tls = SMTP_TLS_MAY;
	assert_null(smtp_client_new(&cfg, &err));
	cfg.tls = SMTP_TLS_REQUIRE;
	c = smtp_client_new(&cfg, &err);
	assert_non_null(c);
	/* implicit TLS: the handshake before any byte */
	assert_int_equal(smtp_client_event(c), SMTP_CLIENT_EV_NEED_TLS);
	smtp_client_free(c);
}

/* The longest credentials still make one AUTH PLAIN line that a server
 * decodes to exactly "\0user\0password". */
static void test_auth_plain_longest(void **state)
{
	static const char *rcpt[] = {"bob@example.com"};
	char user[SMTP_CLIENT_AUTH_MAX + 1], pass[SMTP_CLIENT_AUTH_MAX + 1];
	struct smtp_client_config cfg = {0};
	struct smtp_client *c;
	const char *p;
	size_t n;

	(void)state;
	memset(user, 'u', SMTP_CLIENT_AUTH_MAX);
	user[SMTP_CLIENT_AUTH_MAX] = '\0';
	memset(pass, ':', SMTP_CLIENT_AUTH_MAX);
	pass[SMTP_CLIENT_AUTH_MAX] = '\0';
	cfg.helo_name = "relay.example.org";
	cfg.sender = "a@example.org";
	cfg.rcpts = rcpt;
	cfg.nrcpts = 1;
	cfg.tls = SMTP_TLS_REQUIRE;
	cfg.implicit_tls = true;
	cfg.auth_user = user;
	cfg.auth_password = pass;
	c = smtp_client_new(&cfg, NULL);
	assert_non_null(c);
	smtp_client_tls_verified(c, true);
	smtp_client_tls_done(c, true, NULL);
	feed_str(c, "220 relay\r\n");
	smtp_client_output(c, &p, &n);
	smtp_client_consume(c, n);
	feed_str(c, "250-relay\r\n250 AUTH PLAIN\r\n");
	assert_int_equal(smtp_client_state(c), SMTP_CLIENT_AUTH);
	smtp_client_output(c, &p, &n);
	/* "AUTH PLAIN " + base64 of 2 + 2 * 255 bytes (4 * 171 = 684) + CRLF */
	assert_int_equal(n, 11 + 684 + 2);
	assert_memory_equal(p, "AUTH PLAIN AHV1dX", 17);
	assert_memory_equal(p + n - 6, "Ojo=\r\n", 6);
	smtp_client_free(c);
}

static void test_default_timeouts(void **state)
{
	static const char *rcpt[] = {"bob@example.com"};
	struct smtp_client_config cfg = {0};
	struct smtp_client *c;

	(void)state;
	cfg.helo_name = "relay.example.org";
	cfg.sender = "";
	cfg.rcpts = rcpt;
	cfg.nrcpts = 1;
	c = smtp_client_new(&cfg, NULL);
	assert_non_null(c);
	/* RFC 5321 §4.5.3.2 */
	assert_int_equal(smtp_client_timeout_ms(c), 5 * 60 * 1000);
	assert_int_equal(smtp_client_default_timeouts.data_init, 2 * 60 * 1000);
	assert_int_equal(smtp_client_default_timeouts.data_block, 3 * 60 * 1000);
	assert_int_equal(smtp_client_default_timeouts.eod, 10 * 60 * 1000);
	assert_int_equal(smtp_client_default_timeouts.mail, 5 * 60 * 1000);
	assert_int_equal(smtp_client_default_timeouts.rcpt, 5 * 60 * 1000);
	smtp_client_free(c);
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void)
{
	char dir[1024], **files = NULL;
	struct CMUnitTest *tests;
	size_t nfiles = 0, i, nt = 0;
	struct dirent *de;
	DIR *d;
	int rc;

	snprintf(dir, sizeof(dir), "%s/tests/unit/data/smtp_client", TEST_SRCDIR);
	d = opendir(dir);
	if (!d) {
		fprintf(stderr, "cannot open %s\n", dir);
		return 1;
	}
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name);
		char path[1400];

		if (l < 5 || strcmp(de->d_name + l - 4, ".scn") != 0)
			continue;
		files = realloc(files, (nfiles + 1) * sizeof(*files));
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		files[nfiles++] = strdup(path);
	}
	closedir(d);
	if (nfiles < 15) {
		fprintf(stderr, "expected at least 15 scenarios in %s, found %zu\n", dir, nfiles);
		return 1;
	}
	qsort(files, nfiles, sizeof(*files), by_name);
	tests = calloc(nfiles + 6, sizeof(*tests));
	for (i = 0; i < nfiles; i++) {
		tests[nt].name = strrchr(files[i], '/') + 1;
		tests[nt].test_func = test_scenario;
		tests[nt].initial_state = files[i];
		nt++;
	}
	tests[nt++] = (struct CMUnitTest)cmocka_unit_test(test_body_encoding);
	tests[nt++] = (struct CMUnitTest)cmocka_unit_test(test_body_large);
	tests[nt++] = (struct CMUnitTest)cmocka_unit_test(test_config_checks);
	tests[nt++] = (struct CMUnitTest)cmocka_unit_test(test_default_timeouts);
	tests[nt++] = (struct CMUnitTest)cmocka_unit_test(test_auth_config_checks);
	tests[nt++] = (struct CMUnitTest)cmocka_unit_test(test_auth_plain_longest);
	rc = _cmocka_run_group_tests("smtp_client", tests, nt, NULL, NULL);
	for (i = 0; i < nfiles; i++)
		free(files[i]);
	free(files);
	free(tests);
	return rc;
}
