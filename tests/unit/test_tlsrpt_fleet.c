/* sts/tlsrpt/fleet.c against a real redis-server started here: two nodes'
 * session files summed once, a lost reply not counted twice, the ledger. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "relay/core/clock.h"
#include "relay/net/redis.h"
#include "sts/tlsrpt/fleet.h"
#include "sts/tlsrpt/tlsrpt.h"
#include "test_loop.h"
#include "test_redis_server.h"
#include "test_util.h"

#define DAY "2026-03-10"
#define DAY_START 1773100800 /* 2026-03-10T00:00:00Z */

struct node {
	char spool[64];
	struct tlsrpt_fleet *f;
};

struct ctx {
	uv_loop_t loop;
	struct redis *r;
	struct node n[2];
	/* the last prepare's answer */
	bool done;
	enum tlsrpt_fleet_status st;
	struct tlsrpt_day *d;
	char why[512];
	/* the last claim's answer */
	bool claimed;
	enum tlsrpt_claim claim;
};

static void on_state(void *arg, bool up)
{
	struct ctx *c = arg;
	int i;

	for (i = 0; i < 2; i++)
		if (c->n[i].f != NULL)
			tlsrpt_fleet_redis_state(c->n[i].f, up);
}

static bool run_until(struct ctx *c, bool (*pred)(void *), unsigned ms)
{
	return test_run_until(&c->loop, pred, c, ms);
}

static bool is_up(void *arg)
{
	struct ctx *c = arg;

	return redis_up(c->r);
}

static bool is_down(void *arg)
{
	struct ctx *c = arg;

	return !redis_up(c->r);
}

static bool never(void *arg)
{
	(void)arg;
	return false;
}

static bool is_done(void *arg)
{
	struct ctx *c = arg;

	return c->done;
}

static bool is_claimed(void *arg)
{
	struct ctx *c = arg;

	return c->claimed;
}

static void prepared(void *arg, enum tlsrpt_fleet_status st, struct tlsrpt_day *d, const char *why)
{
	struct ctx *c = arg;

	c->done = true;
	c->st = st;
	tlsrpt_day_free(c->d);
	c->d = d;
	snprintf(c->why, sizeof(c->why), "%s", why);
}

/* The fleet's day through node i; its status. */
static enum tlsrpt_fleet_status prepare_day(struct ctx *c, int i, const char *day, bool wait)
{
	c->done = false;
	assert_int_equal(tlsrpt_fleet_prepare(c->n[i].f, day, wait, prepared, c, NULL), 0);
	assert_false(c->done); /* never inside the call */
	assert_true(run_until(c, is_done, 10000));
	return c->st;
}

static enum tlsrpt_fleet_status prepare(struct ctx *c, int i, bool wait)
{
	return prepare_day(c, i, DAY, wait);
}

/* Sessions of domain (result: NULL any, else only that result's) in c->d. */
static uint64_t sessions(struct ctx *c, const char *domain)
{
	uint64_t sum = 0, n;
	size_t i;
	char dom[256];

	for (i = 0; i < tlsrpt_day_ngroups(c->d); i++) {
		const char *k = tlsrpt_day_group(c->d, i, &n);

		if (tlsrpt_group_domain(k, dom, sizeof(dom)) == 0 && strcmp(dom, domain) == 0)
			sum += n;
	}
	return sum;
}

/* The fleet's report of a DANE domain: policy-type tlsa with the records
 * as its policy-string (the text came back from Redis by its hash). */
static void assert_tlsa_report(struct ctx *c, const char *domain)
{
	struct tlsrpt_meta meta = { .org_name = "Org", .contact = "tls@relay.example" };
	json_t *r = tlsrpt_report_build(c->d, domain, &meta);
	json_t *pol;

	assert_non_null(r);
	pol = json_object_get(json_array_get(json_object_get(r, "policies"), 0), "policy");
	assert_string_equal(json_string_value(json_object_get(pol, "policy-type")), "tlsa");
	assert_int_equal(json_array_size(json_object_get(pol, "policy-string")), 1);
	assert_non_null(
		strstr(json_string_value(json_array_get(json_object_get(pol, "policy-string"), 0)),
		       "IN TLSA 3 1 1"));
	json_decref(r);
}

