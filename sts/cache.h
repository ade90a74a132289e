/* The MTA-STS policy cache: a per-domain table in memory and, when asked,
 * one file per policy under spool_dir/sts/ (atomic writes) that survives restart. */
#ifndef STSRELAY_STS_CACHE_H
#define STSRELAY_STS_CACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sts/fetch.h"
#include "sts/policy.h"
#include "sts/txt.h"

#define STS_CACHE_SUBDIR "sts"
#define STS_CACHE_SUFFIX ".policy"

/* One domain's state. The policy part (has_policy) is what goes to disk;
 * the rest is memory-only bookkeeping of the engine. Entries are owned by
 * the cache and live until sts_cache_free (never removed, only emptied), so
 * a pointer from sts_cache_get/touch stays valid for the cache's life. */
struct sts_cache_entry {
	char domain[STS_DOMAIN_MAX + 1];
	bool has_policy;
	char id[STS_TXT_ID_MAX + 1];
	int64_t fetched_at;        /* unix seconds */
	int64_t expires_at;        /* fetched_at + max_age */
	enum sts_policy_mode mode; /* from the text, for listings */
	uint32_t max_age;
	char *text; /* the raw policy body, NUL-terminated */
	size_t text_len;

	/* memory only */
	char neg_id[STS_TXT_ID_MAX + 1]; /* id whose fetch failed ("" none) */
	int64_t neg_until;               /* no new fetch for neg_id before this */
	enum smtp_tls_result neg_type;   /* the result type of that failure */
	char neg_detail[STS_DETAIL_MAX];
	int64_t refresh_at; /* next proactive refresh, 0 = none */
	bool refreshing;

	struct sts_cache_entry *hnext; /* hash chain (internal) */
};

struct sts_cache;

/* dir: the cache directory (spool_dir/sts), or NULL for memory only.
 * persist: store() writes files there (creating dir, mode 0700); false
 * keeps the disk untouched (read-only users such as `sts check`). */
int sts_cache_new(const char *dir, bool persist, struct sts_cache **out);
void sts_cache_free(struct sts_cache *c);

/* Reads every dir/DOMAIN.policy into memory. Corrupt or unreadable files are
 * skipped with a warning in the log (never deleted: an operator may want to
 * look). Expired policies are loaded too; users check expires_at. */
int sts_cache_load(struct sts_cache *c, size_t *nloaded, size_t *nbad);

/* The entry of a normalised domain, or NULL. */
struct sts_cache_entry *sts_cache_get(struct sts_cache *c, const char *domain);
/* Get or create (without a policy). NULL only when out of memory. */
struct sts_cache_entry *sts_cache_touch(struct sts_cache *c, const char *domain);

/* Stores a freshly fetched, already validated policy: memory first, then
 * (persist) dir/DOMAIN.policy via temp file + fsync + rename + directory
 * fsync. The write is synchronous on purpose: fetches are rare and the file
 * small, so a short block of the loop is cheaper than a worker round-trip.
 * Returns 0; -1 if the text does not parse or memory ran out (entry
 * unchanged); 1 if memory was updated but the disk write failed (logged). */
int sts_cache_store(struct sts_cache *c, const char *domain, const char *id, int64_t fetched_at,
		    const void *text, size_t len);

/* Forgets the policy of domain (memory, and its file when persist). */
void sts_cache_drop(struct sts_cache *c, const char *domain);

/* Entries with a policy, sorted by domain: *out is a malloc'd array the
 * caller frees (entries themselves stay owned by the cache). */
int sts_cache_list(struct sts_cache *c, struct sts_cache_entry ***out, size_t *n);

/* Calls fn for every entry (with or without policy), in no order. fn must
 * not add entries. */
void sts_cache_foreach(struct sts_cache *c, void (*fn)(void *arg, struct sts_cache_entry *e),
		       void *arg);

/* ---- the file format, pure (exposed for tests and the fuzz target) ----
 *   STSRELAY-STS-CACHE 1\n domain D\n id ID\n fetched_at N\n expires_at N\n
 *   length N\n \n <N bytes of policy text>
 * sts_cache_format returns a malloc'd buffer in *buf. sts_cache_parse fills
 * the policy part of *out (out->text malloc'd, caller frees) or returns -1
 * with a reason in err; the text must parse as a policy whose max_age is
 * expires_at - fetched_at. */
int sts_cache_format(const struct sts_cache_entry *e, char **buf, size_t *len);
int sts_cache_parse(const void *buf, size_t len, struct sts_cache_entry *out, char *err,
		    size_t errlen);

#endif
