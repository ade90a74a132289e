/* The daily TLS-RPT run inside `stsrelay serve`: one timer decides which UTC
 * day is due (or due for a retry), runs a send job for it, and prunes old data. */
#define LOG_COMPONENT LOG_C_TLSRPT /* program name in logs, see relay/core/log.h */
#include "relay/daemon/tlsrpt_daemon.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/core/clock.h"
#include "relay/core/log.h"
#include "relay/daemon/scheduler.h"
#include "sts/tlsrpt/fleet.h"
#include "sts/tlsrpt/send.h"
#include "sts/tlsrpt/tlsrpt.h"

#define WINDOW_S 86400      /* retries for up to 24 h (RFC 8460 §5.5) */
#define MAX_WAKE_MS 3600000 /* re-evaluate at least hourly (clock changes) */
#define NSLOTS 4
#define MERGE_RETRY_S \
	15                 /* a fleet node has not merged its day yet, or is
			    * sending a copy this one would have sent */
#define MERGE_WAIT_S 21600 /* then, 6 hours after the due time, send without it */

struct day_state {
	int64_t start;     /* 0 = free slot */
	bool complete;     /* every rua sent, or the window closed */
	unsigned failures; /* runs that left something unsent */
	int64_t retry_at;
	bool waited; /* a fleet: the wait for other nodes' counts was logged */
};

struct tlsrpt_daemon {
	struct relay *r;
	struct dns *dns;
	struct http_client *http;
	struct dkim_key *dkim;
	uv_timer_t timer;
	bool timer_open;
	struct tlsrpt_job *job;
	struct tlsrpt_fleet_prep *prep; /* a fleet: the day being prepared */
	int64_t job_day;                /* 0: a manual run */
	int64_t job_start;              /* the day of the run (manual ones too) */
	struct day_state days[NSLOTS];
	bool stopping;
	void (*done)(void *arg);
	void *done_arg;
};

int64_t tlsrpt_due_time(int64_t day_start, unsigned send_at_min, const char *hostname)
{
	uint64_t h = 1469598103934665603ULL;
	const char *p;
	int64_t d = day_start;
	int i;

	for (p = hostname; *p != '\0'; p++) {
		h ^= (unsigned char)*p;
		h *= 1099511628211ULL;
	}
	for (i = 0; i < 8; i++) {
		h ^= (uint64_t)(d >> (8 * i)) & 0xff;
		h *= 1099511628211ULL;
	}
	return day_start + 86400 + (int64_t)send_at_min * 60 + (int64_t)(h % 3600);
}

int64_t tlsrpt_retry_delay(unsigned failures)
{
	int64_t d = 60;

	while (failures > 1 && d < 3600) {
		d *= 2;
		failures--;
	}
	return d < 3600 ? d : 3600;
}

static struct day_state *slot_for(struct tlsrpt_daemon *d, int64_t start)
{
	struct day_state *oldest = &d->days[0];
	size_t i;

	for (i = 0; i < NSLOTS; i++) {
		if (d->days[i].start == start)
			return &d->days[i];
		if (d->days[i].start < oldest->start)
			oldest = &d->days[i];
	}
	memset(oldest, 0, sizeof(*oldest));
	oldest->start = start;
	return oldest;
}

static void tick(struct tlsrpt_daemon *d);

static void on_timer(uv_timer_t *t)
{
	tick(t->data);
}

static void arm(struct tlsrpt_daemon *d, int64_t wake_at)
{
	int64_t ms = (wake_at - clock_now()) * 1000;

	if (ms < 1000)
		ms = 1000;
	if (ms > MAX_WAKE_MS)
		ms = MAX_WAKE_MS;
	uv_timer_start(&d->timer, on_timer, (uint64_t)ms, 0);
}

static void on_enqueued(void *arg, const char *qid)
{
	struct tlsrpt_daemon *d = arg;

	if (d->r->sched != NULL)
		scheduler_add(d->r->sched, qid);
}

static void maybe_done(struct tlsrpt_daemon *d)
{
	if (d->stopping && !d->timer_open && d->job == NULL && d->prep == NULL) {
		void (*done)(void *) = d->done;
		void *arg = d->done_arg;

		dkim_key_free(d->dkim);
		free(d);
		if (done != NULL)
			done(arg);
	}
}