static void record_at(struct node *n, const char *domain, enum smtp_tls_result res, int count,
		      int64_t when)
{
	struct tlsrpt_store *st;
	struct tlsrpt_session s = { .domain = domain,
				    .result = res,
				    .sending_mta_ip = "192.0.2.1",
				    .mx_host = "mx.example.net",
				    .mx_ip = "192.0.2.25",
				    .reason = res == SMTP_TLS_RESULT_SUCCESS ? NULL : "test",
				    .when = when };
	char err[256];
	int i;

	assert_int_equal(tlsrpt_store_open(n->spool, NULL, &st, err, sizeof(err)), 0);
	for (i = 0; i < count; i++)
		assert_int_equal(tlsrpt_record(st, &s), 0);
	assert_int_equal(tlsrpt_store_sync(st), 0);
	tlsrpt_store_close(st);
}

/* DANE sessions (policy-type tlsa, its records as the policy text). */
static void record_tlsa(struct node *n, const char *domain, int count)
{
	static const char records[] = "_25._tcp.mx.d.example. IN TLSA 3 1 1 "
				      "0123456789abcdef0123456789abcdef0123456789abcdef"
				      "0123456789abcdef";
	struct tlsrpt_store *st;
	struct tlsrpt_session s = { .domain = domain,
				    .tlsa = true,
				    .tlsa_text = records,
				    .tlsa_text_len = sizeof(records) - 1,
				    .result = SMTP_TLS_RESULT_SUCCESS,
				    .sending_mta_ip = "192.0.2.1",
				    .mx_host = "mx.d.example",
				    .mx_ip = "192.0.2.26",
				    .when = DAY_START + 7200 };
	char err[256];
	int i;

	assert_int_equal(tlsrpt_store_open(n->spool, NULL, &st, err, sizeof(err)), 0);
	for (i = 0; i < count; i++)
		assert_int_equal(tlsrpt_record(st, &s), 0);
	assert_int_equal(tlsrpt_store_sync(st), 0);
	tlsrpt_store_close(st);
}

static void record(struct node *n, const char *domain, enum smtp_tls_result res, int count)
{
	record_at(n, domain, res, count, DAY_START + 3600);
}

static void start(struct ctx *c, struct test_redis *t)
{
	struct config_redis url;
	struct redis_config rc = { .url = &url, .timeout_ms = 300, .on_state = on_state };
	char err[128], u[64];
	int i;

	memset(c, 0, sizeof(*c));
	assert_int_equal(uv_loop_init(&c->loop), 0);
	snprintf(u, sizeof(u), "redis://127.0.0.1:%u/0", (unsigned)t->port);
	assert_int_equal(config_parse_redis_url(u, &url, err, sizeof(err)), 0);
	rc.arg = c;
	assert_int_equal(redis_new(&c->loop, &rc, &c->r), 0);
	for (i = 0; i < 2; i++) {
		struct tlsrpt_fleet_config fc = { .loop = &c->loop,
						  .redis = c->r,
						  .spool_dir = c->n[i].spool,
						  .node = i == 0 ? "node-a" : "node-b",
						  .retention_s = 14 * 86400 };

		snprintf(c->n[i].spool, sizeof(c->n[i].spool), "/tmp/stsrelay-fleet-XXXXXX");
		assert_non_null(mkdtemp(c->n[i].spool));
		fc.spool_dir = c->n[i].spool;
		assert_int_equal(tlsrpt_fleet_new(&fc, &c->n[i].f), 0);
	}
	assert_true(run_until(c, is_up, 5000));
}

static void finish(struct ctx *c)
{
	int i;

	tlsrpt_day_free(c->d);
	for (i = 0; i < 2; i++) {
		tlsrpt_fleet_free(c->n[i].f);
		c->n[i].f = NULL;
	}
	redis_free(c->r);
	uv_run(&c->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&c->loop), 0);
	for (i = 0; i < 2; i++)
		test_rmtree(c->n[i].spool);
}

