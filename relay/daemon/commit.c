/* Message files off the loop: new ones made ahead by a thread-pool job, and
 * group commit (Redis beforeSleep style): a uv_prepare_t collects every
 * message finished in this loop turn and hands the batch to one thread-pool
 * job that fsyncs and names each file, then fsyncs queue/ once. */
#define LOG_COMPONENT LOG_C_SMTPD /* program name in logs, see relay/core/log.h */
#include "relay/daemon/commit.h"
#include "relay/core/log.h"
#include "relay/core/metrics.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define SPARE_WRITERS 8 /* made ahead while nobody waits */
#define MAKE_MAX 64     /* files one job makes at most, and most kept ready */

struct commit_item {
	struct commit_item *next;
	struct queue_writer *w;
	commit_done_cb done;
	void *arg;
	int status;
	int err_no;
	uint64_t submitted_ns; /* uv_hrtime() at submit: accept_seconds */
};

#ifndef COMMIT_JOBS
#define COMMIT_JOBS 2
#endif

struct commit;

/* One group commit job: its items are the worker's while busy. */
struct commit_batch {
	uv_work_t work;
	struct commit *c;
	struct commit_item *items;
	size_t n;
	int busy;
};

struct commit {
	uv_loop_t *loop;
	struct queue *q;
	uv_prepare_t prepare;
	struct commit_item *pending, **pending_tail;
	struct commit_batch jobs[COMMIT_JOBS];
	size_t npending, nbatch; /* nbatch: items in the busy jobs */
	int in_flight;           /* busy jobs */
	int prepare_active;

	/* new writers: made by the `make` job, handed out from ready[] */
	uv_work_t make;
	struct queue_writer *ready[MAKE_MAX];
	size_t nready;
	struct queue_writer *made[MAKE_MAX]; /* the job's, while making */
	size_t nwant, nmade;
	int make_err;
	int making;
	struct commit_wait *waiting, **waiting_tail;
	size_t nwaiting;
	int closed; /* commit_close ran */
	int prepare_closed;
};

int commit_new(uv_loop_t *loop, struct queue *q, struct commit **out)
{
	struct commit *c = calloc(1, sizeof(*c));
	int rc;

	if (c == NULL)
		return -1;
	c->loop = loop;
	c->q = q;
	c->pending_tail = &c->pending;
	c->waiting_tail = &c->waiting;
	rc = uv_prepare_init(loop, &c->prepare);
	if (rc != 0) {
		free(c);
		return -1;
	}
	c->prepare.data = c;
	*out = c;
	return 0;
}

/* Worker thread: touches only the writers of this batch and the queue
 * directory fsync, both documented as safe off the loop thread. Applies the
 * commit rule of queue/queue.h to the batch: status 0 exactly for the
 * messages that are in queue/ when the 250 or 4xx is decided. */
static void work_cb(uv_work_t *req)
{
	struct commit_batch *b = req->data;
	struct commit_item *it;
	int any = 0, e;

	/* all of the batch's data on its way first: the fsyncs below then
	 * overlap instead of each waiting for its own writeback (disk_limit in
	 * tests/bench measures the difference) */
	if (b->items != NULL && b->items->next != NULL)
		for (it = b->items; it != NULL; it = it->next)
			queue_writer_start_writeback(it->w);
	for (it = b->items; it != NULL; it = it->next) {
		errno = 0;
		it->status = queue_writer_commit(it->w);
		it->err_no = it->status != 0 ? errno : 0;
		if (it->status == 0)
			any = 1;
	}
	if (!any)
		return;
	errno = 0;
	if (queue_sync_queue_dir(b->c->q) == 0)
		return;
	e = errno != 0 ? errno : EIO;
	/* Renamed but not durable: nobody gets a 250, so the file must not
	 * stay either (it would be delivered after a 4xx: a duplicate). One
	 * that cannot be taken out will be delivered, so it gets its 250. */
	for (it = b->items; it != NULL; it = it->next) {
		if (it->status != 0)
			continue;
		if (queue_writer_withdraw(it->w) != 0) {
			log_msg(LOG_LVL_ERROR, queue_writer_id(it->w),
				"commit: queue fsync failed (%s) and the message cannot be taken "
				"back (%s): accepted, durability in doubt",
				strerror(e), strerror(errno));
			continue;
		}
		it->status = -1;
		it->err_no = e;
	}
}

