/* Unit tests of relay/daemon/scheduler on the in-memory queue (queue/ram.h), deliveries
 * stubbed and the clock stopped: retry order, the per-domain limit, lifetime, I/O order. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <time.h>

#include "queue/ram.h"
#include "relay/core/clock.h"
#include "relay/core/config.h"
#include "relay/core/log.h"
#include "relay/daemon/scheduler.h"

#define T0_MS 1800000000000LL /* the stopped clock's start: 2027-01-15 */
#define T0 (T0_MS / 1000)
#define MAX_STARTS 64
#define MAX_RCPTS 8
#define TURNS_MAX 3000 /* loop turns one wait may take, 1 ms apart */
#define JOURNAL_MAX 8192

/* One delivery the scheduler started through the stub. */
struct start {
	struct fixture *f;
	char id[QUEUE_ID_LEN + 1];
	char domain[DNS_NAME_MAX + 1];
	size_t idx[MAX_RCPTS], n;
	char rcpt[MAX_RCPTS][QUEUE_ADDR_MAX];
	int64_t at_ms;
	delivery_done_cb done;
	void *done_arg;
	bool finished, aborted;
};

struct fixture {
	uv_loop_t loop;
	struct relay r;
	struct queue_ram *ram;
	struct queue_backend qb;
	struct scheduler *s;
	struct start starts[MAX_STARTS];
	size_t nstarts;
	unsigned peak; /* most deliveries running to one domain at once */
	uv_timer_t abort_timer;
	bool stopped;
	char journal[JOURNAL_MAX];
};

/* ---- the delivery stub ---- */

static unsigned running_to(const struct fixture *f, const char *domain)
{
	unsigned n = 0;
	size_t i;

	for (i = 0; i < f->nstarts; i++)
		if (!f->starts[i].finished && strcmp(f->starts[i].domain, domain) == 0)
			n++;
	return n;
}

/* Reports start st as the scheduler's delivery would: one verdict for all
 * its recipients. */
static void finish(struct start *st, enum delivery_status status, const char *dsn, const char *text)
{
	struct delivery_result res;
	struct delivery_rcpt *dr = calloc(st->n, sizeof(*dr));
	size_t k;

	assert_non_null(dr);
	assert_false(st->finished);
	memset(&res, 0, sizeof(res));
	res.qid = st->id;
	res.domain = st->domain;
	snprintf(res.sts, sizeof(res.sts), "absent");
	res.aborted = status == DELIVERY_ABORTED;
	res.nrcpts = st->n;
	res.rcpts = dr;
	for (k = 0; k < st->n; k++) {
		dr[k].index = st->idx[k];
		dr[k].address = st->rcpt[k];
		dr[k].status = status;
		snprintf(dr[k].dsn, sizeof(dr[k].dsn), "%s", dsn);
		snprintf(dr[k].text, sizeof(dr[k].text), "%s", text);
		snprintf(dr[k].relay, sizeof(dr[k].relay), "mx.%s[192.0.2.1]:25", st->domain);
		snprintf(dr[k].tls, sizeof(dr[k].tls), "none");
		dr[k].conn_use = 1;
	}
	st->finished = true;
	st->done(st->done_arg, &res);
	free(dr);
}

static void on_abort_timer(uv_timer_t *t)
{
	struct fixture *f = t->data;
	size_t i;

	for (i = 0; i < f->nstarts; i++)
		if (f->starts[i].aborted && !f->starts[i].finished)
			finish(&f->starts[i], DELIVERY_ABORTED, "4.0.0", "aborted");
}

static int stub_ctx_new(struct relay *r, void *arg, void **ctx, char *err, size_t errlen)
{
	*ctx = arg;
	return 0;
}

