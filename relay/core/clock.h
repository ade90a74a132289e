/* Wall-clock time for every module, injectable for tests: STSRELAY_FAKE_NOW
 * (unix seconds) shifts "now" so daily and retry schedules run without waiting. */
#ifndef STSRELAY_CLOCK_H
#define STSRELAY_CLOCK_H

#include <stdint.h>
#include <stddef.h>

/* Unix time in seconds / milliseconds, shifted by STSRELAY_FAKE_NOW if set
 * (the clock then starts at that value and runs at normal speed). */
int64_t clock_now(void);
int64_t clock_now_ms(void);

/* RFC 3339 UTC, "2026-11-23T16:05:26Z"; buf needs 21 bytes. Returns buf. */
char *clock_rfc3339(int64_t t, char *buf, size_t len);
/* RFC 5322 date, "Mon, 23 Nov 2026 16:05:26 +0000"; buf needs 32 bytes. */
char *clock_rfc5322(int64_t t, char *buf, size_t len);

#endif