static void start_batch(struct commit *c);

static void after_work_cb(uv_work_t *req, int status)
{
	struct commit_batch *b = req->data;
	struct commit *c = b->c;
	struct commit_item *it = b->items, *next;

	b->items = NULL;
	c->nbatch -= b->n;
	b->n = 0;
	b->busy = 0;
	c->in_flight--;
	for (; it != NULL; it = next) {
		next = it->next;
		if (status != 0) { /* UV_ECANCELED: never ran */
			it->status = -1;
			it->err_no = 0;
		}
		/* the end of DATA (submit) to the 250 that done sends */
		if (it->status == 0)
			metrics_observe(METRICS_ACCEPT_SECONDS,
					(double)(uv_hrtime() - it->submitted_ns) / 1e9);
		it->done(it->arg, it->status, it->err_no);
		free(it);
	}
	/* Items that arrived while this batch ran wait for the prepare hook of
	 * the next turn; make sure it is armed. */
	if (c->pending != NULL && !c->prepare_active)
		start_batch(c);
}

/* Up to COMMIT_JOBS batches are in flight at once: a device that serves
 * several writes at a time then has the next batch's fsyncs while the
 * first waits (tests/bench measures it). */
static void prepare_cb(uv_prepare_t *h)
{
	struct commit *c = h->data;
	struct commit_batch *b = NULL;
	int i, rc;

	if (c->pending == NULL) {
		/* nothing this turn: commit_submit arms the hook again */
		uv_prepare_stop(&c->prepare);
		c->prepare_active = 0;
		return;
	}
	for (i = 0; i < COMMIT_JOBS && b == NULL; i++)
		if (!c->jobs[i].busy)
			b = &c->jobs[i];
	if (b == NULL)
		return; /* cannot happen: the hook is stopped while all are busy */
	b->items = c->pending;
	b->n = c->npending;
	b->busy = 1;
	b->c = c;
	c->nbatch += b->n;
	c->pending = NULL;
	c->pending_tail = &c->pending;
	c->npending = 0;
	if (++c->in_flight == COMMIT_JOBS) {
		uv_prepare_stop(&c->prepare);
		c->prepare_active = 0;
	}
	b->work.data = b;
	log_debug("commit: batch of %zu message(s)", b->n);
	rc = uv_queue_work(c->loop, &b->work, work_cb, after_work_cb);
	if (rc != 0) {
		/* cannot happen for a valid loop; fail the batch rather than hang */
		log_error("commit: uv_queue_work: %s", uv_strerror(rc));
		after_work_cb(&b->work, rc);
	}
}

static void start_batch(struct commit *c)
{
	if (uv_prepare_start(&c->prepare, prepare_cb) == 0)
		c->prepare_active = 1;
}

int commit_submit(struct commit *c, struct queue_writer *w, commit_done_cb done, void *arg)
{
	struct commit_item *it = calloc(1, sizeof(*it));

	if (it == NULL)
		return -1;
	it->w = w;
	it->submitted_ns = uv_hrtime();
	it->done = done;
	it->arg = arg;
	*c->pending_tail = it;
	c->pending_tail = &it->next;
	c->npending++;
	if (c->in_flight < COMMIT_JOBS && !c->prepare_active)
		start_batch(c);
	return 0;
}

size_t commit_busy(const struct commit *c)
{
	return c->npending + c->nbatch;
}

/* ---- new writers ---- */

static void maybe_make(struct commit *c);

/* Worker thread: makes c->nwant files; queue_writer_new() touches only the
 * queue's directory descriptors, which no one changes while c lives. */
