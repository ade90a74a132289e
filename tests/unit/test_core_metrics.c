/* The metrics table: counters, gauges and histograms as the modules change
 * them, and the text exposition Prometheus reads (format 0.0.4). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "relay/core/metrics.h"

static char *render(void)
{
	struct core_buf b = CORE_BUF_INIT(1 << 20);
	char *s;

	assert_int_equal(metrics_render(&b), 0);
	s = core_buf_take(&b, NULL);
	assert_non_null(s);
	return s;
}

static void assert_line(const char *text, const char *line)
{
	char want[512];
	const char *p;

	snprintf(want, sizeof(want), "\n%s\n", line);
	p = strstr(text, want);
	if (p == NULL && strncmp(text, line, strlen(line)) == 0 && text[strlen(line)] == '\n')
		p = text;
	if (p == NULL)
		fail_msg("line \"%s\" not in:\n%s", line, text);
}

static void test_counters_and_types(void **state)
{
	char *t;

	(void)state;
	metrics_preset(METRICS_ACCEPTED, METRICS_SOURCE_SENDMAIL, NULL);
	metrics_inc(METRICS_ACCEPTED, METRICS_SOURCE_SMTP);
	metrics_inc(METRICS_ACCEPTED, METRICS_SOURCE_SMTP);
	metrics_inc2(METRICS_TLSRPT_REPORTS, METRICS_TRANSPORT_HTTPS, "sent");
	metrics_add(METRICS_TLS_SESSIONS, "certificate-expired", NULL, 5);
	metrics_set(METRICS_QUEUE_RECIPIENTS, "deferred", 7);
	metrics_set(METRICS_QUEUE_RECIPIENTS, "deferred", 3); /* a gauge is replaced */
	/* the wrong kind of change is ignored, never mixed in */
	metrics_inc(METRICS_QUEUE_MESSAGES, NULL);
	metrics_set(METRICS_ACCEPTED, METRICS_SOURCE_SMTP, 100);
	metrics_observe(METRICS_ACCEPTED, 1.0);

	assert_true(metrics_value(METRICS_ACCEPTED, METRICS_SOURCE_SMTP, NULL) == 2);
	assert_true(metrics_value(METRICS_ACCEPTED, METRICS_SOURCE_SENDMAIL, NULL) == 0);
	assert_true(metrics_value(METRICS_QUEUE_RECIPIENTS, "deferred", NULL) == 3);
	t = render();
	assert_line(t, "# TYPE stsrelay_accepted_messages_total counter");
	assert_line(t, "stsrelay_accepted_messages_total{source=\"smtp\"} 2");
	assert_line(t, "stsrelay_accepted_messages_total{source=\"sendmail\"} 0");
	assert_line(t, "stsrelay_tlsrpt_reports_total{transport=\"https\",status=\"sent\"} 1");
	assert_line(t, "stsrelay_tls_sessions_total{result=\"certificate-expired\"} 5");
	assert_line(t, "# TYPE stsrelay_queue_recipients gauge");
	assert_line(t, "stsrelay_queue_recipients{status=\"deferred\"} 3");
	assert_line(t, "# TYPE stsrelay_queue_messages gauge");
	assert_line(t, "stsrelay_queue_messages 0"); /* no labels: always one series */
	assert_line(t, "# TYPE stsrelay_delivery_seconds histogram");
	assert_non_null(strstr(t, "# HELP stsrelay_sts_decisions_total "));
	assert_null(strstr(t, "stsrelay_accepted_messages_total{source=\"smtp\"} 100"));
	free(t);
}

/* Buckets are cumulative in the exposition, +Inf equals _count, and an
 * observation on a bound belongs to that bucket (le: less or equal). */
