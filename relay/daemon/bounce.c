/* Bounces: reads the original header section, composes the RFC 3464 report
 * and commits it to the spool as a new null-sender message. */
#define LOG_COMPONENT LOG_C_QMGR /* program name in logs, see relay/core/log.h */
#include "relay/daemon/bounce.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/core/clock.h"
#include "relay/core/log.h"

int bounce_wanted(const struct queue_envelope *env)
{
	return env->sender[0] != '\0' && !(env->flags & QUEUE_F_NOBOUNCE);
}

/* The original header section (at most SMTP_DSN_HEADERS_MAX bytes). */
static char *read_headers(const struct queue_backend *qb, const struct queue_envelope *env,
			  size_t *len)
{
	size_t cap = env->size < SMTP_DSN_HEADERS_MAX ? (size_t)env->size : SMTP_DSN_HEADERS_MAX;
	ssize_t got;
	char *buf;

	*len = 0;
	buf = malloc(cap + 1);
	if (buf == NULL)
		return NULL;
	got = qb->ops->read_data(qb->q, env, buf, cap);
	if (got < 0) {
		free(buf);
		return NULL;
	}
	*len = smtp_dsn_header_len(buf, (size_t)got);
	buf[*len] = '\0';
	return buf;
}

int bounce_enqueue(struct queue *q, const char *hostname, const struct queue_envelope *env,
		   const struct smtp_dsn_rcpt *rcpts, size_t n, char new_id[QUEUE_ID_LEN + 1])
{
	struct queue_backend qb = queue_backend_spool(q);

	return bounce_enqueue_backend(&qb, hostname, env, rcpts, n, new_id);
}

static int enqueue(const struct queue_backend *qb, const char *hostname,
		   const struct queue_envelope *env, const struct smtp_dsn_rcpt *rcpts, size_t n,
		   char new_id[QUEUE_ID_LEN + 1], bool dirsync)
{
	struct smtp_dsn dsn;
	struct queue_envelope benv;
	const char *err = NULL;
	char *hdrs = NULL, *msg = NULL;
	size_t hlen = 0, mlen = 0;
	int rc = -1;

	if (!bounce_wanted(env))
		return 0;
	memset(&benv, 0, sizeof(benv));
	hdrs = read_headers(qb, env, &hlen); /* NULL: a report without the headers */

	memset(&dsn, 0, sizeof(dsn));
	dsn.kind = SMTP_DSN_FAILURE;
	dsn.reporting_mta = hostname;
	dsn.sender = env->sender;
	dsn.queue_id = env->id;
	dsn.arrival = env->queued_at;
	dsn.now = clock_now();
	dsn.rcpts = rcpts;
	dsn.nrcpts = n;
	dsn.headers = hdrs;
	dsn.headers_len = hlen;
	if (smtp_dsn_compose(&dsn, &msg, &mlen, &err) != 0) {
		log_msg(LOG_LVL_ERROR, env->id, "cannot compose a bounce: %s", err ? err : "?");
		goto out;
	}

	benv.queued_at = dsn.now;
	benv.flags = QUEUE_F_NOBOUNCE; /* sender "" too: no bounce about a bounce */
	if (queue_envelope_add_rcpt(&benv, env->sender) != 0) {
		log_msg(LOG_LVL_ERROR, env->id, "cannot bounce to <%s>: address unstorable",
			env->sender);
		goto out;
	}
	if ((dirsync ? qb->ops->add : qb->ops->add_nodirsync)(qb->q, &benv, msg, mlen, new_id) !=
	    0) {
		log_msg(LOG_LVL_ERROR, env->id, "cannot queue a bounce: %s", strerror(errno));
		goto out;
	}
	log_msg(LOG_LVL_INFO, env->id, "sender non-delivery notification: %s", new_id);
	/* as Postfix's qmgr logs a bounce it queues: its size for pflogsumm */
	log_fields(LOG_LVL_INFO, new_id, LF_ADDR("from", ""), LF_INT("size", mlen),
		   LF_INT("nrcpt", 1), LF_NOTE("queue active"), LF_END);
	rc = 1;
out:
	queue_envelope_clear(&benv);
	free(msg);
	free(hdrs);
	return rc;
}

int bounce_enqueue_backend(const struct queue_backend *qb, const char *hostname,
			   const struct queue_envelope *env, const struct smtp_dsn_rcpt *rcpts,
			   size_t n, char new_id[QUEUE_ID_LEN + 1])
{
	return enqueue(qb, hostname, env, rcpts, n, new_id, true);
}

int bounce_enqueue_nodirsync(const struct queue_backend *qb, const char *hostname,
			     const struct queue_envelope *env, const struct smtp_dsn_rcpt *rcpts,
			     size_t n, char new_id[QUEUE_ID_LEN + 1])
{
	return enqueue(qb, hostname, env, rcpts, n, new_id, false);
}