/* Two nodes' records of a day: node A's alone first, then both; the sums
 * are each session once, however often asked. */
static void test_two_nodes_summed_once(void **state)
{
	struct test_redis t = { .pid = -1 };
	struct ctx c;
	int round;

	(void)state;
	assert_int_equal(test_redis_start(&t), 0);
	start(&c, &t);
	record(&c.n[0], "a.example", SMTP_TLS_RESULT_SUCCESS, 3);
	record(&c.n[0], "a.example", SMTP_TLS_RESULT_CERTIFICATE_EXPIRED, 2);
	record(&c.n[1], "a.example", SMTP_TLS_RESULT_SUCCESS, 4);
	record(&c.n[1], "b.example", SMTP_TLS_RESULT_STARTTLS_NOT_SUPPORTED, 1);
	record_tlsa(&c.n[1], "d.example", 3);

	assert_int_equal(prepare(&c, 0, false), TLSRPT_FLEET_READY);
	assert_int_equal(sessions(&c, "a.example"), 5);
	assert_int_equal(sessions(&c, "b.example"), 0);
	/* B merges its own first (a node the fleet has never heard of is not
	 * waited for), then every node's sums through either */
	for (round = 0; round < 4; round++) {
		assert_int_equal(prepare(&c, 1 - round % 2, true), TLSRPT_FLEET_READY);
		assert_int_equal(sessions(&c, "a.example"), 9);
		assert_int_equal(sessions(&c, "b.example"), 1);
		assert_int_equal(sessions(&c, "d.example"), 3);
		assert_int_equal(tlsrpt_day_ndomains(c.d), 3);
		assert_int_equal(tlsrpt_day_bad_lines(c.d), 0);
		assert_tlsa_report(&c, "d.example");
	}
	/* more lines later: only they are added */
	record(&c.n[1], "b.example", SMTP_TLS_RESULT_STARTTLS_NOT_SUPPORTED, 6);
	assert_int_equal(prepare(&c, 1, true), TLSRPT_FLEET_READY);
	assert_int_equal(sessions(&c, "b.example"), 7);
	assert_int_equal(sessions(&c, "a.example"), 9);

	/* today is never over: a daily run waiting for every node's day
	 * hears which node it waits for; without the wait, the sums so far */
	{
		char today[TLSRPT_DAY_LEN + 1];

		tlsrpt_day_of(clock_now(), today);
		record_at(&c.n[0], "a.example", SMTP_TLS_RESULT_SUCCESS, 2, clock_now());
		assert_int_equal(prepare_day(&c, 0, today, false), TLSRPT_FLEET_READY);
		assert_int_equal(sessions(&c, "a.example"), 2);
		assert_int_equal(prepare_day(&c, 1, today, true), TLSRPT_FLEET_WAIT);
		assert_non_null(strstr(c.why, "node-a"));
		assert_null(c.d);
	}
	finish(&c);
	test_redis_stop(&t, SIGTERM);
	test_rmtree(t.dir);
}

static int g_replies;
static void on_reply(void *arg, const redisReply *rp);
static bool have_reply(void *arg);

/* The merge script sent to a paused Redis: its reply never comes (the
 * connection is dropped after the timeout) though Redis may run it when
 * it resumes. The next merge reads the cursor again: the new lines count
 * once whichever happened. A Redis killed and restarted from its
 * append-only file likewise. */
