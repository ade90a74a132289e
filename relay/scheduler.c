/* The delivery scheduler: every queued message's recipients in memory, one
 * timer at the earliest due time, per-domain concurrency, retries and bounces. */
#include "relay/scheduler.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue.h"
#include "relay/bounce.h"
#include "relay/clock.h"
#include "relay/delivery.h"
#include "relay/log.h"
#include "smtp/client.h"

/*
 * Model: each message is loaded once (envelope + recipient states, not the
 * data) and stays in memory until every recipient is final. A recipient is
 * due when it is pending/deferred, not in flight, and next_try has come. A
 * pass over all messages (the timer callback, also used as "kick") starts
 * one delivery per (message, domain) of due recipients while the domain has
 * a free slot, and re-arms the timer at the earliest future next_try. A
 * finished delivery frees its slot and kicks.
 *
 * Durability: after every attempt the recipient states are saved with
 * queue_save_state (fsync, on the loop thread for now — a worker and group
 * fsync would keep the loop free under load). A DSN is committed before the
 * state that says "bounced" is saved: a crash in between gives a duplicate
 * bounce, never a lost one. A recipient is marked sent only after its 250
 * to the end of data arrived; the state file then says so.
 *
 * Cost: a pass is O(messages x recipients); fine for the queues a relay
 * usually holds, an index by next_try would be the next step.
 */

#define STOP_GRACE_MS 10000            /* in-flight deliveries at shutdown, then abort */

struct smsg {
	struct queue_envelope env;
	unsigned char *inflight;       /* per recipient */
	unsigned busy;                 /* deliveries running */
	bool deleted;                  /* removed from the spool; free when idle */
	bool admin_bounce;             /* `queue bounce`: finish once idle */
	struct smsg *prev, *next;
};

struct sdomain {
	char name[DNS_NAME_MAX + 1];
	unsigned active;
	struct sdomain *next;
};

struct job {
	struct scheduler *s;
	struct smsg *m;
	struct sdomain *dom;
	struct delivery *d;
	struct job *prev, *next;
};

struct scheduler {
	struct relay *r;
	struct delivery_ctx *dc;
	uv_timer_t timer;
	uv_timer_t stop_timer;
	struct smsg *msgs;
	size_t nmsgs;
	struct sdomain *doms;
	struct job *jobs;
	unsigned running;
	bool stopping, stop_done_called;
	bool in_pass, kicked;          /* a kick during a pass runs another one */
	void (*stop_done)(void *arg);
	void *stop_arg;
};

static void kick(struct scheduler *s);

/* ---- small helpers ---- */

static bool is_final(enum queue_rcpt_status st)
{
	return st == QUEUE_SENT || st == QUEUE_BOUNCED;
}

/* The domain of an address, lower case; false when there is none. */
static bool domain_of(const char *addr, char *out, size_t len)
{
	const char *at = strrchr(addr, '@');
	size_t i, n;

	if (at == NULL || at[1] == '\0')
		return false;
	at++;
	n = strlen(at);
	if (n >= len || n > DNS_NAME_MAX)
		return false;
	for (i = 0; i < n; i++)
		out[i] = (char)tolower((unsigned char)at[i]);
	out[n] = '\0';
	if (n > 0 && out[n - 1] == '.')
		out[n - 1] = '\0';
	return out[0] != '\0';
}

static struct smsg *find(struct scheduler *s, const char *id)
{
	struct smsg *m;

	for (m = s->msgs; m != NULL; m = m->next)
		if (!m->deleted && strcmp(m->env.id, id) == 0)
			return m;
	return NULL;
}

static void msg_free(struct smsg *m)
{
	queue_envelope_clear(&m->env);
	free(m->inflight);
	free(m);
}

static void msg_unlink(struct scheduler *s, struct smsg *m)
{
	if (m->prev)
		m->prev->next = m->next;
	else
		s->msgs = m->next;
	if (m->next)
		m->next->prev = m->prev;
	s->nmsgs--;
}

static struct sdomain *dom_get(struct scheduler *s, const char *name)
{
	struct sdomain *d;

