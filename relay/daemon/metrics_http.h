/* The metrics endpoint (metrics_listen): GET /metrics in Prometheus text
 * format and GET /healthz, served by libmicrohttpd from the daemon's loop. */
#ifndef STSRELAY_METRICS_HTTP_H
#define STSRELAY_METRICS_HTTP_H

#include <stddef.h>

#include "relay/daemon/relay.h"

/*
 * libmicrohttpd runs without a thread of its own (external polling with
 * its epoll descriptor watched by a uv_poll_t, its timeouts by a
 * uv_timer_t), so every request is answered on the loop thread and reads
 * the counters of relay/core/metrics.h without locks. Requests are
 * bounded: 16 KiB of request head per connection (beyond: 431 by
 * libmicrohttpd), 32 connections, 10 s idle timeout; only GET and HEAD of
 * /metrics and /healthz (else 404 or 405).
 *
 * /healthz: 200 "ok" when the loop answers and the last spool check passed;
 * 503 with the reason while starting, stopping (a load balancer should send
 * new mail elsewhere), when the spool could not be written, or when no
 * check finished for 30 s (the thread pool is stuck). The check writes and
 * removes spool_dir/tmp/.healthz every 5 s in the thread pool: one small
 * write per interval, never one per request.
 */

struct metrics_http;

/* Binds r->cfg.metrics_listen (the daemon calls it before dropping
 * privileges) and starts serving on r->loop; *out stays NULL when the key
 * is empty. 0, or -1 with err set (the address cannot be bound). */
int metrics_http_start(struct relay *r, struct metrics_http **out, char *err, size_t errlen);

/* Closes the listener, the connections and the handles (freed once the
 * loop has run their close callbacks). NULL is fine. */
void metrics_http_close(struct metrics_http *m);

#endif
