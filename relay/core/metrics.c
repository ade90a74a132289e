/* Prometheus metrics: a fixed table of families, each a small array of
 * label series with plain integer counters, rendered as text format 0.0.4. */
#include "relay/core/metrics.h"
#include "relay/core/log.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

enum kind { K_COUNTER, K_GAUGE, K_HISTOGRAM };

#define MAX_BUCKETS 16

struct series {
	bool used;
	char v[2][METRICS_LABEL_MAX + 1];
	uint64_t count; /* counters */
	double value;   /* gauges */
};

struct family {
	const char *name;
	enum kind kind;
	const char *help;
	const char *label[2]; /* NULL: no such label */
	const double *bounds; /* histograms: upper bounds, ascending, +Inf implied */
	size_t nbounds;
	struct series s[METRICS_MAX_SERIES];
	bool overflow_logged;
	/* histograms: observations per bucket (not cumulative), the last one
	 * is +Inf; sum and count */
	uint64_t buckets[MAX_BUCKETS + 1];
	double sum;
	uint64_t n;
};

/* From 0.1 s (a relay next to its MX) to a day (a message deferred
 * overnight): where delivered mail spends its time. */
static const double delivery_bounds[] = { 0.1, 0.25, 0.5, 1,   2.5,  5,     10,
					  30,  60,   300, 900, 3600, 14400, 86400 };
/* The 250 after DATA waits for one fsync of the group commit: normally a
 * millisecond or a few, seconds only on a struggling disk. */
static const double accept_bounds[] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
					0.1,    0.25,  0.5,    1,     2.5,  5 };

#define NB(a) (sizeof(a) / sizeof((a)[0]))

static struct family families[METRICS_COUNT] = {
	[METRICS_QUEUE_MESSAGES] = {
		.name = "stsrelay_queue_messages",
		.kind = K_GAUGE,
		.help = "Messages in the queue (not yet delivered or bounced to every recipient).",
	},
	[METRICS_QUEUE_RECIPIENTS] = {
		.name = "stsrelay_queue_recipients",
		.kind = K_GAUGE,
		.help = "Recipients in the queue by status (pending: not tried yet or being "
			"tried; deferred: waiting for a retry).",
		.label = { "status" },
	},
	[METRICS_ACCEPTED] = {
		.name = "stsrelay_accepted_messages_total",
		.kind = K_COUNTER,
		.help = "Messages accepted into the queue, by where they came from.",
		.label = { "source" },
	},
	[METRICS_DELIVERIES] = {
		.name = "stsrelay_deliveries_total",
		.kind = K_COUNTER,
		.help = "Delivery log lines by status (one per recipient and attempt outcome).",
		.label = { "status" },
	},
	[METRICS_TLS_SESSIONS] = {
		.name = "stsrelay_tls_sessions_total",
		.kind = K_COUNTER,
		.help = "TLS-RPT sessions recorded, by RFC 8460 result type (success or the "
			"failure).",
		.label = { "result" },
	},
	[METRICS_STS_DECISIONS] = {
		.name = "stsrelay_sts_decisions_total",
		.kind = K_COUNTER,
		.help = "MTA-STS verdicts for deliveries, by decision.",
		.label = { "decision" },
	},
	[METRICS_POLICY_FETCHES] = {
		.name = "stsrelay_policy_fetches_total",
		.kind = K_COUNTER,
		.help = "MTA-STS policy fetches over HTTPS, by result (success or the RFC 8460 "
			"result type of the failure).",
		.label = { "result" },
	},
	[METRICS_TLSRPT_REPORTS] = {
		.name = "stsrelay_tlsrpt_reports_total",
		.kind = K_COUNTER,
		.help = "TLS-RPT report copies, by transport and outcome (sent; deferred: retried "
			"later; skipped: no DKIM key for mailto).",
		.label = { "transport", "status" },
	},
	[METRICS_DELIVERY_SECONDS] = {
		.name = "stsrelay_delivery_seconds",
		.kind = K_HISTOGRAM,
		.help = "Seconds from a message's arrival to its delivery, per recipient sent "
			"(the log's delay=).",
		.bounds = delivery_bounds,
		.nbounds = NB(delivery_bounds),
	},
	[METRICS_ACCEPT_SECONDS] = {
		.name = "stsrelay_accept_seconds",
		.kind = K_HISTOGRAM,
		.help = "Seconds from the end of a message's DATA to its 250 (the durable group "
			"commit).",
		.bounds = accept_bounds,
		.nbounds = NB(accept_bounds),
	},
	[METRICS_REDIS_UP] = {
		.name = "stsrelay_redis_up",
		.kind = K_GAUGE,
		.help = "1 when the fleet's Redis (redis_url) answers, else 0.",
	},
	[METRICS_FLEET_POLICIES] = {
		.name = "stsrelay_fleet_policies_total",
		.kind = K_COUNTER,
		.help = "MTA-STS policies taken from the fleet's shared cache instead of "
			"fetching them (hit), or a fetch failure another node saw (failure).",
		.label = { "result" },
	},
};