	for (d = s->doms; d != NULL; d = d->next)
		if (strcmp(d->name, name) == 0)
			return d;
	d = calloc(1, sizeof(*d));
	if (d == NULL)
		return NULL;
	snprintf(d->name, sizeof(d->name), "%s", name);
	d->next = s->doms;
	s->doms = d;
	return d;
}

static void dom_release(struct scheduler *s, struct sdomain *dom)
{
	struct sdomain **pp;

	if (--dom->active > 0)
		return;
	for (pp = &s->doms; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == dom) {
			*pp = dom->next;
			free(dom);
			return;
		}
	}
}

/* "0.8" style seconds since the message arrived (Postfix delay=). */
static void delay_field(const struct smsg *m, char *buf, size_t len)
{
	int64_t ms = clock_now_ms() - m->env.queued_at * 1000;

	if (ms < 0)
		ms = 0;
	snprintf(buf, len, "%" PRId64 ".%" PRId64, ms / 1000, (ms % 1000) / 100);
}

/* The per-recipient line, Postfix order plus tls= and sts=. */
static void log_rcpt(const struct smsg *m, const char *addr, const char *relay, const char *dsn,
		     const char *tls, const char *sts, const char *sts_result, const char *status,
		     const char *text)
{
	char to[QUEUE_ADDR_MAX + 2], delay[32], st[QUEUE_ERROR_MAX + 32];

	snprintf(to, sizeof(to), "<%s>", addr);
	delay_field(m, delay, sizeof(delay));
	snprintf(st, sizeof(st), "%s (%s)", status, text);
	log_event(LOG_LVL_INFO, m->env.id, "to", to, "relay", relay ? relay : "none", "delay",
		  delay, "dsn", dsn, "tls", tls, "sts", sts, "sts_result", sts_result, "status", st,
		  NULL);
}

/* The status code found in a saved last_error ("... 4.7.5 ..."): the first
 * word of the form c.s.d with c in 2/4/5. */
static void dsn_in_text(const char *t, char *out, size_t len)
{
	const char *p;

	out[0] = '\0';
	for (p = t; *p; p++) {
		unsigned a, b;
		int n = 0;

		if (p != t && p[-1] != ' ' && p[-1] != '(')
			continue;
		if ((*p == '2' || *p == '4' || *p == '5') &&
		    sscanf(p, "%*1[245].%3u.%3u%n", &a, &b, &n) == 2 && n > 0 &&
		    (p[n] == '\0' || p[n] == ' ' || p[n] == ')' || p[n] == ';')) {
			snprintf(out, len, "%.*s", n, p);
			return;
		}
	}
}

/* last_error keeps its status code in its text so that the DSN at queue
 * lifetime can name the reason after a restart. */
static void set_last_error(struct queue_rcpt *q, const char *dsn, const char *text)
{
	char found[SMTP_REPLY_ESC_MAX];

	dsn_in_text(text, found, sizeof(found));
	if (strcmp(found, dsn) == 0)
		snprintf(q->last_error, sizeof(q->last_error), "%s", text);
	else
		snprintf(q->last_error, sizeof(q->last_error), "%s %s", dsn, text);
}

/* ---- after an attempt ---- */

struct bounce_list {
	struct smtp_dsn_rcpt *r;
	char (*status)[SMTP_REPLY_ESC_MAX];
	char (*reason)[QUEUE_ERROR_MAX + 64];
	size_t n, cap;
};

static struct smtp_dsn_rcpt *bl_add(struct bounce_list *bl)
{
	if (bl->n == bl->cap) {
		size_t cap = bl->cap ? bl->cap * 2 : 8;
		struct smtp_dsn_rcpt *r = realloc(bl->r, cap * sizeof(*r));
		char(*st)[SMTP_REPLY_ESC_MAX];
		char(*re)[QUEUE_ERROR_MAX + 64];

		if (r == NULL)
			return NULL;
		bl->r = r;
		st = realloc(bl->status, cap * sizeof(*st));
		if (st == NULL)
			return NULL;
		bl->status = st;
		re = realloc(bl->reason, cap * sizeof(*re));
		if (re == NULL)
			return NULL;
		bl->reason = re;
		bl->cap = cap;
	}
	memset(&bl->r[bl->n], 0, sizeof(bl->r[0]));
	return &bl->r[bl->n++];
}

