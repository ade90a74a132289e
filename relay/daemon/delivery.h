/* One outbound delivery attempt: a message, one recipient domain and its due
 * recipients -> MTA-STS verdict, MX resolution, SMTP (+STARTTLS) per MX address. */
#ifndef STSRELAY_DELIVERY_H
#define STSRELAY_DELIVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "queue/queue.h"
#include "relay/net/dns.h"
#include "relay/daemon/relay.h"
#include "smtp/reply.h"
#include "smtp/tls.h"

/*
 * RFC 5321 §5.1 order: MX hosts by preference, each address of a host in
 * turn, until one host takes the transaction; a 4xx or 5xx greeting, a
 * refused/timed-out connection or a TLS failure moves on to the next
 * address/host. The per-recipient verdicts come back in one callback; the
 * caller (relay/daemon/scheduler.c) turns them into queue states, log lines and
 * bounces.
 *
 * TLS demands (DESIGN.md): MTA-STS `enforce` -> only MX hosts matching the
 * policy, STARTTLS required, verified certificate for the MX name, else that
 * MX is not used (one re-check of the policy when none passes); `testing` ->
 * the same checks, logged, delivery proceeds opportunistically; `none` or no
 * policy -> the domain's tls_policy_file level, else `tls_default`
 * (enforce only tightens a listed level). DANE (RFC 7672, `dane = on` or
 * level dane): before the first address of an MX host whose MX and address
 * records were DNSSEC-validated, its TLSA records are looked up; usable
 * ones decide that host's TLS alone (required, verified by the records,
 * never WebPKI; MTA-STS still filters the MX names under enforce); a failed
 * lookup (SERVFAIL, bogus) makes the host unusable (4.7.5, dnssec-invalid),
 * as does a host without usable records under level dane (dane-required).
 * The only fail-closed point for "required TLS" is
 * the smtp_client state machine (SMTP_TLS_REQUIRE).
 *
 * Connection reuse (Postfix's connection cache, RFC 5321 §3.3): after a
 * transaction the server answered at the end of data, the connection waits
 * idle (at most DELIVERY_IDLE_MS, DELIVERY_MAX_USES transactions) in a pool
 * keyed by (recipient domain, MX host, address, port). A later delivery to
 * the SAME recipient domain takes it instead of connecting when the MX walk
 * reaches that very host and address, and only when its TLS state meets the
 * new delivery's demands, re-evaluated from the current MTA-STS verdict:
 * verified TLS for enforce / tls_default=verify (the MX walk has already
 * checked the host against the policy), a session that tried STARTTLS for
 * the opportunistic levels. A reused connection that turns out dead before
 * the server answered MAIL (EOF, 421, timeout) is replaced once by a new
 * connection to the same address within the same attempt: no byte of the
 * message was sent, so nothing can be duplicated, and the attempt is not
 * counted as failed. TLS-RPT records one session per connection (RFC 8460
 * §4.4 counts "TLS-enabled connections"), not per transaction.
 *
 * Timeouts: the RFC 5321 §4.5.3.2 stage timeouts of smtp/client.h and a 30 s
 * connect timeout; for tests the environment may shorten them:
 * STSRELAY_SMTP_TIMEOUT=SECONDS sets every stage (and the connect timeout),
 * STSRELAY_CONNECT_TIMEOUT=SECONDS the connect timeout alone.
 *
 * Ownership: delivery_ctx (one per daemon) owns the resolver, the TLS
 * context (with its session cache per MX name) and the MTA-STS engine. A
 * delivery copies what it needs from the envelope at start; the envelope
 * may change or go away while it runs. The done callback runs exactly once,
 * always from the loop (never inside delivery_start or delivery_abort); the
 * delivery is freed right after it returns.
 */

#define DELIVERY_RELAY_MAX (DNS_NAME_MAX + 64) /* "host[ip]:port" */
#define DELIVERY_TLS_MAX 64                    /* "TLSv1.3 verified" */
#define DELIVERY_STS_MAX 64                    /* "enforce id=20260618001" */
#define DELIVERY_IDLE_MS 5000                  /* an idle connection waits this long */
#define DELIVERY_MAX_USES 100                  /* transactions per connection */
#define DELIVERY_MAX_IDLE 256                  /* idle connections in all (memory bound) */

enum delivery_status {
	DELIVERY_SENT,    /* 2xx after end of data */
	DELIVERY_DEFER,   /* try again later */
	DELIVERY_BOUNCE,  /* permanent failure: bounce now */
	DELIVERY_ABORTED, /* delivery_abort(): no verdict, leave the state as it was */
};

struct delivery_rcpt {
	size_t index;        /* into the envelope's rcpts */
	const char *address; /* the delivery's copy */
	enum delivery_status status;
	char dsn[SMTP_REPLY_ESC_MAX];      /* "2.0.0", "4.7.5", "5.1.1" */
	char text[QUEUE_ERROR_MAX];        /* for status=... (...) and last_error */
	char reply[QUEUE_ERROR_MAX];       /* server reply for a DSN Diagnostic-Code, "" none */
	char remote_mta[DNS_NAME_MAX + 1]; /* MX host that answered, "" none */
	char relay[DELIVERY_RELAY_MAX];    /* "mx.example.com[192.0.2.1]:25" or "none" */
	char tls[DELIVERY_TLS_MAX];        /* "TLSv1.3 verified", "TLSv1.2 unverified", "none" */
	enum smtp_tls_result sts_result;   /* result type of a failed check, or SUCCESS */
	unsigned conn_use;                 /* transactions on that connection so far (Postfix
					     * conn_use=), 0 when no connection decided */
	bool dane; /* DANE judged the MX host of this verdict (log dane=yes) */
};

struct delivery_result {
	const char *qid;
	const char *domain;
	char sts[DELIVERY_STS_MAX]; /* "absent", "none id=X", "testing id=X", "enforce id=X" */
	bool aborted;
	size_t nrcpts;
	struct delivery_rcpt *rcpts; /* in the order given to delivery_start */
};

struct delivery_ctx;
struct delivery;

typedef void (*delivery_done_cb)(void *arg, const struct delivery_result *res);

/* Resolver on r->loop with r->cfg.dns_servers, TLS context with r->cfg.ca_file,
 * MTA-STS engine (cache under spool_dir/sts) when built in. r->cfg is read at
 * every delivery start, so a reload applies to later deliveries (except
 * dns_servers and ca_file, fixed here). -1 with err. */
int delivery_ctx_new(struct relay *r, struct delivery_ctx **out, char *err, size_t errlen);
/* Stopping: closes the idle connections (QUIT) and keeps no more. */
void delivery_ctx_close_idle(struct delivery_ctx *dc);
/* No delivery may be running. Closes the idle connections at once and the
 * other handles through the loop: run it once
 * more afterwards. NULL is fine. */
void delivery_ctx_free(struct delivery_ctx *dc);

/* Starts one attempt for recipients idx[0..n) of env (all of them in
 * `domain`, at most SMTP_CLIENT_MAX_RCPTS). Returns 0 (cb will run) or -1
 * (nothing started, cb never runs). *out may be NULL. */
int delivery_start(struct delivery_ctx *dc, const struct queue_envelope *env, const char *domain,
		   const size_t *idx, size_t n, delivery_done_cb cb, void *arg,
		   struct delivery **out);

/* Stops the attempt as soon as possible (the connection is closed without
 * waiting). Recipients whose 250 after DATA already arrived stay SENT; all
 * others come back DELIVERY_ABORTED. The callback still runs, later. */
void delivery_abort(struct delivery *d);

#endif
