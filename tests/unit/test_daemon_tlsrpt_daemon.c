/* The daily TLS-RPT schedule: due times and backoff (pure), and a daemon run
 * on a real loop (fake clock) that fails DNS, schedules a retry and stops cleanly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "relay/core/clock.h"
#include "relay/daemon/tlsrpt_daemon.h"
#include "sts/tlsrpt/tlsrpt.h"

#define DAY_START 1781740800LL           /* 2026-06-18T00:00:00Z */

static void test_due_time(void **state)
{
	int64_t a, b, c;
	int i, differ = 0;

	(void)state;
	for (i = 0; i < 50; i++) {
		int64_t d = DAY_START + (int64_t)i * 86400;

		a = tlsrpt_due_time(d, 15, "relay.test");
		assert_true(a >= d + 86400 + 900 && a < d + 86400 + 900 + 3600);
		assert_int_equal(a, tlsrpt_due_time(d, 15, "relay.test"));   /* stable */
		b = tlsrpt_due_time(d, 15, "other.test");
		differ += a != b;
	}
	assert_true(differ > 40);          /* the spread depends on the relay */
	c = tlsrpt_due_time(DAY_START, 23 * 60 + 59, "relay.test");
	assert_true(c >= DAY_START + 86400 + 86340);
}

static void test_retry_delay(void **state)
{
	(void)state;
	assert_int_equal(tlsrpt_retry_delay(1), 60);
	assert_int_equal(tlsrpt_retry_delay(2), 120);
	assert_int_equal(tlsrpt_retry_delay(3), 240);
	assert_int_equal(tlsrpt_retry_delay(6), 1920);
	assert_int_equal(tlsrpt_retry_delay(7), 3600);
	assert_int_equal(tlsrpt_retry_delay(100), 3600);
}

static int stopped;

static void on_stopped(void *arg)
{
	(void)arg;
	stopped++;
}

static void on_stop_timer(uv_timer_t *t)
{
	tlsrpt_daemon_stop(t->data, on_stopped, NULL);
	uv_close((uv_handle_t *)t, NULL);
}

/* Yesterday's data is due at start-up; the _smtp._tls lookup fails (no DNS
 * server), so nothing is sent or marked; the daemon stops cleanly. */
static void test_daemon_lifecycle(void **state)
{
	struct relay r;
	struct tlsrpt_daemon *d;
	struct tlsrpt_store *st;
	struct tlsrpt_session s = { .domain = "a.test", .result = SMTP_TLS_RESULT_SUCCESS,
				    .when = DAY_START + 60 };
	char spool[64], err[256], cmd[128];
	uv_loop_t loop;
	uv_timer_t stop;

	(void)state;
	snprintf(spool, sizeof(spool), "/tmp/tlsrpt-daemon-XXXXXX");
	assert_non_null(mkdtemp(spool));
	memset(&r, 0, sizeof(r));
	config_defaults(&r.cfg);
	snprintf(r.cfg.spool_dir, sizeof(r.cfg.spool_dir), "%s", spool);
	assert_int_equal(config_parse(&r.cfg, "dns_servers = 127.0.0.1:9\n", 26, "t", err,
				      sizeof(err)), 0);
	assert_int_equal(uv_loop_init(&loop), 0);
	r.loop = &loop;
	assert_int_equal(queue_open(spool, true, -1, &r.queue, err, sizeof(err)), 0);
	assert_int_equal(tlsrpt_store_open(spool, NULL, &st, err, sizeof(err)), 0);
	assert_int_equal(tlsrpt_record(st, &s), 0);
	tlsrpt_store_close(st);

	assert_int_equal(tlsrpt_daemon_start(&r, &d), 0);
	assert_int_equal(uv_timer_init(&loop, &stop), 0);
	stop.data = d;
	uv_timer_start(&stop, on_stop_timer, 4000, 0);
	assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
	assert_int_equal(stopped, 1);
	assert_int_equal(uv_loop_close(&loop), 0);
	assert_false(tlsrpt_sent_contains(spool, "2026-06-18", "a.test", "mailto:x@a.test"));
	queue_close(r.queue);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", spool);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_due_time),
		cmocka_unit_test(test_retry_delay),
		cmocka_unit_test(test_daemon_lifecycle),
	};

	/* 2026-06-19 02:00 UTC: the 2026-06-18 run (00:15 + < 1 h) is due */
	setenv("STSRELAY_FAKE_NOW", "1781834400", 1);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
