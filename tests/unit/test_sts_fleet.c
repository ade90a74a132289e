/* sts/fleet.c against a real redis-server started here: one node fetches
 * while the others wait for its policy or failure; Redis away means fetch. */
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
#include "sts/fleet.h"
#include "test_loop.h"
#include "test_redis_server.h"
#include "test_util.h"

#define BODY "version: STSv1\nmode: enforce\nmx: mx.a.example\nmax_age: 86400\n"

struct answer {
	bool done;
	struct sts_shared_result res;
	char text[512];
	char detail[256];
};

struct ctx {
	uv_loop_t loop;
	struct redis *r;
	struct sts_fleet *f[2]; /* two nodes on one connection */
	const struct sts_shared *s[2];
};

static bool run_until(struct ctx *c, bool (*pred)(void *), void *arg, unsigned ms)
{
	return test_run_until(&c->loop, pred, arg, ms);
}

static bool is_up(void *arg)
{
	return redis_up(((struct ctx *)arg)->r);
}

static bool is_down(void *arg)
{
	return !redis_up(((struct ctx *)arg)->r);
}

static bool answered(void *arg)
{
	return ((struct answer *)arg)->done;
}

static bool never(void *arg)
{
	(void)arg;
	return false;
}

static void on_answer(void *arg, const struct sts_shared_result *res)
{
	struct answer *a = arg;

	a->done = true;
	a->res = *res;
	if (res->answer == STS_SHARED_HIT)
		snprintf(a->text, sizeof(a->text), "%.*s", (int)res->text_len, res->text);
	if (res->answer == STS_SHARED_FAILED)
		snprintf(a->detail, sizeof(a->detail), "%s", res->detail);
	a->res.text = NULL;
	a->res.detail = NULL;
}

static void ask(struct ctx *c, int node, const char *domain, const char *id, struct answer *a)
{
	void *h = NULL;

	memset(a, 0, sizeof(*a));
	assert_int_equal(c->s[node]->acquire(c->s[node]->ctx, domain, id, 0, on_answer, a, &h), 0);
	assert_false(a->done); /* never inside the call */
}

static void start(struct ctx *c, struct test_redis *t)
{
	struct config_redis url;
	struct redis_config rc = { .url = &url, .timeout_ms = 500 };
	char err[128], u[64];
	int i;

	memset(c, 0, sizeof(*c));
	assert_int_equal(uv_loop_init(&c->loop), 0);
	snprintf(u, sizeof(u), "redis://127.0.0.1:%u/0", (unsigned)t->port);
	assert_int_equal(config_parse_redis_url(u, &url, err, sizeof(err)), 0);
	assert_int_equal(redis_new(&c->loop, &rc, &c->r), 0);
	for (i = 0; i < 2; i++) {
		/* a fetch timeout of 1 s: a lock is given up after 6 s */
		assert_int_equal(
			sts_fleet_new(&c->loop, c->r, i == 0 ? "node-a" : "node-b", 1000, &c->f[i]),
			0);
		c->s[i] = sts_fleet_shared(c->f[i]);
	}
	assert_true(run_until(c, is_up, c, 5000));
}

static void finish(struct ctx *c)
{
	sts_fleet_free(c->f[0]);
	sts_fleet_free(c->f[1]);
	redis_free(c->r);
	uv_run(&c->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&c->loop), 0);
}

static void publish_ok(struct ctx *c, int node, const char *domain, const char *id)
{
	struct sts_policy pol;
	struct sts_policy_err perr;
	struct sts_fetch_result res;

	assert_int_equal(sts_policy_parse(BODY, strlen(BODY), &pol, &perr), 0);
	memset(&res, 0, sizeof(res));
	res.status = STS_FETCH_OK;
	res.body = BODY;
	res.body_len = strlen(BODY);
	res.policy = &pol;
	res.fetched_at = clock_now();
	c->s[node]->publish(c->s[node]->ctx, domain, id, &res);
}

/* The first node to ask fetches (it holds the lock); a second one waits
 * for that fetch and gets its policy, with the id it asked for; a newer id
 * is a new fetch. */