static void on_job_done(void *arg, const struct tlsrpt_job_result *res)
{
	struct tlsrpt_daemon *d = arg;
	char day[TLSRPT_DAY_LEN + 1];
	int64_t now = clock_now();

	d->job = NULL;
	if (d->job_day != 0) {
		struct day_state *s = slot_for(d, d->job_day);

		tlsrpt_day_of(d->job_day, day);
		if (res->failed == 0 && res->elsewhere > 0 && !res->cancelled) {
			/* another node is sending those: look again to see them
			 * sent (or claim them if that node gave them back) */
			s->retry_at = now + MERGE_RETRY_S;
			log_info("tlsrpt %s: %u report copies being sent by other nodes of the "
				 "fleet; looking again in %d s",
				 day, res->elsewhere, MERGE_RETRY_S);
		} else if (res->failed == 0 && !res->cancelled) {
			s->complete = true;
			log_info("tlsrpt %s: run complete: %u domains, %u sent, %u already sent, "
				 "%u without _smtp._tls, %u skipped (no DKIM key)",
				 day, res->domains, res->sent, res->already, res->no_record,
				 res->skipped);
		} else if (!res->cancelled) {
			s->failures++;
			s->retry_at = now + tlsrpt_retry_delay(s->failures);
			log_warn("tlsrpt %s: %u report copies not delivered; retry in %lld s", day,
				 res->failed, (long long)(s->retry_at - now));
		}
	}
	if (tlsrpt_prune(d->r->cfg.spool_dir, now, d->r->cfg.tlsrpt_retention_s) < 0)
		log_warn("tlsrpt: pruning old data failed");
	if (d->stopping) {
		maybe_done(d);
		return;
	}
	tick(d);
}

/* The send job; data: the fleet's day (taken over), NULL: this spool's. */
static int start_job(struct tlsrpt_daemon *d, int64_t start, struct tlsrpt_day *data)
{
	struct tlsrpt_job_env env;
	char day[TLSRPT_DAY_LEN + 1];

	memset(&env, 0, sizeof(env));
	env.loop = d->r->loop;
	env.cfg = &d->r->cfg;
	env.queue = d->r->queue;
	env.dns = d->dns;
	env.http = d->http;
	env.dkim = d->dkim;
	env.enqueued = on_enqueued;
	env.enqueued_arg = d;
	env.data = data;
	if (data != NULL)
		env.ledger = tlsrpt_fleet_ledger(d->r->tlsrpt_fleet);
	tlsrpt_day_of(start, day);
	if (tlsrpt_job_start(&env, day, on_job_done, d, &d->job) != 0) {
		d->job = NULL;
		return -1;
	}
	log_info("tlsrpt %s: sending reports%s", day, data != NULL ? " (the fleet's counts)" : "");
	return 0;
}

static int run_day(struct tlsrpt_daemon *d, int64_t start);

/* A fleet's day is ready (or not): the job, or a later look. */
static void on_prepared(void *arg, enum tlsrpt_fleet_status st, struct tlsrpt_day *data,
			const char *why)
{
	struct tlsrpt_daemon *d = arg;
	int64_t now = clock_now();
	char day[TLSRPT_DAY_LEN + 1];
	struct day_state *s = d->job_day != 0 ? slot_for(d, d->job_day) : NULL;

	d->prep = NULL;
	tlsrpt_day_of(d->job_start, day);
	if (st == TLSRPT_FLEET_READY) {
		if (start_job(d, d->job_start, data) == 0)
			return;
		log_error("tlsrpt %s: cannot start sending", day);
	} else if (st == TLSRPT_FLEET_WAIT && s != NULL &&
		   now >= d->job_start + 86400 + (int64_t)MERGE_WAIT_S +
				   (int64_t)d->r->cfg.tlsrpt_send_at_min * 60) {
		log_warn("tlsrpt %s: %s for %d hours; sending what the fleet has", day, why,
			 MERGE_WAIT_S / 3600);
		if (tlsrpt_fleet_prepare(d->r->tlsrpt_fleet, day, false, on_prepared, d,
					 &d->prep) == 0)
			return;
		d->prep = NULL;
		st = TLSRPT_FLEET_DOWN; /* no memory: a retry later */
	} else if (st == TLSRPT_FLEET_WAIT && s != NULL) {
		/* reports wait for every node's counts, up to MERGE_WAIT_S; said
		 * once, then looked at quietly */
		if (!s->waited)
			log_info("tlsrpt %s: %s; looking again every %d s", day, why,
				 MERGE_RETRY_S);
		s->waited = true;
		s->retry_at = now + MERGE_RETRY_S;
	} else {
		log_warn("tlsrpt %s: the fleet's report waits: %s", day, why);
	}
	if (s != NULL && st != TLSRPT_FLEET_WAIT) {
		s->failures++;
		s->retry_at = now + tlsrpt_retry_delay(s->failures);
	}
	if (!d->stopping)
		tick(d);
	else
		maybe_done(d);
}

/* A run of the day starting at start: a fleet first gathers the day from
 * every node (the daily run waits for their counts, up to MERGE_WAIT_S
 * after the day's due time), a lone relay reads its spool. */