static void bl_free(struct bounce_list *bl)
{
	free(bl->r);
	free(bl->status);
	free(bl->reason);
}

static void add_bounce(struct bounce_list *bl, const struct queue_rcpt *q, const char *status,
		       const char *reason, const char *remote_mta, const char *diagnostic)
{
	struct smtp_dsn_rcpt *r = bl_add(bl);
	size_t i;

	if (r == NULL) {
		log_error("scheduler: out of memory building a bounce for <%s>", q->address);
		return;
	}
	i = bl->n - 1;
	snprintf(bl->status[i], sizeof(bl->status[i]), "%s", status);
	snprintf(bl->reason[i], sizeof(bl->reason[i]), "%s", reason);
	/* pointers into bl are fixed after the last add: see fix_pointers */
	r->address = q->address;
	r->remote_mta = remote_mta && remote_mta[0] ? remote_mta : NULL;
	r->diagnostic = diagnostic && diagnostic[0] ? diagnostic : NULL;
	r->last_attempt = q->last_try;
}

static void fix_pointers(struct bounce_list *bl)
{
	size_t i;

	for (i = 0; i < bl->n; i++) {
		bl->r[i].status = bl->status[i];
		bl->r[i].reason = bl->reason[i];
	}
}

static void scheduler_add_loaded(struct scheduler *s, const char *id);

/* Queues the DSN, saves the states, removes the message when all is final.
 * Returns true when m was freed. */
static bool settle(struct scheduler *s, struct smsg *m, struct bounce_list *bl)
{
	size_t i;
	bool all_final = true;

	if (bl->n > 0) {
		char new_id[QUEUE_ID_LEN + 1];
		int rc;

		fix_pointers(bl);
		rc = bounce_enqueue(s->r->queue, s->r->cfg.hostname, &m->env, bl->r, bl->n, new_id);
		if (rc == 1)
			scheduler_add_loaded(s, new_id);
		else if (rc == 0)
			log_msg(LOG_LVL_INFO, m->env.id, "no bounce for %s",
				m->env.sender[0] ? "a message flagged no-bounce" : "a null sender");
	}
	for (i = 0; i < m->env.nrcpts; i++)
		if (!is_final(m->env.rcpts[i].status))
			all_final = false;
	if (all_final && m->busy == 0) {
		if (queue_remove(s->r->queue, m->env.id) != 0) {
			log_msg(LOG_LVL_ERROR, m->env.id, "cannot remove the finished message");
			queue_save_state(s->r->queue, &m->env);
			return false;
		}
		log_msg(LOG_LVL_INFO, m->env.id, "removed");
		msg_unlink(s, m);
		msg_free(m);
		return true;
	}
	if (queue_save_state(s->r->queue, &m->env) != 0)
		log_msg(LOG_LVL_ERROR, m->env.id,
			"cannot save recipient states (a restart repeats this attempt)");
	return false;
}

/* The status a lifetime bounce reports: the MTA-STS reasons keep theirs
 * (5.7.5 / 5.4.8 once the DSN makes them permanent), else 4.4.7 -> 5.4.7. */
static const char *expiry_status(const char *last)
{
	if (strcmp(last, "4.7.5") == 0 || strcmp(last, "4.4.8") == 0)
		return last;
	return "4.4.7";
}

static void bounce_admin(struct smsg *m, struct bounce_list *bl)
{
	int64_t now = clock_now();
	size_t i;

	for (i = 0; i < m->env.nrcpts; i++) {
		struct queue_rcpt *q = &m->env.rcpts[i];

		if (is_final(q->status) || m->inflight[i])
			continue;
		q->status = QUEUE_BOUNCED;
		q->last_try = now;
		set_last_error(q, "5.0.0", "bounced by the administrator");
		log_rcpt(m, q->address, NULL, "5.0.0", "none", "absent", NULL, "bounced",
			 "bounced by the administrator");
		add_bounce(bl, q, "5.0.0", "bounced by the administrator", NULL, NULL);
	}
}

