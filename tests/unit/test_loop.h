/* Running a libuv loop in a unit test until a condition holds, bounded in
 * time: the one wait loop of the tests that drive real peers (Redis). */
#ifndef STSRELAY_TEST_LOOP_H
#define STSRELAY_TEST_LOOP_H

#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

static void test_loop_tick(uv_timer_t *t)
{
	(void)t;
}

/* Runs loop until pred(arg) or about ms milliseconds, then says whether
 * pred(arg) holds; a 10 ms ticker keeps uv_run returning so the condition
 * is looked at even when nothing else happens. */
static inline bool test_run_until(uv_loop_t *loop, bool (*pred)(void *), void *arg, unsigned ms)
{
	uv_timer_t tick;
	uint64_t end;
	bool ok = false;

	uv_timer_init(loop, &tick);
	uv_timer_start(&tick, test_loop_tick, 10, 10);
	uv_update_time(loop);
	end = uv_now(loop) + ms;
	while (uv_now(loop) < end) {
		if (pred(arg)) {
			ok = true;
			break;
		}
		uv_run(loop, UV_RUN_ONCE);
	}
	uv_close((uv_handle_t *)&tick, NULL);
	uv_run(loop, UV_RUN_NOWAIT);
	return ok || pred(arg);
}

#endif