static void test_histogram(void **state)
{
	double sum = 0;
	char *t;

	(void)state;
	metrics_observe(METRICS_ACCEPT_SECONDS, 0.0004);
	metrics_observe(METRICS_ACCEPT_SECONDS, 0.001);
	metrics_observe(METRICS_ACCEPT_SECONDS, 0.003);
	metrics_observe(METRICS_ACCEPT_SECONDS, 99);
	metrics_observe(METRICS_ACCEPT_SECONDS, -1); /* a clock step back: dropped */
	assert_int_equal(metrics_histogram_count(METRICS_ACCEPT_SECONDS, &sum), 4);
	assert_true(sum > 99.004 && sum < 99.0045);
	t = render();
	assert_line(t, "stsrelay_accept_seconds_bucket{le=\"0.0005\"} 1");
	assert_line(t, "stsrelay_accept_seconds_bucket{le=\"0.001\"} 2");
	assert_line(t, "stsrelay_accept_seconds_bucket{le=\"0.0025\"} 2");
	assert_line(t, "stsrelay_accept_seconds_bucket{le=\"0.005\"} 3");
	assert_line(t, "stsrelay_accept_seconds_bucket{le=\"5\"} 3");
	assert_line(t, "stsrelay_accept_seconds_bucket{le=\"+Inf\"} 4");
	assert_line(t, "stsrelay_accept_seconds_count 4");
	free(t);
}

/* One call per delivery log line: the status word decides the series,
 * "sent" also gives delivery_seconds its delay. */
static void test_delivery_lines(void **state)
{
	uint64_t before = metrics_histogram_count(METRICS_DELIVERY_SECONDS, NULL);

	(void)state;
	metrics_delivery("sent", 1500);
	metrics_delivery("sent", 20);
	metrics_delivery("deferred", 9000);
	metrics_delivery("bounced", 0);
	metrics_delivery("skipped", 0); /* not a delivery status */
	metrics_delivery(NULL, 0);
	assert_true(metrics_value(METRICS_DELIVERIES, "sent", NULL) == 2);
	assert_true(metrics_value(METRICS_DELIVERIES, "deferred", NULL) == 1);
	assert_true(metrics_value(METRICS_DELIVERIES, "bounced", NULL) == 1);
	assert_true(metrics_value(METRICS_DELIVERIES, "skipped", NULL) == 0);
	assert_int_equal(metrics_histogram_count(METRICS_DELIVERY_SECONDS, NULL), before + 2);
}

/* Label values are escaped; a family holds at most METRICS_MAX_SERIES
 * label sets and drops the rest instead of growing. */
static void test_escaping_and_bound(void **state)
{
	char v[32], *t;
	int i;

	(void)state;
	metrics_inc(METRICS_FLEET_POLICIES, "a\"b\\c\nd");
	for (i = 0; i < METRICS_MAX_SERIES + 5; i++) {
		snprintf(v, sizeof(v), "r%d", i);
		metrics_inc(METRICS_POLICY_FETCHES, v);
	}
	assert_true(metrics_value(METRICS_POLICY_FETCHES, "r0", NULL) == 1);
	assert_true(metrics_value(METRICS_POLICY_FETCHES, "r31", NULL) == 1);
	assert_true(metrics_value(METRICS_POLICY_FETCHES, "r32", NULL) == 0);
	t = render();
	assert_line(t, "stsrelay_fleet_policies_total{result=\"a\\\"b\\\\c\\nd\"} 1");
	assert_null(strstr(t, "result=\"r32\""));
	free(t);
}

/* A render that does not fit fails as a whole (never half a document). */
static void test_render_bound(void **state)
{
	struct core_buf b = CORE_BUF_INIT(100);

	(void)state;
	assert_int_not_equal(metrics_render(&b), 0);
	assert_null(core_buf_take(&b, NULL));
	core_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counters_and_types),
		cmocka_unit_test(test_histogram),
		cmocka_unit_test(test_delivery_lines),
		cmocka_unit_test(test_escaping_and_bound),
		cmocka_unit_test(test_render_bound),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