static void apply_result(struct scheduler *s, struct smsg *m, const struct delivery_result *res,
			 struct bounce_list *bl)
{
	const struct config *cfg = &s->r->cfg;
	int64_t now = clock_now();
	int64_t expires = m->env.queued_at + (int64_t)cfg->queue_lifetime_s;
	size_t i;

	for (i = 0; i < res->nrcpts; i++) {
		const struct delivery_rcpt *dr = &res->rcpts[i];
		struct queue_rcpt *q;

		if (dr->index >= m->env.nrcpts)
			continue;
		q = &m->env.rcpts[dr->index];
		if (is_final(q->status))
			continue;
		switch (dr->status) {
		case DELIVERY_ABORTED:
			break;  /* no verdict: state and attempts as they were */
		case DELIVERY_SENT:
			q->status = QUEUE_SENT;
			q->last_try = now;
			q->last_error[0] = '\0';
			log_rcpt(m, q->address, dr->relay, dr->dsn, dr->tls, res->sts, dr->sts_result,
				 "sent", dr->text);
			break;
		case DELIVERY_BOUNCE:
			q->status = QUEUE_BOUNCED;
			q->last_try = now;
			q->attempts++;
			set_last_error(q, dr->dsn, dr->text);
			log_rcpt(m, q->address, dr->relay, dr->dsn, dr->tls, res->sts, dr->sts_result,
				 "bounced", dr->text);
			add_bounce(bl, q, dr->dsn, dr->text, dr->remote_mta, dr->reply);
			break;
		case DELIVERY_DEFER:
			q->attempts++;
			q->last_try = now;
			set_last_error(q, dr->dsn, dr->text);
			if (now >= expires) {
				const char *st = expiry_status(dr->dsn);
				char reason[QUEUE_ERROR_MAX + 64], dsn5[SMTP_REPLY_ESC_MAX];

				snprintf(dsn5, sizeof(dsn5), "5%s", st + 1);
				snprintf(reason, sizeof(reason),
					 "delivery time expired; last error: %s", dr->text);
				q->status = QUEUE_BOUNCED;
				log_rcpt(m, q->address, dr->relay, dsn5, dr->tls, res->sts,
					 dr->sts_result, "bounced", reason);
				add_bounce(bl, q, st, reason, dr->remote_mta, dr->reply);
			} else {
				int64_t next = now + (int64_t)queue_retry_delay(
							     cfg->retry_schedule_s,
							     cfg->nretry_schedule, q->attempts);

				/* One last try right at the end of the lifetime. */
				if (next > expires)
					next = expires > now ? expires : now + 1;
				q->status = QUEUE_DEFERRED;
				q->next_try = next;
				log_rcpt(m, q->address, dr->relay, dr->dsn, dr->tls, res->sts,
					 dr->sts_result, "deferred", dr->text);
			}
			break;
		}
	}
}

/* ---- running deliveries ---- */

static void job_unlink(struct scheduler *s, struct job *j)
{
	if (j->prev)
		j->prev->next = j->next;
	else
		s->jobs = j->next;
	if (j->next)
		j->next->prev = j->prev;
}

static void finish_stop(struct scheduler *s);

static void on_delivery_done(void *arg, const struct delivery_result *res)
{
	struct job *j = arg;
	struct scheduler *s = j->s;
	struct smsg *m = j->m;
	struct bounce_list bl = { 0 };
	size_t i;

	job_unlink(s, j);
	s->running--;
	dom_release(s, j->dom);
	free(j);
	m->busy--;
	for (i = 0; i < res->nrcpts; i++)
		if (res->rcpts[i].index < m->env.nrcpts)
			m->inflight[res->rcpts[i].index] = 0;

	if (m->deleted) {
		if (m->busy == 0)
			msg_free(m);  /* already unlinked and removed from the spool */
	} else {
		apply_result(s, m, res, &bl);
		if (m->admin_bounce && m->busy == 0)
			bounce_admin(m, &bl);
		settle(s, m, &bl);
	}
	bl_free(&bl);
	if (s->stopping) {
		if (s->running == 0)
			finish_stop(s);
		return;
	}
	kick(s);
}

