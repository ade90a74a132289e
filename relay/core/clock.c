/* Wall-clock time with an optional test offset (STSRELAY_FAKE_NOW), so the
 * schedulers' behaviour over days can be tested in seconds. */
#include "relay/core/clock.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int64_t offset_ms;
static int offset_ready;
static _Atomic int64_t stopped_ms; /* clock_fake_set_ms(); 0 = running */

static int64_t real_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void offset_init(void)
{
	const char *fake = getenv("STSRELAY_FAKE_NOW");
	char *end = NULL;
	long long v;

	offset_ready = 1;
	if (fake == NULL || *fake == '\0')
		return;
	v = strtoll(fake, &end, 10);
	if (end == NULL || *end != '\0' || v <= 0)
		return;
	offset_ms = (int64_t)v * 1000 - real_ms();
}

void clock_fake_set_ms(int64_t ms)
{
	atomic_store_explicit(&stopped_ms, ms, memory_order_relaxed);
}

int64_t clock_now_ms(void)
{
	int64_t stopped = atomic_load_explicit(&stopped_ms, memory_order_relaxed);

	if (stopped != 0)
		return stopped;
	if (!offset_ready)
		offset_init();
	return real_ms() + offset_ms;
}

int64_t clock_now(void)
{
	return clock_now_ms() / 1000;
}

char *clock_rfc3339(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	if (strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0 && len > 0)
		buf[0] = '\0';
	return buf;
}

char *clock_rfc5322(int64_t t, char *buf, size_t len)
{
	static const char *days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char *mons[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
				      "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	snprintf(buf, len, "%s, %d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
		 mons[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
	return buf;
}
