/* Group commit (Redis beforeSleep style): a uv_prepare_t collects every
 * message finished in this loop turn and hands the batch to one thread-pool
 * job that fsyncs and renames each file, then fsyncs queue/ once. */
#define LOG_COMPONENT LOG_C_SMTPD /* program name in logs, see relay/core/log.h */
#include "relay/daemon/commit.h"
#include "relay/core/log.h"
#include "relay/core/metrics.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct commit_item {
	struct commit_item *next;
	struct queue_writer *w;
	commit_done_cb done;
	void *arg;
	int status;
	int err_no;
	uint64_t submitted_ns; /* uv_hrtime() at submit: accept_seconds */
};

struct commit {
	uv_loop_t *loop;
	struct queue *q;
	uv_prepare_t prepare;
	uv_work_t work;
	struct commit_item *pending, **pending_tail;
	struct commit_item *batch; /* owned by the worker while in_flight */
	size_t npending, nbatch;
	int in_flight;
	int prepare_active;
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
	struct commit *c = req->data;
	struct commit_item *it;
	int any = 0, e;

	/* all of the batch's data on its way first: the fsyncs below then
	 * overlap instead of each waiting for its own writeback (disk_limit in
	 * tests/bench measures the difference) */
	if (c->batch != NULL && c->batch->next != NULL)
		for (it = c->batch; it != NULL; it = it->next)
			queue_writer_start_writeback(it->w);
	for (it = c->batch; it != NULL; it = it->next) {
		errno = 0;
		it->status = queue_writer_commit(it->w);
		it->err_no = it->status != 0 ? errno : 0;
		if (it->status == 0)
			any = 1;
	}
	if (!any)
		return;
	errno = 0;
	if (queue_sync_queue_dir(c->q) == 0)
		return;
	e = errno != 0 ? errno : EIO;
	/* Renamed but not durable: nobody gets a 250, so the file must not
	 * stay either (it would be delivered after a 4xx: a duplicate). One
	 * that cannot be taken out will be delivered, so it gets its 250. */
	for (it = c->batch; it != NULL; it = it->next) {
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
	struct commit *c = req->data;
	struct commit_item *it = c->batch, *next;

	c->batch = NULL;
	c->nbatch = 0;
	c->in_flight = 0;
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

static void prepare_cb(uv_prepare_t *h)
{
	struct commit *c = h->data;
	int rc;

	if (c->in_flight || c->pending == NULL)
		return;
	c->batch = c->pending;
	c->nbatch = c->npending;
	c->pending = NULL;
	c->pending_tail = &c->pending;
	c->npending = 0;
	c->in_flight = 1;
	uv_prepare_stop(&c->prepare);
	c->prepare_active = 0;
	c->work.data = c;
	log_debug("commit: batch of %zu message(s)", c->nbatch);
	rc = uv_queue_work(c->loop, &c->work, work_cb, after_work_cb);
	if (rc != 0) {
		/* cannot happen for a valid loop; fail the batch rather than hang */
		log_error("commit: uv_queue_work: %s", uv_strerror(rc));
		after_work_cb(&c->work, rc);
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
	if (!c->in_flight && !c->prepare_active)
		start_batch(c);
	return 0;
}

size_t commit_busy(const struct commit *c)
{
	return c->npending + c->nbatch;
}

static void close_cb(uv_handle_t *h)
{
	free(h->data);
}

void commit_close(struct commit *c)
{
	uv_close((uv_handle_t *)&c->prepare, close_cb);
}
