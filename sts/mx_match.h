/* MTA-STS `mx` patterns (RFC 8461 §3.2, §4.1): syntax check + normalisation of
 * a pattern, and matching of an MX host name against one pattern. Knows
 * nothing of policies (sts/policy.h matches a host against a whole policy). */
#ifndef STSRELAY_STS_MX_MATCH_H
#define STSRELAY_STS_MX_MATCH_H

#include <stdbool.h>
#include <stddef.h>

/* Longest domain name in presentation form without the trailing dot (RFC
 * 1035 §2.3.4: 255 octets on the wire). A pattern buffer needs this + 1. */
#define STS_MX_NAME_MAX 253

/* Checks one `mx` value and writes its normal form into out (NUL-terminated,
 * out_size >= STS_MX_NAME_MAX + 1): ASCII lower case, one trailing dot
 * removed. Accepted: ["*."] Domain (RFC 5321 §4.1.2 sub-domains: letter/digit
 * first and last, hyphens inside, <= 63 octets, all-digit labels included),
 * wildcard only as the whole left-most label; no brackets/colons (address
 * literals), no empty labels, no non-ASCII (U-labels must be published as
 * A-labels). A pattern such as "212.114.86.56" is grammatical and accepted
 * (rejecting it would throw away a whole enforce policy) but can never match
 * a host name: see sts_mx_pattern_is_numeric.
 * Returns 0, or -1 with *reason (static string, may be NULL) set. */
int sts_mx_pattern_normalize(const char *in, size_t len, char *out, size_t out_size,
			     const char **reason);

/* True if a valid pattern (NUL-terminated, normalised or not) has an
 * all-digit top-level label, like "212.114.86.56": no real host name has
 * one (RFC 3696 §2), so such a pattern is kept but never matches. */
bool sts_mx_pattern_is_numeric(const char *pattern);

/* True if the MX host name matches one pattern. Both sides are compared
 * ASCII case-insensitively and one trailing dot on each side is ignored.
 * "*.example.com" matches exactly one extra left-most label: a.example.com
 * yes, example.com and a.b.example.com no. The pattern need not be
 * normalised; a syntactically invalid or numeric pattern (see above) and
 * an invalid host never match. */
bool sts_mx_pattern_match(const char *pattern, size_t pattern_len, const char *host,
			  size_t host_len);

#endif