static void test_one_fetch_for_the_fleet(void **state)
{
	struct test_redis t = { .pid = -1 };
	struct ctx c;
	struct answer a, b;

	(void)state;
	assert_int_equal(test_redis_start(&t), 0);
	start(&c, &t);
	ask(&c, 0, "a.example", "id1", &a);
	assert_true(run_until(&c, answered, &a, 3000));
	assert_int_equal(a.res.answer, STS_SHARED_FETCH);

	ask(&c, 1, "a.example", "id1", &b);
	run_until(&c, never, NULL, 500);
	assert_false(b.done); /* node-a holds the lock: node-b waits */
	publish_ok(&c, 0, "a.example", "id1");
	assert_true(run_until(&c, answered, &b, 3000));
	assert_int_equal(b.res.answer, STS_SHARED_HIT);
	assert_string_equal(b.text, BODY);
	assert_true(b.res.fetched_at > 0 && b.res.fetched_at <= clock_now());

	/* the same again: a hit at once; another id: fetch it */
	ask(&c, 0, "a.example", "id1", &a);
	assert_true(run_until(&c, answered, &a, 3000));
	assert_int_equal(a.res.answer, STS_SHARED_HIT);
	ask(&c, 1, "a.example", "id2", &b);
	assert_true(run_until(&c, answered, &b, 3000));
	assert_int_equal(b.res.answer, STS_SHARED_FETCH);
	finish(&c);
	test_redis_stop(&t, SIGTERM);
	test_rmtree(t.dir);
}

/* A failed fetch is the fleet's too: the node waiting hears FAILED with
 * the result type and detail, not a fetch of its own. */
static void test_failure_shared(void **state)
{
	struct test_redis t = { .pid = -1 };
	struct ctx c;
	struct answer a, b;
	struct sts_fetch_result res;

	(void)state;
	assert_int_equal(test_redis_start(&t), 0);
	start(&c, &t);
	ask(&c, 0, "f.example", "id1", &a);
	assert_true(run_until(&c, answered, &a, 3000));
	assert_int_equal(a.res.answer, STS_SHARED_FETCH);
	ask(&c, 1, "f.example", "id1", &b);
	memset(&res, 0, sizeof(res));
	res.status = STS_FETCH_ERROR;
	res.result_type = SMTP_TLS_RESULT_STS_POLICY_FETCH_ERROR;
	snprintf(res.detail, sizeof(res.detail), "HTTP 404");
	c.s[0]->publish(c.s[0]->ctx, "f.example", "id1", &res);
	assert_true(run_until(&c, answered, &b, 3000));
	assert_int_equal(b.res.answer, STS_SHARED_FAILED);
	assert_int_equal(b.res.result_type, SMTP_TLS_RESULT_STS_POLICY_FETCH_ERROR);
	assert_string_equal(b.detail, "HTTP 404");
	finish(&c);
	test_redis_stop(&t, SIGTERM);
	test_rmtree(t.dir);
}

/* Redis paused: the lookup is told to fetch after the client's timeout,
 * not later; Redis gone: at once (-1, or FETCH from the loop). */
static void test_redis_away_means_fetch(void **state)
{
	struct test_redis t = { .pid = -1 };
	struct ctx c;
	struct answer a;
	void *h = NULL;
	uint64_t t0;
	int rc;

	(void)state;
	assert_int_equal(test_redis_start(&t), 0);
	start(&c, &t);
	test_redis_signal(&t, SIGSTOP);
	uv_update_time(&c.loop);
	t0 = uv_now(&c.loop);
	ask(&c, 0, "p.example", "id1", &a);
	assert_true(run_until(&c, answered, &a, 3000));
	assert_int_equal(a.res.answer, STS_SHARED_FETCH);
	assert_true(uv_now(&c.loop) - t0 < 1500);
	test_redis_stop(&t, SIGKILL);
	assert_true(run_until(&c, is_down, &c, 3000));
	memset(&a, 0, sizeof(a));
	rc = c.s[1]->acquire(c.s[1]->ctx, "p.example", "id1", 0, on_answer, &a, &h);
	if (rc == 0) {
		assert_true(run_until(&c, answered, &a, 1000));
		assert_int_equal(a.res.answer, STS_SHARED_FETCH);
	} else {
		assert_int_equal(rc, -1);
		assert_false(a.done);
	}
	finish(&c);
	test_rmtree(t.dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_fetch_for_the_fleet),
		cmocka_unit_test(test_failure_shared),
		cmocka_unit_test(test_redis_away_means_fetch),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
