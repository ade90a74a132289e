/* Retry schedule: how long a deferred recipient waits before its next
 * attempt, from the configured list of steps (the last step repeats). */
#include "queue/queue.h"

uint64_t queue_retry_delay(const uint64_t *schedule_s, size_t n, unsigned attempts)
{
	size_t step;

	if (attempts == 0)
		return 0; /* nothing failed yet: the first attempt is immediate */
	if (schedule_s == NULL || n == 0)
		return 300; /* config rejects an empty schedule; never spin */
	step = (size_t)attempts - 1;
	if (step > n - 1)
		step = n - 1;
	return schedule_s[step];
}