static void make_work_cb(uv_work_t *req)
{
	struct commit *c = req->data;
	size_t i;

	c->make_err = 0;
	for (i = 0; i < c->nwant; i++) {
		errno = 0;
		if (queue_writer_new(c->q, false, &c->made[i]) != 0) {
			c->make_err = errno != 0 ? errno : EIO;
			break;
		}
	}
	c->nmade = i;
}

static void free_if_done(struct commit *c)
{
	size_t i;

	if (!c->prepare_closed || c->making)
		return;
	for (i = 0; i < c->nready; i++)
		queue_writer_free(c->ready[i]);
	free(c);
}

/* Takes wt (NULL: the first waiter) out of the waiting list; NULL if it
 * is not there. */
static struct commit_wait *unwait(struct commit *c, struct commit_wait *wt)
{
	struct commit_wait **pp;

	for (pp = &c->waiting; *pp != NULL; pp = &(*pp)->next) {
		if (wt != NULL && *pp != wt)
			continue;
		wt = *pp;
		*pp = wt->next;
		if (*pp == NULL)
			c->waiting_tail = pp;
		c->nwaiting--;
		wt->next = NULL;
		return wt;
	}
	return NULL;
}

static void after_make_cb(uv_work_t *req, int status)
{
	struct commit *c = req->data;
	struct commit_wait *wt;
	size_t i = 0;
	int err = status != 0 ? EIO : c->make_err;

	c->making = 0;
	if (status != 0)
		c->nmade = 0;
	/* waiters first, in arrival order; the rest are spares */
	while (i < c->nmade && !c->closed && (wt = unwait(c, NULL)) != NULL)
		wt->ready(wt, c->made[i++], 0);
	for (; i < c->nmade; i++)
		c->ready[c->nready++] = c->made[i];
	c->nmade = 0;
	if (c->closed) {
		free_if_done(c);
		return;
	}
	if (err != 0 && c->waiting != NULL) {
		/* nothing could be made for them: each says so to its client */
		log_error("commit: cannot create a queue file: %s", strerror(err));
		while ((wt = unwait(c, NULL)) != NULL)
			wt->ready(wt, NULL, err);
		return; /* the next take starts a new job */
	}
	if (err == 0)
		maybe_make(c);
}

/* Starts a job when fewer writers are ready than the waiters plus the
 * spares, one job at a time. */
static void maybe_make(struct commit *c)
{
	size_t target = c->nwaiting + SPARE_WRITERS;
	int rc;

	if (c->making || c->closed)
		return;
	if (target > MAKE_MAX)
		target = MAKE_MAX;
	if (c->nready >= target)
		return;
	c->nwant = target - c->nready;
	c->making = 1;
	c->make.data = c;
	rc = uv_queue_work(c->loop, &c->make, make_work_cb, after_make_cb);
	if (rc != 0) {
		/* cannot happen for a valid loop: fail the waiters, not hang */
		c->make_err = EIO;
		c->nmade = 0;
		log_error("commit: uv_queue_work: %s", uv_strerror(rc));
		after_make_cb(&c->make, rc);
	}
}

int commit_take_writer(struct commit *c, struct commit_wait *wt, struct queue_writer **out)
{
	*out = NULL;
	if (c->nready > 0) {
		*out = c->ready[--c->nready];
		maybe_make(c);
		return 0;
	}
	wt->next = NULL;
	*c->waiting_tail = wt;
	c->waiting_tail = &wt->next;
	c->nwaiting++;
	maybe_make(c);
	return 1;
}

void commit_cancel_wait(struct commit *c, struct commit_wait *wt)
{
	(void)unwait(c, wt);
}

static void close_cb(uv_handle_t *h)
{
	struct commit *c = h->data;

	c->prepare_closed = 1;
	free_if_done(c);
}

void commit_close(struct commit *c)
{
	c->closed = 1;
	uv_close((uv_handle_t *)&c->prepare, close_cb);
}
