/* TLS-RPT (RFC 8460), the sts side: durable per-day recording of delivery
 * session outcomes, aggregation into the §4 JSON report, its validation, gzip and the report mail. */
#ifndef STSRELAY_STS_TLSRPT_H
#define STSRELAY_STS_TLSRPT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "smtp/tls.h" /* enum smtp_tls_result: the RFC 8460 §4.3 result types */
#include "sts/policy.h"
#include "sts/tlsrpt/dkim.h"

/* ---- UTC days ---- */

#define TLSRPT_DAY_LEN 10 /* "YYYY-MM-DD" */

/* The UTC day holding unix time t, as "YYYY-MM-DD" (out: 11 bytes). */
void tlsrpt_day_of(int64_t t, char out[TLSRPT_DAY_LEN + 1]);
/* Parses "YYYY-MM-DD" (a real calendar date, 1970..9999) into the unix
 * time of its 00:00:00 UTC. 0 or -1. */
int tlsrpt_day_parse(const char *day, int64_t *start);

/* ---- recording (sts/tlsrpt/store.c) ----
 *
 * Layout: spool_dir/tlsrpt/YYYY-MM-DD/sessions   one line per session
 *         spool_dir/tlsrpt/YYYY-MM-DD/sent       (domain, rua) already sent
 * A session line is written with one write() on an O_APPEND descriptor and
 * ends with a CRC-32 of its text, so a reader counts every complete line
 * exactly once and skips torn or corrupt ones (never counts twice: lines are
 * never rewritten). The line is in the kernel when tlsrpt_record() returns:
 * a crash of the process (kill -9) loses nothing. fdatasync runs at most
 * once a second (a libuv timer, on the threadpool), so a crash of the whole
 * machine can lose the sessions of the last second or so, never more. */

/* One delivery session to one MX host (or one failure before any MX was
 * tried, like a policy fetch error). Strings are the caller's; NULL or "" =
 * unknown. Text is stored as printable ASCII (other bytes become '?'). */
struct tlsrpt_session {
	const char *domain; /* policy domain = recipient domain; required */
	/* The MTA-STS policy applied: NULL = "no-policy-found" unless
	 * sts_published is set (TXT record seen, but no usable policy: the
	 * sts-policy-* failures), then policy-type "sts" without a policy. */
	const struct sts_policy *policy;
	/* The applied policy's own text (the fetched body): its lines become
	 * the report's policy-string as published, extension fields and the
	 * original spelling included. NULL: the lines are rebuilt from policy. */
	const char *policy_text;
	size_t policy_text_len;
	bool sts_published;
	/* DANE decided for this session's MX host (RFC 8461 §2): policy-type
	 * "tlsa" instead of any MTA-STS policy, policy-string = the lines of
	 * tlsa_text (the TLSA records in presentation form, one a line; ""
	 * when the lookup failed), mx-host = mx_host. */
	bool tlsa;
	const char *tlsa_text;
	size_t tlsa_text_len;
	enum smtp_tls_result result;
	const char *sending_mta_ip; /* our source address for the session */
	const char *mx_host;        /* receiving-mx-hostname */
	const char *mx_ip;          /* receiving-ip */
	const char *reason;         /* failure-reason-code (<= 255 bytes kept) */
	int64_t when;               /* unix seconds; 0 = clock_now() */
};

struct tlsrpt_store;

/* A policy text is stored once per day as spool_dir/tlsrpt/DAY/policy-HASH
 * (HASH: the first 16 hex digits of its SHA-256), written atomically before
 * the first session line that names it; the report reads it back. The
 * TLSA records of a tlsa session are stored the same way. */
#define TLSRPT_POLICY_HASH_LEN 16
void tlsrpt_policy_hash(const char *text, size_t len, char out[TLSRPT_POLICY_HASH_LEN + 1]);
/* The day's stored text of that hash (malloc'd, NUL-terminated, *len set),
 * or NULL when missing, unreadable or not matching its hash (blocking
 * reads: commands and the thread pool). */
char *tlsrpt_policy_text_read(const char *spool_dir, const char *day, const char *hash,
			      size_t *len);

/* Opens the recorder for spool_dir (creates spool_dir/tlsrpt if needed).
 * With a loop, a 1 s timer batches fdatasync; without one (commands,
 * tests), call tlsrpt_store_sync() yourself. Returns 0 or -1 (err set). */
int tlsrpt_store_open(const char *spool_dir, uv_loop_t *loop, struct tlsrpt_store **out, char *err,
		      size_t errlen);