static int stub_start(void *ctx, const struct queue_envelope *env, const char *domain,
		      const size_t *idx, size_t n, delivery_done_cb done, void *done_arg,
		      void **handle)
{
	struct fixture *f = ctx;
	struct start *st;
	size_t k;
	unsigned running;

	if (f->nstarts == MAX_STARTS || n > MAX_RCPTS)
		return -1;
	st = &f->starts[f->nstarts++];
	memset(st, 0, sizeof(*st));
	st->f = f;
	snprintf(st->id, sizeof(st->id), "%s", env->id);
	snprintf(st->domain, sizeof(st->domain), "%s", domain);
	for (k = 0; k < n; k++) {
		st->idx[k] = idx[k];
		snprintf(st->rcpt[k], sizeof(st->rcpt[k]), "%s", env->rcpts[idx[k]].address);
	}
	st->n = n;
	st->at_ms = clock_now_ms();
	st->done = done;
	st->done_arg = done_arg;
	running = running_to(f, domain);
	if (running > f->peak)
		f->peak = running;
	*handle = st;
	return 0;
}

/* As delivery_abort: the verdict comes later, from the loop. */
static void stub_abort(void *handle)
{
	struct start *st = handle;

	st->aborted = true;
	assert_int_equal(uv_timer_start(&st->f->abort_timer, on_abort_timer, 0, 0), 0);
}

static void stub_close_idle(void *ctx)
{
}

static void stub_ctx_free(void *ctx)
{
}

static const struct scheduler_delivery stub = {
	.ctx_new = stub_ctx_new,
	.start = stub_start,
	.abort = stub_abort,
	.close_idle = stub_close_idle,
	.ctx_free = stub_ctx_free,
};

/* ---- the fixture ---- */

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (f == NULL)
		return -1;
	clock_fake_set_ms(T0_MS);
	config_defaults(&f->r.cfg);
	snprintf(f->r.cfg.hostname, sizeof(f->r.cfg.hostname), "relay.test");
	f->r.cfg.retry_schedule_s[0] = 60;
	f->r.cfg.retry_schedule_s[1] = 300;
	f->r.cfg.retry_schedule_s[2] = 1800;
	f->r.cfg.nretry_schedule = 3;
	f->r.cfg.queue_lifetime_s = 5 * 86400;
	f->r.cfg.max_connections_per_domain = 2;
	if (uv_loop_init(&f->loop) != 0 || queue_ram_new(&f->ram) != 0)
		return -1;
	f->r.loop = &f->loop;
	f->qb = queue_ram_backend(f->ram);
	if (uv_timer_init(&f->loop, &f->abort_timer) != 0)
		return -1;
	f->abort_timer.data = f;
	*state = f;
	return 0;
}

static void on_stopped(void *arg)
{
	struct fixture *f = arg;

	f->stopped = true;
}

static void turns(struct fixture *f, int n)
{
	const struct timespec ms = { 0, 1000000 };
	int i;

	for (i = 0; i < n; i++) {
		uv_run(&f->loop, UV_RUN_NOWAIT);
		nanosleep(&ms, NULL);
	}
}

/* Runs the loop until pred holds: at most TURNS_MAX turns (about 3 s). */
static bool wait_for(struct fixture *f, bool (*pred)(struct fixture *f, const void *arg),
		     const void *arg)
{
	const struct timespec ms = { 0, 1000000 };
	int i;

	for (i = 0; i < TURNS_MAX; i++) {
		if (pred(f, arg))
			return true;
		uv_run(&f->loop, UV_RUN_NOWAIT);
		nanosleep(&ms, NULL);
	}
	return pred(f, arg);
}

static bool is_stopped(struct fixture *f, const void *arg)
{
	return f->stopped;
}

