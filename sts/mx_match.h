/* MTA-STS `mx` patterns (RFC 8461 §3.2, §4.1): syntax check + normalisation of
 * a pattern, and matching of an MX host name against one pattern or a policy. */
#ifndef STSRELAY_STS_MX_MATCH_H
#define STSRELAY_STS_MX_MATCH_H

#include <stdbool.h>
#include <stddef.h>

struct sts_policy;

/* Longest domain name in presentation form without the trailing dot (RFC
 * 1035 §2.3.4: 255 octets on the wire). A pattern buffer needs this + 1. */
#define STS_MX_NAME_MAX 253

/* Checks one `mx` value and writes its normal form into out (NUL-terminated,
 * out_size >= STS_MX_NAME_MAX + 1): ASCII lower case, one trailing dot
 * removed. Accepted: ["*."] Domain (RFC 5321 §4.1.2 labels: letter/digit
 * first and last, hyphens inside, <= 63 octets), wildcard only as the whole
 * left-most label; not an IPv4 address (last label all digits), no
 * brackets/colons, no non-ASCII (U-labels must be published as A-labels).
 * Returns 0, or -1 with *reason (static string, may be NULL) set. */
int sts_mx_pattern_normalize(const char *in, size_t len, char *out,
			     size_t out_size, const char **reason);

/* True if the MX host name matches one pattern. Both sides are compared
 * ASCII case-insensitively and one trailing dot on each side is ignored.
 * "*.example.com" matches exactly one extra left-most label: a.example.com
 * yes, example.com and a.b.example.com no. The pattern need not be
 * normalised; a syntactically invalid pattern or host never matches. */
bool sts_mx_pattern_match(const char *pattern, size_t pattern_len,
			  const char *host, size_t host_len);

/* True if host (NUL-terminated) matches any `mx` pattern of the policy;
 * *matched (if not NULL) gets the index of the first matching pattern. */
bool sts_mx_match(const struct sts_policy *policy, const char *host,
		  size_t *matched);

#endif
