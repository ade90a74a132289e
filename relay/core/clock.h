/* Wall-clock time for every module, injectable for tests: STSRELAY_FAKE_NOW
 * (unix seconds) shifts "now", clock_fake_set_ms() stops it (unit tests). */
#ifndef STSRELAY_CLOCK_H
#define STSRELAY_CLOCK_H

#include <stdint.h>
#include <stddef.h>

/* Unix time in seconds / milliseconds, shifted by STSRELAY_FAKE_NOW if set
 * (the clock then starts at that value and runs at normal speed). */
int64_t clock_now(void);
int64_t clock_now_ms(void);

/* Unit tests and benchmarks only: stops the clock at ms (unix
 * milliseconds): every reading gives ms until the next call, so schedules
 * of hours run without waiting and times compare exactly. 0 lets the clock
 * run again. Safe to read from other threads meanwhile. */
void clock_fake_set_ms(int64_t ms);

/* RFC 3339 UTC, "2026-11-23T16:05:26Z"; buf needs 21 bytes. Returns buf. */
char *clock_rfc3339(int64_t t, char *buf, size_t len);
/* RFC 5322 date, "Mon, 23 Nov 2026 16:05:26 +0000"; buf needs 32 bytes. */
char *clock_rfc5322(int64_t t, char *buf, size_t len);

#endif
