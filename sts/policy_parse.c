/* MTA-STS policy body parser (RFC 8461 §3.2): validates the whole body, then
 * reads `key: value` lines into a struct sts_policy; and policy MX matching.
 * No I/O, no allocation. */
#include "sts/policy.h"

#include <string.h>

#define EXT_NAME_MAX 32

static int is_wsp(unsigned char c)
{
	return c == ' ' || c == '\t';
}

static int is_alnum(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* Length of the UTF-8 sequence starting at s[0] (RFC 3629 §4: no overlongs,
 * no surrogates, nothing above U+10FFFF), or 0 if it is not valid. */
static size_t utf8_seq(const unsigned char *s, size_t avail)
{
	unsigned char c = s[0];
	size_t n;
	unsigned char lo = 0x80, hi = 0xBF;

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		n = 2;
	else if (c >= 0xE0 && c <= 0xEF)
		n = 3;
	else if (c >= 0xF0 && c <= 0xF4)
		n = 4;
	else
		return 0;
	if (avail < n)
		return 0;
	if (c == 0xE0)
		lo = 0xA0;
	else if (c == 0xED)
		hi = 0x9F;
	else if (c == 0xF0)
		lo = 0x90;
	else if (c == 0xF4)
		hi = 0x8F;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++)
		if (s[i] < 0x80 || s[i] > 0xBF)
			return 0;
	return n;
}

/* Whole-body check before any field is read, so that a NUL or a broken byte
 * anywhere (even in an ignored field) makes the policy invalid: the ABNF
 * admits no control characters except as line terminators and WSP. */
static int body_chars_ok(const unsigned char *b, size_t len, struct sts_policy_err *err)
{
	size_t line = 1;

	for (size_t i = 0; i < len;) {
		unsigned char c = b[i];
		if (c == '\n') {
			line++;
			i++;
			continue;
		}
		if (c == '\r') {
			if (i + 1 < len && b[i + 1] == '\n') {
				i++;
				continue;
			}
			err->reason = "bare CR (lines must end in LF or CRLF)";
			err->line = line;
			return -1;
		}
		if (c == 0) {
			err->reason = "NUL byte in policy";
			err->line = line;
			return -1;
		}
		if ((c < 0x20 && c != '\t') || c == 0x7F) {
			err->reason = "control character in policy";
			err->line = line;
			return -1;
		}
		size_t n = utf8_seq(b + i, len - i);
		if (n == 0) {
			err->reason = "policy is not valid UTF-8";
			err->line = line;
			return -1;
		}
		i += n;
	}
	return 0;
}

static int parse_max_age(const unsigned char *v, size_t len, uint32_t *out)
{
	uint64_t n = 0;

	if (len == 0 || len > 10)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (v[i] < '0' || v[i] > '9')
			return -1;
		n = n * 10 + (uint64_t)(v[i] - '0');
	}
	/* Clamped, not rejected: throwing the policy away for a too-generous
	 * lifetime would leave an enforce domain without any protection. */
	if (n > STS_POLICY_MAX_AGE_MAX)
		n = STS_POLICY_MAX_AGE_MAX;
	*out = (uint32_t)n;
	return 0;
}

static int value_is(const unsigned char *v, size_t len, const char *lit)
{
	size_t n = strlen(lit);
	return len == n && memcmp(v, lit, n) == 0;
}

/* Appends a normalised pattern unless already present. */
static int add_mx(struct sts_policy *p, const unsigned char *v, size_t len, const char **reason)
{
	char norm[STS_MX_NAME_MAX + 1];

	if (sts_mx_pattern_normalize((const char *)v, len, norm, sizeof norm, reason) != 0)
		return -1;
	for (size_t i = 0; i < p->mx_count; i++)
		if (strcmp(sts_policy_mx(p, i), norm) == 0)
			return 0;
	size_t n = strlen(norm) + 1;
	if (p->mx_count >= STS_POLICY_MAX_MX) {
		*reason = "too many mx patterns (limit 64)";
		return -1;
	}
	if (n > sizeof p->mx_pool - p->mx_pool_used) {
		*reason = "mx patterns too long in total (limit 8192 bytes)";
		return -1;
	}
	memcpy(p->mx_pool + p->mx_pool_used, norm, n);
	p->mx_off[p->mx_count++] = (uint16_t)p->mx_pool_used;
	p->mx_pool_used += n;
	return 0;
}

struct seen {
	int version, mode, max_age;
};

/* One non-blank line, already stripped of its terminator and of leading and
 * trailing WSP. Returns 0 or -1 with *reason set. */
