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

/* The fleet's ledger (sts/tlsrpt/fleet.h): which node sends a (day,
 * domain, rua). claim answers MINE (this node sends it now; release says
 * how it went), SENT (a node sent it), BUSY (another node is sending it:
 * try later) or ERROR (the ledger cannot be asked: try later). Contract as
 * elsewhere: claim returns 0 and calls cb exactly once, from the loop,
 * never before returning (unless cancelled), or -1 (cannot ask) and never
 * calls it. */
enum tlsrpt_claim { TLSRPT_CLAIM_MINE, TLSRPT_CLAIM_SENT, TLSRPT_CLAIM_BUSY, TLSRPT_CLAIM_ERROR };

typedef void (*tlsrpt_claim_cb)(void *arg, enum tlsrpt_claim c);

struct tlsrpt_ledger {
	void *ctx;
	int (*claim)(void *ctx, const char *day, const char *domain, const char *rua,
		     tlsrpt_claim_cb cb, void *arg, void **handle);
	void (*cancel)(void *ctx, void *handle);
	/* After MINE: sent (recorded for the fleet) or not (the claim is
	 * dropped so a retry, here or on another node, may send it). */
	void (*release)(void *ctx, const char *day, const char *domain, const char *rua, bool sent);
};

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
	/* A fleet: the day's data summed over every node (the job takes it
	 * over and frees it, also when tlsrpt_job_start fails; NULL: read
	 * this node's spool), and the fleet's
	 * ledger, asked after this node's own before each copy (NULL: this
	 * node's ledger alone). */
	struct tlsrpt_day *data;
	const struct tlsrpt_ledger *ledger;
};

struct tlsrpt_job_result {
	unsigned domains;   /* policy domains with sessions that day */
	unsigned no_record; /* ... without a usable _smtp._tls record */
	unsigned sent;      /* rua copies delivered now (queued / HTTP 2xx) */
	unsigned already;   /* rua copies the ledger says were sent before */
	unsigned failed;    /* rua copies (or lookups) that failed: retry later */
	unsigned skipped;   /* mailto: copies not made: no DKIM key (RFC 8460 §3) */
	unsigned elsewhere; /* a fleet: copies another node is sending now (look again) */
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
