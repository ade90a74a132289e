/* The delivery scheduler: every queued message's recipients in memory, a heap
 * of due times, per-domain queues of waiting work, retries and bounces. */
#define LOG_COMPONENT LOG_C_QMGR /* program name in logs, see relay/core/log.h */
#include "relay/daemon/scheduler.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue.h"
#include "relay/daemon/bounce.h"
#include "relay/core/clock.h"
#include "relay/daemon/delivery.h"
#include "relay/core/log.h"
#include "relay/core/metrics.h"
#include "relay/daemon/statesave.h"
#include "smtp/address.h"
#include "smtp/client.h"

/*
 * Model: each message is loaded once (envelope + recipient states, not the
 * data) and stays in memory until every recipient is final. A recipient is
 * due when it is pending/deferred, not in flight, and next_try has come.
 * Running a message starts one delivery per (message, domain) of its due
 * recipients while the domain has a free slot.
 *
 * Index (so a pass costs O(due work), not O(queue)): a min-heap of messages
 * keyed by their earliest due time; a message whose due recipients found
 * their domain full waits in that domain's FIFO queue instead, and a
 * finished delivery puts its domain on the ready list so the next pass gives
 * the free slot to the first waiter. One timer fires at the heap top (or at
 * once when a domain is ready); a pass runs at most PASS_BUDGET messages and
 * then yields to the loop.
 *
 * The queue is reached through a queue backend (queue/backend.h: the spool
 * in the daemon, queue/ram.h in the unit tests), deliveries through a
 * struct scheduler_delivery (relay/daemon/delivery.h in the daemon).
 *
 * Durability: recipient states are saved (queue_save_state) and finished
 * messages removed (queue_remove) in the thread pool through
 * relay/daemon/statesave.h, batched per loop turn (the I/O life cycle,
 * enum msg_io, says in which order); at most one such operation per
 * message is in flight (they share tmp/ID.state) and later changes are
 * coalesced into the next one. The per-recipient log lines of an attempt
 * are written when the save covering them has returned, so no line says
 * sent/bounced before the state file does. In memory the state is ahead of
 * the disk, which only matters after a crash: the attempt is then repeated
 * (at-least-once). A DSN is committed in the same thread-pool batches,
 * and made durable before any save submitted after it (statesave.h), so
 * the save that says "bounced" follows it: a crash in between gives a
 * duplicate bounce, never a lost one. A recipient is marked sent only after its 250
 * to the end of data arrived.
 */

#define STOP_GRACE_MS 10000          /* in-flight deliveries at shutdown, then abort */
#define TLSRPT_MAIL_LIFETIME_S 86400 /* queue life of TLS-RPT report mail (RFC 8460 §5.5) */
#define PASS_BUDGET 256              /* messages run per pass before yielding */
#define MSG_BUCKETS 16384
#define DOM_BUCKETS 1024
#define NO_HEAP ((size_t)-1)

/* A per-recipient log line waiting for the state it reports to be durable. */
struct rlog {
	struct rlog *next;
	char to[QUEUE_ADDR_MAX];
	char relay[DELIVERY_RELAY_MAX];
	unsigned conn_use; /* shown only for a reused connection (> 1) */
	int64_t delay_ms;
	char dsn[SMTP_REPLY_ESC_MAX + 1];
	char tls[DELIVERY_TLS_MAX];
	char sts[DELIVERY_STS_MAX];
	enum smtp_tls_result sts_result; /* SUCCESS: no sts_result= field */
	bool dane;                       /* DANE judged the MX host: dane=yes */
	char status[16];                 /* sent, deferred, bounced */
	char reason[QUEUE_ERROR_MAX + 112];
};

/*
 * The I/O life cycle of a message: what of its files is in flight in the
 * thread pool (relay/daemon/statesave.h). m->io is written by io_enter()
 * alone, and only these steps exist:
 *
 *   IDLE -> SAVING         a change (persist): save a snapshot of the states
 *   IDLE -> REMOVING       the same, when every recipient is final and no
 *                          delivery runs: remove the message instead
 *   SAVING -> SAVING_DIRTY a change while the save runs: one more follows it
 *   SAVING*, REMOVING -> IDLE   done; SAVING_DIRTY then saves (or removes)
 *                          again at once, a failed removal saves (REMOVING
 *                          done well frees m)
 *   IDLE -> DELETED        the administrator's delete: removed on the loop
 *   SAVING*, REMOVING -> DELETE_NEXT  the same while a save or removal runs
 *   DELETE_NEXT -> DELETING -> DELETED  its removal follows the one in flight
 *   DELETED                m is freed once the last delivery has returned
 *
 * Ordering invariant, which makes a crash cost a repeat, never a loss:
 * 1. At most one save or removal of a message is in flight (they share
 *    tmp/ID.state); what changes meanwhile waits for it and is coalesced.
 *    The administrator's removal comes after the one in flight, never
 *    beside it.
 * 2. A DSN is submitted (settle) before the save that marks its
 *    recipients bounced, and statesave makes it durable before that save
 *    runs: a crash between them repeats the bounce, never loses it.
 * 3. The per-recipient log lines of an attempt are written when the save
 *    covering them has returned (io_logs), never before.
 * 4. The removal is submitted only when every recipient is final and no
 *    delivery of the message runs, and only from IDLE: after the last save.
 * 5. Rescheduling (the heap, the domain queues) never waits for the disk:
 *    memory is ahead of it, which only matters after a crash, when the
 *    attempt is repeated (at-least-once).
 * 6. m is freed only with nothing in flight: no delivery (busy == 0) and
 *    no I/O (a removal that succeeded, or DELETED).
 */
enum msg_io {
	IO_IDLE,         /* nothing in flight */
	IO_SAVING,       /* a save of the states in flight */
	IO_SAVING_DIRTY, /* ... and m changed since its snapshot */
	IO_REMOVING,     /* the finished message's removal in flight */
	/* deleted by the administrator: unlinked from every index */
	IO_DELETE_NEXT, /* a save or removal still in flight; the removal follows */
	IO_DELETING,    /* the administrator's removal in flight */
	IO_DELETED,     /* files removed; freed when no delivery runs */
};

