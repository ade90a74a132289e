/* Pickup of local submissions: maildrop/ is watched with uv_fs_event and
 * rescanned every few seconds (inotify can miss events, e.g. on overflow);
 * scans and imports run in the thread pool, one job at a time, and their
 * results (log line, scheduling) are handled back on the loop. */
#define LOG_COMPONENT LOG_C_PICKUP /* program name in logs, see relay/core/log.h */
#include "relay/daemon/pickup.h"

#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "queue/queue.h"
#include "relay/core/log.h"
#include "relay/core/metrics.h"
#include "relay/daemon/scheduler.h"
#include "smtp/msgid.h"

#define PICKUP_MSGID_SCAN 1048576 /* header bytes read for the Message-ID at most */

typedef char pickup_qid[QUEUE_ID_LEN + 1];

enum pickup_job { JOB_SCAN, JOB_IMPORT };

/* What one import job found, for the loop to report. */
struct pickup_result {
	int status; /* queue_drop_import's */
	bool bad;   /* the file was set aside (EBADMSG) */
	pickup_qid new_id;
	char err[QUEUE_ERROR_MAX];
	bool loaded;                    /* the fields below are set */
	char msgid[SMTP_MSGID_MAX + 1]; /* "" if none */
	char from[QUEUE_ADDR_MAX];
	long long uid; /* the submitter's, -1 if unknown */
	uint64_t size;
	size_t nrcpt;
};

struct pickup {
	struct relay *r;
	uv_fs_event_t watch;
	uv_timer_t rescan; /* periodic safety net */
	uv_timer_t soon;   /* coalesces event bursts into one scan */
	int watch_open;
	int nopen; /* handles not yet closed */
	int closing;
	/* The one job: while busy, the worker owns the fields below (the loop
	 * reads them only in after_work, once the worker is done). */
	uv_work_t work;
	int busy;  /* a job is queued or running */
	int again; /* woken while busy: scan again afterwards */
	enum pickup_job job;
	uint64_t max_size; /* copied for the worker: a reload may change cfg */
	pickup_qid *ids;   /* the last scan, sorted */
	size_t n, next;    /* its length; the entry the import job takes */
	int scan_status, scan_errno;
	struct pickup_result res;
};

static void maybe_free(struct pickup *p)
{
	if (p->nopen > 0 || p->busy)
		return;
	free(p->ids);
	free(p);
}

/* ---- worker thread: touches only p's job fields and the spool ---- */

/* The uid for Postfix's "uid=" field: the import records the drop file's
 * owner by name (its uid in digits when it has no name). */
static long long submitter_uid(const char *name)
{
	struct passwd pw, *res = NULL;
	char buf[16384], *end;
	long long v;

	if (name[0] == '\0')
		return -1;
	if (getpwnam_r(name, &pw, buf, sizeof(buf), &res) == 0 && res != NULL)
		return (long long)res->pw_uid;
	errno = 0;
	v = strtoll(name, &end, 10);
	return errno == 0 && *end == '\0' && v >= 0 ? v : -1;
}

/* The Message-ID of a queued message, from the start of its data (the
 * header section; sendmail adds one when the submitter gave none). */
static void find_msgid(struct pickup *p, const struct queue_envelope *env, char *out, size_t outlen)
{
	struct smtp_msgid_scan scan;
	char buf[8192];
	size_t total = 0;
	ssize_t n;
	int fd = queue_open_data(p->r->queue, env);

	out[0] = '\0';
	if (fd < 0)
		return;
	smtp_msgid_init(&scan);
	while (!scan.done && total < PICKUP_MSGID_SCAN) {
		n = read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		smtp_msgid_feed(&scan, buf, (size_t)n);
		total += (size_t)n;
	}
	close(fd);
	if (smtp_msgid_value(&scan) != NULL)
		snprintf(out, outlen, "%s", smtp_msgid_value(&scan));
}

