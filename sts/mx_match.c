/* MTA-STS `mx` pattern syntax and MX host matching (RFC 8461 §3.2, §4.1).
 * Pure string code: no allocation, no DNS, bounded by STS_MX_NAME_MAX. */
#include "sts/mx_match.h"

#include <string.h>

#define LABEL_MAX 63

static int is_alnum(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static unsigned char lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c - 'A' + 'a') : c;
}

/* One RFC 5321 sub-domain: Let-dig [Ldh-str], at most 63 octets. */
static int label_ok(const char *s, size_t len)
{
	if (len == 0 || len > LABEL_MAX)
		return 0;
	if (!is_alnum((unsigned char)s[0]) || !is_alnum((unsigned char)s[len - 1]))
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (!is_alnum(c) && c != '-')
			return 0;
	}
	return 1;
}

/* Validates a dotted Domain (no trailing dot); sets *reason on failure. */
static int domain_ok(const char *s, size_t len, const char **reason)
{
	size_t start = 0;

	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x80) {
			*reason = "mx pattern has non-ASCII characters (use A-labels)";
			return -1;
		}
		if (c == '*') {
			*reason = "mx wildcard allowed only as the whole left-most label";
			return -1;
		}
		if (c == '[' || c == ':') {
			*reason = "mx pattern is an address literal";
			return -1;
		}
	}
	for (size_t i = 0; i <= len; i++) {
		if (i == len || s[i] == '.') {
			if (!label_ok(s + start, i - start)) {
				*reason = (i == start) ? "mx pattern has an empty label"
						       : "mx pattern has an invalid label";
				return -1;
			}
			start = i + 1;
		}
	}
	return 0;
}

bool sts_mx_pattern_is_numeric(const char *pattern)
{
	size_t len = pattern != NULL ? strlen(pattern) : 0;
	size_t i;

	if (len > 0 && pattern[len - 1] == '.')
		len--;
	if (len == 0)
		return false;
	for (i = len; i > 0 && pattern[i - 1] != '.'; i--)
		if (pattern[i - 1] < '0' || pattern[i - 1] > '9')
			return false;
	return i < len;
}

int sts_mx_pattern_normalize(const char *in, size_t len, char *out, size_t out_size,
			     const char **reason)
{
	const char *dummy;
	size_t dlen;
	const char *dom;

	if (reason == NULL)
		reason = &dummy;
	*reason = NULL;
	if (in == NULL || out == NULL || out_size == 0) {
		*reason = "mx pattern: bad arguments";
		return -1;
	}
	out[0] = '\0';
	if (len > 0 && in[len - 1] == '.')
		len--;
	if (len == 0) {
		*reason = "mx pattern is empty";
		return -1;
	}
	if (len > STS_MX_NAME_MAX) {
		*reason = "mx pattern is longer than 253 characters";
		return -1;
	}
	if (len + 1 > out_size) {
		*reason = "mx pattern does not fit the output buffer";
		return -1;
	}
	dom = in;
	dlen = len;
	if (len >= 2 && in[0] == '*' && in[1] == '.') {
		dom = in + 2;
		dlen = len - 2;
		if (dlen == 0) {
			*reason = "mx wildcard without a domain";
			return -1;
		}
	}
	if (domain_ok(dom, dlen, reason) != 0)
		return -1;
	for (size_t i = 0; i < len; i++)
		out[i] = (char)lower((unsigned char)in[i]);
	out[len] = '\0';
	return 0;
}

static int equal_nocase(const char *a, const char *b, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
			return 0;
	return 1;
}

bool sts_mx_pattern_match(const char *pattern, size_t pattern_len, const char *host,
			  size_t host_len)
{
	char pat[STS_MX_NAME_MAX + 1];
	size_t plen;

	if (pattern == NULL || host == NULL)
		return false;
	if (sts_mx_pattern_normalize(pattern, pattern_len, pat, sizeof pat, NULL) != 0 ||
	    sts_mx_pattern_is_numeric(pat))
		return false;
	plen = strlen(pat);
	if (host_len > 0 && host[host_len - 1] == '.')
		host_len--;
	if (host_len == 0 || host_len > STS_MX_NAME_MAX)
		return false;

	if (pat[0] != '*')
		return host_len == plen && equal_nocase(host, pat, plen);

	/* "*.D": host must be exactly one LDH label, a dot, then D. */
	const char *suffix = pat + 1; /* ".D" */
	size_t slen = plen - 1;
	if (host_len <= slen)
		return false;
	size_t llen = host_len - slen;
	if (!equal_nocase(host + llen, suffix, slen))
		return false;
	return label_ok(host, llen) != 0;
}
