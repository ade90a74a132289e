/* libFuzzer target for the TLSA path of a DNS answer: dns_msg_tlsa() (header,
 * names with compression, the CNAME chain) and smtp_tlsa_parse/_usable/_format. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "relay/net/dns_msg.h"
#include "smtp/tlsa.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct smtp_tlsa_set set; /* large: not on the stack */
	static char text[SMTP_TLSA_TEXT_MAX];
	struct dns_msg_info info;
	struct smtp_tlsa one;
	const char *why;
	size_t bad = 0, i;

	if (dns_msg_tlsa(data, size, &info, &set, &bad, &why) == 0) {
		if (set.n > SMTP_TLSA_MAX || strlen(info.target) > DNS_MSG_NAME_MAX ||
		    strlen(info.qname) > DNS_MSG_NAME_MAX)
			__builtin_trap();
		for (i = 0; i < set.n; i++) {
			int n = smtp_tlsa_format(&set.rec[i], text, sizeof(text));

			if (set.rec[i].len > SMTP_TLSA_DATA_MAX || n < 0 ||
			    (size_t)n != strlen(text))
				__builtin_trap();
			(void)smtp_tlsa_usable(&set.rec[i]);
		}
	} else if (set.n != 0) {
		__builtin_trap();
	}
	/* the bytes as one RDATA, too */
	if (smtp_tlsa_parse(data, size, &one, &why) == 0) {
		if (one.len != size - 3 || memcmp(one.data, data + 3, one.len) != 0)
			__builtin_trap();
		(void)smtp_tlsa_usable(&one);
	}
	return 0;
}