/* Records one session (the hot path: format + one write, no fsync). The
 * delivery engine calls it once per session, never for a message carrying
 * QUEUE_F_TLSRPT (reports are not reported, RFC 8460 §5.3). 0, or -1 when
 * the record could not be written (logged; delivery goes on regardless). */
int tlsrpt_record(struct tlsrpt_store *st, const struct tlsrpt_session *s);
/* fdatasync the current day file now if anything was written since. */
int tlsrpt_store_sync(struct tlsrpt_store *st);
/* Syncs, closes the file, and (with a loop) closes the timer; the memory is
 * freed once libuv has released it, so run the loop once more. NULL is fine. */
void tlsrpt_store_close(struct tlsrpt_store *st);

/* Formats one session line (without writing it): the pure part of
 * tlsrpt_record, exposed for tests. Returns the length, or -1. */
int tlsrpt_line_format(const struct tlsrpt_session *s, int64_t when, char *buf, size_t len);

/* ---- the day's aggregate (sts/tlsrpt/report.c) ---- */

struct tlsrpt_day;

/* Reads every session line of day ("YYYY-MM-DD") under spool_dir and
 * aggregates them in memory (O(distinct groups), not O(sessions)), with the
 * day's stored policy texts. A missing day directory is an empty day. A
 * missing or damaged policy file only makes that policy-string rebuilt from
 * the recorded fields. 0 or -1 (err set). */
int tlsrpt_day_load(const char *spool_dir, const char *day, struct tlsrpt_day **out, char *err,
		    size_t errlen);
/* Same from a buffer of lines (tests, fuzzing). */
int tlsrpt_day_load_buf(const char *day, const char *buf, size_t len, struct tlsrpt_day **out);
void tlsrpt_day_free(struct tlsrpt_day *d);
/* Policy domains with sessions that day, sorted; i < ndomains. */
size_t tlsrpt_day_ndomains(const struct tlsrpt_day *d);
const char *tlsrpt_day_domain(const struct tlsrpt_day *d, size_t i);
/* Lines skipped as torn or corrupt (CRC mismatch, bad fields). */
size_t tlsrpt_day_bad_lines(const struct tlsrpt_day *d);

/* ---- a day's groups, for the fleet (sts/tlsrpt/fleet.c) ----
 * A group is one distinct (policy domain, policy, result type, sending IP,
 * MX host, MX IP, reason) with its session count; the report counts groups.
 * Its key is a printable string (parts joined by 0x1f) stable across
 * restarts and nodes of the same version, so several nodes' counts of a
 * group can be summed under its key elsewhere (Redis) and turned back into
 * a day. Keys are valid while d lives. */
size_t tlsrpt_day_ngroups(const struct tlsrpt_day *d);
const char *tlsrpt_day_group(const struct tlsrpt_day *d, size_t i, uint64_t *count);
/* The policy domain of a group key into out; 0 or -1. */
int tlsrpt_group_domain(const char *key, char *out, size_t len);
/* The hash of the policy text a group names (policy-HASH); -1 if none. */
int tlsrpt_group_policy_hash(const char *key, char out[TLSRPT_POLICY_HASH_LEN + 1]);
/* A day from (key, count) pairs summed elsewhere: a key given twice adds
 * up; a key that is not a valid group is skipped and counted in
 * tlsrpt_day_bad_lines. 0 or -1 (bad day, no memory). */
int tlsrpt_day_from_groups(const char *day, const char *const *keys, const uint64_t *counts,
			   size_t n, struct tlsrpt_day **out);
/* Gives the day the text of a policy its groups name by hash (for the
 * policy-string); refused (-1) when the text does not have that hash. */
int tlsrpt_day_add_policy_text(struct tlsrpt_day *d, const char *hash, const char *text,
			       size_t len);

struct tlsrpt_meta {
	const char *org_name; /* organization-name (tlsrpt_org_name) */
	const char *contact;  /* contact-info (tlsrpt_contact) */
};

/* The submitter: the domain of the contact address (RFC 8460 §5.1/§5.3
 * require filename, TLS-Report-Submitter and contact-info to agree). */
const char *tlsrpt_submitter(const char *contact);

/* report-id "YYYY-MM-DD.DOMAIN@SUBMITTER": unique per submitter, domain and
 * day, and the same on every resend; usable as the Subject's <id-left@id-right>. */
int tlsrpt_report_id(const char *day, const char *domain, const char *submitter, char *buf,
		     size_t len);

/* The RFC 8460 §4 report for one policy domain of the day: a new reference
 * (json_decref it), or NULL if the domain had no sessions or on no memory. */
json_t *tlsrpt_report_build(const struct tlsrpt_day *d, const char *domain,
			    const struct tlsrpt_meta *meta);

