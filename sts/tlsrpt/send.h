/* Sending one UTC day's TLS-RPT reports: for every domain with sessions that
 * day, discover `_smtp._tls`, build and gzip the report, and deliver it to each rua. */
#ifndef STSRELAY_TLSRPT_SEND_H
#define STSRELAY_TLSRPT_SEND_H

#include <uv.h>

#include "queue/queue.h"
#include "relay/core/config.h"
#include "relay/net/dns.h"
#include "sts/tlsrpt/dkim.h"
#include "relay/net/http.h"

/* Everything a job uses; all owned by the caller and alive until the job's
 * callback has run. */
struct tlsrpt_job_env {
	uv_loop_t *loop;
	const struct config *cfg;
	struct queue *queue; /* report mail is written here */
	struct dns *dns;
	struct http_client *http;
	const struct dkim_key *dkim; /* NULL: no report mail (mailto: ruas skipped) */
	/* Called for each report message committed to the queue (the daemon
	 * hands it to its scheduler); may be NULL. */
	void (*enqueued)(void *arg, const char *queue_id);
	void *enqueued_arg;
};

struct tlsrpt_job_result {
	unsigned domains;   /* policy domains with sessions that day */
	unsigned no_record; /* ... without a usable _smtp._tls record */
	unsigned sent;      /* rua copies delivered now (queued / HTTP 2xx) */
	unsigned already;   /* rua copies the ledger says were sent before */
	unsigned failed;    /* rua copies (or lookups) that failed: retry later */
	unsigned skipped;   /* mailto: copies not made: no DKIM key (RFC 8460 §3) */
	bool cancelled;
};

typedef void (*tlsrpt_job_cb)(void *arg, const struct tlsrpt_job_result *res);

struct tlsrpt_job;

/* Starts sending day ("YYYY-MM-DD"). Domains are handled one after another,
 * each rua once: a (domain, day, rua) already in the sent ledger is skipped,
 * a delivered one is added to it (fdatasync'd) right after the queue commit
 * or the HTTP 2xx. Report mail must carry a DKIM signature of the reporting
 * domain (RFC 8460 §3): without env->dkim a mailto: rua is skipped (logged
 * as an error, listed by tlsrpt_skipped_foreach; not a failure to retry)
 * while https: ruas still get the report. Report mail is queued with the
 * contact address as envelope sender and QUEUE_F_NOBOUNCE | QUEUE_F_TLSRPT. A crash between those two steps can send that one copy
 * twice, never zero times. HTTPS uploads: POST, Content-Type
 * application/tlsrpt+gzip, any 2xx is success. A job does one attempt per
 * rua; retrying is the caller's (run the day again: sent copies are skipped).
 * cb runs exactly once, on the loop, never before this returns. 0 or -1. */
int tlsrpt_job_start(const struct tlsrpt_job_env *env, const char *day, tlsrpt_job_cb cb, void *arg,
		     struct tlsrpt_job **out);

/* Stops early: nothing new starts; cb still runs once (res->cancelled),
 * after the request in flight ends (free the dns / http client to end it
 * at once). The job frees itself after cb. */
void tlsrpt_job_cancel(struct tlsrpt_job *j);

#endif