static void test_lost_reply_not_double_counted(void **state)
{
	struct test_redis t = { .pid = -1 };
	struct ctx c;

	(void)state;
	assert_int_equal(test_redis_start(&t), 0);
	start(&c, &t);
	record(&c.n[0], "a.example", SMTP_TLS_RESULT_SUCCESS, 3);
	assert_int_equal(prepare(&c, 0, false), TLSRPT_FLEET_READY);
	assert_int_equal(sessions(&c, "a.example"), 3);

	record(&c.n[0], "a.example", SMTP_TLS_RESULT_SUCCESS, 2);
	test_redis_signal(&t, SIGSTOP);
	assert_int_equal(prepare(&c, 0, false), TLSRPT_FLEET_DOWN);
	test_redis_signal(&t, SIGCONT);
	assert_true(run_until(&c, is_up, 10000));
	assert_int_equal(prepare(&c, 0, false), TLSRPT_FLEET_READY);
	assert_int_equal(sessions(&c, "a.example"), 5);

	record(&c.n[0], "a.example", SMTP_TLS_RESULT_SUCCESS, 4);
	test_redis_stop(&t, SIGKILL);
	assert_int_equal(prepare(&c, 0, false), TLSRPT_FLEET_DOWN);
	assert_int_equal(test_redis_start(&t), 0);
	assert_true(run_until(&c, is_up, 10000));
	assert_int_equal(prepare(&c, 0, false), TLSRPT_FLEET_READY);
	assert_int_equal(sessions(&c, "a.example"), 9);

	/* a Redis that lost everything (FLUSHALL: a new, empty one) gets this
	 * node's whole day again, once */
	{
		const char *argv[1] = { "FLUSHALL" };
		size_t lens[1] = { 8 };

		g_replies = 0;
		assert_int_equal(redis_command(c.r, on_reply, &c, NULL, 1, argv, lens), 0);
		assert_true(run_until(&c, have_reply, 3000));
	}
	assert_int_equal(prepare(&c, 0, false), TLSRPT_FLEET_READY);
	assert_int_equal(sessions(&c, "a.example"), 9);
	assert_int_equal(prepare(&c, 0, false), TLSRPT_FLEET_READY);
	assert_int_equal(sessions(&c, "a.example"), 9);
	finish(&c);
	test_redis_stop(&t, SIGTERM);
	test_rmtree(t.dir);
}

static void on_reply(void *arg, const redisReply *rp)
{
	(void)arg;
	(void)rp;
	g_replies++;
}

static bool have_reply(void *arg)
{
	(void)arg;
	return g_replies > 0;
}

/* HSET stsrelay:tlsrpt:seen NODE WHEN, as that node's daemon would. */
static void seen(struct ctx *c, const char *node, int64_t when)
{
	char v[24];
	const char *argv[4] = { "HSET", "stsrelay:tlsrpt:seen", node, v };
	size_t lens[4], i;

	snprintf(v, sizeof(v), "%lld", (long long)when);
	for (i = 0; i < 4; i++)
		lens[i] = strlen(argv[i]);
	g_replies = 0;
	assert_int_equal(redis_command(c->r, on_reply, c, NULL, 4, argv, lens), 0);
	assert_true(run_until(c, have_reply, 3000));
}

/* A report of yesterday waits for a daemon seen since yesterday began
 * that has not merged it (it may hold counts it could not send), not for
 * one last seen before; a running daemon without sessions that day
 * finishes it at once and is not waited for. */
