/* Pickup of local submissions: maildrop/ is watched with uv_fs_event and
 * rescanned every few seconds (inotify can miss events, e.g. on overflow);
 * each complete drop file is validated and moved into the queue. */
#include "relay/pickup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue/queue.h"
#include "relay/log.h"
#include "relay/scheduler.h"

struct pickup {
	struct relay *r;
	uv_fs_event_t watch;
	uv_timer_t rescan;        /* periodic safety net */
	uv_timer_t soon;          /* coalesces event bursts into one scan */
	int watch_open;
	int nopen;                /* handles not yet closed */
	int closing;
};

static void scan(struct pickup *p)
{
	char(*ids)[QUEUE_ID_LEN + 1] = NULL;
	size_t n = 0, i;
	struct relay *r = p->r;

	if (queue_drop_scan(r->queue, &ids, &n) != 0) {
		log_error("pickup: cannot scan maildrop");
		return;
	}
	/* Imports fsync on the loop thread; drop files are rare, so a bounded
	 * batch per turn keeps the loop responsive without a worker. */
	for (i = 0; i < n && i < PICKUP_BATCH; i++) {
		char newid[QUEUE_ID_LEN + 1], err[512];
		struct queue_envelope env;
		char from[QUEUE_ADDR_MAX + 2], size[24], nrcpt[40];

		if (queue_drop_import(r->queue, ids[i], r->cfg.max_message_size, newid, err,
				      sizeof(err)) != 0) {
			log_msg(LOG_LVL_WARNING, ids[i], "pickup: rejected drop file: %s", err);
			continue;
		}
		memset(&env, 0, sizeof(env));
		if (queue_load(r->queue, newid, &env, err, sizeof(err)) == 0) {
			snprintf(from, sizeof(from), "<%s>", env.sender);
			snprintf(size, sizeof(size), "%llu", (unsigned long long)env.size);
			snprintf(nrcpt, sizeof(nrcpt), "%zu (queue active)", env.nrcpts);
			log_event(LOG_LVL_INFO, newid, "uid", env.submitter[0] ? env.submitter : NULL,
				  "from", from, "size", size, "nrcpt", nrcpt, NULL);
			queue_envelope_clear(&env);
		} else {
			log_msg(LOG_LVL_INFO, newid, "picked up from maildrop (%s)", err);
		}
		scheduler_add(r->sched, newid);
	}
	if (n > PICKUP_BATCH)
		pickup_wake(p);
	free(ids);
}

static void on_soon(uv_timer_t *t)
{
	scan(t->data);
}

static void on_rescan(uv_timer_t *t)
{
	scan(t->data);
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
	if (p->closing)
		return;
	/* a short delay lets a burst of rename events become one scan */
	uv_timer_start(&p->soon, on_soon, 20, 0);
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
	uv_timer_start(&p->rescan, on_rescan, PICKUP_RESCAN_MS, PICKUP_RESCAN_MS);
	pickup_wake(p);
	*out = p;
	return 0;
}

static void on_closed(uv_handle_t *h)
{
	struct pickup *p = h->data;

	if (--p->nopen == 0)
		free(p);
}

void pickup_close(struct pickup *p)
{
	int n = p->nopen;

	p->closing = 1;
	/* count first: on_closed may free p once the last handle closes */
	if (n >= 1)
		uv_close((uv_handle_t *)&p->rescan, on_closed);
	if (n >= 2)
		uv_close((uv_handle_t *)&p->soon, on_closed);
	if (n >= 3 && p->watch_open)
		uv_close((uv_handle_t *)&p->watch, on_closed);
}