static void walk_close(uv_handle_t *h, void *arg)
{
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	size_t i;

	/* a test that failed half-way may leave deliveries running */
	for (i = 0; i < f->nstarts; i++)
		if (!f->starts[i].finished)
			finish(&f->starts[i], DELIVERY_ABORTED, "4.0.0", "aborted");
	if (f->s != NULL) {
		scheduler_stop(f->s, on_stopped, f);
		assert_true(wait_for(f, is_stopped, NULL));
	}
	uv_walk(&f->loop, walk_close, NULL);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	/* no handle left behind (libuv's own test rule) */
	assert_int_equal(uv_loop_close(&f->loop), 0);
	scheduler_free(f->s);
	queue_ram_free(f->ram);
	clock_fake_set_ms(0);
	free(f);
	return 0;
}

/* ---- helpers ---- */

static void start_scheduler(struct fixture *f)
{
	assert_int_equal(scheduler_new_with(&f->r, &f->qb, &stub, f, &f->s), 0);
}

/* Queues a message from sender to the NULL-terminated rcpts, arrived at
 * queued_at (unix seconds), with the given flags; id receives its id. */
static void add_msg(struct fixture *f, const char *sender, const char *const *rcpts,
		    int64_t queued_at, unsigned flags, char id[QUEUE_ID_LEN + 1])
{
	static const char data[] = "From: <sender@origin.example>\r\n"
				   "Subject: scheduler test\r\n\r\nbody\r\n";
	struct queue_envelope env;

	memset(&env, 0, sizeof(env));
	env.queued_at = queued_at;
	env.flags = flags;
	snprintf(env.sender, sizeof(env.sender), "%s", sender);
	for (; *rcpts != NULL; rcpts++)
		assert_int_equal(queue_envelope_add_rcpt(&env, *rcpts), 0);
	assert_int_equal(f->qb.ops->add(f->qb.q, &env, data, sizeof(data) - 1, id), 0);
	queue_envelope_clear(&env);
}

/* Recipient 0 of id as an earlier attempt left it: deferred `attempts`
 * times, next try at next_try (unix seconds). */
static void seed_deferred(struct fixture *f, const char *id, unsigned attempts, int64_t next_try)
{
	struct queue_envelope env;
	char err[256];

	assert_int_equal(f->qb.ops->load(f->qb.q, id, &env, err, sizeof(err)), 0);
	env.rcpts[0].status = QUEUE_DEFERRED;
	env.rcpts[0].attempts = attempts;
	env.rcpts[0].next_try = next_try;
	env.rcpts[0].last_try = next_try - 60;
	snprintf(env.rcpts[0].last_error, sizeof(env.rcpts[0].last_error), "4.4.1 seeded");
	assert_int_equal(f->qb.ops->save_state(f->qb.q, &env), 0);
	queue_envelope_clear(&env);
}

/* Recipient i of id as the queue holds it; false when the message is gone. */
static bool stored_rcpt(struct fixture *f, const char *id, size_t i, struct queue_rcpt *out)
{
	struct queue_envelope env;
	char err[256];

	if (f->qb.ops->load(f->qb.q, id, &env, err, sizeof(err)) != 0)
		return false;
	assert_true(i < env.nrcpts);
	*out = env.rcpts[i];
	queue_envelope_clear(&env);
	return true;
}

static void move_clock(struct fixture *f, int64_t ms)
{
	clock_fake_set_ms(ms);
	scheduler_clock_moved(f->s);
}

static bool has_starts(struct fixture *f, const void *arg)
{
	return f->nstarts >= *(const size_t *)arg;
}

static void wait_starts(struct fixture *f, size_t n)
{
	assert_true(wait_for(f, has_starts, &n));
	assert_int_equal(f->nstarts, n);
}

static bool is_gone(struct fixture *f, const void *arg)
{
	struct queue_rcpt q;

	return !stored_rcpt(f, arg, 0, &q);
}

static bool is_forgotten(struct fixture *f, const void *arg)
{
	return !scheduler_knows(f->s, arg);
}

struct attempts_want {
	const char *id;
	unsigned attempts;
};