struct sdomain;
struct scheduler;

/* m waits in dom's queue for a free slot. */
struct swait {
	struct smsg *m;
	struct sdomain *dom;
	struct swait *dprev, *dnext; /* dom's FIFO */
	struct swait *mnext;         /* m's list */
};

struct smsg {
	struct scheduler *s;
	struct queue_envelope env;
	unsigned char *inflight;  /* per recipient */
	unsigned busy;            /* deliveries running */
	bool admin_bounce;        /* `queue bounce`: finish once idle */
	struct smsg *prev, *next; /* every live message */
	struct smsg *hnext;       /* id hash chain */
	size_t heap_i;            /* NO_HEAP when nothing is due */
	int64_t due_ms;
	struct swait *waits;
	enum msg_io io;                 /* persistence, see "the I/O life cycle" */
	struct rlog *logs, **logs_tail; /* not yet covered by a submitted save */
	struct rlog *io_logs;           /* covered by the one in flight */
};

struct sdomain {
	char name[DNS_NAME_MAX + 1];
	unsigned active;
	struct swait *wq_head, *wq_tail;
	bool ready;  /* on the ready list */
	bool pinned; /* being served by a pass: do not free */
	struct sdomain *hnext;
	struct sdomain *rnext;
};

struct job {
	struct scheduler *s;
	struct smsg *m;
	struct sdomain *dom;
	void *d; /* the delivery, for abort */
	struct job *prev, *next;
};

struct scheduler {
	struct relay *r;
	struct queue_backend qb; /* the spool, or queue/ram.h in tests */
	const struct scheduler_delivery *dv;
	void *dc; /* dv's context */
	struct statesave *ss;
	uv_timer_t timer;
	uv_timer_t stop_timer;
	struct smsg *msgs;
	size_t nmsgs;
	struct smsg **by_id;   /* MSG_BUCKETS */
	struct sdomain **doms; /* DOM_BUCKETS */
	struct smsg **heap;
	size_t heap_n, heap_cap;
	struct sdomain *ready_head, *ready_tail;
	struct job *jobs;
	unsigned running;
	bool stopping, stop_done_called;
	bool in_pass;
	void (*stop_done)(void *arg);
	void *stop_arg;
};

static void arm(struct scheduler *s);
static void persist(struct scheduler *s, struct smsg *m);
static void maybe_finish_stop(struct scheduler *s);

/* ---- small helpers ---- */

static bool is_final(enum queue_rcpt_status st)
{
	return st == QUEUE_SENT || st == QUEUE_BOUNCED;
}

static bool all_final(const struct smsg *m)
{
	size_t i;

	for (i = 0; i < m->env.nrcpts; i++)
		if (!is_final(m->env.rcpts[i].status))
			return false;
	return true;
}

static unsigned max_conn(const struct scheduler *s)
{
	return s->r->cfg.max_connections_per_domain ? s->r->cfg.max_connections_per_domain : 1;
}