static int start_job(struct scheduler *s, struct smsg *m, struct sdomain *dom, const size_t *idx,
		     size_t n)
{
	struct job *j = calloc(1, sizeof(*j));
	size_t i;

	if (j == NULL)
		return -1;
	j->s = s;
	j->m = m;
	j->dom = dom;
	if (delivery_start(s->dc, &m->env, dom->name, idx, n, on_delivery_done, j, &j->d) != 0) {
		free(j);
		return -1;
	}
	for (i = 0; i < n; i++)
		m->inflight[idx[i]] = 1;
	m->busy++;
	dom->active++;
	s->running++;
	j->next = s->jobs;
	if (s->jobs)
		s->jobs->prev = j;
	s->jobs = j;
	return 0;
}

/* A recipient we cannot route at all: bounce it without a delivery. */
static void bounce_unroutable(struct scheduler *s, struct smsg *m, size_t i,
			      struct bounce_list *bl)
{
	struct queue_rcpt *q = &m->env.rcpts[i];
	const char *text = "bad address syntax: no domain";

	q->status = QUEUE_BOUNCED;
	q->last_try = clock_now();
	set_last_error(q, "5.1.3", text);
	log_rcpt(m, q->address, NULL, "5.1.3", "none", "absent", NULL, "bounced", text);
	add_bounce(bl, q, "5.1.3", text, NULL, NULL);
	(void)s;
}

/* Starts what is due in m; returns the earliest future next_try (ms) or
 * INT64_MAX. Sets *freed when m was removed. */
static int64_t run_message(struct scheduler *s, struct smsg *m, int64_t now_ms, bool *freed)
{
	size_t *idx = NULL, n, i, k;
	unsigned char *taken = NULL;
	int64_t earliest = INT64_MAX;
	unsigned maxc = s->r->cfg.max_connections_per_domain ? s->r->cfg.max_connections_per_domain : 1;
	struct bounce_list bl = { 0 };
	char dom[DNS_NAME_MAX + 1], dom2[DNS_NAME_MAX + 1];

	*freed = false;
	idx = malloc(m->env.nrcpts * sizeof(*idx));
	taken = calloc(m->env.nrcpts, 1);
	if (idx == NULL || taken == NULL) {
		free(idx);
		free(taken);
		return now_ms + 1000;  /* try again in a second */
	}
	for (i = 0; i < m->env.nrcpts; i++) {
		struct queue_rcpt *q = &m->env.rcpts[i];
		struct sdomain *sd;

		if (taken[i] || is_final(q->status) || m->inflight[i])
			continue;
		if (q->next_try * 1000 > now_ms) {
			if (q->next_try * 1000 < earliest)
				earliest = q->next_try * 1000;
			continue;
		}
		if (!domain_of(q->address, dom, sizeof(dom))) {
			bounce_unroutable(s, m, i, &bl);
			continue;
		}
		/* every due recipient of this domain goes into one transaction */
		n = 0;
		for (k = i; k < m->env.nrcpts && n < SMTP_CLIENT_MAX_RCPTS; k++) {
			struct queue_rcpt *q2 = &m->env.rcpts[k];

			if (taken[k] || is_final(q2->status) || m->inflight[k] ||
			    q2->next_try * 1000 > now_ms)
				continue;
			if (!domain_of(q2->address, dom2, sizeof(dom2)) || strcmp(dom, dom2) != 0)
				continue;
			taken[k] = 1;
			idx[n++] = k;
		}
		sd = dom_get(s, dom);
		if (sd == NULL) {
			earliest = now_ms + 1000 < earliest ? now_ms + 1000 : earliest;
			continue;
		}
		if (sd->active >= maxc)
			continue;  /* a finished delivery frees a slot and kicks */
		if (start_job(s, m, sd, idx, n) != 0) {
			log_msg(LOG_LVL_ERROR, m->env.id, "cannot start a delivery to %s; retrying", dom);
			if (sd->active == 0) {
				sd->active = 1;  /* dom_release drops the unused entry */
				dom_release(s, sd);
			}
			if (now_ms + 5000 < earliest)
				earliest = now_ms + 5000;
		}
	}
	free(idx);
	free(taken);
	if (bl.n > 0)
		*freed = settle(s, m, &bl);
	bl_free(&bl);
	return earliest;
}

