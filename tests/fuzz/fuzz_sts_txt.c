/* libFuzzer target for the `_mta-sts` TXT parser: the input is split into
 * records at 0x1E bytes and into character-strings at 0x1F bytes. */
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
	struct sts_txt out;

	enum sts_txt_result r = sts_txt_parse(recs, nr, &out);
	if (r == STS_TXT_FOUND) {
		size_t n = strlen(out.id);
		if (n == 0 || n > STS_TXT_ID_MAX || out.reason != NULL)
			__builtin_trap();
	} else if (out.reason == NULL || out.id[0] != '\0') {
		__builtin_trap();
	}
	/* the single-record entry point must agree with a one-string record */
	sts_txt_parse_one(data, size, &out);
	return 0;
}
