/* libFuzzer target for the `_smtp._tls` TLS-RPT TXT parser: the input is
 * split into records at 0x1E bytes and into character-strings at 0x1F. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "sts/txt.h"
#include "fuzz_txt_split.h"


int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sts_txt_string strs[FUZZ_TXT_MAX_PARTS];
	struct sts_txt_record recs[FUZZ_TXT_MAX_PARTS];
	size_t nr = fuzz_txt_split(data, size, strs, recs);
	static struct sts_tlsrpt_txt out;

	enum sts_txt_result r = sts_tlsrpt_txt_parse(recs, nr, &out);
	if (out.nrua > STS_TLSRPT_MAX_RUA)
		__builtin_trap();
	if (r != STS_TXT_FOUND && (out.nrua != 0 || out.reason == NULL))
		__builtin_trap();
	for (size_t i = 0; i < out.nrua; i++) {
		size_t n = strlen(out.rua[i].target);
		if (n == 0 || n > STS_TLSRPT_URI_MAX)
			__builtin_trap();
		if (out.rua[i].kind == STS_TLSRPT_MAILTO &&
		    strchr(out.rua[i].target, '@') == NULL)
			__builtin_trap();
	}
	sts_tlsrpt_txt_parse_one(data, size, &out);
	return 0;
}