static void import_one(struct pickup *p)
{
	struct pickup_result *res = &p->res;
	struct queue_envelope env;
	char lerr[QUEUE_ERROR_MAX];

	memset(res, 0, sizeof(*res));
	res->status = queue_drop_import(p->r->queue, p->ids[p->next], p->max_size, res->new_id,
					res->err, sizeof(res->err));
	if (res->status != 0) {
		res->bad = errno == EBADMSG;
		return;
	}
	/* the fields of the "from=" line, read here since it is disk I/O too */
	if (queue_load(p->r->queue, res->new_id, &env, lerr, sizeof(lerr)) != 0) {
		snprintf(res->err, sizeof(res->err), "%s", lerr);
		return;
	}
	res->loaded = true;
	find_msgid(p, &env, res->msgid, sizeof(res->msgid));
	snprintf(res->from, sizeof(res->from), "%s", env.sender);
	res->uid = submitter_uid(env.submitter);
	res->size = env.size;
	res->nrcpt = env.nrcpts;
	queue_envelope_clear(&env);
}

static void work_cb(uv_work_t *req)
{
	struct pickup *p = req->data;

	if (p->job == JOB_IMPORT) {
		import_one(p);
		return;
	}
	free(p->ids);
	p->ids = NULL;
	p->n = 0;
	p->next = 0;
	p->scan_status = queue_drop_scan(p->r->queue, &p->ids, &p->n);
	p->scan_errno = p->scan_status != 0 ? errno : 0;
}

/* ---- loop thread ---- */

static void after_work_cb(uv_work_t *req, int status);

static void start_job(struct pickup *p, enum pickup_job job)
{
	int rc;

	p->job = job;
	p->max_size = p->r->cfg.max_message_size;
	p->work.data = p;
	p->busy = 1;
	rc = uv_queue_work(p->r->loop, &p->work, work_cb, after_work_cb);
	if (rc != 0) {
		/* cannot happen for a valid loop; the rescan timer tries again */
		log_error("pickup: uv_queue_work: %s", uv_strerror(rc));
		p->busy = 0;
	}
}

static void start_scan(struct pickup *p)
{
	if (p->closing)
		return;
	if (p->busy) {
		p->again = 1; /* the running job may have missed the new file */
		return;
	}
	p->again = 0;
	start_job(p, JOB_SCAN);
}

static void report_import(struct pickup *p)
{
	const struct pickup_result *res = &p->res;

	if (res->status != 0) {
		log_msg(LOG_LVL_WARNING, NULL, "%s %s",
			res->bad ? "rejected" : "cannot import now:", res->err);
		return;
	}
	if (res->loaded) {
		metrics_inc(METRICS_ACCEPTED, METRICS_SOURCE_SENDMAIL);
		/* Postfix's lines: pickup names the submitter, (cleanup) the
		 * Message-ID, qmgr the message */
		log_fields(LOG_LVL_INFO, res->new_id, LF_INT("uid", res->uid),
			   LF_ADDR("from", res->from), LF_END);
		if (res->msgid[0] != '\0')
			log_fields(LOG_LVL_INFO, res->new_id, LF_STR("message-id", res->msgid),
				   LF_END);
		log_fields_c(LOG_C_QMGR, LOG_LVL_INFO, res->new_id, LF_ADDR("from", res->from),
			     LF_INT("size", res->size), LF_INT("nrcpt", res->nrcpt),
			     LF_NOTE("queue active"), LF_END);
	} else
		log_msg(LOG_LVL_INFO, res->new_id, "picked up from maildrop (%s)", res->err);
	/* Stopping: the scheduler takes no more; the message is in queue/
	 * and the next start delivers it. */
	if (!p->closing)
		scheduler_add(p->r->sched, res->new_id);
}