static int run_day(struct tlsrpt_daemon *d, int64_t start)
{
	struct tlsrpt_fleet *fl = d->r->tlsrpt_fleet;
	char day[TLSRPT_DAY_LEN + 1];

	d->job_start = start;
	if (fl == NULL)
		return start_job(d, start, NULL);
	tlsrpt_day_of(start, day);
	/* the daily run waits (on_prepared says how long), a manual one not */
	return tlsrpt_fleet_prepare(fl, day, d->job_day != 0, on_prepared, d, &d->prep);
}

/* Which day is due: the previous UTC day, and the one before while its
 * 24-hour retry window is still open. */
static void tick(struct tlsrpt_daemon *d)
{
	int64_t now = clock_now(), wake = now + MAX_WAKE_MS / 1000;
	int64_t yesterday = (now / 86400 - 1) * 86400;
	int64_t cand[2] = { yesterday - 86400, yesterday };
	int i;

	if (d->stopping || d->job != NULL || d->prep != NULL)
		return;
	for (i = 0; i < 2; i++) {
		int64_t due = tlsrpt_due_time(cand[i], d->r->cfg.tlsrpt_send_at_min,
					      d->r->cfg.hostname);
		struct day_state *s = slot_for(d, cand[i]);

		if (s->complete)
			continue;
		if (now < due) {
			wake = due < wake ? due : wake;
			continue;
		}
		if (now >= due + WINDOW_S) {
			if (s->failures > 0)
				log_warn("tlsrpt: giving up on undelivered reports after 24 hours");
			s->complete = true;
			continue;
		}
		if (s->retry_at > now) {
			wake = s->retry_at < wake ? s->retry_at : wake;
			continue;
		}
		d->job_day = cand[i];
		if (run_day(d, cand[i]) == 0)
			return;
		s->failures++;
		s->retry_at = now + tlsrpt_retry_delay(s->failures);
		wake = s->retry_at < wake ? s->retry_at : wake;
	}
	arm(d, wake);
}

int tlsrpt_daemon_start(struct relay *r, struct tlsrpt_daemon **out)
{
	struct tlsrpt_daemon *d = calloc(1, sizeof(*d));
	const struct config *cfg = &r->cfg;
	char err[512];

	*out = NULL;
	if (d == NULL)
		return -1;
	d->r = r;
	if (cfg->dkim_domain[0] && cfg->dkim_selector[0] && cfg->dkim_key_file[0]) {
		if (dkim_key_load(cfg->dkim_key_file, cfg->dkim_domain, cfg->dkim_selector,
				  &d->dkim, err, sizeof(err)) != 0) {
			log_error("tlsrpt: DKIM key: %s", err);
			free(d);
			return -1;
		}
	} else {
		log_warn("tlsrpt: dkim_domain/dkim_selector/dkim_key_file not set: no report "
			 "mail can be sent (RFC 8460 §3 requires a DKIM signature); mailto: ruas "
			 "are skipped, https: ruas still get reports. `stsrelay tlsrpt "
			 "dkim-keygen` makes a key");
	}
	if (config_check_dkim_domain(cfg, err, sizeof(err)) != 0)
		log_warn("tlsrpt: %s", err);
	if (dns_new(r->loop, cfg->dns_servers, cfg->ndns_servers, NULL, &d->dns) != 0 ||
	    http_client_new(r->loop, &d->http) != 0 || uv_timer_init(r->loop, &d->timer) != 0) {
		log_error("tlsrpt: cannot start the resolver, HTTPS client or timer");
		dns_free(d->dns);
		if (d->http != NULL)
			http_client_free(d->http);
		dkim_key_free(d->dkim);
		free(d);
		return -1;
	}
	d->timer.data = d;
	d->timer_open = true;
	arm(d, clock_now()); /* first look a second after start */
	*out = d;
	return 0;
}

int tlsrpt_daemon_send_now(struct tlsrpt_daemon *d, const char *day)
{
	int64_t start;

	if (d->stopping || d->job != NULL || d->prep != NULL || tlsrpt_day_parse(day, &start) != 0)
		return -1;
	d->job_day = 0;
	return run_day(d, start);
}

static void on_timer_closed(uv_handle_t *h)
{
	struct tlsrpt_daemon *d = h->data;

	d->timer_open = false;
	maybe_done(d);
}

void tlsrpt_daemon_stop(struct tlsrpt_daemon *d, void (*done)(void *arg), void *arg)
{
	if (d == NULL) {
		if (done != NULL)
			done(arg);
		return;
	}
	if (d->stopping)
		return;
	d->stopping = true;
	d->done = done;
	d->done_arg = arg;
	if (d->job != NULL)
		tlsrpt_job_cancel(d->job);
	if (d->prep != NULL) {
		tlsrpt_fleet_prepare_cancel(d->prep);
		d->prep = NULL;
	}
	/* ends a lookup or upload in flight at once (their callbacks see it) */
	dns_free(d->dns);
	d->dns = NULL;
	http_client_free(d->http);
	d->http = NULL;
	uv_close((uv_handle_t *)&d->timer, on_timer_closed);
}
