/* The daemon's Prometheus metrics: counters, gauges and histograms kept as
 * plain numbers in this process, and their text exposition (format 0.0.4). */
#ifndef STSRELAY_CORE_METRICS_H
#define STSRELAY_CORE_METRICS_H

#include <stdint.h>

#include "relay/core/buf.h"

/*
 * Every module bumps its numbers here on the loop thread (no locks: the
 * daemon has one thread that runs code, the thread pool never calls this);
 * relay/daemon/metrics_http.c renders them for GET /metrics. Nothing is
 * ever reset while the process runs: a reload keeps every value, which is
 * what Prometheus's rate() expects of a counter.
 *
 * Families (DESIGN.md "metrics_listen"; names and types fixed, all prefixed
 * stsrelay_): each has at most two labels whose values are short names the
 * callers spell through the macros below or take from the module that owns
 * them (smtp_tls_result_name, sts_decision_name, queue_status_name). A
 * family keeps at most METRICS_MAX_SERIES label combinations; a value beyond
 * that is dropped (logged once), so a bad caller cannot grow memory.
 *
 * The label values are names made at this edge, like a log line's: the
 * counters count what the log says (metrics_delivery counts each delivery
 * log line by its status= word).
 */

enum metrics_id {
	METRICS_QUEUE_MESSAGES,   /* gauge: messages in the queue */
	METRICS_QUEUE_RECIPIENTS, /* gauge {status}: pending, deferred */
	METRICS_ACCEPTED,         /* counter {source}: smtp, submission, sendmail */
	METRICS_DELIVERIES,       /* counter {status}: sent, deferred, bounced */
	METRICS_TLS_SESSIONS,     /* counter {result}: success, RFC 8460 result types */
	METRICS_STS_DECISIONS,    /* counter {decision}: enforce, testing, none, absent */
	METRICS_POLICY_FETCHES,   /* counter {result}: success or the RFC 8460 fetch error */
	METRICS_TLSRPT_REPORTS,   /* counter {transport, status} */
	METRICS_DELIVERY_SECONDS, /* histogram: arrival to the MX's 250, per recipient sent */
	METRICS_ACCEPT_SECONDS,   /* histogram: end of DATA to the 250 (the durable commit) */
	METRICS_REDIS_UP,         /* gauge: 1 when the fleet's Redis answers (redis_url) */
	METRICS_FLEET_POLICIES,   /* counter {result}: policies taken from the fleet cache */
	METRICS_COUNT
};

#define METRICS_MAX_SERIES 32
#define METRICS_LABEL_MAX 48 /* a label value longer than this is cut */

/* accepted_messages_total{source}: where a message came from. */
#define METRICS_SOURCE_SMTP "smtp"
#define METRICS_SOURCE_SUBMISSION "submission"
#define METRICS_SOURCE_SENDMAIL "sendmail"
/* tlsrpt_reports_total{transport, status} */
#define METRICS_TRANSPORT_MAILTO "mailto"
#define METRICS_TRANSPORT_HTTPS "https"

/* Counters: add 1 (or n) to the series with these label values (NULL for a
 * family without that label). */
void metrics_inc(enum metrics_id id, const char *v1);
void metrics_inc2(enum metrics_id id, const char *v1, const char *v2);
void metrics_add(enum metrics_id id, const char *v1, const char *v2, uint64_t n);
/* Gauges: set the series to value. */
void metrics_set(enum metrics_id id, const char *v1, double value);
/* Histograms: one observation (seconds). */
void metrics_observe(enum metrics_id id, double seconds);
/* Makes a series exist at 0 before anything is counted (so an alert on a
 * rate sees 0, not "no data"). */
void metrics_preset(enum metrics_id id, const char *v1, const char *v2);

/* One delivery log line: status is its status= word ("sent", "deferred",
 * "bounced"; anything else is not counted); delay_ms is its delay= value,
 * observed in delivery_seconds when the status is "sent". */
void metrics_delivery(const char *status, int64_t delay_ms);

/* The value of a counter or gauge series (0 when it does not exist), and a
 * histogram's count and sum: for tests and the benchmark. */
double metrics_value(enum metrics_id id, const char *v1, const char *v2);
uint64_t metrics_histogram_count(enum metrics_id id, double *sum);

/* Appends the exposition of every family (# HELP, # TYPE, the series; a
 * histogram as _bucket{le=...} cumulative, _sum and _count) to out.
 * 0, or the buffer's error (e.g. out's maximum reached). */
int metrics_render(struct core_buf *out);

#endif