static struct series *find(struct family *f, const char *v1, const char *v2, bool create)
{
	const char *v[2] = { f->label[0] ? (v1 ? v1 : "") : "", f->label[1] ? (v2 ? v2 : "") : "" };
	struct series *free_slot = NULL;
	size_t i;

	for (i = 0; i < METRICS_MAX_SERIES; i++) {
		struct series *s = &f->s[i];

		if (!s->used) {
			if (free_slot == NULL)
				free_slot = s;
			continue;
		}
		if (strncmp(s->v[0], v[0], METRICS_LABEL_MAX) == 0 &&
		    strncmp(s->v[1], v[1], METRICS_LABEL_MAX) == 0)
			return s;
	}
	if (!create)
		return NULL;
	if (free_slot == NULL) {
		if (!f->overflow_logged)
			log_warn("metrics: %s has more than %d label sets; %s=\"%s\" not counted",
				 f->name, METRICS_MAX_SERIES, f->label[0] ? f->label[0] : "-",
				 v[0]);
		f->overflow_logged = true;
		return NULL;
	}
	free_slot->used = true;
	snprintf(free_slot->v[0], sizeof(free_slot->v[0]), "%s", v[0]);
	snprintf(free_slot->v[1], sizeof(free_slot->v[1]), "%s", v[1]);
	return free_slot;
}

static struct family *family_of(enum metrics_id id, enum kind kind)
{
	if ((unsigned)id >= METRICS_COUNT || families[id].kind != kind)
		return NULL;
	return &families[id];
}

void metrics_add(enum metrics_id id, const char *v1, const char *v2, uint64_t n)
{
	struct family *f = family_of(id, K_COUNTER);
	struct series *s = f != NULL ? find(f, v1, v2, true) : NULL;

	if (s != NULL)
		s->count += n;
}

void metrics_inc(enum metrics_id id, const char *v1)
{
	metrics_add(id, v1, NULL, 1);
}

void metrics_inc2(enum metrics_id id, const char *v1, const char *v2)
{
	metrics_add(id, v1, v2, 1);
}

void metrics_set(enum metrics_id id, const char *v1, double value)
{
	struct family *f = family_of(id, K_GAUGE);
	struct series *s = f != NULL ? find(f, v1, NULL, true) : NULL;

	if (s != NULL)
		s->value = value;
}

void metrics_preset(enum metrics_id id, const char *v1, const char *v2)
{
	if ((unsigned)id < METRICS_COUNT && families[id].kind != K_HISTOGRAM)
		(void)find(&families[id], v1, v2, true);
}

