/* relay/net/redis.c against a real redis-server started here: commands, a
 * paused server (reply timeout), kill -9 and restart, a refused password. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "relay/net/redis.h"
#include "test_loop.h"
#include "test_redis_server.h"
#include "test_util.h"

struct ctx {
	uv_loop_t loop;
	struct redis *r;
	int ups, downs;
	int replies, nulls;
	char last[64];
	long long last_int;
};

static void on_state(void *arg, bool up)
{
	struct ctx *c = arg;

	if (up)
		c->ups++;
	else
		c->downs++;
}

static void on_reply(void *arg, const redisReply *rp)
{
	struct ctx *c = arg;

	c->replies++;
	if (rp == NULL) {
		c->nulls++;
		return;
	}
	c->last[0] = '\0';
	if (rp->type == REDIS_REPLY_STRING || rp->type == REDIS_REPLY_STATUS ||
	    rp->type == REDIS_REPLY_ERROR)
		snprintf(c->last, sizeof(c->last), "%s", rp->str);
	if (redis_reply_int(rp, &c->last_int) != 0)
		c->last_int = -1;
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

static int g_want;
static bool have_replies(void *arg)
{
	struct ctx *c = arg;

	return c->replies >= g_want;
}

static int cmd(struct ctx *c, const char *a, const char *b, const char *d)
{
	const char *argv[3] = { a, b, d };
	size_t lens[3] = { strlen(a), b ? strlen(b) : 0, d ? strlen(d) : 0 };

	return redis_command(c->r, on_reply, c, NULL, d ? 3 : b ? 2 : 1, argv, lens);
}

static void start(struct ctx *c, struct test_redis *t, const char *password, uint64_t timeout)
{
	struct config_redis url;
	struct redis_config rc = { .url = &url, .timeout_ms = timeout, .on_state = on_state };
	char err[128], u[160];

	memset(c, 0, sizeof(*c));
	assert_int_equal(uv_loop_init(&c->loop), 0);
	/* a name, not 127.0.0.1: where localhost is ::1 first (Debian's
	 * /etc/hosts) the client must go on to 127.0.0.1, where the server is */
	snprintf(u, sizeof(u), "redis://%s%s%slocalhost:%u/3", password ? ":" : "",
		 password ? password : "", password ? "@" : "", (unsigned)t->port);
	assert_int_equal(config_parse_redis_url(u, &url, err, sizeof(err)), 0);
	rc.arg = c;
	assert_int_equal(redis_new(&c->loop, &rc, &c->r), 0);
}

static void finish(struct ctx *c)
{
	redis_free(c->r);
	uv_run(&c->loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&c->loop), 0);
}

/* Up after the handshake (a host name, db 3); SET, GET, INCR round trips;
 * a command refused by Redis is an error reply, not a lost connection. */
static void test_commands(void **state)
{
	struct test_redis t = { .pid = -1 };
	struct ctx c;

	(void)state;
	assert_int_equal(test_redis_start(&t), 0);
	start(&c, &t, NULL, 2000);
	assert_int_equal(cmd(&c, "PING", NULL, NULL), -1); /* not up yet */
	assert_true(run_until(&c, is_up, 5000));
	assert_int_equal(c.ups, 1);
	assert_int_equal(cmd(&c, "SET", "k", "v1"), 0);
	assert_int_equal(cmd(&c, "GET", "k", NULL), 0);
	assert_int_equal(c.replies, 0); /* never inside the call */
	g_want = 2;
	assert_true(run_until(&c, have_replies, 3000));
	assert_string_equal(c.last, "v1");
	assert_int_equal(cmd(&c, "INCR", "n", NULL), 0);
	g_want = 3;
	assert_true(run_until(&c, have_replies, 3000));
	assert_int_equal(c.last_int, 1);
	assert_int_equal(cmd(&c, "NOSUCHCOMMAND", NULL, NULL), 0);
	g_want = 4;
	assert_true(run_until(&c, have_replies, 3000));
	assert_int_equal(c.nulls, 0);
	assert_non_null(strstr(c.last, "unknown command"));
	assert_true(redis_up(c.r));
	finish(&c);
	test_redis_stop(&t, SIGTERM);
	test_rmtree(t.dir);
}

/* A stopped (SIGSTOP) server accepts TCP but never answers: the command
 * gets NULL after the timeout, the state goes down, and after SIGCONT the
 * connection comes back by itself. A kill -9 and a restart likewise. */
static void test_slow_and_dead(void **state)
{
	struct test_redis t = { .pid = -1 };
	struct ctx c;
	uint64_t t0;

	(void)state;
	assert_int_equal(test_redis_start(&t), 0);
	start(&c, &t, NULL, 300);
	assert_true(run_until(&c, is_up, 5000));
	test_redis_signal(&t, SIGSTOP);
	uv_update_time(&c.loop);
	t0 = uv_now(&c.loop);
	assert_int_equal(cmd(&c, "PING", NULL, NULL), 0);
	g_want = 1;
	assert_true(run_until(&c, have_replies, 3000));
	assert_int_equal(c.nulls, 1);
	assert_true(uv_now(&c.loop) - t0 >= 290 && uv_now(&c.loop) - t0 < 2000);
	assert_false(redis_up(c.r));
	assert_int_equal(c.downs, 1);
	assert_int_equal(cmd(&c, "PING", NULL, NULL), -1);
	test_redis_signal(&t, SIGCONT);
	assert_true(run_until(&c, is_up, 10000));
	assert_int_equal(c.ups, 2);

	test_redis_stop(&t, SIGKILL);
	assert_true(run_until(&c, is_down, 5000));
	assert_int_equal(c.downs, 2);
	assert_int_equal(test_redis_start(&t), 0);
	assert_true(run_until(&c, is_up, 10000));
	assert_int_equal(c.ups, 3);
	assert_int_equal(cmd(&c, "PING", NULL, NULL), 0);
	g_want = 2;
	assert_true(run_until(&c, have_replies, 3000));
	assert_string_equal(c.last, "PONG");

	/* a command still waiting when the client is freed gets NULL */
	test_redis_signal(&t, SIGSTOP);
	assert_int_equal(cmd(&c, "PING", NULL, NULL), 0);
	redis_free(c.r);
	assert_int_equal(c.replies, 3);
	assert_int_equal(c.nulls, 2);
	c.r = NULL;
	finish(&c);
	test_redis_stop(&t, SIGKILL);
	test_rmtree(t.dir);
}

/* A wrong password never makes the connection "up"; the right one does. */
static void test_password(void **state)
{
	struct test_redis t = { .pid = -1 };
	struct ctx c;

	(void)state;
	snprintf(t.password, sizeof(t.password), "s3cret");
	assert_int_equal(test_redis_start(&t), 0);
	start(&c, &t, "wrong", 2000);
	assert_false(run_until(&c, is_up, 1500));
	finish(&c);
	start(&c, &t, "s3cret", 2000);
	assert_true(run_until(&c, is_up, 5000));
	finish(&c);
	test_redis_stop(&t, SIGTERM);
	test_rmtree(t.dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_commands),
		cmocka_unit_test(test_slow_and_dead),
		cmocka_unit_test(test_password),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