static void test_waits_for_seen_nodes(void **state)
{
	struct test_redis t = { .pid = -1 };
	struct ctx c;
	struct tlsrpt_fleet *bg = NULL;
	struct tlsrpt_fleet_config fc = { .node = "node-c",
					  .retention_s = 14 * 86400,
					  .background = true };
	char bgspool[64] = "/tmp/stsrelay-fleet-XXXXXX";
	char yesterday[TLSRPT_DAY_LEN + 1];
	int64_t ystart = clock_now() / 86400 * 86400 - 86400;
	int i;

	(void)state;
	tlsrpt_day_of(ystart, yesterday);
	assert_int_equal(test_redis_start(&t), 0);
	start(&c, &t);
	record_at(&c.n[0], "a.example", SMTP_TLS_RESULT_SUCCESS, 2, ystart + 60);
	seen(&c, "node-ghost", clock_now());
	assert_int_equal(prepare_day(&c, 0, yesterday, true), TLSRPT_FLEET_WAIT);
	assert_non_null(strstr(c.why, "node-ghost"));
	seen(&c, "node-ghost", ystart - 1);
	assert_int_equal(prepare_day(&c, 0, yesterday, true), TLSRPT_FLEET_READY);
	assert_int_equal(sessions(&c, "a.example"), 2);

	/* a daemon's own rounds: seen now, and yesterday finished without a
	 * file of it (within a few rounds of 2 s) */
	assert_non_null(mkdtemp(bgspool));
	fc.loop = &c.loop;
	fc.redis = c.r;
	fc.spool_dir = bgspool;
	assert_int_equal(tlsrpt_fleet_new(&fc, &bg), 0);
	tlsrpt_fleet_redis_state(bg, true);
	for (i = 0; i < 20; i++) {
		if (prepare_day(&c, 0, yesterday, true) == TLSRPT_FLEET_READY)
			break;
		assert_int_equal(c.st, TLSRPT_FLEET_WAIT);
		assert_non_null(strstr(c.why, "node-c"));
		run_until(&c, never, 250); /* its next round */
	}
	assert_int_equal(c.st, TLSRPT_FLEET_READY);
	assert_int_equal(sessions(&c, "a.example"), 2);
	tlsrpt_fleet_free(bg);
	finish(&c);
	test_rmtree(bgspool);
	test_redis_stop(&t, SIGTERM);
	test_rmtree(t.dir);
}

static void claimed(void *arg, enum tlsrpt_claim cl)
{
	struct ctx *c = arg;

	c->claimed = true;
	c->claim = cl;
}

static enum tlsrpt_claim claim(struct ctx *c, int i, const char *rua)
{
	const struct tlsrpt_ledger *l = tlsrpt_fleet_ledger(c->n[i].f);
	void *h = NULL;

	c->claimed = false;
	assert_int_equal(l->claim(l->ctx, DAY, "a.example", rua, claimed, c, &h), 0);
	assert_false(c->claimed);
	assert_true(run_until(c, is_claimed, 5000));
	return c->claim;
}

/* One node sends each copy: the first claim is its, another node's claim
 * is busy meanwhile; sent, every claim after hears so; a copy that failed
 * is released for anyone. */
static void test_ledger(void **state)
{
	struct test_redis t = { .pid = -1 };
	struct ctx c;
	const struct tlsrpt_ledger *la, *lb;

	(void)state;
	assert_int_equal(test_redis_start(&t), 0);
	start(&c, &t);
	la = tlsrpt_fleet_ledger(c.n[0].f);
	lb = tlsrpt_fleet_ledger(c.n[1].f);
	assert_int_equal(claim(&c, 0, "mailto:r@x.example"), TLSRPT_CLAIM_MINE);
	assert_int_equal(claim(&c, 0, "mailto:r@x.example"), TLSRPT_CLAIM_MINE); /* still */
	assert_int_equal(claim(&c, 1, "mailto:r@x.example"), TLSRPT_CLAIM_BUSY);
	la->release(la->ctx, DAY, "a.example", "mailto:r@x.example", true);
	assert_int_equal(claim(&c, 1, "mailto:r@x.example"), TLSRPT_CLAIM_SENT);
	assert_int_equal(claim(&c, 0, "mailto:r@x.example"), TLSRPT_CLAIM_SENT);

	assert_int_equal(claim(&c, 1, "https://r.example/v1"), TLSRPT_CLAIM_MINE);
	lb->release(lb->ctx, DAY, "a.example", "https://r.example/v1", false);
	assert_int_equal(claim(&c, 0, "https://r.example/v1"), TLSRPT_CLAIM_MINE);

	/* Redis gone: the ledger cannot be asked (the caller tries later) */
	test_redis_stop(&t, SIGKILL);
	assert_true(run_until(&c, is_down, 5000));
	{
		void *h = NULL;

		assert_int_equal(
			la->claim(la->ctx, DAY, "a.example", "mailto:o@x.example", claimed, &c, &h),
			-1);
	}
	finish(&c);
	test_rmtree(t.dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_two_nodes_summed_once),
		cmocka_unit_test(test_lost_reply_not_double_counted),
		cmocka_unit_test(test_waits_for_seen_nodes),
		cmocka_unit_test(test_ledger),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
