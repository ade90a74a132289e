/* Recipient-state persistence off the loop: a uv_prepare_t collects the DSNs,
 * saves and removals of one loop turn and hands them to one thread-pool job,
 * which syncs queue/ once after the DSNs and once after the rest. */
#define LOG_COMPONENT LOG_C_QMGR /* program name in logs, see relay/core/log.h */
#include "relay/daemon/statesave.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/core/log.h"
#include "relay/daemon/bounce.h"

enum ss_kind { SS_SAVE, SS_REMOVE, SS_BOUNCE };

struct ss_item {
	struct ss_item *next;
	enum ss_kind kind;
	/* SS_SAVE: id + a private copy of rcpts; SS_BOUNCE: the header
	 * fields, no rcpts; SS_REMOVE: id */
	struct queue_envelope env;
	statesave_done_cb done;
	void *arg;
	int status; /* SS_BOUNCE: bounce_enqueue's 1, 0 or -1 */
	int err_no;
	/* SS_BOUNCE */
	statesave_bounce_cb bounce_done;
	struct smtp_dsn_rcpt *dsn; /* n entries, their strings in `strings` */
	size_t ndsn;
	char *strings;
	char *hostname;
	char new_id[QUEUE_ID_LEN + 1];
};

struct statesave {
	uv_loop_t *loop;
	struct queue_backend qb;
	uv_prepare_t prepare;
	uv_work_t work;
	struct ss_item *pending, **pending_tail;
	struct ss_item *batch; /* owned by the worker while in_flight */
	size_t npending, nbatch;
	bool in_flight;
	bool prepare_active;
};

int statesave_new(uv_loop_t *loop, struct queue *q, struct statesave **out)
{
	struct queue_backend qb = queue_backend_spool(q);

	return statesave_new_backend(loop, &qb, out);
}

int statesave_new_backend(uv_loop_t *loop, const struct queue_backend *qb, struct statesave **out)
{
	struct statesave *ss = calloc(1, sizeof(*ss));

	if (ss == NULL)
		return -1;
	ss->loop = loop;
	ss->qb = *qb;
	ss->pending_tail = &ss->pending;
	if (uv_prepare_init(loop, &ss->prepare) != 0) {
		free(ss);
		return -1;
	}
	ss->prepare.data = ss;
	*out = ss;
	return 0;
}

static void item_free(struct ss_item *it)
{
	free(it->env.rcpts); /* our own copy, see statesave_save */
	free(it->dsn);
	free(it->strings);
	free(it->hostname);
	free(it);
}

/* The batch's DSNs, committed without a directory sync; then one sync for
 * all, so they are durable before any save of the batch runs. */
static void bounces_first(struct statesave *ss)
{
	struct ss_item *it;
	bool any = false;

	for (it = ss->batch; it != NULL; it = it->next) {
		if (it->kind != SS_BOUNCE)
			continue;
		it->status = bounce_enqueue_nodirsync(&ss->qb, it->hostname, &it->env, it->dsn,
						      it->ndsn, it->new_id);
		any = any || it->status == 1;
	}
	if (!any)
		return;
	errno = 0;
	if (ss->qb.ops->sync(ss->qb.q) != 0)
		/* renamed, so in the queue and will go out: as queue_writer_commit_sync
		 * says, only durability is in doubt */
		log_error("statesave: queue directory sync after the DSNs failed (%s): their "
			  "durability is in doubt",
			  strerror(errno != 0 ? errno : EIO));
}

/* Worker thread: each save or removal touches only the files of its id (the
 * scheduler never gives us one id twice); then ONE fsync of queue/ covers
 * every rename and unlink of the batch, before after_work_cb reports any of
 * them. Same durability as queue_save_state/queue_remove, one directory
 * fsync per batch instead of one per request. */
static void work_cb(uv_work_t *req)
{
	struct statesave *ss = req->data;
	struct ss_item *it;
	bool any = false;
	int e;

	bounces_first(ss);
	for (it = ss->batch; it != NULL; it = it->next) {
		if (it->kind == SS_BOUNCE)
			continue;
		errno = 0;
		if (it->kind == SS_SAVE)
			it->status = ss->qb.ops->save_state_nodirsync(ss->qb.q, &it->env);
		else
			it->status = ss->qb.ops->remove_nodirsync(ss->qb.q, it->env.id);
		it->err_no = it->status != 0 ? errno : 0;
		any = true;
	}
	if (!any)
		return;
	/* Unconditional: even a failed request may have changed queue/ (a
	 * removal that found the message gone still unlinks its state). */
	errno = 0;
	if (ss->qb.ops->sync(ss->qb.q) == 0)
		return;
	e = errno != 0 ? errno : EIO;
	/* Renamed or unlinked, but not durable: report failure, as
	 * queue_save_state and queue_remove do when their fsync fails. */
	for (it = ss->batch; it != NULL; it = it->next) {
		if (it->kind == SS_BOUNCE || it->status != 0)
			continue;
		it->status = -1;
		it->err_no = e;
	}
}

static void start_batch(struct statesave *ss);

static void after_work_cb(uv_work_t *req, int status)
{
	struct statesave *ss = req->data;
	struct ss_item *it = ss->batch, *next;

	ss->batch = NULL;
	ss->nbatch = 0;
	ss->in_flight = false;
	for (; it != NULL; it = next) {
		next = it->next;
		if (status != 0) { /* UV_ECANCELED: never ran */
			it->status = -1;
			it->err_no = ECANCELED;
		}
		if (it->kind == SS_BOUNCE)
			it->bounce_done(it->arg, it->status, it->new_id);
		else
			it->done(it->arg, it->status, it->err_no);
		item_free(it);
	}
	if (ss->pending != NULL && !ss->prepare_active)
		start_batch(ss);
}