static void on_timer(uv_timer_t *t)
{
	struct scheduler *s = t->data;
	struct smsg *m, *next;
	int64_t now_ms = clock_now_ms(), earliest = INT64_MAX;

	if (s->stopping)
		return;
	s->in_pass = true;
	s->kicked = false;
	for (m = s->msgs; m != NULL; m = next) {
		bool freed;
		int64_t e;

		next = m->next;
		if (m->deleted)
			continue;
		e = run_message(s, m, now_ms, &freed);
		if (e < earliest)
			earliest = e;
	}
	s->in_pass = false;
	if (s->kicked)
		earliest = 0;
	if (earliest != INT64_MAX) {
		int64_t wait = earliest - clock_now_ms();

		if (wait < 0)
			wait = 0;
		uv_timer_start(&s->timer, on_timer, (uint64_t)wait, 0);
	}
}

/* A pass on the next loop turn (never recursively from a callback). */
static void kick(struct scheduler *s)
{
	if (s->stopping)
		return;
	if (s->in_pass)
		s->kicked = true;
	else
		uv_timer_start(&s->timer, on_timer, 0, 0);
}

/* ---- public ---- */

static int load_message(struct scheduler *s, const char *id)
{
	struct smsg *m = calloc(1, sizeof(*m));
	char err[256];

	if (m == NULL)
		return -1;
	if (queue_load(s->r->queue, id, &m->env, err, sizeof(err)) != 0) {
		/* unreadable: leave it on disk for the operator, do not touch */
		log_msg(LOG_LVL_ERROR, id, "cannot load queued message: %s", err);
		free(m);
		return 0;
	}
	m->inflight = calloc(m->env.nrcpts ? m->env.nrcpts : 1, 1);
	if (m->inflight == NULL) {
		msg_free(m);
		return -1;
	}
	m->next = s->msgs;
	if (s->msgs)
		s->msgs->prev = m;
	s->msgs = m;
	s->nmsgs++;
	return 0;
}

static void scheduler_add_loaded(struct scheduler *s, const char *id)
{
	if (find(s, id) != NULL)
		return;
	if (load_message(s, id) != 0)
		log_msg(LOG_LVL_ERROR, id, "scheduler: out of memory (message stays queued)");
	kick(s);
}

int scheduler_new(struct relay *r, struct scheduler **out)
{
	struct scheduler *s = calloc(1, sizeof(*s));
	char(*ids)[QUEUE_ID_LEN + 1] = NULL;
	char err[512];
	size_t n = 0, i;

	if (s == NULL)
		return -1;
	s->r = r;
	if (delivery_ctx_new(r, &s->dc, err, sizeof(err)) != 0) {
		log_error("scheduler: %s", err);
		free(s);
		return -1;
	}
	uv_timer_init(r->loop, &s->timer);
	s->timer.data = s;
	uv_timer_init(r->loop, &s->stop_timer);
	s->stop_timer.data = s;
	if (queue_scan(r->queue, &ids, &n) != 0) {
		log_error("scheduler: cannot scan the queue");
		goto fail;
	}
	for (i = 0; i < n; i++) {
		if (load_message(s, ids[i]) != 0) {
			log_error("scheduler: out of memory");
			goto fail;
		}
	}
	free(ids);
	log_info("scheduler: %zu message(s) in queue", s->nmsgs);
	kick(s);
	*out = s;
	return 0;
fail:
	free(ids);
	/* Nothing runs yet: close what we opened; the caller runs the loop. */
	s->stopping = true;
	uv_close((uv_handle_t *)&s->timer, NULL);
	uv_close((uv_handle_t *)&s->stop_timer, NULL);
	delivery_ctx_free(s->dc);
	s->dc = NULL;
	/* the timers live in s: freed after the loop has closed them */
	*out = s;
	return -1;
}