static void after_work_cb(uv_work_t *req, int status)
{
	struct pickup *p = req->data;

	p->busy = 0;
	if (status == UV_ECANCELED) {
		/* never ran (only pickup_close cancels): the drop file, if any,
		 * stays for the next start */
		maybe_free(p);
		return;
	}
	if (p->job == JOB_SCAN && p->scan_status != 0)
		log_error("pickup: cannot scan maildrop: %s", strerror(p->scan_errno));
	if (p->job == JOB_IMPORT) {
		report_import(p);
		p->next++;
	}
	if (p->closing) {
		maybe_free(p);
		return;
	}
	/* One import per job, so each message is reported (and scheduled) as
	 * soon as it is safe; at most PICKUP_BATCH per scan, then a new scan. */
	if (p->scan_status == 0 && p->next < p->n && p->next < PICKUP_BATCH) {
		start_job(p, JOB_IMPORT);
		return;
	}
	if (p->again || (p->scan_status == 0 && p->n > PICKUP_BATCH))
		pickup_wake(p);
}

static void on_soon(uv_timer_t *t)
{
	start_scan(t->data);
}

static void on_rescan(uv_timer_t *t)
{
	start_scan(t->data);
}

static void on_event(uv_fs_event_t *h, const char *name, int events, int status)
{
	(void)name;
	(void)events;
	if (status != 0)
		log_warn("pickup: watch: %s (the periodic rescan still runs)", uv_strerror(status));
	pickup_wake(h->data);
}

void pickup_wake(struct pickup *p)
{
	int rc;

	if (p->closing)
		return;
	/* a short delay lets a burst of rename events become one scan */
	rc = uv_timer_start(&p->soon, on_soon, 20, 0);
	if (rc != 0)
		log_warn("pickup: timer: %s (the periodic rescan still runs)", uv_strerror(rc));
}

int pickup_start(struct relay *r, struct pickup **out)
{
	struct pickup *p = calloc(1, sizeof(*p));
	char dir[CONFIG_PATH_MAX + 16];
	int rc;

	if (p == NULL)
		return -1;
	p->r = r;
	if (uv_timer_init(r->loop, &p->rescan) != 0) {
		free(p);
		return -1;
	}
	p->nopen = 1;
	p->rescan.data = p;
	if (uv_timer_init(r->loop, &p->soon) != 0) {
		pickup_close(p);
		return -1;
	}
	p->nopen++;
	p->soon.data = p;
	if (uv_fs_event_init(r->loop, &p->watch) == 0) {
		p->nopen++;
		p->watch_open = 1;
		p->watch.data = p;
		snprintf(dir, sizeof(dir), "%s/maildrop", queue_spool_dir(r->queue));
		rc = uv_fs_event_start(&p->watch, on_event, dir, 0);
		if (rc != 0)
			log_warn("pickup: cannot watch %s: %s; rescanning every %d s", dir,
				 uv_strerror(rc), PICKUP_RESCAN_MS / 1000);
	}
	if (uv_timer_start(&p->rescan, on_rescan, PICKUP_RESCAN_MS, PICKUP_RESCAN_MS) != 0) {
		pickup_close(p);
		return -1;
	}
	pickup_wake(p);
	*out = p;
	return 0;
}

static void on_closed(uv_handle_t *h)
{
	struct pickup *p = h->data;

	p->nopen--;
	maybe_free(p);
}

void pickup_close(struct pickup *p)
{
	int n = p->nopen, rc;

	p->closing = 1;
	/* A job not yet started is cancelled; a running one (an import may copy
	 * a large file) is waited for: its after_work frees p if it is the last
	 * thing left, and the loop does not end before it. */
	if (p->busy) {
		rc = uv_cancel((uv_req_t *)&p->work);
		if (rc != 0 && rc != UV_EBUSY)
			log_warn("pickup: cannot cancel the pending job: %s", uv_strerror(rc));
	}
	/* count first: on_closed may free p once the last handle closes */
	if (n >= 1)
		uv_close((uv_handle_t *)&p->rescan, on_closed);
	if (n >= 2)
		uv_close((uv_handle_t *)&p->soon, on_closed);
	if (n >= 3 && p->watch_open)
		uv_close((uv_handle_t *)&p->watch, on_closed);
}