static void prepare_cb(uv_prepare_t *h)
{
	struct statesave *ss = h->data;
	int rc;

	if (ss->in_flight || ss->pending == NULL)
		return;
	ss->batch = ss->pending;
	ss->nbatch = ss->npending;
	ss->pending = NULL;
	ss->pending_tail = &ss->pending;
	ss->npending = 0;
	ss->in_flight = true;
	uv_prepare_stop(&ss->prepare);
	ss->prepare_active = false;
	ss->work.data = ss;
	rc = uv_queue_work(ss->loop, &ss->work, work_cb, after_work_cb);
	if (rc != 0) {
		log_error("statesave: uv_queue_work: %s", uv_strerror(rc));
		after_work_cb(&ss->work, rc);
	}
}

static void start_batch(struct statesave *ss)
{
	if (uv_prepare_start(&ss->prepare, prepare_cb) == 0)
		ss->prepare_active = true;
}

static int submit(struct statesave *ss, struct ss_item *it, statesave_done_cb done, void *arg)
{
	it->done = done;
	it->arg = arg;
	*ss->pending_tail = it;
	ss->pending_tail = &it->next;
	ss->npending++;
	if (!ss->in_flight && !ss->prepare_active)
		start_batch(ss);
	return 0;
}

int statesave_save(struct statesave *ss, const struct queue_envelope *env, statesave_done_cb done,
		   void *arg)
{
	struct ss_item *it = calloc(1, sizeof(*it));

	if (it == NULL)
		return -1;
	it->kind = SS_SAVE;
	memcpy(it->env.id, env->id, sizeof(it->env.id));
	if (env->nrcpts > 0) {
		it->env.rcpts = malloc(env->nrcpts * sizeof(*it->env.rcpts));
		if (it->env.rcpts == NULL) {
			free(it);
			return -1;
		}
		memcpy(it->env.rcpts, env->rcpts, env->nrcpts * sizeof(*it->env.rcpts));
	}
	it->env.nrcpts = env->nrcpts;
	return submit(ss, it, done, arg);
}

int statesave_remove(struct statesave *ss, const char *id, statesave_done_cb done, void *arg)
{
	struct ss_item *it = calloc(1, sizeof(*it));

	if (it == NULL)
		return -1;
	it->kind = SS_REMOVE;
	snprintf(it->env.id, sizeof(it->env.id), "%s", id);
	return submit(ss, it, done, arg);
}

/* Length of s with its NUL, 0 for NULL. */
static size_t str_size(const char *s)
{
	return s != NULL ? strlen(s) + 1 : 0;
}

/* Copies s into *at (advanced), or NULL. */
static const char *str_put(char **at, const char *s)
{
	char *p = *at;
	size_t n = str_size(s);

	if (s == NULL)
		return NULL;
	memcpy(p, s, n);
	*at += n;
	return p;
}

int statesave_bounce(struct statesave *ss, const char *hostname, const struct queue_envelope *env,
		     const struct smtp_dsn_rcpt *rcpts, size_t n, statesave_bounce_cb done,
		     void *arg)
{
	struct ss_item *it = calloc(1, sizeof(*it));
	size_t i, total = 1;
	char *at;

	if (it == NULL)
		return -1;
	it->kind = SS_BOUNCE;
	it->env = *env;
	it->env.rcpts = NULL; /* the DSN needs the header fields only */
	it->env.nrcpts = 0;
	for (i = 0; i < n; i++)
		total += str_size(rcpts[i].address) + str_size(rcpts[i].status) +
			 str_size(rcpts[i].remote_mta) + str_size(rcpts[i].diagnostic) +
			 str_size(rcpts[i].reason);
	it->dsn = calloc(n > 0 ? n : 1, sizeof(*it->dsn));
	it->strings = malloc(total);
	it->hostname = strdup(hostname);
	if (it->dsn == NULL || it->strings == NULL || it->hostname == NULL) {
		item_free(it);
		return -1;
	}
	at = it->strings;
	for (i = 0; i < n; i++) {
		it->dsn[i] = rcpts[i];
		it->dsn[i].address = str_put(&at, rcpts[i].address);
		it->dsn[i].status = str_put(&at, rcpts[i].status);
		it->dsn[i].remote_mta = str_put(&at, rcpts[i].remote_mta);
		it->dsn[i].diagnostic = str_put(&at, rcpts[i].diagnostic);
		it->dsn[i].reason = str_put(&at, rcpts[i].reason);
	}
	it->ndsn = n;
	it->bounce_done = done;
	return submit(ss, it, NULL, arg);
}

size_t statesave_busy(const struct statesave *ss)
{
	return ss->npending + ss->nbatch;
}

static void close_cb(uv_handle_t *h)
{
	free(h->data);
}

void statesave_close(struct statesave *ss)
{
	struct ss_item *it, *next;

	/* Only a failed start leaves requests here; they never ran. */
	for (it = ss->pending; it != NULL; it = next) {
		next = it->next;
		item_free(it);
	}
	ss->pending = NULL;
	ss->npending = 0;
	uv_close((uv_handle_t *)&ss->prepare, close_cb);
}
