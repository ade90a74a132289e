/* libFuzzer target for the policy cache file parser (sts_cache_parse): every
 * accepted file keeps its invariants and survives a format/parse round trip. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sts/cache.h"
#include "sts/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_entry(const struct sts_cache_entry *e)
{
	size_t n;

	if (!e->has_policy || e->text == NULL || e->text[e->text_len] != '\0' ||
	    e->text_len > STS_POLICY_BODY_MAX)
		__builtin_trap();
	if (e->expires_at < e->fetched_at ||
	    e->expires_at - e->fetched_at != (int64_t)e->max_age ||
	    e->max_age > STS_POLICY_MAX_AGE_MAX)
		__builtin_trap();
	n = strlen(e->id);
	if (n == 0 || n > STS_TXT_ID_MAX)
		__builtin_trap();
	for (size_t i = 0; i < n; i++) {
		char ch = e->id[i];
		if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
		      (ch >= 'A' && ch <= 'Z')))
			__builtin_trap();
	}
	n = strlen(e->domain);
	if (n == 0 || e->domain[n - 1] == '.')
		__builtin_trap();
	for (size_t i = 0; i < n; i++)
		if (e->domain[i] >= 'A' && e->domain[i] <= 'Z')
			__builtin_trap();  /* stored names are normalised */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sts_cache_entry a, b;
	char err[128], *f1 = NULL, *f2 = NULL;
	size_t l1, l2;

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	err[0] = '\0';
	if (sts_cache_parse(data, size, &a, err, sizeof(err)) != 0) {
		if (err[0] == '\0' || a.text != NULL)
			__builtin_trap();  /* a refusal always says why, allocates nothing */
		return 0;
	}
	check_entry(&a);
	/* What we write we must read back as the same entry, and writing that
	 * again gives the same bytes. */
	if (sts_cache_format(&a, &f1, &l1) != 0)
		__builtin_trap();
	if (sts_cache_parse(f1, l1, &b, err, sizeof(err)) != 0)
		__builtin_trap();
	if (strcmp(a.domain, b.domain) != 0 || strcmp(a.id, b.id) != 0 ||
	    a.fetched_at != b.fetched_at || a.expires_at != b.expires_at ||
	    a.mode != b.mode || a.max_age != b.max_age || a.text_len != b.text_len ||
	    memcmp(a.text, b.text, a.text_len) != 0)
		__builtin_trap();
	if (sts_cache_format(&b, &f2, &l2) != 0 || l1 != l2 || memcmp(f1, f2, l1) != 0)
		__builtin_trap();
	free(f1);
	free(f2);
	free(a.text);
	free(b.text);
	return 0;
}
