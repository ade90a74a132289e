/* sd_notify(3) for the daemon: the service manager learns when stsrelay is
 * really ready (not merely forked), when it reloads and when it stops. */
#include "relay/daemon/notify.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "relay/core/log.h"

/* A failed report is logged once: systemd then times the start out itself,
 * and repeating the warning on every reload would only add noise. */
static void send_state(const char *state)
{
	static int warned;
	int rc = sd_notify(0, state);

	if (rc < 0 && !warned) {
		warned = 1;
		log_warn("sd_notify: %s", strerror(-rc));
	}
}

void notify_ready(const char *status)
{
	char msg[512];

	snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s", status ? status : "running");
	send_state(msg);
}

void notify_reloading(void)
{
	struct timespec ts;
	char msg[128];

	/* MONOTONIC_USEC lets systemd >= 253 match the reload to this signal;
	 * older ones ignore it. */
	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
		send_state("RELOADING=1");
		return;
	}
	snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu",
		 (unsigned long long)ts.tv_sec * 1000000ULL +
			 (unsigned long long)ts.tv_nsec / 1000);
	send_state(msg);
}

void notify_stopping(void)
{
	send_state("STOPPING=1");
}
