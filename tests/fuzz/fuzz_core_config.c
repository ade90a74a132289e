/* Fuzz target for the configuration parser: any bytes must give either a
 * config or a "FILE:LINE: reason" error, never a crash or an overrun. */
#include "relay/core/config.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct config cfg;
	char err[512];
	int rc;

	config_defaults(&cfg);
	err[0] = '\0';
	rc = config_parse(&cfg, (const char *)data, size, "fuzz.conf", err, sizeof(err));
	/* Invariants the rest of the relay relies on. */
	if (rc == 0) {
		if (cfg.nlisten > CONFIG_MAX_LISTEN || cfg.nmynetworks > CONFIG_MAX_NETWORKS ||
		    cfg.ndns_servers > CONFIG_MAX_DNS || cfg.nretry_schedule == 0 ||
		    cfg.nretry_schedule > CONFIG_MAX_RETRY || cfg.nlisten == 0 ||
		    memchr(cfg.hostname, '\0', sizeof(cfg.hostname)) == NULL ||
		    memchr(cfg.tlsrpt_contact, '\0', sizeof(cfg.tlsrpt_contact)) == NULL ||
		    cfg.max_message_size == 0 || cfg.max_sessions == 0)
			__builtin_trap();
		/* Exercise the matcher on what was parsed. */
		for (size_t i = 0; i < cfg.nlisten; i++)
			(void)config_mynetworks_match(&cfg, (const struct sockaddr *)&cfg.listen[i].sa);
	} else if (rc != -1 || strncmp(err, "fuzz.conf:", 10) != 0) {
		__builtin_trap();
	}
	return 0;
}