/* ---- validation (sts/tlsrpt/validate.c) ----
 * Written from the RFC 8460 §4.4 field list. STRICT is what we send: every
 * field in the right type, known policy and result types, policy-domain and
 * both summary counts present, date-times in RFC 3339, IPs parseable.
 * LENIENT is what a receiver accepts: unknown policy-type / result-type
 * strings and absent optional counts or policy-domain are tolerated, but
 * structure and types of what is present are still checked. */
enum tlsrpt_validate_mode { TLSRPT_VALIDATE_STRICT, TLSRPT_VALIDATE_LENIENT };

/* 0 if valid; else -1 and err holds "json.path: reason" of the first problem. */
int tlsrpt_validate(const json_t *report, enum tlsrpt_validate_mode mode, char *err, size_t errlen);
/* Same from bytes: JSON text, or gzip of it (detected by its magic); a
 * JSON array is a list of reports (`tlsrpt show --json`), each checked. */
int tlsrpt_validate_bytes(const void *buf, size_t len, enum tlsrpt_validate_mode mode, char *err,
			  size_t errlen);

/* ---- gzip and the report mail (sts/tlsrpt/mail.c) ---- */

#define TLSRPT_REPORT_MAX (16u << 20) /* largest JSON report we build or accept */

/* gzip (RFC 1952) of in; *out is malloc'd. 0 or -1. */
int tlsrpt_gzip(const void *in, size_t len, unsigned char **out, size_t *outlen);
/* gunzip, refusing output larger than max. *out is malloc'd and NUL-terminated. */
int tlsrpt_gunzip(const void *in, size_t len, size_t max, unsigned char **out, size_t *outlen);

/* "submitter!policy-domain!begin!end!unique-id.json.gz" (RFC 8460 §5.1),
 * begin/end the day's first and last second; unique-id is 16 hex digits
 * derived from the report-id, so a resend carries the same name. */
int tlsrpt_filename(const char *submitter, const char *domain, int64_t day_start,
		    const char *report_id, char *buf, size_t len);

struct tlsrpt_mail {
	const char *from;      /* From: the contact address */
	const char *to;        /* the mailto: rua address */
	const char *domain;    /* TLS-Report-Domain */
	const char *submitter; /* TLS-Report-Submitter */
	const char *report_id;
	const char *hostname;    /* right side of the Message-ID */
	int64_t day_start;       /* the report's day (00:00 UTC) */
	int64_t now;             /* Date: */
	const unsigned char *gz; /* the gzip'd JSON report */
	size_t gzlen;
	const struct dkim_key *dkim; /* NULL: unsigned */
};

/* The whole message (RFC 8460 §5.3), CRLF line ends, ready for the queue:
 * multipart/report; report-type="tlsrpt" with a text/plain part and the
 * application/tlsrpt+gzip attachment (base64), headers From, To, Date,
 * Message-ID, Subject, MIME-Version, TLS-Report-Domain,
 * TLS-Report-Submitter, TLS-Required: No (RFC 8689), and a DKIM-Signature
 * when m->dkim is set. *out is malloc'd. 0 or -1 (err set). */
int tlsrpt_mail_compose(const struct tlsrpt_mail *m, char **out, size_t *outlen, char *err,
			size_t errlen);

/* ---- durable "already sent" ledger and retention (sts/tlsrpt/store.c) ---- */

/* True if (domain, rua) of day was recorded as sent. */
bool tlsrpt_sent_contains(const char *spool_dir, const char *day, const char *domain,
			  const char *rua);
/* Appends (domain, rua) to day's ledger and fdatasyncs it. 0 or -1. */
int tlsrpt_sent_add(const char *spool_dir, const char *day, const char *domain, const char *rua);

/* mailto: copies skipped because report mail cannot be DKIM-signed (RFC
 * 8460 §3: no key configured), kept per day so `tlsrpt show` can name
 * them. Adds (domain, rua) unless already listed (fdatasync'd). 0 or -1. */
int tlsrpt_skipped_add(const char *spool_dir, const char *day, const char *domain, const char *rua);
/* Calls fn(arg, rua) for each rua of domain skipped on day and not sent
 * since (blocking file reads: commands, not the daemon's loop). */
void tlsrpt_skipped_foreach(const char *spool_dir, const char *day, const char *domain,
			    void (*fn)(void *arg, const char *rua), void *arg);

/* Removes day directories (sessions and ledger) whose day ended more than
 * retention_s before now. Returns how many were removed, or -1. */
int tlsrpt_prune(const char *spool_dir, int64_t now, uint64_t retention_s);

#endif