void scheduler_add(struct scheduler *s, const char *id)
{
	if (strlen(id) != QUEUE_ID_LEN)
		return;
	scheduler_add_loaded(s, id);
}

int scheduler_flush(struct scheduler *s, const char *id)
{
	struct smsg *m;
	size_t i;

	if (id != NULL && find(s, id) == NULL)
		return -1;
	for (m = s->msgs; m != NULL; m = m->next) {
		if (m->deleted || (id != NULL && strcmp(m->env.id, id) != 0))
			continue;
		for (i = 0; i < m->env.nrcpts; i++)
			if (!is_final(m->env.rcpts[i].status))
				m->env.rcpts[i].next_try = 0;
	}
	log_msg(LOG_LVL_INFO, id, "flush requested");
	kick(s);
	return 0;
}

static void abort_jobs_of(struct scheduler *s, struct smsg *m)
{
	struct job *j;

	for (j = s->jobs; j != NULL; j = j->next)
		if (m == NULL || j->m == m)
			delivery_abort(j->d);
}

int scheduler_delete(struct scheduler *s, const char *id)
{
	struct smsg *m = find(s, id);

	if (m == NULL)
		return -1;
	if (queue_remove(s->r->queue, id) != 0) {
		log_msg(LOG_LVL_ERROR, id, "delete failed");
		return -1;
	}
	log_msg(LOG_LVL_INFO, id, "removed (deleted by the administrator)");
	msg_unlink(s, m);
	if (m->busy == 0) {
		msg_free(m);
		return 0;
	}
	/* An in-flight delivery still points at m: it is freed when the last
	 * one reports back (the open file keeps its data readable meanwhile). */
	m->deleted = true;
	m->prev = m->next = NULL;
	abort_jobs_of(s, m);
	return 0;
}

int scheduler_bounce(struct scheduler *s, const char *id)
{
	struct smsg *m = find(s, id);
	struct bounce_list bl = { 0 };

	if (m == NULL)
		return -1;
	m->admin_bounce = true;
	if (m->busy > 0) {
		abort_jobs_of(s, m);  /* on_delivery_done finishes the bounce */
		return 0;
	}
	bounce_admin(m, &bl);
	settle(s, m, &bl);
	bl_free(&bl);
	return 0;
}

static void on_stop_timer(uv_timer_t *t)
{
	struct scheduler *s = t->data;

	log_info("scheduler: %u deliveries still running after %d s: aborting them", s->running,
		 STOP_GRACE_MS / 1000);
	abort_jobs_of(s, NULL);
}

static void finish_stop(struct scheduler *s)
{
	if (s->stop_done_called)
		return;
	s->stop_done_called = true;
	uv_timer_stop(&s->stop_timer);
	if (!uv_is_closing((uv_handle_t *)&s->timer))
		uv_close((uv_handle_t *)&s->timer, NULL);
	if (!uv_is_closing((uv_handle_t *)&s->stop_timer))
		uv_close((uv_handle_t *)&s->stop_timer, NULL);
	delivery_ctx_free(s->dc);
	s->dc = NULL;
	if (s->stop_done)
		s->stop_done(s->stop_arg);
}

void scheduler_stop(struct scheduler *s, void (*done)(void *arg), void *arg)
{
	s->stop_done = done;
	s->stop_arg = arg;
	if (s->stopping)
		return;
	s->stopping = true;
	uv_timer_stop(&s->timer);
	if (s->running == 0) {
		finish_stop(s);
		return;
	}
	log_info("scheduler: waiting for %u deliveries (at most %d s)", s->running,
		 STOP_GRACE_MS / 1000);
	uv_timer_start(&s->stop_timer, on_stop_timer, STOP_GRACE_MS, 0);
}

void scheduler_free(struct scheduler *s)
{
	struct smsg *m, *next;
	struct sdomain *d, *dn;

	if (s == NULL)
		return;
	for (m = s->msgs; m != NULL; m = next) {
		next = m->next;
		msg_free(m);
	}
	for (d = s->doms; d != NULL; d = dn) {
		dn = d->next;
		free(d);
	}
	free(s);
}
