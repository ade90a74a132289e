/* The MTA-STS policy file (RFC 8461 §3.2): bytes of a fetched
 * /.well-known/mta-sts.txt body in, a self-contained struct sts_policy out;
 * and whether a policy lists an MX host. Uses sts/mx_match.h for single
 * patterns (that module knows nothing of policies: no include cycle). */
#ifndef STSRELAY_STS_POLICY_H
#define STSRELAY_STS_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sts/mx_match.h"

/* RFC 8461 §3.3: senders may limit the body; DESIGN.md fixes 64 KiB. */
#define STS_POLICY_BODY_MAX 65536
/* RFC 8461 §3.2: max_age is at most 31557600 seconds (about one year); a
 * larger value (up to 10 digits) is clamped to it, not rejected. */
#define STS_POLICY_MAX_AGE_MAX 31557600u
/* Bounds of the mx list. A policy with more distinct patterns, or with more
 * pattern text than the pool holds, is rejected as invalid (never silently
 * truncated, since a dropped pattern would make `enforce` defer mail). */
#define STS_POLICY_MAX_MX 64
#define STS_POLICY_MX_POOL 8192

enum sts_policy_mode {
	STS_MODE_NONE = 0,
	STS_MODE_TESTING,
	STS_MODE_ENFORCE,
};

/* Plain value type: no pointers inside, so it may be copied with `=` or
 * memcpy, stored, and compared freely. Read patterns via sts_policy_mx(). */
struct sts_policy {
	enum sts_policy_mode mode;
	uint32_t max_age;                   /* seconds, 0..STS_POLICY_MAX_AGE_MAX */
	size_t mx_count;                    /* 0 only possible when mode is none */
	uint16_t mx_off[STS_POLICY_MAX_MX]; /* offsets into mx_pool */
	size_t mx_pool_used;
	char mx_pool[STS_POLICY_MX_POOL]; /* NUL-terminated patterns */
};

/* Why a body was rejected: reason is a static string, line is 1-based (0
 * when the problem is not on one line, e.g. a missing field). */
struct sts_policy_err {
	const char *reason;
	size_t line;
};

/* Parses a policy body (not NUL-terminated; NUL bytes are rejected).
 * Returns 0 and fills *out, or -1 and fills *err (err may be NULL); on error
 * *out is zeroed. The caller maps -1 to TLS-RPT `sts-policy-invalid`.
 *
 * Grammar (RFC 8461 §3.2, RFC 7405 %s = case-sensitive):
 *  - lines end in LF or CRLF; a lone CR, NUL or any other control character
 *    (HTAB only as whitespace) and invalid UTF-8 reject the whole body;
 *  - a line is `key *WSP ":" *WSP value *WSP`; key is the ABNF ext-name
 *    ((ALPHA/DIGIT) *31(ALPHA/DIGIT/"_"/"-"/".")); a line without ":" is an
 *    error. Lenient beyond the ABNF: leading WSP, WSP before ":", and blank
 *    lines are accepted and skipped;
 *  - fields may come in any order (the ABNF sts-policy-record puts no order
 *    on sts-policy-field; only the TXT record must start with v=STSv1);
 *  - keys and the values of version/mode are case-sensitive: `Mode:` is an
 *    unknown key and `mode: Enforce` is an invalid mode;
 *  - version: STSv1, mode (enforce|testing|none) and max_age (1*10DIGIT)
 *    are required; a max_age above 31557600 is clamped to 31557600 (a domain
 *    publishing two years under enforce stays protected; more than 10
 *    digits or a non-digit is an error); mx (one or more) unless mode is
 *    none, where any mx given is still checked and kept. An mx whose top
 *    label is all digits (an IP address written as a name) is kept but
 *    never matches (sts_mx_pattern_is_numeric): the policy stays in force;
 *  - a repeated non-mx field: the first wins, later copies are ignored
 *    unchecked (RFC 8461 §3.2); repeated mx patterns are stored once;
 *  - unknown keys are ignored but their value must be sts-policy-ext-value
 *    (non-empty, printable ASCII or UTF-8, no controls);
 *  - len > STS_POLICY_BODY_MAX is an error. */
int sts_policy_parse(const void *body, size_t len, struct sts_policy *out,
		     struct sts_policy_err *err);

/* The i-th mx pattern (lower case, no trailing dot, maybe "*." prefix), or
 * NULL if i >= mx_count. Points into *policy: valid while policy lives. */
const char *sts_policy_mx(const struct sts_policy *policy, size_t i);

/* True if host (NUL-terminated) matches any `mx` pattern of the policy;
 * *matched (if not NULL) gets the index of the first matching pattern. */
bool sts_mx_match(const struct sts_policy *policy, const char *host, size_t *matched);

/* "enforce", "testing", "none" (the RFC spelling; DESIGN.md log values). */
const char *sts_policy_mode_name(enum sts_policy_mode mode);

/* Inverse of sts_policy_mode_name (exact, case-sensitive). 0 or -1. */
int sts_policy_mode_parse(const char *name, enum sts_policy_mode *mode);

#endif