void metrics_observe(enum metrics_id id, double seconds)
{
	struct family *f = family_of(id, K_HISTOGRAM);
	size_t i;

	if (f == NULL || !(seconds >= 0)) /* NaN and negative clock steps are dropped */
		return;
	for (i = 0; i < f->nbounds && seconds > f->bounds[i]; i++)
		;
	f->buckets[i]++;
	f->sum += seconds;
	f->n++;
}

void metrics_delivery(const char *status, int64_t delay_ms)
{
	if (status == NULL)
		return;
	if (strcmp(status, "sent") == 0)
		metrics_observe(METRICS_DELIVERY_SECONDS,
				delay_ms < 0 ? 0 : (double)delay_ms / 1000.0);
	else if (strcmp(status, "deferred") != 0 && strcmp(status, "bounced") != 0)
		return;
	metrics_inc(METRICS_DELIVERIES, status);
}

double metrics_value(enum metrics_id id, const char *v1, const char *v2)
{
	struct series *s;

	if ((unsigned)id >= METRICS_COUNT || families[id].kind == K_HISTOGRAM)
		return 0;
	s = find(&families[id], v1, v2, false);
	if (s == NULL)
		return 0;
	return families[id].kind == K_COUNTER ? (double)s->count : s->value;
}

uint64_t metrics_histogram_count(enum metrics_id id, double *sum)
{
	struct family *f = family_of(id, K_HISTOGRAM);

	if (f == NULL)
		return 0;
	if (sum != NULL)
		*sum = f->sum;
	return f->n;
}

/* ---- exposition ---- */

/* A label value with \, " and newline escaped (text format 0.0.4). */
static void add_value(struct core_buf *b, const char *v)
{
	for (; *v != '\0'; v++) {
		if (*v == '\\')
			core_buf_adds(b, "\\\\");
		else if (*v == '"')
			core_buf_adds(b, "\\\"");
		else if (*v == '\n')
			core_buf_adds(b, "\\n");
		else
			core_buf_add(b, v, 1);
	}
}

static void add_labels(struct core_buf *b, const struct family *f, const struct series *s)
{
	size_t i;
	bool any = false;

	for (i = 0; i < 2; i++) {
		if (f->label[i] == NULL)
			continue;
		core_buf_printf(b, "%s%s=\"", any ? "," : "{", f->label[i]);
		add_value(b, s->v[i]);
		core_buf_adds(b, "\"");
		any = true;
	}
	if (any)
		core_buf_adds(b, "}");
}

static void render_histogram(struct core_buf *b, const struct family *f)
{
	uint64_t cum = 0;
	size_t i;

	for (i = 0; i < f->nbounds; i++) {
		cum += f->buckets[i];
		core_buf_printf(b, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", f->name, f->bounds[i],
				cum);
	}
	cum += f->buckets[f->nbounds];
	core_buf_printf(b, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", f->name, cum);
	core_buf_printf(b, "%s_sum %.17g\n", f->name, f->sum);
	core_buf_printf(b, "%s_count %" PRIu64 "\n", f->name, f->n);
}

int metrics_render(struct core_buf *out)
{
	static const char *const type_names[] = { "counter", "gauge", "histogram" };
	size_t i, k;

	for (i = 0; i < METRICS_COUNT; i++) {
		const struct family *f = &families[i];
		bool any = false;

		core_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name,
				type_names[f->kind]);
		if (f->kind == K_HISTOGRAM) {
			render_histogram(out, f);
			continue;
		}
		for (k = 0; k < METRICS_MAX_SERIES; k++) {
			const struct series *s = &f->s[k];

			if (!s->used)
				continue;
			any = true;
			core_buf_adds(out, f->name);
			add_labels(out, f, s);
			if (f->kind == K_COUNTER)
				core_buf_printf(out, " %" PRIu64 "\n", s->count);
			else
				core_buf_printf(out, " %.17g\n", s->value);
		}
		/* A family without labels always has its one series. */
		if (!any && f->label[0] == NULL)
			core_buf_printf(out, "%s 0\n", f->name);
	}
	return core_buf_error(out);
}