static bool has_attempts(struct fixture *f, const void *arg)
{
	const struct attempts_want *w = arg;
	struct queue_rcpt q;

	return stored_rcpt(f, w->id, 0, &q) && q.attempts == w->attempts;
}

/* Waits until recipient 0 of id is saved with `attempts` attempts. */
static struct queue_rcpt wait_attempts(struct fixture *f, const char *id, unsigned attempts)
{
	struct attempts_want w = { id, attempts };
	struct queue_rcpt q;

	assert_true(wait_for(f, has_attempts, &w));
	assert_true(stored_rcpt(f, id, 0, &q));
	return q;
}

static bool journal_has(struct fixture *f, const void *line)
{
	queue_ram_journal(f->ram, f->journal, sizeof(f->journal));
	return strstr(f->journal, line) != NULL;
}

/* Offset of line in the journal (read last), which must hold it. */
static size_t journal_at(struct fixture *f, const char *line)
{
	const char *p = strstr(f->journal, line);

	assert_non_null(p);
	return (size_t)(p - f->journal);
}

/* ---- retry order ---- */

/* One recipient deferred again and again: each next try is the schedule's
 * step for its attempt count (the last step repeats), nothing starts a
 * moment early, and the start comes at the due second itself. */
static void test_retry_follows_schedule(void **state)
{
	static const int64_t want_delay[] = { 60, 300, 1800, 1800 };
	static const char *const rcpts[] = { "u@a.example", NULL };
	struct fixture *f = *state;
	char id[QUEUE_ID_LEN + 1], line[64];
	int64_t now = T0;
	size_t k;

	add_msg(f, "sender@origin.example", rcpts, T0, 0, id);
	start_scheduler(f);
	wait_starts(f, 1);
	assert_int_equal(f->starts[0].at_ms, T0_MS);
	assert_string_equal(f->starts[0].domain, "a.example");
	for (k = 0; k < sizeof(want_delay) / sizeof(want_delay[0]); k++) {
		struct queue_rcpt q;

		finish(&f->starts[k], DELIVERY_DEFER, "4.4.1", "4.4.1 connection refused");
		q = wait_attempts(f, id, (unsigned)k + 1);
		assert_int_equal(q.status, QUEUE_DEFERRED);
		assert_int_equal(q.last_try, now);
		assert_int_equal(q.next_try, now + want_delay[k]);
		assert_non_null(strstr(q.last_error, "connection refused"));

		/* a pass runs 1 ms before the due time, and starts nothing */
		move_clock(f, q.next_try * 1000 - 1);
		turns(f, 20);
		assert_int_equal(f->nstarts, k + 1);
		move_clock(f, q.next_try * 1000);
		wait_starts(f, k + 2);
		assert_int_equal(f->starts[k + 1].at_ms, q.next_try * 1000);
		now = q.next_try;
	}
	finish(&f->starts[k], DELIVERY_SENT, "2.0.0", "250 2.0.0 ok");
	assert_true(wait_for(f, is_gone, id));
	snprintf(line, sizeof(line), "remove %s\n", id);
	assert_true(journal_has(f, line));
}

/* Messages come due in the order of their next tries, whatever order they
 * were queued in; one without a state (never tried) goes at once. */
