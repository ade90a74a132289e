/* Fuzzes the TLS-RPT readers: session lines -> day aggregate -> reports
 * (which must always pass the strict schema check), and the report validator. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "sts/tlsrpt/tlsrpt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tlsrpt_meta meta = { "Fuzz Org", "tlsrpt@relay.test" };
	struct tlsrpt_day *d = NULL;
	char err[256];
	size_t i;

	/* the validator on arbitrary bytes (JSON or gzip) */
	(void)tlsrpt_validate_bytes(data, size, TLSRPT_VALIDATE_LENIENT, err, sizeof(err));
	(void)tlsrpt_validate_bytes(data, size, TLSRPT_VALIDATE_STRICT, err, sizeof(err));

	/* whatever the session file holds, what we build is a valid report */
	if (tlsrpt_day_load_buf("2026-06-18", (const char *)data, size, &d) != 0)
		return 0;
	for (i = 0; i < tlsrpt_day_ndomains(d); i++) {
		json_t *r = tlsrpt_report_build(d, tlsrpt_day_domain(d, i), &meta);

		if (r == NULL)
			abort();
		if (tlsrpt_validate(r, TLSRPT_VALIDATE_STRICT, err, sizeof(err)) != 0) {
			fprintf(stderr, "own report invalid: %s\n", err);
			abort();
		}
		json_decref(r);
	}
	tlsrpt_day_free(d);
	return 0;
}
