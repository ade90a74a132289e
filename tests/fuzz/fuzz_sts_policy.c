/* libFuzzer target for the MTA-STS policy parser and mx matching: checks the
 * invariants of every accepted policy (bounds, normal form, self-match). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sts/mx_match.h"
#include "sts/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct sts_policy p;
	struct sts_policy_err err;

	if (sts_policy_parse(data, size, &p, &err) != 0) {
		if (err.reason == NULL || p.mx_count != 0)
			__builtin_trap();
		return 0;
	}
	if (err.reason != NULL || p.max_age > STS_POLICY_MAX_AGE_MAX ||
	    p.mx_count > STS_POLICY_MAX_MX ||
	    (p.mode != STS_MODE_NONE && p.mx_count == 0))
		__builtin_trap();
	for (size_t i = 0; i < p.mx_count; i++) {
		const char *m = sts_policy_mx(&p, i);
		size_t n = strlen(m);
		if (n == 0 || n > STS_MX_NAME_MAX || m[n - 1] == '.')
			__builtin_trap();
		for (size_t j = 0; j < n; j++)
			if (m[j] >= 'A' && m[j] <= 'Z')
				__builtin_trap();
		/* an exact pattern matches itself; "*.d" matches "x.d"; a
		 * numeric pattern (an IP address as a name) matches nothing */
		char host[STS_MX_NAME_MAX + 2];
		if (m[0] == '*') {
			host[0] = 'x';
			memcpy(host + 1, m + 1, n);     /* ".d" + NUL */
		} else {
			memcpy(host, m, n + 1);
		}
		if (sts_mx_pattern_is_numeric(m)) {
			if (sts_mx_pattern_match(m, n, host, strlen(host)))
				__builtin_trap();
			continue;
		}
		if (!sts_mx_match(&p, host, NULL))
			__builtin_trap();
	}
	return 0;
}