static void test_retry_order_across_messages(void **state)
{
	static const char *const ra[] = { "u@a.example", NULL },
				 *const rb[] = { "u@b.example", NULL },
				 *const rc[] = { "u@c.example", NULL },
				 *const rd[] = { "u@d.example", NULL };
	struct fixture *f = *state;
	char a[QUEUE_ID_LEN + 1], b[QUEUE_ID_LEN + 1], c[QUEUE_ID_LEN + 1], d[QUEUE_ID_LEN + 1];
	size_t i;

	add_msg(f, "sender@origin.example", ra, T0 - 900, 0, a);
	add_msg(f, "sender@origin.example", rb, T0 - 900, 0, b);
	add_msg(f, "sender@origin.example", rc, T0 - 900, 0, c);
	add_msg(f, "sender@origin.example", rd, T0, 0, d);
	seed_deferred(f, a, 2, T0 + 30);
	seed_deferred(f, b, 1, T0 + 10);
	seed_deferred(f, c, 3, T0 + 20);
	start_scheduler(f);
	wait_starts(f, 1);
	assert_string_equal(f->starts[0].id, d);
	turns(f, 20);
	assert_int_equal(f->nstarts, 1);

	move_clock(f, (T0 + 100) * 1000); /* all three due in one pass */
	wait_starts(f, 4);
	assert_string_equal(f->starts[1].id, b);
	assert_string_equal(f->starts[2].id, c);
	assert_string_equal(f->starts[3].id, a);
	for (i = 0; i < 4; i++)
		finish(&f->starts[i], DELIVERY_SENT, "2.0.0", "250 ok");
	assert_true(wait_for(f, is_gone, a));
	assert_true(wait_for(f, is_gone, b));
	assert_true(wait_for(f, is_gone, c));
	assert_true(wait_for(f, is_gone, d));
}

/* ---- the per-domain limit ---- */

static bool ram_empty(struct fixture *f, const void *arg)
{
	return queue_ram_count(f->ram) == 0;
}

/* max_connections_per_domain = 2: five messages to x.example run two at a
 * time, each freed slot going to one waiter, while y.example is not held
 * up; the two recipients of one message at x.example share one delivery. */
static void test_per_domain_limit(void **state)
{
	static const char *const two[] = { "a@x.example", "b@X.example", NULL },
				 *const one[] = { "c@x.example", NULL },
				 *const other[] = { "d@y.example", NULL };
	struct fixture *f = *state;
	char ids[6][QUEUE_ID_LEN + 1];
	size_t i, next, x_started = 0, seen_two = 0;

	add_msg(f, "sender@origin.example", two, T0, 0, ids[0]);
	for (i = 1; i < 5; i++)
		add_msg(f, "sender@origin.example", one, T0, 0, ids[i]);
	add_msg(f, "sender@origin.example", other, T0, 0, ids[5]);
	start_scheduler(f);
	wait_starts(f, 3);
	turns(f, 20);
	assert_int_equal(f->nstarts, 3);
	assert_int_equal(running_to(f, "x.example"), 2);
	assert_int_equal(running_to(f, "y.example"), 1);

	/* each finished x delivery lets exactly one waiter in */
	for (next = 0; next < f->nstarts; next++) {
		struct start *st = &f->starts[next];

		if (strcmp(st->domain, "x.example") != 0)
			continue;
		x_started++;
		if (st->n == 2) {
			seen_two++;
			assert_string_equal(st->rcpt[0], "a@x.example");
			assert_string_equal(st->rcpt[1], "b@X.example");
		}
		finish(st, DELIVERY_SENT, "2.0.0", "250 ok");
		if (f->nstarts < 6) {
			wait_starts(f, f->nstarts + 1);
			turns(f, 5);
		}
		assert_true(running_to(f, "x.example") <= 2);
	}
	assert_int_equal(x_started, 5);
	assert_int_equal(seen_two, 1);
	assert_int_equal(f->nstarts, 6);
	assert_int_equal(f->peak, 2);
	for (i = 0; i < 5; i++) { /* each x message started once */
		size_t k, n = 0;

		for (k = 0; k < f->nstarts; k++)
			n += strcmp(f->starts[k].id, ids[i]) == 0;
		assert_int_equal(n, 1);
	}
	for (i = 0; i < f->nstarts; i++)
		if (!f->starts[i].finished)
			finish(&f->starts[i], DELIVERY_SENT, "2.0.0", "250 ok");
	assert_true(wait_for(f, ram_empty, NULL));
}

/* ---- queue lifetime ---- */