static size_t hash_str(const char *p, size_t buckets)
{
	uint32_t h = 2166136261u; /* FNV-1a */

	for (; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return h % buckets;
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

/* Where the recipient addr goes (its destination, the key of the domain
 * queues and of max_connections_per_domain): its domain, or with relayhost
 * the relay host, the one next hop of every recipient, so that a message's
 * recipients share one transaction whatever their domains. */
static bool dest_of(const struct scheduler *s, const char *addr, char *out, size_t len)
{
	if (!domain_of(addr, out, len))
		return false;
	if (s->r->cfg.relayhost[0] != '\0')
		snprintf(out, len, "%s", s->r->cfg.relayhost);
	return true;
}

/* ---- the due-time heap ---- */

static void heap_swap(struct scheduler *s, size_t a, size_t b)
{
	struct smsg *t = s->heap[a];

	s->heap[a] = s->heap[b];
	s->heap[b] = t;
	s->heap[a]->heap_i = a;
	s->heap[b]->heap_i = b;
}

static void heap_up(struct scheduler *s, size_t i)
{
	while (i > 0 && s->heap[(i - 1) / 2]->due_ms > s->heap[i]->due_ms) {
		heap_swap(s, i, (i - 1) / 2);
		i = (i - 1) / 2;
	}
}

static void heap_down(struct scheduler *s, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, min = i;

		if (l < s->heap_n && s->heap[l]->due_ms < s->heap[min]->due_ms)
			min = l;
		if (r < s->heap_n && s->heap[r]->due_ms < s->heap[min]->due_ms)
			min = r;
		if (min == i)
			return;
		heap_swap(s, i, min);
		i = min;
	}
}

static void heap_del(struct scheduler *s, struct smsg *m)
{
	size_t i = m->heap_i;

	if (i == NO_HEAP)
		return;
	m->heap_i = NO_HEAP;
	s->heap_n--;
	if (i == s->heap_n)
		return;
	s->heap[i] = s->heap[s->heap_n];
	s->heap[i]->heap_i = i;
	heap_up(s, i);
	heap_down(s, s->heap[i]->heap_i);
}

/* m is next due at due_ms (INT64_MAX: nothing to do until something changes). */
static void heap_set(struct scheduler *s, struct smsg *m, int64_t due_ms)
{
	if (due_ms == INT64_MAX) {
		heap_del(s, m);
		return;
	}
	if (m->heap_i == NO_HEAP) {
		if (s->heap_n == s->heap_cap) {
			size_t cap = s->heap_cap ? s->heap_cap * 2 : 256;
			struct smsg **h = realloc(s->heap, cap * sizeof(*h));

			if (h == NULL) {
				log_msg(LOG_LVL_ERROR, m->env.id,
					"scheduler: out of memory (retried at the next flush or restart)");
				return;
			}
			s->heap = h;
			s->heap_cap = cap;
		}
		m->due_ms = due_ms;
		m->heap_i = s->heap_n;
		s->heap[s->heap_n++] = m;
		heap_up(s, m->heap_i);
		return;
	}
	m->due_ms = due_ms;
	heap_up(s, m->heap_i);
	heap_down(s, m->heap_i);
}

/* The earliest next_try (ms) of a recipient that may be started. */
static int64_t msg_due(const struct smsg *m)
{
	int64_t due = INT64_MAX;
	size_t i;

	for (i = 0; i < m->env.nrcpts; i++) {
		const struct queue_rcpt *q = &m->env.rcpts[i];

		if (!is_final(q->status) && !m->inflight[i] && q->next_try * 1000 < due)
			due = q->next_try * 1000;
	}
	return due;
}

/* ---- domains and their waiting messages ---- */

static struct sdomain *dom_find(struct scheduler *s, const char *name, bool create)
{
	size_t b = hash_str(name, DOM_BUCKETS);
	struct sdomain *d;

	for (d = s->doms[b]; d != NULL; d = d->hnext)
		if (strcmp(d->name, name) == 0)
			return d;
	if (!create)
		return NULL;
	d = calloc(1, sizeof(*d));
	if (d == NULL)
		return NULL;
	snprintf(d->name, sizeof(d->name), "%s", name);
	d->hnext = s->doms[b];
	s->doms[b] = d;
	return d;
}

/* Frees an entry nobody uses: no delivery, no waiter, not on the ready list. */
static void dom_maybe_free(struct scheduler *s, struct sdomain *d)
{
	struct sdomain **pp;

	if (d->active > 0 || d->wq_head != NULL || d->ready || d->pinned)
		return;
	for (pp = &s->doms[hash_str(d->name, DOM_BUCKETS)]; *pp != NULL; pp = &(*pp)->hnext) {
		if (*pp == d) {
			*pp = d->hnext;
			free(d);
			return;
		}
	}
}

static void ready_push(struct scheduler *s, struct sdomain *d)
{
	if (d->ready)
		return;
	d->ready = true;
	d->rnext = NULL;
	if (s->ready_tail)
		s->ready_tail->rnext = d;
	else
		s->ready_head = d;
	s->ready_tail = d;
}

static struct sdomain *ready_pop(struct scheduler *s)
{
	struct sdomain *d = s->ready_head;

	if (d == NULL)
		return NULL;
	s->ready_head = d->rnext;
	if (s->ready_head == NULL)
		s->ready_tail = NULL;
	d->ready = false;
	return d;
}

/* Unlinks w from its domain and its message and frees it. */
static void wait_unlink(struct swait *w)
{
	struct sdomain *d = w->dom;
	struct swait **pp;

	if (w->dprev)
		w->dprev->dnext = w->dnext;
	else
		d->wq_head = w->dnext;
	if (w->dnext)
		w->dnext->dprev = w->dprev;
	else
		d->wq_tail = w->dprev;
	for (pp = &w->m->waits; *pp != NULL; pp = &(*pp)->mnext) {
		if (*pp == w) {
			*pp = w->mnext;
			break;
		}
	}
	free(w);
}

static struct swait *wait_of(struct smsg *m, struct sdomain *d)
{
	struct swait *w;

	for (w = m->waits; w != NULL; w = w->mnext)
		if (w->dom == d)
			return w;
	return NULL;
}

/* m has due recipients in full domain d: queue it (once) for a free slot. */
static int wait_add(struct smsg *m, struct sdomain *d)
{
	struct swait *w;

	if (wait_of(m, d) != NULL)
		return 0;
	w = calloc(1, sizeof(*w));
	if (w == NULL)
		return -1;
	w->m = m;
	w->dom = d;
	w->dprev = d->wq_tail;
	if (d->wq_tail)
		d->wq_tail->dnext = w;
	else
		d->wq_head = w;
	d->wq_tail = w;
	w->mnext = m->waits;
	m->waits = w;
	return 0;
}

static void wait_clear(struct scheduler *s, struct smsg *m)
{
	while (m->waits != NULL) {
		struct sdomain *d = m->waits->dom;

		wait_unlink(m->waits);
		dom_maybe_free(s, d);
	}
}

static void dom_release(struct scheduler *s, struct sdomain *d)
{
	d->active--;
	if (d->wq_head != NULL)
		ready_push(s, d);
	else
		dom_maybe_free(s, d);
}

/* ---- messages ---- */

static struct smsg *find(struct scheduler *s, const char *id)
{
	struct smsg *m;

	for (m = s->by_id[hash_str(id, MSG_BUCKETS)]; m != NULL; m = m->hnext)
		if (strcmp(m->env.id, id) == 0)
			return m;
	return NULL;
}

static void rlogs_free(struct rlog *l)
{
	while (l != NULL) {
		struct rlog *n = l->next;

		free(l);
		l = n;
	}
}

static void msg_free(struct smsg *m)
{
	while (m->waits != NULL)
		wait_unlink(m->waits);
	rlogs_free(m->logs);
	rlogs_free(m->io_logs);
	queue_envelope_clear(&m->env);
	free(m->inflight);
	free(m);
}

/* Takes m out of every index (list, id hash, heap, domain queues). */
static void msg_unlink(struct scheduler *s, struct smsg *m)
{
	struct smsg **pp;

	if (m->prev)
		m->prev->next = m->next;
	else
		s->msgs = m->next;
	if (m->next)
		m->next->prev = m->prev;
	m->prev = m->next = NULL;
	for (pp = &s->by_id[hash_str(m->env.id, MSG_BUCKETS)]; *pp != NULL; pp = &(*pp)->hnext) {
		if (*pp == m) {
			*pp = m->hnext;
			break;
		}
	}
	heap_del(s, m);
	wait_clear(s, m);
	s->nmsgs--;
}

/* Milliseconds since the message arrived (Postfix delay=). */
static int64_t delay_ms(const struct smsg *m)
{
	int64_t ms = clock_now_ms() - m->env.queued_at * 1000;

	return ms < 0 ? 0 : ms;
}


/* The per-recipient line; written once the state it reports is durable
 * (see flush_logs). */
static void log_rcpt(struct smsg *m, const char *addr, const char *relay, unsigned conn_use,
		     const char *dsn, const char *tls, const char *sts,
		     enum smtp_tls_result sts_result, bool dane, const char *status,
		     const char *text)
{
	struct rlog *l = malloc(sizeof(*l));

	if (l == NULL) {
		log_msg(LOG_LVL_ERROR, m->env.id, "out of memory: no log line for <%s> (%s)", addr,
			status);
		return;
	}
	l->next = NULL;
	snprintf(l->to, sizeof(l->to), "%s", addr);
	snprintf(l->relay, sizeof(l->relay), "%s", relay ? relay : "none");
	l->conn_use = conn_use;
	l->delay_ms = delay_ms(m);
	snprintf(l->dsn, sizeof(l->dsn), "%s", dsn);
	snprintf(l->tls, sizeof(l->tls), "%s", tls);
	snprintf(l->sts, sizeof(l->sts), "%s", sts);
	l->sts_result = sts_result;
	l->dane = dane;
	snprintf(l->status, sizeof(l->status), "%s", status);
	snprintf(l->reason, sizeof(l->reason), "%s", text);
	*m->logs_tail = l;
	m->logs_tail = &l->next;
}

/* Postfix's order and spelling up to status= (pflogsumm reads exactly
 * "to=<>, relay=, [conn_use=, ]delay=, [delays=, ]dsn=, status="), then
 * stsrelay's own fields. The smtp program name, as Postfix's delivery agent. */
static void flush_logs(const struct smsg *m, struct rlog *l)
{
	for (; l != NULL; l = l->next) {
		metrics_delivery(l->status, l->delay_ms);
		log_fields_c(LOG_C_SMTP, LOG_LVL_INFO, m->env.id, LF_ADDR("to", l->to),
			     LF_STR("relay", l->relay),
			     LF_INT_OPT("conn_use", l->conn_use > 1 ? l->conn_use : 0),
			     LF_MS("delay", l->delay_ms), LF_STR("dsn", l->dsn),
			     LF_STATUS(l->status, l->reason), LF_STR("tls", l->tls),
			     LF_STR("sts", l->sts), LF_STR("dane", l->dane ? "yes" : "no"),
			     LF_STR("sts_result", l->sts_result != SMTP_TLS_RESULT_SUCCESS
							  ? smtp_tls_result_name(l->sts_result)
							  : NULL),
			     LF_END);
	}
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

/* The DSN is queued and durable: it is scheduled like any message. */
static void on_bounce_queued(void *arg, int rc, const char *new_id)
{
	struct scheduler *s = arg;

	if (rc == 1 && !s->stop_done_called)
		scheduler_add_loaded(s, new_id);
	maybe_finish_stop(s);
}

/* Submits the DSN, then the state save: the DSN is committed in the thread
 * pool, batched with the saves, and durable before the save (statesave.h).
 * May free m: the caller must not touch m afterwards. */
static void settle(struct scheduler *s, struct smsg *m, struct bounce_list *bl)
{
	if (bl->n > 0) {
		if (!bounce_wanted(&m->env)) {
			log_msg(LOG_LVL_INFO, m->env.id, "no bounce for %s",
				m->env.sender[0] ? "a message flagged no-bounce" : "a null sender");
		} else {
			fix_pointers(bl);
			if (statesave_bounce(s->ss, s->r->cfg.hostname, &m->env, bl->r, bl->n,
					     on_bounce_queued, s) != 0)
				log_msg(LOG_LVL_ERROR, m->env.id,
					"cannot queue a bounce: out of memory");
		}
	}
	persist(s, m);
}

/* The status a lifetime bounce reports: the MTA-STS reasons and the 8BITMIME
 * one keep theirs (5.7.5 / 5.4.8 / 5.6.3 once the DSN makes them
 * permanent), else 4.4.7 -> 5.4.7. */
static const char *expiry_status(const char *last)
{
	/* 4.6.3: no MX offered 8BITMIME for an 8-bit message (RFC 3463
	 * "conversion required but not supported"), 5.6.3 in the DSN. */
	if (strcmp(last, "4.7.5") == 0 || strcmp(last, "4.4.8") == 0 || strcmp(last, "4.6.3") == 0)
		return last;
	return "4.4.7";
}


/* ---- persistence (relay/daemon/statesave.h) ---- */

static bool io_deleted(const struct smsg *m)
{
	return m->io >= IO_DELETE_NEXT;
}

/* Whether the life cycle has the step from -> to (see enum msg_io). */
static bool io_step_exists(enum msg_io from, enum msg_io to)
{
	switch (from) {
	case IO_IDLE:
		return to == IO_SAVING || to == IO_REMOVING || to == IO_DELETED;
	case IO_SAVING:
		return to == IO_IDLE || to == IO_SAVING_DIRTY || to == IO_DELETE_NEXT;
	case IO_SAVING_DIRTY:
	case IO_REMOVING:
		return to == IO_IDLE || to == IO_DELETE_NEXT;
	case IO_DELETE_NEXT:
		return to == IO_DELETING || to == IO_DELETED;
	case IO_DELETING:
		return to == IO_DELETED;
	case IO_DELETED:
		break;
	}
	return false;
}

/* The only writer of m->io. A step the life cycle lacks is a bug: the
 * test build stops at it, the daemon says so and goes on. */
static void io_enter(struct smsg *m, enum msg_io to)
{
	if (!io_step_exists(m->io, to)) {
		log_msg(LOG_LVL_ERROR, m->env.id, "scheduler bug: I/O step %d -> %d", (int)m->io,
			(int)to);
		assert(!"a step the I/O life cycle lacks");
	}
	m->io = to;
}

static void maybe_free_deleted(struct scheduler *s, struct smsg *m)
{
	if (m->io != IO_DELETED || m->busy > 0)
		return;
	flush_logs(m, m->logs);
	msg_free(m);
	maybe_finish_stop(s);
}

static void io_start(struct scheduler *s, struct smsg *m, bool force_save);

static void on_io_done(void *arg, int status, int err_no)
{
	struct smsg *m = arg;
	struct scheduler *s = m->s;
	struct rlog *logs = m->io_logs;

	m->io_logs = NULL;
	switch (m->io) {
	case IO_DELETE_NEXT:
		/* deleted by the administrator while a save ran: now the files go */
		flush_logs(m, logs);
		rlogs_free(logs);
		io_enter(m, IO_DELETING);
		if (statesave_remove(s->ss, m->env.id, on_io_done, m) != 0) {
			if (s->qb.ops->remove(s->qb.q, m->env.id) != 0)
				log_msg(LOG_LVL_ERROR, m->env.id, "delete failed");
			io_enter(m, IO_DELETED);
		}
		maybe_free_deleted(s, m);
		return;
	case IO_DELETING:
		if (status != 0 && err_no != ENOENT)
			log_msg(LOG_LVL_ERROR, m->env.id, "delete failed: %s", strerror(err_no));
		flush_logs(m, logs);
		rlogs_free(logs);
		io_enter(m, IO_DELETED);
		maybe_free_deleted(s, m);
		return;
	case IO_REMOVING:
		flush_logs(m, logs);
		rlogs_free(logs);
		if (status != 0) {
			log_msg(LOG_LVL_ERROR, m->env.id, "cannot remove the finished message: %s",
				strerror(err_no));
			io_enter(m, IO_IDLE);
			io_start(s, m, true);
			return;
		}
		log_msg(LOG_LVL_INFO, m->env.id, "removed");
		msg_unlink(s, m);
		msg_free(m);
		maybe_finish_stop(s);
		return;
	case IO_SAVING:
	case IO_SAVING_DIRTY:
		if (status != 0)
			log_msg(LOG_LVL_ERROR, m->env.id,
				"cannot save recipient states (a restart repeats this attempt): %s",
				strerror(err_no));
		flush_logs(m, logs);
		rlogs_free(logs);
		if (m->io == IO_SAVING_DIRTY) {
			io_enter(m, IO_IDLE);
			io_start(s, m, false); /* may free m */
			return;
		}
		io_enter(m, IO_IDLE);
		maybe_finish_stop(s);
		return;
	case IO_IDLE:
	case IO_DELETED:
		break; /* nothing was in flight */
	}
	assert(!"on_io_done without I/O in flight");
}

/* IDLE: submits the save of m's states, or, when every recipient is final
 * and no delivery runs, the removal of m (force_save: a removal has just
 * failed, save instead). May free m (only when the thread pool is out of
 * memory and the removal is done right here). */
static void io_start(struct scheduler *s, struct smsg *m, bool force_save)
{
	bool remove = m->busy == 0 && all_final(m) && !force_save;
	int rc;

	m->io_logs = m->logs;
	m->logs = NULL;
	m->logs_tail = &m->logs;
	io_enter(m, remove ? IO_REMOVING : IO_SAVING);
	if (remove)
		rc = statesave_remove(s->ss, m->env.id, on_io_done, m);
	else
		rc = statesave_save(s->ss, &m->env, on_io_done, m);
	if (rc == 0)
		return;
	/* Out of memory for the request: do it here, on the loop, as before. */
	errno = 0;
	if (remove)
		rc = s->qb.ops->remove(s->qb.q, m->env.id);
	else
		rc = s->qb.ops->save_state(s->qb.q, &m->env);
	on_io_done(m, rc, rc != 0 ? errno : 0);
}

/* m's recipient states changed in memory: make the disk follow. */
static void persist(struct scheduler *s, struct smsg *m)
{
	switch (m->io) {
	case IO_IDLE:
		io_start(s, m, false);
		return;
	case IO_SAVING:
		io_enter(m, IO_SAVING_DIRTY); /* the next save after this one covers it */
		return;
	case IO_SAVING_DIRTY:
	case IO_REMOVING: /* done well: nothing left to save; failed: it saves */
	case IO_DELETE_NEXT:
	case IO_DELETING:
	case IO_DELETED:
		return;
	}
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
		log_rcpt(m, q->address, NULL, 0, "5.0.0", "none", "absent", SMTP_TLS_RESULT_SUCCESS,
			 false, "bounced", "bounced by the administrator");
		add_bounce(bl, q, "5.0.0", "bounced by the administrator", NULL, NULL);
	}
}

static void apply_result(struct scheduler *s, struct smsg *m, const struct delivery_result *res,
			 struct bounce_list *bl)
{
	const struct config *cfg = &s->r->cfg;
	int64_t now = clock_now();
	uint64_t lifetime = cfg->queue_lifetime_s;
	int64_t expires;
	size_t i;

	/* RFC 8460 §5.5: report mail is retried for up to 24 hours, then
	 * dropped (QUEUE_F_NOBOUNCE: no bounce for it). */
	if ((m->env.flags & QUEUE_F_TLSRPT) && lifetime > TLSRPT_MAIL_LIFETIME_S)
		lifetime = TLSRPT_MAIL_LIFETIME_S;
	expires = m->env.queued_at + (int64_t)lifetime;

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
			break; /* no verdict: state and attempts as they were */
		case DELIVERY_SENT:
			q->status = QUEUE_SENT;
			q->last_try = now;
			q->last_error[0] = '\0';
			log_rcpt(m, q->address, dr->relay, dr->conn_use, dr->dsn, dr->tls, res->sts,
				 dr->sts_result, dr->dane, "sent", dr->text);
			break;
		case DELIVERY_BOUNCE:
			q->status = QUEUE_BOUNCED;
			q->last_try = now;
			q->attempts++;
			set_last_error(q, dr->dsn, dr->text);
			log_rcpt(m, q->address, dr->relay, dr->conn_use, dr->dsn, dr->tls, res->sts,
				 dr->sts_result, dr->dane, "bounced", dr->text);
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
				if (m->env.flags & QUEUE_F_TLSRPT)
					snprintf(reason, sizeof(reason),
						 "TLS-RPT report mail dropped after 24 hours "
						 "(RFC 8460); last error: %s",
						 dr->text);
				else
					snprintf(reason, sizeof(reason),
						 "delivery time expired; last error: %s", dr->text);
				q->status = QUEUE_BOUNCED;
				log_rcpt(m, q->address, dr->relay, dr->conn_use, dsn5, dr->tls,
					 res->sts, dr->sts_result, dr->dane, "bounced", reason);
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
				log_rcpt(m, q->address, dr->relay, dr->conn_use, dr->dsn, dr->tls,
					 res->sts, dr->sts_result, dr->dane, "deferred", dr->text);
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
	struct sdomain *dom = j->dom;
	struct bounce_list bl = { 0 };
	size_t i;

	job_unlink(s, j);
	s->running--;
	free(j);
	m->busy--;
	for (i = 0; i < res->nrcpts; i++)
		if (res->rcpts[i].index < m->env.nrcpts)
			m->inflight[res->rcpts[i].index] = 0;

	if (io_deleted(m)) {
		maybe_free_deleted(s, m); /* already unlinked and removed from the spool */
	} else {
		apply_result(s, m, res, &bl);
		if (m->admin_bounce && m->busy == 0)
			bounce_admin(m, &bl);
		if (!s->stopping)
			heap_set(s, m, msg_due(m));
		settle(s, m, &bl); /* may free m */
	}
	bl_free(&bl);
	dom_release(s, dom);
	if (s->stopping) {
		maybe_finish_stop(s);
		return;
	}
	arm(s);
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
	if (s->dv->start(s->dc, &m->env, dom->name, idx, n, on_delivery_done, j, &j->d) != 0) {
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

/* A recipient no delivery can take: bounce it alone, without a delivery,
 * before it joins its domain's batch (so it never fails the others). */
static void bounce_undeliverable(struct smsg *m, size_t i, const char *dsn, const char *text,
				 struct bounce_list *bl)
{
	struct queue_rcpt *q = &m->env.rcpts[i];

	q->status = QUEUE_BOUNCED;
	q->last_try = clock_now();
	set_last_error(q, dsn, text);
	log_rcpt(m, q->address, NULL, 0, dsn, "none", "absent", SMTP_TLS_RESULT_SUCCESS, false,
		 "bounced", text);
	add_bounce(bl, q, dsn, text, NULL, NULL);
}

/* Why recipient q can never go out because of its address or the
 * sender's, as a bounce reason and status in text/dsn; false when it can.
 * The client refuses what smtp_address_sendable() refuses (the listener and
 * sendmail refuse it at submission; an older queue file may still hold
 * one). */
static bool unsendable(const struct smsg *m, const struct queue_rcpt *q, char *text, size_t len,
		       const char **dsn)
{
	const char *why;

	if (!smtp_address_sendable(m->env.sender, true, &why)) {
		*dsn = "5.1.7";
		snprintf(text, len, "bad sender address syntax: %s", why);
		return true;
	}
	if (!smtp_address_sendable(q->address, false, &why)) {
		*dsn = "5.1.3";
		snprintf(text, len, "bad address syntax: %s", why);
		return true;
	}
	return false;
}

/* Starts what is due in m; recipients whose domain is full make m wait in
 * that domain's queue. Re-files m in the heap at its earliest future due
 * time. May free m (through settle). */
static void run_message(struct scheduler *s, struct smsg *m, int64_t now_ms)
{
	size_t *idx = NULL, n, i, k;
	unsigned char *taken = NULL;
	int64_t earliest = INT64_MAX;
	unsigned maxc = max_conn(s);
	struct bounce_list bl = { 0 };
	char dom[DNS_NAME_MAX + 1], dom2[DNS_NAME_MAX + 1], why[QUEUE_ERROR_MAX];
	const char *dsn;

	idx = malloc(m->env.nrcpts * sizeof(*idx));
	taken = calloc(m->env.nrcpts, 1);
	if (idx == NULL || taken == NULL) {
		free(idx);
		free(taken);
		heap_set(s, m, now_ms + 1000); /* try again in a second */
		return;
	}
	for (i = 0; i < m->env.nrcpts; i++) {
		struct queue_rcpt *q = &m->env.rcpts[i];
		struct sdomain *sd;
		struct swait *w;

		if (taken[i] || is_final(q->status) || m->inflight[i])
			continue;
		if (q->next_try * 1000 > now_ms) {
			if (q->next_try * 1000 < earliest)
				earliest = q->next_try * 1000;
			continue;
		}
		if (unsendable(m, q, why, sizeof(why), &dsn)) {
			bounce_undeliverable(m, i, dsn, why, &bl);
			continue;
		}
		if (!dest_of(s, q->address, dom, sizeof(dom))) {
			bounce_undeliverable(m, i, "5.1.3", "bad address syntax: no domain", &bl);
			continue;
		}
		/* every due recipient of this destination goes into one transaction;
		 * one that cannot go out waits for its own bounce above */
		n = 0;
		for (k = i; k < m->env.nrcpts && n < SMTP_CLIENT_MAX_RCPTS; k++) {
			struct queue_rcpt *q2 = &m->env.rcpts[k];

			if (taken[k] || is_final(q2->status) || m->inflight[k] ||
			    q2->next_try * 1000 > now_ms)
				continue;
			if (!dest_of(s, q2->address, dom2, sizeof(dom2)) ||
			    strcmp(dom, dom2) != 0 ||
			    !smtp_address_sendable(q2->address, false, NULL))
				continue;
			taken[k] = 1;
			idx[n++] = k;
		}
		sd = dom_find(s, dom, true);
		if (sd == NULL) {
			earliest = now_ms + 1000 < earliest ? now_ms + 1000 : earliest;
			continue;
		}
		if (sd->active >= maxc) {
			/* a finished delivery of sd makes it ready: we are then run again */
			if (wait_add(m, sd) != 0 && now_ms + 1000 < earliest)
				earliest = now_ms + 1000;
			continue;
		}
		w = wait_of(m, sd);
		if (w != NULL)
			wait_unlink(w);
		if (start_job(s, m, sd, idx, n) != 0) {
			log_msg(LOG_LVL_ERROR, m->env.id, "cannot start a delivery to %s; retrying",
				dom);
			dom_maybe_free(s, sd);
			if (now_ms + 5000 < earliest)
				earliest = now_ms + 5000;
		}
	}
	free(idx);
	free(taken);
	heap_set(s, m, earliest);
	if (bl.n > 0)
		settle(s, m, &bl); /* may free m */
	bl_free(&bl);
}

static void on_timer(uv_timer_t *t)
{
	struct scheduler *s = t->data;
	int64_t now_ms = clock_now_ms();
	unsigned budget = PASS_BUDGET;
	struct sdomain *d;

	if (s->stopping)
		return;
	s->in_pass = true;
	/* Free slots first: their waiters have been due for a while. */
	while (budget > 0 && (d = ready_pop(s)) != NULL) {
		unsigned maxc = max_conn(s);

		d->pinned = true;
		while (budget > 0 && d->active < maxc && d->wq_head != NULL) {
			struct smsg *m = d->wq_head->m;

			wait_unlink(d->wq_head);
			budget--;
			run_message(s, m, now_ms);
		}
		d->pinned = false;
		if (d->wq_head != NULL && d->active < maxc)
			ready_push(s, d); /* out of budget: next pass */
		dom_maybe_free(s, d);
	}
	while (budget > 0 && s->heap_n > 0 && s->heap[0]->due_ms <= now_ms) {
		budget--;
		run_message(s, s->heap[0], now_ms);
	}
	s->in_pass = false;
	arm(s);
}

/* (Re)arms the timer for the next pass: at once when a domain has a free
 * slot for a waiter, else at the earliest due time. */
static void arm(struct scheduler *s)
{
	int64_t wait;

	if (s->stopping || s->in_pass)
		return;
	if (s->ready_head != NULL) {
		wait = 0;
	} else if (s->heap_n > 0) {
		wait = s->heap[0]->due_ms - clock_now_ms();
		if (wait < 0)
			wait = 0;
	} else {
		uv_timer_stop(&s->timer);
		return;
	}
	uv_timer_start(&s->timer, on_timer, (uint64_t)wait, 0);
}

/* ---- the deliveries of relay/daemon/delivery.h ---- */

static int smtp_ctx_new(struct relay *r, void *arg, void **ctx, char *err, size_t errlen)
{
	struct delivery_ctx *dc = NULL;

	if (delivery_ctx_new(r, &dc, err, errlen) != 0)
		return -1;
	*ctx = dc;
	return 0;
}

static int smtp_start(void *ctx, const struct queue_envelope *env, const char *domain,
		      const size_t *idx, size_t n, delivery_done_cb done, void *arg, void **handle)
{
	struct delivery *d = NULL;
	int rc = delivery_start(ctx, env, domain, idx, n, done, arg, &d);

	*handle = d;
	return rc;
}

static void smtp_abort(void *handle)
{
	delivery_abort(handle);
}

static void smtp_close_idle(void *ctx)
{
	delivery_ctx_close_idle(ctx);
}

static void smtp_ctx_free(void *ctx)
{
	delivery_ctx_free(ctx);
}

const struct scheduler_delivery scheduler_delivery_smtp = {
	.ctx_new = smtp_ctx_new,
	.start = smtp_start,
	.abort = smtp_abort,
	.close_idle = smtp_close_idle,
	.ctx_free = smtp_ctx_free,
};

static void dv_free(struct scheduler *s)
{
	if (s->dc != NULL)
		s->dv->ctx_free(s->dc);
	s->dc = NULL;
}

/* ---- public ---- */

static int load_message(struct scheduler *s, const char *id)
{
	struct smsg *m = calloc(1, sizeof(*m));
	char err[256];
	size_t b;

	if (m == NULL)
		return -1;
	m->s = s;
	m->heap_i = NO_HEAP;
	m->logs_tail = &m->logs;
	if (s->qb.ops->load(s->qb.q, id, &m->env, err, sizeof(err)) != 0) {
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
	b = hash_str(m->env.id, MSG_BUCKETS);
	m->hnext = s->by_id[b];
	s->by_id[b] = m;
	s->nmsgs++;
	heap_set(s, m, msg_due(m));
	/* Every recipient final but still queued (a crash between the last
	 * save and the removal): finish the removal. */
	if (m->env.nrcpts > 0 && all_final(m))
		persist(s, m);
	return 0;
}

static void scheduler_add_loaded(struct scheduler *s, const char *id)
{
	if (find(s, id) != NULL)
		return;
	if (load_message(s, id) != 0)
		log_msg(LOG_LVL_ERROR, id, "scheduler: out of memory (message stays queued)");
	arm(s);
}

int scheduler_new(struct relay *r, struct scheduler **out)
{
	struct queue_backend qb = queue_backend_spool(r->queue);

	return scheduler_new_with(r, &qb, &scheduler_delivery_smtp, NULL, out);
}

int scheduler_new_with(struct relay *r, const struct queue_backend *qb,
		       const struct scheduler_delivery *dv, void *dv_arg, struct scheduler **out)
{
	struct scheduler *s = calloc(1, sizeof(*s));
	char(*ids)[QUEUE_ID_LEN + 1] = NULL;
	char err[512];
	size_t n = 0, i;
	int ntimers = 0; /* handles made: they must go through uv_close */

	if (s == NULL)
		return -1;
	s->r = r;
	s->qb = *qb;
	s->dv = dv;
	s->by_id = calloc(MSG_BUCKETS, sizeof(*s->by_id));
	s->doms = calloc(DOM_BUCKETS, sizeof(*s->doms));
	if (s->by_id == NULL || s->doms == NULL) {
		free(s->by_id);
		free(s->doms);
		free(s);
		return -1;
	}
	if (statesave_new_backend(r->loop, &s->qb, &s->ss) != 0) {
		log_error("scheduler: cannot set up state saving");
		free(s->by_id);
		free(s->doms);
		free(s);
		return -1;
	}
	s->timer.data = s;
	s->stop_timer.data = s;
	if (uv_timer_init(r->loop, &s->timer) != 0) {
		log_error("scheduler: cannot make a timer");
		goto fail;
	}
	ntimers++;
	if (uv_timer_init(r->loop, &s->stop_timer) != 0) {
		log_error("scheduler: cannot make a timer");
		goto fail;
	}
	ntimers++;
	if (dv->ctx_new(r, dv_arg, &s->dc, err, sizeof(err)) != 0) {
		log_error("scheduler: %s", err);
		goto fail;
	}
	if (s->qb.ops->scan(s->qb.q, &ids, &n) != 0) {
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
	arm(s);
	*out = s;
	return 0;
fail:
	free(ids);
	/* Nothing runs yet (queued removals are dropped with the handle);
	 * close what we opened, the caller runs the loop. */
	s->stopping = true;
	if (ntimers > 0)
		uv_close((uv_handle_t *)&s->timer, NULL);
	if (ntimers > 1)
		uv_close((uv_handle_t *)&s->stop_timer, NULL);
	dv_free(s);
	statesave_close(s->ss);
	s->ss = NULL;
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

static void flush_one(struct scheduler *s, struct smsg *m)
{
	size_t i;

	for (i = 0; i < m->env.nrcpts; i++)
		if (!is_final(m->env.rcpts[i].status))
			m->env.rcpts[i].next_try = 0;
	heap_set(s, m, msg_due(m));
}

void scheduler_clock_moved(struct scheduler *s)
{
	arm(s);
}

bool scheduler_knows(struct scheduler *s, const char *id)
{
	return find(s, id) != NULL;
}

int scheduler_flush(struct scheduler *s, const char *id)
{
	struct smsg *m;

	if (id != NULL) {
		m = find(s, id);
		if (m == NULL)
			return -1;
		flush_one(s, m);
	} else {
		for (m = s->msgs; m != NULL; m = m->next)
			flush_one(s, m);
	}
	log_msg(LOG_LVL_INFO, id, "flush requested");
	arm(s);
	return 0;
}

static void abort_jobs_of(struct scheduler *s, struct smsg *m)
{
	struct job *j;

	for (j = s->jobs; j != NULL; j = j->next)
		if (m == NULL || j->m == m)
			s->dv->abort(j->d);
}

int scheduler_delete(struct scheduler *s, const char *id)
{
	struct smsg *m = find(s, id);

	if (m == NULL)
		return -1;
	if (m->io != IO_IDLE) {
		/* A save of this id is running: the removal follows it (the two
		 * must not race, see statesave.h). */
		io_enter(m, IO_DELETE_NEXT);
	} else if (s->qb.ops->remove(s->qb.q, id) != 0) {
		log_msg(LOG_LVL_ERROR, id, "delete failed");
		return -1;
	} else {
		io_enter(m, IO_DELETED);
	}
	log_msg(LOG_LVL_INFO, id, "removed (deleted by the administrator)");
	msg_unlink(s, m);
	if (m->busy > 0) {
		/* An in-flight delivery still points at m: it is freed when the
		 * last one reports back (the open file keeps its data readable). */
		abort_jobs_of(s, m);
		return 0;
	}
	maybe_free_deleted(s, m);
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
		abort_jobs_of(s, m); /* on_delivery_done finishes the bounce */
		return 0;
	}
	bounce_admin(m, &bl);
	heap_set(s, m, msg_due(m));
	settle(s, m, &bl); /* may free m */
	bl_free(&bl);
	arm(s);
	return 0;
}

static void on_stop_timer(uv_timer_t *t)
{
	struct scheduler *s = t->data;

	log_info("scheduler: %u deliveries still running after %d s: aborting them", s->running,
		 STOP_GRACE_MS / 1000);
	abort_jobs_of(s, NULL);
}

/* Stopping ends once no delivery runs and every state save has returned. */
static void maybe_finish_stop(struct scheduler *s)
{
	if (s->stopping && s->running == 0 && s->ss != NULL && statesave_busy(s->ss) == 0)
		finish_stop(s);
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
	dv_free(s);
	statesave_close(s->ss);
	s->ss = NULL;
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
	s->dv->close_idle(s->dc); /* idle SMTP connections say QUIT now */
	if (s->running == 0 && statesave_busy(s->ss) == 0) {
		finish_stop(s);
		return;
	}
	log_info("scheduler: waiting for %u deliveries and %zu state saves (at most %d s)",
		 s->running, statesave_busy(s->ss), STOP_GRACE_MS / 1000);
	uv_timer_start(&s->stop_timer, on_stop_timer, STOP_GRACE_MS, 0);
}

void scheduler_free(struct scheduler *s)
{
	struct smsg *m, *next;
	size_t b;

	if (s == NULL)
		return;
	for (m = s->msgs; m != NULL; m = next) {
		next = m->next;
		msg_free(m);
	}
	for (b = 0; s->doms != NULL && b < DOM_BUCKETS; b++) {
		struct sdomain *d, *dn;

		for (d = s->doms[b]; d != NULL; d = dn) {
			dn = d->hnext;
			free(d);
		}
	}
	free(s->doms);
	free(s->by_id);
	free(s->heap);
	free(s);
}

void scheduler_counts(const struct scheduler *s, size_t *messages, size_t *pending,
		      size_t *deferred)
{
	const struct smsg *m;
	size_t i;

	*messages = *pending = *deferred = 0;
	for (m = s->msgs; m != NULL; m = m->next) {
		(*messages)++;
		for (i = 0; i < m->env.nrcpts; i++) {
			if (m->env.rcpts[i].status == QUEUE_PENDING)
				(*pending)++;
			else if (m->env.rcpts[i].status == QUEUE_DEFERRED)
				(*deferred)++;
		}
	}
}