static int parse_line(struct sts_policy *p, struct seen *seen, const unsigned char *s, size_t len,
		      const char **reason)
{
	size_t k = 0;

	if (!is_alnum(s[0])) {
		*reason = "line does not start with a field name";
		return -1;
	}
	while (k < len && (is_alnum(s[k]) || s[k] == '_' || s[k] == '-' || s[k] == '.'))
		k++;
	if (k > EXT_NAME_MAX) {
		*reason = "field name longer than 32 characters";
		return -1;
	}
	size_t i = k;
	while (i < len && is_wsp(s[i]))
		i++;
	if (i >= len || s[i] != ':') {
		*reason = "line is not `key: value`";
		return -1;
	}
	i++;
	while (i < len && is_wsp(s[i]))
		i++;
	const unsigned char *v = s + i;
	size_t vlen = len - i;

	if (k == 7 && memcmp(s, "version", 7) == 0) {
		if (seen->version++)
			return 0;
		if (!value_is(v, vlen, "STSv1")) {
			*reason = "version is not STSv1";
			return -1;
		}
		return 0;
	}
	if (k == 4 && memcmp(s, "mode", 4) == 0) {
		if (seen->mode++)
			return 0;
		if (value_is(v, vlen, "enforce"))
			p->mode = STS_MODE_ENFORCE;
		else if (value_is(v, vlen, "testing"))
			p->mode = STS_MODE_TESTING;
		else if (value_is(v, vlen, "none"))
			p->mode = STS_MODE_NONE;
		else {
			*reason = "mode is not enforce, testing or none";
			return -1;
		}
		return 0;
	}
	if (k == 7 && memcmp(s, "max_age", 7) == 0) {
		if (seen->max_age++)
			return 0;
		if (parse_max_age(v, vlen, &p->max_age) != 0) {
			*reason = "max_age is not 1-10 digits";
			return -1;
		}
		return 0;
	}
	if (k == 2 && memcmp(s, "mx", 2) == 0)
		return add_mx(p, v, vlen, reason);

	/* Extension: sts-policy-ext-value is vchar [*(SP / vchar) vchar]. */
	if (vlen == 0) {
		*reason = "empty value";
		return -1;
	}
	for (size_t j = 0; j < vlen; j++) {
		if (v[j] == '\t') {
			*reason = "tab inside a value";
			return -1;
		}
	}
	return 0;
}

int sts_policy_parse(const void *body, size_t len, struct sts_policy *out,
		     struct sts_policy_err *err)
{
	struct sts_policy_err dummy;
	struct seen seen = { 0, 0, 0 };
	const unsigned char *b = body;
	size_t line_no = 0;
	size_t pos = 0;

	if (err == NULL)
		err = &dummy;
	err->reason = NULL;
	err->line = 0;
	if (out == NULL || (body == NULL && len > 0)) {
		err->reason = "bad arguments";
		return -1;
	}
	memset(out, 0, sizeof *out);
	if (len > STS_POLICY_BODY_MAX) {
		err->reason = "policy larger than 64 KiB";
		goto fail;
	}
	if (body_chars_ok(b, len, err) != 0)
		goto fail;

	while (pos < len) {
		size_t start = pos;
		size_t end;
		while (pos < len && b[pos] != '\n')
			pos++;
		end = pos;
		if (pos < len)
			pos++; /* the LF */
		line_no++;
		if (end > start && b[end - 1] == '\r')
			end--; /* body_chars_ok guarantees an LF follows */
		while (start < end && is_wsp(b[start]))
			start++;
		while (end > start && is_wsp(b[end - 1]))
			end--;
		if (start == end)
			continue; /* blank line: tolerated, see policy.h */
		if (parse_line(out, &seen, b + start, end - start, &err->reason) != 0) {
			err->line = line_no;
			goto fail;
		}
	}

	if (!seen.version)
		err->reason = "version field missing";
	else if (!seen.mode)
		err->reason = "mode field missing";
	else if (!seen.max_age)
		err->reason = "max_age field missing";
	else if (out->mx_count == 0 && out->mode != STS_MODE_NONE)
		err->reason = "no mx field (required unless mode is none)";
	if (err->reason != NULL)
		goto fail;
	return 0;

fail:
	memset(out, 0, sizeof *out);
	return -1;
}

const char *sts_policy_mx(const struct sts_policy *policy, size_t i)
{
	if (policy == NULL || i >= policy->mx_count || i >= STS_POLICY_MAX_MX)
		return NULL;
	if (policy->mx_off[i] >= sizeof policy->mx_pool)
		return NULL;
	return policy->mx_pool + policy->mx_off[i];
}

bool sts_mx_match(const struct sts_policy *policy, const char *host, size_t *matched)
{
	size_t hlen;

	if (policy == NULL || host == NULL)
		return false;
	hlen = strlen(host);
	for (size_t i = 0; i < policy->mx_count; i++) {
		const char *p = sts_policy_mx(policy, i);

		if (p != NULL && sts_mx_pattern_match(p, strlen(p), host, hlen)) {
			if (matched != NULL)
				*matched = i;
			return true;
		}
	}
	return false;
}

const char *sts_policy_mode_name(enum sts_policy_mode mode)
{
	switch (mode) {
	case STS_MODE_ENFORCE:
		return "enforce";
	case STS_MODE_TESTING:
		return "testing";
	case STS_MODE_NONE:
		return "none";
	}
	return "none";
}

int sts_policy_mode_parse(const char *name, enum sts_policy_mode *mode)
{
	if (name == NULL || mode == NULL)
		return -1;
	if (strcmp(name, "enforce") == 0)
		*mode = STS_MODE_ENFORCE;
	else if (strcmp(name, "testing") == 0)
		*mode = STS_MODE_TESTING;
	else if (strcmp(name, "none") == 0)
		*mode = STS_MODE_NONE;
	else
		return -1;
	return 0;
}