/* Reads the whole data of the only message in the queue into buf. */
static void only_message(struct fixture *f, struct queue_envelope *env, char *buf, size_t len)
{
	char(*ids)[QUEUE_ID_LEN + 1] = NULL;
	char err[256];
	size_t n = 0;
	ssize_t got;

	assert_int_equal(f->qb.ops->scan(f->qb.q, &ids, &n), 0);
	assert_int_equal(n, 1);
	assert_int_equal(f->qb.ops->load(f->qb.q, ids[0], env, err, sizeof(err)), 0);
	free(ids);
	got = f->qb.ops->read_data(f->qb.q, env, buf, len - 1);
	assert_true(got > 0);
	buf[got] = '\0';
}

/* queue_lifetime = 1 hour, retry every 10 minutes: the try that would come
 * after the lifetime comes at its end instead, and a deferral there
 * bounces: a DSN (5.4.7, the last error named) goes to the sender and is
 * scheduled itself; the message is removed. */
static void test_lifetime_bounces(void **state)
{
	static const char *const rcpts[] = { "u@a.example", NULL };
	struct fixture *f = *state;
	struct queue_envelope dsn;
	struct queue_rcpt q;
	char id[QUEUE_ID_LEN + 1], data[8192];

	f->r.cfg.queue_lifetime_s = 3600;
	f->r.cfg.retry_schedule_s[0] = 600;
	f->r.cfg.nretry_schedule = 1;
	add_msg(f, "sender@origin.example", rcpts, T0 - 3500, 0, id); /* expires at T0 + 100 */
	start_scheduler(f);
	wait_starts(f, 1);
	finish(&f->starts[0], DELIVERY_DEFER, "4.4.1", "4.4.1 connection refused");
	q = wait_attempts(f, id, 1);
	assert_int_equal(q.status, QUEUE_DEFERRED);
	assert_int_equal(q.next_try, T0 + 100); /* not T0 + 600: one last try at the end */

	move_clock(f, (T0 + 100) * 1000);
	wait_starts(f, 2);
	finish(&f->starts[1], DELIVERY_DEFER, "4.4.1", "4.4.1 connection refused");
	assert_true(wait_for(f, is_gone, id));
	assert_true(wait_for(f, is_forgotten, id)); /* once the removal has returned */

	only_message(f, &dsn, data, sizeof(data));
	assert_string_equal(dsn.sender, "");
	assert_int_equal(dsn.nrcpts, 1);
	assert_string_equal(dsn.rcpts[0].address, "sender@origin.example");
	assert_true(dsn.flags & QUEUE_F_NOBOUNCE);
	assert_non_null(strstr(data, "Final-Recipient: rfc822; u@a.example"));
	assert_non_null(strstr(data, "Action: failed"));
	assert_non_null(strstr(data, "Status: 5.4.7"));
	assert_non_null(strstr(data, "delivery time expired"));
	assert_non_null(strstr(data, "connection refused"));

	wait_starts(f, 3); /* the DSN itself goes out */
	assert_string_equal(f->starts[2].id, dsn.id);
	assert_string_equal(f->starts[2].domain, "origin.example");
	finish(&f->starts[2], DELIVERY_SENT, "2.0.0", "250 ok");
	assert_true(wait_for(f, ram_empty, NULL));
	queue_envelope_clear(&dsn);
}

/* A TLS-RPT report mail lives 24 hours whatever queue_lifetime says
 * (RFC 8460 §5.5), and is dropped without a DSN (it is flagged no-bounce). */
static void test_lifetime_tlsrpt_mail(void **state)
{
	static const char *const rcpts[] = { "tlsrpt@a.example", NULL };
	struct fixture *f = *state;
	char id[QUEUE_ID_LEN + 1];

	add_msg(f, "noreply@relay.test", rcpts, T0 - 86400, QUEUE_F_TLSRPT | QUEUE_F_NOBOUNCE, id);
	start_scheduler(f);
	wait_starts(f, 1);
	finish(&f->starts[0], DELIVERY_DEFER, "4.4.1", "4.4.1 connection refused");
	assert_true(wait_for(f, ram_empty, NULL)); /* bounced, removed, no DSN */
	turns(f, 20);
	assert_int_equal(f->nstarts, 1);
}

