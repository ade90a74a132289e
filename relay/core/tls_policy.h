/* Per-domain TLS levels: the `tls_policy_file` ("domain level" lines, like
 * Postfix's smtp_tls_policy_maps) parsed from bytes into a table, and its lookup. */
#ifndef STSRELAY_TLS_POLICY_H
#define STSRELAY_TLS_POLICY_H

#include <stdbool.h>
#include <stddef.h>

/* The levels (DESIGN.md "TLS policy"), weakest first. What each demands of
 * the delivery is relay/daemon/delivery.c's business; an MTA-STS enforce
 * policy and usable DANE records can only make a level stricter. */
enum tls_level {
	TLS_LEVEL_NONE,     /* no STARTTLS: plaintext */
	TLS_LEVEL_MAY,      /* STARTTLS when offered, any certificate, else plaintext */
	TLS_LEVEL_ENCRYPT,  /* STARTTLS required, certificate not checked */
	TLS_LEVEL_VERIFY,   /* STARTTLS required, certificate verified for the MX name */
	TLS_LEVEL_DANE,     /* DANE required: an MX without usable TLSA records is not used */
	TLS_LEVEL_STS_ONLY, /* no DANE lookups: MTA-STS alone, else as `may` */
	TLS_LEVEL_COUNT
};

/* "none", "may", "encrypt", "verify", "dane", "sts-only" (static). */
const char *tls_level_name(enum tls_level l);
/* The inverse, exact and lower case: 0, or -1. */
int tls_level_parse(const char *s, enum tls_level *out);

#define TLS_POLICY_MAX_ENTRIES 100000
#define TLS_POLICY_LINE_MAX 1024
#define TLS_POLICY_FILE_MAX (16u << 20)
#define TLS_POLICY_DOMAIN_MAX 253

struct tls_policy_entry {
	char domain[TLS_POLICY_DOMAIN_MAX + 2]; /* lower case, no trailing dot;
						 * ".example.com": its subdomains */
	enum tls_level level;
	unsigned line;
};

/* The table, sorted by domain for lookups. Owned by whoever parsed it. */
struct tls_policy {
	size_t n;
	struct tls_policy_entry *e;
};

/* Parses a whole file: one `domain level` per line, fields separated by
 * blanks, `#` to the end of a line is a comment, blank lines skipped, CRLF
 * or LF. A domain is a host name (letters, digits, '-', '_', dots; a
 * trailing dot is ignored, case is not significant) or, with a leading
 * dot, every domain below it (as Postfix's parent_domain_matches_subdomains
 * lookups do). A second field that is no level, a third field, a domain
 * listed twice, a line longer than TLS_POLICY_LINE_MAX or more than
 * TLS_POLICY_MAX_ENTRIES entries are errors: -1 with "FILE:LINE: reason" in
 * err (fname names the file). 0 and *out (free with tls_policy_free). */
int tls_policy_parse(const char *buf, size_t len, const char *fname, struct tls_policy **out,
		     char *err, size_t errlen);
/* Reads path (at most TLS_POLICY_FILE_MAX bytes) and parses it. -1 with err
 * ("PATH: strerror" or the parser's reason). Blocking file I/O: at start,
 * at SIGHUP and in commands. */
int tls_policy_load(const char *path, struct tls_policy **out, char *err, size_t errlen);
void tls_policy_free(struct tls_policy *p);

/* The level listed for domain (a trailing dot ignored, any case): the
 * exact entry, else the entry ".parent" of the nearest parent domain.
 * False when the domain is not listed (or p is NULL). */
bool tls_policy_lookup(const struct tls_policy *p, const char *domain, enum tls_level *level);

#endif