/* ---- the I/O life cycle ---- */

/* Deleted while the save of a deferral is in flight: the removal follows
 * the save, never beside or before it, and nothing is saved after it. */
static void test_delete_while_saving(void **state)
{
	static const char *const rcpts[] = { "u@a.example", NULL };
	struct fixture *f = *state;
	char id[QUEUE_ID_LEN + 1], save[64], remove[64];

	add_msg(f, "sender@origin.example", rcpts, T0, 0, id);
	start_scheduler(f);
	wait_starts(f, 1);
	finish(&f->starts[0], DELIVERY_DEFER, "4.4.1", "4.4.1 connection refused");
	/* the save is submitted, its done callback cannot have run yet */
	assert_int_equal(scheduler_delete(f->s, id), 0);
	assert_false(scheduler_knows(f->s, id));
	assert_true(wait_for(f, is_gone, id));
	snprintf(save, sizeof(save), "save %s\nsync\n", id);
	snprintf(remove, sizeof(remove), "remove %s\nsync\n", id);
	assert_true(wait_for(f, journal_has, remove));
	assert_true(journal_at(f, save) < journal_at(f, remove));
	assert_null(strstr(f->journal + journal_at(f, remove), "save "));
	assert_int_equal(scheduler_delete(f->s, id), -1); /* unknown now */
}

/* Deleted while its delivery runs: the files go at once, the delivery is
 * aborted, and its late verdict changes nothing on disk. */
static void test_delete_during_delivery(void **state)
{
	static const char *const rcpts[] = { "u@a.example", NULL };
	struct fixture *f = *state;
	char id[QUEUE_ID_LEN + 1], save[64];

	add_msg(f, "sender@origin.example", rcpts, T0, 0, id);
	start_scheduler(f);
	wait_starts(f, 1);
	assert_int_equal(scheduler_delete(f->s, id), 0);
	assert_true(is_gone(f, id));
	assert_true(f->starts[0].aborted);
	turns(f, 20);
	assert_true(f->starts[0].finished);
	snprintf(save, sizeof(save), "save %s", id);
	assert_false(journal_has(f, save));
	assert_int_equal(queue_ram_count(f->ram), 0);
}

/* The removal of a finished message fails: the states are saved instead
 * (all sent), so a restart finds nothing to deliver again. */
static void test_failed_removal_saves(void **state)
{
	static const char *const rcpts[] = { "u@a.example", NULL };
	struct fixture *f = *state;
	struct queue_rcpt q;
	char id[QUEUE_ID_LEN + 1], failed[96], save[64];

	add_msg(f, "sender@origin.example", rcpts, T0, 0, id);
	start_scheduler(f);
	wait_starts(f, 1);
	queue_ram_fail(f->ram, QUEUE_RAM_REMOVE, EIO, 1);
	finish(&f->starts[0], DELIVERY_SENT, "2.0.0", "250 ok");
	snprintf(failed, sizeof(failed), "remove %s failed: %s\n", id, strerror(EIO));
	snprintf(save, sizeof(save), "save %s\nsync\n", id);
	assert_true(wait_for(f, journal_has, save));
	assert_true(journal_at(f, failed) < journal_at(f, save));
	assert_true(stored_rcpt(f, id, 0, &q));
	assert_int_equal(q.status, QUEUE_SENT);
	assert_true(scheduler_knows(f->s, id));
	turns(f, 20);
	assert_int_equal(f->nstarts, 1); /* sent stays sent */
}

/* `stsrelay queue bounce ID`: the deferred recipient bounces now (5.0.0),
 * the DSN is queued before the message goes. */
static void test_admin_bounce(void **state)
{
	static const char *const rcpts[] = { "u@a.example", NULL };
	struct fixture *f = *state;
	struct queue_envelope dsn;
	char id[QUEUE_ID_LEN + 1], data[8192];

	add_msg(f, "sender@origin.example", rcpts, T0 - 600, 0, id);
	seed_deferred(f, id, 1, T0 + 3600);
	start_scheduler(f);
	turns(f, 20);
	assert_int_equal(f->nstarts, 0);
	assert_int_equal(scheduler_bounce(f->s, id), 0);
	assert_true(wait_for(f, is_gone, id));
	only_message(f, &dsn, data, sizeof(data));
	assert_string_equal(dsn.rcpts[0].address, "sender@origin.example");
	assert_non_null(strstr(data, "Status: 5.0.0"));
	assert_non_null(strstr(data, "bounced by the administrator"));
	queue_envelope_clear(&dsn);
}

/* Two deliveries bounce (5.1.1) in the same loop turn: the verdicts'
 * callbacks write nothing (the DSNs are composed and committed in the
 * thread pool), and one batch adds both DSNs, syncs the queue once, and
 * only then removes the two finished messages (a DSN is durable before the
 * change that says "bounced"); then both DSNs are scheduled and go out. */
static void test_bounces_batched(void **state)
{
	static const char *const ra[] = { "u@a.example", NULL };
	static const char *const rb[] = { "v@b.example", NULL };
	struct fixture *f = *state;
	char id[2][QUEUE_ID_LEN + 1], dsn[2][QUEUE_ID_LEN + 1], want[256];
	size_t before, i;

	add_msg(f, "s1@origin.example", ra, T0, 0, id[0]);
	add_msg(f, "s2@origin.example", rb, T0, 0, id[1]);
	start_scheduler(f);
	wait_starts(f, 2);
	before = queue_ram_journal(f->ram, f->journal, sizeof(f->journal));
	finish(&f->starts[0], DELIVERY_BOUNCE, "5.1.1", "550 5.1.1 unknown user");
	finish(&f->starts[1], DELIVERY_BOUNCE, "5.1.1", "550 5.1.1 unknown user");
	assert_int_equal(queue_ram_journal(f->ram, f->journal, sizeof(f->journal)), before);
	assert_true(wait_for(f, is_gone, id[0]));
	assert_true(wait_for(f, is_gone, id[1]));
	wait_starts(f, 4);

	assert_true(queue_ram_journal(f->ram, f->journal, sizeof(f->journal)) < sizeof(f->journal));
	assert_int_equal(sscanf(f->journal + before, "add %12s add %12s", dsn[0], dsn[1]), 2);
	snprintf(want, sizeof(want), "add %s\nadd %s\nsync\nremove %s\nremove %s\nsync\n", dsn[0],
		 dsn[1], id[0], id[1]);
	assert_memory_equal(f->journal + before, want, strlen(want));
	for (i = 2; i < 4; i++) {
		assert_true(strcmp(f->starts[i].id, dsn[0]) == 0 ||
			    strcmp(f->starts[i].id, dsn[1]) == 0);
		assert_string_equal(f->starts[i].domain, "origin.example");
	}
	assert_string_not_equal(f->starts[2].id, f->starts[3].id);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_retry_follows_schedule, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retry_order_across_messages, setup, teardown),
		cmocka_unit_test_setup_teardown(test_per_domain_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lifetime_bounces, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lifetime_tlsrpt_mail, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete_while_saving, setup, teardown),
		cmocka_unit_test_setup_teardown(test_delete_during_delivery, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_removal_saves, setup, teardown),
		cmocka_unit_test_setup_teardown(test_admin_bounce, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bounces_batched, setup, teardown),
	};

	log_setup("test_daemon_scheduler", LOG_FORMAT_TEXT, LOG_TARGET_STDERR);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
